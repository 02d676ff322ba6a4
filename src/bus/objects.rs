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
use super::value::{ColumnVariant, ColumnsDict, serialize_variant};
use crate::ovsdb::datum::Uuid;
use crate::replica::layout::TableId;
use crate::replica::{Replica, Row};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use std::collections::HashMap;
use std::sync::Arc;
use zbus::{OwnedObjectPath, Signature, Type};

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

impl Property {
    /// `PropertiesChanged` names it without its value (`EmitsChangedSignal=invalidates`):
    /// `Columns` repeats the row the typed signal carries, and the children lists are as
    /// long as the switch is wide — a one-port change on a 5,000-port bridge would send
    /// all 5,000 paths. Read on demand with `Get`.
    pub fn invalidated(&self) -> bool {
        matches!(self.source, Source::Columns | Source::Children(..))
    }
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
    OwnedObjectPath::try_from(row_path_text(table, name))
        .expect("escaped labels always form a valid path")
}

/// The same path as text, for writing straight into a message: escaped labels are always
/// valid, so there is nothing to check.
fn row_path_text(table: TableId, name: &str) -> String {
    format!("{ROOT_PATH}/{}/{}", table.label(), encode_label(name))
}

/// The path of a row, `/` when there is none.
fn path_text(replica: &Replica, table: TableId, uuid: Option<Uuid>) -> String {
    uuid.and_then(|u| replica.row(table, u))
        .map(|row| row_path_text(table, replica.name_of(table, row)))
        .unwrap_or_else(|| "/".to_owned())
}

/// One property of a row as a variant, written from the snapshot while the message is
/// serialised. Columns left out of the mirror give the type's empty value, so the
/// signature never changes.
pub struct PropertyVariant<'a> {
    pub replica: &'a Replica,
    pub table: TableId,
    pub uuid: Uuid,
    pub row: &'a Row,
    pub property: &'a Property,
}

impl Type for PropertyVariant<'_> {
    const SIGNATURE: &'static Signature = &Signature::Variant;
}

impl Serialize for PropertyVariant<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let layout = self.replica.layout().table(self.table);
        let signature = self.property.signature;
        match self.property.source {
            Source::Column(column) => match layout.column_index(column) {
                Some(i) => ColumnVariant {
                    ty: &layout.columns[i].ty,
                    datum: &self.row[i],
                }
                .serialize(serializer),
                None => serialize_variant(serializer, signature, &Empty(signature)),
            },
            Source::Columns => {
                let columns = ColumnsDict {
                    layout,
                    row: self.row,
                    only: None,
                    instead: &[],
                };
                serialize_variant(serializer, signature, &columns)
            }
            _ => serialize_variant(serializer, signature, &BareProperty(self)),
        }
    }
}

/// The value of a property that is not a column.
struct BareProperty<'a>(&'a PropertyVariant<'a>);

impl Serialize for BareProperty<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let PropertyVariant {
            replica,
            table,
            uuid,
            row,
            property,
        } = *self.0;
        match property.source {
            Source::Name => serializer.serialize_str(replica.name_of(table, row)),
            Source::Uuid => serializer.serialize_str(&uuid.to_string()),
            Source::Children(column, child_table) => {
                let children = replica.column(table, row, column);
                let count = children.map_or(0, |d| d.uuids().count());
                let mut paths = serializer.serialize_seq(Some(count))?;
                for child in children.into_iter().flat_map(|d| d.uuids()) {
                    paths.serialize_element(&path_text(replica, child_table, Some(child)))?;
                }
                paths.end()
            }
            Source::Bridge => {
                let port = match table {
                    TableId::Interface => replica.parent(TableId::Interface, uuid),
                    _ => Some(uuid),
                };
                let bridge = port.and_then(|p| replica.parent(TableId::Port, p));
                serializer.serialize_str(&path_text(replica, TableId::Bridge, bridge))
            }
            Source::Port => {
                let port = replica.parent(TableId::Interface, uuid);
                serializer.serialize_str(&path_text(replica, TableId::Port, port))
            }
            Source::Column(_) | Source::Columns => {
                unreachable!("column properties are written as columns")
            }
        }
    }
}

