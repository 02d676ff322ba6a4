//! Write transactions (SPEC §6 Switch1), built as native OVSDB `transact` operations.
//!
//! Every function here is pure: it turns plain values that the caller looked up in its
//! replica (row UUIDs, names) into the `params` of one RFC 7047 §4.1.3 `transact` request,
//! `["Open_vSwitch", op, op, ...]`. Sending it and waiting for the replica to show the
//! result is the caller's business; [`check_reply`] reads the server's answer.
//!
//! Each transaction has the same database effect as the matching
//! `ovs-vsctl --no-wait` command (checked against real servers in `tests/it/txn.rs`):
//!
//! - No `next_cfg += 1`: plain `ovs-vsctl` bumps `Open_vSwitch.next_cfg` and then waits
//!   for `ovs-vswitchd` to copy it to `cur_cfg`; `--no-wait` (and the relay, which never
//!   waits for `ovs-vswitchd`) leaves it alone. `ovs-vswitchd` reconfigures on any
//!   database change either way.
//! - Where `ovs-vsctl` rewrites whole columns after verifying what it read (`wait` ops on
//!   every column it looked at, retrying on conflict), these transactions use server-side
//!   `mutate` (`insert`/`delete` into sets and maps) so unrelated concurrent changes never
//!   make them fail, plus a `wait` precondition that the rows they touch still exist. A
//!   row that vanished since the replica saw it fails the transaction (`timed out`)
//!   instead of silently doing nothing.
//! - Bridge, Port and Interface are non-root tables: removing the last reference to a row
//!   deletes it (garbage collection), which is also how `ovs-vsctl del-br`/`del-port`
//!   remove them. Their `name` columns are unique indexes, so inserting a duplicate name
//!   fails the commit with `constraint violation` (the caller's `AlreadyExists`).
//! - New rows are referred to by the named UUIDs [`NEW_BRIDGE`], [`NEW_PORT`] and
//!   [`NEW_IFACE`]; the reply's `uuid` results give their real UUIDs.
//! - Each transaction ends with a `comment` op naming the equivalent `ovs-vsctl` command,
//!   which `ovsdb-server` records in its log (`ovsdb-tool show-log -m`), as `ovs-vsctl`
//!   does.

use super::datum::Uuid;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};

/// The database every transaction addresses.
pub const DATABASE: &str = "Open_vSwitch";

/// Named UUID of the Bridge row inserted by [`add_bridge`].
pub const NEW_BRIDGE: &str = "new_bridge";
/// Named UUID of the Port row inserted by [`add_bridge`] and [`add_port`].
pub const NEW_PORT: &str = "new_port";
/// Named UUID of the Interface row inserted by [`add_bridge`] and [`add_port`].
pub const NEW_IFACE: &str = "new_iface";

/// A new bridge, as `ovs-vsctl add-br NAME -- set bridge NAME datapath_type=T
/// external_ids:K=V ...`.
#[derive(Debug, Clone, Copy)]
pub struct AddBridge<'a> {
    pub name: &'a str,
    /// `None` leaves the schema default (`""`, which `ovs-vswitchd` treats as `system`).
    pub datapath_type: Option<&'a str>,
    pub external_ids: &'a BTreeMap<String, String>,
}

/// A new port with one interface of the same name, as `ovs-vsctl add-port BRIDGE NAME
/// tag=N trunks=A,B external_ids:K=V -- set interface NAME type=T options:K=V`.
#[derive(Debug, Clone, Copy)]
pub struct AddPort<'a> {
    pub name: &'a str,
    /// The Interface's `type`; `None` leaves the default `""` (a system device).
    pub port_type: Option<&'a str>,
    pub tag: Option<u16>,
    /// Duplicates are dropped (OVSDB sets cannot hold them); order does not matter.
    pub trunks: &'a [u16],
    /// The Port's `external_ids`.
    pub external_ids: &'a BTreeMap<String, String>,
    /// The Interface's `options`.
    pub interface_options: &'a BTreeMap<String, String>,
}

