//! Switch1 writes mean what plain `ovs-vsctl` means (issue 11): each transaction bumps
//! `next_cfg`, and the call returns once ovs-vswitchd has copied it to `cur_cfg`, so the
//! switch has applied the change (an `ofport` assigned, a device's error recorded);
//! bounded by `--vswitchd-timeout`; `--no-wait` and the `no_wait` option restore
//! OVSDB-only writes. Against a real ovs-vswitchd (netdev datapath, own network namespace).

use crate::common::signals::{Dict, error_of, relay_proxy};
use crate::common::{
    COMMAND_TIMEOUT, Ovsdb, Stack, Vswitchd, expect_success, require, run_bounded,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use ovs_dbus_relay::client::Switch1Proxy;
use zbus::{Connection, Variant as Value};

async fn switch_proxy(conn: &Connection) -> Switch1Proxy<'static> {
    Switch1Proxy::new(conn).await.expect("Switch1 proxy")
}

fn options<'a>(entries: &[(&'a str, Value<'a>)]) -> HashMap<&'a str, Value<'a>> {
    entries.iter().cloned().collect()
}

fn cfg(db: &Ovsdb, column: &str) -> i64 {
    db.vsctl(&["get", "Open_vSwitch", ".", column])
        .parse()
        .unwrap_or_else(|e| panic!("{column}: {e}"))
}

/// `br0` (netdev) with the internal port `tap1`, created through the relay.
async fn bridge_with_tap(switch: &Switch1Proxy<'_>) {
    let netdev = options(&[("datapath_type", Value::from("netdev"))]);
    switch.add_bridge("br0", netdev).await.expect("AddBridge");
    let internal = options(&[("type", Value::from("internal"))]);
    switch
        .add_port("br0", "tap1", internal)
        .await
        .expect("AddPort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_return_once_ovs_vswitchd_applied_them() {
    let stack = Stack::start(&[]).await;
    let db = &stack.db;
    let _vswitchd = Vswitchd::start(db);
    let switch = switch_proxy(&stack.sub.conn).await;
    let relay = relay_proxy(&stack.sub.conn).await;

    bridge_with_tap(&switch).await;
    // No waiting here: the switch has applied the port, so its ofport is known already.
    let row: Dict = relay.call("GetRow", &("Interface", "tap1")).await.unwrap();
    let ofport = Vec::<i64>::try_from(row["ofport"].try_clone().unwrap()).unwrap();
    assert!(
        matches!(ofport.as_slice(), [n] if *n > 0),
        "ofport {ofport:?}"
    );
    assert!(cfg(db, "cur_cfg") >= cfg(db, "next_cfg"));

    let before = cfg(db, "next_cfg");
    switch.set_vlan("tap1", 10).await.unwrap();
    assert_eq!(cfg(db, "next_cfg"), before + 1, "SetVlan bumps next_cfg");
    assert!(
        cfg(db, "cur_cfg") > before,
        "SetVlan returned before ovs-vswitchd applied it"
    );
    assert_eq!(db.vsctl(&["get", "port", "tap1", "tag"]), "10");

    // The switch forwards by the new VLAN as soon as the call returned: a broadcast from
    // the access port tap1 leaves the trunk port tap2 tagged with it.
    let internal = options(&[("type", Value::from("internal"))]);
    switch.add_port("br0", "tap2", internal).await.unwrap();
    for vlan in [20, 30] {
        switch.set_vlan("tap1", vlan).await.unwrap();
        let actions = datapath_actions(db, "in_port=tap1,dl_dst=ff:ff:ff:ff:ff:ff");
        assert!(
            actions.contains(&format!("push_vlan(vid={vlan},")),
            "after SetVlan {vlan}: {actions}"
        );
    }
}

/// The datapath actions `ovs-appctl ofproto/trace br0 FLOW` reports.
fn datapath_actions(db: &Ovsdb, flow: &str) -> String {
    let mut cmd = std::process::Command::new(require("ovs-appctl", "openvswitch-common"));
    cmd.arg("-t")
        .arg(db.dir().join("vswitchd.ctl"))
        .args(["ofproto/trace", "br0", flow]);
    let trace = expect_success(&run_bounded(&mut cmd, COMMAND_TIMEOUT), "ofproto/trace");
    trace
        .lines()
        .find_map(|line| line.strip_prefix("Datapath actions: "))
        .unwrap_or_else(|| panic!("no datapath actions in:\n{trace}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_the_switch_cannot_open_fails_with_its_error() {
    let stack = Stack::start(&[]).await;
    let _vswitchd = Vswitchd::start(&stack.db);
    let switch = switch_proxy(&stack.sub.conn).await;
    bridge_with_tap(&switch).await;

    // A system port whose device does not exist (in the switch's network namespace).
    let result = switch.add_port("br0", "nosuchdev0", options(&[])).await;
    let (name, text) = error_of(result);
    assert_eq!(name, "org.ovsdbus.Error.TransactionFailed", "{text}");
    assert!(
        text.contains("nosuchdev0") && text.contains("could not open network device"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vswitchd_times_out_with_the_change_committed() {
    let stack = Stack::start(&["--vswitchd-timeout", "1"]).await;
    let db = &stack.db;
    let vswitchd = Vswitchd::start(db);
    let switch = switch_proxy(&stack.sub.conn).await;
    bridge_with_tap(&switch).await;
    drop(vswitchd);

    let started = Instant::now();
    let result = switch.set_vlan("tap1", 20).await;
    let (name, text) = error_of(result);
    assert_eq!(name, "org.ovsdbus.Error.Timeout", "{text}");
    assert!(
        text.contains("committed") && text.contains("ovs-vswitchd"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(db.vsctl(&["get", "port", "tap1", "tag"]), "20");

    // The per-call option: committed, replica updated, nothing waited for.
    let no_wait = options(&[
        ("no_wait", Value::from(true)),
        ("type", Value::from("internal")),
    ]);
    switch
        .add_port("br0", "tap2", no_wait)
        .await
        .expect("AddPort with no_wait");

    // Back: writes work again, and what was committed meanwhile is applied too.
    let _vswitchd = Vswitchd::start(db);
    switch.set_vlan("tap1", 30).await.unwrap();
    assert!(cfg(db, "cur_cfg") >= cfg(db, "next_cfg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_writes_need_no_vswitchd() {
    let stack = Stack::start(&["--no-wait"]).await;
    let db = &stack.db;
    let switch = switch_proxy(&stack.sub.conn).await;
    let next_cfg = cfg(db, "next_cfg");
    bridge_with_tap(&switch).await;
    switch.set_vlan("tap1", 5).await.unwrap();
    assert_eq!(db.vsctl(&["get", "port", "tap1", "tag"]), "5");
    assert_eq!(
        cfg(db, "next_cfg"),
        next_cfg,
        "--no-wait leaves next_cfg alone"
    );
}
