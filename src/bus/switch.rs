//! `org.ovsdbus.Switch1`: the policy-guarded write methods (SPEC §6). Each call is one
//! OVSDB transaction written by the relay itself. Like plain `ovs-vsctl`, it also bumps
//! `next_cfg` and replies once ovs-vswitchd has applied the change (`cur_cfg` caught up),
//! bounded by `--vswitchd-timeout`; with `--no-wait` (or the call's `no_wait` option) it
//! replies once the relay's own replica shows the change. Either way a caller can read
//! the new state right away.

use super::error::MethodError;
use super::relay::Shared;
use crate::ovsdb::client::{Client, ClientError};
use crate::ovsdb::datum::Uuid;
use crate::ovsdb::txn;
use crate::replica::Replica;
use crate::replica::layout::TableId;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use zbus::OwnedVariant;

/// How long a write waits for its own update to come back before giving up.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes through the live OVSDB connection and waits for the replica to catch up.
#[derive(Clone)]
pub struct Writer {
    pub shared: Arc<Shared>,
    pub client: watch::Receiver<Option<Client>>,
    /// How long a write waits for ovs-vswitchd to apply it; `None`: it does not wait
    /// (`--no-wait`).
    pub vswitchd: Option<Duration>,
}

impl Writer {
    /// Runs one write transaction; `wait`: also wait for ovs-vswitchd, unless the relay
    /// runs with `--no-wait`.
    pub async fn transact(&self, mut params: Json, wait: bool) -> Result<Json, MethodError> {
        let vswitchd = self.vswitchd.filter(|_| wait);
        if vswitchd.is_some() {
            txn::bump_next_cfg(&mut params);
        }
        let reply = self
            .client()?
            .request_with_watermark("transact", params)
            .await
            .map_err(request_error)?;
        txn::check_reply(&reply.result).map_err(classify)?;
        self.shared
            .applied_up_to(reply.watermark, APPLY_TIMEOUT)
            .await?;
        if let Some(timeout) = vswitchd {
            let next_cfg = txn::bumped_next_cfg(&reply.result).ok_or_else(|| {
                MethodError::Failed("the transaction's reply has no next_cfg".into())
            })?;
            let applied = |replica: &Replica| {
                replica
                    .root_integer("cur_cfg")
                    .is_some_and(|cur| cur >= next_cfg)
            };
            if !self.shared.store.wait_until(timeout, applied).await {
                return Err(MethodError::Timeout(format!(
                    "the change is committed in OVSDB, but ovs-vswitchd has not applied it \
                     within {} s (is ovs-vswitchd running?)",
                    timeout.as_secs_f64()
                )));
            }
        }
        Ok(reply.result)
    }

    /// Runs a read-only transaction on the server (what the replica does not mirror).
    pub async fn read(&self, params: Json) -> Result<Json, MethodError> {
        let reply = self
            .client()?
            .request("transact", params)
            .await
            .map_err(request_error)?;
        txn::check_reply(&reply).map_err(MethodError::TransactionFailed)?;
        Ok(reply)
    }

    fn client(&self) -> Result<Client, MethodError> {
        self.client
            .borrow()
            .clone()
            .ok_or_else(|| MethodError::NotConnected("not connected to OVSDB".into()))
    }
}

fn request_error(error: ClientError) -> MethodError {
    match error {
        ClientError::Rpc(error) => MethodError::TransactionFailed(error.to_string()),
        other => MethodError::NotConnected(format!("OVSDB connection lost: {other}")),
    }
}

/// After ovs-vswitchd applied a new bridge or port: the error it recorded on the new
/// interface, as `ovs-vsctl` reports it.
fn setup_error(replica: &Replica, interface: &str) -> Result<(), MethodError> {
    let error = replica
        .find(TableId::Interface, interface)
        .and_then(|(_, row)| replica.column(TableId::Interface, row, "error"))
        .and_then(|error| error.first())
        .and_then(|atom| atom.as_str())
        .filter(|error| !error.is_empty());
    match error {
        Some(error) => Err(MethodError::TransactionFailed(format!(
            "error detected while setting up {interface:?}: {error} (see the ovs-vswitchd log)"
        ))),
        None => Ok(()),
    }
}

