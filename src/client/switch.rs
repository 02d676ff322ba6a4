//! `org.ovsdbus.Switch1`, the policy-guarded write methods, as a typed zbus proxy. Each
//! call returns once the switch has applied the change (see the README); the errors are
//! the relay's (`org.ovsdbus.Error.*`) as `zbus::Error::MethodError`.

use std::collections::HashMap;
use zbus::Variant;

/// `a{sv}` options of `AddBridge` and `AddPort`.
pub type Options<'a> = HashMap<&'a str, Variant<'a>>;

#[zbus::proxy(
    interface = "org.ovsdbus.Switch1",
    default_service = "org.ovsdbus.Relay1",
    default_path = "/org/ovsdbus/Relay1"
)]
pub trait Switch1 {
    fn add_bridge(&self, name: &str, options: Options<'_>) -> zbus::Result<()>;
    fn delete_bridge(&self, name: &str, if_exists: bool) -> zbus::Result<()>;
    fn add_port(&self, bridge: &str, port: &str, options: Options<'_>) -> zbus::Result<()>;
    fn delete_port(&self, port: &str, if_exists: bool) -> zbus::Result<()>;
    fn set_vlan(&self, port: &str, tag: u32) -> zbus::Result<()>;
    fn clear_vlan(&self, port: &str) -> zbus::Result<()>;
    fn set_external_ids(
        &self,
        table: &str,
        name: &str,
        set: HashMap<&str, &str>,
        remove: &[&str],
    ) -> zbus::Result<()>;
}