/// Creates a bridge: a Bridge row, its local Port and that port's Interface of type
/// `internal` (all three named `req.name`), linked from `Open_vSwitch.bridges` of the root
/// row `root`.
///
/// Fails with `constraint violation` when a Bridge, Port or Interface of that name exists,
/// and with `timed out` when `root` is not (or no longer) the root row.
pub fn add_bridge(root: Uuid, req: &AddBridge) -> Json {
    let mut bridge = json!({ "name": req.name, "ports": named(NEW_PORT) });
    if let Some(datapath_type) = req.datapath_type {
        bridge["datapath_type"] = json!(datapath_type);
    }
    if !req.external_ids.is_empty() {
        bridge["external_ids"] = string_map(req.external_ids);
    }
    params(vec![
        wait_exists("Open_vSwitch", where_uuid(root)),
        insert(
            "Interface",
            NEW_IFACE,
            json!({ "name": req.name, "type": "internal" }),
        ),
        insert(
            "Port",
            NEW_PORT,
            json!({ "name": req.name, "interfaces": named(NEW_IFACE) }),
        ),
        insert("Bridge", NEW_BRIDGE, bridge),
        mutate(
            "Open_vSwitch",
            root,
            vec![json!(["bridges", "insert", set([named(NEW_BRIDGE)])])],
        ),
        comment(format!("add-br {}", req.name)),
    ])
}

/// Deletes a bridge with all its ports and interfaces, as `ovs-vsctl del-br`: removes it
/// from `Open_vSwitch.bridges` of `root`, and the schema's garbage collection deletes the
/// Bridge row and, through it, its Port and Interface rows.
///
/// Also deletes the `Flow_Sample_Collector_Set` rows that point at the bridge: that table
/// is a root table with a strong reference to Bridge, so such a row would keep the Bridge
/// (and its ports) alive, unlinked but still holding their names. `ovs-vsctl` 3.1 leaves
/// that orphan behind; a collector set without its bridge is meaningless, so we do not.
///
/// The bridge's ports and interfaces are garbage-collected by the server, exactly as with
/// `ovs-vsctl`; deleting them explicitly would only add failure modes when the replica is
/// behind.
///
/// Fails with `timed out` when `bridge` is not (or no longer) in `root`'s bridges.
pub fn delete_bridge(root: Uuid, bridge: Uuid) -> Json {
    params(vec![
        wait_exists(
            "Open_vSwitch",
            json!([
                ["_uuid", "==", uuid(root)],
                ["bridges", "includes", uuid(bridge)]
            ]),
        ),
        json!({
            "op": "delete",
            "table": "Flow_Sample_Collector_Set",
            "where": [["bridge", "==", uuid(bridge)]],
        }),
        mutate(
            "Open_vSwitch",
            root,
            vec![json!(["bridges", "delete", set([uuid(bridge)])])],
        ),
        comment(format!("del-br {bridge}")),
    ])
}

/// Adds a port with one interface of the same name to `bridge`, as `ovs-vsctl add-port`.
///
/// Fails with `constraint violation` when a Port or Interface of that name exists
/// anywhere, and with `timed out` when `bridge` no longer exists.
pub fn add_port(bridge: Uuid, req: &AddPort) -> Json {
    let mut iface = json!({ "name": req.name });
    if let Some(port_type) = req.port_type {
        iface["type"] = json!(port_type);
    }
    if !req.interface_options.is_empty() {
        iface["options"] = string_map(req.interface_options);
    }
    let mut port = json!({ "name": req.name, "interfaces": named(NEW_IFACE) });
    if let Some(tag) = req.tag {
        port["tag"] = json!(tag);
    }
    if !req.trunks.is_empty() {
        let trunks: BTreeSet<u16> = req.trunks.iter().copied().collect();
        port["trunks"] = set(trunks.into_iter().map(|t| json!(t)));
    }
    if !req.external_ids.is_empty() {
        port["external_ids"] = string_map(req.external_ids);
    }
    params(vec![
        wait_exists("Bridge", where_uuid(bridge)),
        insert("Interface", NEW_IFACE, iface),
        insert("Port", NEW_PORT, port),
        mutate(
            "Bridge",
            bridge,
            vec![json!(["ports", "insert", set([named(NEW_PORT)])])],
        ),
        comment(format!("add-port {bridge} {}", req.name)),
    ])
}

