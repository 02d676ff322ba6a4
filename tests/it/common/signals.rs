//! A D-Bus subscriber for tests: collects the relay's typed signals in arrival order and
//! reads its properties, with bounded waits; and what tests need to call the relay.

use super::Ovsdb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_stream::StreamExt;
use zbus::{
    Connection, MatchRule, Message, MessageStream, OwnedVariant, Proxy,
    message::Type as MessageType,
};

pub const BUS_NAME: &str = "org.ovsdbus.Relay1";
pub const ROOT: &str = "/org/ovsdbus/Relay1";
pub const IFACE: &str = "org.ovsdbus.Relay1";

pub use ovs_dbus_relay::client::{Dict, ManagedObjects as Managed, Signal};

pub struct Subscriber {
    pub conn: Connection,
    stream: MessageStream,
}

impl Subscriber {
    /// Subscribes before returning, so no signal emitted afterwards is missed.
    pub async fn connect(address: &str) -> Subscriber {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .expect("connect test subscriber");
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(IFACE)
            .build()
            .expect("match rule");
        let stream =
            MessageStream::for_match_rule(rule, &conn, std::num::NonZeroUsize::new(100_000))
                .await
                .expect("add match rule");
        Subscriber { conn, stream }
    }

    /// The next typed signal (or `Resynced`), or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Signal> {
        loop {
            let message = tokio::time::timeout(timeout, self.stream.next())
                .await
                .ok()??;
            let message = message.expect("message");
            match Signal::from_message(&message) {
                Ok(Some(signal)) => return Some(signal),
                Ok(None) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Exactly `n` signals, failing the test with what arrived if they do not come in time.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<Signal> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(signal) => got.push(signal),
                None => panic!(
                    "expected {n} signals, got {}: {:#?}",
                    got.len(),
                    got.iter().map(Signal::summary).collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    pub async fn property<T>(&self, name: &str) -> T
    where
        T: TryFrom<OwnedVariant>,
        T::Error: std::fmt::Debug,
    {
        let proxy = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination(BUS_NAME)
            .path(ROOT)
            .build()
            .await
            .expect("properties proxy");
        let iface = zbus::names::InterfaceName::try_from(IFACE).expect("interface name");
        let value = proxy.get(iface, name).await.expect("get property");
        T::try_from(value).expect("property type")
    }

    /// Whether the relay owns its name on the bus (`false` if the bus cannot say).
    pub async fn relay_on_bus(&self) -> bool {
        zbus::fdo::DBusProxy::new(&self.conn)
            .await
            .expect("dbus proxy")
            .name_has_owner(BUS_NAME.try_into().expect("name"))
            .await
            .unwrap_or(false)
    }

    /// Waits (bounded) until the relay owns its name, whatever its `State`.
    pub async fn wait_relay_on_bus(&self, timeout: Duration) {
        assert!(
            super::wait_until_async(timeout, || self.relay_on_bus()).await,
            "relay never took its name {BUS_NAME} within {timeout:?}"
        );
    }

    /// Waits (bounded) until the relay reports `State` = `ready`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let ready = super::poll_until_async(timeout, Duration::from_millis(50), || async {
            let owned = self.relay_on_bus().await;
            if owned && self.property::<String>("State").await == "ready" {
                Ok(())
            } else {
                Err(())
            }
        })
        .await;
        assert!(ready.is_ok(), "relay not ready within {timeout:?}");
    }
}

/// The next message on `stream` within what is left until `deadline`; panics naming `what`
/// the test was waiting for if none comes in time or the stream ends.
async fn next_message(
    stream: &mut MessageStream,
    deadline: tokio::time::Instant,
    what: impl FnOnce() -> String,
) -> Message {
    match tokio::time::timeout_at(deadline, stream.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(Some(Err(e))) => panic!("{}: bus error {e}", what()),
        Ok(None) => panic!("{}: the bus connection closed", what()),
        Err(_) => panic!("{}: timed out", what()),
    }
}

/// A harmless change that fences off everything published before it: `external_ids:
/// test-barrier=<n>` on one Bridge, Port or Interface row. The relay publishes strictly in
/// order from a single publisher and the bus keeps a sender's order, so once the barrier's
/// typed `…Changed` signal has arrived, every signal published before it has arrived too:
/// a test asserts that something did *not* happen by looking at what came before it.
pub struct Barrier {
    /// `BridgeChanged`, `PortChanged`, `InterfaceChanged`.
    member: String,
    name: String,
    mark: String,
}

impl Barrier {
    /// Makes the change on the row of `table` (`bridge`, `port`, `interface`) named `name`.
    pub fn make(db: &Ovsdb, table: &str, name: &str) -> Barrier {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mark = NEXT.fetch_add(1, Ordering::Relaxed).to_string();
        db.vsctl(&[
            "set",
            table,
            name,
            &format!("external_ids:test-barrier={mark}"),
        ]);
        let mut table = table.to_ascii_lowercase();
        table[..1].make_ascii_uppercase();
        Barrier {
            member: format!("{table}Changed"),
            name: name.to_owned(),
            mark,
        }
    }

