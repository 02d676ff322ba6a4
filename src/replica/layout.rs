//! Which tables and columns the relay mirrors, derived from the server's schema and the
//! configured include/exclude lists. Rows are stored as vectors in this column order.

use crate::ovsdb::schema::{ColumnType, DbSchema};
use std::collections::HashMap;
use std::fmt;

/// The four mirrored tables. `Root` is the single `Open_vSwitch` row, kept for versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableId {
    Root,
    Bridge,
    Port,
    Interface,
}

impl TableId {
    pub const ALL: [TableId; 4] = [Self::Root, Self::Bridge, Self::Port, Self::Interface];
    /// The tables that become D-Bus objects and signals.
    pub const PUBLISHED: [TableId; 3] = [Self::Bridge, Self::Port, Self::Interface];

    /// The OVSDB table name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "Open_vSwitch",
            Self::Bridge => "Bridge",
            Self::Port => "Port",
            Self::Interface => "Interface",
        }
    }

    /// Lower-case label used in metrics and object paths.
    pub fn label(self) -> &'static str {
        match self {
            Self::Root => "open_vswitch",
            Self::Bridge => "bridge",
            Self::Port => "port",
            Self::Interface => "interface",
        }
    }

    /// Case-insensitive lookup of a published table (`Port`, `port`).
    pub fn parse_published(name: &str) -> Option<TableId> {
        Self::PUBLISHED
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The column listing a row's children, and the children's table: a bridge's ports,
    /// a port's interfaces.
    pub fn children(self) -> Option<(&'static str, TableId)> {
        match self {
            Self::Bridge => Some(("ports", Self::Port)),
            Self::Port => Some(("interfaces", Self::Interface)),
            _ => None,
        }
    }

    /// The columns the tree structure depends on: never excluded.
    fn required_columns(self) -> &'static [&'static str] {
        match self {
            // `cur_cfg`: a write waits for ovs-vswitchd to copy its `next_cfg` there.
            Self::Root => &["ovs_version", "db_version", "external_ids", "cur_cfg"],
            Self::Bridge => &["name", "ports"],
            Self::Port => &["name", "interfaces"],
            Self::Interface => &["name"],
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters that ovs-vswitchd rewrites every few seconds; mirroring them would turn every
/// idle switch into a stream of `Changed` signals.
pub const DEFAULT_EXCLUDED: &[&str] = &["statistics", "rstp_statistics"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    pub id: TableId,
    /// In column-name order.
    pub columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// Where `name` is (the root table has none): looked up for every path and signal.
    pub name_index: Option<usize>,
}

impl TableLayout {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }
}

/// Per-table column selection from the command line: `TABLE:col,col`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnSelection {
    /// When a table has an include list, only those columns (plus the required ones).
    pub include: HashMap<TableId, Vec<String>>,
    /// Excluded in addition to [`DEFAULT_EXCLUDED`].
    pub exclude: HashMap<TableId, Vec<String>>,
}

impl ColumnSelection {
    /// Parses one `TABLE:col,col` item of `--include-columns` / `--exclude-columns`.
    pub fn parse_item(item: &str) -> Result<(TableId, Vec<String>), String> {
        let (table, cols) = item
            .split_once(':')
            .ok_or_else(|| format!("{item:?}: expected TABLE:column[,column…]"))?;
        let table = TableId::parse_published(table)
            .ok_or_else(|| format!("{table:?}: not one of Bridge, Port, Interface"))?;
        let cols: Vec<String> = cols
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if cols.is_empty() {
            return Err(format!("{item:?}: no columns named"));
        }
        Ok((table, cols))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub schema_version: String,
    tables: Vec<TableLayout>,
}

impl Layout {
    /// Chooses the mirrored columns. Fails when the schema is not an Open_vSwitch schema or a
    /// configured column does not exist, so a typo is reported at start-up, not ignored.
    pub fn new(schema: &DbSchema, selection: &ColumnSelection) -> Result<Self, String> {
        if schema.name != "Open_vSwitch" {
            return Err(format!(
                "database {:?} is not the Open_vSwitch database",
                schema.name
            ));
        }
        let mut tables = Vec::new();
        for id in TableId::ALL {
            let table = schema
                .tables
                .get(id.name())
                .ok_or_else(|| format!("schema has no {id} table"))?;
            let required = id.required_columns();
            for name in required {
                if !table.columns.contains_key(*name) {
                    return Err(format!("schema has no {id}.{name} column"));
                }
            }
            let include = selection.include.get(&id);
            let exclude = selection.exclude.get(&id);
            for name in include.into_iter().chain(exclude).flatten() {
                if !table.columns.contains_key(name) {
                    return Err(format!("{id} has no column {name:?}"));
                }
            }
            let wanted = |name: &str| {
                if required.contains(&name) {
                    return true;
                }
                if id == TableId::Root {
                    return false;
                }
                let listed =
                    |list: Option<&Vec<String>>| list.is_some_and(|l| l.iter().any(|c| c == name));
                match include {
                    Some(_) => listed(include),
                    None => !DEFAULT_EXCLUDED.contains(&name) && !listed(exclude),
                }
            };
            let columns: Vec<Column> = table
                .columns
                .iter()
                .filter(|(name, _)| wanted(name))
                .map(|(name, ty)| Column {
                    name: name.clone(),
                    ty: ty.clone(),
                })
                .collect();
            let index: HashMap<String, usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect();
            let name_index = index.get("name").copied();
            tables.push(TableLayout {
                id,
                columns,
                index,
                name_index,
            });
        }
        Ok(Self {
            schema_version: schema.version.clone(),
            tables,
        })
    }

