//! The single publisher: takes what the engine has applied (merged per row while the bus
//! is slower than OVSDB), projects it into messages and sends them in order, as batches,
//! before taking the next. Being the only emitter is what makes `seq` gap-free and keeps
//! objects and signals in step.

use super::projection::{self, ObjectSignal};
use super::relay::{RelayInterface, Shared};
use super::value::VariantDict;
use super::{RELAY_INTERFACE, ROOT_PATH};
use crate::engine::{Batch, Origin, Pending, Segment};
use crate::event::{Received, State};
use crate::notify::Notifier;
use crate::replica::layout::TableId;
use crate::replica::{ChangeKind, ChangeSet, RowChange};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use zbus::{Connection, Message, OwnedVariant, Variant};

/// Messages per `send_all`: large enough to make a burst a few writes, small enough that a
/// 10,000-row transaction does not build all its messages before the first goes out.
const BATCH: usize = 256;

/// Root properties announced with `PropertiesChanged`, each only when its value changed.
const ANNOUNCED_ROOT_PROPERTIES: [&str; 5] =
    ["State", "Remote", "SchemaVersion", "OvsVersion", "SystemId"];

pub struct Publisher {
    conn: Connection,
    relay: RelayInterface,
    shared: Arc<Shared>,
    pending: Arc<Pending>,
    /// New bus connections after the bus daemon came back.
    reconnected: mpsc::Receiver<Connection>,
    /// Typed signals (added, changed, removed) that could not be sent since the bus was
    /// last known good; reported in `Resynced` when it comes back.
    undelivered: (u64, u64, u64),
    notifier: Arc<Notifier>,
    /// `ovsdbus_dbus_signals_total{kind=…}`, looked up once: they are bumped per signal.
    typed_signals: prometheus::IntCounter,
    object_signals: prometheus::IntCounter,
    property_signals: prometheus::IntCounter,
    /// READY=1 goes to systemd once, after the first snapshot.
    announced_ready: bool,
    /// The root property values subscribers were last told.
    root_values: HashMap<&'static str, OwnedVariant>,
    seq: u64,
    /// Messages built but not yet sent, and the typed signals among them.
    out: Vec<Message>,
    out_typed: Vec<(TableId, &'static str, Instant)>,
}

impl Publisher {
    pub fn new(
        conn: Connection,
        shared: Arc<Shared>,
        pending: Arc<Pending>,
        reconnected: mpsc::Receiver<Connection>,
        notifier: Arc<Notifier>,
    ) -> Self {
        let signals = |kind: &str| shared.metrics.dbus_signals.with_label_values(&[kind]);
        Self {
            notifier,
            typed_signals: signals("typed"),
            object_signals: signals("objects"),
            property_signals: signals("properties"),
            announced_ready: false,
            reconnected,
            undelivered: (0, 0, 0),
            conn,
            relay: RelayInterface {
                shared: shared.clone(),
            },
            root_values: HashMap::new(),
            shared,
            pending,
            seq: 0,
            out: Vec::with_capacity(BATCH),
            out_typed: Vec::new(),
        }
    }

