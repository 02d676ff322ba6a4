//! Start-up failures exit 2 with one line naming what failed; never a panic or backtrace.

use crate::common::signals::{CallMonitor, Subscriber, relay_proxy};
use crate::common::{Bus, Ovsdb, Relay, Stack, relay_command, run_bounded, short_tempdir};
use std::time::Duration;
use zbus::OwnedObjectPath;

const EXIT_WAIT: Duration = Duration::from_secs(15);

/// Runs the relay ([`Relay::spawn`]) to completion and returns its exit code and output.
fn failing_run(db: &str, bus: &str, extra: &[&str]) -> (i32, String) {
    let mut relay = Relay::spawn(db, bus, extra);
    let code = relay.wait_exit(EXIT_WAIT).expect("relay did not exit");
    (code, relay.log())
}

fn assert_one_line_error(log: &str, needle: &str) {
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("ovs-dbus-relay: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected:\n{log}");
    assert!(
        errors[0].contains(needle),
        "error should name {needle:?}:\n{log}"
    );
    assert!(
        !log.contains("panicked") && !log.contains("RUST_BACKTRACE"),
        "{log}"
    );
}

#[test]
fn bad_remote_syntax_exits_2() {
    let bus = Bus::start();
    for db in ["tcp:localhost", "http://x", "unix:"] {
        let (code, log) = failing_run(db, &bus.address(), &[]);
        assert_eq!(code, 2, "{log}");
        assert_one_line_error(&log, "--db");
    }
}

