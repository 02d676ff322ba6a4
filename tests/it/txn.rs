//! The write transactions of `ovsdb::txn` against real `ovsdb-server`s.
//!
//! Each case prepares two fresh servers identically with `ovs-vsctl`, sends the relay's
//! transaction to the first (with `ovsdb-client transact`) and runs the equivalent
//! `ovs-vsctl --no-wait` command on the second, then compares every column of every
//! Open_vSwitch, Bridge, Port, Interface and Flow_Sample_Collector_Set row as
//! `ovs-vsctl list` shows them (`crate::common::compare`, shared with `tests/it/switch.rs`). Error
//! cases check the reply text and that nothing changed.

use crate::common::compare::{
    ADD_NETDEV_BRIDGE, ADD_PATCH_PORT, DELETE_BRIDGE_SETUP, DELETE_PORT_SETUP,
    add_internal_port_with_everything, assert_same, assert_unchanged, external_ids_abc, pair,
    set_external_ids_vsctl, snapshot,
};
use crate::common::{COMMAND_TIMEOUT, Ovsdb, require, run_bounded};
use ovs_dbus_relay::ovsdb::datum::Uuid;
use ovs_dbus_relay::ovsdb::txn::{self, AddBridge, AddPort};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::process::Command;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Sends `params` as one `transact` and returns the raw result array.
fn transact(db: &Ovsdb, params: &Json) -> Json {
    let client = require("ovsdb-client", "openvswitch-switch");
    let out = run_bounded(
        Command::new(client)
            .arg("transact")
            .arg(db.remote())
            .arg(params.to_string()),
        COMMAND_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ovsdb-client transact {params} failed ({}): {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("ovsdb-client printed no JSON ({e}): {stdout}"))
}

/// Sends `params` and asserts that every operation succeeded.
fn apply(db: &Ovsdb, params: &Json) -> Json {
    let reply = transact(db, params);
    if let Err(e) = txn::check_reply(&reply) {
        panic!("transaction {params} failed: {e}\nreply: {reply}");
    }
    reply
}

/// Sends `params`, asserts that it failed and left the database as it was; returns the
/// error text.
fn apply_err(db: &Ovsdb, params: &Json) -> String {
    let before = snapshot(db);
    let reply = transact(db, params);
    let Err(err) = txn::check_reply(&reply) else {
        panic!("transaction {params} should fail, reply: {reply}");
    };
    assert_unchanged(db, &before, "failed transaction");
    err
}

/// Sends `params`, whose rows are not (or no longer) where they say, and asserts that it
/// failed on the `wait` guarding them, leaving the database as it was.
fn apply_stale(db: &Ovsdb, params: &Json) {
    let err = apply_err(db, params);
    assert!(err.starts_with("timed out"), "{params}: {err}");
}

fn uuid_of(db: &Ovsdb, table: &str, record: &str) -> Uuid {
    let text = db.vsctl(&["get", table, record, "_uuid"]);
    Uuid::parse(&text).unwrap_or_else(|| panic!("bad uuid {text:?}"))
}

fn port(db: &Ovsdb, name: &str) -> Uuid {
    uuid_of(db, "Port", name)
}

fn root(db: &Ovsdb) -> Uuid {
    uuid_of(db, "Open_vSwitch", ".")
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get(db: &Ovsdb, table: &str, record: &str, column: &str) -> String {
    db.vsctl(&["get", table, record, column])
}

/// The sorted `name`s of every row of `table`.
fn names(db: &Ovsdb, table: &str) -> Vec<String> {
    let mut names: Vec<String> = db
        .vsctl(&["--bare", "--columns=name", "list", table])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

const NONE: &BTreeMap<String, String> = &BTreeMap::new();

fn no_options_bridge(name: &str) -> AddBridge<'_> {
    AddBridge {
        name,
        datapath_type: None,
        external_ids: NONE,
    }
}

fn no_options_port(name: &str) -> AddPort<'_> {
    AddPort {
        name,
        port_type: None,
        tag: None,
        trunks: &[],
        external_ids: NONE,
        interface_options: NONE,
    }
}

// ---------------------------------------------------------------------------------------
// Bridges
// ---------------------------------------------------------------------------------------

#[test]
fn add_bridge_matches_add_br() {
    let (ours, theirs) = pair(&[]);
    let reply = apply(
        &ours,
        &txn::add_bridge(root(&ours), &no_options_bridge("br0")),
    );
    theirs.vsctl(&["add-br", "br0"]);
    assert_same(&ours, &theirs);
    // The inserted Bridge's uuid is in the reply (op 4: wait, iface, port, bridge).
    let bridge = Uuid::parse(reply[3]["uuid"][1].as_str().unwrap()).unwrap();
    assert_eq!(bridge, uuid_of(&ours, "Bridge", "br0"));
    // next_cfg stays as with --no-wait.
    assert_eq!(get(&ours, "Open_vSwitch", ".", "next_cfg"), "0");
}

#[test]
fn add_bridge_with_datapath_type_and_external_ids() {
    let (ours, theirs) = pair(&[&["add-br", "br0"]]);
    let ids = map(&[("owner", "test"), ("k", "v w")]);
    apply(
        &ours,
        &txn::add_bridge(
            root(&ours),
            &AddBridge {
                name: "br-nd",
                datapath_type: Some("netdev"),
                external_ids: &ids,
            },
        ),
    );
    theirs.vsctl(ADD_NETDEV_BRIDGE);
    assert_same(&ours, &theirs);
    assert_eq!(get(&ours, "Bridge", "br-nd", "datapath_type"), "netdev");
}

#[test]
fn delete_bridge_matches_del_br() {
    let (ours, theirs) = pair(DELETE_BRIDGE_SETUP);
    let br0 = uuid_of(&ours, "Bridge", "br0");
    apply(&ours, &txn::delete_bridge(root(&ours), br0));
    theirs.vsctl(&["del-br", "br0"]);
    assert_same(&ours, &theirs);
    // The bridge's ports and interfaces were garbage-collected.
    assert_eq!(names(&ours, "Bridge"), ["br1"]);
    assert_eq!(names(&ours, "Port"), ["br1", "q1"]);
    assert_eq!(names(&ours, "Interface"), ["br1", "q1"]);
}

#[test]
fn delete_bridge_also_drops_its_flow_sample_collector_sets() {
    // A Flow_Sample_Collector_Set (a root table) holds a strong reference to its bridge.
    // ovs-vsctl 3.1's `del-br` leaves such a bridge behind, unlinked but alive (with its
    // ports and their names); the relay deletes the collector set too, which is what
    // `del-br br0 -- destroy Flow_Sample_Collector_Set ...` gives.
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-br", "br1"],
        &["add-port", "br0", "p1"],
        &[
            "--id=@b",
            "get",
            "bridge",
            "br0",
            "--",
            "create",
            "Flow_Sample_Collector_Set",
            "id=1",
            "bridge=@b",
        ],
        &[
            "--id=@b",
            "get",
            "bridge",
            "br1",
            "--",
            "create",
            "Flow_Sample_Collector_Set",
            "id=2",
            "bridge=@b",
        ],
    ];
    let (ours, theirs) = pair(setup);
    let br0 = uuid_of(&ours, "Bridge", "br0");
    apply(&ours, &txn::delete_bridge(root(&ours), br0));
    let fscs = theirs.vsctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "Flow_Sample_Collector_Set",
        "id=1",
    ]);
    theirs.vsctl(&[
        "del-br",
        "br0",
        "--",
        "destroy",
        "Flow_Sample_Collector_Set",
        &fscs,
    ]);
    assert_same(&ours, &theirs);
    assert_eq!(names(&ours, "Bridge"), ["br1"]);
    assert_eq!(names(&ours, "Port"), ["br1"]);
}

