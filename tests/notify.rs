//! sd_notify end to end (issue 5): the relay binary started the way systemd starts a
//! `Type=notify` service with `WatchdogSec=` (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), with this
//! test listening on the notification socket in systemd's place.

mod common;

use common::signals::{BUS_NAME, IFACE, ROOT, Subscriber};
use common::{Bus, Ovsdb, relay_bin, send_signal};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

const WAIT: Duration = Duration::from_secs(15);

/// The relay as a `Type=notify` child. `common::Relay` cannot be used: it has no way to
/// add variables to the child's environment, and setting them on the test process would
/// leak into the tests running in parallel.
struct NotifiedRelay {
    child: Child,
    dir: tempfile::TempDir,
}

impl NotifiedRelay {
    /// `watchdog`: the `WATCHDOG_USEC` and `WATCHDOG_PID` values systemd would set.
    fn spawn(
        db: &str,
        bus: &str,
        notify_socket: &Path,
        watchdog: (Option<&str>, Option<&str>),
    ) -> NotifiedRelay {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = File::create(dir.path().join("relay.log")).expect("relay log");
        let mut cmd = Command::new(relay_bin());
        cmd.args(["run", "--db", db, "--bus", bus, "--metrics-listen", "off"])
            .env("RUST_LOG", "ovs_dbus_relay=debug")
            .env("NOTIFY_SOCKET", notify_socket)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        // Whatever the test process inherited (it may itself run under systemd) must not
        // reach the child; only what the test sets.
        for (key, value) in [("WATCHDOG_USEC", watchdog.0), ("WATCHDOG_PID", watchdog.1)] {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OVS_DBUS_RELAY_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", relay_bin()));
        NotifiedRelay { child, dir }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// Polls for the exit status until `timeout`; `None` if still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }
}

impl Drop for NotifiedRelay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "----- ovs-dbus-relay log -----\n{}\n----- end of relay log -----",
                self.log()
            );
        }
    }
}

/// The socket systemd would listen on, with every message received so far.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        // /tmp keeps the path well below the 108-byte limit of socket addresses.
        let dir = tempfile::Builder::new()
            .prefix("notify-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            socket,
            path,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// The next message, or `None` after `timeout`.
    async fn next(&mut self, timeout: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(timeout, self.socket.recv(&mut buf))
            .await
            .ok()?
            .expect("recv on notify socket");
        let message = String::from_utf8(buf[..n].to_vec()).expect("utf-8 notification");
        self.seen.push(message.clone());
        Some(message)
    }

    /// Every message arriving within `window`.
    async fn collect(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(message) = self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            got.push(message);
        }
        got
    }

    /// Waits for the first message with the assignment `line` (e.g. `READY=1`).
    async fn wait_for(&mut self, line: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(message) if has(&message, line) => return message,
                Some(_) => {}
                None => panic!("no {line} within {timeout:?}; received: {:#?}", self.seen),
            }
        }
    }
}

/// Whether a notification holds the assignment `line` (messages are newline-separated).
fn has(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

async fn name_owned(sub: &Subscriber) -> bool {
    zbus::fdo::DBusProxy::new(&sub.conn)
        .await
        .expect("dbus proxy")
        .name_has_owner(BUS_NAME.try_into().expect("bus name"))
        .await
        .unwrap_or(false)
}

async fn bridge_names(sub: &Subscriber) -> Vec<String> {
    let reply = sub
        .conn
        .call_method(Some(BUS_NAME), ROOT, Some(IFACE), "ListBridges", &())
        .await
        .expect("ListBridges");
    let bridges: Vec<(String, String, zbus::OwnedObjectPath)> =
        reply.body().deserialize().expect("a(sso)");
    bridges.into_iter().map(|(name, _, _)| name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_only_once_the_snapshot_is_loaded() {
    let mut db = Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    // With OVSDB down the relay can start everything but the snapshot: READY=1 must wait.
    db.kill();
    let bus = Bus::start();
    let mut notify = NotifySocket::bind();
    // A watchdog meant for another process (WATCHDOG_PID) is not ours to serve.
    let mut relay = NotifiedRelay::spawn(
        &db.remote(),
        &bus.address(),
        &notify.path,
        (Some("400000"), Some("1")),
    );
    let sub = Subscriber::connect(&bus.address()).await;

    // Give the relay every chance to send READY=1 too early: let it get as far as it can
    // (today it owns its name before connecting to OVSDB), then watch a while longer.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !name_owned(&sub).await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if name_owned(&sub).await {
        let state: String = sub.property("State").await;
        assert_ne!(state, "ready", "ready without an OVSDB server");
    }
    let early = notify.collect(Duration::from_secs(1)).await;
    assert!(
        !early.iter().any(|m| has(m, "READY=1")),
        "READY=1 before the snapshot: {early:#?}"
    );
    assert!(
        relay.child.try_wait().ok().flatten().is_none(),
        "relay exited while OVSDB was down:\n{}",
        relay.log()
    );

    db.restart();
    let ready = notify.wait_for("READY=1", WAIT).await;
    // At the moment READY=1 arrives, the replica is complete and served on the bus.
    assert!(name_owned(&sub).await, "READY=1 before owning {BUS_NAME}");
    let state: String = sub.property("State").await;
    assert_eq!(state, "ready", "State when READY=1 arrived");
    assert_eq!(bridge_names(&sub).await, vec!["br0".to_owned()]);
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=")),
        "READY=1 should carry a STATUS= line: {ready:?}"
    );

    // Three of the would-be 200 ms ping intervals, on top of the time since start.
    notify.collect(Duration::from_millis(600)).await;
    assert!(
        !notify.seen.iter().any(|m| has(m, "WATCHDOG=1")),
        "WATCHDOG_PID names another process, yet the relay pinged: {:#?}",
        notify.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_and_sigterm_sends_stopping() {
    let db = Ovsdb::start();
    let bus = Bus::start();
    let mut notify = NotifySocket::bind();
    // WatchdogSec=400ms: systemd expects a ping at least every 400 ms; the relay pings at
    // half that. (No WATCHDOG_PID, which sd_watchdog_enabled(3) accepts as "ours".)
    let mut relay = NotifiedRelay::spawn(
        &db.remote(),
        &bus.address(),
        &notify.path,
        (Some("400000"), None),
    );
    notify.wait_for("READY=1", WAIT).await;

    let window = notify.collect(Duration::from_millis(1500)).await;
    let pings = window.iter().filter(|m| has(m, "WATCHDOG=1")).count();
    // Every 200 ms makes about 7; 3 leaves room for a loaded machine while still failing
    // a relay that pings at the full interval or not at all.
    assert!(
        pings >= 3,
        "{pings} WATCHDOG=1 in 1.5 s with WATCHDOG_USEC=400000: {window:#?}"
    );

    let sent = Instant::now();
    send_signal(relay.child.id(), "TERM");
    let status = relay.wait_exit(Duration::from_secs(1));
    let took = sent.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("relay still running 1 s after SIGTERM:\n{}", relay.log()));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM ({took:?})");
    // Datagrams stay queued on the socket after the sender exits.
    notify.collect(Duration::from_millis(200)).await;
    assert!(
        notify.seen.iter().any(|m| has(m, "STOPPING=1")),
        "no STOPPING=1 on SIGTERM: {:#?}",
        notify.seen
    );
}
