//! The object tree, read methods and waiters (SPEC §5, §6 read half) against a real
//! ovsdb-server (and ovs-vswitchd where the switch must write ofport), on a private bus.

use crate::common::signals::{
    BUS_NAME, Barrier, CallMonitor, Dict, ROOT, error_name, managed_objects, relay_proxy,
};
use crate::common::{Ovsdb, Stack, Vswitchd, internal_port, netdev_bridge, poll_until_async};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use zbus::{MatchRule, MessageStream, OwnedObjectPath, OwnedVariant, Proxy};

const WAIT: Duration = Duration::from_secs(10);

/// `ovs-vsctl --format=json list TABLE` as name → column → value.
fn list(db: &Ovsdb, table: &str) -> HashMap<String, HashMap<String, Json>> {
    let out: Json = serde_json::from_str(&db.vsctl(&["--format=json", "list", table])).unwrap();
    let headings: Vec<String> = out["headings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let row: HashMap<String, Json> = headings
                .iter()
                .cloned()
                .zip(row.as_array().unwrap().iter().cloned())
                .collect();
            (row["name"].as_str().unwrap().to_owned(), row)
        })
        .collect()
}

fn uuid_of(value: &Json) -> String {
    value[1].as_str().unwrap().to_owned()
}

fn prop<T: TryFrom<OwnedVariant>>(props: &Dict, name: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    let value = props
        .get(name)
        .unwrap_or_else(|| panic!("no property {name}"));
    T::try_from(value.try_clone().unwrap()).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn signature(props: &Dict, name: &str) -> String {
    props[name].value_signature().to_string()
}

fn escape(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    name.bytes()
        .enumerate()
        .map(|(i, b)| {
            if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect()
}

/// Every signal the relay sends: object signals and typed ones (the barriers').
async fn relay_signals(conn: &zbus::Connection) -> MessageStream {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)
        .build()
        .unwrap();
    MessageStream::for_match_rule(rule, conn, std::num::NonZeroUsize::new(1000))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_objects_equal_the_database() {
    let stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &stack.sub);
    let names = ["br-int.1", "9x", "a_b", "päd€", "plain"];
    db.vsctl(&[
        "add-br",
        "br-int.1",
        "--",
        "set",
        "bridge",
        "br-int.1",
        "datapath_type=netdev",
        "fail_mode=secure",
    ]);
    for name in &names[1..] {
        db.vsctl(&["add-port", "br-int.1", name]);
    }
    db.vsctl(&["add-br", "br1"]);
    db.vsctl(&[
        "set",
        "port",
        "9x",
        "tag=7",
        "trunks=1,2",
        "vlan_mode=trunk",
        "external_ids:k=v",
    ]);
    db.vsctl(&[
        "set",
        "interface",
        "plain",
        "type=internal",
        "options:key=1",
        "mtu_request=1400",
    ]);
    db.vsctl(&["del-port", "a_b"]);
    db.vsctl(&["del-br", "br1"]);
    db.vsctl(&[
        "add-port",
        "br-int.1",
        "late",
        "--",
        "set",
        "interface",
        "late",
        "external_ids:iface-id=x",
    ]);
    // The last change is visible through its signal; by then every object is current.
    let settled = poll_until_async(WAIT, Duration::from_millis(50), || async {
        let counts = sub
            .property::<std::collections::BTreeMap<String, u64>>("Counts")
            .await;
        if counts["port"] == 5 { Ok(()) } else { Err(()) }
    })
    .await;
    assert!(settled.is_ok(), "counts never settled");

    let objects = managed_objects(&sub.conn).await.expect("GetManagedObjects");
    let bridges = list(db, "bridge");
    let ports = list(db, "port");
    let interfaces = list(db, "interface");
    assert_eq!(
        objects.len(),
        bridges.len() + ports.len() + interfaces.len(),
        "{:#?}",
        objects.keys()
    );
    for path in objects.keys() {
        let depth = path.as_str().trim_start_matches(ROOT).matches('/').count();
        assert_eq!(depth, 2, "only row objects, no intermediate nodes: {path}");
    }

    let path = |table: &str, name: &str| format!("{ROOT}/{table}/{}", escape(name));
    for (name, row) in &bridges {
        let props = &objects[&OwnedObjectPath::try_from(path("bridge", name)).unwrap()]["org.ovsdbus.Bridge1"];
        assert_eq!(prop::<String>(props, "Name"), *name);
        assert_eq!(prop::<String>(props, "Uuid"), uuid_of(&row["_uuid"]));
        assert_eq!(
            prop::<String>(props, "DatapathType"),
            row["datapath_type"].as_str().unwrap()
        );
        assert_eq!(prop::<Vec<String>>(props, "FailMode"), ["secure"]);
        let port_paths: Vec<OwnedObjectPath> = prop(props, "Ports");
        assert_eq!(port_paths.len(), ports.len());
        for (p, s) in [
            ("Ports", "ao"),
            ("FailMode", "as"),
            ("ExternalIds", "a{ss}"),
            ("OtherConfig", "a{ss}"),
            ("Columns", "a{sv}"),
            ("DatapathType", "s"),
        ] {
            assert_eq!(signature(props, p), s, "Bridge1.{p}");
        }
    }
    for (name, row) in &ports {
        let props =
            &objects[&OwnedObjectPath::try_from(path("port", name)).unwrap()]["org.ovsdbus.Port1"];
        assert_eq!(prop::<String>(props, "Name"), *name);
        assert_eq!(prop::<String>(props, "Uuid"), uuid_of(&row["_uuid"]));
        assert_eq!(
            prop::<OwnedObjectPath>(props, "Bridge").as_str(),
            path("bridge", "br-int.1")
        );
        let interfaces_of: Vec<OwnedObjectPath> = prop(props, "Interfaces");
        assert_eq!(
            interfaces_of
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect::<Vec<_>>(),
            [path("interface", name)]
        );
        for (p, s) in [
            ("Tag", "ax"),
            ("Trunks", "ax"),
            ("VlanMode", "as"),
            ("ExternalIds", "a{ss}"),
            ("Columns", "a{sv}"),
            ("Bridge", "o"),
            ("Interfaces", "ao"),
        ] {
            assert_eq!(signature(props, p), s, "Port1.{p}");
        }
    }
    let nine =
        &objects[&OwnedObjectPath::try_from(path("port", "9x")).unwrap()]["org.ovsdbus.Port1"];
    assert_eq!(prop::<Vec<i64>>(nine, "Tag"), [7]);
    assert_eq!(prop::<Vec<i64>>(nine, "Trunks"), [1, 2]);
    assert_eq!(prop::<Vec<String>>(nine, "VlanMode"), ["trunk"]);
    assert_eq!(
        prop::<HashMap<String, String>>(nine, "ExternalIds"),
        HashMap::from([("k".into(), "v".into())])
    );
    assert!(objects.contains_key(&OwnedObjectPath::try_from(format!("{ROOT}/port/_39x")).unwrap()));
    assert!(objects.contains_key(
        &OwnedObjectPath::try_from(format!("{ROOT}/port/p_c3_a4d_e2_82_ac")).unwrap()
    ));
    for (name, row) in &interfaces {
        let props = &objects[&OwnedObjectPath::try_from(path("interface", name)).unwrap()]["org.ovsdbus.Interface1"];
        assert_eq!(prop::<String>(props, "Uuid"), uuid_of(&row["_uuid"]));
        assert_eq!(
            prop::<OwnedObjectPath>(props, "Port").as_str(),
            path("port", name)
        );
        assert_eq!(
            prop::<OwnedObjectPath>(props, "Bridge").as_str(),
            path("bridge", "br-int.1")
        );
        assert_eq!(prop::<String>(props, "Type"), row["type"].as_str().unwrap());
        for (p, s) in [
            ("Ofport", "ax"),
            ("OfportRequest", "ax"),
            ("LinkState", "as"),
            ("AdminState", "as"),
            ("MacInUse", "as"),
            ("Mtu", "ax"),
            ("Error", "as"),
            ("ExternalIds", "a{ss}"),
            ("Options", "a{ss}"),
            ("Columns", "a{sv}"),
            ("Type", "s"),
            ("Port", "o"),
            ("Bridge", "o"),
        ] {
            assert_eq!(signature(props, p), s, "Interface1.{p}");
        }
    }
    let plain = &objects[&OwnedObjectPath::try_from(path("interface", "plain")).unwrap()]["org.ovsdbus.Interface1"];
    assert_eq!(
        prop::<HashMap<String, String>>(plain, "Options"),
        HashMap::from([("key".into(), "1".into())])
    );
    let columns: HashMap<String, OwnedVariant> = prop(plain, "Columns");
    assert_eq!(
        i64::try_from(&columns["mtu_request"].try_clone().unwrap())
            .err()
            .map(|_| ()),
        Some(()),
        "mtu_request is ax"
    );
    assert!(!columns.contains_key("statistics"));

    // A removed row's object is gone; GetAll on it fails.
    let gone = Proxy::new(
        &sub.conn,
        BUS_NAME,
        path("port", "a_b"),
        "org.freedesktop.DBus.Properties",
    )
    .await
    .unwrap();
    let result: zbus::Result<HashMap<String, OwnedVariant>> =
        gone.call("GetAll", &("org.ovsdbus.Port1",)).await;
    assert!(result.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_signals_are_batched_per_update() {
    let stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &stack.sub);
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-port", "br0", "p1"]);
    let mut stream = relay_signals(&sub.conn).await;
    // Whatever the set-up published comes before a first barrier; what the changes below
    // publish, before a second one.
    Barrier::make(db, "bridge", "br0")
        .messages_before(&mut stream, WAIT)
        .await;

    db.vsctl(&[
        "set",
        "port",
        "p1",
        "tag=9",
        "trunks=3,4",
        "external_ids:a=b",
    ]);
    db.vsctl(&["add-port", "br0", "p2"]);
    db.vsctl(&["del-port", "p2"]);
    let mut seen = Vec::new();
    for msg in Barrier::make(db, "bridge", "br0")
        .messages_before(&mut stream, WAIT)
        .await
    {
        let header = msg.header();
        let member = header.member().unwrap().to_string();
        let path = header.path().unwrap().to_string();
        if member == "PropertiesChanged" {
            let (iface, changed, invalidated): (
                String,
                HashMap<String, OwnedVariant>,
                Vec<String>,
            ) = msg.body().deserialize().unwrap();
            let mut keys: Vec<_> = changed.keys().cloned().collect();
            keys.sort();
            seen.push(format!(
                "{path} PropertiesChanged {iface} {keys:?} invalidated={invalidated:?}"
            ));
        } else if member.starts_with("Interfaces") {
            seen.push(format!("{path} {member}"));
        }
    }
    let port = format!("{ROOT}/port/p1");
    let p1_changes: Vec<_> = seen
        .iter()
        .filter(|s| s.starts_with(&format!("{port} ")))
        .collect();
    assert_eq!(
        p1_changes,
        [&format!(
            "{port} PropertiesChanged org.ovsdbus.Port1 [\"ExternalIds\", \"Tag\", \"Trunks\"] invalidated=[\"Columns\"]"
        )],
        "{seen:#?}"
    );
    let root_object_signals: Vec<_> = seen
        .iter()
        .filter(|s| s.starts_with(&format!("{ROOT} Interfaces")))
        .collect();
    assert_eq!(
        root_object_signals.len(),
        4,
        "p2 port+interface added then removed: {seen:#?}"
    );
    assert!(root_object_signals[0].contains("InterfacesAdded"));
    assert!(root_object_signals[3].contains("InterfacesRemoved"));
}

async fn wait_for(
    proxy: &Proxy<'_>,
    table: &str,
    name: &str,
    conditions: &[&str],
    timeout_ms: u32,
) -> zbus::Result<HashMap<String, OwnedVariant>> {
    proxy
        .call("WaitFor", &(table, name, conditions, timeout_ms))
        .await
}

/// The stack with br0 in the database, and the relay's `org.ovsdbus.Relay1` methods.
async fn with_br0() -> (Stack, Proxy<'static>) {
    let stack = Stack::start(&[]).await;
    let proxy = relay_proxy(&stack.sub.conn).await;
    stack.db.vsctl(&["add-br", "br0"]);
    (stack, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_rows_and_conditions() {
    let (stack, proxy) = with_br0().await;
    let db = &stack.db;

    // Already true: answers at once.
    let started = Instant::now();
    let row = wait_for(&proxy, "Bridge", "br0", &[], 5000).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        String::try_from(row["name"].try_clone().unwrap()).unwrap(),
        "br0"
    );
    assert!(row.contains_key("_uuid"));

    // Created once the WaitFor for it has reached the relay.
    let address = stack.bus.address();
    let creator = db.vsctl_after(
        CallMonitor::start(&address, "WaitFor")
            .await
            .reached(1, WAIT),
        &[
            "add-port",
            "br0",
            "late",
            "--",
            "set",
            "interface",
            "late",
            "external_ids:iface-id=abc",
        ],
    );
    let row = wait_for(&proxy, "port", "late", &[], 5000).await.unwrap();
    assert_eq!(
        String::try_from(row["name"].try_clone().unwrap()).unwrap(),
        "late"
    );
    assert!(creator.await.unwrap().status.success());
    wait_for(
        &proxy,
        "Interface",
        "late",
        &["external_ids:iface-id=abc"],
        5000,
    )
    .await
    .unwrap();

    // Condition on a value set later; then a removal.
    let setter = db.vsctl_after(
        CallMonitor::start(&address, "WaitFor")
            .await
            .reached(1, WAIT),
        &["set", "port", "late", "tag=42"],
    );
    let row = wait_for(
        &proxy,
        "Port",
        "late",
        &["tag=42", "tag>=40", "vlan_mode=[]"],
        5000,
    )
    .await
    .unwrap();
    assert_eq!(
        Vec::<i64>::try_from(row["tag"].try_clone().unwrap()).unwrap(),
        [42]
    );
    setter.await.unwrap();
    let remover = db.vsctl_after(
        CallMonitor::start(&address, "WaitForRemoval")
            .await
            .reached(1, WAIT),
        &["del-port", "late"],
    );
    let removed: zbus::Result<()> = proxy
        .call("WaitForRemoval", &("Port", "late", 5000u32))
        .await;
    removed.unwrap();
    remover.await.unwrap();

    // Timeouts are reported as org.ovsdbus.Error.Timeout, on time.
    let started = Instant::now();
    let err = error_name(wait_for(&proxy, "Port", "never", &[], 1000).await);
    let elapsed = started.elapsed();
    assert_eq!(err, "org.ovsdbus.Error.Timeout");
    assert!(
        elapsed >= Duration::from_millis(1000) && elapsed <= Duration::from_millis(1100),
        "{elapsed:?}"
    );

    // Bad arguments name the problem.
    for (table, conditions) in [
        ("Mirror", vec![]),
        ("Port", vec!["nosuch=1"]),
        ("Port", vec!["tag=x"]),
        ("Port", vec!["tag"]),
    ] {
        let err = error_name(wait_for(&proxy, table, "p", &conditions, 100).await);
        assert_eq!(
            err, "org.freedesktop.DBus.Error.InvalidArgs",
            "{table} {conditions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_waiters_all_wake() {
    let (stack, proxy) = with_br0().await;
    let db = &stack.db;
    let mut calls = CallMonitor::start(&stack.bus.address(), "WaitFor").await;
    let mut waiters = tokio::task::JoinSet::new();
    for i in 0..100 {
        let proxy = proxy.clone();
        waiters.spawn(async move {
            let name = format!("p{}", i % 10);
            wait_for(&proxy, "Port", &name, &["tag=5"], 20_000)
                .await
                .map(|_| i)
        });
    }
    calls.wait_calls(100, WAIT).await;
    let mut args = Vec::new();
    for i in 0..10 {
        args.extend(["--", "add-port", "br0"].map(String::from));
        args.push(format!("p{i}"));
        args.extend(["--", "set", "port"].map(String::from));
        args.push(format!("p{i}"));
        args.push("tag=5".into());
    }
    let args: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    db.vsctl(&args);
    let mut woken = 0;
    while let Some(done) = tokio::time::timeout(WAIT, waiters.join_next())
        .await
        .expect("waiters hung")
    {
        done.unwrap().unwrap();
        woken += 1;
    }
    assert_eq!(woken, 100);
}

/// Creating a port and calling WaitFor right away must never hang, whichever comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_wait_never_races() {
    let (stack, proxy) = with_br0().await;
    let db = &stack.db;
    let remote = format!("--db={}", db.remote());
    for i in 0..1000 {
        let name = format!("r{i}");
        let mut create = tokio::process::Command::new("ovs-vsctl")
            .args([remote.as_str(), "--no-wait", "add-port", "br0", &name])
            .spawn()
            .unwrap();
        let waited = wait_for(&proxy, "Port", &name, &[], 10_000).await;
        assert!(waited.is_ok(), "iteration {i}: {waited:?}");
        assert!(create.wait().await.unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_ofport_assigned_by_vswitchd() {
    let stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &stack.sub);
    let _switch = Vswitchd::start(db);
    let proxy = relay_proxy(&sub.conn).await;
    let mut calls = CallMonitor::start(&stack.bus.address(), "WaitFor").await;
    let (bridge, tap) = ("br0".to_owned(), "tap9".to_owned());
    db.vsctl(&netdev_bridge(&bridge));
    let waiting = {
        let proxy = proxy.clone();
        let tap = tap.clone();
        tokio::spawn(
            async move { wait_for(&proxy, "Interface", &tap, &["ofport>0"], 15_000).await },
        )
    };
    calls.wait_calls(1, WAIT).await;
    db.vsctl(&internal_port(&bridge, &tap));
    let row = waiting.await.unwrap().expect("ofport assigned");
    let ofport = Vec::<i64>::try_from(row["ofport"].try_clone().unwrap()).unwrap();
    assert_eq!(ofport.len(), 1);
    assert!(ofport[0] > 0, "{ofport:?}");
    assert_eq!(
        db.vsctl(&["get", "interface", &tap, "ofport"]),
        ofport[0].to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_methods_list_and_show() {
    let (stack, proxy) = with_br0().await;
    let db = &stack.db;
    db.vsctl(&["add-br", "br1"]);
    db.vsctl(&["add-port", "br0", "p1", "--", "set", "port", "p1", "tag=3"]);
    wait_for(&proxy, "Port", "p1", &["tag=3"], 5000)
        .await
        .unwrap();

    let bridges: Vec<(String, String, OwnedObjectPath)> =
        proxy.call("ListBridges", &()).await.unwrap();
    assert_eq!(
        bridges.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
        ["br0", "br1"]
    );
    assert_eq!(bridges[0].2.as_str(), format!("{ROOT}/bridge/br0"));
    let ports: Vec<(String, String, String, OwnedObjectPath)> =
        proxy.call("ListPorts", &("br0",)).await.unwrap();
    assert_eq!(
        ports
            .iter()
            .map(|p| (p.0.as_str(), p.1.as_str()))
            .collect::<Vec<_>>(),
        [("br0", "br0"), ("p1", "br0")]
    );
    let all: Vec<(String, String, String, OwnedObjectPath)> =
        proxy.call("ListPorts", &("",)).await.unwrap();
    assert_eq!(all.len(), 3);
    let ifaces: Vec<(String, String, String, String, OwnedObjectPath)> =
        proxy.call("ListInterfaces", &("br0",)).await.unwrap();
    assert_eq!(
        ifaces
            .iter()
            .map(|i| (i.0.as_str(), i.1.as_str(), i.2.as_str()))
            .collect::<Vec<_>>(),
        [("br0", "br0", "br0"), ("p1", "p1", "br0")]
    );
    let missing: zbus::Result<Vec<(String, String, String, OwnedObjectPath)>> =
        proxy.call("ListPorts", &("nope",)).await;
    assert!(
        matches!(missing, Err(zbus::Error::MethodError(ref n, _, _)) if n.as_str() == "org.ovsdbus.Error.NotFound")
    );

    let row: HashMap<String, OwnedVariant> = proxy.call("GetRow", &("PORT", "p1")).await.unwrap();
    assert_eq!(
        Vec::<i64>::try_from(row["tag"].try_clone().unwrap()).unwrap(),
        [3]
    );
    let missing: zbus::Result<HashMap<String, OwnedVariant>> =
        proxy.call("GetRow", &("Port", "nope")).await;
    assert_eq!(error_name(missing), "org.ovsdbus.Error.NotFound");
    let bad: zbus::Result<HashMap<String, OwnedVariant>> =
        proxy.call("GetRow", &("Flow", "x")).await;
    assert_eq!(error_name(bad), "org.freedesktop.DBus.Error.InvalidArgs");

    let show: String = proxy.call("Show", &()).await.unwrap();
    let show: Json = serde_json::from_str(&show).unwrap();
    assert_eq!(show["bridges"][0]["name"], "br0");
    let p1 = show["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p1")
        .unwrap();
    assert_eq!(
        p1["tag"],
        serde_json::json!([3]),
        "optional values as on D-Bus"
    );
    assert_eq!(p1["interfaces"][0]["name"], "p1");
}

/// A port moved to another bridge in one transaction keeps its object; the port and its
/// interface announce their new `Bridge` path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_port_announces_its_new_bridge() {
    let stack = Stack::start(&[]).await;
    let (db, sub) = (&stack.db, &stack.sub);
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-br", "br1"]);
    db.vsctl(&["add-port", "br0", "p1"]);
    let mut stream = relay_signals(&sub.conn).await;
    Barrier::make(db, "bridge", "br0")
        .messages_before(&mut stream, WAIT)
        .await;

    let uuid = db.vsctl(&["get", "port", "p1", "_uuid"]);
    db.vsctl(&[
        "remove", "bridge", "br0", "ports", &uuid, "--", "add", "bridge", "br1", "ports", &uuid,
    ]);
    let mut bridges = HashMap::new();
    for msg in Barrier::make(db, "bridge", "br0")
        .messages_before(&mut stream, WAIT)
        .await
    {
        if msg
            .header()
            .member()
            .is_none_or(|m| m != "PropertiesChanged")
        {
            continue;
        }
        let path = msg.header().path().unwrap().to_string();
        let (_, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
            msg.body().deserialize().unwrap();
        if let Some(bridge) = changed.get("Bridge") {
            let bridge = OwnedObjectPath::try_from(bridge.try_clone().unwrap()).unwrap();
            bridges.insert(path, bridge.as_str().to_owned());
        }
    }
    let br1 = format!("{ROOT}/bridge/br1");
    assert_eq!(
        bridges,
        HashMap::from([
            (format!("{ROOT}/port/p1"), br1.clone()),
            (format!("{ROOT}/interface/p1"), br1),
        ])
    );
}
