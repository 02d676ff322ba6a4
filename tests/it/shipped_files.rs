//! The files under `dbus/` and `systemd/` exactly as they ship (SPEC §9, issue 5), checked
//! by their real consumers:
//!
//! - `systemd-analyze verify` for the unit (only `ExecStart=` is pointed at the binary
//!   cargo built, because verify insists that the command exists);
//! - a system-bus-like `dbus-daemon` for the policies and the activation file: default-deny
//!   like `/usr/share/dbus-1/system.conf`, with the shipped files included by their paths in
//!   the source tree, and clients that drop privileges with `setpriv` to `nobody`, with and
//!   without the `ovsdbus` group.
//!
//! The policy is checked twice: against a stand-in service that answers every call (so the
//! whole matrix, including the openQA name, is covered independently of the write methods),
//! and against the real relay on a real ovsdb-server.
//!
//! These tests need root (to create the `ovsdbus` group and to drop privileges), like
//! the rest of the integration suite.

use crate::common::system_bus::{SystemBus, Who, command_as, shipped};
use crate::common::{
    COMMAND_TIMEOUT, Netns, Ovsdb, Reaped, Relay, START_TIMEOUT, relay_command, require,
    run_bounded, text, wait_until,
};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const RELAY_NAME: &str = "org.ovsdbus.Relay1";
const RELAY_PATH: &str = "/org/ovsdbus/Relay1";
const OPENQA_NAME: &str = "org.opensuse.os_autoinst.switch";
const OPENQA_PATH: &str = "/switch";
const UNIT_NAME: &str = "ovs-dbus-relay.service";

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Unit and activation files: a minimal reader for systemd's INI dialect
// ---------------------------------------------------------------------------------------

/// `[section] key` → every value in file order (keys such as `After=` may repeat).
type Ini = BTreeMap<(String, String), Vec<String>>;

/// Enough of systemd.syntax(7) for the shipped files: sections, `key=value`, `#`/`;`
/// comments. Line continuations are rejected so that a value is never misread.
fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: no continuation lines, please",
            n + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        ini.entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    ini
}

/// The single value of `key` (panics if missing or repeated).
fn one<'a>(ini: &'a Ini, section: &str, key: &str) -> &'a str {
    match ini.get(&(section.to_owned(), key.to_owned())) {
        Some(values) if values.len() == 1 => &values[0],
        other => panic!("[{section}] {key}= must be set exactly once, found {other:?}"),
    }
}

/// Every space-separated item of every `key=` line.
fn items(ini: &Ini, section: &str, key: &str) -> Vec<String> {
    ini.get(&(section.to_owned(), key.to_owned()))
        .into_iter()
        .flatten()
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

fn unit_path() -> PathBuf {
    shipped(&format!("systemd/{UNIT_NAME}"))
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    verify_unit(None);
}

/// The openQA drop-in, loaded on top of the unit, is clean too; it turns the openQA API
/// on with a variable the relay reads, and reads the original's configuration file.
#[test]
fn openqa_drop_in_passes_systemd_analyze_verify() {
    let drop_in = shipped("systemd/openqa.conf");
    verify_unit(Some(&drop_in));
    let unit = read(&drop_in);
    assert!(
        unit.contains("Environment=OVS_DBUS_RELAY_OPENQA_COMPAT=1"),
        "{unit}"
    );
    assert!(
        unit.contains("EnvironmentFile=-/etc/sysconfig/os-autoinst-openvswitch"),
        "{unit}"
    );
    let help = run_bounded(
        Command::new(crate::common::relay_bin()).args(["run", "--help"]),
        COMMAND_TIMEOUT,
    );
    assert!(text(&help.stdout).contains("OVS_DBUS_RELAY_OPENQA_COMPAT"));
}

/// `systemd-analyze verify` of the unit (with `drop_in` in its `.d` directory), which must
/// pass without a word about our files.
fn verify_unit(drop_in: Option<&Path>) {
    let analyze = require("systemd-analyze", "systemd");
    let original = read(&unit_path());

    // verify fails when the ExecStart= command does not exist, and /usr/bin/ovs-dbus-relay
    // is not installed here; point that one line at the binary under test and change
    // nothing else. The unit file name is kept: verify derives the unit name (and checks
    // Alias=) from it.
    const EXEC: &str = "ExecStart=/usr/bin/ovs-dbus-relay run";
    assert_eq!(
        original.lines().filter(|l| l.trim() == EXEC).count(),
        1,
        "the unit must contain exactly one `{EXEC}` line"
    );
    let bin = crate::common::relay_bin();
    let rewritten = original.replace(EXEC, &format!("ExecStart={bin} run"));
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join(UNIT_NAME);
    fs::write(&unit, rewritten).expect("write unit copy");
    if let Some(drop_in) = drop_in {
        let drop_ins = dir.path().join(format!("{UNIT_NAME}.d"));
        fs::create_dir(&drop_ins).unwrap();
        fs::copy(drop_in, drop_ins.join(drop_in.file_name().unwrap())).unwrap();
    }

    // No stub units are needed: verify loads the unit's dependencies from the system
    // unit path, and a unit named in Wants=/After= that does not exist (no Open vSwitch
    // installed) is not an error. The man: reference in Documentation= is checked with
    // man(1), which needs man-db and openvswitch-switch (for ovs-vswitchd.conf.db(5)).
    // The unit's directory first in the search path, so that its `.d` drop-ins load too
    // (the trailing `:` keeps the system's own path after it).
    let out = run_bounded(
        Command::new(&analyze)
            .arg("verify")
            .arg(&unit)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display())),
        COMMAND_TIMEOUT,
    );
    let stderr = text(&out.stderr);
    let hint = if stderr.contains("Command 'man") {
        "\n(man page check failed: `apt-get install man-db openvswitch-switch`)"
    } else {
        ""
    };
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stderr}{}{hint}",
        out.status,
        text(&out.stdout)
    );
    // verify exits 0 on unknown keys and unparsable values ("..., ignoring."), so any
    // diagnostic about our unit is a failure too. Lines about other units are the host's
    // business.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(UNIT_NAME) || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify complained about the unit:\n{}",
        ours.join("\n")
    );

    // The sandbox: an overall exposure of at most 1.5 ("OK") in systemd's own scoring,
    // offline and with the binary in place.
    if drop_in.is_none() {
        let out = run_bounded(
            Command::new(&analyze)
                .args(["security", "--offline=true", "--threshold=15"])
                .arg(&unit)
                .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display())),
            COMMAND_TIMEOUT,
        );
        let report = text(&out.stdout);
        let overall = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_default();
        assert!(
            out.status.success(),
            "exposure above 1.5: {overall}\n{report}"
        );
    }

    // The arguments of ExecStart= must be accepted by the binary, too.
    let out = run_bounded(Command::new(bin).args(["run", "--help"]), COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "`{bin} run --help` failed: {}",
        text(&out.stderr)
    );
}