/// Removes `port` from `bridge`, as `ovs-vsctl del-port`; the Port row and its interfaces
/// are garbage-collected.
///
/// The caller must refuse a bridge's own local port (named like the bridge), as
/// `ovs-vsctl` does: removing it leaves a bridge without its internal interface.
///
/// Fails with `timed out` when `port` is not (or no longer) on `bridge`.
pub fn delete_port(bridge: Uuid, port: Uuid) -> Json {
    params(vec![
        wait_exists(
            "Bridge",
            json!([
                ["_uuid", "==", uuid(bridge)],
                ["ports", "includes", uuid(port)]
            ]),
        ),
        mutate(
            "Bridge",
            bridge,
            vec![json!(["ports", "delete", set([uuid(port)])])],
        ),
        comment(format!("del-port {bridge} {port}")),
    ])
}

/// Sets the port's access VLAN, as `ovs-vsctl set port P tag=N` (replaces any tag;
/// `vlan_mode` is left alone). Fails with `timed out` when the port no longer exists.
pub fn set_vlan(port: Uuid, tag: u16) -> Json {
    update_port(
        port,
        json!({ "tag": tag }),
        format!("set port {port} tag={tag}"),
    )
}

/// Clears the port's VLAN tag, as `ovs-vsctl clear port P tag`. Fails with `timed out`
/// when the port no longer exists.
pub fn clear_vlan(port: Uuid) -> Json {
    update_port(
        port,
        json!({ "tag": set([]) }),
        format!("clear port {port} tag"),
    )
}

/// Changes `external_ids` of one row of `table` (`Bridge`, `Port`, `Interface`,
/// `Open_vSwitch`, ...; matched case-insensitively for these four), as `ovs-vsctl remove
/// T R external_ids K... -- set T R external_ids:K=V ...`: the keys in `remove` are
/// deleted, every key of `set` takes its new value, other keys are kept.
///
/// OVSDB's map `insert` mutation never overwrites an existing key, so the keys of `set`
/// are deleted first, in the same `mutate` op (mutations apply in order). A key both in
/// `remove` and in `set` therefore ends up with its value from `set`.
///
/// Fails with `timed out` when the row no longer exists.
pub fn set_external_ids(
    table: &str,
    row: Uuid,
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Json {
    let table = canonical_table(table);
    let deleted: BTreeSet<&str> = remove
        .iter()
        .map(String::as_str)
        .chain(set.keys().map(String::as_str))
        .collect();
    let mut mutations = Vec::new();
    if !deleted.is_empty() {
        mutations.push(json!([
            "external_ids",
            "delete",
            self::set(deleted.iter().map(|k| json!(k)))
        ]));
    }
    if !set.is_empty() {
        mutations.push(json!(["external_ids", "insert", string_map(set)]));
    }
    let mut ops = vec![wait_exists(table, where_uuid(row))];
    if !mutations.is_empty() {
        ops.push(mutate(table, row, mutations));
    }
    let mut what = format!("set external_ids {table} {row}");
    for key in remove {
        what.push_str(&format!(" -{key}"));
    }
    for (key, value) in set {
        what.push_str(&format!(" {key}={value}"));
    }
    ops.push(comment(what));
    params(ops)
}

/// openQA's `set_vlan(tap, vlan)`: os-autoinst-openvswitch runs
/// `ovs-vsctl set port TAP tag=VLAN vlan_mode=dot1q-tunnel` (the `vlan_mode` part on
/// Open vSwitch ≥ 2.8.1, i.e. always here). Fails with `timed out` when the port no
/// longer exists.
pub fn openqa_set_vlan(port: Uuid, vlan: u16) -> Json {
    update_port(
        port,
        json!({ "tag": vlan, "vlan_mode": "dot1q-tunnel" }),
        format!("set port {port} tag={vlan} vlan_mode=dot1q-tunnel"),
    )
}

/// openQA's `unset_vlan(tap, vlan)`: os-autoinst-openvswitch runs
/// `ovs-vsctl remove port TAP tag VLAN` and nothing else, so:
///
/// - the tag is removed only if it equals `vlan` (a different tag stays, and the call
///   still succeeds, as `ovs-vsctl remove` of an absent value does);
/// - `vlan_mode` stays `dot1q-tunnel`. The original script never clears it, and its
///   clients rely only on the tag; with no tag, `dot1q-tunnel` behaves like a trunk port
///   (as `ovs-vsctl` leaves it), and the next `set_vlan` sets the mode again anyway.
///
/// `ovs-vsctl remove` reads the column and writes it back; a server-side `delete`
/// mutation has the same effect without a read-modify-write race. Fails with `timed out`
/// when the port no longer exists.
pub fn openqa_unset_vlan(port: Uuid, vlan: u16) -> Json {
    params(vec![
        wait_exists("Port", where_uuid(port)),
        mutate(
            "Port",
            port,
            vec![json!(["tag", "delete", set([json!(vlan)])])],
        ),
        comment(format!("remove port {port} tag {vlan}")),
    ])
}

/// What plain `ovs-vsctl` adds to every write so that it can wait for ovs-vswitchd: bump
/// `Open_vSwitch.next_cfg` in the same transaction and read back the new value; ovs-vswitchd
/// copies it to `cur_cfg` once it has applied the database up to there (and it ignores
/// some column changes, `Port.trunks` among them, until `next_cfg` moves).
pub fn bump_next_cfg(params: &mut Json) {
    if let Json::Array(ops) = params {
        ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                        "mutations": [["next_cfg", "+=", 1]]}));
        ops.push(json!({"op": "select", "table": "Open_vSwitch", "where": [],
                        "columns": ["next_cfg"]}));
    }
}

