//! The `org.ovsdbus.Relay1` interface on the root object: the relay's own properties and
//! the typed signals (declared here so introspection lists them; the publisher emits them).

use super::error::MethodError;
use super::read::{self, BridgeEntry, InterfaceEntry, PortEntry, table_arg};
use super::value::VariantDict;
use super::waiters::{Outcome, Registration, Waiters, Want};
use crate::event::State;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::replica::condition::Condition;
use crate::replica::layout::TableId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

/// State shared by the publisher (the only writer) and the D-Bus method handlers.
pub struct Shared {
    /// `None` until the first snapshot arrives.
    pub replica: RwLock<Option<Replica>>,
    pub status: Mutex<Status>,
    pub waiters: Waiters,
    pub metrics: Arc<Metrics>,
    /// Position of the last notification applied to the replica (see
    /// [`crate::ovsdb::client::Reply::watermark`]).
    pub applied: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub remote: String,
    pub last_seq: u64,
}

impl Shared {
    pub fn new(remote: String, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            waiters: Waiters::default(),
            metrics,
            applied: tokio::sync::watch::Sender::new(0),
            replica: RwLock::new(None),
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

    /// Runs `read` on the replica under the read lock (never held across an await).
    pub fn with_replica<R>(&self, read: impl FnOnce(Option<&Replica>) -> R) -> R {
        read(
            self.replica
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref(),
        )
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

    /// Records that every notification up to `index` is in the replica.
    pub fn mark_applied(&self, index: u64) {
        self.applied.send_if_modified(|applied| {
            let advanced = index > *applied;
            if advanced {
                *applied = index;
            }
            advanced
        });
    }

    /// Waits until the notifications up to `watermark` are applied.
    pub async fn applied_up_to(
        &self,
        watermark: u64,
        timeout: Duration,
    ) -> Result<(), MethodError> {
        let mut applied = self.applied.subscribe();
        match tokio::time::timeout(timeout, applied.wait_for(|a| *a >= watermark)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(MethodError::Timeout(format!(
                "the change was committed but did not reach the relay within {timeout:?}"
            ))),
        }
    }

    /// Counts a method call by name and outcome.
    pub fn counted<T>(
        &self,
        method: &str,
        result: Result<T, MethodError>,
    ) -> Result<T, MethodError> {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .method_calls
            .with_label_values(&[method, outcome])
            .inc();
        result
    }

    fn root_string(&self, column: &str, key: Option<&str>) -> String {
        self.with_replica(|r| r.map(|r| r.root_string(column, key)).unwrap_or_default())
    }
}

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
        header: &Header<'_>,
    ) -> Result<Outcome, MethodError> {
        let caller = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let (id, reply) =
            match self
                .shared
                .waiters
                .register(&self.shared, table, name, want, &caller)?
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
}

#[interface(name = "org.ovsdbus.Relay1")]
impl RelayInterface {
    /// `connecting`, `syncing`, `ready` or `reconnecting`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.shared.status().state.as_str().to_owned()
    }

    /// The OVSDB remote in use (or being tried).
    #[zbus(property)]
    fn remote(&self) -> String {
        self.shared.status().remote
    }

    #[zbus(property)]
    fn schema_version(&self) -> String {
        self.shared.with_replica(|r| {
            r.map(|r| r.layout().schema_version.clone())
                .unwrap_or_default()
        })
    }

    #[zbus(property)]
    fn ovs_version(&self) -> String {
        self.shared.root_string("ovs_version", None)
    }

    #[zbus(property)]
    fn system_id(&self) -> String {
        self.shared.root_string("external_ids", Some("system-id"))
    }

    /// `seq` of the last typed signal sent.
    #[zbus(property(emits_changed_signal = "false"))]
    fn last_seq(&self) -> u64 {
        self.shared.status().last_seq
    }

