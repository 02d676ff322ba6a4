//! `org.ovsdbus.Switch1` and the openQA compatibility API (SPEC §6, issue 5) end to end:
//! the relay binary on a private bus, writing to a real `ovsdb-server`.
//!
//! - Effect: every write is compared with the `ovs-vsctl --no-wait` command that does the
//!   same, run on a second server prepared identically (`crate::common::compare`: every column
//!   of every Open_vSwitch, Bridge, Port, Interface and Flow_Sample_Collector_Set row).
//! - Read-your-writes: as soon as a method returns, `GetRow` and the row's object already
//!   show what the database now holds, column by column. They are read first thing after
//!   the reply, with no sleep and no poll in between.
//! - Errors: the D-Bus error name of every refusal, and that a refused call changed
//!   nothing.

use crate::common::Ovsdb;
use crate::common::compare::{
    ADD_NETDEV_BRIDGE, ADD_PATCH_PORT, DELETE_BRIDGE_SETUP, DELETE_PORT_SETUP, Snapshot,
    add_internal_port_with_everything, assert_same, assert_unchanged, external_ids_abc, pair,
    set_external_ids_vsctl, snapshot,
};
use crate::common::signals::{BUS_NAME, ROOT, error_name, error_of, relay_proxy};
use crate::common::{Stack, poll_until_async};
use crate::openqa::OpenQa;
use ovs_dbus_relay::bus::escape::encode_label;
use ovs_dbus_relay::client::Switch1Proxy;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use zbus::{Connection, OwnedVariant, Proxy, Variant};

const WAIT: Duration = Duration::from_secs(20);

const NOT_FOUND: &str = "org.ovsdbus.Error.NotFound";
const ALREADY_EXISTS: &str = "org.ovsdbus.Error.AlreadyExists";
const NOT_CONNECTED: &str = "org.ovsdbus.Error.NotConnected";
const TRANSACTION_FAILED: &str = "org.ovsdbus.Error.TransactionFailed";
const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";

/// `a{sv}` as the relay answers it.
type Dict = HashMap<String, OwnedVariant>;
/// `a{sv}` options as a caller sends them.
type Options = ovs_dbus_relay::client::Options<'static>;

// ---------------------------------------------------------------------------------------
// Calling the relay
// ---------------------------------------------------------------------------------------

fn opts<const N: usize>(pairs: [(&'static str, Variant<'static>); N]) -> Options {
    pairs.into_iter().collect()
}

fn ss(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ss_variant(pairs: &[(&str, &str)]) -> Variant<'static> {
    Variant::from(ss(pairs))
}

/// `org.ovsdbus.Switch1` on the relay's root object.
#[derive(Clone)]
/// The library's `Switch1` proxy, with the tests' argument shapes.
struct Switch(Switch1Proxy<'static>);

impl Switch {
    async fn new(conn: &Connection) -> Switch {
        Switch(Switch1Proxy::new(conn).await.expect("Switch1 proxy"))
    }

    /// Any call, for the ones the typed proxy cannot make (wrong signatures).
    async fn call<B>(&self, method: &str, body: &B) -> zbus::Result<()>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.0.inner().call(method, body).await
    }

    async fn add_bridge(&self, name: &str, options: Options) -> zbus::Result<()> {
        self.0.add_bridge(name, options).await
    }

    async fn delete_bridge(&self, name: &str, if_exists: bool) -> zbus::Result<()> {
        self.0.delete_bridge(name, if_exists).await
    }

    async fn add_port(&self, bridge: &str, port: &str, options: Options) -> zbus::Result<()> {
        self.0.add_port(bridge, port, options).await
    }

    async fn delete_port(&self, port: &str, if_exists: bool) -> zbus::Result<()> {
        self.0.delete_port(port, if_exists).await
    }

    async fn set_vlan(&self, port: &str, tag: u32) -> zbus::Result<()> {
        self.0.set_vlan(port, tag).await
    }

    async fn clear_vlan(&self, port: &str) -> zbus::Result<()> {
        self.0.clear_vlan(port).await
    }

    async fn set_external_ids(
        &self,
        table: &str,
        name: &str,
        set: &[(&str, &str)],
        remove: &[&str],
    ) -> zbus::Result<()> {
        let set = set.iter().copied().collect();
        self.0.set_external_ids(table, name, set, remove).await
    }
}

// ---------------------------------------------------------------------------------------
// Reading back: the relay's view against the database
// ---------------------------------------------------------------------------------------

/// `/org/ovsdbus/Relay1/<table>/<escaped name>` and `org.ovsdbus.<Table>1`.
fn object_of(table: &str, name: &str) -> (String, String) {
    (
        format!("{ROOT}/{}/{}", table.to_lowercase(), encode_label(name)),
        format!("org.ovsdbus.{table}1"),
    )
}

async fn get_row(conn: &Connection, table: &str, name: &str) -> zbus::Result<Dict> {
    relay_proxy(conn).await.call("GetRow", &(table, name)).await
}

async fn get_all(conn: &Connection, path: &str, interface: &str) -> zbus::Result<Dict> {
    Proxy::new(conn, BUS_NAME, path, "org.freedesktop.DBus.Properties")
        .await?
        .call("GetAll", &(interface,))
        .await
}

