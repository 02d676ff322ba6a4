//! sd_notify end to end (issue 5): the relay binary started the way systemd starts a
//! `Type=notify` service with `WatchdogSec=` (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), with this
//! test listening on the notification socket in systemd's place.

use crate::common::signals::{BUS_NAME, Subscriber, relay_proxy};
use crate::common::{Bus, Ovsdb, Relay, poll_until_async};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

const WAIT: Duration = Duration::from_secs(15);

/// A bus, the socket systemd would listen on, and the relay on `db` and that bus started
/// as a `Type=notify` service: with `NOTIFY_SOCKET` and, from `watchdog`, the
/// `WATCHDOG_USEC` and `WATCHDOG_PID` values systemd would set. They are set on the child
/// only; on the test process they would leak into the tests running in parallel.
fn start_notified(
    db: &Ovsdb,
    watchdog: (Option<&str>, Option<&str>),
) -> (Bus, NotifySocket, Relay) {
    let bus = Bus::start();
    let notify = NotifySocket::bind();
    let mut cmd = Relay::run_command(&db.remote(), &bus.address(), &[]);
    cmd.env("NOTIFY_SOCKET", &notify.path);
    // Whatever the test process inherited (it may itself run under systemd) must not
    // reach the child; only what the test sets.
    for (key, value) in [("WATCHDOG_USEC", watchdog.0), ("WATCHDOG_PID", watchdog.1)] {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let relay = Relay::spawn_command(cmd);
    (bus, notify, relay)
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

async fn bridge_names(sub: &Subscriber) -> Vec<String> {
    let bridges: Vec<(String, String, zbus::OwnedObjectPath)> = relay_proxy(&sub.conn)
        .await
        .call("ListBridges", &())
        .await
        .expect("ListBridges");
    bridges.into_iter().map(|(name, _, _)| name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_only_once_the_snapshot_is_loaded() {
    let mut db = Ovsdb::start();
    db.vsctl(&["add-br", "br0"]);
    // With OVSDB down the relay can start everything but the snapshot: READY=1 must wait.
    db.kill();
    // A watchdog meant for another process (WATCHDOG_PID) is not ours to serve.
    let (bus, mut notify, mut relay) = start_notified(&db, (Some("400000"), Some("1")));
    let sub = Subscriber::connect(&bus.address()).await;

    // Give the relay every chance to send READY=1 too early: let it get as far as it can
    // (today it owns its name before connecting to OVSDB), then watch a while longer.
    let on_bus = poll_until_async(
        Duration::from_secs(3),
        Duration::from_millis(50),
        || async {
            if sub.relay_on_bus().await {
                Ok(())
            } else {
                Err(())
            }
        },
    )
    .await;
    if on_bus.is_ok() {
        let state: String = sub.property("State").await;
        assert_ne!(state, "ready", "ready without an OVSDB server");
    }
    let early = notify.collect(Duration::from_secs(1)).await;
    assert!(
        !early.iter().any(|m| has(m, "READY=1")),
        "READY=1 before the snapshot: {early:#?}"
    );
    assert!(
        relay.is_running(),
        "relay exited while OVSDB was down:\n{}",
        relay.log()
    );

    db.restart();
    let ready = notify.wait_for("READY=1", WAIT).await;
    // At the moment READY=1 arrives, the replica is complete and served on the bus.
    assert!(sub.relay_on_bus().await, "READY=1 before owning {BUS_NAME}");
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
    // WatchdogSec=400ms: systemd expects a ping at least every 400 ms; the relay pings at
    // half that. (No WATCHDOG_PID, which sd_watchdog_enabled(3) accepts as "ours".)
    let (_bus, mut notify, mut relay) = start_notified(&db, (Some("400000"), None));
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
    relay.signal("TERM");
    let status = relay.wait_status(Duration::from_secs(1));
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
