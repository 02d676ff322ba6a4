//! The bus side as a projection: a snapshot and the change set that produced it become the
//! ordered list of messages to send — `InterfacesRemoved`, `InterfacesAdded`, one
//! `PropertiesChanged` per changed object, then the typed signals — so a subscriber
//! reacting to a typed signal finds the objects already updated. Pure: it builds messages,
//! the publisher sends them in batches.

use super::objects::{RowProperties, Selection, Source, describe, row_path};
use super::value::{ColumnsDict, VariantDict};
use super::{RELAY_INTERFACE, ROOT_PATH};
use crate::ovsdb::atoms::{AtomMap, AtomSet};
use crate::ovsdb::datum::{Datum, Uuid};
use crate::replica::layout::{Layout, TableId};
use crate::replica::{ChangeKind, ChangeSet, Replica, RowChange, missing_from};
use std::collections::{HashMap, HashSet};
use zbus::{Message, Variant};

const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// One object-level signal, by the metric it counts under.
pub enum ObjectSignal {
    /// `InterfacesAdded` or `InterfacesRemoved`.
    Membership(Message),
    PropertiesChanged(Message),
}

/// The object signals of `changes`, in order; `replica` is the state after the changes.
/// Built one at a time as the caller takes them, so sending can start before a large
/// change set is fully projected, and one message that cannot be built costs only itself.
pub fn object_messages<'a>(
    replica: &'a Replica,
    changes: &'a ChangeSet,
) -> impl Iterator<Item = zbus::Result<ObjectSignal>> + 'a {
    let membership = changes
        .changes
        .iter()
        .filter_map(move |change| membership_message(replica, change).transpose())
        .map(|message| message.map(ObjectSignal::Membership));
    let properties = changed_properties(replica, changes)
        .into_iter()
        .filter_map(move |(table, uuid, names)| {
            properties_changed(replica, table, uuid, &names).transpose()
        })
        .map(|message| message.map(ObjectSignal::PropertiesChanged));
    membership.chain(properties)
}

/// `InterfacesRemoved` for a removal, `InterfacesAdded` for an addition still present in
/// `replica`; `None` otherwise.
fn membership_message(replica: &Replica, change: &RowChange) -> zbus::Result<Option<Message>> {
    let (interface, _) = describe(change.table).expect("published table");
    let path = row_path(change.table, &change.name);
    match change.kind {
        ChangeKind::Removed { .. } => {
            Message::signal(ROOT_PATH, OBJECT_MANAGER, "InterfacesRemoved")
                .build(&(path, vec![interface]))
                .map(Some)
        }
        ChangeKind::Added { .. } => {
            let Some(properties) = RowProperties::all(replica, change.table, change.uuid) else {
                // Gone again in a later version: its removal follows.
                return Ok(None);
            };
            let interfaces = HashMap::from([(interface, properties.with(Selection::Emitted))]);
            Message::signal(ROOT_PATH, OBJECT_MANAGER, "InterfacesAdded")
                .build(&(path, interfaces))
                .map(Some)
        }
        ChangeKind::Changed { .. } => Ok(None),
    }
}

