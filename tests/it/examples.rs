//! The scripts in `examples/` run against real components: ovsdb-server, ovs-vswitchd
//! (which assigns the ofport the tap scripts wait for), a private dbus-daemon and the relay.

use crate::common::signals::CallMonitor;
use crate::common::{
    Bus, COMMAND_TIMEOUT, POLL, Stack, Vswitchd, internal_port, netdev_bridge, poll_until,
    relay_bin, require, run_blocking, run_bounded, text,
};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A network device name unique to this test process: vswitchd creates real tap devices
/// for `type=internal` ports, and those share the host's namespace with other tests.
fn unique(tag: &str) -> String {
    let name = format!("x{}{tag}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "{name} is too long for a device name");
    name
}

/// A shell example with the bus and the relay binary under test in its environment.
fn script(name: &str, bus: &Bus, args: &[&str]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(example(name))
        .args(args)
        .env("OVS_DBUS_RELAY_BUS", bus.address())
        .env("OVS_DBUS_RELAY", relay_bin())
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `name` for a tap that vswitchd gets once the script's `WaitFor` has reached the
/// relay; checks the printed ofport against the database, then a timeout for a tap that
/// never comes.
async fn tap_script_prints_the_ofport(name: &str, tag: &str) {
    let stack = Stack::start(&[]).await;
    let (db, bus) = (&stack.db, &stack.bus);
    let switch = Vswitchd::start(db);
    let bridge = unique(&format!("b{tag}"));
    let tap = unique(&format!("t{tag}"));
    db.vsctl(&netdev_bridge(&bridge));
    let mut calls = CallMonitor::start(&bus.address(), "WaitFor").await;
    let waiting = tokio::spawn(run_blocking(script(name, bus, &[&tap, "15"])));
    calls.wait_calls(1, WAIT).await;
    db.vsctl(&internal_port(&bridge, &tap));
    let out = waiting.await.unwrap();
    assert!(
        out.status.success(),
        "{name} failed ({}): {}{}\nvswitchd:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        switch.log()
    );
    let printed = text(&out.stdout);
    let ofport: i64 = printed
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} printed {printed:?}: {e}"));
    assert!(ofport > 0, "{ofport}");
    assert_eq!(
        db.vsctl(&["get", "interface", &tap, "ofport"]),
        ofport.to_string()
    );

    let started = Instant::now();
    let out = run_blocking(script(name, bus, &[&unique("nope"), "1"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        text(&out.stderr).contains("not satisfied within 1000 ms"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_tap_with_the_relay_command() {
    require("busctl", "systemd");
    tap_script_prints_the_ofport("wait-for-tap.sh", "r").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_tap_with_plain_busctl() {
    require("busctl", "systemd");
    tap_script_prints_the_ofport("wait-for-tap-busctl.sh", "c").await;
}

#[test]
fn examples_are_executable() {
    for name in [
        "wait-for-tap.sh",
        "wait-for-tap-busctl.sh",
        "watch-bridge.py",
    ] {
        let mode = example(name)
            .metadata()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_bridge_python_prints_one_bridges_interface_changes() {
    let python = PathBuf::from("/usr/bin/python3");
    let check = run_bounded(
        Command::new(&python).args(["-c", "import dbus, dbus.mainloop.glib, gi"]),
        COMMAND_TIMEOUT,
    );
    assert!(
        check.status.success(),
        "python3-dbus and python3-gi are needed: `apt-get install python3-dbus python3-gi` \
         ({})",
        text(&check.stderr)
    );

    let stack = Stack::start(&[]).await;
    let (db, bus) = (&stack.db, &stack.bus);
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-br", "br1"]);
    db.vsctl(&["add-port", "br0", "pa"]);
    db.vsctl(&["add-port", "br1", "pb"]);

    let mut child = Command::new(&python)
        .arg(example("watch-bridge.py"))
        .args(["br0", "2"])
        .env("OVS_DBUS_RELAY_BUS", bus.address())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch-bridge.py");
    let (tx, ready) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    let errors = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("watching") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if ready.recv_timeout(WAIT).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("watch-bridge.py did not start: {}", errors.join().unwrap());
    }

    db.vsctl(&["set", "interface", "pa", "external_ids:k=1"]);
    db.vsctl(&["set", "interface", "pb", "external_ids:k=1"]); // br1: filtered out
    db.vsctl(&["set", "interface", "pa", "mtu_request=1400"]);

    let Ok(status) = poll_until(WAIT, POLL, || child.try_wait().unwrap().ok_or(())) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("watch-bridge.py did not exit after 2 signals");
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let errors = errors.join().unwrap();
    assert!(status.success(), "{status}: {errors}");

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let seq = |line: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("seq="))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no seq in {line}"))
    };
    assert!(
        lines[0].starts_with("pa seq=")
            && lines[0].ends_with(r#"changed={"external_ids": {"k": "1"}}"#),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("pa seq=") && lines[1].ends_with(r#"changed={"mtu_request": [1400]}"#),
        "{stdout}"
    );
    // pb's change took the number in between: it was sent, the bus kept it away.
    assert_eq!(seq(lines[1]), seq(lines[0]) + 2, "{stdout}");
}
