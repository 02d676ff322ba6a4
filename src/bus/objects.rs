//! The object tree (SPEC §5): one object per Bridge, Port and Interface row, and the
//! `org.freedesktop.DBus.ObjectManager` at the root.
//!
//! The three row interfaces are one table-driven implementation: each property is described
//! once (name, signature, where its value comes from), and `Get`, `GetAll`,
//! `GetManagedObjects`, `PropertiesChanged` and introspection are all derived from that
//! description. Values are read from the current snapshot at call time, so an object is
//! never older than a signal already sent. No object is registered anywhere: the
//! dispatcher answers for every row path.

use super::ROOT_PATH;
use super::escape::encode_label;
use super::value::datum_variant;
use crate::ovsdb::datum::Uuid;
use crate::replica::layout::TableId;
use crate::replica::{Replica, Row};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use std::collections::HashMap;
use std::sync::Arc;
use zbus::{OwnedObjectPath, OwnedVariant, Signature, Type, Variant, fdo};

/// Where a property's value comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Name,
    Uuid,
    /// An OVSDB column, mapped by its schema type.
    Column(&'static str),
    /// A uuid-set column turned into the children's object paths.
    Children(&'static str, TableId),
    /// The path of the bridge the row belongs to (`/` when none).
    Bridge,
    /// The path of an interface's port (`/` when none).
    Port,
    /// Every mirrored column as `a{sv}`; announced as invalidated, never sent.
    Columns,
}

#[derive(Debug, Clone, Copy)]
pub struct Property {
    pub name: &'static str,
    pub signature: &'static str,
    pub source: Source,
}

const fn prop(name: &'static str, signature: &'static str, source: Source) -> Property {
    Property {
        name,
        signature,
        source,
    }
}

/// Each table's D-Bus face: its interface and its properties.
const BRIDGE_INTERFACE: &str = "org.ovsdbus.Bridge1";
const BRIDGE_PROPERTIES: &[Property] = &[
    prop("Name", "s", Source::Name),
    prop("Uuid", "s", Source::Uuid),
    prop("Ports", "ao", Source::Children("ports", TableId::Port)),
    prop("DatapathType", "s", Source::Column("datapath_type")),
    prop("FailMode", "as", Source::Column("fail_mode")),
    prop("ExternalIds", "a{ss}", Source::Column("external_ids")),
    prop("OtherConfig", "a{ss}", Source::Column("other_config")),
    prop("Columns", "a{sv}", Source::Columns),
];

const PORT_INTERFACE: &str = "org.ovsdbus.Port1";
const PORT_PROPERTIES: &[Property] = &[
    prop("Name", "s", Source::Name),
    prop("Uuid", "s", Source::Uuid),
    prop("Bridge", "o", Source::Bridge),
    prop(
        "Interfaces",
        "ao",
        Source::Children("interfaces", TableId::Interface),
    ),
    prop("Tag", "ax", Source::Column("tag")),
    prop("Trunks", "ax", Source::Column("trunks")),
    prop("VlanMode", "as", Source::Column("vlan_mode")),
    prop("ExternalIds", "a{ss}", Source::Column("external_ids")),
    prop("Columns", "a{sv}", Source::Columns),
];

const INTERFACE_INTERFACE: &str = "org.ovsdbus.Interface1";
const INTERFACE_PROPERTIES: &[Property] = &[
    prop("Name", "s", Source::Name),
    prop("Uuid", "s", Source::Uuid),
    prop("Port", "o", Source::Port),
    prop("Bridge", "o", Source::Bridge),
    prop("Type", "s", Source::Column("type")),
    prop("Ofport", "ax", Source::Column("ofport")),
    prop("OfportRequest", "ax", Source::Column("ofport_request")),
    prop("LinkState", "as", Source::Column("link_state")),
    prop("AdminState", "as", Source::Column("admin_state")),
    prop("MacInUse", "as", Source::Column("mac_in_use")),
    prop("Mtu", "ax", Source::Column("mtu")),
    prop("Error", "as", Source::Column("error")),
    prop("ExternalIds", "a{ss}", Source::Column("external_ids")),
    prop("Options", "a{ss}", Source::Column("options")),
    prop("Columns", "a{sv}", Source::Columns),
];

/// The interface name and properties of a published table.
pub fn describe(table: TableId) -> Option<(&'static str, &'static [Property])> {
    match table {
        TableId::Bridge => Some((BRIDGE_INTERFACE, BRIDGE_PROPERTIES)),
        TableId::Port => Some((PORT_INTERFACE, PORT_PROPERTIES)),
        TableId::Interface => Some((INTERFACE_INTERFACE, INTERFACE_PROPERTIES)),
        TableId::Root => None,
    }
}

/// `/org/ovsdbus/Relay1/<table>/<escaped name>`.
pub fn row_path(table: TableId, name: &str) -> OwnedObjectPath {
    let path = format!("{ROOT_PATH}/{}/{}", table.label(), encode_label(name));
    OwnedObjectPath::try_from(path).expect("escaped labels always form a valid path")
}

fn root_path() -> OwnedObjectPath {
    OwnedObjectPath::try_from("/").expect("/ is a path")
}

fn path_of(replica: &Replica, table: TableId, uuid: Option<Uuid>) -> OwnedObjectPath {
    uuid.and_then(|u| replica.row(table, u))
        .map(|row| row_path(table, replica.name_of(table, row)))
        .unwrap_or_else(root_path)
}

/// The value of one property of a row. Columns left out of the mirror give the type's
/// empty value, so the signature never changes.
pub fn property_value(
    replica: &Replica,
    table: TableId,
    uuid: Uuid,
    row: &Row,
    property: &Property,
) -> zbus::Result<Variant<'static>> {
    let layout = replica.layout().table(table);
    Ok(match property.source {
        Source::Name => Variant::from(replica.name_of(table, row).to_owned()),
        Source::Uuid => Variant::from(uuid.to_string()),
        Source::Column(column) => match layout.column_index(column) {
            Some(i) => datum_variant(&layout.columns[i].ty, &row[i])?,
            None => empty_value(property.signature)?,
        },
        Source::Children(column, child_table) => {
            let paths: Vec<OwnedObjectPath> = replica
                .column(table, row, column)
                .map(|d| {
                    d.uuids()
                        .map(|u| path_of(replica, child_table, Some(u)))
                        .collect()
                })
                .unwrap_or_default();
            Variant::from(paths)
        }
        Source::Bridge => {
            let port = match table {
                TableId::Interface => replica.parent(TableId::Interface, uuid),
                _ => Some(uuid),
            };
            let bridge = port.and_then(|p| replica.parent(TableId::Port, p));
            Variant::from(path_of(replica, TableId::Bridge, bridge))
        }
        Source::Port => Variant::from(path_of(
            replica,
            TableId::Port,
            replica.parent(TableId::Interface, uuid),
        )),
        Source::Columns => Variant::from(super::value::columns_dict(
            layout,
            row,
            0..layout.columns.len(),
        )?),
    })
}

