//! The state shared by the bus side, and `org.ovsdbus.Relay1` on the root object: the
//! relay's own properties and the read methods (the dispatcher routes calls here; the
//! publisher emits the typed signals).

use super::error::MethodError;
use super::read::{self, BridgeEntry, InterfaceEntry, PortEntry, table_arg};
use super::value::VariantDict;
use super::waiters::{Conditions, Outcome, Registration, Waiters, Want};
use crate::engine::Store;
use crate::event::State;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::replica::layout::TableId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zbus::{OwnedVariant, Variant};

/// State shared by the publisher and the D-Bus method handlers. The replica itself is in
/// the engine's [`Store`]: every reader loads an immutable version from there.
pub struct Shared {
    pub store: Arc<Store>,
    pub status: Mutex<Status>,
    pub waiters: Waiters,
    pub metrics: Arc<Metrics>,
    /// How long the publisher's current send has waited for the bus, for `/healthz`.
    pub sending: SendClock,
}

/// When the publisher's current send began. A bus that takes nothing (dbus-daemon stopped
/// or hung with the connection still open) shows as a send that does not end, which the
/// connection state alone cannot show.
pub struct SendClock {
    base: std::time::Instant,
    /// Milliseconds from `base` to the start of the send in progress, plus one; 0 when
    /// none is.
    since: std::sync::atomic::AtomicU64,
}