    /// Runs until aborted. The systemd watchdog is fed from this loop, so a publisher stuck
    /// on the bus stops the pings and systemd restarts us.
    pub async fn run(mut self) {
        let mut watchdog = Notifier::watchdog_interval().map(tokio::time::interval);
        loop {
            let ping = async {
                match watchdog.as_mut() {
                    Some(interval) => interval.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ping => self.notifier.watchdog(),
                () = self.pending.ready() => {
                    let batch = self.pending.take();
                    self.publish(batch).await;
                }
                Some(conn) = self.reconnected.recv() => self.rebind(conn).await,
            }
        }
    }

    async fn publish(&mut self, batch: Batch) {
        self.shared.metrics.queue_depth.set(batch.rows() as i64);
        // A resync or a new connection state (a load comes with one) may change the root
        // properties; so may an update of the root row.
        let mut root = false;
        for segment in batch.segments {
            root |= segment.resynced || segment.changes.root_changed();
            self.announce(segment).await;
        }
        for (state, remote) in batch.states {
            self.shared.update_status(|s| s.remote = remote);
            self.set_state(state);
            // One announcement per state (of what changed), in order.
            self.root_changed();
            root = false;
        }
        if root {
            self.root_changed();
        }
        self.flush().await;
    }

    /// One segment, in order: the objects (so a subscriber reacting to a signal finds
    /// them), the typed signals, `Resynced` after a full resync.
    async fn announce(&mut self, segment: Segment) {
        let Segment {
            origin,
            changes,
            resynced,
            received,
            first_at,
            updates,
        } = segment;
        self.shared
            .metrics
            .coalesced_updates
            .inc_by(updates.saturating_sub(1));
        let changes = changes.into_change_set();
        let Some(replica) = self.shared.snapshot() else {
            return;
        };
        for signal in projection::object_messages(&replica, &changes) {
            match signal {
                Ok(ObjectSignal::Membership(message)) => {
                    self.object_signals.inc();
                    self.queue(message, None).await;
                }
                Ok(ObjectSignal::PropertiesChanged(message)) => {
                    self.property_signals.inc();
                    self.queue(message, None).await;
                }
                Err(e) => {
                    self.shared.metrics.dbus_emit_errors.inc();
                    tracing::warn!("object signal not built: {e}");
                }
            }
        }
        let meta = Meta {
            origin,
            received: &received,
            first_at,
            coalesced: (updates > 1).then(|| u32::try_from(updates).unwrap_or(u32::MAX)),
        };
        let counts = self.typed(&replica, &changes, &meta).await;
        if resynced {
            self.resynced(counts, "ovsdb").await;
        }
    }

    /// Queues one typed signal per change, numbering them. Returns (added, changed, removed).
    async fn typed(
        &mut self,
        replica: &crate::replica::Replica,
        changes: &ChangeSet,
        meta: &Meta<'_>,
    ) -> (u64, u64, u64) {
        let mut counts = (0, 0, 0);
        for change in &changes.changes {
            self.seq += 1;
            match change.kind {
                ChangeKind::Added { .. } => counts.0 += 1,
                ChangeKind::Changed { .. } => counts.1 += 1,
                ChangeKind::Removed { .. } => counts.2 += 1,
            }
            let message =
                projection::typed_message(replica.layout(), change, meta.dict(self.seq, change));
            match message {
                Ok(message) => {
                    let typed = (change.table, change.kind.op(), meta.first_at);
                    self.queue(message, Some(typed)).await;
                }
                Err(e) => {
                    // A value the bus cannot carry: the signal is lost, and says so.
                    self.shared.metrics.dbus_emit_errors.inc();
                    self.count_undelivered(change.kind.op());
                    tracing::warn!(seq = self.seq, table = %change.table, "signal not built: {e}");
                }
            }
        }
        let seq = self.seq;
        self.shared.update_status(|s| s.last_seq = seq);
        counts
    }

    async fn queue(&mut self, message: Message, typed: Option<(TableId, &'static str, Instant)>) {
        self.out.push(message);
        self.out_typed.extend(typed);
        if self.out.len() >= BATCH {
            self.flush().await;
        }
    }

    /// Sends what is queued as one batch.
    async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.shared.sending.started();
        let result = self.conn.send_all(&self.out).await;
        self.shared.sending.finished();
        self.out.clear();
        let typed = std::mem::take(&mut self.out_typed);
        match result {
            Ok(()) => {
                self.typed_signals.inc_by(typed.len() as u64);
                for (table, op, first_at) in typed {
                    self.shared
                        .metrics
                        .observe_event(table.label(), op, first_at.elapsed());
                }
            }
            Err(e) => {
                self.shared.metrics.dbus_emit_errors.inc();
                let lost = typed.len();
                tracing::warn!(seq = self.seq, "{lost} typed signals not sent: {e}");
                for (_, op, _) in typed {
                    self.count_undelivered(op);
                }
            }
        }
    }

    fn count_undelivered(&mut self, op: &str) {
        match op {
            "Added" => self.undelivered.0 += 1,
            "Changed" => self.undelivered.1 += 1,
            _ => self.undelivered.2 += 1,
        }
    }

    /// Moves to a new bus connection (the dispatcher already serves it: nothing is
    /// registered per row), then tells subscribers how many typed signals they missed with
    /// a `Resynced` whose `meta.reason` is `bus` (the `seq` numbers of those are skipped).
    async fn rebind(&mut self, conn: Connection) {
        self.conn = conn;
        self.out.clear();
        for (_, op, _) in std::mem::take(&mut self.out_typed) {
            self.count_undelivered(op);
        }
        let missed = std::mem::take(&mut self.undelivered);
        tracing::info!(?missed, seq = self.seq, "back on the bus");
        self.resynced(missed, "bus").await;
        // Whatever changed while away, announce again.
        self.root_values.clear();
        self.root_changed();
        self.flush().await;
    }

    fn set_state(&mut self, state: State) {
        if self.shared.status().state == state {
            return;
        }
        tracing::info!(state = state.as_str(), "state changed");
        let was = self.shared.status().state;
        let gauge = |s: State| self.shared.metrics.state.with_label_values(&[s.as_str()]);
        gauge(was).set(0);
        gauge(state).set(1);
        self.shared.update_status(|s| s.state = state);
        let status = format!("{state}: {}", self.shared.status().remote);
        if state == State::Ready && !self.announced_ready {
            self.announced_ready = true;
            self.notifier.ready(&status);
        } else {
            self.notifier.status(&status);
        }
    }

    /// One `PropertiesChanged` for the root properties whose values changed since the last
    /// one, if any did. Queued, not sent.
    fn root_changed(&mut self) {
        let mut changed = HashMap::new();
        for name in ANNOUNCED_ROOT_PROPERTIES {
            let Some(value) = self.relay.property(name) else {
                continue;
            };
            if self.root_values.get(name) != Some(&value)
                && let Ok(copy) = value.try_clone()
            {
                changed.insert(name, copy);
                self.root_values.insert(name, value);
            }
        }
        if changed.is_empty() {
            return;
        }
        match projection::root_properties_changed(&changed) {
            Ok(message) => {
                self.out.push(message);
                self.property_signals.inc();
            }
            Err(e) => tracing::warn!("root PropertiesChanged not built: {e}"),
        }
    }

    /// `reason`: `ovsdb` after an OVSDB reconnect (the counts are the differences just
    /// published), `bus` after a bus reconnect (the counts are the signals that were lost).
    async fn resynced(&mut self, (added, changed, removed): (u64, u64, u64), reason: &str) {
        let mut meta = VariantDict::new();
        meta.insert("seq".into(), Variant::from(self.seq));
        meta.insert(
            "origin".into(),
            Variant::from(Origin::Resync.as_str().to_owned()),
        );
        meta.insert("reason".into(), Variant::from(reason.to_owned()));
        match Message::signal(ROOT_PATH, RELAY_INTERFACE, "Resynced")
            .build(&(added, changed, removed, meta))
        {
            Ok(message) => {
                self.queue(message, None).await;
                self.typed_signals.inc();
            }
            Err(e) => tracing::warn!("Resynced not built: {e}"),
        }
    }
}

/// What every typed signal of one segment shares in its `meta`.
struct Meta<'a> {
    origin: Origin,
    /// The latest update merged in.
    received: &'a Received,
    /// When the earliest update merged in arrived.
    first_at: Instant,
    /// Present when several OVSDB updates were merged into this net difference.
    coalesced: Option<u32>,
}

impl Meta<'_> {
    fn dict(&self, seq: u64, change: &RowChange) -> VariantDict {
        let received = self.received;
        let mut meta = VariantDict::new();
        meta.insert("seq".into(), Variant::from(seq));
        meta.insert(
            "origin".into(),
            Variant::from(self.origin.as_str().to_owned()),
        );
        meta.insert("received_usec".into(), Variant::from(received.usec));
        if let Some(txn) = &received.txn {
            meta.insert("txn".into(), Variant::from(txn.clone()));
        }
        if let Some(coalesced) = self.coalesced {
            meta.insert("coalesced".into(), Variant::from(coalesced));
        }
        if change.table == TableId::Interface {
            meta.insert("port".into(), Variant::from(change.port.clone()));
        }
        meta
    }
}