fn empty_value(signature: &str) -> zbus::Result<Variant<'static>> {
    Ok(match signature {
        "s" => Variant::from(String::new()),
        "a{ss}" => Variant::from(HashMap::<String, String>::new()),
        other => {
            let signature = zbus::Signature::try_from(other).map_err(zbus::Error::from)?;
            match signature {
                zbus::Signature::Array(child) => {
                    Variant::Array(zbus::Array::new(child.signature()))
                }
                _ => return Err(zbus::Error::Failure(format!("no empty value for {other}"))),
            }
        }
    })
}

/// All properties of a row, as `GetAll` and `GetManagedObjects` return them.
pub fn all_properties(
    replica: &Replica,
    table: TableId,
    uuid: Uuid,
) -> fdo::Result<HashMap<String, OwnedVariant>> {
    let (_, properties) =
        describe(table).ok_or_else(|| fdo::Error::Failed("no such table".into()))?;
    let row = replica
        .row(table, uuid)
        .ok_or_else(|| fdo::Error::UnknownObject(format!("{table} row {uuid} is gone")))?;
    properties
        .iter()
        .map(|p| {
            Ok((
                p.name.to_owned(),
                owned(property_value(replica, table, uuid, row, p)?)?,
            ))
        })
        .collect()
}

pub(crate) fn owned(value: Variant<'static>) -> fdo::Result<OwnedVariant> {
    value
        .try_into_owned()
        .map_err(|e| fdo::Error::Failed(e.to_string()))
}