/// Objects whose properties changed, with the names of those properties. Besides the rows'
/// own columns, a row whose parent changed (a port moved to another bridge) has new
/// `Bridge`/`Port` paths even though its own columns did not change.
fn changed_properties(
    replica: &Replica,
    changes: &ChangeSet,
) -> Vec<(TableId, Uuid, Vec<&'static str>)> {
    // Rows added or removed announce themselves; only rows that stay can be reparented.
    let fresh: HashSet<Uuid> = changes
        .changes
        .iter()
        .filter(|c| !matches!(c.kind, ChangeKind::Changed { .. }))
        .map(|c| c.uuid)
        .collect();
    let mut out = Vec::new();
    let mut reparented = Vec::new();
    for change in &changes.changes {
        let ChangeKind::Changed { old, new, columns } = &change.kind else {
            continue;
        };
        let table_layout = replica.layout().table(change.table);
        let changed: Vec<&str> = columns
            .iter()
            .map(|&i| table_layout.columns[i].name.as_str())
            .collect();
        let (_, properties) = describe(change.table).expect("published table");
        let names = properties
            .iter()
            .filter(|p| match p.source {
                Source::Column(c) | Source::Children(c, _) => changed.contains(&c),
                Source::Columns => true,
                _ => false,
            })
            .map(|p| p.name)
            .collect();
        out.push((change.table, change.uuid, names));
        if let Some((column, child_table)) = change.table.children()
            && let Some(i) = table_layout.column_index(column)
            && columns.contains(&i)
        {
            let moved = missing_from(Some(&old[i]), Some(&new[i]))
                .into_iter()
                .chain(missing_from(Some(&new[i]), Some(&old[i])))
                .filter(|child| !fresh.contains(child));
            reparented.extend(moved.map(|child| (child_table, child)));
        }
    }
    // A port that moved takes its interfaces along: their `Bridge` changes too.
    let mut i = 0;
    while let Some(&(table, uuid)) = reparented.get(i) {
        i += 1;
        let Some(row) = replica.row(table, uuid) else {
            continue;
        };
        if let Some((column, child_table)) = table.children() {
            let children = replica.column(table, row, column).map(|d| d.uuids());
            reparented.extend(children.into_iter().flatten().map(|c| (child_table, c)));
        }
        let names = match table {
            TableId::Port => vec!["Bridge"],
            _ => vec!["Port", "Bridge"],
        };
        out.push((table, uuid, names));
    }
    out
}

