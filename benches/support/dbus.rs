//! The D-Bus side: the relay-path subscriber process (`relay --subscriber ADDRESS`) and
//! the orchestrator's own connection for properties and method calls.

use super::events::EventSink;
use super::now_usec;
use ovs_dbus_relay::client::{Signal, What};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant};

pub const BUS_NAME: &str = "org.ovsdbus.Relay1";
pub const ROOT: &str = "/org/ovsdbus/Relay1";
pub const IFACE: &str = "org.ovsdbus.Relay1";

type Dict = HashMap<String, OwnedVariant>;

/// Large enough that zbus never has to hold back a burst of 10,000 signals; what is
/// measured is the relay and the bus daemon, not this queue.
const STREAM_QUEUE: usize = 200_000;

async fn signal_stream(conn: &Connection, rule: MatchRule<'_>) -> zbus::Result<MessageStream> {
    let queue = NonZeroUsize::new(STREAM_QUEUE).expect("non-zero");
    MessageStream::for_match_rule(rule, conn, Some(queue)).await
}

/// Prints one event line per typed signal. Each signal is decoded in full, as any real
/// subscriber has to, so its cost is part of the path just as JSON decoding is part of
/// the baseline.
pub fn subscriber_main(address: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(|e| format!("connect to {address}: {e}"))?;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(IFACE)
            .path(ROOT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut stream = signal_stream(&conn, rule)
            .await
            .map_err(|e| format!("AddMatch: {e}"))?;
        let mut sink = EventSink::default();
        sink.ready(now_usec(), 0);
        loop {
            // Flush only when nothing else is queued: one write per burst instead of one
            // per signal, without delaying the line of a lone signal.
            let message = tokio::select! {
                biased;
                message = stream.next() => message,
                () = std::future::ready(()) => {
                    sink.flush();
                    stream.next().await
                }
            };
            let Some(Ok(message)) = message else { break };
            let at = now_usec();
            let signal = match Signal::from_message(&message) {
                Ok(Some(signal)) => signal,
                Ok(None) => continue,
                Err(e) => return Err(e),
            };
            let seq = signal.seq().unwrap_or(0);
            let coalesced = signal
                .meta
                .get("coalesced")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0);
            match signal.what {
                What::Row { .. } => sink.event(at, seq, coalesced, &signal.member, &signal.name),
                What::Resynced { .. } => sink.resync(at, seq),
            }
        }
        sink.flush();
        Ok(())
    })
}

pub struct ManagedObjects {
    pub elapsed: Duration,
    pub objects: usize,
    /// Size of the reply message.
    pub bytes: usize,
}

/// The orchestrator's connection: relay state, `LastSeq`, `GetManagedObjects`.
pub struct Observer {
    pub conn: Connection,
    /// When a `PropertiesChanged` with `State=ready` arrived; cleared by [`Self::reset`].
    ready_at: Arc<Mutex<Option<u64>>>,
}

impl Observer {
    pub async fn connect(address: &str) -> zbus::Result<Observer> {
        let conn = zbus::connection::Builder::address(address).build().await?;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path(ROOT)
            .build()?;
        let mut stream = signal_stream(&conn, rule).await?;
        let ready_at = Arc::new(Mutex::new(None));
        let seen = ready_at.clone();
        // A signal beats polling for the start-up time: it arrives the moment the relay
        // says so, where a poll is late by up to its period.
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let at = now_usec();
                let Ok((iface, changed, _)) =
                    message.body().deserialize::<(String, Dict, Vec<String>)>()
                else {
                    continue;
                };
                let ready = changed
                    .get("State")
                    .and_then(|v| String::try_from(v.clone()).ok())
                    .is_some_and(|s| s == "ready");
                if iface == IFACE && ready {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(at);
                }
            }
        });
        Ok(Observer { conn, ready_at })
    }

    pub fn reset(&self) {
        *self.ready_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn property(&self, name: &str) -> Option<OwnedVariant> {
        let reply = self
            .conn
            .call_method(
                Some(BUS_NAME),
                ROOT,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(IFACE, name),
            )
            .await
            .ok()?;
        reply.body().deserialize::<OwnedVariant>().ok()
    }

    pub async fn last_seq(&self) -> Option<u64> {
        u64::try_from(self.property("LastSeq").await?).ok()
    }

    /// When the relay reached `State=ready` (CLOCK_REALTIME µs), or `None` after
    /// `timeout`. The poll covers a relay that was ready before we listened.
    pub async fn wait_ready(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = *self.ready_at.lock().unwrap_or_else(|e| e.into_inner()) {
                return Some(at);
            }
            if let Some(state) = self.property("State").await {
                let polled = now_usec();
                if String::try_from(state).is_ok_and(|s| s == "ready") {
                    let signalled = *self.ready_at.lock().unwrap_or_else(|e| e.into_inner());
                    return Some(signalled.unwrap_or(polled));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Times `GetManagedObjects` on the root (until the reply is in; decoding it to
    /// count the objects is not timed). `Err` says why there is no number.
    pub async fn get_managed_objects(&self, timeout: Duration) -> Result<ManagedObjects, String> {
        let started = Instant::now();
        let call = self.conn.call_method(
            Some(BUS_NAME),
            ROOT,
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        );
        let reply = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("no reply within {timeout:?}"))?
            .map_err(|e| match e {
                zbus::Error::MethodError(name, ..) => name.to_string(),
                other => other.to_string(),
            })?;
        let elapsed = started.elapsed();
        let objects = reply
            .body()
            .deserialize::<HashMap<OwnedObjectPath, HashMap<String, Dict>>>()
            .map_err(|e| format!("reply: {e}"))?;
        Ok(ManagedObjects {
            elapsed,
            objects: objects.len(),
            bytes: reply.data().len(),
        })
    }

    /// Times `Introspect` on `/` `calls` times, one after the other: (sorted times, size
    /// of the reply in bytes).
    pub async fn introspect_root(&self, calls: usize) -> Result<(Vec<f64>, usize), String> {
        let mut times = Vec::with_capacity(calls);
        let mut size = 0;
        for _ in 0..calls {
            let started = Instant::now();
            let reply = self
                .conn
                .call_method(
                    Some(BUS_NAME),
                    "/",
                    Some("org.freedesktop.DBus.Introspectable"),
                    "Introspect",
                    &(),
                )
                .await
                .map_err(|e| format!("Introspect: {e}"))?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            size = reply
                .body()
                .deserialize::<String>()
                .map_err(|e| format!("Introspect reply: {e}"))?
                .len();
        }
        times.sort_by(f64::total_cmp);
        Ok((times, size))
    }
}