/// Maps the server's error text to the error a caller can act on.
fn classify(text: String) -> MethodError {
    if text.contains("constraint violation") {
        MethodError::AlreadyExists(text)
    } else if text.contains("\"where\" clause test failed") {
        MethodError::NotFound(format!("the row changed or disappeared meanwhile: {text}"))
    } else {
        MethodError::TransactionFailed(text)
    }
}

/// `a{sv}` options: typed access, and anything left over is an error.
struct Options(HashMap<String, OwnedVariant>);

impl Options {
    fn take<T>(&mut self, key: &str) -> Result<Option<T>, MethodError>
    where
        T: TryFrom<OwnedVariant>,
    {
        let Some(value) = self.0.remove(key) else {
            return Ok(None);
        };
        let signature = value.value_signature().to_string();
        T::try_from(value).map(Some).map_err(|_| {
            MethodError::InvalidArgs(format!("option {key:?} has the wrong type {signature}"))
        })
    }

    fn finish(self) -> Result<(), MethodError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(key) => Err(MethodError::InvalidArgs(format!("unknown option {key:?}"))),
        }
    }
}

fn invalid(e: String) -> MethodError {
    MethodError::InvalidArgs(e)
}

fn not_found(table: TableId, name: &str) -> MethodError {
    MethodError::NotFound(format!("no {table} named {name:?}"))
}

fn root(replica: &Replica) -> Result<Uuid, MethodError> {
    replica
        .rows(TableId::Root)
        .next()
        .map(|(uuid, _)| uuid)
        .ok_or_else(|| MethodError::NotConnected("the database has no Open_vSwitch row".into()))
}

/// A port's uuid and the bridge it is on.
fn port_and_bridge(replica: &Replica, name: &str) -> Option<(Uuid, Option<Uuid>)> {
    let (port, _) = replica.find(TableId::Port, name)?;
    Some((port, replica.parent(TableId::Port, port)))
}

/// `AddPort` of a port that exists: with `may_exist`, success only if it already is what
/// the call asks for, i.e. on `bridge` with exactly one interface of its own name (the
/// checks of `ovs-vsctl --may-exist add-port`); otherwise `AlreadyExists`, saying why.
fn existing_port(
    replica: &Replica,
    port: &str,
    port_uuid: Uuid,
    on: Option<Uuid>,
    bridge: &str,
    bridge_uuid: Uuid,
    may_exist: bool,
) -> Result<(), MethodError> {
    if !may_exist {
        return Err(MethodError::AlreadyExists(format!("port {port:?} exists")));
    }
    if on != Some(bridge_uuid) {
        let other = on
            .and_then(|b| replica.row(TableId::Bridge, b))
            .map(|row| replica.name_of(TableId::Bridge, row))
            .unwrap_or_default();
        return Err(MethodError::AlreadyExists(format!(
            "port {port:?} exists on bridge {other:?}, not on {bridge:?}"
        )));
    }
    let mut interfaces: Vec<String> = replica
        .rows(TableId::Interface)
        .filter(|(uuid, _)| replica.parent(TableId::Interface, *uuid) == Some(port_uuid))
        .map(|(_, row)| replica.name_of(TableId::Interface, row).to_owned())
        .collect();
    interfaces.sort();
    if interfaces != [port] {
        return Err(MethodError::AlreadyExists(format!(
            "port {port:?} exists with interface(s) {}",
            interfaces.join(", ")
        )));
    }
    Ok(())
}

pub struct SwitchInterface {
    pub writer: Writer,
}

impl SwitchInterface {
    fn shared(&self) -> &Shared {
        &self.writer.shared
    }