#[test]
fn add_bridge_duplicate_is_a_constraint_violation() {
    let (ours, _) = pair(&[&["add-br", "br0"], &["add-port", "br0", "p1"]]);
    let root = root(&ours);
    // Same name as a bridge, and as a port/interface of another bridge: both are unique
    // indexes in the schema.
    for name in ["br0", "p1"] {
        let err = apply_err(&ours, &txn::add_bridge(root, &no_options_bridge(name)));
        assert!(err.starts_with("constraint violation: "), "{name}: {err}");
        assert!(err.contains(&format!("({name})")), "{name}: {err}");
    }
}

#[test]
fn add_bridge_with_stale_root_fails() {
    let (ours, _) = pair(&[]);
    let stale = Uuid::parse("01234567-89ab-cdef-0123-456789abcdef").unwrap();
    apply_stale(&ours, &txn::add_bridge(stale, &no_options_bridge("br0")));
}

#[test]
fn delete_bridge_with_stale_uuid_fails() {
    let (ours, _) = pair(&[&["add-br", "br0"], &["add-br", "br1"]]);
    let br0 = uuid_of(&ours, "Bridge", "br0");
    ours.vsctl(&["del-br", "br0"]);
    let err = apply_err(&ours, &txn::delete_bridge(root(&ours), br0));
    assert_eq!(err, "timed out: \"where\" clause test failed");
    // Re-created under the same name: the old uuid is still stale.
    ours.vsctl(&["add-br", "br0"]);
    apply_stale(&ours, &txn::delete_bridge(root(&ours), br0));
}

