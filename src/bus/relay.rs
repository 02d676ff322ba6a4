//! The `org.ovsdbus.Relay1` interface on the root object: the relay's own properties and
//! the typed signals (declared here so introspection lists them; the publisher emits them).

use super::value::VariantDict;
use crate::event::State;
use crate::replica::Replica;
use crate::replica::layout::TableId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use zbus::interface;
use zbus::object_server::SignalEmitter;

/// State shared by the publisher (the only writer) and the D-Bus method handlers.
#[derive(Debug)]
pub struct Shared {
    /// `None` until the first snapshot arrives.
    pub replica: RwLock<Option<Replica>>,
    pub status: Mutex<Status>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub remote: String,
    pub last_seq: u64,
}

impl Shared {
    pub fn new(remote: String) -> Arc<Self> {
        Arc::new(Self {
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

    fn root_string(&self, column: &str, key: Option<&str>) -> String {
        self.with_replica(|r| r.map(|r| r.root_string(column, key)).unwrap_or_default())
    }
}

pub struct RelayInterface {
    pub shared: Arc<Shared>,
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
