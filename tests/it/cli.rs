//! The client commands `wait`, `watch` and `show` (SPEC §7) end to end: a real
//! ovsdb-server driven by `ovs-vsctl`, a private dbus-daemon, the relay, and the
//! `ovs-dbus-relay` binary as a user would run it, checked for output and exit codes.

use crate::common::signals::{CallMonitor, Subscriber};
use crate::common::{
    Bus, Ovsdb, POLL, Relay, Stack, netdev_bridge, poll_until, relay_command, run_blocking as run,
    send_signal,
};
use serde_json::{Value as Json, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
/// A bus address nobody listens on.
const NO_BUS: &str = "unix:path=/nonexistent/bus.sock";

/// The command with a clean environment: no inherited `OVS_DBUS_RELAY_*` or bus variables,
/// and no `RUST_LOG`.
fn command(args: &[&str]) -> Command {
    let mut cmd = relay_command(args);
    cmd.env_remove("RUST_LOG");
    cmd
}

/// `wait --bus <address> <args>`.
fn wait(address: &str, args: &[&str]) -> Command {
    command(&[&["wait", "--bus", address], args].concat())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the exit code and that stderr is empty (success) or exactly one line.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    let lines = stderr(out).lines().count();
    if code == 0 {
        assert_eq!(lines, 0, "stderr: {}", stderr(out));
    } else {
        assert_eq!(lines, 1, "one line on stderr expected: {}", stderr(out));
        assert!(
            stderr(out).starts_with("ovs-dbus-relay: "),
            "{}",
            stderr(out)
        );
    }
}

/// [`assert_exit`] with `code`, and stderr naming `needle`.
fn assert_error(out: &Output, code: i32, needle: &str) {
    assert_exit(out, code);
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

// ---------------------------------------------------------------------------------------
// wait
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_once_the_port_appears() {
    let stack = Stack::start(&[]).await;
    let (db, bus) = (&stack.db, &stack.bus);
    db.vsctl(&["add-br", "br0"]);
    let mut calls = CallMonitor::start(&bus.address(), "WaitFor").await;
    let waiting = tokio::spawn(run(wait(
        &bus.address(),
        &["Port", "tap0", "tag=10", "--timeout", "10"],
    )));
    calls.wait_calls(1, WAIT).await;
    assert!(
        !waiting.is_finished(),
        "wait returned before the port existed"
    );
    db.vsctl(&[
        "add-port", "br0", "tap0", "--", "set", "port", "tap0", "tag=10",
    ]);
    let out = waiting.await.unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "", "wait prints nothing");

    // Already true: returns at once. The bus and timeout from the environment.
    let mut cmd = command(&["wait", "port", "tap0", "tag>=10", "tag<11", "name=tap0"]);
    cmd.env("OVS_DBUS_RELAY_BUS", bus.address())
        .env("OVS_DBUS_RELAY_TIMEOUT", "5");
    let out = run(cmd).await;
    assert_exit(&out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_with_exit_1() {
    let stack = Stack::start(&[]).await;
    let bus = &stack.bus;
    let started = Instant::now();
    let out = run(wait(
        &bus.address(),
        &["Interface", "nope", "ofport>0", "--timeout", "1.5"],
    ))
    .await;
    let took = started.elapsed();
    assert_exit(&out, 1);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "took {took:?}"
    );
    let message = stderr(&out);
    assert!(message.contains("timed out"), "{message}");
    assert!(message.contains("nope"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_removal() {
    let stack = Stack::start(&[]).await;
    let (db, bus) = (&stack.db, &stack.bus);
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-port", "br0", "p1"]);
    let address = bus.address();
    let args = ["Port", "p1", "--removed"];
    // Still there: times out.
    let out = run(wait(&address, &[&args[..], &["--timeout", "0.3"]].concat())).await;
    assert_exit(&out, 1);

    let mut calls = CallMonitor::start(&address, "WaitForRemoval").await;
    let waiting = tokio::spawn(run(wait(
        &address,
        &[&args[..], &["--timeout", "10"]].concat(),
    )));
    calls.wait_calls(1, WAIT).await;
    assert!(!waiting.is_finished(), "wait returned while p1 was there");
    db.vsctl(&["del-port", "p1"]);
    assert_exit(&waiting.await.unwrap(), 0);

    // Conditions make no sense with --removed: a usage error.
    let out = run(wait(&address, &[&args[..], &["tag=1"]].concat())).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `ovs-vsctl wait-until`'s set relations: `{>=}` superset, `{<}` proper subset, ….
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_takes_the_set_relations_of_ovs_vsctl() {
    let stack = Stack::start(&[]).await;
    stack.db.vsctl(&[
        "add-br",
        "br0",
        "--",
        "add-port",
        "br0",
        "p1",
        "trunks=1,2,3",
    ]);
    let address = stack.bus.address();
    for (condition, code) in [
        ("trunks{>=}1,2", 0),
        ("trunks{=}3,2,1", 0),
        ("trunks{<}1,2,3,4", 0),
        ("trunks{<}1,2,3", 1),
        ("external_ids{=}{}", 0),
    ] {
        let out = run(wait(
            &address,
            &["Port", "p1", condition, "--timeout", "0.5"],
        ))
        .await;
        assert_exit(&out, code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_rejects_bad_arguments_with_exit_2() {
    let stack = Stack::start(&[]).await;
    let bus = &stack.bus;
    let address = bus.address();
    let out = run(wait(&address, &["Port", "p1", "bogus=1"])).await;
    assert_error(&out, 2, "bogus");

    let out = run(wait(&address, &["Flow", "p1"])).await;
    assert_error(&out, 2, "Flow");

    let out = run(wait(&address, &["Port", "p1", "--timeout", "-1"])).await;
    assert_error(&out, 2, "--timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_rides_out_a_relay_that_has_not_synced_yet() {
    let mut db = Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    db.kill();
    let bus = Bus::start();
    // The relay owns its name at once and keeps trying to reach OVSDB.
    let _relay = Relay::spawn(&db.remote(), &bus.address(), &[]);
    let sub = Subscriber::connect(&bus.address()).await;
    sub.wait_relay_on_bus(WAIT).await;
    let mut calls = CallMonitor::start(&bus.address(), "WaitFor").await;
    let waiting = tokio::spawn(run(wait(
        &bus.address(),
        &["Port", "p1", "--timeout", "15"],
    )));
    // The call reached the relay, which holds it until its first snapshot.
    calls.wait_calls(1, WAIT).await;
    assert!(
        !waiting.is_finished(),
        "wait gave up on a relay still syncing"
    );
    db.restart();
    db.vsctl(&["add-port", "br0", "p1"]);
    assert_exit(&waiting.await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_without_a_relay_exits_3() {
    let bus = Bus::start();
    let out = run(wait(&bus.address(), &["Port", "p1", "--timeout", "5"])).await;
    assert_error(&out, 3, "relay not running on the bus at");

    // No bus at all.
    let out = run(wait(NO_BUS, &["Port", "p1"])).await;
    assert_error(&out, 3, "cannot connect");
}

// ---------------------------------------------------------------------------------------
// watch
// ---------------------------------------------------------------------------------------

/// A running `watch`: stdout lines arrive on a channel, stderr is collected.
struct Watch {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watch {
    /// Starts `watch` and waits until it has subscribed (its note on stderr).
    fn start(args: &[&str]) -> Watch {
        let mut child = command(&[&["watch"], args].concat())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start watch");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("piped");
        let collected = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut watch = Watch {
            child,
            lines,
            stderr,
        };
        let ready = crate::common::wait_until(WAIT, || watch.stderr().contains("watching"));
        assert!(
            ready,
            "watch did not subscribe: {} (exit {:?})",
            watch.stderr(),
            watch.child.try_wait()
        );
        watch
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Exactly `n` lines, failing with what arrived otherwise.
    fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => panic!(
                    "expected {n} lines, got {got:#?}\nstderr: {}",
                    self.stderr()
                ),
            }
        }
        got
    }

    /// Sends `signal` and returns the exit code.
    fn stop(&mut self, signal: &str) -> Option<i32> {
        send_signal(self.child.id(), signal);
        let exited = poll_until(WAIT, POLL, || {
            self.child.try_wait().expect("try_wait").ok_or(())
        });
        match exited {
            Ok(status) => status.code(),
            Err(()) => panic!("watch ignored SIG{signal}"),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> Json {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_json_prints_one_object_per_signal() {
    let stack = Stack::start(&[]).await;
    let (db, bus) = (&stack.db, &stack.bus);
    db.vsctl(&["add-br", "br0"]);
    let mut sub = Subscriber::connect(&bus.address()).await;
    let mut watch = Watch::start(&["--bus", &bus.address(), "--json"]);
    // The bridge's own signals may or may not have been published before the subscription.
    db.vsctl(&["add-port", "br0", "p1"]);
    db.vsctl(&["set", "port", "p1", "tag=10"]);
    db.vsctl(&["del-port", "p1"]);
    let expected = [
        ("PortAdded", "p1"),
        ("InterfaceAdded", "p1"),
        ("BridgeChanged", "br0"),
        ("PortChanged", "p1"),
        ("InterfaceRemoved", "p1"),
        ("PortRemoved", "p1"),
        ("BridgeChanged", "br0"),
    ];
    // Skip what belongs to add-br, using the test subscriber as the reference.
    let reference = loop {
        let s = sub.take(1, WAIT).await.remove(0);
        if s.member == "PortAdded" {
            break s;
        }
    };
    let first_seq = reference.seq().expect("meta.seq");
    let mut lines: Vec<Json> = Vec::new();
    while lines.len() < expected.len() {
        let line = parse(&watch.take(1)[0]);
        if line["meta"]["seq"].as_u64().unwrap() >= first_seq {
            lines.push(line);
        }
    }
    let got: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["member"].as_str().unwrap().to_owned(),
                l["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        expected
            .iter()
            .map(|(m, n)| (m.to_string(), n.to_string()))
            .collect::<Vec<_>>()
    );
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["meta"]["seq"], first_seq + i as u64, "{line}");
        assert_eq!(line["meta"]["origin"], "live", "{line}");
        assert!(line["meta"]["received_usec"].as_u64().unwrap() > 0);
        assert_eq!(line["bridge"], "br0", "{line}");
        assert_eq!(line["uuid"].as_str().unwrap().len(), 36, "{line}");
    }
    let added = &lines[0];
    assert_eq!(added["uuid"], reference.uuid.as_str());
    assert_eq!(added["columns"]["tag"], serde_json::json!([]));
    assert_eq!(added["columns"]["name"], "p1");
    assert_eq!(added["columns"]["external_ids"], serde_json::json!({}));
    assert!(added.get("changed").is_none() && added.get("last").is_none());
    assert_eq!(lines[1]["meta"]["port"], "p1");
    assert_eq!(lines[1]["columns"]["type"], "");
    let changed = &lines[3];
    assert_eq!(
        changed["changed"],
        serde_json::json!({"tag": [10]}),
        "{changed}"
    );
    assert_eq!(changed["old"], serde_json::json!({"tag": []}), "{changed}");
    assert!(changed.get("columns").is_none());
    let removed = &lines[5];
    assert_eq!(removed["last"]["tag"], serde_json::json!([10]), "{removed}");
    assert_eq!(removed["last"]["name"], "p1");
    assert!(lines[2]["changed"]["ports"].as_array().unwrap().len() == 2);

    assert!(!watch.stderr().contains("warning"), "{}", watch.stderr());
    assert_eq!(watch.stop("TERM"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_readable_lines_filtered_by_the_bus() {
    let stack = Stack::start(&[]).await;
    let (db, bus) = (&stack.db, &stack.bus);
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-br", "br1"]);
    let address = bus.address();
    let mut by_name = Watch::start(&["--bus", &address, "--name", "p1"]);
    let mut ports = Watch::start(&["--bus", &address, "--table", "Port", "--bridge", "br1"]);
    db.vsctl(&["add-port", "br0", "p1"]);
    db.vsctl(&["add-port", "br1", "p2"]);
    db.vsctl(&["set", "port", "p1", "tag=10"]);
    db.vsctl(&["set", "port", "p2", "tag=20"]);
    db.vsctl(&["del-port", "p1"]);

    let lines = by_name.take(5);
    let shape = |line: &str| {
        // `#12 PortChanged p1 (br0) tag: [] → [10]`: drop the number.
        let (seq, rest) = line.split_once(' ').unwrap();
        assert!(
            seq.starts_with('#') && seq[1..].parse::<u64>().is_ok(),
            "{line}"
        );
        rest.to_owned()
    };
    let lines: Vec<String> = lines.iter().map(|l| shape(l)).collect();
    assert_eq!(lines[0], "PortAdded p1 (br0) tag=[] trunks=[] vlan_mode=[]");
    assert_eq!(
        lines[1],
        "InterfaceAdded p1 (br0, port p1) type=\"\" ofport=[]"
    );
    assert_eq!(lines[2], "PortChanged p1 (br0) tag: [] → [10]");
    assert_eq!(lines[3], "InterfaceRemoved p1 (br0, port p1)");
    assert_eq!(lines[4], "PortRemoved p1 (br0)");

    let lines: Vec<String> = ports.take(2).iter().map(|l| shape(l)).collect();
    assert_eq!(
        lines,
        [
            "PortAdded p2 (br1) tag=[] trunks=[] vlan_mode=[]",
            "PortChanged p2 (br1) tag: [] → [20]"
        ]
    );

    // Nothing else: one more change that both filters let through (the barrier) is the
    // next line of each; anything the bus let through before it would come first.
    db.vsctl(&["add-port", "br1", "p1"]);
    for watch in [&by_name, &ports] {
        assert_eq!(
            shape(&watch.take(1)[0]),
            "PortAdded p1 (br1) tag=[] trunks=[] vlan_mode=[]"
        );
    }

    assert_eq!(by_name.stop("INT"), Some(0));
    assert_eq!(ports.stop("TERM"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_a_bus_exits_3() {
    let out = run(command(&["watch", "--bus", NO_BUS])).await;
    assert_error(&out, 3, "cannot connect");
    let out = run(command(&["watch", "--bus", "nowhere"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bus"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------
// show
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_lays_out_the_switch_like_ovs_vsctl() {
    let stack = Stack::start(&[]).await;
    let (db, bus) = (&stack.db, &stack.bus);
    let address = bus.address();
    db.vsctl(&["set", "open_vswitch", ".", "external_ids:system-id=host-1"]);
    db.vsctl(&netdev_bridge("br0"));
    db.vsctl(&[
        "add-port", "br0", "tap0", "--", "set", "port", "tap0", "tag=10",
    ]);
    let out = run(wait(
        &address,
        &["Port", "tap0", "tag=10", "--timeout", "10"],
    ))
    .await;
    assert_exit(&out, 0);

    let out = run(command(&["show", "--bus", &address])).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    let root = db.vsctl(&["get", "open_vswitch", ".", "_uuid"]);
    let expected = format!(
        "{root}
    Bridge br0
        datapath_type: netdev
        Port br0
            Interface br0
                type: internal
        Port tap0
            tag: 10
            Interface tap0
"
    );
    assert!(text.starts_with(&expected), "{text}");
    for needle in ["Bridge br0", "Port tap0", "tag: 10"] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }

    let mut cmd = command(&["show", "--json"]);
    cmd.env("OVS_DBUS_RELAY_BUS", &address);
    let out = run(cmd).await;
    assert_exit(&out, 0);
    let show = parse(&stdout(&out));
    assert_eq!(show["system_id"], "host-1");
    assert_eq!(show["bridges"][0]["name"], "br0");
    let tap0 = show["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tap0")
        .expect("tap0 in show --json");
    // An optional column as `watch --json` and `get --json` write it: [] or [value].
    assert_eq!(tap0["tag"], serde_json::json!([10]));
    assert_eq!(tap0["vlan_mode"], serde_json::json!([]));
    assert_eq!(tap0["interfaces"][0]["name"], "tap0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_without_a_relay_exits_3() {
    let bus = Bus::start();
    let out = run(command(&["show", "--bus", &bus.address()])).await;
    assert_error(&out, 3, "relay not running");
}

/// `get` prints what `ovs-vsctl get` prints for the same columns (and `list`'s record layout
/// without columns, JSON with `--json`); `list` the names `ovs-vsctl list-br`/`list-ports`
/// print.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_list_read_like_ovs_vsctl() {
    let stack = Stack::start(&[]).await;
    let (db, address) = (&stack.db, stack.bus.address());
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-br", "br1"]);
    db.vsctl(&[
        "add-port",
        "br0",
        "tap0",
        "--",
        "set",
        "port",
        "tap0",
        "tag=10",
        "trunks=1,2",
    ]);
    db.vsctl(&["add-port", "br1", "tap1"]);
    // `wait --json` prints the row it waited for.
    let out = run(wait(
        &address,
        &["--json", "Port", "tap1", "--timeout", "10"],
    ))
    .await;
    assert_exit(&out, 0);
    let row = parse(stdout(&out).trim());
    assert_eq!(row["name"], "tap1", "{row}");
    assert_eq!(
        row["_uuid"],
        db.vsctl(&["get", "port", "tap1", "_uuid"]),
        "{row}"
    );

    let get = |args: &[&str]| {
        let mut all = vec!["get", "--bus", address.as_str()];
        all.extend_from_slice(args);
        command(&all)
    };
    let out = run(get(&["Port", "tap0", "trunks", "name", "tag"])).await;
    assert_exit(&out, 0);
    let mut want: Vec<String> = ["trunks", "name"]
        .iter()
        .map(|c| db.vsctl(&["get", "port", "tap0", c]))
        .collect();
    // D-Bus carries an optional column as an array of 0 or 1 (SPEC §3), and that is what
    // `get` prints: `[10]` where ovs-vsctl, which knows the schema, prints `10`.
    want.push("[10]".into());
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);

    let out = run(get(&["Port", "tap0"])).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("tag ") && l.ends_with(": [10]")),
        "{}",
        stdout(&out)
    );
    let out = run(get(&["--json", "Port", "tap0", "tag", "trunks"])).await;
    assert_exit(&out, 0);
    assert_eq!(
        parse(stdout(&out).trim()),
        json!({"tag": [10], "trunks": [1, 2]})
    );
    let out = run(get(&["Port", "tap0", "nosuch"])).await;
    assert_error(&out, 2, "nosuch");
    let out = run(get(&["Port", "ghost"])).await;
    assert_error(&out, 2, "ghost");

    let list = |args: &[&str]| {
        let mut all = vec!["list", "--bus", address.as_str()];
        all.extend_from_slice(args);
        command(&all)
    };
    let out = run(list(&["Bridge"])).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), db.vsctl(&["list-br"]) + "\n");
    let out = run(list(&["Port", "--bridge", "br0"])).await;
    assert_exit(&out, 0);
    let mut ports: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    ports.sort();
    assert_eq!(ports, ["br0", "tap0"]);
    let out = run(list(&["--json", "Interface", "--bridge", "br1"])).await;
    assert_exit(&out, 0);
    let names: Vec<String> = parse(stdout(&out).trim())
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
