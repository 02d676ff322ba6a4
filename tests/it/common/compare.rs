//! Comparing two `ovsdb-server`s row by row: one changed by the relay (its transactions
//! sent raw, or its D-Bus methods), the other by the equivalent `ovs-vsctl --no-wait`
//! commands (`pub mod compare;` of `tests/it/common`).
//!
//! A [`snapshot`] holds every column of every Open_vSwitch, Bridge, Port, Interface and
//! Flow_Sample_Collector_Set row as `ovs-vsctl list` shows them, with `_uuid` dropped and
//! every UUID replaced by the name of the row it points at, so the
//! Open_vSwitch.bridges / Bridge.ports / Port.interfaces linkage is compared by name.
//!
//! The cases both `tests/it/txn.rs` (the transactions sent raw) and `tests/it/switch.rs` (the
//! D-Bus methods) run share their set-ups and `ovs-vsctl` counterparts from here.

use super::{Ovsdb, internal_port};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The tables a [`snapshot`] covers.
pub const TABLES: [&str; 5] = [
    "Open_vSwitch",
    "Bridge",
    "Port",
    "Interface",
    "Flow_Sample_Collector_Set",
];

/// Rows keyed `"Table name"` (`"Open_vSwitch"` for the root row,
/// `"Flow_Sample_Collector_Set <id>"`), each column → normalized JSON value.
pub type Snapshot = BTreeMap<String, BTreeMap<String, Json>>;

/// Two fresh servers prepared with the same `ovs-vsctl` commands: the first for the
/// relay, the second for `ovs-vsctl`.
pub fn pair(setup: &[&[&str]]) -> (Ovsdb, Ovsdb) {
    let ours = Ovsdb::start();
    let theirs = Ovsdb::start();
    for cmd in setup {
        ours.vsctl(cmd);
        theirs.vsctl(cmd);
    }
    (ours, theirs)
}

/// Every row of [`TABLES`] as `ovs-vsctl --format=json --data=json list` prints it, keyed
/// `"Table name"` (`"Flow_Sample_Collector_Set id"`, `"Open_vSwitch"`), `_uuid` dropped
/// and UUIDs replaced by `"Table:name"` of the row they refer to.
pub fn snapshot(db: &Ovsdb) -> Snapshot {
    let mut raw = Vec::new();
    let mut names = HashMap::new();
    for table in TABLES {
        let out = db.vsctl(&["--format=json", "--data=json", "list", table]);
        let listing: Json = serde_json::from_str(&out).expect("ovs-vsctl JSON");
        let headings: Vec<String> = serde_json::from_value(listing["headings"].clone()).unwrap();
        for values in listing["data"].as_array().unwrap() {
            let row: BTreeMap<String, Json> = headings
                .iter()
                .cloned()
                .zip(values.as_array().unwrap().iter().cloned())
                .collect();
            let key = match table {
                "Open_vSwitch" => table.to_string(),
                "Flow_Sample_Collector_Set" => format!("{table} {}", row["id"]),
                _ => format!("{table} {}", row["name"].as_str().unwrap()),
            };
            names.insert(row["_uuid"][1].as_str().unwrap().to_string(), key.clone());
            raw.push((key, row));
        }
    }
    raw.into_iter()
        .map(|(key, mut row)| {
            row.remove("_uuid");
            let row = row
                .into_iter()
                .map(|(col, value)| (col, normalize(&value, &names)))
                .collect();
            (key, row)
        })
        .collect()
}

/// UUIDs become `["ref", "Table name"]`; sets and maps are sorted.
fn normalize(value: &Json, names: &HashMap<String, String>) -> Json {
    match value.as_array().map(Vec::as_slice) {
        Some([tag, Json::String(u)]) if tag == "uuid" => {
            json!([
                "ref",
                names.get(u).cloned().unwrap_or_else(|| "<unknown>".into())
            ])
        }
        Some([tag, Json::Array(items)]) if tag == "set" || tag == "map" => {
            let mut items: Vec<Json> = items.iter().map(|v| normalize(v, names)).collect();
            items.sort_by_key(|v| v.to_string());
            json!([tag, items])
        }
        Some(items) => Json::Array(items.iter().map(|v| normalize(v, names)).collect()),
        None => value.clone(),
    }
}