impl SendClock {
    fn new() -> Self {
        Self {
            base: std::time::Instant::now(),
            since: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn started(&self) {
        self.since
            .store(self.now() + 1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn finished(&self) {
        self.since.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the send in progress has waited; `None` when nothing is being sent.
    pub fn waiting(&self) -> Option<Duration> {
        match self.since.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now().saturating_sub(since - 1))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub remote: String,
    pub last_seq: u64,
}

impl Shared {
    pub fn new(remote: String, metrics: Arc<Metrics>, store: Arc<Store>) -> Arc<Self> {
        Arc::new(Self {
            waiters: Waiters::new(metrics.waiters.clone()),
            sending: SendClock::new(),
            metrics,
            store,
            status: Mutex::new(Status {
                state: State::Connecting,
                remote,
                last_seq: 0,
            }),
        })
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs `read` on the current version of the replica.
    pub fn with_replica<R>(&self, read: impl FnOnce(Option<&Replica>) -> R) -> R {
        self.store.with_replica(read)
    }

    /// The current version, to keep beyond one short read (a long reply, a stream).
    pub fn snapshot(&self) -> Option<Arc<Replica>> {
        self.store.snapshot()
    }

    /// Runs `read` on the synced replica; before the first snapshot, `NotConnected`.
    pub fn read<R>(
        &self,
        read: impl FnOnce(&Replica) -> Result<R, MethodError>,
    ) -> Result<R, MethodError> {
        self.with_replica(|r| match r {
            Some(replica) => read(replica),
            None => Err(MethodError::NotConnected(
                "the relay has not synced with OVSDB yet".into(),
            )),
        })
    }

    /// Waits until the notifications up to `watermark` are applied.
    pub async fn applied_up_to(
        &self,
        watermark: u64,
        timeout: Duration,
    ) -> Result<(), MethodError> {
        if self.store.applied_up_to(watermark, timeout).await {
            Ok(())
        } else {
            Err(MethodError::Timeout(format!(
                "the change was committed but did not reach the relay within {timeout:?}"
            )))
        }
    }

    /// Counts a method call by name and outcome.
    pub fn counted<T>(
        &self,
        method: &str,
        result: Result<T, MethodError>,
    ) -> Result<T, MethodError> {
        self.count(method, result.is_ok());
        result
    }

    /// Counts one answered call of `method` in `ovsdbus_method_calls_total`.
    pub fn count(&self, method: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.metrics
            .method_calls
            .with_label_values(&[method, outcome])
            .inc();
    }

    pub fn root_string(&self, column: &str, key: Option<&str>) -> String {
        self.with_replica(|r| r.map(|r| r.root_string(column, key)).unwrap_or_default())
    }
}

/// `org.ovsdbus.Relay1` on the root object: the relay's own properties and the read
/// methods. The typed signals it declares are emitted by the publisher.
pub struct RelayInterface {
    pub shared: Arc<Shared>,
}

impl RelayInterface {
    async fn wait(
        &self,
        table: TableId,
        name: &str,
        want: Want,
        timeout_ms: u32,
        caller: &str,
    ) -> Result<Outcome, MethodError> {
        let (id, reply) =
            match self
                .shared
                .waiters
                .register(&self.shared, table, name, want, caller)?
            {
                Registration::Done(outcome) => return Ok(outcome),
                Registration::Pending { id, reply } => (id, reply),
            };
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(MethodError::Failed("waiter dropped".into())),
            Err(_) => {
                self.shared.waiters.cancel(table, name, id);
                Err(MethodError::Timeout(format!(
                    "{table} {name:?}: not satisfied within {timeout_ms} ms"
                )))
            }
        }
    }

    /// One property by its D-Bus name; `None` for a name the interface does not have.
    pub fn property(&self, name: &str) -> Option<OwnedVariant> {
        let status = || self.shared.status();
        let value = match name {
            "State" => Variant::from(status().state.as_str()),
            "Remote" => Variant::from(status().remote),
            "SchemaVersion" => Variant::from(self.shared.with_replica(|r| {
                r.map(|r| r.layout().schema_version.clone())
                    .unwrap_or_default()
            })),
            "OvsVersion" => Variant::from(self.shared.root_string("ovs_version", None)),
            "SystemId" => Variant::from(self.shared.root_string("external_ids", Some("system-id"))),
            "LastSeq" => Variant::from(status().last_seq),
            "Counts" => Variant::from(self.counts()),
            _ => return None,
        };
        value.try_into_owned().ok()
    }

    /// Rows per table, keyed by lower-case table name.
    fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.with_replica(|r| {
            TableId::PUBLISHED
                .into_iter()
                .map(|t| (t.label().to_owned(), r.map_or(0, |r| r.len(t) as u64)))
                .collect()
        })
    }

    /// Every bridge: name, uuid, object path.
    pub fn list_bridges(&self) -> Result<Vec<BridgeEntry>, MethodError> {
        self.shared.counted(
            "ListBridges",
            self.shared.read(|r| Ok(read::list_bridges(r))),
        )
    }

    /// Ports of `bridge` (`""`: all): name, bridge, uuid, object path.
    pub fn list_ports(&self, bridge: &str) -> Result<Vec<PortEntry>, MethodError> {
        self.shared.counted(
            "ListPorts",
            self.shared.read(|r| read::list_ports(r, bridge)),
        )
    }

    /// Interfaces of `bridge` (`""`: all): name, port, bridge, uuid, object path.
    pub fn list_interfaces(&self, bridge: &str) -> Result<Vec<InterfaceEntry>, MethodError> {
        self.shared.counted(
            "ListInterfaces",
            self.shared.read(|r| read::list_interfaces(r, bridge)),
        )
    }

    /// One row's mirrored columns (plus `_uuid`).
    pub fn get_row(&self, table: &str, name: &str) -> Result<VariantDict, MethodError> {
        let result =
            table_arg(table).and_then(|table| self.shared.read(|r| read::get_row(r, table, name)));
        self.shared.counted("GetRow", result)
    }

    /// Bridges → ports → interfaces with their key columns, as JSON.
    pub fn show(&self) -> Result<String, MethodError> {
        self.shared
            .counted("Show", self.shared.read(|r| Ok(read::show(r).to_string())))
    }

    /// Replies with the row once every condition (`ovs-vsctl wait-until` syntax) holds.
    pub async fn wait_for(
        &self,
        table: &str,
        name: &str,
        conditions: Vec<String>,
        timeout_ms: u32,
        caller: &str,
    ) -> Result<VariantDict, MethodError> {
        let result = async {
            let table = table_arg(table)?;
            let conditions = self.shared.read(|r| {
                Conditions::parse(r.layout(), table, conditions).map_err(MethodError::InvalidArgs)
            })?;
            match self
                .wait(table, name, Want::Row(conditions), timeout_ms, caller)
                .await?
            {
                Outcome::Row(row) => Ok(row),
                Outcome::Invalid(why) => Err(MethodError::InvalidArgs(why)),
                Outcome::Removed => Err(MethodError::Failed("unexpected removal outcome".into())),
            }
        };
        self.shared.counted("WaitFor", result.await)
    }

    /// Replies once no row of `table` is named `name`.
    pub async fn wait_for_removal(
        &self,
        table: &str,
        name: &str,
        timeout_ms: u32,
        caller: &str,
    ) -> Result<(), MethodError> {
        let result = async {
            let table = table_arg(table)?;
            self.wait(table, name, Want::Removal, timeout_ms, caller)
                .await
                .map(|_| ())
        };
        self.shared.counted("WaitForRemoval", result.await)
    }
}