// ---------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------

#[test]
fn add_port_plain_matches_add_port() {
    let (ours, theirs) = pair(&[&["add-br", "br0"], &["add-port", "br0", "p0"]]);
    let br0 = uuid_of(&ours, "Bridge", "br0");
    apply(&ours, &txn::add_port(br0, &no_options_port("p1")));
    theirs.vsctl(&["add-port", "br0", "p1"]);
    assert_same(&ours, &theirs);
}

#[test]
fn add_port_internal_with_everything_matches_add_port() {
    let (ours, theirs) = pair(&[&["add-br", "br0"], &["add-br", "br1"]]);
    let br1 = uuid_of(&ours, "Bridge", "br1");
    let ids = map(&[("iface-id", "vm1"), ("owner", "relay")]);
    let opts = map(&[("key", "flow"), ("x", "y")]);
    apply(
        &ours,
        &txn::add_port(
            br1,
            &AddPort {
                name: "int1",
                port_type: Some("internal"),
                tag: Some(10),
                trunks: &[30, 20, 4095],
                external_ids: &ids,
                interface_options: &opts,
            },
        ),
    );
    theirs.vsctl(&add_internal_port_with_everything("options:x=y"));
    assert_same(&ours, &theirs);
    assert_eq!(get(&ours, "Port", "int1", "trunks"), "[20, 30, 4095]");
}

#[test]
fn add_port_patch_with_tag_zero_matches_add_port() {
    let (ours, theirs) = pair(&[&["add-br", "br0"]]);
    let br0 = uuid_of(&ours, "Bridge", "br0");
    let opts = map(&[("peer", "patch-b")]);
    apply(
        &ours,
        &txn::add_port(
            br0,
            &AddPort {
                interface_options: &opts,
                port_type: Some("patch"),
                tag: Some(0),
                ..no_options_port("patch-a")
            },
        ),
    );
    theirs.vsctl(ADD_PATCH_PORT);
    assert_same(&ours, &theirs);
}

#[test]
fn add_port_duplicate_or_stale_bridge_fails() {
    let (ours, _) = pair(&[
        &["add-br", "br0"],
        &["add-br", "br1"],
        &["add-port", "br0", "p1"],
    ]);
    let br1 = uuid_of(&ours, "Bridge", "br1");
    // A port of that name on another bridge, and the bridge's own name.
    for name in ["p1", "br0", "br1"] {
        let err = apply_err(&ours, &txn::add_port(br1, &no_options_port(name)));
        assert!(err.starts_with("constraint violation: "), "{name}: {err}");
    }
    ours.vsctl(&["del-br", "br1"]);
    apply_stale(&ours, &txn::add_port(br1, &no_options_port("p2")));
}

#[test]
fn delete_port_matches_del_port() {
    let (ours, theirs) = pair(DELETE_PORT_SETUP);
    let br0 = uuid_of(&ours, "Bridge", "br0");
    let p1 = port(&ours, "p1");
    apply(&ours, &txn::delete_port(br0, p1));
    theirs.vsctl(&["del-port", "br0", "p1"]);
    assert_same(&ours, &theirs);
    assert_eq!(names(&ours, "Port"), ["br0", "p2"]);
    assert_eq!(names(&ours, "Interface"), ["br0", "p2"]);
}

#[test]
fn delete_port_stale_or_on_another_bridge_fails() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-br", "br1"],
        &["add-port", "br0", "p1"],
        &["add-port", "br1", "q1"],
    ];
    let (ours, _) = pair(setup);
    let br0 = uuid_of(&ours, "Bridge", "br0");
    let q1 = port(&ours, "q1");
    // q1 is on br1, not br0.
    apply_stale(&ours, &txn::delete_port(br0, q1));
    // p1 was deleted (and re-created with a new uuid) since the caller looked it up.
    let p1 = port(&ours, "p1");
    ours.vsctl(&["del-port", "p1"]);
    ours.vsctl(&["add-port", "br0", "p1"]);
    apply_stale(&ours, &txn::delete_port(br0, p1));
}

// ---------------------------------------------------------------------------------------
// VLANs
// ---------------------------------------------------------------------------------------

