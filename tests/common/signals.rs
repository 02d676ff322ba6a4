//! A D-Bus subscriber for tests: collects the relay's typed signals in arrival order and
//! reads its properties, with bounded waits.

use std::collections::HashMap;
use std::time::Duration;
use tokio_stream::StreamExt;
use zbus::{Connection, MatchRule, MessageStream, OwnedVariant, message::Type as MessageType};

pub const BUS_NAME: &str = "org.ovsdbus.Relay1";
pub const ROOT: &str = "/org/ovsdbus/Relay1";
pub const IFACE: &str = "org.ovsdbus.Relay1";

pub type Dict = HashMap<String, OwnedVariant>;

/// One typed signal. `dicts` holds `columns`/`last` (one dict) or `changed` + `old` (two).
#[derive(Debug, Clone)]
pub struct Signal {
    pub member: String,
    pub name: String,
    pub bridge: String,
    pub uuid: String,
    pub dicts: Vec<Dict>,
    pub meta: Dict,
    /// For `Resynced`: added, changed, removed.
    pub counts: Option<(u64, u64, u64)>,
}

impl Signal {
    pub fn seq(&self) -> u64 {
        u64::try_from(&self.meta["seq"]).expect("seq is t")
    }

    pub fn meta_str(&self, key: &str) -> Option<String> {
        self.meta
            .get(key)
            .map(|v| String::try_from(v.clone()).expect("meta string"))
    }

    pub fn summary(&self) -> String {
        format!("{} {} {}", self.member, self.name, self.bridge)
    }
}

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
            let header = message.header();
            let member = header.member()?.to_string();
            let body = message.body();
            if member == "Resynced" {
                let (a, c, r, meta): (u64, u64, u64, Dict) =
                    body.deserialize().expect("Resynced body");
                return Some(Signal {
                    member,
                    name: String::new(),
                    bridge: String::new(),
                    uuid: String::new(),
                    dicts: vec![],
                    meta,
                    counts: Some((a, c, r)),
                });
            }
            let (name, bridge, uuid, dicts, meta) = if member.ends_with("Changed") {
                let (n, b, u, changed, old, meta): (String, String, String, Dict, Dict, Dict) =
                    body.deserialize().expect("Changed body");
                (n, b, u, vec![changed, old], meta)
            } else if member.ends_with("Added") || member.ends_with("Removed") {
                let (n, b, u, columns, meta): (String, String, String, Dict, Dict) =
                    body.deserialize().expect("Added/Removed body");
                (n, b, u, vec![columns], meta)
            } else {
                continue;
            };
            return Some(Signal {
                member,
                name,
                bridge,
                uuid,
                dicts,
                meta,
                counts: None,
            });
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

    /// Asserts that nothing else arrives within `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Some(extra) = self.next(quiet).await {
            panic!("unexpected signal {extra:#?}");
        }
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

    /// Waits (bounded) until the relay reports `State` = `ready`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let owned = zbus::fdo::DBusProxy::new(&self.conn)
                .await
                .expect("dbus proxy")
                .name_has_owner(BUS_NAME.try_into().expect("name"))
                .await
                .unwrap_or(false);
            if owned && self.property::<String>("State").await == "ready" {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay not ready within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Asserts the seq numbers are consecutive, starting at `first`.
pub fn assert_consecutive(signals: &[Signal], first: u64) {
    for (i, s) in signals.iter().enumerate() {
        assert_eq!(
            s.seq(),
            first + i as u64,
            "seq gap at {}: {}",
            i,
            s.summary()
        );
    }
}
