//! The D-Bus side: names, the connection that owns `org.ovsdbus.Relay1`, the object tree
//! and the single publisher.

pub mod audit;
pub mod dispatch;
pub mod error;
pub mod escape;
pub mod introspect;
pub mod limits;
pub mod link;
pub mod objects;
pub mod openqa;
pub mod polkit;
pub mod projection;
pub mod publisher;
pub mod read;
pub mod relay;
pub mod switch;
pub mod value;
pub mod waiters;

use std::fmt;
use std::sync::Arc;

pub const BUS_NAME: &str = "org.ovsdbus.Relay1";
pub const ROOT_PATH: &str = "/org/ovsdbus/Relay1";
pub const RELAY_INTERFACE: &str = "org.ovsdbus.Relay1";

/// The properties of `org.ovsdbus.Relay1`, in `GetAll` order.
pub const RELAY_PROPERTIES: &[&str] = &[
    "State",
    "Remote",
    "SchemaVersion",
    "OvsVersion",
    "SystemId",
    "LastSeq",
    "Counts",
];

/// Every D-Bus method the relay serves, for per-method metrics.
pub const METHODS: &[&str] = &[
    "ListBridges",
    "ListPorts",
    "ListInterfaces",
    "GetRow",
    "Show",
    "WaitFor",
    "WaitForRemoval",
    "AddBridge",
    "DeleteBridge",
    "AddPort",
    "DeletePort",
    "SetVlan",
    "ClearVlan",
    "SetExternalIds",
    "set_vlan",
    "unset_vlan",
    "show",
];

/// Which bus to join: `system`, `session`, or a D-Bus address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusTarget {
    System,
    Session,
    Address(String),
}

impl BusTarget {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "system" => Ok(Self::System),
            "session" => Ok(Self::Session),
            "" => Err("empty --bus".into()),
            address if address.contains(':') => Ok(Self::Address(address.to_owned())),
            other => Err(format!(
                "{other:?}: expected system, session or a D-Bus address such as unix:path=/run/bus"
            )),
        }
    }

    pub fn builder(&self) -> zbus::connection::Builder<'static> {
        match self {
            Self::System => zbus::connection::Builder::system(),
            Self::Session => zbus::connection::Builder::session(),
            Self::Address(address) => zbus::connection::Builder::address(address.as_str()),
        }
    }
}

impl fmt::Display for BusTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str("system bus"),
            Self::Session => f.write_str("session bus"),
            Self::Address(a) => write!(f, "bus at {a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("{BUS_NAME} is already owned on the {0} (is another relay running?)")]
    NameTaken(BusTarget),
    #[error("cannot connect to the {0}: {1}")]
    Connect(BusTarget, zbus::Error),
    #[error("{name} is already owned on the {target} (is os-autoinst-openvswitch running?)")]
    OpenQaNameTaken {
        name: &'static str,
        target: BusTarget,
    },
    #[error("cannot serve {name} on the {target}: {error}")]
    OpenQa {
        name: &'static str,
        target: BusTarget,
        error: zbus::Error,
    },
}

/// Everything needed to join the bus, again after the bus daemon restarts.
#[derive(Clone)]
pub struct Connector {
    pub target: BusTarget,
    pub service: Arc<dispatch::Service>,
}

impl dispatch::Role {
    /// The well-known name a connection in this role owns.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relay => BUS_NAME,
            Self::OpenQa => openqa::OPENQA_NAME,
        }
    }
}

impl Connector {
    /// Connects, starts answering method calls in `role`, then owns the role's well-known
    /// name without allowing it to be taken over, and without taking it from a running
    /// instance. The dispatcher listens before the name is requested, so no early call goes
    /// unanswered.
    pub async fn connect(&self, role: dispatch::Role) -> Result<zbus::Connection, BusError> {
        let connect_error = |e| BusError::Connect(self.target.clone(), e);
        let conn = self.target.builder().build().await.map_err(connect_error)?;
        dispatch::serve(conn.clone(), self.service.clone(), role)
            .await
            .map_err(connect_error)?;
        let name = role.name();
        let flags = zbus::fdo::RequestNameFlags::DO_NOT_QUEUE;
        match (conn.request_name_with_flags(name, flags).await, role) {
            (Ok(_), _) => Ok(conn),
            (Err(zbus::Error::NameTaken), dispatch::Role::Relay) => {
                Err(BusError::NameTaken(self.target.clone()))
            }
            (Err(zbus::Error::NameTaken), dispatch::Role::OpenQa) => {
                Err(BusError::OpenQaNameTaken {
                    name,
                    target: self.target.clone(),
                })
            }
            (Err(error), dispatch::Role::Relay) => Err(connect_error(error)),
            (Err(error), dispatch::Role::OpenQa) => Err(BusError::OpenQa {
                name,
                target: self.target.clone(),
                error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bus_targets() {
        assert_eq!(BusTarget::parse("system").unwrap(), BusTarget::System);
        assert_eq!(BusTarget::parse("session").unwrap(), BusTarget::Session);
        assert_eq!(
            BusTarget::parse("unix:path=/tmp/x").unwrap(),
            BusTarget::Address("unix:path=/tmp/x".into())
        );
        assert!(BusTarget::parse("sytem").is_err());
        assert!(BusTarget::parse("").is_err());
    }
}
