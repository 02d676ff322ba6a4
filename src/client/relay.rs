//! The relay's read methods through a zbus proxy, with every failure sorted by what the
//! caller should do about it.

use super::signal::Dict;
use crate::bus::BUS_NAME;
use crate::replica::layout::TableId;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use zbus::{Connection, OwnedObjectPath};

/// `GetManagedObjects`: path → interface → properties.
pub type ManagedObjects = HashMap<OwnedObjectPath, BTreeMap<String, Dict>>;

#[zbus::proxy(
    interface = "org.ovsdbus.Relay1",
    default_service = "org.ovsdbus.Relay1",
    default_path = "/org/ovsdbus/Relay1"
)]
trait Relay1 {
    fn show(&self) -> zbus::Result<String>;
    fn get_row(&self, table: &str, name: &str) -> zbus::Result<Dict>;
    fn list_bridges(&self) -> zbus::Result<Vec<(String, String, OwnedObjectPath)>>;
    fn list_ports(
        &self,
        bridge: &str,
    ) -> zbus::Result<Vec<(String, String, String, OwnedObjectPath)>>;
    fn list_interfaces(
        &self,
        bridge: &str,
    ) -> zbus::Result<Vec<(String, String, String, String, OwnedObjectPath)>>;
    fn wait_for(
        &self,
        table: &str,
        name: &str,
        conditions: &[String],
        timeout_ms: u32,
    ) -> zbus::Result<Dict>;
    fn wait_for_removal(&self, table: &str, name: &str, timeout_ms: u32) -> zbus::Result<()>;
}

/// The relay on one bus connection.
#[derive(Clone)]
pub struct Relay {
    proxy: Relay1Proxy<'static>,
    /// The bus, as error messages name it (`system bus`).
    target: String,
}

impl Relay {
    pub async fn new(conn: &Connection, target: impl Display) -> Result<Relay, CallError> {
        let target = target.to_string();
        // Nothing cached: a client reads each value once anyway.
        let proxy = Relay1Proxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| CallError::classify(e, &target))?;
        Ok(Relay { proxy, target })
    }

    fn classify(&self, error: zbus::Error) -> CallError {
        CallError::classify(error, &self.target)
    }

    /// `Show()`: the switch as JSON text.
    pub async fn show(&self) -> Result<String, CallError> {
        self.proxy.show().await.map_err(|e| self.classify(e))
    }

    /// `GetRow`: every mirrored column of the row, plus `_uuid`.
    pub async fn get_row(&self, table: &str, name: &str) -> Result<Dict, CallError> {
        self.proxy
            .get_row(table, name)
            .await
            .map_err(|e| self.classify(e))
    }

    /// The rows of `table` (on `bridge`, `""` = every bridge) as (name, bridge, uuid); a
    /// bridge's bridge is itself.
    pub async fn list(
        &self,
        table: TableId,
        bridge: &str,
    ) -> Result<Vec<(String, String, String)>, CallError> {
        let classify = |e| self.classify(e);
        Ok(match table {
            TableId::Bridge => self
                .proxy
                .list_bridges()
                .await
                .map_err(classify)?
                .into_iter()
                .filter(|(name, ..)| bridge.is_empty() || name == bridge)
                .map(|(name, uuid, _)| (name.clone(), name, uuid))
                .collect(),
            TableId::Port => self
                .proxy
                .list_ports(bridge)
                .await
                .map_err(classify)?
                .into_iter()
                .map(|(name, bridge, uuid, _)| (name, bridge, uuid))
                .collect(),
            _ => self
                .proxy
                .list_interfaces(bridge)
                .await
                .map_err(classify)?
                .into_iter()
                .map(|(name, _, bridge, uuid, _)| (name, bridge, uuid))
                .collect(),
        })
    }

    /// `WaitFor`: the row once every condition holds.
    pub async fn wait_for(
        &self,
        table: &str,
        name: &str,
        conditions: &[String],
        timeout_ms: u32,
    ) -> Result<Dict, CallError> {
        self.proxy
            .wait_for(table, name, conditions, timeout_ms)
            .await
            .map_err(|e| self.classify(e))
    }

    pub async fn wait_for_removal(
        &self,
        table: &str,
        name: &str,
        timeout_ms: u32,
    ) -> Result<(), CallError> {
        self.proxy
            .wait_for_removal(table, name, timeout_ms)
            .await
            .map_err(|e| self.classify(e))
    }
}

/// A failed method call, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// `org.ovsdbus.Error.Timeout`.
    Timeout(String),
    /// `org.ovsdbus.Error.NotConnected`: the relay runs but has not synced with OVSDB.
    NotConnected(String),
    /// Nobody owns `org.ovsdbus.Relay1` (and it cannot be activated).
    NotRunning(String),
    /// `org.freedesktop.DBus.Error.InvalidArgs`.
    InvalidArgs(String),
    /// Any other error, described in full.
    Other(String),
}

impl CallError {
    pub fn classify(error: zbus::Error, target: &str) -> Self {
        let not_running = || {
            Self::NotRunning(format!(
                "relay not running on the {target} (nobody owns {BUS_NAME})"
            ))
        };
        match error {
            zbus::Error::MethodError(name, description, _) => {
                let description = description.unwrap_or_default();
                match name.as_str() {
                    "org.ovsdbus.Error.Timeout" => Self::Timeout(description),
                    "org.ovsdbus.Error.NotConnected" => Self::NotConnected(description),
                    "org.freedesktop.DBus.Error.InvalidArgs" => Self::InvalidArgs(description),
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner" => not_running(),
                    other => Self::Other(format!("{other}: {description}")),
                }
            }
            zbus::Error::FDO(fdo) => match *fdo {
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                    not_running()
                }
                zbus::fdo::Error::InvalidArgs(description) => Self::InvalidArgs(description),
                other => {
                    use zbus::DBusError;
                    Self::Other(format!(
                        "{}: {}",
                        other.name(),
                        other.description().unwrap_or_default()
                    ))
                }
            },
            zbus::Error::InputOutput(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Self::Other("the relay did not answer in time".into())
            }
            other => Self::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_error_replies_by_name() {
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("x".into())));
        let e = CallError::classify(fdo, "system bus");
        assert!(
            matches!(&e, CallError::NotRunning(m) if m.starts_with("relay not running on the system bus")),
            "{e:?}"
        );
        let invalid = zbus::Error::FDO(Box::new(zbus::fdo::Error::InvalidArgs("col".into())));
        assert_eq!(
            CallError::classify(invalid, "system bus"),
            CallError::InvalidArgs("col".into())
        );
    }
}