    /// Runs a write and counts it. `wait`: wait for ovs-vswitchd (see [`Writer`]);
    /// `created`: the interface a new bridge or port brings, whose setup error, once
    /// ovs-vswitchd applied it, fails the call.
    async fn write(
        &self,
        method: &str,
        wait: bool,
        created: Option<&str>,
        build: impl FnOnce(&Replica) -> Result<Option<Json>, MethodError>,
    ) -> Result<(), MethodError> {
        let result = async {
            // `None`: nothing to do (`may_exist`/`if_exists` and the state is already so).
            let Some(params) = self.shared().read(build)? else {
                return Ok(());
            };
            self.writer.transact(params, wait).await?;
            match created {
                Some(interface) if wait && self.writer.vswitchd.is_some() => self
                    .shared()
                    .read(|replica| setup_error(replica, interface)),
                _ => Ok(()),
            }
        };
        self.shared().counted(method, result.await)
    }
}

/// `org.ovsdbus.Switch1`, called by the dispatcher.
impl SwitchInterface {
    /// Creates a bridge with its local port and interface (as `ovs-vsctl add-br`).
    /// Options: `datapath_type` s, `external_ids` a{ss}, `may_exist` b, `no_wait` b.
    pub async fn add_bridge(
        &self,
        name: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(), MethodError> {
        let mut options = Options(options);
        let no_wait = options.take::<bool>("no_wait");
        let wait = !matches!(no_wait, Ok(Some(true)));
        let parsed = (|| {
            no_wait?;
            let datapath_type: Option<String> = options.take("datapath_type")?;
            let external_ids: BTreeMap<String, String> = options
                .take::<HashMap<String, String>>("external_ids")?
                .unwrap_or_default()
                .into_iter()
                .collect();
            let may_exist: bool = options.take("may_exist")?.unwrap_or(false);
            options.finish()?;
            txn::validate_name(name).map_err(invalid)?;
            Ok::<_, MethodError>((datapath_type, external_ids, may_exist))
        })();
        self.write("AddBridge", wait, Some(name), |replica| {
            let (datapath_type, external_ids, may_exist) = parsed?;
            if replica.find(TableId::Bridge, name).is_some() {
                return if may_exist {
                    Ok(None)
                } else {
                    Err(MethodError::AlreadyExists(format!(
                        "bridge {name:?} exists"
                    )))
                };
            }
            let request = txn::AddBridge {
                name,
                datapath_type: datapath_type.as_deref(),
                external_ids: &external_ids,
            };
            Ok(Some(txn::add_bridge(root(replica)?, &request)))
        })
        .await
    }

    /// Deletes a bridge and everything on it (as `ovs-vsctl del-br`).
    pub async fn delete_bridge(&self, name: &str, if_exists: bool) -> Result<(), MethodError> {
        self.write("DeleteBridge", true, None, |replica| {
            match replica.find(TableId::Bridge, name) {
                Some((bridge, _)) => Ok(Some(txn::delete_bridge(root(replica)?, bridge))),
                None if if_exists => Ok(None),
                None => Err(not_found(TableId::Bridge, name)),
            }
        })
        .await
    }

    /// Adds a port with one interface to `bridge` (as `ovs-vsctl add-port`). Options:
    /// `type` s, `tag` u, `trunks` au, `external_ids` a{ss}, `interface_options` a{ss},
    /// `may_exist` b, `no_wait` b.
    pub async fn add_port(
        &self,
        bridge: &str,
        port: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(), MethodError> {
        let mut options = Options(options);
        let no_wait = options.take::<bool>("no_wait");
        let wait = !matches!(no_wait, Ok(Some(true)));
        let parsed = (|| {
            no_wait?;
            let port_type: Option<String> = options.take("type")?;
            let tag = options
                .take::<u32>("tag")?
                .map(txn::validate_vlan)
                .transpose()
                .map_err(invalid)?;
            let trunks = options
                .take::<Vec<u32>>("trunks")?
                .unwrap_or_default()
                .into_iter()
                .map(txn::validate_vlan)
                .collect::<Result<Vec<u16>, _>>()
                .map_err(invalid)?;
            let map = |v: Option<HashMap<String, String>>| {
                v.unwrap_or_default()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
            };
            let external_ids = map(options.take("external_ids")?);
            let interface_options = map(options.take("interface_options")?);
            let may_exist: bool = options.take("may_exist")?.unwrap_or(false);
            options.finish()?;
            txn::validate_name(port).map_err(invalid)?;
            Ok::<_, MethodError>((
                port_type,
                tag,
                trunks,
                external_ids,
                interface_options,
                may_exist,
            ))
        })();
        self.write("AddPort", wait, Some(port), |replica| {
            let (port_type, tag, trunks, external_ids, interface_options, may_exist) = parsed?;
            let (bridge_uuid, _) = replica
                .find(TableId::Bridge, bridge)
                .ok_or_else(|| not_found(TableId::Bridge, bridge))?;
            if let Some((port_uuid, on)) = port_and_bridge(replica, port) {
                return existing_port(replica, port, port_uuid, on, bridge, bridge_uuid, may_exist)
                    .map(|()| None);
            }
            let request = txn::AddPort {
                name: port,
                port_type: port_type.as_deref(),
                tag,
                trunks: &trunks,
                external_ids: &external_ids,
                interface_options: &interface_options,
            };
            Ok(Some(txn::add_port(bridge_uuid, &request)))
        })
        .await
    }

    /// Removes a port from its bridge (as `ovs-vsctl del-port`).
    pub async fn delete_port(&self, port: &str, if_exists: bool) -> Result<(), MethodError> {
        self.write("DeletePort", true, None, |replica| {
            let Some((port_uuid, bridge)) = port_and_bridge(replica, port) else {
                return if if_exists {
                    Ok(None)
                } else {
                    Err(not_found(TableId::Port, port))
                };
            };
            let bridge = bridge
                .ok_or_else(|| MethodError::NotFound(format!("port {port:?} is on no bridge")))?;
            if replica
                .find(TableId::Bridge, port)
                .is_some_and(|(b, _)| b == bridge)
            {
                return Err(MethodError::InvalidArgs(format!(
                    "{port:?} is the local port of its bridge; delete the bridge instead"
                )));
            }
            Ok(Some(txn::delete_port(bridge, port_uuid)))
        })
        .await
    }

    /// Sets the access VLAN of a port (`tag`).
    pub async fn set_vlan(&self, port: &str, tag: u32) -> Result<(), MethodError> {
        self.write("SetVlan", true, None, |replica| {
            let tag = txn::validate_vlan(tag).map_err(invalid)?;
            let (uuid, _) = replica
                .find(TableId::Port, port)
                .ok_or_else(|| not_found(TableId::Port, port))?;
            Ok(Some(txn::set_vlan(uuid, tag)))
        })
        .await
    }

    /// Clears the access VLAN of a port.
    pub async fn clear_vlan(&self, port: &str) -> Result<(), MethodError> {
        self.write("ClearVlan", true, None, |replica| {
            let (uuid, _) = replica
                .find(TableId::Port, port)
                .ok_or_else(|| not_found(TableId::Port, port))?;
            Ok(Some(txn::clear_vlan(uuid)))
        })
        .await
    }

    /// Sets and removes `external_ids` keys of a Bridge, Port or Interface.
    pub async fn set_external_ids(
        &self,
        table: &str,
        name: &str,
        set: HashMap<String, String>,
        remove: Vec<String>,
    ) -> Result<(), MethodError> {
        self.write("SetExternalIds", true, None, |replica| {
            let table = super::read::table_arg(table)?;
            let (uuid, _) = replica
                .find(table, name)
                .ok_or_else(|| not_found(table, name))?;
            let set: BTreeMap<String, String> = set.into_iter().collect();
            Ok(Some(txn::set_external_ids(
                table.name(),
                uuid,
                &set,
                &remove,
            )))
        })
        .await
    }
}
