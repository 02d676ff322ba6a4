//! The engine: the only writer of the replica.
//!
//! It applies each event from the OVSDB session as it arrives, publishes the resulting
//! immutable version of the replica to every reader ([`Store`]), and hands the change set
//! to the bus publisher through [`Pending`]. It never waits for the bus: while the
//! publisher is busy, later change sets are merged per row into the pending ones, so a slow
//! bus costs neither a reconnect nor unbounded memory.

pub mod merge;

use crate::event::{Event, Received, State};
use crate::replica::layout::Layout;
use crate::replica::update::Update;
use crate::replica::{ChangeSet, Inconsistency, Replica};
use arc_swap::ArcSwapOption;
use merge::Merged;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{Notify, mpsc, watch};

/// The versions of the replica, for everyone who reads it.
pub struct Store {
    /// `None` until the first snapshot. Readers load it without a lock and keep it as long
    /// as they need; the engine stores a new version after every update and never waits
    /// for a reader.
    replica: ArcSwapOption<Replica>,
    /// Position of the last notification applied (see
    /// [`crate::ovsdb::client::Reply::watermark`]).
    applied: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            replica: ArcSwapOption::empty(),
            applied: watch::Sender::new(0),
        }
    }
}

impl Store {
    /// Runs `read` on the current version.
    pub fn with_replica<R>(&self, read: impl FnOnce(Option<&Replica>) -> R) -> R {
        read(self.replica.load().as_deref())
    }

    /// The current version, to keep beyond one short read (a long reply, a stream).
    pub fn snapshot(&self) -> Option<Arc<Replica>> {
        self.replica.load_full()
    }

    /// Waits until the notifications up to `watermark` are applied; `false` on timeout.
    pub async fn applied_up_to(&self, watermark: u64, timeout: std::time::Duration) -> bool {
        let mut applied = self.applied.subscribe();
        matches!(
            tokio::time::timeout(timeout, applied.wait_for(|a| *a >= watermark)).await,
            Ok(Ok(_))
        )
    }

    /// Waits until `holds` is true of the current version, checking again after every
    /// update applied; `false` on timeout.
    pub async fn wait_until(
        &self,
        timeout: std::time::Duration,
        holds: impl Fn(&Replica) -> bool,
    ) -> bool {
        let mut applied = self.applied.subscribe();
        let check = |_: &u64| self.with_replica(|r| r.is_some_and(&holds));
        matches!(
            tokio::time::timeout(timeout, applied.wait_for(check)).await,
            Ok(Ok(_))
        )
    }

    /// Derives the next version from the current one (an O(1) copy of persistent maps),
    /// changes it and publishes it.
    fn write<R>(&self, write: impl FnOnce(&mut Option<Replica>) -> R) -> R {
        let mut next = self.replica.load_full().map(|r| Replica::clone(&r));
        let result = write(&mut next);
        self.replica.store(next.map(Arc::new));
        result
    }

    /// Records that the version just stored includes the notifications up to `index`, and
    /// wakes every waiter once per version: `wait_until` re-checks even when the index did
    /// not move (a snapshot loaded before any update arrived).
    fn mark_applied(&self, index: u64) {
        self.applied
            .send_modify(|applied| *applied = (*applied).max(index));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Live,
    Resync,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Resync => "resync",
        }
    }
}

/// Consecutive change sets of one origin, merged per row.
#[derive(Debug)]
pub struct Segment {
    pub origin: Origin,
    pub changes: Merged,
    /// A full resync ends here: the publisher follows it with `Resynced`.
    pub resynced: bool,
    /// The latest update merged in (its `received_usec` and `txn` go into `meta`).
    pub received: Received,
    /// When the earliest update merged in arrived: latency is measured from there.
    pub first_at: Instant,
    /// OVSDB updates merged into this segment.
    pub updates: u64,
}

/// Everything the publisher has not taken yet.
#[derive(Debug, Default)]
pub struct Batch {
    pub segments: Vec<Segment>,
    /// The connection states (with their remote) reported since the last take, in order:
    /// each is announced, so a subscriber sees `syncing` between `reconnecting` and `ready`
    /// however fast they follow each other. A snapshot loaded without a previous state to
    /// compare with (start-up, or a new schema) reports only this: the state is in the
    /// objects, no signals.
    pub states: Vec<(State, String)>,
}

impl Batch {
    /// Rows with a change waiting.
    pub fn rows(&self) -> usize {
        self.segments.iter().map(|s| s.changes.len()).sum()
    }
}

/// The hand-over between the engine and the publisher. The lock is held only to merge one
/// change set in or to take the whole batch out, never across I/O.
#[derive(Default)]
pub struct Pending {
    batch: Mutex<Batch>,
    ready: Notify,
}

impl Pending {
    fn update(&self, change: impl FnOnce(&mut Batch)) {
        change(&mut self.batch.lock().unwrap_or_else(|e| e.into_inner()));
        self.ready.notify_one();
    }