    /// Rows per table, keyed by lower-case table name.
    #[zbus(property(emits_changed_signal = "false"))]
    fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.with_replica(|r| {
            TableId::PUBLISHED
                .into_iter()
                .map(|t| (t.label().to_owned(), r.map_or(0, |r| r.len(t) as u64)))
                .collect()
        })
    }

    /// Every bridge: name, uuid, object path.
    #[zbus(out_args("bridges"))]
    fn list_bridges(&self) -> Result<Vec<BridgeEntry>, MethodError> {
        self.shared.counted(
            "ListBridges",
            self.shared.read(|r| Ok(read::list_bridges(r))),
        )
    }

    /// Ports of `bridge` (`""`: all): name, bridge, uuid, object path.
    #[zbus(out_args("ports"))]
    fn list_ports(&self, bridge: &str) -> Result<Vec<PortEntry>, MethodError> {
        self.shared.counted(
            "ListPorts",
            self.shared.read(|r| read::list_ports(r, bridge)),
        )
    }

    /// Interfaces of `bridge` (`""`: all): name, port, bridge, uuid, object path.
    #[zbus(out_args("interfaces"))]
    fn list_interfaces(&self, bridge: &str) -> Result<Vec<InterfaceEntry>, MethodError> {
        self.shared.counted(
            "ListInterfaces",
            self.shared.read(|r| read::list_interfaces(r, bridge)),
        )
    }

    /// One row's mirrored columns (plus `_uuid`).
    #[zbus(out_args("row"))]
    fn get_row(&self, table: &str, name: &str) -> Result<VariantDict, MethodError> {
        let result =
            table_arg(table).and_then(|table| self.shared.read(|r| read::get_row(r, table, name)));
        self.shared.counted("GetRow", result)
    }

    /// Bridges → ports → interfaces with their key columns, as JSON.
    #[zbus(out_args("json"))]
    fn show(&self) -> Result<String, MethodError> {
        self.shared
            .counted("Show", self.shared.read(|r| Ok(read::show(r).to_string())))
    }

    /// Replies with the row once every condition (`ovs-vsctl wait-until` syntax) holds.
    #[zbus(out_args("row"))]
    async fn wait_for(
        &self,
        table: &str,
        name: &str,
        conditions: Vec<String>,
        timeout_ms: u32,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<VariantDict, MethodError> {
        let result = async {
            let table = table_arg(table)?;
            let conditions = self.shared.read(|r| {
                let layout = r.layout().table(table);
                conditions
                    .iter()
                    .map(|c| Condition::parse(layout, c).map_err(MethodError::InvalidArgs))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            match self
                .wait(table, name, Want::Row(conditions), timeout_ms, &header)
                .await?
            {
                Outcome::Row(row) => Ok(row),
                Outcome::Removed => Err(MethodError::Failed("unexpected removal outcome".into())),
            }
        };
        self.shared.counted("WaitFor", result.await)
    }

    /// Replies once no row of `table` is named `name`.
    async fn wait_for_removal(
        &self,
        table: &str,
        name: &str,
        timeout_ms: u32,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), MethodError> {
        let result = async {
            let table = table_arg(table)?;
            self.wait(table, name, Want::Removal, timeout_ms, &header)
                .await
                .map(|_| ())
        };
        self.shared.counted("WaitForRemoval", result.await)
    }

    // The nine typed signals of SPEC §4 are declared one by one because the interface
    // macro builds the introspection data from these declarations; the publisher emits
    // all nine through one generic path (`Publisher::emit_change`), not through these.
    #[zbus(signal)]
    async fn bridge_added(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        columns: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn bridge_changed(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        changed: VariantDict,
        old: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn bridge_removed(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        last: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn port_added(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        columns: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn port_changed(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        changed: VariantDict,
        old: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn port_removed(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        last: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn interface_added(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        columns: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn interface_changed(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        changed: VariantDict,
        old: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn interface_removed(
        e: &SignalEmitter<'_>,
        name: &str,
        bridge: &str,
        uuid: &str,
        last: VariantDict,
        meta: VariantDict,
    ) -> zbus::Result<()>;
    /// After a reconnect: how many rows were added, changed and removed while away.
    #[zbus(signal)]
    pub async fn resynced(
        e: &SignalEmitter<'_>,
        added: u64,
        changed: u64,
        removed: u64,
        meta: VariantDict,
    ) -> zbus::Result<()>;
}
