//! Typed signals end to end (SPEC §2–§4): a real ovsdb-server driven by `ovs-vsctl`, a real
//! private dbus-daemon, the relay binary, and a D-Bus subscriber checking every argument.

use crate::common::signals::{Barrier, Signal, assert_consecutive};
use crate::common::{Stack, internal_port, poll_until_async, wait_until};
use std::collections::BTreeMap;
use std::time::Duration;
use zbus::{OwnedVariant, Variant};

const WAIT: Duration = Duration::from_secs(10);

fn owned<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
    v.into().try_into_owned().expect("owned variant")
}

fn strmap(pairs: &[(&str, &str)]) -> OwnedVariant {
    owned(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn names(signals: &[Signal]) -> Vec<String> {
    signals.iter().map(Signal::summary).collect()
}

fn column<'s>(signal: &'s Signal, dict: usize, name: &str) -> &'s OwnedVariant {
    signal.dicts[dict]
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name} in dict {dict}", signal.summary()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_port_and_interface_lifecycle() {
    let mut stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &mut stack.sub);

    // Nothing for the start-up snapshot: the first change is the barrier, its signals
    // must come first and from seq 1 (a snapshot signal would have been published before).
    db.vsctl(&["add-br", "br0"]);
    let s = sub.take(3, WAIT).await;
    assert_eq!(
        names(&s),
        [
            "BridgeAdded br0 br0",
            "PortAdded br0 br0",
            "InterfaceAdded br0 br0"
        ]
    );
    assert_consecutive(&s, 1);
    let br_uuid = db.vsctl(&["get", "bridge", "br0", "_uuid"]);
    assert_eq!(s[0].uuid, br_uuid);
    assert_eq!(s[0].uuid.len(), 36);
    assert_eq!(column(&s[0], 0, "name"), &owned("br0"));
    assert_eq!(column(&s[0], 0, "datapath_type"), &owned(""));
    assert_eq!(
        column(&s[0], 0, "fail_mode").value_signature().to_string(),
        "as"
    );
    assert_eq!(column(&s[0], 0, "ports"), &owned(vec![s[1].uuid.clone()]));
    assert_eq!(
        column(&s[0], 0, "other_config")
            .value_signature()
            .to_string(),
        "a{ss}"
    );
    assert!(!s[0].dicts[0].contains_key("statistics"));
    assert_eq!(s[2].meta_str("port").as_deref(), Some("br0"));
    assert_eq!(column(&s[2], 0, "type"), &owned("internal"));
    assert_eq!(
        column(&s[2], 0, "ofport").value_signature().to_string(),
        "ax"
    );
    for signal in &s {
        assert_eq!(signal.meta_str("origin").as_deref(), Some("live"));
        let received = u64::try_from(&signal.meta["received_usec"]).unwrap();
        assert!(received > 1_700_000_000_000_000, "received_usec {received}");
    }
    assert!(
        !s[0].meta.contains_key("port"),
        "port is for interfaces only"
    );

    // add-port: the new port and interface, and the bridge's port list.
    db.vsctl(&internal_port("br0", "tap0"));
    let s2 = sub.take(3, WAIT).await;
    assert_eq!(
        names(&s2),
        [
            "PortAdded tap0 br0",
            "InterfaceAdded tap0 br0",
            "BridgeChanged br0 br0"
        ]
    );
    assert_consecutive(&s2, 4);
    assert_eq!(
        column(&s2[2], 0, "ports").value_signature().to_string(),
        "as"
    );
    assert_eq!(
        s2[2].dicts[0].len(),
        1,
        "only ports changed: {:?}",
        s2[2].dicts[0]
    );
    assert_eq!(s2[2].dicts[1].len(), 1);
    assert_eq!(column(&s2[2], 1, "ports"), &owned(vec![s[1].uuid.clone()]));

    // Port tag: set, change, clear (an optional integer: always `ax`).
    db.vsctl(&["set", "port", "tap0", "tag=10"]);
    db.vsctl(&["set", "port", "tap0", "tag=20"]);
    db.vsctl(&["clear", "port", "tap0", "tag"]);
    let tags = sub.take(3, WAIT).await;
    assert_consecutive(&tags, 7);
    let expect: [(Vec<i64>, Vec<i64>); 3] =
        [(vec![10], vec![]), (vec![20], vec![10]), (vec![], vec![20])];
    for (signal, (new, old)) in tags.iter().zip(expect) {
        assert_eq!(signal.summary(), "PortChanged tap0 br0");
        assert_eq!(signal.dicts[0].keys().collect::<Vec<_>>(), ["tag"]);
        assert_eq!(column(signal, 0, "tag"), &owned(new));
        assert_eq!(column(signal, 1, "tag"), &owned(old));
    }

    // Interface external_ids: add a key, change its value, remove it.
    db.vsctl(&["set", "interface", "tap0", "external_ids:vm=a"]);
    db.vsctl(&[
        "set",
        "interface",
        "tap0",
        "external_ids:vm=b",
        "external_ids:x=1",
    ]);
    db.vsctl(&["remove", "interface", "tap0", "external_ids", "vm"]);
    let ids = sub.take(3, WAIT).await;
    assert_consecutive(&ids, 10);
    let expect = [
        (strmap(&[("vm", "a")]), strmap(&[])),
        (strmap(&[("vm", "b"), ("x", "1")]), strmap(&[("vm", "a")])),
        (strmap(&[("x", "1")]), strmap(&[("vm", "b"), ("x", "1")])),
    ];
    for (signal, (new, old)) in ids.iter().zip(expect) {
        assert_eq!(signal.summary(), "InterfaceChanged tap0 br0");
        assert_eq!(signal.meta_str("port").as_deref(), Some("tap0"));
        assert_eq!(column(signal, 0, "external_ids"), &new);
        assert_eq!(column(signal, 1, "external_ids"), &old);
    }

    // Trunks: a set whose update2 diff toggles elements.
    db.vsctl(&["set", "port", "tap0", "trunks=1,2"]);
    db.vsctl(&["set", "port", "tap0", "trunks=2,3"]);
    let trunks = sub.take(2, WAIT).await;
    assert_consecutive(&trunks, 13);
    assert_eq!(column(&trunks[1], 0, "trunks"), &owned(vec![2i64, 3]));
    assert_eq!(column(&trunks[1], 1, "trunks"), &owned(vec![1i64, 2]));

    // del-port: removals first, interface → port, named as they were; then the bridge.
    db.vsctl(&["del-port", "tap0"]);
    let del = sub.take(3, WAIT).await;
    assert_eq!(
        names(&del),
        [
            "InterfaceRemoved tap0 br0",
            "PortRemoved tap0 br0",
            "BridgeChanged br0 br0"
        ]
    );
    assert_consecutive(&del, 15);
    assert_eq!(del[0].meta_str("port").as_deref(), Some("tap0"));
    assert_eq!(column(&del[1], 0, "trunks"), &owned(vec![2i64, 3]));
    assert_eq!(column(&del[1], 0, "name"), &owned("tap0"));

    db.vsctl(&["del-br", "br0"]);
    let gone = sub.take(3, WAIT).await;
    assert_eq!(
        names(&gone),
        [
            "InterfaceRemoved br0 br0",
            "PortRemoved br0 br0",
            "BridgeRemoved br0 br0"
        ]
    );
    assert_consecutive(&gone, 18);
    assert_eq!(gone[2].uuid, br_uuid);
    assert_eq!(sub.property::<u64>("LastSeq").await, 20);
    // Nothing else: the signals of one more change (the barrier) follow at once, from 21.
    db.vsctl(&["add-br", "br1"]);
    let next = sub.take(3, WAIT).await;
    assert_eq!(names(&next)[0], "BridgeAdded br1 br1");
    assert_consecutive(&next, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_ports_in_one_transaction_arrive_in_order() {
    let mut stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &mut stack.sub);
    db.vsctl(&["add-br", "br0"]);
    sub.take(3, WAIT).await;

    let mut args: Vec<String> = Vec::new();
    for i in 0..1000 {
        if i > 0 {
            args.push("--".into());
        }
        args.extend(["add-port", "br0"].map(String::from));
        args.push(format!("p{i:04}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    db.vsctl(&args);
    let s = sub.take(2001, Duration::from_secs(60)).await;
    assert_consecutive(&s, 4);
    let ports: Vec<_> = s[..1000].iter().map(|x| x.member.as_str()).collect();
    assert!(ports.iter().all(|m| *m == "PortAdded"), "ports first");
    assert!(
        s[1000..2000]
            .iter()
            .all(|x| x.member == "InterfaceAdded" && x.bridge == "br0")
    );
    assert_eq!(s[0].name, "p0000");
    assert_eq!(s[999].name, "p0999");
    assert_eq!(s[2000].summary(), "BridgeChanged br0 br0");
    assert_eq!(sub.property::<u64>("LastSeq").await, 2004);
    let counts: BTreeMap<String, u64> = sub.property("Counts").await;
    assert_eq!(counts["port"], 1001);
    assert_eq!(counts["interface"], 1001);
    assert_eq!(counts["bridge"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_properties_describe_the_server() {
    let stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &stack.sub);
    db.vsctl(&[
        "set",
        "open_vswitch",
        ".",
        "ovs_version=3.1.0-test",
        "external_ids:system-id=sys-1",
    ]);
    let updated = poll_until_async(WAIT, Duration::from_millis(50), || async {
        if sub.property::<String>("SystemId").await == "sys-1" {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    assert!(updated.is_ok(), "SystemId never updated");
    assert_eq!(sub.property::<String>("OvsVersion").await, "3.1.0-test");
    assert_eq!(sub.property::<String>("Remote").await, db.remote());
    let schema = std::fs::read_to_string(crate::common::VSWITCH_SCHEMA).unwrap();
    let version = serde_json::from_str::<serde_json::Value>(&schema).unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sub.property::<String>("SchemaVersion").await, version);
    assert_eq!(
        sub.property::<u64>("LastSeq").await,
        0,
        "root changes are not typed signals"
    );
}

/// `arg0` match rules in the real dbus-daemon select one row's signals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbus_monitor_arg0_filter_selects_one_port() {
    let mut stack = Stack::start(&[]).await;
    let (db, bus, sub) = (&stack.db, &stack.bus, &mut stack.sub);
    db.vsctl(&["add-br", "br0"]);
    sub.take(3, WAIT).await;

    let out = tempfile::NamedTempFile::new().unwrap();
    let mut monitor = std::process::Command::new(crate::common::require("dbus-monitor", "dbus"))
        .args([
            "--address",
            &bus.address(),
            "type='signal',interface='org.ovsdbus.Relay1',arg0='tap1'",
        ])
        .stdout(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(out.path()).unwrap();
    // The bus turns dbus-monitor's connection into a monitor (its match rule in place) and
    // then takes its unique name, which dbus-monitor prints as NameLost.
    assert!(
        wait_until(WAIT, || read().contains("member=NameLost")),
        "dbus-monitor did not become a monitor: {}",
        read()
    );
    for port in ["tap0", "tap1", "tap2"] {
        db.vsctl(&["add-port", "br0", port]);
    }
    db.vsctl(&["set", "port", "tap1", "tag=5"]);
    db.vsctl(&["set", "port", "tap2", "tag=6"]);
    sub.take(3 * 3 + 2, WAIT).await;
    // The barrier is a tap1 signal too: once dbus-monitor has printed it (its header and
    // the two arguments after it; it flushes per message), it has printed all before it.
    let barrier = Barrier::make(db, "port", "tap1");
    let relay_signals = |text: &str| -> Vec<(usize, String)> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.contains("interface=org.ovsdbus.Relay1"))
            .map(|(i, l)| (i, l.to_owned()))
            .collect()
    };
    let printed = |text: &str| {
        relay_signals(text).last().is_some_and(|(i, l)| {
            l.ends_with(&format!("member={}", barrier.member())) && text.lines().count() > i + 3
        })
    };
    assert!(
        wait_until(WAIT, || printed(&read())),
        "dbus-monitor did not print the barrier: {}",
        read()
    );
    monitor.kill().unwrap();
    monitor.wait().unwrap();

    let text = read();
    let relay_signals = relay_signals(&text);
    let members: Vec<&str> = relay_signals
        .iter()
        .filter_map(|(_, l)| l.split("member=").nth(1))
        .collect();
    assert_eq!(
        members,
        ["PortAdded", "InterfaceAdded", "PortChanged", "PortChanged"],
        "tap1's signals, then the barrier's: {text}"
    );
    for (i, line) in text.lines().enumerate() {
        if line.contains("interface=org.ovsdbus.Relay1") {
            let arg0 = text.lines().nth(i + 1).unwrap();
            assert_eq!(arg0.trim(), "string \"tap1\"", "{text}");
        }
    }
}

/// The common re-create idiom on a real server, `-- --if-exists del-port tap0 -- add-port
/// br0 tap0`: within the one update the removals go first, so a subscriber keyed by name
/// ends with tap0 present (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_recreated_in_one_transaction_ends_added() {
    let mut stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &mut stack.sub);
    db.vsctl(&["add-br", "br0", "--", "add-port", "br0", "tap0"]);
    sub.take(5, WAIT).await;
    let before = db.vsctl(&["get", "port", "tap0", "_uuid"]);
    db.vsctl(&[
        "--",
        "--if-exists",
        "del-port",
        "tap0",
        "--",
        "add-port",
        "br0",
        "tap0",
    ]);
    let s = sub.take(5, WAIT).await;
    assert_eq!(
        names(&s),
        [
            "InterfaceRemoved tap0 br0",
            "PortRemoved tap0 br0",
            "PortAdded tap0 br0",
            "InterfaceAdded tap0 br0",
            "BridgeChanged br0 br0",
        ]
    );
    assert_eq!(s[1].uuid, before);
    assert_eq!(s[2].uuid, db.vsctl(&["get", "port", "tap0", "_uuid"]));
    assert_ne!(s[1].uuid, s[2].uuid);
    // Keyed by name, in order: present.
    let mut ports = std::collections::BTreeSet::new();
    for signal in s.iter().filter(|s| s.member.starts_with("Port")) {
        match signal.member.as_str() {
            "PortAdded" => ports.insert(signal.name.clone()),
            _ => ports.remove(&signal.name),
        };
    }
    assert!(ports.contains("tap0"));
}

/// Any peer may emit a signal named like the relay's; the match rule the README teaches
/// (`sender='org.ovsdbus.Relay1'`) lets the bus drop it. On a system-like bus, `nobody`
/// forges a `PortAdded`: a rule without `sender=` receives it, the documented one only the
/// relay's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signal_does_not_pass_the_documented_match_rule() {
    use crate::common::system_bus::{SystemBus, Who, command_as};
    use tokio_stream::StreamExt;
    let bus = SystemBus::start();
    let db = crate::common::Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    let _relay = crate::common::Relay::spawn(&db.remote(), &bus.address(), &[]);
    let sub = crate::common::signals::Subscriber::connect(&bus.address()).await;
    sub.wait_ready(WAIT).await;
    let address = bus.address();
    let connect = || async {
        zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .unwrap()
    };
    let listener = connect().await;
    // A connection per rule: the bus delivers what any rule of a connection matches, so
    // on one connection the naive rule would let the forgery in.
    let stream = |rule: &'static str| async move {
        let rule = zbus::MatchRule::try_from(rule).unwrap();
        zbus::MessageStream::for_match_rule(rule, &connect().await, None)
            .await
            .unwrap()
    };
    let mut documented = stream(
        "type='signal',sender='org.ovsdbus.Relay1',interface='org.ovsdbus.Relay1',arg0='tap0'",
    )
    .await;
    let mut naive = stream("type='signal',interface='org.ovsdbus.Relay1',arg0='tap0'").await;
    let forged = command_as(Who::Nobody, &crate::common::require("dbus-send", "dbus"))
        .arg(format!("--bus={}", bus.address()))
        .args([
            "--type=signal",
            "/org/ovsdbus/Relay1",
            "org.ovsdbus.Relay1.PortAdded",
            "string:tap0",
            "string:br0",
            "string:00000000-0000-0000-0000-000000000000",
        ])
        .output()
        .unwrap();
    assert!(forged.status.success(), "{forged:?}");
    let next = async |stream: &mut zbus::MessageStream| {
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a signal")
            .unwrap()
            .unwrap()
    };
    let fake = next(&mut naive).await;
    assert_eq!(
        fake.header().member().unwrap().as_str(),
        "PortAdded",
        "the forgery reached the bus"
    );
    let relay = zbus::fdo::DBusProxy::new(&listener)
        .await
        .unwrap()
        .get_name_owner("org.ovsdbus.Relay1".try_into().unwrap())
        .await
        .unwrap();
    assert_ne!(fake.header().sender().unwrap().as_str(), relay.as_str());
    db.vsctl(&["add-port", "br0", "tap0"]);
    let real = next(&mut documented).await;
    assert_eq!(real.header().member().unwrap().as_str(), "PortAdded");
    assert_eq!(real.header().sender().unwrap().as_str(), relay.as_str());
    let real = crate::common::signals::Signal::from_message(&real)
        .unwrap()
        .expect("a typed signal");
    assert_eq!(real.summary(), "PortAdded tap0 br0");
    assert_eq!(real.uuid, db.vsctl(&["get", "port", "tap0", "_uuid"]));
}