    fn push(&self, origin: Origin, changes: ChangeSet, received: Received, resynced: bool) {
        self.update(|batch| match batch.segments.last_mut() {
            Some(last) if last.origin == origin && !last.resynced => {
                last.changes.merge(changes);
                last.updates += 1;
                last.received = received;
                last.resynced = resynced;
            }
            _ => {
                let mut merged = Merged::default();
                merged.merge(changes);
                batch.segments.push(Segment {
                    origin,
                    changes: merged,
                    resynced,
                    first_at: received.at,
                    received,
                    updates: 1,
                });
            }
        });
    }

    /// Waits until something is pending (or was, since the last take).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Takes everything pending.
    pub fn take(&self) -> Batch {
        std::mem::take(&mut *self.batch.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Called after each new version is stored, with the change set that produced it (empty
/// after a load): wakes waiters, updates gauges. Runs on the engine task: keep it short.
pub type OnApplied = Box<dyn Fn(&Replica, &ChangeSet) + Send>;

pub struct Engine {
    store: Arc<Store>,
    pending: Arc<Pending>,
    events: mpsc::Receiver<Event>,
    /// Wakes the session to drop its connection and resynchronise from scratch.
    resync: Arc<Notify>,
    on_applied: OnApplied,
    /// After an inconsistency nothing more from that connection is applied, until the
    /// next snapshot replaces the replica.
    discarding: bool,
    /// The remote of the latest state the session reported.
    remote: String,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        pending: Arc<Pending>,
        events: mpsc::Receiver<Event>,
        resync: Arc<Notify>,
        on_applied: OnApplied,
    ) -> Self {
        Self {
            store,
            pending,
            events,
            resync,
            on_applied,
            discarding: false,
            remote: String::new(),
        }
    }

    /// Runs until the session side of the queue is gone.
    pub async fn run(mut self) {
        while let Some(event) = self.events.recv().await {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::State { state, remote } => {
                self.remote.clone_from(&remote);
                self.pending
                    .update(|batch| batch.states.push((state, remote)));
            }
            Event::Snapshot {
                layout,
                update,
                received,
            } => {
                let index = received.index;
                match self.replace(layout, update) {
                    Ok(Some(changes)) => {
                        self.discarding = false;
                        self.applied(&changes);
                        self.pending.push(Origin::Resync, changes, received, true);
                    }
                    Ok(None) => {
                        self.discarding = false;
                        self.applied(&ChangeSet::default());
                    }
                    Err(e) => return self.force_resync(e),
                }
                self.store.mark_applied(index);
                let remote = self.remote.clone();
                self.pending
                    .update(|batch| batch.states.push((State::Ready, remote)));
            }
            Event::Update { update, received } => {
                if self.discarding {
                    return;
                }
                let index = received.index;
                let applied = self.store.write(|replica| match replica {
                    Some(replica) => replica.apply(update),
                    None => Err(Inconsistency("update before the first snapshot".into())),
                });
                match applied {
                    Ok(changes) => {
                        self.applied(&changes);
                        if !changes.is_empty() {
                            self.pending.push(Origin::Live, changes, received, false);
                        }
                        self.store.mark_applied(index);
                    }
                    Err(e) => self.force_resync(e),
                }
            }
        }
    }

    fn applied(&self, changes: &ChangeSet) {
        self.store
            .with_replica(|replica| replica.map(|r| (self.on_applied)(r, changes)));
    }

    /// Installs a snapshot. Returns the differences to publish, or `None` when there was no
    /// previous state to compare with (start-up: the state is in the objects, not signals).
    fn replace(
        &self,
        layout: Arc<Layout>,
        snapshot: Update,
    ) -> Result<Option<ChangeSet>, Inconsistency> {
        self.store.write(|slot| match slot {
            Some(replica) if **replica.layout() == *layout => replica.replace(snapshot).map(Some),
            Some(replica) => {
                // A new schema (an online conversion): compared over the columns both
                // have, so that only real differences are published.
                tracing::info!(
                    from = replica.layout().schema_version,
                    to = layout.schema_version,
                    "the database schema changed; comparing over the columns both versions have"
                );
                let mut migrated = replica.relayout(layout, &snapshot)?;
                let changes = migrated.replace(snapshot)?;
                *replica = migrated;
                Ok(Some(changes))
            }
            None => {
                // Into an empty replica a snapshot is just inserts (anything else is an
                // inconsistency there too): one pass instead of building and diffing.
                let mut replica = Replica::new(layout);
                replica.apply(snapshot)?;
                *slot = Some(replica);
                Ok(None)
            }
        })
    }

    fn force_resync(&mut self, error: Inconsistency) {
        tracing::error!("{error}; forcing a full resync");
        self.discarding = true;
        self.resync.notify_one();
    }
}
