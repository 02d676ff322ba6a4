//! The monitor session: connect to one of the remotes, read the schema, subscribe with
//! `monitor_cond_since` (falling back to `monitor_cond`), then forward every update to the
//! publisher — and on any failure reconnect with backoff and resynchronise.

use super::client::{self, Client, ClientError, Notification};
use super::remote::{ConnectOptions, Remote};
use super::schema::DbSchema;
use super::tls::TlsFiles;
use crate::event::{Event, Received, State};
use crate::metrics::Metrics;
use crate::replica::layout::{ColumnSelection, Layout, TableId};
use crate::replica::update::Update;
use serde_json::value::RawValue;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};

pub const DATABASE: &str = "Open_vSwitch";
const MONITOR_ID: &str = "ovs-dbus-relay";
/// The monitor on the `_Server` database that tells whether a cluster member is still
/// part of its cluster.
const SERVER_MONITOR_ID: &str = "ovs-dbus-relay-server";
/// `monitor_cond_since` with this id asks for everything: there is no history to resume.
const NO_TXN: &str = "00000000-0000-0000-0000-000000000000";
/// Update messages buffered between the socket and the session before overflow.
const NOTIFICATION_QUEUE: usize = 4096;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub remotes: Vec<Remote>,
    pub columns: ColumnSelection,
    /// Give up (exit) if no server answered for this long at start-up.
    pub connect_timeout: Duration,
    pub inactivity_probe: Duration,
    /// For `ssl:` remotes.
    pub tls: Option<TlsFiles>,
    /// The largest message accepted from a server, in bytes.
    pub max_message_size: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// Errors that end the relay rather than trigger a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot reach OVSDB at {remotes} within {timeout:?}: {last}")]
    Unreachable {
        remotes: String,
        timeout: Duration,
        last: String,
    },
    #[error("{remote}: {reason}")]
    BadDatabase { remote: String, reason: String },
    #[error("internal error: the publisher stopped")]
    PublisherGone,
}

/// Why one connection ended; every one of them leads to a reconnect.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("bad message from server: {0}")]
    Protocol(String),
    #[error("resync requested")]
    Resync,
    /// The server cancelled our monitor (the database was converted to a new schema, or
    /// removed): subscribe again, schema first.
    #[error("the server cancelled the monitor")]
    MonitorCanceled,
    #[error("{0}")]
    Fatal(String),
    #[error("publisher stopped")]
    Stopped,
    #[error("this member is not connected to its cluster")]
    NotInCluster,
    #[error("no answer to the schema and monitor requests within {0:?}")]
    Unanswered(Duration),
}

impl ConnectionEnd {
    /// The `kind` of `ovsdbus_ovsdb_protocol_errors_total` when the server broke the
    /// protocol (see [`crate::metrics::PROTOCOL_ERROR_KINDS`]).
    fn protocol_error(&self) -> Option<&'static str> {
        match self {
            Self::Client(ClientError::TooLarge { .. }) => Some("too_large"),
            Self::Client(ClientError::Protocol(_)) | Self::Protocol(_) => Some("malformed"),
            _ => None,
        }
    }

    /// The connection task panicked: a bug, but one connection's worth; reconnect.
    fn crashed(error: tokio::task::JoinError) -> Self {
        tracing::error!("OVSDB connection task failed: {error}");
        Self::Client(ClientError::Closed)
    }
}

pub struct Session {
    config: SessionConfig,
    events: mpsc::Sender<Event>,
    resync: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Notifications received over all connections (see [`client::Reply::watermark`]).
    received: Arc<AtomicU64>,
    /// The client of the live connection, for writers; `None` while disconnected.
    client: watch::Sender<Option<Client>>,
    /// Set once a snapshot has been delivered: later snapshots are resyncs.
    synced_once: bool,
    last_txn: Option<String>,
}

impl Session {
    pub fn new(
        config: SessionConfig,
        events: mpsc::Sender<Event>,
        resync: Arc<Notify>,
        metrics: Arc<Metrics>,
        client: watch::Sender<Option<Client>>,
    ) -> Self {
        Self {
            config,
            events,
            resync,
            metrics,
            received: Arc::default(),
            client,
            synced_once: false,
            last_txn: None,
        }
    }