/// The differences between two snapshots, one line per differing column or row, the
/// sides called by `labels`; empty when they are equal.
pub fn diff(a: &Snapshot, b: &Snapshot, labels: (&str, &str)) -> String {
    let (la, lb) = labels;
    let mut diff = String::new();
    for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                for col in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                    if x.get(col) != y.get(col) {
                        diff.push_str(&format!(
                            "{key}.{col}: {la} {:?} vs {lb} {:?}\n",
                            x.get(col),
                            y.get(col)
                        ));
                    }
                }
            }
            (x, y) => diff.push_str(&format!(
                "{key}: {la} {} vs {lb} {}\n",
                if x.is_some() { "present" } else { "absent" },
                if y.is_some() { "present" } else { "absent" },
            )),
        }
    }
    diff
}

/// Asserts that the relay's server (`ours`) and the `ovs-vsctl` one (`theirs`) hold the
/// same rows.
#[track_caller]
pub fn assert_same(ours: &Ovsdb, theirs: &Ovsdb) {
    let diff = diff(&snapshot(ours), &snapshot(theirs), ("relay", "ovs-vsctl"));
    assert!(
        diff.is_empty(),
        "relay transaction and ovs-vsctl differ:\n{diff}"
    );
}

/// Asserts that `db` still holds exactly the rows of `before`.
#[track_caller]
pub fn assert_unchanged(db: &Ovsdb, before: &Snapshot, what: &str) {
    let after = snapshot(db);
    assert!(
        *before == after,
        "{what} changed the database:\n{}",
        diff(before, &after, ("before", "after"))
    );
}

// ---------------------------------------------------------------------------------------
// Cases shared by tests/it/txn.rs and tests/it/switch.rs
// ---------------------------------------------------------------------------------------

/// Before deleting br0: a tagged and an internal port on it, and br1 with a port of its own.
pub const DELETE_BRIDGE_SETUP: &[&[&str]] = &[
    &["add-br", "br0"],
    &["add-br", "br1"],
    &["add-port", "br0", "p1", "tag=5"],
    &internal_port("br0", "p2"),
    &["add-port", "br1", "q1"],
];

/// Before deleting p1: the tagged p1 and an internal p2 on br0.
pub const DELETE_PORT_SETUP: &[&[&str]] = &[
    &["add-br", "br0"],
    &["add-port", "br0", "p1", "tag=3"],
    &internal_port("br0", "p2"),
];

/// Adding the netdev bridge br-nd with two external_ids.
pub const ADD_NETDEV_BRIDGE: &[&str] = &[
    "add-br",
    "br-nd",
    "--",
    "set",
    "bridge",
    "br-nd",
    "datapath_type=netdev",
    "external_ids:owner=test",
    "external_ids:k=v w",
];

/// Adding the patch port patch-a (peer patch-b) to br0 with VLAN 0.
pub const ADD_PATCH_PORT: &[&str] = &[
    "add-port",
    "br0",
    "patch-a",
    "tag=0",
    "--",
    "set",
    "interface",
    "patch-a",
    "type=patch",
    "options:peer=patch-b",
];

/// Adding the internal port int1 to br1 with a tag, trunks, external_ids and the interface
/// options `key=flow` and `x_option`.
pub fn add_internal_port_with_everything(x_option: &str) -> [&str; 14] {
    [
        "add-port",
        "br1",
        "int1",
        "tag=10",
        "trunks=20,30,4095",
        "external_ids:iface-id=vm1",
        "external_ids:owner=relay",
        "--",
        "set",
        "interface",
        "int1",
        "type=internal",
        "options:key=flow",
        x_option,
    ]
}

/// Setting the external_ids a=1, b=2 and c=3 on `record` in `table`, before the
/// [`set_external_ids_vsctl`] case.
pub const fn external_ids_abc<'a>(table: &'a str, record: &'a str) -> [&'a str; 6] {
    [
        "set",
        table,
        record,
        "external_ids:a=1",
        "external_ids:b=2",
        "external_ids:c=3",
    ]
}

/// The `ovs-vsctl` counterpart of setting b=20, d=4 and e="" and removing c and missing
/// in the external_ids of `record` in `table`.
pub fn set_external_ids_vsctl<'a>(table: &'a str, record: &'a str) -> [&'a str; 13] {
    [
        "remove",
        table,
        record,
        "external_ids",
        "c",
        "missing",
        "--",
        "set",
        table,
        record,
        "external_ids:b=20",
        "external_ids:d=4",
        "external_ids:e=\"\"",
    ]
}