/// The `next_cfg` that [`bump_next_cfg`] produced, from the transaction's reply.
pub fn bumped_next_cfg(reply: &Json) -> Option<i64> {
    reply.as_array()?.last()?["rows"][0]["next_cfg"].as_i64()
}

/// Reads the `result` of a `transact` reply: `Ok(())` when every operation succeeded.
///
/// RFC 7047 §4.1.3: the result has one element per operation; a failed operation's element
/// is an object with `error` (and usually `details`), the elements after it are `null`,
/// and a failure at commit time (e.g. a unique index) adds one more error element after
/// all the successful operations. The first error found is returned as `"error: details"`
/// (just `"error"` without details). Texts worth recognizing:
///
/// - `constraint violation: ...` — a duplicate name (unique index), an out-of-range value;
/// - `timed out: "where" clause test failed` — a precondition of this module failed: a
///   row the caller looked up no longer exists (or is no longer linked as expected);
/// - `referential integrity violation: ...` — a reference to a row that does not exist.
pub fn check_reply(reply: &Json) -> Result<(), String> {
    let Some(results) = reply.as_array() else {
        return Err(format!("malformed transact reply (not an array): {reply}"));
    };
    for result in results {
        let Some(error) = result.get("error") else {
            continue;
        };
        let error = match error {
            Json::String(text) => text.clone(),
            other => other.to_string(),
        };
        return Err(match result.get("details") {
            Some(Json::String(details)) if details.is_empty() => error,
            Some(Json::String(details)) => format!("{error}: {details}"),
            Some(Json::Null) | None => error,
            Some(details) => format!("{error}: {details}"),
        });
    }
    Ok(())
}

/// Checks a bridge or port name the way `ovs-vsctl` and the kernel would: `ovs-vsctl`
/// itself only refuses the empty name, but a name with `/`, a control character, or `.` /
/// `..` can never become a network device (and `/` would be a path separator for
/// vhost-user sockets), so it is rejected up front instead of leaving a broken row.
/// Length is not limited: userspace port types (DPDK, vhost-user, patch) may exceed
/// `IFNAMSIZ`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("invalid name {name:?}"));
    }
    if name.contains('/') {
        return Err(format!("invalid name {name:?}: must not contain '/'"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "invalid name {name:?}: must not contain control characters"
        ));
    }
    Ok(())
}

/// Checks a VLAN ID (`tag`, `trunks` entries): 0..=4095, as the schema's column bounds.
pub fn validate_vlan(vlan: u32) -> Result<u16, String> {
    match u16::try_from(vlan) {
        Ok(v) if v <= 4095 => Ok(v),
        _ => Err(format!("VLAN {vlan} is outside 0..4095")),
    }
}

// ---------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------

fn params(ops: Vec<Json>) -> Json {
    let mut params = Vec::with_capacity(ops.len() + 1);
    params.push(json!(DATABASE));
    params.extend(ops);
    Json::Array(params)
}