#[test]
fn set_vlan_matches_set_tag() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "p1"],
        &["add-port", "br0", "p2", "tag=9", "vlan_mode=access"],
    ];
    let (ours, theirs) = pair(setup);
    apply(&ours, &txn::set_vlan(port(&ours, "p1"), 42));
    apply(&ours, &txn::set_vlan(port(&ours, "p2"), 4095));
    theirs.vsctl(&["set", "port", "p1", "tag=42"]);
    theirs.vsctl(&["set", "port", "p2", "tag=4095"]);
    assert_same(&ours, &theirs);
    assert_eq!(get(&ours, "Port", "p2", "vlan_mode"), "access");
}

#[test]
fn clear_vlan_matches_clear_tag() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "p1", "tag=7", "vlan_mode=dot1q-tunnel"],
        &["add-port", "br0", "p2"],
    ];
    let (ours, theirs) = pair(setup);
    apply(&ours, &txn::clear_vlan(port(&ours, "p1")));
    // Clearing an absent tag is fine too.
    apply(&ours, &txn::clear_vlan(port(&ours, "p2")));
    theirs.vsctl(&["clear", "port", "p1", "tag"]);
    theirs.vsctl(&["clear", "port", "p2", "tag"]);
    assert_same(&ours, &theirs);
    assert_eq!(get(&ours, "Port", "p1", "tag"), "[]");
}

#[test]
fn vlan_on_stale_port_fails() {
    let (ours, _) = pair(&[&["add-br", "br0"], &["add-port", "br0", "p1"]]);
    let p1 = port(&ours, "p1");
    ours.vsctl(&["del-port", "p1"]);
    for params in [
        txn::set_vlan(p1, 1),
        txn::clear_vlan(p1),
        txn::openqa_set_vlan(p1, 1),
        txn::openqa_unset_vlan(p1, 1),
    ] {
        apply_stale(&ours, &params);
    }
}

#[test]
fn out_of_range_vlan_is_rejected_by_the_server() {
    // validate_vlan is the caller's guard; the schema backs it up.
    let (ours, _) = pair(&[&["add-br", "br0"], &["add-port", "br0", "p1"]]);
    let err = apply_err(&ours, &txn::set_vlan(port(&ours, "p1"), 4096));
    assert!(err.starts_with("constraint violation"), "{err}");
    assert!(txn::validate_vlan(4096).is_err());
}

// ---------------------------------------------------------------------------------------
// external_ids
// ---------------------------------------------------------------------------------------

#[test]
fn set_external_ids_matches_remove_and_set_on_every_table() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "p1"],
        &external_ids_abc("Open_vSwitch", "."),
        &external_ids_abc("Bridge", "br0"),
        &external_ids_abc("Port", "p1"),
        &external_ids_abc("Interface", "p1"),
    ];
    let (ours, theirs) = pair(setup);
    let set = map(&[("b", "20"), ("d", "4"), ("e", "")]);
    let remove = vec!["c".to_string(), "missing".to_string()];
    // The caller may spell the table in any case (SPEC §6).
    for (table, spelled, record) in [
        ("Open_vSwitch", "open_vswitch", "."),
        ("Bridge", "bridge", "br0"),
        ("Port", "PORT", "p1"),
        ("Interface", "Interface", "p1"),
    ] {
        let row = uuid_of(&ours, table, record);
        apply(&ours, &txn::set_external_ids(spelled, row, &set, &remove));
        theirs.vsctl(&set_external_ids_vsctl(table, record));
        assert_eq!(
            get(&ours, table, record, "external_ids"),
            r#"{a="1", b="20", d="4", e=""}"#,
            "{table}"
        );
    }
    assert_same(&ours, &theirs);
}

#[test]
fn set_external_ids_only_removes_or_only_sets() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "p1"],
        &["set", "Port", "p1", "external_ids:a=1", "external_ids:b=2"],
        &["set", "Interface", "p1", "external_ids:a=1"],
    ];
    let (ours, theirs) = pair(setup);
    apply(
        &ours,
        &txn::set_external_ids("port", port(&ours, "p1"), NONE, &["a".into()]),
    );
    apply(
        &ours,
        &txn::set_external_ids(
            "interface",
            uuid_of(&ours, "Interface", "p1"),
            &map(&[("a", "9")]),
            &[],
        ),
    );
    // Nothing to do: only the existence check runs.
    apply(
        &ours,
        &txn::set_external_ids("bridge", uuid_of(&ours, "Bridge", "br0"), NONE, &[]),
    );
    theirs.vsctl(&["remove", "port", "p1", "external_ids", "a"]);
    theirs.vsctl(&["set", "interface", "p1", "external_ids:a=9"]);
    assert_same(&ours, &theirs);
}

