//! The single publisher: applies each event to the replica and emits its D-Bus signals, in
//! order, before taking the next event. Being the only writer of the replica and the only
//! emitter is what makes `seq` gap-free and keeps objects and signals in step.

use super::objects::Tree;
use super::relay::{RelayInterface, Shared};
use super::value::{VariantDict, columns_dict};
use super::{RELAY_INTERFACE, ROOT_PATH};
use crate::event::{Event, Received, State};
use crate::notify::Notifier;
use crate::replica::layout::{Layout, TableId};
use crate::replica::update::Update;
use crate::replica::{ChangeKind, ChangeSet, Inconsistency, Replica, RowChange};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};
use zbus::names::BusName;
use zbus::object_server::InterfaceRef;
use zbus::{Connection, Variant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Live,
    Resync,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Resync => "resync",
        }
    }
}

pub struct Publisher {
    conn: Connection,
    relay: InterfaceRef<RelayInterface>,
    shared: Arc<Shared>,
    events: mpsc::Receiver<Event>,
    /// New bus connections after the bus daemon came back.
    reconnected: mpsc::Receiver<Connection>,
    /// Typed signals (added, changed, removed) that could not be sent since the bus was
    /// last known good; reported in `Resynced` when it comes back.
    undelivered: (u64, u64, u64),
    /// Wakes the session to drop its connection and resynchronise from scratch.
    resync: Arc<Notify>,
    tree: Tree,
    notifier: Arc<Notifier>,
    /// `ovsdbus_dbus_signals_total{kind="typed"}`, looked up once: it is bumped per signal.
    typed_signals: prometheus::IntCounter,
    /// READY=1 goes to systemd once, after the first snapshot.
    announced_ready: bool,
    seq: u64,
}

impl Publisher {
    pub async fn new(
        conn: Connection,
        shared: Arc<Shared>,
        events: mpsc::Receiver<Event>,
        reconnected: mpsc::Receiver<Connection>,
        resync: Arc<Notify>,
        notifier: Arc<Notifier>,
    ) -> zbus::Result<Self> {
        let relay = conn
            .object_server()
            .interface::<_, RelayInterface>(ROOT_PATH)
            .await?;
        Ok(Self {
            tree: Tree::new(conn.clone(), shared.clone()),
            notifier,
            typed_signals: shared.metrics.dbus_signals.with_label_values(&["typed"]),
            announced_ready: false,
            reconnected,
            undelivered: (0, 0, 0),
            conn,
            relay,
            shared,
            events,
            resync,
            seq: 0,
        })
    }

