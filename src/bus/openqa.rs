//! openQA compatibility (`--openqa-compat`): `org.opensuse.os_autoinst.switch` at `/switch`,
//! with the checks and OVSDB effect of os-autoinst-openvswitch, so its existing clients work
//! unchanged. Methods answer `(i return_code, s message)`: 0 and `""` on success.

use super::error::MethodError;
use super::read;
use super::switch::Writer;
use crate::ovsdb::txn;
use crate::replica::layout::TableId;

pub const OPENQA_NAME: &str = "org.opensuse.os_autoinst.switch";
pub const OPENQA_PATH: &str = "/switch";

pub struct OpenQaSwitch {
    pub writer: Writer,
    /// The bridge the VM taps must be on (`--openqa-bridge`).
    pub bridge: String,
}

/// The original only accepts taps named like `tap12`.
fn valid_tap(tap: &str) -> bool {
    tap.strip_prefix("tap")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn answer(method: &str, result: Result<(), MethodError>) -> (i32, String) {
    match result {
        Ok(()) => (0, String::new()),
        Err(e) => {
            tracing::info!(method, "openQA call refused: {e}");
            (1, e.to_string())
        }
    }
}

impl OpenQaSwitch {
    async fn vlan_change(
        &self,
        method: &str,
        tap: &str,
        vlan: u32,
        build: fn(crate::ovsdb::datum::Uuid, u16) -> serde_json::Value,
    ) -> (i32, String) {
        let result = async {
            if !valid_tap(tap) {
                return Err(MethodError::InvalidArgs(format!(
                    "'{tap}' does not fit the naming scheme"
                )));
            }
            let vlan = txn::validate_vlan(vlan).map_err(MethodError::InvalidArgs)?;
            let params = self.writer.shared.read(|replica| {
                let (port, _) = replica.find(TableId::Port, tap).ok_or_else(|| {
                    MethodError::NotFound(format!("'{tap}' is not connected to any bridge"))
                })?;
                let bridge = replica
                    .parent(TableId::Port, port)
                    .and_then(|b| replica.row(TableId::Bridge, b))
                    .map(|row| replica.name_of(TableId::Bridge, row))
                    .unwrap_or_default();
                if bridge != self.bridge {
                    return Err(MethodError::InvalidArgs(format!(
                        "'{tap}' is not connected to bridge '{}'",
                        self.bridge
                    )));
                }
                Ok(build(port, vlan))
            })?;
            self.writer.transact(params, true).await.map(|_| ())
        };
        let result = self.writer.shared.counted(method, result.await);
        answer(method, result)
    }
}

/// `org.opensuse.os_autoinst.switch`, called by the dispatcher.
impl OpenQaSwitch {
    /// Puts `tap` in `vlan`: `tag=VLAN vlan_mode=dot1q-tunnel`.
    pub async fn set_vlan(&self, tap: &str, vlan: u32) -> (i32, String) {
        self.vlan_change("set_vlan", tap, vlan, txn::openqa_set_vlan)
            .await
    }

    /// Takes `tap` out of `vlan` (its tag is removed if it is that VLAN).
    pub async fn unset_vlan(&self, tap: &str, vlan: u32) -> (i32, String) {
        self.vlan_change("unset_vlan", tap, vlan, txn::openqa_unset_vlan)
            .await
    }

    /// The switch in `ovs-vsctl show` layout.
    pub async fn show(&self) -> (i32, String) {
        let result = self
            .writer
            .shared
            .read(|replica| Ok(crate::cli::show::render(&read::show(replica))));
        match self.writer.shared.counted("show", result) {
            Ok(text) => (0, text),
            Err(e) => (1, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_follow_the_original_scheme() {
        for ok in ["tap0", "tap12"] {
            assert!(valid_tap(ok), "{ok}");
        }
        for bad in ["tap", "tapx", "eth0", "tap1a", "tap-1", " tap1", "TAP1"] {
            assert!(!valid_tap(bad), "{bad}");
        }
    }
}