/// A set as `ovs-vsctl --data=json` prints it: one element bare, otherwise sorted.
fn canonical_set(mut items: Vec<Json>) -> Json {
    if items.len() == 1 {
        return items.remove(0);
    }
    items.sort_by_key(Json::to_string);
    Json::Array(items)
}

fn canonical_map(mut pairs: Vec<Json>) -> Json {
    pairs.sort_by_key(Json::to_string);
    json!(["map", pairs])
}

/// A D-Bus value (SPEC §3 mapping) in a form comparable with [`db_json`].
fn variant_json(value: &Variant<'_>) -> Json {
    match value {
        Variant::Bool(b) => json!(b),
        Variant::U8(i) => json!(i),
        Variant::I16(i) => json!(i),
        Variant::U16(i) => json!(i),
        Variant::I32(i) => json!(i),
        Variant::U32(i) => json!(i),
        Variant::I64(i) => json!(i),
        Variant::U64(i) => json!(i),
        Variant::F64(f) => json!(f),
        Variant::Str(s) => json!(s.as_str()),
        Variant::ObjectPath(p) => json!(p.to_string()),
        Variant::Variant(inner) => variant_json(inner),
        Variant::Array(array) => canonical_set(array.inner().iter().map(variant_json).collect()),
        Variant::Dict(dict) => canonical_map(
            dict.iter()
                .map(|(k, v)| json!([variant_json(k), variant_json(v)]))
                .collect(),
        ),
        other => panic!("unexpected D-Bus value {other:?}"),
    }
}