    /// Runs until the session side of the queue is gone. The systemd watchdog is fed from
    /// this loop, so a publisher stuck on the bus stops the pings and systemd restarts us.
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
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    self.handle(event).await;
                    self.shared.metrics.queue_depth.set(self.events.len() as i64);
                }
                Some(conn) = self.reconnected.recv() => self.rebind(conn).await,
            }
        }
    }

    async fn handle(&mut self, event: Event) {
        let index = match &event {
            Event::Snapshot { received, .. } | Event::Update { received, .. } => {
                Some(received.index)
            }
            Event::State { .. } => None,
        };
        self.apply(event).await;
        if let Some(index) = index {
            self.shared.mark_applied(index);
        }
    }

    async fn apply(&mut self, event: Event) {
        match event {
            Event::State { state, remote } => {
                let remote_changed = self.shared.status().remote != remote;
                self.shared.update_status(|s| s.remote = remote);
                if remote_changed {
                    let relay = self.relay.get().await;
                    self.emit_result(relay.remote_changed(self.relay.signal_emitter()).await);
                }
                self.set_state(state).await;
            }
            Event::Snapshot {
                layout,
                update,
                received,
            } => match self.replace(layout, update) {
                Ok(Some(changes)) => {
                    let counts = self.announce(&changes, Origin::Resync, &received).await;
                    self.emit_resynced(counts, "ovsdb").await;
                    self.root_changed().await;
                    self.set_state(State::Ready).await;
                }
                Ok(None) => {
                    self.after_apply();
                    self.sync_tree(self.tree.register_all().await);
                    self.root_changed().await;
                    self.set_state(State::Ready).await;
                }
                Err(e) => self.force_resync(e),
            },
            Event::Update { update, received } => {
                let applied = self.write_replica(|replica| match replica {
                    Some(replica) => replica.apply(update),
                    None => Err(Inconsistency("update before the first snapshot".into())),
                });
                match applied {
                    Ok(changes) => {
                        self.announce(&changes, Origin::Live, &received).await;
                        if changes.root_changed {
                            self.root_changed().await;
                        }
                    }
                    Err(e) => self.force_resync(e),
                }
            }
        }
    }

    /// Everything an applied change set causes, in order: row gauges, the objects (so a
    /// subscriber reacting to a signal finds them), the typed signals, then the waiters.
    /// Returns (added, changed, removed).
    async fn announce(
        &mut self,
        changes: &ChangeSet,
        origin: Origin,
        received: &Received,
    ) -> (u64, u64, u64) {
        self.after_apply();
        self.sync_tree(self.tree.apply(changes).await);
        let counts = self.publish(changes, origin, received).await;
        self.shared.waiters.wake(&self.shared, changes);
        counts
    }

    /// Moves to a new bus connection: registers every object again, then tells
    /// subscribers how many typed signals they missed with a `Resynced` whose
    /// `meta.reason` is `bus` (the `seq` numbers of those signals are skipped).
    async fn rebind(&mut self, conn: Connection) {
        match conn
            .object_server()
            .interface::<_, RelayInterface>(ROOT_PATH)
            .await
        {
            Ok(relay) => self.relay = relay,
            Err(e) => {
                tracing::error!("new bus connection lacks the relay interface: {e}");
                return;
            }
        }
        self.tree = Tree::new(conn.clone(), self.shared.clone());
        self.conn = conn;
        self.sync_tree(self.tree.register_all().await);
        let missed = std::mem::take(&mut self.undelivered);
        tracing::info!(?missed, seq = self.seq, "re-registered on the bus");
        self.emit_resynced(missed, "bus").await;
        let relay = self.relay.get().await;
        self.emit_result(relay.state_changed(self.relay.signal_emitter()).await);
    }

    fn write_replica<R>(&self, write: impl FnOnce(&mut Option<Replica>) -> R) -> R {
        write(
            &mut self
                .shared
                .replica
                .write()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Installs a snapshot. Returns the differences to publish, or `None` when there was no
    /// previous state to compare with (start-up: the state is in the objects, not signals).
    fn replace(
        &self,
        layout: Arc<Layout>,
        snapshot: Update,
    ) -> Result<Option<ChangeSet>, Inconsistency> {
        self.write_replica(|slot| match slot {
            Some(replica) if **replica.layout() == *layout => replica.replace(snapshot).map(Some),
            _ => {
                if slot.is_some() {
                    tracing::warn!("schema changed while disconnected; reloading without diff");
                }
                // Into an empty replica a snapshot is just inserts (anything else is an
                // inconsistency there too): one pass instead of building and diffing.
                let mut replica = Replica::new(layout);
                replica.apply(snapshot)?;
                *slot = Some(replica);
                Ok(None)
            }
        })
    }

    fn force_resync(&self, error: Inconsistency) {
        tracing::error!("{error}; forcing a full resync");
        self.resync.notify_one();
    }

    async fn set_state(&mut self, state: State) {
        if self.shared.status().state == state {
            return;
        }
        tracing::info!(state = state.as_str(), "state changed");
        self.shared.update_status(|s| s.state = state);
        let status = format!("{state}: {}", self.shared.status().remote);
        if state == State::Ready && !self.announced_ready {
            self.announced_ready = true;
            self.notifier.ready(&status);
        } else {
            self.notifier.status(&status);
        }
        let relay = self.relay.get().await;
        self.emit_result(relay.state_changed(self.relay.signal_emitter()).await);
    }

    async fn root_changed(&self) {
        let relay = self.relay.get().await;
        let emitter = self.relay.signal_emitter();
        self.emit_result(relay.ovs_version_changed(emitter).await);
        self.emit_result(relay.system_id_changed(emitter).await);
        self.emit_result(relay.schema_version_changed(emitter).await);
    }

    /// Emits one typed signal per change, numbering them. Returns (added, changed, removed).
    async fn publish(
        &mut self,
        changes: &ChangeSet,
        origin: Origin,
        received: &Received,
    ) -> (u64, u64, u64) {
        let mut counts = (0, 0, 0);
        let Some(layout) = self.shared.with_replica(|r| r.map(|r| r.layout().clone())) else {
            return counts;
        };
        for change in &changes.changes {
            self.seq += 1;
            let meta = self.meta(origin, received, change);
            let result = self.emit_change(&layout, change, meta).await;
            if result.is_ok() {
                self.typed_signals.inc();
                self.shared.metrics.observe_event(
                    change.table.label(),
                    change.kind.op(),
                    received.at.elapsed(),
                );
            } else {
                self.shared.metrics.dbus_emit_errors.inc();
            }
            let (count, undelivered) = match change.kind {
                ChangeKind::Added { .. } => (&mut counts.0, &mut self.undelivered.0),
                ChangeKind::Changed { .. } => (&mut counts.1, &mut self.undelivered.1),
                ChangeKind::Removed { .. } => (&mut counts.2, &mut self.undelivered.2),
            };
            *count += 1;
            if result.is_err() {
                *undelivered += 1;
            }
            if let Err(e) = result {
                tracing::warn!(seq = self.seq, table = %change.table, "signal not sent: {e}");
            }
        }
        let seq = self.seq;
        self.shared.update_status(|s| s.last_seq = seq);
        counts
    }

    async fn emit_change(
        &self,
        layout: &Layout,
        change: &RowChange,
        meta: VariantDict,
    ) -> zbus::Result<()> {
        let table = layout.table(change.table);
        let uuid = change.uuid.to_string();
        let (name, bridge, uuid) = (change.name.as_str(), change.bridge.as_str(), uuid.as_str());
        let member = format!("{}{}", change.table, change.kind.op());
        match &change.kind {
            ChangeKind::Added { row } | ChangeKind::Removed { row } => {
                let columns = columns_dict(table, row, 0..table.columns.len())?;
                self.emit(&member, &(name, bridge, uuid, columns, meta))
                    .await
            }
            ChangeKind::Changed { old, new, columns } => {
                let changed = columns_dict(table, new, columns.iter().copied())?;
                let old = columns_dict(table, old, columns.iter().copied())?;
                self.emit(&member, &(name, bridge, uuid, changed, old, meta))
                    .await
            }
        }
    }

    async fn emit<B>(&self, member: &str, body: &B) -> zbus::Result<()>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.conn
            .emit_signal(
                None::<BusName<'_>>,
                ROOT_PATH,
                RELAY_INTERFACE,
                member,
                body,
            )
            .await
    }

    fn meta(&self, origin: Origin, received: &Received, change: &RowChange) -> VariantDict {
        let mut meta = VariantDict::new();
        meta.insert("seq".into(), Variant::from(self.seq));
        meta.insert("origin".into(), Variant::from(origin.as_str().to_owned()));
        meta.insert("received_usec".into(), Variant::from(received.usec));
        if let Some(txn) = &received.txn {
            meta.insert("txn".into(), Variant::from(txn.clone()));
        }
        if change.table == TableId::Interface {
            meta.insert("port".into(), Variant::from(change.port.clone()));
        }
        meta
    }

    /// `reason`: `ovsdb` after an OVSDB reconnect (the counts are the differences just
    /// published), `bus` after a bus reconnect (the counts are the signals that were lost).
    async fn emit_resynced(&self, (added, changed, removed): (u64, u64, u64), reason: &str) {
        let mut meta = VariantDict::new();
        meta.insert("seq".into(), Variant::from(self.seq));
        meta.insert(
            "origin".into(),
            Variant::from(Origin::Resync.as_str().to_owned()),
        );
        meta.insert("reason".into(), Variant::from(reason.to_owned()));
        let result =
            RelayInterface::resynced(self.relay.signal_emitter(), added, changed, removed, meta)
                .await;
        if result.is_ok() {
            self.typed_signals.inc();
        }
        self.emit_result(result);
    }

    fn sync_tree(&self, result: zbus::Result<super::objects::TreeSignals>) {
        let metrics = &self.shared.metrics;
        match result {
            Ok(signals) => {
                metrics
                    .dbus_signals
                    .with_label_values(&["objects"])
                    .inc_by(signals.objects);
                metrics
                    .dbus_signals
                    .with_label_values(&["properties"])
                    .inc_by(signals.properties);
            }
            Err(e) => {
                metrics.dbus_emit_errors.inc();
                tracing::warn!("object tree update failed: {e}");
            }
        }
    }

    /// After every applied update: the row gauges.
    fn after_apply(&self) {
        self.shared.with_replica(|replica| {
            if let Some(replica) = replica {
                for table in TableId::PUBLISHED {
                    let count = replica.len(table) as i64;
                    self.shared
                        .metrics
                        .rows
                        .with_label_values(&[table.label()])
                        .set(count);
                }
            }
        });
    }

    fn emit_result(&self, result: zbus::Result<()>) {
        if let Err(e) = result {
            self.shared.metrics.dbus_emit_errors.inc();
            tracing::warn!("D-Bus emit failed: {e}");
        }
    }
}