pub(crate) fn write_introspection(
    writer: &mut dyn std::fmt::Write,
    level: usize,
    name: &str,
    properties: &[Property],
) {
    let pad = " ".repeat(level);
    let _ = writeln!(writer, "{pad}<interface name=\"{name}\">");
    for p in properties {
        let emits = match p.source {
            Source::Name | Source::Uuid => "const",
            Source::Columns => "invalidates",
            _ => "true",
        };
        let _ = writeln!(
            writer,
            "{pad}  <property name=\"{}\" type=\"{}\" access=\"read\">\n{pad}    <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" value=\"{emits}\"/>\n{pad}  </property>",
            p.name, p.signature
        );
    }
    let _ = writeln!(writer, "{pad}</interface>");
}

/// The `GetManagedObjects` answer, `a{oa{sa{sv}}}`, written straight into the reply from a
/// copy of the replica (cheap: rows are shared, not copied). Building it as nested maps of
/// owned values first took seconds and hundreds of megabytes at 20,000 objects, with the
/// replica locked all along.
pub struct ManagedObjects(Option<Arc<Replica>>);

impl ManagedObjects {
    pub fn new(snapshot: Option<Arc<Replica>>) -> Self {
        Self(snapshot)
    }
}

static PROPERTIES_SIGNATURE: Signature =
    Signature::static_dict(&Signature::Str, &Signature::Variant);
static INTERFACES_SIGNATURE: Signature =
    Signature::static_dict(&Signature::Str, &PROPERTIES_SIGNATURE);
static MANAGED_SIGNATURE: Signature =
    Signature::static_dict(&Signature::ObjectPath, &INTERFACES_SIGNATURE);

impl Type for ManagedObjects {
    const SIGNATURE: &'static Signature = &MANAGED_SIGNATURE;
}

impl Serialize for ManagedObjects {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(replica) = &self.0 else {
            return serializer.serialize_map(Some(0))?.end();
        };
        let total = TableId::PUBLISHED.iter().map(|t| replica.len(*t)).sum();
        let mut objects = serializer.serialize_map(Some(total))?;
        for table in TableId::PUBLISHED {
            let (interface, properties) = describe(table).expect("published tables are described");
            for (uuid, row) in replica.rows(table) {
                let path = row_path(table, replica.name_of(table, row));
                let object = RowProperties {
                    replica,
                    table,
                    uuid,
                    row,
                    properties,
                };
                objects.serialize_entry(&path, &HashMap::from([(interface, object)]))?;
            }
        }
        objects.end()
    }
}

/// One object's properties as `a{sv}`, computed while being written.
struct RowProperties<'a> {
    replica: &'a Replica,
    table: TableId,
    uuid: Uuid,
    row: &'a Row,
    properties: &'static [Property],
}

impl Type for RowProperties<'_> {
    const SIGNATURE: &'static Signature = &PROPERTIES_SIGNATURE;
}

impl Serialize for RowProperties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.properties.len()))?;
        for property in self.properties {
            let value = property_value(self.replica, self.table, self.uuid, self.row, property)
                .map_err(serde::ser::Error::custom)?;
            map.serialize_entry(property.name, &value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_use_the_escaped_name() {
        assert_eq!(
            row_path(TableId::Port, "br-int.1").as_str(),
            "/org/ovsdbus/Relay1/port/br_2dint_2e1"
        );
        assert_eq!(
            row_path(TableId::Interface, "").as_str(),
            "/org/ovsdbus/Relay1/interface/_"
        );
    }

    #[test]
    fn empty_values_have_the_declared_signature() {
        for kind in [BRIDGE_PROPERTIES, PORT_PROPERTIES, INTERFACE_PROPERTIES] {
            for p in kind {
                if matches!(p.source, Source::Column(_)) {
                    let v = empty_value(p.signature).unwrap();
                    assert_eq!(v.value_signature().to_string(), p.signature, "{}", p.name);
                }
            }
        }
    }

    #[test]
    fn introspection_lists_every_property_with_its_annotation() {
        let mut xml = String::new();
        write_introspection(&mut xml, 0, PORT_INTERFACE, PORT_PROPERTIES);
        assert!(
            xml.contains(r#"<property name="Tag" type="ax" access="read">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"value="invalidates""#));
        assert_eq!(xml.matches("<property ").count(), PORT_PROPERTIES.len());
    }
}