    pub fn table(&self, id: TableId) -> &TableLayout {
        &self.tables[id.index()]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A cut-down Open_vSwitch schema with each column shape the relay has to handle.
    pub(crate) fn test_schema() -> DbSchema {
        let map = json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"});
        DbSchema::parse(&json!({
            "name": "Open_vSwitch", "version": "8.3.1",
            "tables": {
                "Open_vSwitch": {"columns": {
                    "ovs_version": {"type": {"key": "string", "min": 0, "max": 1}},
                    "db_version": {"type": {"key": "string", "min": 0, "max": 1}},
                    "cur_cfg": {"type": "integer"},
                    "external_ids": {"type": map},
                    "bridges": {"type": {"key": {"type": "uuid", "refTable": "Bridge"}, "min": 0, "max": "unlimited"}}
                }},
                "Bridge": {"columns": {
                    "name": {"type": "string"},
                    "ports": {"type": {"key": {"type": "uuid", "refTable": "Port"}, "min": 0, "max": "unlimited"}},
                    "datapath_type": {"type": "string"},
                    "fail_mode": {"type": {"key": "string", "min": 0, "max": 1}},
                    "external_ids": {"type": map},
                    "other_config": {"type": map}
                }},
                "Port": {"columns": {
                    "name": {"type": "string"},
                    "interfaces": {"type": {"key": {"type": "uuid", "refTable": "Interface"}, "min": 1, "max": "unlimited"}},
                    "tag": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0, "max": 1}},
                    "trunks": {"type": {"key": "integer", "min": 0, "max": 4096}},
                    "vlan_mode": {"type": {"key": "string", "min": 0, "max": 1}},
                    "external_ids": {"type": map},
                    "rstp_statistics": {"type": {"key": "string", "value": "integer", "min": 0, "max": "unlimited"}}
                }},
                "Interface": {"columns": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "ofport": {"type": {"key": "integer", "min": 0, "max": 1}},
                    "link_speed": {"type": {"key": "integer", "min": 0, "max": 1}},
                    "mtu": {"type": {"key": "integer", "min": 0, "max": 1}},
                    "admin_state": {"type": {"key": "string", "min": 0, "max": 1}},
                    "link_state": {"type": {"key": "string", "min": 0, "max": 1}},
                    "external_ids": {"type": map},
                    "options": {"type": map},
                    "statistics": {"type": {"key": "string", "value": "integer", "min": 0, "max": "unlimited"}},
                    "bfd_status": {"type": map},
                    "ingress_policing_rate": {"type": {"key": "integer"}},
                    "holder": {"type": "boolean"},
                    "weight": {"type": "real"}
                }}
            }
        }))
        .unwrap()
    }

    #[test]
    fn default_layout_excludes_counters_only() {
        let layout = Layout::new(&test_schema(), &ColumnSelection::default()).unwrap();
        let iface = layout.table(TableId::Interface);
        assert!(iface.column_index("statistics").is_none());
        assert!(iface.column_index("options").is_some());
        assert!(
            layout
                .table(TableId::Port)
                .column_index("rstp_statistics")
                .is_none()
        );
        let root: Vec<_> = layout.table(TableId::Root).column_names().collect();
        assert_eq!(
            root,
            ["cur_cfg", "db_version", "external_ids", "ovs_version"]
        );
    }

    #[test]
    fn include_keeps_required_columns() {
        let mut selection = ColumnSelection::default();
        let (table, cols) = ColumnSelection::parse_item("port:tag").unwrap();
        selection.include.insert(table, cols);
        let layout = Layout::new(&test_schema(), &selection).unwrap();
        let cols: Vec<_> = layout.table(TableId::Port).column_names().collect();
        assert_eq!(cols, ["interfaces", "name", "tag"]);
    }

    #[test]
    fn unknown_names_are_reported() {
        assert!(ColumnSelection::parse_item("Mirror:x").is_err());
        assert!(ColumnSelection::parse_item("Port").is_err());
        assert!(ColumnSelection::parse_item("Port:").is_err());
        let mut selection = ColumnSelection::default();
        selection
            .exclude
            .insert(TableId::Port, vec!["no_such".into()]);
        let err = Layout::new(&test_schema(), &selection).unwrap_err();
        assert!(err.contains("no_such"), "{err}");
        let mut other = test_schema();
        other.name = "OVN_Northbound".into();
        assert!(Layout::new(&other, &ColumnSelection::default()).is_err());
    }
}