    /// Runs until a fatal error: the wrong database, nothing reachable at start-up, or the
    /// publisher gone. Every other failure is a reconnect.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let started = Instant::now();
        let mut backoff = self.config.backoff_min;
        let mut attempt = 0usize;
        // Forced resyncs in a row, each after a short connection: a server that keeps
        // sending what the replica cannot apply gets the backoff, not a reconnect loop.
        let mut quick_resyncs = 0u32;
        let mut failed_connects = 0u64;
        loop {
            let remote = self.config.remotes[attempt % self.config.remotes.len()].clone();
            attempt += 1;
            let state = if self.synced_once {
                State::Reconnecting
            } else {
                State::Connecting
            };
            if self.state(state, &remote).await.is_err() {
                return Err(SessionError::PublisherGone);
            }
            let began = Instant::now();
            let end = self.connection(&remote).await;
            self.client.send_replace(None);
            self.metrics.ovsdb_connected.set(0);
            match end {
                ConnectionEnd::Stopped => return Err(SessionError::PublisherGone),
                ConnectionEnd::Fatal(reason) => {
                    return Err(SessionError::BadDatabase {
                        remote: remote.to_string(),
                        reason,
                    });
                }
                ConnectionEnd::Resync | ConnectionEnd::MonitorCanceled => {
                    // The server is fine; only our state (or its schema) is in doubt.
                    // Reconnect to the same one for a snapshot — without history after an
                    // inconsistency — at once the first time.
                    if matches!(end, ConnectionEnd::Resync) {
                        tracing::warn!(%remote, "{end}: full resync");
                        self.last_txn = None;
                    } else {
                        tracing::info!(%remote, "{end}: subscribing again");
                    }
                    attempt -= 1;
                    if began.elapsed() > self.config.backoff_max * 2 {
                        quick_resyncs = 0;
                        backoff = self.config.backoff_min;
                    }
                    quick_resyncs += 1;
                    if quick_resyncs > 1 {
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(self.config.backoff_max);
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(kind) = end.protocol_error() {
                self.metrics
                    .ovsdb_protocol_errors
                    .with_label_values(&[kind])
                    .inc();
            }
            // A server that stays away must not fill the log: failed attempts in a row are
            // logged at the 1st, 2nd, 4th, 8th … (with the count), the rest at debug level.
            if matches!(end, ConnectionEnd::Connect(_)) {
                failed_connects += 1;
            } else {
                failed_connects = 0;
            }
            match failed_connects {
                0 | 1 => tracing::warn!(%remote, "OVSDB connection ended: {end}"),
                n if n.is_power_of_two() => tracing::warn!(
                    %remote,
                    "OVSDB connection ended: {end} ({n} failed attempts in a row; retrying \
                     with backoff up to {:?}, next report at {})",
                    self.config.backoff_max,
                    n * 2
                ),
                n => tracing::debug!(%remote, attempt = n, "OVSDB connect failed again: {end}"),
            }
            if !self.synced_once && started.elapsed() >= self.config.connect_timeout {
                return Err(SessionError::Unreachable {
                    remotes: Remote::join(&self.config.remotes),
                    timeout: self.config.connect_timeout,
                    last: end.to_string(),
                });
            }
            // A connection that lived a while was healthy: start the backoff over.
            if began.elapsed() > self.config.backoff_max * 2 {
                backoff = self.config.backoff_min;
            }
            if attempt % self.config.remotes.len() == 0 {
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
        }
    }

    async fn state(&self, state: State, remote: &Remote) -> Result<(), ()> {
        self.events
            .send(Event::State {
                state,
                remote: remote.to_string(),
            })
            .await
            .map_err(|_| ())
    }

    async fn connection(&mut self, remote: &Remote) -> ConnectionEnd {
        let options = ConnectOptions {
            tls: self.config.tls.clone(),
            probe: self.config.inactivity_probe,
        };
        let connect = remote.connect(&options);
        let transport = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(transport)) => transport,
            Ok(Err(e)) => return ConnectionEnd::Connect(e),
            Err(_) => {
                return ConnectionEnd::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ));
            }
        };
        let (notifications_tx, mut notifications) = mpsc::channel(NOTIFICATION_QUEUE);
        let probe = remote.is_tcp().then_some(self.config.inactivity_probe);
        let (client, mut task) = client::spawn(
            transport,
            notifications_tx,
            client::Options {
                inactivity_probe: probe,
                max_message: self.config.max_message_size,
                received: self.received.clone(),
            },
        );
        tracing::info!(%remote, "connected to OVSDB");
        // A server that accepts but does not answer (hung, stopped) is left for the next
        // remote after twice the inactivity probe, as a silent peer would be.
        let answer_within = self.config.inactivity_probe * 2;
        let subscribe = tokio::time::timeout(answer_within, self.subscribe(&client, remote));
        let layout = tokio::select! {
            result = subscribe => match result {
                Ok(Ok(layout)) => layout,
                Ok(Err(end)) => return end,
                Err(_) => return ConnectionEnd::Unanswered(answer_within),
            },
            ended = &mut task => return ended.map_or_else(ConnectionEnd::crashed, ConnectionEnd::Client),
        };
        loop {
            tokio::select! {
                notification = notifications.recv() => {
                    let Some(notification) = notification else {
                        // The task dropped its sender on the way out; it knows why.
                        return (&mut task).await.map_or_else(ConnectionEnd::crashed, ConnectionEnd::Client);
                    };
                    if let Err(end) = self.forward(&layout, notification).await {
                        return end;
                    }
                }
                ended = &mut task => return ended.map_or_else(ConnectionEnd::crashed, ConnectionEnd::Client),
                () = self.resync.notified() => return ConnectionEnd::Resync,
            }
        }
    }

    /// Reads the schema and starts the monitor; delivers the initial state to the publisher.
    async fn subscribe(
        &mut self,
        client: &Client,
        remote: &Remote,
    ) -> Result<Arc<Layout>, ConnectionEnd> {
        let schema_json = client
            .request("get_schema", json!([DATABASE]))
            .await
            .map_err(|e| match e {
                ClientError::Rpc(error) => {
                    ConnectionEnd::Fatal(format!("the server has no {DATABASE} database ({error})"))
                }
                other => other.into(),
            })?;
        self.watch_cluster_membership(client).await?;
        let schema =
            DbSchema::parse(&schema_json).map_err(|e| ConnectionEnd::Fatal(e.to_string()))?;
        let layout =
            Arc::new(Layout::new(&schema, &self.config.columns).map_err(ConnectionEnd::Fatal)?);
        self.state(State::Syncing, remote)
            .await
            .map_err(|()| ConnectionEnd::Stopped)?;

        let requests: serde_json::Map<String, Json> = TableId::ALL
            .into_iter()
            .map(|t| {
                let columns: Vec<&str> = layout.table(t).column_names().collect();
                (t.name().to_owned(), json!([{"columns": columns}]))
            })
            .collect();
        let since = self.last_txn.clone().unwrap_or_else(|| NO_TXN.to_owned());
        tracing::debug!(%remote, since, "monitor_cond_since");
        let reply = client
            .request_raw(
                "monitor_cond_since",
                json!([DATABASE, MONITOR_ID, requests, since]),
            )
            .await;
        let received_at = Instant::now();
        let index = self.received.load(Ordering::Acquire);
        let (reply, with_since) = match reply {
            Ok(reply) => (reply.result, true),
            Err(ClientError::Rpc(error)) if error.to_string().contains("unknown method") => {
                tracing::info!("server lacks monitor_cond_since; using monitor_cond");
                let reply = client
                    .request_raw("monitor_cond", json!([DATABASE, MONITOR_ID, requests]))
                    .await?;
                (reply.result, false)
            }
            Err(e) => return Err(e.into()),
        };
        let (found, txn, update) = parse_monitor_reply(&layout, reply.get(), with_since)
            .map_err(ConnectionEnd::Protocol)?;
        drop(reply);
        let received = Received {
            at: received_at,
            usec: now_usec(),
            txn: txn.clone(),
            index,
        };
        self.last_txn = txn;
        if self.synced_once {
            self.metrics.ovsdb_reconnects.inc();
            let kind = if found { "fast" } else { "full" };
            self.metrics.resyncs.with_label_values(&[kind]).inc();
        }
        self.metrics.ovsdb_connected.set(1);
        let fast = found && self.synced_once;
        let event = if fast {
            tracing::info!(
                rows = update.rows.len(),
                "fast resync from transaction history"
            );
            Event::Update { update, received }
        } else {
            tracing::info!(rows = update.rows.len(), "full snapshot");
            Event::Snapshot {
                layout: layout.clone(),
                update,
                received,
            }
        };
        self.events
            .send(event)
            .await
            .map_err(|_| ConnectionEnd::Stopped)?;
        if fast {
            // A snapshot makes the publisher ready; the missed transactions alone do not.
            self.state(State::Ready, remote)
                .await
                .map_err(|()| ConnectionEnd::Stopped)?;
        }
        self.synced_once = true;
        self.client.send_replace(Some(client.clone()));
        Ok(layout)
    }

    fn parse(&self, layout: &Layout, updates: &RawValue) -> Result<Update, ConnectionEnd> {
        self.metrics.ovsdb_updates.inc();
        Update::parse(layout, updates.get()).map_err(ConnectionEnd::Protocol)
    }

    /// Monitors `_Server`'s row for the database. A clustered member that has lost its
    /// cluster serves stale data, so it is left for another remote; a server without
    /// `_Server` (standalone, old versions) is used as it is.
    async fn watch_cluster_membership(&self, client: &Client) -> Result<(), ConnectionEnd> {
        let request = json!({"Database": [{
            "columns": ["name", "model", "connected"],
            "where": [["name", "==", DATABASE]]
        }]});
        match client
            .request(
                "monitor_cond",
                json!(["_Server", SERVER_MONITOR_ID, request]),
            )
            .await
        {
            Ok(updates) if member_connected(&updates) == Some(false) => {
                Err(ConnectionEnd::NotInCluster)
            }
            Ok(_) | Err(ClientError::Rpc(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Parses one `update2`/`update3` and queues it for the engine, which only applies
    /// and never waits for the bus, so a full queue is a short pause, not a stuck consumer.
    async fn forward(
        &mut self,
        layout: &Layout,
        notification: Notification,
    ) -> Result<(), ConnectionEnd> {
        let Notification {
            method,
            params,
            received,
            received_usec,
            index,
        } = notification;
        let is_update = matches!(method.as_str(), "update2" | "update3");
        let params: Vec<&RawValue> = match serde_json::from_str(params.get()) {
            Ok(params) => params,
            Err(_) if is_update => {
                return Err(ConnectionEnd::Protocol(format!("malformed {method}")));
            }
            Err(_) => Vec::new(),
        };
        let small = |raw: &RawValue| serde_json::from_str::<Json>(raw.get()).unwrap_or_default();
        let from_server_monitor = params
            .first()
            .is_some_and(|m| small(m) == SERVER_MONITOR_ID);
        let (txn, update) = match (method.as_str(), params.as_slice()) {
            // Either monitor: the `_Server` one goes with the database it watches.
            ("monitor_canceled", _) => return Err(ConnectionEnd::MonitorCanceled),
            _ if from_server_monitor => {
                if params.get(1).and_then(|u| member_connected(&small(u))) == Some(false) {
                    return Err(ConnectionEnd::NotInCluster);
                }
                (None, Update::default())
            }
            ("update2", [_, updates]) => (None, self.parse(layout, updates)?),
            ("update3", [_, txn, updates]) => {
                let txn = small(txn)
                    .as_str()
                    .filter(|t| *t != NO_TXN)
                    .map(str::to_owned);
                if txn.is_some() {
                    self.last_txn = txn.clone();
                }
                (txn, self.parse(layout, updates)?)
            }
            ("update2" | "update3", _) => {
                return Err(ConnectionEnd::Protocol(format!("malformed {method}")));
            }
            (other, _) => {
                tracing::debug!(method = other, "ignoring notification");
                (None, Update::default())
            }
        };
        // Notifications that change nothing still go through (as empty updates): a write
        // waits until every notification before its reply is applied, these included.
        let event = Event::Update {
            update,
            received: Received {
                at: received,
                usec: received_usec,
                txn,
                index,
            },
        };
        self.events
            .send(event)
            .await
            .map_err(|_| ConnectionEnd::Stopped)
    }
}

/// The initial state a monitor request answered with: (found, last-txn-id, rows);
/// `monitor_cond_since` answers `[found, last-txn-id, updates]`, `monitor_cond` the bare
/// updates.
fn parse_monitor_reply(
    layout: &Layout,
    reply: &str,
    with_since: bool,
) -> Result<(bool, Option<String>, Update), String> {
    if !with_since {
        return Ok((false, None, Update::parse(layout, reply)?));
    }
    let parts: [&RawValue; 3] = serde_json::from_str::<Vec<&RawValue>>(reply)
        .ok()
        .and_then(|parts| parts.try_into().ok())
        .ok_or_else(|| {
            let start: String = reply.chars().take(200).collect();
            format!("monitor_cond_since reply is not [found, txn, updates]: {start}")
        })?;
    let [found, txn, updates] = parts;
    let found = serde_json::from_str::<bool>(found.get()).unwrap_or(false);
    let txn = serde_json::from_str::<Option<String>>(txn.get())
        .ok()
        .flatten()
        .filter(|t| t != NO_TXN);
    Ok((found, txn, Update::parse(layout, updates.get())?))
}

/// `connected` of the `_Server` `Database` row in a monitor reply or update, if present.
fn member_connected(updates: &Json) -> Option<bool> {
    updates
        .get("Database")?
        .as_object()?
        .values()
        .filter_map(|row| row.as_object()?.values().next())
        .find_map(|columns| columns.get("connected")?.as_bool())
}

pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// ±25% so that many relays restarted together do not reconnect in lockstep.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cluster_membership_from_server_updates() {
        let row = |kind: &str, connected: bool| json!({"Database": {"00000000-0000-0000-0000-000000000001": {kind: {"name": DATABASE, "connected": connected}}}});
        assert_eq!(member_connected(&row("initial", true)), Some(true));
        assert_eq!(member_connected(&row("modify", false)), Some(false));
        assert_eq!(member_connected(&json!({"Database": {}})), None);
        assert_eq!(member_connected(&json!({})), None);
        assert_eq!(
            member_connected(&json!({"Database": {"u": {"modify": {"leader": false}}}})),
            None
        );
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let base = Duration::from_millis(1000);
        let j = jitter(base);
        assert!(
            j >= Duration::from_millis(750) && j <= Duration::from_millis(1250),
            "{j:?}"
        );
    }
}
