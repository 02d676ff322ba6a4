//! openQA compatibility (`--openqa-compat`): `org.opensuse.os_autoinst.switch` at `/switch`,
//! served on a connection of its own (see [`super::dispatch::Role`]), with the checks,
//! OVSDB effect, return codes and messages of os-autoinst-openvswitch, so that its
//! clients (os-autoinst's qemu backend) work unchanged. Methods answer
//! `(i return_code, s message)`: 0 and `""` on success.
//!
//! The original returns `$?` of the command that failed, the raw wait status: ovs-vsctl's
//! and ip's exit status 1 is 256. The relay returns the same: 1 where the original's own
//! checks fail, 256 for a write the server (or the switch) refuses, ip's status × 256 for
//! bringing the tap up.

use super::error::MethodError;
use super::switch::Writer;
use crate::openqa::{netlink, show};
use crate::ovsdb::datum::Uuid;
use crate::ovsdb::txn;
use crate::replica::layout::TableId;

pub const OPENQA_NAME: &str = "org.opensuse.os_autoinst.switch";
pub const OPENQA_PATH: &str = "/switch";

/// The original's code for its own checks.
const CHECK_FAILED: i32 = 1;
/// `$?` of an ovs-vsctl that exited with status 1, as the original returns it.
const VSCTL_FAILED: i32 = 1 << 8;

pub struct OpenQaSwitch {
    pub writer: Writer,
    /// The bridge the VM taps must be on.
    pub bridge: String,
}

/// What a call answers.
type Answer = (i32, String);

/// The original only accepts taps named like `tap12`.
fn valid_tap(tap: &str) -> bool {
    tap.strip_prefix("tap")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// As ovs-vsctl reports a failure (the original passes its stderr on).
fn vsctl_failure(error: &MethodError) -> Answer {
    (VSCTL_FAILED, format!("ovs-vsctl: {error}\n"))
}

impl OpenQaSwitch {
    /// The original's `_ovs_check`: the tap's name, and `ovs-vsctl port-to-br TAP` must
    /// name the configured bridge (a tap that does not exist fails the same way).
    fn check(&self, tap: &str) -> Result<Uuid, Answer> {
        if !valid_tap(tap) {
            return Err((
                CHECK_FAILED,
                format!("'{tap}' does not fit the naming scheme"),
            ));
        }
        let not_connected = || {
            (
                CHECK_FAILED,
                format!("'{tap}' is not connected to bridge '{}'", self.bridge),
            )
        };
        self.writer
            .shared
            .read(|replica| {
                let found = replica.find(TableId::Port, tap).and_then(|(port, _)| {
                    let bridge = replica.parent(TableId::Port, port)?;
                    let row = replica.row(TableId::Bridge, bridge)?;
                    (replica.name_of(TableId::Bridge, row) == self.bridge).then_some(port)
                });
                Ok(found)
            })
            .map_err(|e| vsctl_failure(&e))?
            .ok_or_else(not_connected)
    }

    /// One of the original's `ovs-vsctl` writes on `tap`'s port, waiting for ovs-vswitchd
    /// as its ovs-vsctl (which has no `--no-wait`) does.
    async fn write(
        &self,
        tap: &str,
        vlan: u32,
        build: fn(Uuid, u16) -> serde_json::Value,
    ) -> Result<(), Answer> {
        let port = self.check(tap)?;
        // ovs-vsctl checks the value against the schema before it writes.
        let vlan = u16::try_from(vlan).ok().filter(|v| *v <= 4095).ok_or_else(|| {
            (
                VSCTL_FAILED,
                format!(
                    "ovs-vsctl: constraint violation: {vlan} is not in the valid range 0 to 4095 (inclusive)\n"
                ),
            )
        })?;
        self.writer
            .transact(build(port, vlan), true)
            .await
            .map(|_| ())
            .map_err(|e| vsctl_failure(&e))
    }

    /// Counts the call in the method metrics (the audit trail logs the writes' outcomes).
    fn counted(&self, method: &str, answer: Answer) -> Answer {
        self.writer.shared.count(method, answer.0 == 0);
        answer
    }
}

/// `org.opensuse.os_autoinst.switch`, called by the dispatcher.
impl OpenQaSwitch {
    /// Puts `tap` in `vlan` (`ovs-vsctl set port TAP tag=VLAN vlan_mode=dot1q-tunnel`),
    /// then brings its link up (`ip link set TAP up`).
    pub async fn set_vlan(&self, tap: &str, vlan: u32) -> Answer {
        let answer = match self.write(tap, vlan, txn::openqa_set_vlan).await {
            Err(answer) => answer,
            Ok(()) => match netlink::set_up(tap).await {
                Ok(()) => (0, String::new()),
                Err(e) => (e.status << 8, format!("Failed to set {tap} up: {e}\n")),
            },
        };
        self.counted("set_vlan", answer)
    }

    /// Takes `tap` out of `vlan` (`ovs-vsctl remove port TAP tag VLAN`).
    pub async fn unset_vlan(&self, tap: &str, vlan: u32) -> Answer {
        let answer = match self.write(tap, vlan, txn::openqa_unset_vlan).await {
            Err(answer) => answer,
            Ok(()) => (0, String::new()),
        };
        self.counted("unset_vlan", answer)
    }

    /// What `ovs-vsctl show` prints, read from the server in one transaction.
    pub async fn show(&self) -> Answer {
        let answer = match self.writer.read(show::query(txn::DATABASE)).await {
            Ok(reply) => match show::render(&reply) {
                Ok(text) => (0, text),
                Err(e) => vsctl_failure(&MethodError::Failed(e)),
            },
            Err(e) => vsctl_failure(&e),
        };
        self.counted("show", answer)
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