#[test]
fn systemd_unit_has_the_required_settings() {
    let ini = parse_ini(&read(&unit_path()));
    let after = items(&ini, "Unit", "After");
    let wants = items(&ini, "Unit", "Wants");
    assert!(
        after.contains(&"ovsdb-server.service".to_owned()),
        "{after:?}"
    );
    assert!(
        after.contains(&"ovs-vswitchd.service".to_owned()),
        "{after:?}"
    );
    assert!(
        wants.contains(&"ovsdb-server.service".to_owned()),
        "{wants:?}"
    );

    // READY=1 comes from the relay after the first snapshot (tests/it/notify.rs).
    assert_eq!(one(&ini, "Service", "Type"), "notify");
    assert_eq!(one(&ini, "Service", "NotifyAccess"), "main");
    assert_eq!(one(&ini, "Service", "BusName"), RELAY_NAME);
    assert_eq!(
        one(&ini, "Service", "ExecStart"),
        "/usr/bin/ovs-dbus-relay run"
    );
    assert_eq!(
        one(&ini, "Service", "EnvironmentFile"),
        "-/etc/default/ovs-dbus-relay"
    );
    assert_eq!(one(&ini, "Service", "Restart"), "on-failure");
    let watchdog: u64 = one(&ini, "Service", "WatchdogSec")
        .parse()
        .expect("WatchdogSec= in plain seconds");
    assert!(watchdog >= 2, "WatchdogSec={watchdog} is too tight");

    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("MemoryDenyWriteExecute", "yes"),
        ("User", "root"),
        ("ProcSubset", "pid"),
        ("PrivateMounts", "yes"),
        ("IPAddressDeny", "any"),
        ("IPAddressAllow", "localhost"),
    ] {
        assert_eq!(one(&ini, "Service", key), value, "[Service] {key}=");
    }
    // An allow list, then a deny list on top of it.
    assert_eq!(
        ini.get(&("Service".to_owned(), "SystemCallFilter".to_owned())),
        Some(&vec![
            "@system-service".to_owned(),
            "~@privileged @resources".to_owned()
        ])
    );
    // Read-only everywhere: connecting to /run/openvswitch/db.sock needs no write access
    // to its mount (systemd.exec(5)), so nothing is made writable.
    assert!(
        items(&ini, "Service", "ReadWritePaths").is_empty(),
        "the relay writes no files"
    );

    assert_eq!(one(&ini, "Install", "WantedBy"), "multi-user.target");
    assert_eq!(
        one(&ini, "Install", "Alias"),
        "dbus-org.ovsdbus.Relay1.service"
    );
}

#[test]
fn activation_file_names_the_unit() {
    let path = shipped("dbus/org.ovsdbus.Relay1.service");
    let ini = parse_ini(&read(&path));
    let sections: Vec<&str> = ini.keys().map(|(s, _)| s.as_str()).collect();
    assert!(
        sections.iter().all(|s| *s == "D-BUS Service"),
        "only [D-BUS Service]: {sections:?}"
    );
    let name = one(&ini, "D-BUS Service", "Name");
    assert_eq!(name, RELAY_NAME);
    // dbus-daemon only accepts a system service whose file is named after it.
    assert_eq!(
        path.file_name().and_then(|f| f.to_str()),
        Some(format!("{name}.service").as_str())
    );
    assert_eq!(one(&ini, "D-BUS Service", "User"), "root");
    let exec = one(&ini, "D-BUS Service", "Exec");
    assert!(exec.starts_with('/'), "Exec= must be absolute: {exec}");
    let unit = one(&ini, "D-BUS Service", "SystemdService");
    assert_eq!(unit, UNIT_NAME);
    assert!(
        shipped(&format!("systemd/{unit}")).is_file(),
        "SystemdService={unit} must be the shipped unit"
    );
}