/// The empty value of a signature: a column the mirror leaves out.
struct Empty(&'static str);

impl Serialize for Empty {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            "s" => serializer.serialize_str(""),
            dict if dict.starts_with("a{") => serializer.serialize_map(Some(0))?.end(),
            array if array.starts_with('a') => serializer.serialize_seq(Some(0))?.end(),
            other => Err(serde::ser::Error::custom(format!(
                "no empty value for {other}"
            ))),
        }
    }
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
            _ if p.invalidated() => "invalidates",
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

    /// Room for the answer: about 1.3 KB per object with the default columns, so this is
    /// ample unless rows carry large maps (the buffer then grows as usual).
    pub fn capacity_hint(&self) -> usize {
        let rows: usize = self
            .0
            .as_ref()
            .map_or(0, |r| TableId::PUBLISHED.iter().map(|t| r.len(*t)).sum());
        4096 + rows * 4096
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
                    selection: Selection::All,
                };
                objects.serialize_entry(&path, &HashMap::from([(interface, object)]))?;
            }
        }
        objects.end()
    }
}

/// One object's properties as `a{sv}`, computed while being written: all of them
/// (`GetAll`, `GetManagedObjects`, `InterfacesAdded`) or the changed ones.
pub struct RowProperties<'a> {
    pub replica: &'a Replica,
    pub table: TableId,
    pub uuid: Uuid,
    pub row: &'a Row,
    pub properties: &'static [Property],
    pub selection: Selection<'a>,
}

/// Which properties of a row a message carries.
#[derive(Clone, Copy)]
pub enum Selection<'a> {
    /// All of them: `GetAll`, `GetManagedObjects`.
    All,
    /// Those whose values signals carry, all but `Columns` (annotated `invalidates`: it
    /// repeats the row, which the typed signal just sent; read on demand):
    /// `InterfacesAdded`.
    Emitted,
    /// These, but never one announced as invalidated instead ([`Property::invalidated`]):
    /// `PropertiesChanged`.
    Changed(&'a [&'static str]),
}

impl<'a> RowProperties<'a> {
    /// Every property of the row `uuid`, if the replica has it.
    pub fn all(replica: &'a Replica, table: TableId, uuid: Uuid) -> Option<Self> {
        let (_, properties) = describe(table)?;
        Some(Self {
            replica,
            table,
            uuid,
            row: replica.row(table, uuid)?,
            properties,
            selection: Selection::All,
        })
    }

    pub fn with(self, selection: Selection<'a>) -> Self {
        Self { selection, ..self }
    }

    fn selected(&self) -> impl Iterator<Item = &'static Property> + '_ {
        self.properties.iter().filter(|p| {
            let columns = matches!(p.source, Source::Columns);
            match self.selection {
                Selection::All => true,
                Selection::Emitted => !columns,
                Selection::Changed(names) => names.contains(&p.name) && !p.invalidated(),
            }
        })
    }
}

impl Type for RowProperties<'_> {
    const SIGNATURE: &'static Signature = &PROPERTIES_SIGNATURE;
}

impl Serialize for RowProperties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.selected().count()))?;
        for property in self.selected() {
            let value = PropertyVariant {
                replica: self.replica,
                table: self.table,
                uuid: self.uuid,
                row: self.row,
                property,
            };
            map.serialize_entry(property.name, &value)?;
        }
        map.end()
    }
}

/// A row of one snapshot, held for a reply written after the lookup: `Get` and `GetAll`
/// on a row object serialise from it without copying any value.
pub struct SnapshotRow {
    replica: Arc<Replica>,
    table: TableId,
    uuid: Uuid,
}

impl SnapshotRow {
    /// The row named `name`, if the snapshot has it.
    pub fn find(replica: Arc<Replica>, table: TableId, name: &str) -> Option<Self> {
        let (uuid, _) = replica.find(table, name)?;
        Some(Self {
            replica,
            table,
            uuid,
        })
    }

    /// All its properties.
    pub fn properties(&self) -> RowProperties<'_> {
        RowProperties::all(&self.replica, self.table, self.uuid)
            .expect("the snapshot holds the row it was found in")
    }

    /// One of its properties.
    pub fn property<'a>(&'a self, property: &'a Property) -> PropertyVariant<'a> {
        PropertyVariant {
            replica: &self.replica,
            table: self.table,
            uuid: self.uuid,
            row: self
                .replica
                .row(self.table, self.uuid)
                .expect("the snapshot holds the row it was found in"),
            property,
        }
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
        struct EmptyVariant(&'static str);
        impl Type for EmptyVariant {
            const SIGNATURE: &'static Signature = &Signature::Variant;
        }
        impl Serialize for EmptyVariant {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serialize_variant(serializer, self.0, &Empty(self.0))
            }
        }
        for kind in [BRIDGE_PROPERTIES, PORT_PROPERTIES, INTERFACE_PROPERTIES] {
            for p in kind {
                if matches!(p.source, Source::Column(_)) {
                    let v = super::super::value::round_trip(&EmptyVariant(p.signature));
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