#[test]
fn bad_bus_argument_and_unreachable_bus_exit_2() {
    let db = Ovsdb::start();
    let (code, log) = failing_run(&db.remote(), "sytem", &[]);
    assert_eq!(code, 2);
    assert_one_line_error(&log, "--bus");

    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("unix:path={}/no-bus.sock", dir.path().display());
    let (code, log) = failing_run(&db.remote(), &nowhere, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(&log, "cannot connect to the bus");
}

#[test]
fn unreachable_server_exits_2_after_connect_timeout() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("unix:{}/nothing.sock", dir.path().display());
    let started = std::time::Instant::now();
    let (code, log) = failing_run(&db, &bus.address(), &["--connect-timeout", "1"]);
    assert_eq!(code, 2, "{log}");
    assert_one_line_error(&log, "cannot reach OVSDB");
    assert!(log.contains("nothing.sock"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn database_without_open_vswitch_schema_exits_2() {
    crate::common::require("ovsdb-tool", "openvswitch-common");
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("other.ovsschema");
    std::fs::write(
        &schema,
        r#"{"name": "Other", "version": "1.0.0", "tables": {"T": {"columns": {"a": {"type": "integer"}}}}}"#,
    )
    .unwrap();
    let db_file = dir.path().join("other.db");
    let status = std::process::Command::new("ovsdb-tool")
        .args([
            "create",
            db_file.to_str().unwrap(),
            schema.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let sock = dir.path().join("other.sock");
    let mut server =
        std::process::Command::new(crate::common::require("ovsdb-server", "openvswitch-switch"))
            .arg(&db_file)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--unixctl={}/other.ctl", dir.path().display()))
            .arg("--no-chdir")
            .env("OVS_RUNDIR", dir.path())
            .env("OVS_LOGDIR", dir.path())
            .env("OVS_DBDIR", dir.path())
            .spawn()
            .unwrap();
    assert!(crate::common::wait_until(Duration::from_secs(10), || sock.exists()));
    let bus = Bus::start();
    let remote = format!("unix:{}", sock.display());
    let (code, log) = failing_run(&remote, &bus.address(), &[]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(code, 2, "{log}");
    assert_one_line_error(&log, "Open_vSwitch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_cannot_take_the_name() {
    let stack = Stack::start(&[]).await;
    let (db, bus, sub) = (&stack.db, &stack.bus, &stack.sub);

    let (code, log) = failing_run(&db.remote(), &bus.address(), &[]);
    assert_eq!(code, 2, "{log}");
    assert_one_line_error(&log, "already owned");
    // The first instance keeps its name and keeps answering.
    assert_eq!(sub.property::<String>("State").await, "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_server_that_appears_later() {
    let mut db = Ovsdb::start();
    db.kill();
    let bus = Bus::start();
    let mut relay = Relay::spawn(&db.remote(), &bus.address(), &["--connect-timeout", "30"]);
    let sub = Subscriber::connect(&bus.address()).await;
    sub.wait_relay_on_bus(Duration::from_secs(10)).await;
    // It has failed to connect, and tried again, and still waits.
    assert!(
        relay.wait_log_count("OVSDB connection ended", 2, Duration::from_secs(10)),
        "the relay did not retry the server:\n{}",
        relay.log()
    );
    assert_eq!(sub.property::<String>("State").await, "connecting");
    assert!(relay.is_running());
    // Not a warning per attempt: the 1st, 2nd, 4th, … of a streak, the rest at debug.
    assert!(
        relay.wait_log_count("OVSDB connect failed again", 2, Duration::from_secs(15)),
        "{}",
        relay.log()
    );
    let log = relay.log();
    let warned = log.matches("OVSDB connection ended").count();
    let attempts = warned + log.matches("OVSDB connect failed again").count();
    assert!(
        warned <= 1 + attempts.ilog2() as usize,
        "{warned} warnings for {attempts} attempts:\n{log}"
    );
    db.restart();
    sub.wait_ready(Duration::from_secs(15)).await;
}

/// Under systemd (stderr is `JOURNAL_STREAM`) every line carries its syslog priority and
/// no colour or timestamp; written to a file, plain lines with timestamps. The version and
/// settings are logged first; SIGHUP is logged and changes nothing.
#[test]
fn logs_suit_the_journal_and_plain_files() {
    let db = Ovsdb::start();
    let bus = Bus::start();
    for journal in [true, false] {
        let cmd = Relay::run_command(&db.remote(), &bus.address(), &[]);
        let mut relay = if journal {
            Relay::spawn_journal(cmd)
        } else {
            Relay::spawn_command(cmd)
        };
        assert!(
            relay.wait_log("state changed", EXIT_WAIT),
            "{}",
            relay.log()
        );
        relay.signal("HUP");
        assert!(
            relay.wait_log("SIGHUP ignored", EXIT_WAIT),
            "{}",
            relay.log()
        );
        assert!(
            relay.is_running(),
            "SIGHUP ended the relay:\n{}",
            relay.log()
        );
        let log = relay.log();
        assert!(
            !log.contains('\x1b'),
            "colour escapes in a log file:\n{log}"
        );
        let start = log
            .lines()
            .find(|l| l.contains("starting ovs-dbus-relay"))
            .unwrap_or_else(|| panic!("no start line:\n{log}"));
        assert!(start.contains(env!("CARGO_PKG_VERSION")), "{start}");
        assert!(start.contains(&db.remote()), "{start}");
        for line in log.lines().filter(|l| !l.is_empty()) {
            let prefixed = line.len() > 3
                && line.starts_with('<')
                && line.as_bytes()[1].is_ascii_digit()
                && line.as_bytes()[2] == b'>';
            assert_eq!(prefixed, journal, "journal={journal}: {line}");
        }
        if journal {
            assert!(start.starts_with("<6>ovs_dbus_relay::daemon: "), "{start}");
        } else {
            assert!(start.starts_with("20"), "a timestamp first: {start}");
        }
    }
}

/// A call that arrives before the first snapshot (the relay was just started, e.g. by bus
/// activation) waits for it and then answers, instead of failing with `NotConnected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_the_first_snapshot_wait_for_it() {
    let mut db = Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    db.kill();
    let bus = Bus::start();
    let relay = Relay::spawn(&db.remote(), &bus.address(), &[]);
    let sub = Subscriber::connect(&bus.address()).await;
    sub.wait_relay_on_bus(Duration::from_secs(10)).await;
    let mut calls = CallMonitor::start(&bus.address(), "ListBridges").await;
    let listing = {
        let conn = sub.conn.clone();
        tokio::spawn(async move {
            relay_proxy(&conn)
                .await
                .call::<_, _, Vec<(String, String, OwnedObjectPath)>>("ListBridges", &())
                .await
        })
    };
    calls.wait_calls(1, Duration::from_secs(10)).await;
    assert!(!listing.is_finished(), "answered before the first snapshot");
    // The root's properties do not wait: `State` tells how far the relay has got.
    let state = tokio::time::timeout(Duration::from_secs(2), sub.property::<String>("State"))
        .await
        .expect("State answered at once");
    assert_eq!(state, "connecting");
    db.restart();
    let bridges = listing
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", relay.log()));
    assert_eq!(bridges.len(), 1);
    assert_eq!(bridges[0].0, "br0");
}

/// Boolean variables take the spellings unit files and `/etc/default` use (`1`, `yes`,
/// `on`, …), and `run --version` answers like `--version`.
#[test]
fn boolean_variables_take_the_usual_spellings_and_run_knows_its_version() {
    for value in ["1", "yes", "on", "true", "0", "no", "off", "false"] {
        let out = run_bounded(
            relay_command(&["run", "--db", "bogus"])
                .env("OVS_DBUS_RELAY_NO_WAIT", value)
                .env("OVS_DBUS_RELAY_OPENQA_COMPAT", value),
            EXIT_WAIT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Both variables parsed: what fails is the --db value, named in one line.
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains("--db") && !stderr.contains("invalid value"),
            "{value}: {stderr}"
        );
    }
    let out = run_bounded(&mut relay_command(&["run", "--version"]), EXIT_WAIT);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{out:?}"
    );
}

/// `--max-message-size` takes bytes, or a number with K, M or G; zero, nonsense and sizes
/// too small for any server are refused by name before anything is started.
#[test]
fn max_message_size_takes_bytes_or_a_suffix() {
    let run = |size: &str| {
        // A timeout that is not one fails after the size is checked, without any network.
        let args = ["run", "--db", "unix:/nonexistent", "--vswitchd-timeout=-1"];
        let out = run_bounded(
            relay_command(&args).arg(format!("--max-message-size={size}")),
            EXIT_WAIT,
        );
        assert_eq!(out.status.code(), Some(2), "{size}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for size in [
        "0",
        "1000",
        "1023K",
        "12X",
        "-1",
        "1.5G",
        "",
        "99999999999G",
    ] {
        let stderr = run(size);
        assert!(stderr.contains("--max-message-size"), "{size}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{size}: {stderr}");
    }
    for size in ["1M", "1048576", "64m", "2G", "4096k"] {
        let stderr = run(size);
        assert!(stderr.contains("--vswitchd-timeout"), "{size}: {stderr}");
    }
}

/// A remote that accepts connections but never answers (hung, SIGSTOPped) is left for the
/// next one after twice the inactivity probe, at start-up too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_never_answers_is_left_for_the_next() {
    let dir = short_tempdir("mute-ovsdb-");
    let sock = dir.path().join("db.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    // Accepts and holds every connection; reads nothing, writes nothing.
    let mute = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let db = Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    let bus = Bus::start();
    let remotes = format!("unix:{},{}", sock.display(), db.remote());
    let relay = Relay::spawn(&remotes, &bus.address(), &["--inactivity-probe", "1"]);
    let sub = Subscriber::connect(&bus.address()).await;
    sub.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(sub.property::<String>("Remote").await, db.remote());
    assert!(
        relay
            .log()
            .contains("no answer to the schema and monitor requests within 2s"),
        "{}",
        relay.log()
    );
    mute.abort();
}

/// Bus activation: a private bus whose `<servicedir>` starts the relay on a call to its
/// name (as the system bus does, through systemd). The relay owns its name before it has
/// read OVSDB, yet the very first call of each kind — the one that started it — gets its
/// answer, not `NotConnected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_that_activates_the_relay_is_answered() {
    use std::collections::HashMap;
    use zbus::OwnedVariant;
    const NAME: &str = "org.ovsdbus.Relay1";
    for kind in [
        "ListBridges",
        "GetRow",
        "WaitFor",
        "AddBridge",
        "show",
        "wait",
    ] {
        let db = Ovsdb::start();
        db.vsctl(&["add-br", "br0"]);
        let services = short_tempdir("activation-");
        let pidfile = services.path().join("relay.pid");
        let log = services.path().join("relay.log");
        // dbus-daemon passes its address in DBUS_STARTER_ADDRESS; the script records the
        // pid (exec keeps it) so that the test can stop the relay.
        let script = services.path().join("start-relay");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho $$ > {pid}\nexec {bin} run --bus \"$DBUS_STARTER_ADDRESS\" \
                 --db {db} --metrics-listen off --no-wait >{log} 2>&1\n",
                pid = pidfile.display(),
                bin = crate::common::relay_bin(),
                db = db.remote(),
                log = log.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            services.path().join("org.ovsdbus.Relay1.service"),
            format!("[D-BUS Service]\nName={NAME}\nExec={}\n", script.display()),
        )
        .unwrap();
        let bus = Bus::start_with_config(&format!(
            "<servicedir>{}</servicedir>",
            services.path().display()
        ));
        let address = bus.address();
        let conn = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .unwrap();
        type Options = HashMap<String, OwnedVariant>;
        let answered: Result<(), String> = match kind {
            "ListBridges" => root_call(&conn, "org.ovsdbus.Relay1", "ListBridges", &()).await,
            "GetRow" => root_call(&conn, "org.ovsdbus.Relay1", "GetRow", &("Bridge", "br0")).await,
            "WaitFor" => {
                let body = ("Bridge", "br0", Vec::<String>::new(), 10_000u32);
                root_call(&conn, "org.ovsdbus.Relay1", "WaitFor", &body).await
            }
            "AddBridge" => {
                let body = ("br1", Options::new());
                root_call(&conn, "org.ovsdbus.Switch1", "AddBridge", &body).await
            }
            cli => {
                let args: Vec<&str> = match cli {
                    "show" => vec!["show", "--bus", &address],
                    _ => vec![
                        "wait",
                        "--bus",
                        &address,
                        "Bridge",
                        "br0",
                        "--timeout",
                        "10",
                    ],
                };
                let out = run_bounded(&mut relay_command(&args), Duration::from_secs(30));
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            }
        };
        let relay_log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(answered.is_ok(), "{kind}: {answered:?}\n{relay_log}");
        if kind == "AddBridge" {
            assert_eq!(db.vsctl(&["br-exists", "br1"]), "");
        }
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            crate::common::send_signal(pid.trim().parse().unwrap(), "TERM");
            let gone = crate::common::wait_until(Duration::from_secs(5), || {
                !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
            });
            assert!(gone, "{kind}: the activated relay did not stop");
        }
    }
}

/// A call to the relay's root object (starting it, when nobody owns the name).
async fn root_call<B>(
    conn: &zbus::Connection,
    interface: &str,
    member: &str,
    body: &B,
) -> Result<(), String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(
        Some("org.ovsdbus.Relay1"),
        "/org/ovsdbus/Relay1",
        Some(interface),
        member,
        body,
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}
