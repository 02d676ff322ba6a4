//! Errors at the bus boundary: what a D-Bus caller sees. Names are SPEC §2's
//! `org.ovsdbus.Error.*`, plus the standard `InvalidArgs` and `LimitsExceeded`.

use zbus::message::Header;
use zbus::names::ErrorName;
use zbus::{DBusError, Message};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    NotConnected(String),
    #[error("{0}")]
    TransactionFailed(String),
    #[error("{0}")]
    InvalidArgs(String),
    #[error("{0}")]
    LimitsExceeded(String),
    #[error("{0}")]
    Failed(String),
    /// The standard errors of a method call's routing: no such object, interface, method
    /// or property, or a property that cannot be set.
    #[error("{0}")]
    UnknownObject(String),
    #[error("{0}")]
    UnknownInterface(String),
    #[error("{0}")]
    UnknownMethod(String),
    #[error("{0}")]
    UnknownProperty(String),
    #[error("{0}")]
    PropertyReadOnly(String),
    /// polkit refused the caller.
    #[error("{0}")]
    AccessDenied(String),
    /// polkit would ask the caller to authenticate, which the call did not allow.
    #[error("{0}")]
    InteractiveAuthorizationRequired(String),
}

impl MethodError {
    pub fn name_str(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "org.ovsdbus.Error.NotFound",
            Self::AlreadyExists(_) => "org.ovsdbus.Error.AlreadyExists",
            Self::Timeout(_) => "org.ovsdbus.Error.Timeout",
            Self::NotConnected(_) => "org.ovsdbus.Error.NotConnected",
            Self::TransactionFailed(_) => "org.ovsdbus.Error.TransactionFailed",
            Self::InvalidArgs(_) => "org.freedesktop.DBus.Error.InvalidArgs",
            Self::LimitsExceeded(_) => "org.freedesktop.DBus.Error.LimitsExceeded",
            Self::Failed(_) => "org.freedesktop.DBus.Error.Failed",
            Self::UnknownObject(_) => "org.freedesktop.DBus.Error.UnknownObject",
            Self::UnknownInterface(_) => "org.freedesktop.DBus.Error.UnknownInterface",
            Self::UnknownMethod(_) => "org.freedesktop.DBus.Error.UnknownMethod",
            Self::UnknownProperty(_) => "org.freedesktop.DBus.Error.UnknownProperty",
            Self::PropertyReadOnly(_) => "org.freedesktop.DBus.Error.PropertyReadOnly",
            Self::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            Self::InteractiveAuthorizationRequired(_) => {
                "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
            }
        }
    }

    fn text(&self) -> &str {
        match self {
            Self::NotFound(t)
            | Self::AlreadyExists(t)
            | Self::Timeout(t)
            | Self::NotConnected(t)
            | Self::TransactionFailed(t)
            | Self::InvalidArgs(t)
            | Self::LimitsExceeded(t)
            | Self::Failed(t)
            | Self::UnknownObject(t)
            | Self::UnknownInterface(t)
            | Self::UnknownMethod(t)
            | Self::UnknownProperty(t)
            | Self::PropertyReadOnly(t)
            | Self::AccessDenied(t)
            | Self::InteractiveAuthorizationRequired(t) => t,
        }
    }
}

impl DBusError for MethodError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name_str()).build(&self.text())
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.name_str())
    }

    fn description(&self) -> Option<&str> {
        Some(self.text())
    }
}

impl From<zbus::Error> for MethodError {
    fn from(e: zbus::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<zbus::fdo::Error> for MethodError {
    fn from(e: zbus::fdo::Error) -> Self {
        Self::Failed(e.to_string())
    }
}