    /// The barrier's typed signal's member (`PortChanged`, …).
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Whether `signal` is this barrier's own.
    pub fn is(&self, signal: &Signal) -> bool {
        signal.member == self.member
            && signal.name == self.name
            && signal.dicts[0].get("external_ids").is_some_and(|ids| {
                HashMap::<String, String>::try_from(ids.try_clone().expect("external_ids"))
                    .is_ok_and(|ids| ids.get("test-barrier") == Some(&self.mark))
            })
    }

    /// Every message on `stream` before the barrier's signal (which is consumed); `stream`
    /// must let the typed signals through. Panics after `timeout` with what arrived.
    pub async fn messages_before(
        &self,
        stream: &mut MessageStream,
        timeout: Duration,
    ) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let message = next_message(stream, deadline, || {
                format!(
                    "barrier {} {} (mark {}) not seen within {timeout:?} after {} messages",
                    self.member,
                    self.name,
                    self.mark,
                    before.len()
                )
            })
            .await;
            if let Ok(Some(signal)) = Signal::from_message(&message)
                && self.is(&signal)
            {
                return before;
            }
            before.push(message);
        }
    }
}

/// A monitor connection (`BecomeMonitor`) that counts the calls of one
/// `org.ovsdbus.Relay1` method the bus has delivered to the relay, so that a test can wait
/// until a client's `WaitFor` has reached the relay instead of sleeping. Start it before
/// the client.
pub struct CallMonitor {
    stream: MessageStream,
    member: String,
    seen: usize,
}

impl CallMonitor {
    pub async fn start(address: &str, member: &str) -> CallMonitor {
        let conn = zbus::connection::Builder::address(address)
            .max_queued(std::num::NonZeroUsize::new(4096).expect("non-zero"))
            .build()
            .await
            .expect("connect call monitor");
        // Subscribed before the bus turns the connection into a monitor: nothing is missed.
        let stream = MessageStream::from(&conn);
        let rule = MatchRule::builder()
            .msg_type(MessageType::MethodCall)
            .interface(IFACE)
            .member(member)
            .build()
            .expect("match rule");
        zbus::fdo::MonitoringProxy::new(&conn)
            .await
            .expect("monitoring proxy")
            .become_monitor(&[rule], 0)
            .await
            .expect("BecomeMonitor");
        CallMonitor {
            stream,
            member: member.to_owned(),
            seen: 0,
        }
    }

    /// [`CallMonitor::wait_calls`] as a future of its own, e.g. for
    /// [`Ovsdb::vsctl_after`](super::Ovsdb::vsctl_after).
    pub async fn reached(mut self, count: usize, timeout: Duration) {
        self.wait_calls(count, timeout).await
    }

    /// Waits until `count` calls in all have reached the relay since [`CallMonitor::start`];
    /// panics after `timeout`.
    pub async fn wait_calls(&mut self, count: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.seen < count {
            let message = next_message(&mut self.stream, deadline, || {
                format!(
                    "only {} of {count} {} calls reached the relay within {timeout:?}",
                    self.seen, self.member
                )
            })
            .await;
            let header = message.header();
            if header.message_type() == MessageType::MethodCall
                && header.member().is_some_and(|m| m.as_str() == self.member)
            {
                self.seen += 1;
            }
        }
    }
}

/// Asserts the seq numbers are consecutive, starting at `first`.
pub fn assert_consecutive(signals: &[Signal], first: u64) {
    for (i, s) in signals.iter().enumerate() {
        assert_eq!(
            s.seq().expect("meta.seq"),
            first + i as u64,
            "seq gap at {}: {}",
            i,
            s.summary()
        );
    }
}

/// `org.ovsdbus.Relay1` on the relay's root object.
pub async fn relay_proxy(conn: &Connection) -> Proxy<'static> {
    Proxy::new(conn, BUS_NAME, ROOT, IFACE)
        .await
        .expect("relay proxy")
}

/// The relay's `org.freedesktop.DBus.ObjectManager.GetManagedObjects`.
pub async fn managed_objects(conn: &Connection) -> zbus::Result<Managed> {
    Proxy::new(conn, BUS_NAME, ROOT, "org.freedesktop.DBus.ObjectManager")
        .await?
        .call("GetManagedObjects", &())
        .await
}

/// The name and text of a D-Bus error reply; panics on success.
pub fn error_of<T: std::fmt::Debug>(result: zbus::Result<T>) -> (String, String) {
    match result {
        Err(zbus::Error::MethodError(name, text, _)) => {
            (name.to_string(), text.unwrap_or_default())
        }
        Err(zbus::Error::FDO(e)) => (
            zbus::DBusError::name(&*e).to_string(),
            zbus::DBusError::description(&*e)
                .unwrap_or_default()
                .to_string(),
        ),
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

/// The name of a D-Bus error reply; panics on success.
pub fn error_name<T: std::fmt::Debug>(result: zbus::Result<T>) -> String {
    error_of(result).0
}

/// `Introspect` of `path` at `destination`.
pub async fn introspect_at(conn: &Connection, destination: &str, path: &str) -> String {
    zbus::fdo::IntrospectableProxy::builder(conn)
        .destination(destination)
        .path(path)
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap()
}