// ---------------------------------------------------------------------------------------
// A system-bus-like dbus-daemon
// ---------------------------------------------------------------------------------------

/// `dbus-send --print-reply --bus=ADDRESS --dest=DEST PATH IFACE.MEMBER ARGS...` as `who`.
fn call_as(who: Who, address: &str, dest: &str, path: &str, method: &str, args: &[&str]) -> Output {
    let mut cmd = command_as(who, &require("dbus-send", "dbus"));
    cmd.arg(format!("--bus={address}"))
        .arg("--print-reply")
        .arg(format!("--dest={dest}"))
        .arg(path)
        .arg(method)
        .args(args);
    run_bounded(&mut cmd, COMMAND_TIMEOUT)
}

fn access_denied(out: &Output) -> bool {
    text(&out.stderr).contains("org.freedesktop.DBus.Error.AccessDenied")
}

fn describe(who: Who, method: &str, out: &Output) -> String {
    format!(
        "{who:?} calling {method}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout).trim(),
        text(&out.stderr).trim()
    )
}

/// Asserts that the bus refuses `who` the call with `AccessDenied`.
fn assert_denied(who: Who, address: &str, dest: &str, path: &str, method: &str, args: &[&str]) {
    let out = call_as(who, address, dest, path, method, args);
    assert!(
        access_denied(&out),
        "expected AccessDenied: {}",
        describe(who, method, &out)
    );
}

/// Every org.ovsdbus.Switch1 method with arguments of the right types where dbus-send
/// can express them (it cannot build `a{sv}`; the policy decides before any argument is
/// looked at, so the denials do not depend on them).
const SWITCH1_CALLS: &[(&str, &[&str])] = &[
    ("org.ovsdbus.Switch1.AddBridge", &["string:br-new"]),
    (
        "org.ovsdbus.Switch1.DeleteBridge",
        &["string:br-new", "boolean:true"],
    ),
    ("org.ovsdbus.Switch1.AddPort", &["string:br0", "string:p9"]),
    (
        "org.ovsdbus.Switch1.DeletePort",
        &["string:p9", "boolean:true"],
    ),
    ("org.ovsdbus.Switch1.SetVlan", &["string:p1", "uint32:5"]),
    ("org.ovsdbus.Switch1.ClearVlan", &["string:p1"]),
    (
        "org.ovsdbus.Switch1.SetExternalIds",
        &[
            "string:Port",
            "string:p1",
            "dict:string:string:k,v",
            "array:string:old",
        ],
    ),
];

const OPENQA_CALLS: &[(&str, &[&str])] = &[
    (
        "org.opensuse.os_autoinst.switch.set_vlan",
        &["string:tap0", "uint32:5"],
    ),
    (
        "org.opensuse.os_autoinst.switch.unset_vlan",
        &["string:tap0", "uint32:5"],
    ),
    ("org.opensuse.os_autoinst.switch.show", &[]),
];

// ---------------------------------------------------------------------------------------
// The policy against a stand-in service
// ---------------------------------------------------------------------------------------