fn uuid(u: Uuid) -> Json {
    json!(["uuid", u.to_string()])
}

fn named(name: &str) -> Json {
    json!(["named-uuid", name])
}

fn set(atoms: impl IntoIterator<Item = Json>) -> Json {
    json!(["set", atoms.into_iter().collect::<Vec<_>>()])
}

fn string_map(map: &BTreeMap<String, String>) -> Json {
    json!([
        "map",
        map.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

fn where_uuid(row: Uuid) -> Json {
    json!([["_uuid", "==", uuid(row)]])
}

/// A precondition: exactly the rows matching `conditions` exist, and there is at least
/// one (projected on no columns, the distinct result must be the one empty row).
/// `timeout: 0` makes it fail at once instead of blocking.
fn wait_exists(table: &str, conditions: Json) -> Json {
    json!({
        "op": "wait",
        "table": table,
        "where": conditions,
        "columns": [],
        "until": "==",
        "rows": [{}],
        "timeout": 0,
    })
}

fn insert(table: &str, uuid_name: &str, row: Json) -> Json {
    json!({ "op": "insert", "table": table, "uuid-name": uuid_name, "row": row })
}

fn mutate(table: &str, row: Uuid, mutations: Vec<Json>) -> Json {
    json!({ "op": "mutate", "table": table, "where": where_uuid(row), "mutations": mutations })
}

fn update_port(port: Uuid, row: Json, what: String) -> Json {
    params(vec![
        wait_exists("Port", where_uuid(port)),
        json!({ "op": "update", "table": "Port", "where": where_uuid(port), "row": row }),
        comment(what),
    ])
}

fn comment(what: String) -> Json {
    json!({ "op": "comment", "comment": format!("ovs-dbus-relay: {what}") })
}

/// The schema's spelling of the tables SPEC §6 lets callers name in any case.
fn canonical_table(table: &str) -> &str {
    ["Open_vSwitch", "Bridge", "Port", "Interface"]
        .into_iter()
        .find(|t| t.eq_ignore_ascii_case(table))
        .unwrap_or(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "11111111-2222-3333-4444-555555555555";
    const BR: &str = "aaaaaaaa-0000-0000-0000-000000000001";
    const PORT: &str = "bbbbbbbb-0000-0000-0000-000000000002";

    fn u(text: &str) -> Uuid {
        Uuid::parse(text).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The ops, checked to be addressed to the database and to end with a comment.
    fn ops(params: &Json) -> Vec<Json> {
        let array = params.as_array().expect("params is an array");
        assert_eq!(array[0], json!("Open_vSwitch"));
        let ops = array[1..].to_vec();
        let last = ops.last().expect("at least one op");
        assert_eq!(last["op"], "comment");
        assert!(
            last["comment"]
                .as_str()
                .unwrap()
                .starts_with("ovs-dbus-relay: ")
        );
        ops[..ops.len() - 1].to_vec()
    }

    fn exists(table: &str, conditions: Json) -> Json {
        json!({
            "op": "wait", "table": table, "where": conditions,
            "columns": [], "until": "==", "rows": [{}], "timeout": 0
        })
    }

    #[test]
    fn add_bridge_minimal() {
        let none = BTreeMap::new();
        let p = add_bridge(
            u(ROOT),
            &AddBridge {
                name: "br0",
                datapath_type: None,
                external_ids: &none,
            },
        );
        assert_eq!(
            ops(&p),
            vec![
                exists("Open_vSwitch", json!([["_uuid", "==", ["uuid", ROOT]]])),
                json!({"op": "insert", "table": "Interface", "uuid-name": "new_iface",
                       "row": {"name": "br0", "type": "internal"}}),
                json!({"op": "insert", "table": "Port", "uuid-name": "new_port",
                       "row": {"name": "br0", "interfaces": ["named-uuid", "new_iface"]}}),
                json!({"op": "insert", "table": "Bridge", "uuid-name": "new_bridge",
                       "row": {"name": "br0", "ports": ["named-uuid", "new_port"]}}),
                json!({"op": "mutate", "table": "Open_vSwitch",
                       "where": [["_uuid", "==", ["uuid", ROOT]]],
                       "mutations": [["bridges", "insert", ["set", [["named-uuid", "new_bridge"]]]]]}),
            ]
        );
    }

    #[test]
    fn add_bridge_with_datapath_type_and_external_ids() {
        let ids = map(&[("b", "2"), ("a", "1")]);
        let p = add_bridge(
            u(ROOT),
            &AddBridge {
                name: "br-x",
                datapath_type: Some("netdev"),
                external_ids: &ids,
            },
        );
        let bridge = &ops(&p)[3];
        assert_eq!(bridge["table"], "Bridge");
        assert_eq!(
            bridge["row"],
            json!({"name": "br-x", "ports": ["named-uuid", "new_port"],
                   "datapath_type": "netdev",
                   "external_ids": ["map", [["a", "1"], ["b", "2"]]]})
        );
    }

    #[test]
    fn delete_bridge_unlinks_and_drops_collector_sets() {
        let p = delete_bridge(u(ROOT), u(BR));
        assert_eq!(
            ops(&p),
            vec![
                exists(
                    "Open_vSwitch",
                    json!([
                        ["_uuid", "==", ["uuid", ROOT]],
                        ["bridges", "includes", ["uuid", BR]]
                    ])
                ),
                json!({"op": "delete", "table": "Flow_Sample_Collector_Set",
                       "where": [["bridge", "==", ["uuid", BR]]]}),
                json!({"op": "mutate", "table": "Open_vSwitch",
                       "where": [["_uuid", "==", ["uuid", ROOT]]],
                       "mutations": [["bridges", "delete", ["set", [["uuid", BR]]]]]}),
            ]
        );
    }

    #[test]
    fn add_port_minimal() {
        let none = BTreeMap::new();
        let p = add_port(
            u(BR),
            &AddPort {
                name: "p1",
                port_type: None,
                tag: None,
                trunks: &[],
                external_ids: &none,
                interface_options: &none,
            },
        );
        assert_eq!(
            ops(&p),
            vec![
                exists("Bridge", json!([["_uuid", "==", ["uuid", BR]]])),
                json!({"op": "insert", "table": "Interface", "uuid-name": "new_iface",
                       "row": {"name": "p1"}}),
                json!({"op": "insert", "table": "Port", "uuid-name": "new_port",
                       "row": {"name": "p1", "interfaces": ["named-uuid", "new_iface"]}}),
                json!({"op": "mutate", "table": "Bridge",
                       "where": [["_uuid", "==", ["uuid", BR]]],
                       "mutations": [["ports", "insert", ["set", [["named-uuid", "new_port"]]]]]}),
            ]
        );
    }

    #[test]
    fn add_port_full() {
        let ids = map(&[("k", "v")]);
        let opts = map(&[("peer", "p2")]);
        let p = add_port(
            u(BR),
            &AddPort {
                name: "p1",
                port_type: Some("patch"),
                tag: Some(0),
                trunks: &[30, 20, 30],
                external_ids: &ids,
                interface_options: &opts,
            },
        );
        let ops = ops(&p);
        assert_eq!(
            ops[1]["row"],
            json!({"name": "p1", "type": "patch", "options": ["map", [["peer", "p2"]]]})
        );
        assert_eq!(
            ops[2]["row"],
            json!({"name": "p1", "interfaces": ["named-uuid", "new_iface"], "tag": 0,
                   "trunks": ["set", [20, 30]], "external_ids": ["map", [["k", "v"]]]})
        );
    }

    #[test]
    fn delete_port_requires_membership() {
        let p = delete_port(u(BR), u(PORT));
        assert_eq!(
            ops(&p),
            vec![
                exists(
                    "Bridge",
                    json!([
                        ["_uuid", "==", ["uuid", BR]],
                        ["ports", "includes", ["uuid", PORT]]
                    ])
                ),
                json!({"op": "mutate", "table": "Bridge",
                       "where": [["_uuid", "==", ["uuid", BR]]],
                       "mutations": [["ports", "delete", ["set", [["uuid", PORT]]]]]}),
            ]
        );
    }

    #[test]
    fn vlan_updates() {
        let port_exists = exists("Port", json!([["_uuid", "==", ["uuid", PORT]]]));
        let update = |row: Json| {
            json!({"op": "update", "table": "Port",
                   "where": [["_uuid", "==", ["uuid", PORT]]], "row": row})
        };
        assert_eq!(
            ops(&set_vlan(u(PORT), 4095)),
            vec![port_exists.clone(), update(json!({"tag": 4095}))]
        );
        assert_eq!(
            ops(&clear_vlan(u(PORT))),
            vec![port_exists.clone(), update(json!({"tag": ["set", []]}))]
        );
        assert_eq!(
            ops(&openqa_set_vlan(u(PORT), 12)),
            vec![
                port_exists.clone(),
                update(json!({"tag": 12, "vlan_mode": "dot1q-tunnel"}))
            ]
        );
        assert_eq!(
            ops(&openqa_unset_vlan(u(PORT), 12)),
            vec![
                port_exists,
                json!({"op": "mutate", "table": "Port",
                       "where": [["_uuid", "==", ["uuid", PORT]]],
                       "mutations": [["tag", "delete", ["set", [12]]]]}),
            ]
        );
    }

    #[test]
    fn external_ids_delete_before_insert() {
        let set = map(&[("b", "20"), ("d", "4")]);
        let remove = vec!["c".to_string(), "b".to_string()];
        let p = set_external_ids("interface", u(PORT), &set, &remove);
        assert_eq!(
            ops(&p),
            vec![
                exists("Interface", json!([["_uuid", "==", ["uuid", PORT]]])),
                json!({"op": "mutate", "table": "Interface",
                "where": [["_uuid", "==", ["uuid", PORT]]],
                "mutations": [
                    ["external_ids", "delete", ["set", ["b", "c", "d"]]],
                    ["external_ids", "insert", ["map", [["b", "20"], ["d", "4"]]]],
                ]}),
            ]
        );
    }

    #[test]
    fn external_ids_edge_cases() {
        let none = BTreeMap::new();
        // Nothing to change: only the existence check.
        let p = set_external_ids("PORT", u(PORT), &none, &[]);
        assert_eq!(
            ops(&p),
            vec![exists("Port", json!([["_uuid", "==", ["uuid", PORT]]]))]
        );
        // Only removals: no insert mutation; table names are canonicalized.
        let p = set_external_ids("open_vswitch", u(ROOT), &none, &["x".into()]);
        assert_eq!(
            ops(&p)[1]["mutations"],
            json!([["external_ids", "delete", ["set", ["x"]]]])
        );
        assert_eq!(ops(&p)[1]["table"], "Open_vSwitch");
        // Unknown tables pass through unchanged (the server will reject them).
        assert_eq!(
            ops(&set_external_ids("QoS", u(ROOT), &none, &[]))[0]["table"],
            "QoS"
        );
    }

    #[test]
    fn check_reply_cases() {
        assert_eq!(check_reply(&json!([])), Ok(()));
        assert_eq!(
            check_reply(&json!([{}, {"uuid": ["uuid", ROOT]}, {"count": 1}, {}])),
            Ok(())
        );
        // A failed op: its error, later results null.
        assert_eq!(
            check_reply(&json!([
                {"error": "timed out", "details": "\"where\" clause test failed"},
                null,
                null
            ])),
            Err("timed out: \"where\" clause test failed".to_string())
        );
        // A commit failure: an extra trailing error after successful ops.
        assert_eq!(
            check_reply(&json!([
                {"uuid": ["uuid", ROOT]},
                {"count": 1},
                {"error": "constraint violation", "details": "duplicate"}
            ])),
            Err("constraint violation: duplicate".to_string())
        );
        // The first error wins; missing details give the bare error.
        assert_eq!(
            check_reply(&json!([{"error": "first"}, {"error": "second", "details": "x"}])),
            Err("first".to_string())
        );
        assert!(check_reply(&json!({"error": "x"})).is_err());
        assert!(check_reply(&Json::Null).is_err());
    }

    #[test]
    fn names() {
        for good in [
            "br0",
            "tap12",
            "a b",
            "ä",
            "a:b",
            "-x",
            "verylongname0123456789",
        ] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\nb", "a\0b", "\t"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vlans() {
        assert_eq!(validate_vlan(0), Ok(0));
        assert_eq!(validate_vlan(4095), Ok(4095));
        assert!(validate_vlan(4096).is_err());
        assert!(validate_vlan(65536 + 5).is_err());
        assert!(validate_vlan(u32::MAX).is_err());
    }
}
