//! Smoke tests for the real-component harness in `tests/it/common`.

use std::time::Duration;

use crate::common::{Bus, Ovsdb, Relay, dbus_send, internal_port};

fn assert_list_names(bus: &Bus) {
    let out = dbus_send(
        &bus.address(),
        &[
            "--dest=org.freedesktop.DBus",
            "/",
            "org.freedesktop.DBus.ListNames",
        ],
    );
    assert!(
        out.status.success(),
        "dbus-send ListNames on {} failed ({}): {}\nbus log:\n{}",
        bus.address(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        bus.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("org.freedesktop.DBus"),
        "unexpected ListNames reply: {stdout}"
    );
}

#[test]
fn ovsdb_and_bus_start_and_survive_restarts() {
    let mut ovsdb = Ovsdb::start();
    let mut bus = Bus::start();

    assert!(ovsdb.remote().starts_with("unix:"));
    assert!(ovsdb.sock_path().exists());
    assert!(bus.address().starts_with("unix:path="));

    ovsdb.vsctl(&["add-br", "br0"]);
    assert_eq!(ovsdb.vsctl(&["list-br"]), "br0");
    assert_list_names(&bus);

    // kill -9 keeps the database file; the restarted server serves the same data.
    let old_pid = ovsdb.pid().expect("ovsdb-server running");
    ovsdb.kill();
    assert!(ovsdb.pid().is_none());
    assert!(
        !ovsdb
            .vsctl_output(&["--timeout=1", "list-br"])
            .status
            .success(),
        "ovs-vsctl should fail while the server is down"
    );
    ovsdb.restart();
    assert_ne!(ovsdb.pid(), Some(old_pid));
    assert_eq!(ovsdb.vsctl(&["list-br"]), "br0");
    ovsdb.vsctl(&internal_port("br0", "tap0"));
    assert_eq!(ovsdb.vsctl(&["list-ports", "br0"]), "tap0");

    // The bus comes back on the same address.
    let address = bus.address();
    bus.kill();
    assert!(
        !dbus_send(
            &address,
            &[
                "--dest=org.freedesktop.DBus",
                "/",
                "org.freedesktop.DBus.GetId"
            ]
        )
        .status
        .success(),
        "dbus-send should fail while the bus is down"
    );
    bus.restart();
    assert_eq!(bus.address(), address);
    assert_list_names(&bus);
}

#[test]
fn fixtures_are_independent_and_cleaned_up() {
    let (dir_a, dir_b, bus_dir);
    {
        let a = Ovsdb::start();
        let b = Ovsdb::start();
        let bus = Bus::start();
        a.vsctl(&["add-br", "only-in-a"]);
        assert_eq!(b.vsctl(&["list-br"]), "");
        dir_a = a.dir().to_path_buf();
        dir_b = b.dir().to_path_buf();
        bus_dir = bus.dir().to_path_buf();
    }
    assert!(!dir_a.exists() && !dir_b.exists() && !bus_dir.exists());
}

#[test]
fn relay_binary_runs_and_is_reaped() {
    // Only checks the plumbing (spawn, log capture, bounded wait), not relay behaviour.
    let ovsdb = Ovsdb::start();
    let bus = Bus::start();
    let mut relay = Relay::spawn(&ovsdb.remote(), &bus.address(), &[]);
    assert!(relay.pid() > 0);
    if relay.wait_exit(Duration::from_millis(500)).is_none() {
        assert!(relay.is_running());
    }
    let _ = relay.log();
}