/// One batched `PropertiesChanged`; `Columns` and the children lists are only invalidated.
/// `None` when the row is gone from `replica` (removed by a later change).
fn properties_changed(
    replica: &Replica,
    table: TableId,
    uuid: Uuid,
    properties: &[&'static str],
) -> zbus::Result<Option<Message>> {
    let (interface, specs) = describe(table).expect("published table");
    let Some(row) = replica.row(table, uuid) else {
        return Ok(None);
    };
    let changed = RowProperties {
        replica,
        table,
        uuid,
        row,
        properties: specs,
        selection: Selection::Changed(properties),
    };
    let invalidated: Vec<&str> = specs
        .iter()
        .filter(|p| p.invalidated() && properties.contains(&p.name))
        .map(|p| p.name)
        .collect();
    let path = row_path(table, replica.name_of(table, row));
    Message::signal(path, PROPERTIES, "PropertiesChanged")
        .build(&(interface, changed, invalidated))
        .map(Some)
}

/// The typed signal (`PortAdded`, …) of one change.
pub fn typed_message(
    layout: &Layout,
    change: &RowChange,
    meta: VariantDict,
) -> zbus::Result<Message> {
    let table = layout.table(change.table);
    let uuid = change.uuid.to_string();
    let (name, bridge, uuid) = (change.name.as_str(), change.bridge.as_str(), uuid.as_str());
    let member = format!("{}{}", change.table, change.kind.op());
    let builder = Message::signal(ROOT_PATH, RELAY_INTERFACE, member.as_str());
    match &change.kind {
        ChangeKind::Added { row } | ChangeKind::Removed { row } => {
            let columns = ColumnsDict {
                layout: table,
                row,
                only: None,
                instead: &[],
            };
            builder.build(&(name, bridge, uuid, columns, meta))
        }
        ChangeKind::Changed { old, new, columns } => {
            let (mut left, mut came, mut delta) = (Vec::new(), Vec::new(), Vec::new());
            for &i in columns {
                if let Some((gone, added)) = set_delta(&old[i], &new[i]) {
                    left.push((i, gone));
                    came.push((i, added));
                    delta.push(table.columns[i].name.clone());
                }
            }
            let mut meta = meta;
            if !delta.is_empty() {
                meta.insert(DELTA_KEY.into(), Variant::from(delta));
            }
            let changed = ColumnsDict {
                layout: table,
                row: new,
                only: Some(columns),
                instead: &came,
            };
            let old = ColumnsDict {
                layout: table,
                row: old,
                only: Some(columns),
                instead: &left,
            };
            builder.build(&(name, bridge, uuid, changed, old, meta))
        }
    }
}

/// A set or map column with more elements than this, before or after a change, goes in
/// `…Changed` as what changed rather than as whole values: a one-port change on a
/// 5,000-port bridge would otherwise carry both 5,000-element lists.
pub const DELTA_MIN: usize = 32;

/// The `meta` key naming the columns sent as deltas: for those, `old` holds the elements
/// (map entries) that left and `changed` those that came; an updated map key is in both.
/// The new value is the previous one without `old`'s, plus `changed`'s.
pub const DELTA_KEY: &str = "delta";

/// `(left, came)` for a large set or map column; `None` for one sent whole.
fn set_delta(old: &Datum, new: &Datum) -> Option<(Datum, Datum)> {
    if old.len().max(new.len()) <= DELTA_MIN {
        return None;
    }
    match (old, new) {
        (Datum::Set(old), Datum::Set(new)) => {
            let missing = |a: &AtomSet, b: &AtomSet| {
                Datum::Set(a.iter().filter(|x| !b.contains(x)).cloned().collect())
            };
            Some((missing(old, new), missing(new, old)))
        }
        (Datum::Map(old), Datum::Map(new)) => {
            let differing = |a: &AtomMap, b: &AtomMap| {
                let entries = a.iter().filter(|(k, v)| b.get(k) != Some(*v));
                Datum::Map(entries.map(|(k, v)| (k.clone(), v.clone())).collect())
            };
            Some((differing(old, new), differing(new, old)))
        }
        _ => None,
    }
}

/// `PropertiesChanged` of the root's `org.ovsdbus.Relay1` for the given values.
pub fn root_properties_changed(
    changed: &HashMap<&'static str, zbus::OwnedVariant>,
) -> zbus::Result<Message> {
    let invalidated: Vec<&str> = Vec::new();
    Message::signal(ROOT_PATH, PROPERTIES, "PropertiesChanged").build(&(
        RELAY_INTERFACE,
        changed,
        invalidated,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::layout::ColumnSelection;
    use crate::replica::layout::tests::test_schema;
    use serde_json::json;
    use std::sync::Arc;

    const BR: &str = "b0000000-0000-0000-0000-000000000001";
    const P1: &str = "10000000-0000-0000-0000-000000000001";
    const P2: &str = "10000000-0000-0000-0000-000000000002";
    const I1: &str = "20000000-0000-0000-0000-000000000001";

    fn apply(replica: &mut Replica, json: serde_json::Value) -> ChangeSet {
        let update = crate::replica::update::parse_json(replica.layout(), json).unwrap();
        replica.apply(update).unwrap()
    }

    fn summary(messages: &[Message]) -> Vec<String> {
        messages
            .iter()
            .map(|m| {
                let header = m.header();
                format!("{} {}", header.path().unwrap(), header.member().unwrap())
            })
            .collect()
    }

    #[test]
    fn objects_come_out_removed_added_then_changed_without_a_bus() {
        let layout = Layout::new(&test_schema(), &ColumnSelection::default()).unwrap();
        let mut replica = Replica::new(Arc::new(layout));
        apply(
            &mut replica,
            json!({
                "Bridge": {BR: {"insert": {"name": "br0", "ports": ["uuid", P1]}}},
                "Port": {P1: {"insert": {"name": "p1", "interfaces": ["uuid", I1]}}},
                "Interface": {I1: {"insert": {"name": "i1"}}}
            }),
        );
        // p1 (with i1) replaced by p2 on the same bridge.
        let changes = apply(
            &mut replica,
            json!({
                "Bridge": {BR: {"modify": {"ports": ["set", [["uuid", P1], ["uuid", P2]]]}}},
                "Port": {P1: {"delete": null}, P2: {"insert": {"name": "p2"}}},
                "Interface": {I1: {"delete": null}}
            }),
        );
        let mut out = Vec::new();
        let mut signals = (0, 0);
        for signal in object_messages(&replica, &changes) {
            match signal.unwrap() {
                ObjectSignal::Membership(m) => {
                    signals.0 += 1;
                    out.push(m);
                }
                ObjectSignal::PropertiesChanged(m) => {
                    signals.1 += 1;
                    out.push(m);
                }
            }
        }
        assert_eq!(
            summary(&out),
            [
                "/org/ovsdbus/Relay1 InterfacesRemoved",
                "/org/ovsdbus/Relay1 InterfacesRemoved",
                "/org/ovsdbus/Relay1 InterfacesAdded",
                "/org/ovsdbus/Relay1/bridge/br0 PropertiesChanged",
            ]
        );
        assert_eq!(signals, (3, 1), "objects, properties");
        let (path, interfaces): (zbus::OwnedObjectPath, Vec<String>) =
            out[0].body().deserialize().unwrap();
        assert_eq!(path.as_str(), "/org/ovsdbus/Relay1/interface/i1");
        assert_eq!(interfaces, ["org.ovsdbus.Interface1"]);
        let (interface, changed, invalidated): (
            String,
            HashMap<String, zbus::OwnedVariant>,
            Vec<String>,
        ) = out[3].body().deserialize().unwrap();
        assert_eq!(interface, "org.ovsdbus.Bridge1");
        // The children list is as long as the bridge is wide: named, not sent.
        assert!(changed.is_empty(), "{changed:?}");
        assert_eq!(invalidated, ["Ports", "Columns"]);

        let typed: Vec<Message> = changes
            .changes
            .iter()
            .map(|c| typed_message(replica.layout(), c, VariantDict::new()).unwrap())
            .collect();
        let members: Vec<String> = typed
            .iter()
            .map(|m| m.header().member().unwrap().to_string())
            .collect();
        assert_eq!(
            members,
            [
                "InterfaceRemoved",
                "PortRemoved",
                "PortAdded",
                "BridgeChanged"
            ]
        );
    }

    /// A large set goes in `…Changed` as what left and what came, named in `meta.delta`;
    /// a small one whole.
    #[test]
    fn large_sets_change_as_deltas() {
        let layout = Layout::new(&test_schema(), &ColumnSelection::default()).unwrap();
        let mut replica = Replica::new(Arc::new(layout));
        let port = |i: usize| format!("10000000-0000-0000-0000-{i:012}");
        let ports = |n: usize| {
            json!([
                "set",
                (1..=n)
                    .map(|i| json!(["uuid", port(i)]))
                    .collect::<Vec<_>>()
            ])
        };
        let mut rows = serde_json::Map::new();
        for i in 1..=DELTA_MIN + 1 {
            rows.insert(port(i), json!({"insert": {"name": format!("p{i}")}}));
        }
        apply(
            &mut replica,
            json!({"Bridge": {BR: {"insert": {"name": "br0", "ports": ports(DELTA_MIN + 1)}}},
                   "Port": rows}),
        );
        let next = DELTA_MIN + 2;
        let changes = apply(
            &mut replica,
            json!({"Bridge": {BR: {"modify": {"ports": ["uuid", port(next)],
                                              "external_ids": ["map", [["k", "v"]]]}}},
                   "Port": {port(next): {"insert": {"name": format!("p{next}")}}}}),
        );
        let bridge = changes
            .changes
            .iter()
            .find(|c| c.table == TableId::Bridge)
            .unwrap();
        let message = typed_message(replica.layout(), bridge, VariantDict::new()).unwrap();
        type Columns = HashMap<String, zbus::OwnedVariant>;
        let (_, _, _, changed, old, meta): (String, String, String, Columns, Columns, Columns) =
            message.body().deserialize().unwrap();
        let strings =
            |v: &zbus::OwnedVariant| Vec::<String>::try_from(v.try_clone().unwrap()).unwrap();
        assert_eq!(strings(&changed["ports"]), [port(next)]);
        assert!(strings(&old["ports"]).is_empty());
        assert_eq!(strings(&meta[DELTA_KEY]), ["ports"]);
        // external_ids is small: whole values.
        let map = |v: &zbus::OwnedVariant| {
            HashMap::<String, String>::try_from(v.try_clone().unwrap()).unwrap()
        };
        assert_eq!(
            map(&changed["external_ids"]),
            HashMap::from([("k".into(), "v".into())])
        );
        assert!(map(&old["external_ids"]).is_empty());
        assert!(
            message.data().len() < 1024,
            "{} bytes",
            message.data().len()
        );
    }
}