/// An `ovs-vsctl --data=json` value in a form comparable with [`variant_json`]: UUIDs as
/// their strings, sets and maps sorted.
fn db_json(value: &Json) -> Json {
    match value.as_array().map(Vec::as_slice) {
        Some([tag, Json::String(uuid)]) if tag == "uuid" => json!(uuid),
        Some([tag, Json::Array(items)]) if tag == "set" => {
            canonical_set(items.iter().map(db_json).collect())
        }
        Some([tag, Json::Array(pairs)]) if tag == "map" => canonical_map(
            pairs
                .iter()
                .map(|pair| json!([db_json(&pair[0]), db_json(&pair[1])]))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// The row of `table` named `name` as `ovs-vsctl list` shows it: column → value.
fn db_row(db: &Ovsdb, table: &str, name: &str) -> HashMap<String, Json> {
    let out = db.vsctl(&["--format=json", "--data=json", "list", table, name]);
    let listing: Json = serde_json::from_str(&out).expect("ovs-vsctl JSON");
    let headings = listing["headings"].as_array().expect("headings");
    let values = listing["data"][0].as_array().expect("one row");
    headings
        .iter()
        .map(|h| h.as_str().expect("heading").to_string())
        .zip(values.iter().cloned())
        .collect()
}

fn dict_json(dict: &Dict) -> HashMap<String, Json> {
    dict.iter()
        .map(|(k, v)| (k.clone(), variant_json(v)))
        .collect()
}

/// Read-your-writes, right after a method returned: `GetRow` and the properties of the
/// row's object are read first, then the database. Every column `GetRow` returns (plus
/// `_uuid`) must equal the database's value, and the object's `Columns` must equal the
/// row. Returns the row and the object's properties.
async fn assert_current(
    conn: &Connection,
    db: &Ovsdb,
    table: &str,
    name: &str,
) -> (HashMap<String, Json>, HashMap<String, Json>) {
    let row = get_row(conn, table, name)
        .await
        .unwrap_or_else(|e| panic!("GetRow({table}, {name}) right after the reply: {e}"));
    let (path, interface) = object_of(table, name);
    let props = get_all(conn, &path, &interface)
        .await
        .unwrap_or_else(|e| panic!("GetAll({interface}) on {path} right after the reply: {e}"));
    let db = db_row(db, table, name);
    let row = dict_json(&row);
    let props = dict_json(&props);

    assert!(row.contains_key("name"), "{table} {name}: GetRow {row:?}");
    let mut diff = String::new();
    for (column, got) in &row {
        let want = db.get(column).map(db_json);
        if want.as_ref() != Some(got) {
            diff.push_str(&format!("  {column}: GetRow {got} vs database {want:?}\n"));
        }
    }
    assert!(
        diff.is_empty(),
        "GetRow({table}, {name}) right after the reply is not the database's row:\n{diff}"
    );
    let mut columns = row.clone();
    columns.remove("_uuid");
    let object_columns = props.get("Columns").cloned().unwrap_or(Json::Null);
    let expected_columns = canonical_map(
        columns
            .iter()
            .map(|(k, v)| json!([k, v]))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        object_columns, expected_columns,
        "{path}: Columns right after the reply"
    );
    assert_eq!(props.get("Name"), Some(&json!(name)), "{path}");
    assert_eq!(props.get("Uuid"), row.get("_uuid"), "{path}");
    (row, props)
}

/// Right after a deletion: `GetRow` says `NotFound` and the object is gone.
async fn assert_gone(conn: &Connection, table: &str, name: &str) {
    assert_eq!(
        error_name(get_row(conn, table, name).await),
        NOT_FOUND,
        "GetRow({table}, {name}) right after the deletion"
    );
    let (path, interface) = object_of(table, name);
    assert_eq!(
        error_name(get_all(conn, &path, &interface).await),
        "org.freedesktop.DBus.Error.UnknownObject",
        "{path} right after the deletion"
    );
}

// ---------------------------------------------------------------------------------------
// Fixture: two servers, the relay on the first
// ---------------------------------------------------------------------------------------

struct Env {
    /// The relay on the server it writes to, [`Env::ours`].
    stack: Stack,
    /// The server `ovs-vsctl` writes to.
    theirs: Ovsdb,
    switch: Switch,
}

impl Env {
    /// Both servers prepared with `setup`; the relay (with `extra` flags) on the first.
    /// No ovs-vswitchd runs here, so the relay's writes are compared with `ovs-vsctl
    /// --no-wait` and made with `--no-wait` (`tests/it/applied.rs` has the waiting ones).
    async fn start(setup: &[&[&str]], extra: &[&str]) -> Env {
        let (ours, theirs) = pair(setup);
        let extra = [&["--no-wait"], extra].concat();
        let stack = Stack::start_on(ours, &extra, WAIT).await;
        let switch = Switch::new(&stack.sub.conn).await;
        Env {
            stack,
            theirs,
            switch,
        }
    }

    /// The server the relay writes to.
    fn ours(&self) -> &Ovsdb {
        &self.stack.db
    }

    fn conn(&self) -> &Connection {
        &self.stack.sub.conn
    }

    async fn current(
        &self,
        table: &str,
        name: &str,
    ) -> (HashMap<String, Json>, HashMap<String, Json>) {
        assert_current(self.conn(), self.ours(), table, name).await
    }

    async fn gone(&self, table: &str, name: &str) {
        assert_gone(self.conn(), table, name).await
    }

    fn snapshot(&self) -> Snapshot {
        snapshot(self.ours())
    }

    /// Deleting a row that is gone already with `delete(if_exists)`: success with
    /// `if_exists`, `NotFound` without, and nothing changes; `ovs-vsctl` refuses `vsctl`.
    async fn assert_deleting_missing<F, Fut>(
        &self,
        method: &str,
        what: &str,
        delete: F,
        vsctl: &[&str],
    ) where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = zbus::Result<()>>,
    {
        let before = self.snapshot();
        ok(delete(true).await, &format!("{method} if_exists"));
        assert_eq!(error_name(delete(false).await), NOT_FOUND);
        assert_unchanged(self.ours(), &before, &format!("{method} of {what}"));
        self.vsctl_refuses(vsctl);
    }

    /// Asserts that `theirs` refuses `args` too (as the relay just did).
    #[track_caller]
    fn vsctl_refuses(&self, args: &[&str]) -> String {
        let out = self.theirs.vsctl_output(args);
        assert!(
            !out.status.success(),
            "ovs-vsctl {} succeeded where the relay refused",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// The outcome of `call` and how long it took.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = call.await;
    (result, started.elapsed())
}

#[track_caller]
fn ok(result: zbus::Result<()>, what: &str) {
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Each write method against ovs-vsctl, with read-your-writes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_bridge_matches_add_br() {
    let env = Env::start(&[], &[]).await;

    ok(
        env.switch.add_bridge("br0", opts([])).await,
        "AddBridge br0",
    );
    env.current("Bridge", "br0").await;
    let (port, _) = env.current("Port", "br0").await;
    let (iface, _) = env.current("Interface", "br0").await;
    assert_eq!(iface["type"], "internal");
    assert_eq!(port["interfaces"], iface["_uuid"]);
    env.theirs.vsctl(&["add-br", "br0"]);
    assert_same(env.ours(), &env.theirs);

    ok(
        env.switch
            .add_bridge(
                "br-nd",
                opts([
                    ("datapath_type", Variant::from("netdev")),
                    (
                        "external_ids",
                        ss_variant(&[("owner", "test"), ("k", "v w")]),
                    ),
                ]),
            )
            .await,
        "AddBridge br-nd",
    );
    let (row, props) = env.current("Bridge", "br-nd").await;
    assert_eq!(row["datapath_type"], "netdev");
    assert_eq!(props["DatapathType"], "netdev");
    assert_eq!(
        props["ExternalIds"],
        json!(["map", [["k", "v w"], ["owner", "test"]]])
    );
    env.current("Port", "br-nd").await;
    env.current("Interface", "br-nd").await;
    env.theirs.vsctl(ADD_NETDEV_BRIDGE);
    assert_same(env.ours(), &env.theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_bridge_matches_del_br() {
    let env = Env::start(DELETE_BRIDGE_SETUP, &[]).await;

    ok(env.switch.delete_bridge("br0", false).await, "DeleteBridge");
    env.gone("Bridge", "br0").await;
    for name in ["br0", "p1", "p2"] {
        env.gone("Port", name).await;
        env.gone("Interface", name).await;
    }
    env.current("Bridge", "br1").await;
    env.current("Port", "q1").await;
    env.theirs.vsctl(&["del-br", "br0"]);
    assert_same(env.ours(), &env.theirs);

    // Gone already: fine with if_exists (and nothing changes), NotFound without.
    env.assert_deleting_missing(
        "DeleteBridge",
        "a missing bridge",
        |if_exists| env.switch.delete_bridge("br0", if_exists),
        &["del-br", "br0"],
    )
    .await;
    env.theirs.vsctl(&["--if-exists", "del-br", "br0"]);
    assert_same(env.ours(), &env.theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_port_matches_add_port() {
    let env = Env::start(&[&["add-br", "br0"], &["add-br", "br1"]], &[]).await;

    ok(
        env.switch.add_port("br0", "p1", opts([])).await,
        "AddPort p1",
    );
    let (_, props) = env.current("Port", "p1").await;
    assert_eq!(props["Bridge"], json!(object_of("Bridge", "br0").0));
    assert_eq!(props["Interfaces"], json!(object_of("Interface", "p1").0));
    let (_, props) = env.current("Interface", "p1").await;
    assert_eq!(props["Port"], json!(object_of("Port", "p1").0));
    assert_eq!(props["Bridge"], json!(object_of("Bridge", "br0").0));
    env.current("Bridge", "br0").await;
    env.theirs.vsctl(&["add-port", "br0", "p1"]);
    assert_same(env.ours(), &env.theirs);

    ok(
        env.switch
            .add_port(
                "br1",
                "int1",
                opts([
                    ("type", Variant::from("internal")),
                    ("tag", Variant::from(10u32)),
                    ("trunks", Variant::from(vec![30u32, 20, 4095, 20])),
                    (
                        "external_ids",
                        ss_variant(&[("iface-id", "vm1"), ("owner", "relay")]),
                    ),
                    (
                        "interface_options",
                        ss_variant(&[("key", "flow"), ("x", "y z")]),
                    ),
                ]),
            )
            .await,
        "AddPort int1",
    );
    let (row, props) = env.current("Port", "int1").await;
    assert_eq!(row["tag"], 10);
    assert_eq!(props["Tag"], 10);
    assert_eq!(props["Trunks"], json!([20, 30, 4095]));
    let (row, _) = env.current("Interface", "int1").await;
    assert_eq!(row["type"], "internal");
    env.current("Bridge", "br1").await;
    env.theirs
        .vsctl(&add_internal_port_with_everything("options:x=y z"));
    assert_same(env.ours(), &env.theirs);

    // A patch port with VLAN 0 (a valid tag, not "no tag").
    ok(
        env.switch
            .add_port(
                "br0",
                "patch-a",
                opts([
                    ("type", Variant::from("patch")),
                    ("tag", Variant::from(0u32)),
                    ("interface_options", ss_variant(&[("peer", "patch-b")])),
                ]),
            )
            .await,
        "AddPort patch-a",
    );
    let (row, _) = env.current("Port", "patch-a").await;
    assert_eq!(row["tag"], 0);
    env.current("Interface", "patch-a").await;
    env.theirs.vsctl(ADD_PATCH_PORT);
    assert_same(env.ours(), &env.theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_port_matches_del_port() {
    let env = Env::start(DELETE_PORT_SETUP, &[]).await;

    ok(env.switch.delete_port("p1", false).await, "DeletePort p1");
    env.gone("Port", "p1").await;
    env.gone("Interface", "p1").await;
    let (row, _) = env.current("Bridge", "br0").await;
    assert_eq!(row["ports"].as_array().map(Vec::len), Some(2), "{row:?}");
    env.theirs.vsctl(&["del-port", "br0", "p1"]);
    assert_same(env.ours(), &env.theirs);

    env.assert_deleting_missing(
        "DeletePort",
        "a missing port",
        |if_exists| env.switch.delete_port("p1", if_exists),
        &["del-port", "p1"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_vlan_and_clear_vlan_match_set_and_clear() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "p1"],
        &["add-port", "br0", "p2", "tag=9", "vlan_mode=access"],
        &["add-port", "br0", "p3", "tag=7", "vlan_mode=dot1q-tunnel"],
    ];
    let env = Env::start(setup, &[]).await;

    ok(env.switch.set_vlan("p1", 42).await, "SetVlan p1 42");
    let (row, props) = env.current("Port", "p1").await;
    assert_eq!(row["tag"], 42);
    assert_eq!(props["Tag"], 42);

    // Replaces a tag; vlan_mode stays.
    ok(env.switch.set_vlan("p2", 4095).await, "SetVlan p2 4095");
    let (row, _) = env.current("Port", "p2").await;
    assert_eq!(row["tag"], 4095);
    assert_eq!(row["vlan_mode"], "access");

    ok(env.switch.clear_vlan("p3").await, "ClearVlan p3");
    let (row, props) = env.current("Port", "p3").await;
    assert_eq!(row["tag"], json!([]));
    assert_eq!(props["Tag"], json!([]));
    assert_eq!(row["vlan_mode"], "dot1q-tunnel");

    // Back and forth on one port: each reply shows the latest state.
    ok(env.switch.clear_vlan("p1").await, "ClearVlan p1");
    assert_eq!(env.current("Port", "p1").await.0["tag"], json!([]));
    ok(env.switch.clear_vlan("p1").await, "ClearVlan p1 again");
    assert_eq!(env.current("Port", "p1").await.0["tag"], json!([]));
    ok(env.switch.set_vlan("p1", 0).await, "SetVlan p1 0");
    assert_eq!(env.current("Port", "p1").await.0["tag"], 0);

    for args in [
        &["set", "port", "p1", "tag=42"][..],
        &["set", "port", "p2", "tag=4095"],
        &["clear", "port", "p3", "tag"],
        &["clear", "port", "p1", "tag"],
        &["clear", "port", "p1", "tag"],
        &["set", "port", "p1", "tag=0"],
    ] {
        env.theirs.vsctl(args);
    }
    assert_same(env.ours(), &env.theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_external_ids_matches_remove_and_set_on_each_table() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-port", "br0", "p1"],
        &external_ids_abc("Bridge", "br0"),
        &external_ids_abc("Port", "p1"),
        &external_ids_abc("Interface", "p1"),
    ];
    let env = Env::start(setup, &[]).await;

    // The table in any case (SPEC §6); Port p1 and Interface p1 are different rows.
    for (table, spelled, record) in [
        ("Bridge", "bridge", "br0"),
        ("Port", "PORT", "p1"),
        ("Interface", "Interface", "p1"),
    ] {
        ok(
            env.switch
                .set_external_ids(
                    spelled,
                    record,
                    &[("b", "20"), ("d", "4"), ("e", "")],
                    &["c", "missing"],
                )
                .await,
            &format!("SetExternalIds {spelled} {record}"),
        );
        let (row, props) = env.current(table, record).await;
        let want = json!(["map", [["a", "1"], ["b", "20"], ["d", "4"], ["e", ""]]]);
        assert_eq!(row["external_ids"], want, "{table}");
        assert_eq!(props["ExternalIds"], want, "{table}");
        env.theirs.vsctl(&set_external_ids_vsctl(table, record));
    }
    assert_same(env.ours(), &env.theirs);

    // Only removals, only additions, and nothing at all.
    ok(
        env.switch.set_external_ids("port", "p1", &[], &["a"]).await,
        "remove only",
    );
    assert_eq!(
        env.current("Port", "p1").await.0["external_ids"],
        json!(["map", [["b", "20"], ["d", "4"], ["e", ""]]])
    );
    ok(
        env.switch
            .set_external_ids("interface", "p1", &[("a", "9")], &[])
            .await,
        "set only",
    );
    assert_eq!(
        env.current("Interface", "p1").await.0["external_ids"],
        json!(["map", [["a", "9"], ["b", "20"], ["d", "4"], ["e", ""]]])
    );
    ok(
        env.switch.set_external_ids("Bridge", "br0", &[], &[]).await,
        "nothing",
    );
    env.current("Bridge", "br0").await;
    env.theirs
        .vsctl(&["remove", "port", "p1", "external_ids", "a"]);
    env.theirs
        .vsctl(&["set", "interface", "p1", "external_ids:a=9"]);
    assert_same(env.ours(), &env.theirs);
}

/// Several callers at once: every reply still comes after its own change is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_with_concurrent_callers() {
    let env = Env::start(&[&["add-br", "br0"]], &[]).await;
    const N: u32 = 12;
    let mut tasks = Vec::new();
    for n in 0..N {
        let switch = env.switch.clone();
        let conn = env.conn().clone();
        tasks.push(tokio::spawn(async move {
            let port = format!("c{n}");
            switch
                .add_port("br0", &port, opts([("tag", Variant::from(n))]))
                .await
                .unwrap_or_else(|e| panic!("AddPort {port}: {e}"));
            let row = dict_json(&get_row(&conn, "Port", &port).await.expect("GetRow"));
            assert_eq!(row["tag"], n, "{port} right after AddPort");
            switch
                .set_vlan(&port, n + 100)
                .await
                .unwrap_or_else(|e| panic!("SetVlan {port}: {e}"));
            let row = dict_json(&get_row(&conn, "Port", &port).await.expect("GetRow"));
            assert_eq!(row["tag"], n + 100, "{port} right after SetVlan");
        }));
    }
    for task in tasks {
        task.await.expect("caller task");
    }
    for n in 0..N {
        let port = format!("c{n}");
        let tag = format!("tag={}", n + 100);
        env.theirs.vsctl(&["add-port", "br0", &port, &tag]);
    }
    assert_same(env.ours(), &env.theirs);
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_exists_unless_may_exist() {
    let setup: &[&[&str]] = &[
        &["add-br", "br0"],
        &["add-br", "br1"],
        &["add-port", "br0", "p1", "tag=3"],
        &["add-bond", "br0", "bond0", "eth1", "eth2"],
    ];
    let env = Env::start(setup, &[]).await;
    let before = env.snapshot();
    let sw = &env.switch;

    assert_eq!(
        error_name(sw.add_bridge("br0", opts([])).await),
        ALREADY_EXISTS
    );
    env.vsctl_refuses(&["add-br", "br0"]);
    // Names are unique across bridges' local ports and ports: a bridge cannot take a
    // port's name, nor a port a bridge's.
    assert_eq!(
        error_name(sw.add_bridge("p1", opts([])).await),
        ALREADY_EXISTS
    );
    env.vsctl_refuses(&["add-br", "p1"]);
    assert_eq!(
        error_name(sw.add_port("br0", "br1", opts([])).await),
        ALREADY_EXISTS
    );
    env.vsctl_refuses(&["add-port", "br0", "br1"]);
    assert_eq!(
        error_name(sw.add_port("br0", "p1", opts([])).await),
        ALREADY_EXISTS
    );
    env.vsctl_refuses(&["add-port", "br0", "p1"]);
    assert_eq!(
        error_name(sw.add_port("br1", "p1", opts([])).await),
        ALREADY_EXISTS
    );
    // may_exist covers "already there as asked": on that bridge, with one interface of
    // its own name. Not a port on another bridge, a bond, or a bond's interface.
    let may_exist = || opts([("may_exist", Variant::from(true))]);
    for (bridge, port, why) in [
        ("br1", "p1", "bridge \"br0\""),
        ("br0", "bond0", "eth1, eth2"),
        ("br0", "eth1", ""),
    ] {
        let (name, text) = error_of(sw.add_port(bridge, port, may_exist()).await);
        assert_eq!(
            name, ALREADY_EXISTS,
            "may_exist AddPort {bridge} {port}: {text}"
        );
        assert!(
            text.contains(why),
            "may_exist AddPort {bridge} {port}: {text}"
        );
        env.vsctl_refuses(&["--may-exist", "add-port", bridge, port]);
    }
    assert_unchanged(env.ours(), &before, "a refused AddBridge/AddPort");

    // may_exist: success, and nothing changes (the options are not applied either).
    ok(
        sw.add_bridge("br0", opts([("may_exist", Variant::from(true))]))
            .await,
        "AddBridge may_exist",
    );
    ok(
        sw.add_bridge(
            "br0",
            opts([
                ("may_exist", Variant::from(true)),
                ("datapath_type", Variant::from("netdev")),
            ]),
        )
        .await,
        "AddBridge may_exist with options",
    );
    ok(
        sw.add_port(
            "br0",
            "p1",
            opts([
                ("may_exist", Variant::from(true)),
                ("tag", Variant::from(5u32)),
            ]),
        )
        .await,
        "AddPort may_exist",
    );
    // may_exist=false is the default, spelled out.
    assert_eq!(
        error_name(
            sw.add_port("br0", "p1", opts([("may_exist", Variant::from(false))]))
                .await
        ),
        ALREADY_EXISTS
    );
    assert_unchanged(env.ours(), &before, "AddBridge/AddPort with may_exist");
    env.theirs.vsctl(&["--may-exist", "add-br", "br0"]);
    env.theirs.vsctl(&["--may-exist", "add-port", "br0", "p1"]);
    assert_same(env.ours(), &env.theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_errors() {
    let env = Env::start(&[&["add-br", "br0"], &["add-port", "br0", "p1"]], &[]).await;
    let before = env.snapshot();
    let sw = &env.switch;

    let cases: Vec<(&str, zbus::Result<()>)> = vec![
        (
            "AddPort on a missing bridge",
            sw.add_port("nobr", "p2", opts([])).await,
        ),
        (
            "AddPort on a port that is no bridge",
            sw.add_port("p1", "p2", opts([])).await,
        ),
        ("SetVlan", sw.set_vlan("nop", 5).await),
        ("ClearVlan", sw.clear_vlan("nop").await),
        ("DeletePort", sw.delete_port("nop", false).await),
        ("DeleteBridge", sw.delete_bridge("nobr", false).await),
        (
            "DeleteBridge of a port",
            sw.delete_bridge("p1", false).await,
        ),
        (
            "SetExternalIds Port",
            sw.set_external_ids("Port", "nop", &[("k", "v")], &[]).await,
        ),
        (
            "SetExternalIds Bridge",
            sw.set_external_ids("Bridge", "p1", &[("k", "v")], &[])
                .await,
        ),
        (
            "SetExternalIds Interface",
            sw.set_external_ids("Interface", "nop", &[], &["k"]).await,
        ),
    ];
    for (what, result) in cases {
        let (name, text) = error_of(result);
        assert_eq!(name, NOT_FOUND, "{what}: {text}");
        assert!(!text.is_empty(), "{what}: an error needs a message");
    }
    env.vsctl_refuses(&["add-port", "nobr", "p2"]);
    env.vsctl_refuses(&["set", "port", "nop", "tag=5"]);
    env.vsctl_refuses(&["del-port", "nop"]);
    env.vsctl_refuses(&["del-br", "nobr"]);

    // if_exists turns a missing row into success.
    ok(sw.delete_port("nop", true).await, "DeletePort if_exists");
    ok(
        sw.delete_bridge("nobr", true).await,
        "DeleteBridge if_exists",
    );
    assert_unchanged(env.ours(), &before, "calls on missing rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_args() {
    let env = Env::start(&[&["add-br", "br0"], &["add-port", "br0", "p1"]], &[]).await;
    let before = env.snapshot();
    let sw = &env.switch;

    let cases: Vec<(&str, zbus::Result<()>)> = vec![
        // VLANs outside 0..4095.
        ("SetVlan 4096", sw.set_vlan("p1", 4096).await),
        ("SetVlan u32::MAX", sw.set_vlan("p1", u32::MAX).await),
        (
            "AddPort tag 4096",
            sw.add_port("br0", "p2", opts([("tag", Variant::from(4096u32))]))
                .await,
        ),
        (
            "AddPort trunks with 4096",
            sw.add_port(
                "br0",
                "p2",
                opts([("trunks", Variant::from(vec![10u32, 4096]))]),
            )
            .await,
        ),
        // Bad names.
        ("AddBridge \"\"", sw.add_bridge("", opts([])).await),
        ("AddPort \"\"", sw.add_port("br0", "", opts([])).await),
        ("AddBridge a/b", sw.add_bridge("a/b", opts([])).await),
        ("AddPort ..", sw.add_port("br0", "..", opts([])).await),
        ("AddPort tab", sw.add_port("br0", "p\t2", opts([])).await),
        // Unknown option keys.
        (
            "AddBridge fail_mode",
            sw.add_bridge("br2", opts([("fail_mode", Variant::from("secure"))]))
                .await,
        ),
        (
            "AddPort vlan",
            sw.add_port("br0", "p2", opts([("vlan", Variant::from(5u32))]))
                .await,
        ),
        // Options of the wrong type.
        (
            "AddPort tag as a string",
            sw.add_port("br0", "p2", opts([("tag", Variant::from("5"))]))
                .await,
        ),
        (
            "AddPort tag as i32",
            sw.add_port("br0", "p2", opts([("tag", Variant::from(5i32))]))
                .await,
        ),
        (
            "AddPort trunks as strings",
            sw.add_port(
                "br0",
                "p2",
                opts([("trunks", Variant::from(vec!["1".to_string()]))]),
            )
            .await,
        ),
        (
            "AddPort external_ids as a list",
            sw.add_port(
                "br0",
                "p2",
                opts([("external_ids", Variant::from(vec!["k=v".to_string()]))]),
            )
            .await,
        ),
        (
            "AddPort type as u32",
            sw.add_port("br0", "p2", opts([("type", Variant::from(1u32))]))
                .await,
        ),
        (
            "AddBridge may_exist as a string",
            sw.add_bridge("br2", opts([("may_exist", Variant::from("yes"))]))
                .await,
        ),
        (
            "AddBridge datapath_type as bool",
            sw.add_bridge("br2", opts([("datapath_type", Variant::from(true))]))
                .await,
        ),
        // A bridge's local port goes with the bridge only.
        (
            "DeletePort of a local port",
            sw.delete_port("br0", false).await,
        ),
        (
            "DeletePort of a local port, if_exists",
            sw.delete_port("br0", true).await,
        ),
        // Tables without names, or not mirrored.
        (
            "SetExternalIds Mirror",
            sw.set_external_ids("Mirror", "m0", &[("k", "v")], &[])
                .await,
        ),
        (
            "SetExternalIds \"\"",
            sw.set_external_ids("", "p1", &[("k", "v")], &[]).await,
        ),
        // The wrong argument types altogether.
        ("SetVlan (s, i)", sw.call("SetVlan", &("p1", 5i32)).await),
        ("ClearVlan ()", sw.call("ClearVlan", &()).await),
    ];
    for (what, result) in cases {
        let (name, text) = error_of(result);
        assert_eq!(name, INVALID_ARGS, "{what}: {text}");
    }
    // The ovs-vsctl counterparts are refused too.
    env.vsctl_refuses(&["set", "port", "p1", "tag=4096"]);
    env.vsctl_refuses(&["add-br", ""]);
    env.vsctl_refuses(&["del-port", "br0"]);
    assert_unchanged(env.ours(), &before, "refused calls");
    assert_same(env.ours(), &env.theirs);
}

/// A database server that is gone: every write says `NotConnected` at once; once the
/// server is back, writes work again and still read their own writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_connected_while_ovsdb_server_is_down() {
    let db = Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-port", "br0", "p1"]);
    let mut stack = Stack::start_on(db, &["--no-wait"], WAIT).await;
    let (db, sub) = (&mut stack.db, &stack.sub);
    let sw = Switch::new(&sub.conn).await;

    db.kill();
    let calls = [
        ("SetVlan", timed(sw.set_vlan("p1", 5)).await),
        ("AddBridge", timed(sw.add_bridge("br9", opts([]))).await),
        ("DeleteBridge", timed(sw.delete_bridge("br0", false)).await),
        ("AddPort", timed(sw.add_port("br0", "p9", opts([]))).await),
        ("DeletePort", timed(sw.delete_port("p1", false)).await),
        ("ClearVlan", timed(sw.clear_vlan("p1")).await),
        (
            "SetExternalIds",
            timed(sw.set_external_ids("Port", "p1", &[("k", "v")], &[])).await,
        ),
    ];
    for (what, (result, took)) in calls {
        let (name, text) = error_of(result);
        assert_eq!(name, NOT_CONNECTED, "{what}: {text}");
        assert!(
            took < Duration::from_secs(2),
            "{what} took {took:?} to say NotConnected"
        );
    }

    // The relay noticed; bring the server back.
    let noticed = poll_until_async(WAIT, Duration::from_millis(50), || async {
        if sub.property::<String>("State").await == "ready" {
            Err(())
        } else {
            Ok(())
        }
    })
    .await;
    assert!(noticed.is_ok(), "relay still ready without a server");
    db.restart();
    sub.wait_ready(WAIT).await;
    ok(sw.set_vlan("p1", 5).await, "SetVlan after the restart");
    let (row, _) = assert_current(&sub.conn, db, "Port", "p1").await;
    assert_eq!(row["tag"], 5);
    ok(
        sw.add_port("br0", "p2", opts([])).await,
        "AddPort after the restart",
    );
    assert_current(&sub.conn, db, "Port", "p2").await;
}

/// `TransactionFailed` with the server's own error text: the relay pointed at a backup
/// server reads fine, but the server refuses the write exactly as it refuses ovs-vsctl's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_failed_on_a_read_only_backup_server() {
    let active = Ovsdb::start();
    active.vsctl(&["add-br", "br0"]);
    active.vsctl(&["add-port", "br0", "tap0"]);
    let stack = Stack::start_on(
        Ovsdb::start_backup(&active),
        &["--openqa-compat", "--no-wait"],
        WAIT,
    )
    .await;
    let (backup, sub) = (&stack.db, &stack.sub);
    let sw = Switch::new(&sub.conn).await;
    get_row(&sub.conn, "Port", "tap0")
        .await
        .expect("the backup serves reads");
    let before = snapshot(&active);

    let (name, text) = error_of(sw.set_vlan("tap0", 5).await);
    assert_eq!(name, TRANSACTION_FAILED, "{text}");
    let out = backup.vsctl_output(&["set", "port", "tap0", "tag=5"]);
    assert!(!out.status.success(), "ovs-vsctl wrote to a backup server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ovs-vsctl: transaction error: {"details":"...","error":"not allowed"}
    let details: Json = stderr
        .split_once("transaction error: ")
        .and_then(|(_, json)| serde_json::from_str(json.trim()).ok())
        .unwrap_or_else(|| panic!("unexpected ovs-vsctl error: {stderr}"));
    let server_text = format!(
        "{}: {}",
        details["error"].as_str().unwrap(),
        details["details"].as_str().unwrap()
    );
    assert_eq!(
        text, server_text,
        "the server's error text, as ovs-vsctl got it"
    );

    for (what, result) in [
        ("AddBridge", sw.add_bridge("br9", opts([])).await),
        ("AddPort", sw.add_port("br0", "p9", opts([])).await),
        ("DeletePort", sw.delete_port("tap0", false).await),
        ("DeleteBridge", sw.delete_bridge("br0", false).await),
        ("ClearVlan", sw.clear_vlan("tap0").await),
        (
            "SetExternalIds",
            sw.set_external_ids("Bridge", "br0", &[("k", "v")], &[])
                .await,
        ),
    ] {
        let (name, text) = error_of(result);
        assert_eq!(name, TRANSACTION_FAILED, "{what}: {text}");
        assert!(text.contains("read only mode"), "{what}: {text}");
    }
    // openQA: a non-zero code with the server's text.
    let (rc, message) = OpenQa::new(&sub.conn).await.set_vlan("tap0", 5).await;
    assert_ne!(rc, 0, "{message}");
    assert!(message.contains("read only mode"), "{message}");
    assert_unchanged(&active, &before, "refused writes");
}

/// Every write is in the log once answered: who (uid and pid, from the bus daemon), what
/// (method and arguments) and how it ended — an audit trail of changes to the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_logged_with_the_callers_uid_and_pid() {
    let stack = Stack::start(&["--no-wait"]).await;
    let sw = Switch::new(&stack.sub.conn).await;
    ok(sw.add_bridge("br0", opts([])).await, "AddBridge");
    let (name, _) = error_of(sw.set_vlan("nosuch", 5).await);
    assert_eq!(name, "org.ovsdbus.Error.NotFound");

    // SAFETY: getuid has no preconditions.
    let who = format!(
        "write by uid {} pid {}",
        unsafe { libc::getuid() },
        std::process::id()
    );
    let logged = |needle: &str| {
        crate::common::wait_until(WAIT, || {
            stack
                .relay
                .log()
                .lines()
                .any(|l| l.contains(&who) && l.contains(needle))
        })
    };
    assert!(
        logged("org.ovsdbus.Switch1.AddBridge(\"br0\", @a{sv} {}): ok"),
        "{}",
        stack.relay.log()
    );
    assert!(
        logged("org.ovsdbus.Switch1.SetVlan(\"nosuch\", uint32 5): org.ovsdbus.Error.NotFound"),
        "{}",
        stack.relay.log()
    );
}