#[test]
fn set_external_ids_on_stale_row_fails() {
    let (ours, _) = pair(&[&["add-br", "br0"], &["add-port", "br0", "p1"]]);
    let iface = uuid_of(&ours, "Interface", "p1");
    ours.vsctl(&["del-port", "p1"]);
    apply_stale(
        &ours,
        &txn::set_external_ids("Interface", iface, &map(&[("k", "v")]), &[]),
    );
}

// ---------------------------------------------------------------------------------------
// openQA compatibility (os-autoinst-openvswitch)
// ---------------------------------------------------------------------------------------

#[test]
fn openqa_set_vlan_matches_the_script() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "tap0"],
        &["add-port", "br0", "tap1", "tag=3", "vlan_mode=access"],
    ];
    let (ours, theirs) = pair(setup);
    apply(&ours, &txn::openqa_set_vlan(port(&ours, "tap0"), 7));
    apply(&ours, &txn::openqa_set_vlan(port(&ours, "tap1"), 8));
    theirs.vsctl(&["set", "port", "tap0", "tag=7", "vlan_mode=dot1q-tunnel"]);
    theirs.vsctl(&["set", "port", "tap1", "tag=8", "vlan_mode=dot1q-tunnel"]);
    assert_same(&ours, &theirs);
    assert_eq!(get(&ours, "Port", "tap0", "vlan_mode"), "dot1q-tunnel");
}

#[test]
fn openqa_unset_vlan_matches_the_script() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "tap0", "tag=7", "vlan_mode=dot1q-tunnel"],
        &["add-port", "br0", "tap1", "tag=7", "vlan_mode=dot1q-tunnel"],
        &["add-port", "br0", "tap2"],
    ];
    let (ours, theirs) = pair(setup);
    // The matching tag goes; vlan_mode stays (the script only runs `remove ... tag`).
    apply(&ours, &txn::openqa_unset_vlan(port(&ours, "tap0"), 7));
    // A different tag stays, and so does "no tag at all"; both succeed.
    apply(&ours, &txn::openqa_unset_vlan(port(&ours, "tap1"), 8));
    apply(&ours, &txn::openqa_unset_vlan(port(&ours, "tap2"), 8));
    theirs.vsctl(&["remove", "port", "tap0", "tag", "7"]);
    theirs.vsctl(&["remove", "port", "tap1", "tag", "8"]);
    theirs.vsctl(&["remove", "port", "tap2", "tag", "8"]);
    assert_same(&ours, &theirs);
    assert_eq!(get(&ours, "Port", "tap0", "tag"), "[]");
    assert_eq!(get(&ours, "Port", "tap0", "vlan_mode"), "dot1q-tunnel");
    assert_eq!(get(&ours, "Port", "tap1", "tag"), "7");
}

// ---------------------------------------------------------------------------------------
// A whole life cycle on one server, built only from the relay's transactions
// ---------------------------------------------------------------------------------------

#[test]
fn life_cycle_from_relay_transactions_only() {
    let (ours, theirs) = pair(&[]);
    let ids = map(&[("created-by", "relay")]);
    let reply = apply(
        &ours,
        &txn::add_bridge(
            root(&ours),
            &AddBridge {
                name: "br0",
                datapath_type: Some("netdev"),
                external_ids: &ids,
            },
        ),
    );
    let br0 = Uuid::parse(reply[3]["uuid"][1].as_str().unwrap()).unwrap();
    let reply = apply(
        &ours,
        &txn::add_port(
            br0,
            &AddPort {
                tag: Some(5),
                ..no_options_port("tap0")
            },
        ),
    );
    let tap0 = Uuid::parse(reply[2]["uuid"][1].as_str().unwrap()).unwrap();
    assert_eq!(tap0, port(&ours, "tap0"));
    apply(&ours, &txn::add_port(br0, &no_options_port("tap1")));
    apply(&ours, &txn::openqa_set_vlan(tap0, 12));
    apply(&ours, &txn::delete_port(br0, port(&ours, "tap1")));

    theirs.vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
        "external_ids:created-by=relay",
    ]);
    theirs.vsctl(&["add-port", "br0", "tap0", "tag=5"]);
    theirs.vsctl(&["add-port", "br0", "tap1"]);
    theirs.vsctl(&["set", "port", "tap0", "tag=12", "vlan_mode=dot1q-tunnel"]);
    theirs.vsctl(&["del-port", "br0", "tap1"]);
    assert_same(&ours, &theirs);

    apply(&ours, &txn::delete_bridge(root(&ours), br0));
    theirs.vsctl(&["del-br", "br0"]);
    assert_same(&ours, &theirs);
    assert!(names(&ours, "Interface").is_empty());
}