/// A root client owning both names and answering every method call with `"ok"`, so that
/// a successful call proves the bus let it through and an error can only be the bus's.
struct StandIn {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StandIn {
    fn start(address: &str) -> StandIn {
        let address = address.to_owned();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(stand_in(&address, ready_tx, stop_rx));
        });
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("stand-in service: {e}"),
            Err(e) => panic!("stand-in service did not start: {e}"),
        }
        StandIn {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn stand_in(
    address: &str,
    ready: mpsc::Sender<Result<(), String>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use tokio_stream::StreamExt;
    let setup = async {
        let conn = zbus::connection::Builder::address(address).build().await?;
        // Subscribed before the names are owned: no call can slip past.
        let stream = zbus::MessageStream::from(&conn);
        for name in [RELAY_NAME, OPENQA_NAME] {
            let reply = conn
                .request_name_with_flags(name, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE)
                .await?;
            if reply != zbus::fdo::RequestNameReply::PrimaryOwner {
                return Err(zbus::Error::Failure(format!("{name}: {reply:?}")));
            }
        }
        Ok::<_, zbus::Error>((conn, stream))
    };
    let (conn, mut stream) = match setup.await {
        Ok(ok) => {
            let _ = ready.send(Ok(()));
            ok
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            message = stream.next() => match message {
                Some(Ok(message)) if message.message_type() == zbus::message::Type::MethodCall => {
                    let _ = conn.reply(&message.header(), &("ok",)).await;
                }
                Some(_) => {}
                None => return,
            },
        }
    }
}

#[test]
fn dbus_daemon_loads_the_policies_and_the_activation_file() {
    let bus = SystemBus::start_with_activation();
    let out = call_as(
        Who::Nobody,
        &bus.address(),
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.ListActivatableNames",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        describe(Who::Nobody, "ListActivatableNames", &out)
    );
    assert!(
        text(&out.stdout).contains(&format!("\"{RELAY_NAME}\"")),
        "dbus-daemon did not load dbus/{RELAY_NAME}.service:\n{}\n{}",
        text(&out.stdout),
        bus.log()
    );
}

#[test]
fn policy_matrix_with_a_stand_in_service() {
    let bus = SystemBus::start();
    let address = bus.address();
    // Root may own both names (StandIn::start fails otherwise).
    let _service = StandIn::start(&address);

    let allowed = |who: Who, dest: &str, path: &str, method: &str, args: &[&str]| {
        let out = call_as(who, &address, dest, path, method, args);
        assert!(
            out.status.success() && text(&out.stdout).contains("\"ok\""),
            "expected the call to be let through: {}",
            describe(who, method, &out)
        );
    };
    let denied = |who: Who, dest: &str, path: &str, method: &str, args: &[&str]| {
        assert_denied(who, &address, dest, path, method, args)
    };

    // Reading is open to everyone, in every group.
    let reads: &[(&str, &str, &[&str])] = &[
        (
            RELAY_PATH,
            "org.freedesktop.DBus.Introspectable.Introspect",
            &[],
        ),
        ("/", "org.freedesktop.DBus.Peer.Ping", &[]),
        (
            RELAY_PATH,
            "org.freedesktop.DBus.Properties.Get",
            &["string:org.ovsdbus.Relay1", "string:State"],
        ),
        (
            "/org/ovsdbus/Relay1/bridge/br0",
            "org.freedesktop.DBus.Properties.GetAll",
            &["string:org.ovsdbus.Bridge1"],
        ),
        (
            RELAY_PATH,
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
            &[],
        ),
        (RELAY_PATH, "org.ovsdbus.Relay1.ListBridges", &[]),
        (RELAY_PATH, "org.ovsdbus.Relay1.ListPorts", &["string:"]),
        (
            RELAY_PATH,
            "org.ovsdbus.Relay1.GetRow",
            &["string:Bridge", "string:br0"],
        ),
        (RELAY_PATH, "org.ovsdbus.Relay1.Show", &[]),
        (
            RELAY_PATH,
            "org.ovsdbus.Relay1.WaitForRemoval",
            &["string:Port", "string:p1", "uint32:10"],
        ),
    ];
    for who in [Who::Root, Who::Nobody, Who::NobodyInOvsdbus] {
        for (path, method, args) in reads {
            allowed(who, RELAY_NAME, path, method, args);
        }
        allowed(
            who,
            OPENQA_NAME,
            OPENQA_PATH,
            "org.freedesktop.DBus.Introspectable.Introspect",
            &[],
        );
    }

    // Changing the switch: root and group ovsdbus only, on both names.
    for (method, args) in SWITCH1_CALLS {
        denied(Who::Nobody, RELAY_NAME, RELAY_PATH, method, args);
        allowed(Who::NobodyInOvsdbus, RELAY_NAME, RELAY_PATH, method, args);
        allowed(Who::Root, RELAY_NAME, RELAY_PATH, method, args);
    }
    for (method, args) in OPENQA_CALLS {
        denied(Who::Nobody, OPENQA_NAME, OPENQA_PATH, method, args);
        allowed(Who::NobodyInOvsdbus, OPENQA_NAME, OPENQA_PATH, method, args);
        allowed(Who::Root, OPENQA_NAME, OPENQA_PATH, method, args);
    }

    // Properties.Set, interfaces the policy does not name, and owning the names stay
    // closed to everyone but root, group ovsdbus included.
    let set = [
        "string:org.ovsdbus.Relay1",
        "string:State",
        "variant:string:ready",
    ];
    for who in [Who::Nobody, Who::NobodyInOvsdbus] {
        denied(
            who,
            RELAY_NAME,
            RELAY_PATH,
            "org.freedesktop.DBus.Properties.Set",
            &set,
        );
        denied(
            who,
            RELAY_NAME,
            RELAY_PATH,
            "org.example.Unlisted.Method",
            &[],
        );
        for name in [RELAY_NAME, OPENQA_NAME] {
            denied(
                who,
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.RequestName",
                &[&format!("string:{name}"), "uint32:4"],
            );
        }
    }
    allowed(
        Who::Root,
        RELAY_NAME,
        RELAY_PATH,
        "org.freedesktop.DBus.Properties.Set",
        &set,
    );

    // A method call may omit the interface; a service may then dispatch it by member
    // name alone. Such calls must not be a way around the Switch1 rule.
    for (who, expect_denied) in [
        (Who::Nobody, true),
        (Who::NobodyInOvsdbus, true),
        (Who::Root, false),
    ] {
        let out = call_without_interface(who, &address, "SetVlan");
        assert_eq!(
            access_denied(&out),
            expect_denied,
            "interface-less SetVlan: {}",
            describe(who, "SetVlan (no interface)", &out)
        );
    }
}

/// dbus-send and gdbus always set the interface; dbus-python leaves it out when asked
/// to (python3-dbus is one of the project's test dependencies, see scripts/setup-deps.sh).
fn call_without_interface(who: Who, address: &str, member: &str) -> Output {
    const SCRIPT: &str = r#"
import sys, dbus
bus = dbus.bus.BusConnection(sys.argv[1])
try:
    print(bus.call_blocking(sys.argv[2], sys.argv[3], None, sys.argv[4], "", ()))
except dbus.exceptions.DBusException as e:
    sys.exit(e.get_dbus_name())
"#;
    // The system interpreter: python3-dbus is a Debian package, invisible to a pyenv or
    // virtualenv python3 that may come first on PATH.
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.is_file(),
        "/usr/bin/python3 not found: `apt-get install python3-dbus`"
    );
    let mut cmd = command_as(who, python);
    cmd.args(["-c", SCRIPT, address, RELAY_NAME, RELAY_PATH, member]);
    let out = run_bounded(&mut cmd, COMMAND_TIMEOUT);
    assert!(
        !text(&out.stderr).contains("No module named"),
        "python3-dbus missing: `apt-get install python3-dbus`\n{}",
        text(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------
// The policy with the real relay
// ---------------------------------------------------------------------------------------

/// `State` of the relay as root sees it, or `None` if it cannot be read yet.
fn relay_state(address: &str) -> Option<String> {
    let out = call_as(
        Who::Root,
        address,
        RELAY_NAME,
        RELAY_PATH,
        "org.freedesktop.DBus.Properties.Get",
        &["string:org.ovsdbus.Relay1", "string:State"],
    );
    let stdout = text(&out.stdout);
    out.status
        .success()
        .then(|| stdout.split('"').nth(1).map(str::to_owned))
        .flatten()
}

/// ovsdb-server with `port` on br0, the system-like bus, and the relay with `extra` flags
/// on them, ready and owning the `other_names` too. The relay runs as root, like the
/// shipped unit, and must be able to own its names.
fn relay_on_system_bus(
    port: &str,
    extra: &[&str],
    other_names: &[&str],
) -> (Ovsdb, SystemBus, Relay) {
    relay_on(SystemBus::start(), None, port, extra, other_names)
}

/// [`relay_on_system_bus`] on `bus`, the relay in `netns` if given.
fn relay_on(
    bus: SystemBus,
    netns: Option<&Netns>,
    port: &str,
    extra: &[&str],
    other_names: &[&str],
) -> (Ovsdb, SystemBus, Relay) {
    let db = Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-port", "br0", port]);
    let address = bus.address();
    // No ovs-vswitchd here: writes that get through return without waiting for one.
    let extra = [&["--no-wait"], extra].concat();
    let cmd = Relay::run_command(&db.remote(), &address, &extra);
    let mut relay = Relay::spawn_command(match netns {
        Some(netns) => netns.wrap(&cmd),
        None => cmd,
    });
    let ready = wait_until(Duration::from_secs(20), || {
        relay_state(&address).as_deref() == Some("ready")
            && other_names
                .iter()
                .all(|name| name_has_owner(&address, name))
    });
    let with: String = other_names.iter().map(|n| format!(" with {n}")).collect();
    assert!(
        ready && relay.is_running(),
        "relay did not become ready{with} on the system-like bus:\n{}\n{}",
        relay.log(),
        bus.log()
    );
    (db, bus, relay)
}

#[test]
fn policy_with_the_real_relay() {
    let (db, bus, mut relay) = relay_on_system_bus("p1", &[], &[]);
    let address = bus.address();

    // An unprivileged user reads state, rows and objects.
    let read = |path: &str, method: &str, args: &[&str], expect: &str| {
        let out = call_as(Who::Nobody, &address, RELAY_NAME, path, method, args);
        assert!(
            out.status.success() && text(&out.stdout).contains(expect),
            "expected {expect:?}: {}",
            describe(Who::Nobody, method, &out)
        );
    };
    read(
        RELAY_PATH,
        "org.freedesktop.DBus.Properties.Get",
        &["string:org.ovsdbus.Relay1", "string:State"],
        "\"ready\"",
    );
    read(
        RELAY_PATH,
        "org.freedesktop.DBus.Properties.GetAll",
        &["string:org.ovsdbus.Relay1"],
        "State",
    );
    read(RELAY_PATH, "org.ovsdbus.Relay1.ListBridges", &[], "\"br0\"");
    read(
        RELAY_PATH,
        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
        &[],
        "/org/ovsdbus/Relay1/port/p1",
    );
    read(
        RELAY_PATH,
        "org.freedesktop.DBus.Introspectable.Introspect",
        &[],
        "org.ovsdbus.Relay1",
    );

    // ... and receives the typed signals. dbus-monitor cannot become a monitor or
    // eavesdrop as nobody; it then falls back to an ordinary match rule, which is exactly
    // what an unprivileged subscriber uses.
    let monitor_log = bus.dir().join("monitor.log");
    let monitor_out = File::create(&monitor_log).expect("monitor log");
    let monitor = command_as(Who::Nobody, &require("dbus-monitor", "dbus"))
        // dbus-monitor takes `--address ADDRESS`, not `--address=ADDRESS`.
        .args(["--address", &address])
        .arg(format!(
            "type='signal',sender='{RELAY_NAME}',interface='org.ovsdbus.Relay1'"
        ))
        .stdin(Stdio::null())
        .stdout(monitor_out.try_clone().expect("monitor log handle"))
        .stderr(monitor_out)
        .spawn()
        .expect("start dbus-monitor");
    let _monitor = Reaped(monitor);
    // The match rule is in place at some unknown moment after the spawn: add bridges
    // until one is seen (bounded), rather than guessing a delay.
    let seen = (0..20).any(|n| {
        db.vsctl(&["add-br", &format!("br-sig{n}")]);
        wait_until(Duration::from_millis(500), || {
            fs::read_to_string(&monitor_log)
                .unwrap_or_default()
                .contains("member=BridgeAdded")
        })
    });
    assert!(
        seen,
        "nobody received no BridgeAdded signal:\n{}",
        fs::read_to_string(&monitor_log).unwrap_or_default()
    );

    // Writes are refused to an unprivileged user, and Set is refused to everyone.
    for (method, args) in SWITCH1_CALLS {
        assert_denied(Who::Nobody, &address, RELAY_NAME, RELAY_PATH, method, args);
    }
    let out = call_as(
        Who::Nobody,
        &address,
        RELAY_NAME,
        RELAY_PATH,
        "org.freedesktop.DBus.Properties.Set",
        &[
            "string:org.ovsdbus.Relay1",
            "string:State",
            "variant:string:x",
        ],
    );
    assert!(
        access_denied(&out),
        "{}",
        describe(Who::Nobody, "Set", &out)
    );

    // A member of group ovsdbus changes the switch: the call succeeds, and by the time
    // the reply arrives the change is in the database. Root may, too.
    let out = call_as(
        Who::NobodyInOvsdbus,
        &address,
        RELAY_NAME,
        RELAY_PATH,
        "org.ovsdbus.Switch1.SetVlan",
        &["string:p1", "uint32:5"],
    );
    assert!(
        out.status.success(),
        "group ovsdbus must be able to call SetVlan: {}",
        describe(Who::NobodyInOvsdbus, "SetVlan", &out)
    );
    assert_eq!(db.vsctl(&["get", "Port", "p1", "tag"]), "5");
    let out = call_as(
        Who::Root,
        &address,
        RELAY_NAME,
        RELAY_PATH,
        "org.ovsdbus.Switch1.ClearVlan",
        &["string:p1"],
    );
    assert!(
        out.status.success(),
        "{}",
        describe(Who::Root, "ClearVlan", &out)
    );
    assert_eq!(db.vsctl(&["get", "Port", "p1", "tag"]), "[]");
    assert!(relay.is_running(), "{}", relay.log());
}

/// Whether `name` has an owner on the bus, as root asks the bus.
fn name_has_owner(address: &str, name: &str) -> bool {
    let out = call_as(
        Who::Root,
        address,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.NameHasOwner",
        &[&format!("string:{name}")],
    );
    out.status.success() && text(&out.stdout).contains("boolean true")
}

/// os-autoinst's own policy for its name (its `etc/dbus-1/system.d/` file): root owns and
/// calls, the openQA worker user may send anything to the name's owner. A worker host may
/// still have it installed next to ours.
const OS_AUTOINST_POLICY: &str = r#"<busconfig>
  <policy user="root">
    <allow own="org.opensuse.os_autoinst.switch"/>
    <allow send_destination="org.opensuse.os_autoinst.switch"/>
    <allow receive_sender="org.opensuse.os_autoinst.switch"/>
  </policy>
  <policy user="_openqa-worker">
    <allow send_destination="org.opensuse.os_autoinst.switch"/>
  </policy>
</busconfig>
"#;

#[test]
fn openqa_policy_with_the_real_relay() {
    // Both policies: ours (shipped) and os-autoinst's.
    let policies = tempfile::tempdir().unwrap();
    let original = policies.path().join("os-autoinst.conf");
    fs::write(&original, OS_AUTOINST_POLICY).unwrap();
    let bus = SystemBus::launch(&format!("<include>{}</include>", original.display()));
    // The relay in a namespace with a tap0 device, as the worker's qemu makes.
    let netns = Netns::new();
    netns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    let (db, bus, mut relay) = relay_on(
        bus,
        Some(&netns),
        "tap0",
        &["--openqa-compat"],
        &[OPENQA_NAME],
    );
    let address = bus.address();
    let tag = || db.vsctl(&["get", "Port", "tap0", "tag"]);

    // Everyone may introspect the openQA object ...
    let out = call_as(
        Who::Nobody,
        &address,
        OPENQA_NAME,
        OPENQA_PATH,
        "org.freedesktop.DBus.Introspectable.Introspect",
        &[],
    );
    assert!(
        out.status.success() && text(&out.stdout).contains("set_vlan"),
        "{}",
        describe(Who::Nobody, "Introspect", &out)
    );
    // ... but an unprivileged user gets AccessDenied on every method, show included.
    for (method, args) in OPENQA_CALLS {
        assert_denied(
            Who::Nobody,
            &address,
            OPENQA_NAME,
            OPENQA_PATH,
            method,
            args,
        );
    }
    assert_eq!(tag(), "[]");

    // The openQA worker user and members of group ovsdbus: every method answers return
    // code 0 and does its job.
    for who in [Who::OpenQaWorker, Who::NobodyInOvsdbus] {
        let call = |method: &str, args: &[&str]| {
            let out = call_as(who, &address, OPENQA_NAME, OPENQA_PATH, method, args);
            assert!(
                out.status.success() && text(&out.stdout).contains("int32 0"),
                "{who:?} must be able to call it: {}",
                describe(who, method, &out)
            );
            text(&out.stdout)
        };
        call(
            "org.opensuse.os_autoinst.switch.set_vlan",
            &["string:tap0", "uint32:5"],
        );
        assert_eq!(tag(), "5");
        assert_eq!(
            db.vsctl(&["get", "Port", "tap0", "vlan_mode"]),
            "dot1q-tunnel"
        );
        let shown = call("org.opensuse.os_autoinst.switch.show", &[]);
        assert!(
            shown.contains("Bridge br0") && shown.contains("Port tap0") && shown.contains("tag: 5"),
            "{shown}"
        );
        call(
            "org.opensuse.os_autoinst.switch.unset_vlan",
            &["string:tap0", "uint32:5"],
        );
        assert_eq!(tag(), "[]");
    }

    // The worker user gets nothing of Switch1, although os-autoinst's policy lets it send
    // anything to the openQA name's owner: that owner is a connection of its own.
    for (method, args) in SWITCH1_CALLS {
        assert_denied(
            Who::OpenQaWorker,
            &address,
            RELAY_NAME,
            RELAY_PATH,
            method,
            args,
        );
    }
    let through_openqa = call_as(
        Who::OpenQaWorker,
        &address,
        OPENQA_NAME,
        RELAY_PATH,
        "org.ovsdbus.Switch1.SetVlan",
        &["string:tap0", "uint32:5"],
    );
    assert!(
        text(&through_openqa.stderr).contains("org.freedesktop.DBus.Error.UnknownObject"),
        "{}",
        describe(
            Who::OpenQaWorker,
            "Switch1.SetVlan via the openQA name",
            &through_openqa
        )
    );
    assert_eq!(tag(), "[]");
    assert!(relay.is_running(), "{}", relay.log());
}

/// The sysusers.d file creates group `ovsdbus` (the policy's group), and the example
/// `/etc/default` file names exactly the variables `run` reads, with their defaults.
#[test]
fn sysusers_and_default_files_match_the_relay() {
    let sysusers = require("systemd-sysusers", "systemd");
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ovs-dbus-relay.sysusers");
    let out = Command::new(sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let group = fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("ovsdbus:")), "{group}");
    let policy = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.ovsdbus.Relay1.conf"),
    )
    .unwrap();
    assert!(
        policy.contains(r#"group="ovsdbus""#),
        "the policy names another group"
    );

    let help = run_bounded(
        &mut relay_command(&["run", "--help"]),
        Duration::from_secs(10),
    );
    let help = String::from_utf8_lossy(&help.stdout);
    let defaults = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ovs-dbus-relay.default"),
    )
    .unwrap();
    let named: Vec<&str> = defaults
        .lines()
        .filter_map(|l| l.strip_prefix('#')?.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("OVS_DBUS_RELAY_"))
        .collect();
    let read: Vec<&str> = help
        .match_indices("[env: ")
        .map(|(i, _)| help[i + 6..].split('=').next().unwrap())
        .collect();
    let (mut named_sorted, mut read_sorted) = (named.clone(), read.clone());
    named_sorted.sort_unstable();
    read_sorted.sort_unstable();
    assert_eq!(
        named_sorted, read_sorted,
        "the example file and `run` disagree"
    );
}

/// The man pages, generated from the argument definitions, render without a warning from
/// man/groff and name every flag; the completion scripts are valid and know every command.
#[test]
fn man_pages_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let bin = crate::common::relay_bin();
    let out = run_bounded(
        Command::new(bin).arg("manpages").arg(dir.path()),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let man = require("man", "man-db");
    let commands = ["run", "watch", "wait", "show", "get", "list", "completions"];
    for page in std::iter::once("ovs-dbus-relay".to_owned())
        .chain(commands.iter().map(|c| format!("ovs-dbus-relay-{c}")))
    {
        let path = dir.path().join(format!("{page}.8"));
        let out = run_bounded(
            Command::new(&man)
                .arg("--warnings")
                .arg("-l")
                .arg(&path)
                .env("MANWIDTH", "80")
                .env_remove("MAN_KEEP_FORMATTING"),
            COMMAND_TIMEOUT,
        );
        let rendered = text(&out.stdout);
        assert!(out.status.success(), "{page}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).trim().is_empty(),
            "{page}: {}",
            text(&out.stderr)
        );
        assert!(
            rendered.contains("NAME") && rendered.contains("SYNOPSIS"),
            "{rendered}"
        );
        if page == "ovs-dbus-relay-run" {
            for flag in ["--db", "--private-key", "--openqa-compat", "--no-wait"] {
                assert!(rendered.contains(flag), "{page} lacks {flag}");
            }
        }
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = run_bounded(
            Command::new(bin).args(["completions", shell]),
            COMMAND_TIMEOUT,
        );
        let script = text(&out.stdout);
        assert!(out.status.success() && !script.is_empty(), "{shell}");
        for command in commands {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
        if shell == "bash" {
            let mut check = Command::new(require("bash", "bash"));
            check.arg("-n").arg("-c").arg(&script);
            assert!(run_bounded(&mut check, COMMAND_TIMEOUT).status.success());
        }
    }
}

/// polkitd (Debian's) on the system-like bus, with the shipped action and rules files in
/// place of the system's: run in a mount namespace of its own where they are bind-mounted
/// over /usr/share/polkit-1/actions and the rules directories (polkit reads no other
/// place). Killed on drop.
struct Polkitd {
    child: Reaped,
    rules: tempfile::TempDir,
    _actions: tempfile::TempDir,
    _empty: tempfile::TempDir,
}

impl Polkitd {
    fn start(bus: &SystemBus) -> Polkitd {
        let polkitd = Path::new("/usr/lib/polkit-1/polkitd");
        assert!(polkitd.exists(), "no polkitd: apt-get install polkitd");
        let actions = tempfile::tempdir().unwrap();
        let rules = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        fs::copy(
            shipped("polkit/org.ovsdbus.switch.policy"),
            actions.path().join("org.ovsdbus.switch.policy"),
        )
        .unwrap();
        fs::copy(
            shipped("polkit/ovs-dbus-relay.rules"),
            rules.path().join("ovs-dbus-relay.rules"),
        )
        .unwrap();
        for dir in [actions.path(), rules.path(), empty.path()] {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let script = format!(
            "mount --bind {a} /usr/share/polkit-1/actions && \
             mount --bind {r} /etc/polkit-1/rules.d && \
             mount --bind {e} /usr/share/polkit-1/rules.d && exec {polkitd} --no-debug",
            a = actions.path().display(),
            r = rules.path().display(),
            e = empty.path().display(),
            polkitd = polkitd.display(),
        );
        let child = Command::new(require("unshare", "util-linux"))
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start polkitd");
        let polkitd = Polkitd {
            child: Reaped(child),
            rules,
            _actions: actions,
            _empty: empty,
        };
        assert!(
            wait_until(START_TIMEOUT, || name_has_owner(
                &bus.address(),
                "org.freedesktop.PolicyKit1"
            )),
            "polkitd did not come up on the bus:\n{}",
            bus.log()
        );
        let _ = polkitd.child.0.id();
        polkitd
    }
}

/// With polkitd on the bus, Switch1 writes are authorized through the action
/// `org.ovsdbus.switch.modify`: the shipped rules grant group ovsdbus (as /etc/group says),
/// root is authorized, anyone else would have to authenticate; a rule that says no is
/// obeyed.
#[test]
fn polkit_authorizes_switch1_writes_when_polkitd_runs() {
    let bus = SystemBus::launch(
        "<include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>",
    );
    let polkitd = Polkitd::start(&bus);
    let (db, bus, mut relay) = relay_on(bus, None, "p1", &[], &[]);
    let address = bus.address();
    let set_vlan = |who: Who, tag: u32| {
        call_as(
            who,
            &address,
            RELAY_NAME,
            RELAY_PATH,
            "org.ovsdbus.Switch1.SetVlan",
            &["string:p1", &format!("uint32:{tag}")],
        )
    };
    let tag = || db.vsctl(&["get", "Port", "p1", "tag"]);

    let out = set_vlan(Who::OvsdbusUser, 5);
    assert!(
        out.status.success(),
        "{}",
        describe(Who::OvsdbusUser, "SetVlan", &out)
    );
    assert_eq!(tag(), "5");
    let out = set_vlan(Who::Root, 6);
    assert!(
        out.status.success(),
        "{}",
        describe(Who::Root, "SetVlan", &out)
    );
    assert_eq!(tag(), "6");
    // The bus lets a process with ovsdbus among its groups through, but polkit goes by
    // the user's groups: nobody is not a member, so it would have to authenticate.
    let out = set_vlan(Who::NobodyInOvsdbus, 7);
    assert!(
        text(&out.stderr).contains("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"),
        "{}",
        describe(Who::NobodyInOvsdbus, "SetVlan", &out)
    );
    assert_eq!(tag(), "6");

    // A local rule that refuses the test user: polkit reloads its rules, the relay obeys.
    fs::write(
        polkitd.rules.path().join("00-deny.rules"),
        "polkit.addRule(function(action, subject) {\n\
         if (action.id == \"org.ovsdbus.switch.modify\" && subject.user == \"_ovsdbus-test\") \
         { return polkit.Result.NO; }\n});\n",
    )
    .unwrap();
    let denied = wait_until(Duration::from_secs(10), || {
        text(&set_vlan(Who::OvsdbusUser, 8).stderr)
            .contains("org.freedesktop.DBus.Error.AccessDenied")
    });
    assert!(denied, "polkit's refusal was not obeyed:\n{}", relay.log());
    assert_eq!(tag(), "6");
    assert!(
        relay.log().contains("write by uid 0 pid"),
        "{}",
        relay.log()
    );
    assert!(relay.is_running());
}
