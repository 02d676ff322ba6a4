//! `ovs-dbus-relay wait`: blocks until a row satisfies `ovs-vsctl wait-until`-style
//! conditions (the relay's `WaitFor`) or is gone (`WaitForRemoval`).
//!
//! Exit 0 when satisfied, 1 on timeout, 2 on anything else. A relay that is running but
//! has not synced with OVSDB yet (just started, e.g. by bus activation) is asked again
//! until the timeout, so a script started at boot does not fail on that race.

use super::format::dict_json;
use super::{CallError, Failure, Outcome, bus_target, relay, write_stdout};
use clap::Args;
use clap::builder::BoolishValueParser;
use std::time::Duration;
use tokio::time::Instant;

/// Default `--timeout` in seconds.
pub const DEFAULT_TIMEOUT: f64 = 30.0;

/// Pause between attempts while the relay has not synced yet.
const NOT_READY_RETRY: Duration = Duration::from_millis(200);

/// Extra time the client allows the relay to answer beyond the wait itself.
const REPLY_MARGIN: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// system, session, or a D-Bus address.
    #[arg(long, env = "OVS_DBUS_RELAY_BUS", default_value = "system")]
    pub bus: String,
    /// Wait until no row of TABLE is named NAME (no conditions allowed).
    #[arg(long, env = "OVS_DBUS_RELAY_REMOVED", conflicts_with = "conditions", value_parser = BoolishValueParser::new())]
    pub removed: bool,
    /// Print the row it waited for as one JSON object (every mirrored column).
    #[arg(long, env = "OVS_DBUS_RELAY_JSON", conflicts_with = "removed", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Give up (exit 1) after this many seconds; 0 waits forever.
    #[arg(
        long,
        env = "OVS_DBUS_RELAY_TIMEOUT",
        default_value_t = DEFAULT_TIMEOUT,
        allow_negative_numbers = true
    )]
    pub timeout: f64,
    /// Bridge, Port or Interface (any case).
    pub table: String,
    /// The row's name.
    pub name: String,
    /// `ovs-vsctl wait-until` conditions, all of which must hold: col=v, col!=v, col<v,
    /// col>v, col<=v, col>=v, col:key=v; `[]` is the empty set. None: the row exists.
    pub conditions: Vec<String>,
}

/// The wait in milliseconds for the D-Bus call: 0 s means forever (`u32::MAX` ms, the
/// longest the method can be asked for, about 49 days).
pub fn timeout_ms(seconds: f64) -> Result<u32, Failure> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(Failure::error(format!(
            "--timeout {seconds}: expected a number of seconds, 0 for no limit"
        )));
    }
    if seconds == 0.0 {
        return Ok(u32::MAX);
    }
    let ms = (seconds * 1000.0).ceil();
    Ok(if ms >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        ms as u32
    })
}

impl WaitArgs {
    /// How the wait is named in messages: `wait Interface tap0 ofport>0`.
    fn what(&self) -> String {
        let mut what = format!("wait {} {}", self.table, self.name);
        if self.removed {
            what.push_str(" --removed");
        }
        for condition in &self.conditions {
            what.push(' ');
            what.push_str(condition);
        }
        what
    }
}

pub async fn run(args: WaitArgs) -> Outcome {
    let target = bus_target(&args.bus)?;
    let total = timeout_ms(args.timeout)?;
    let forever = total == u32::MAX;
    let method_timeout = (!forever).then(|| Duration::from_millis(total.into()) + REPLY_MARGIN);
    let what = args.what();
    let relay = relay(&target, method_timeout, &what).await?;
    let deadline = Instant::now() + Duration::from_millis(total.into());
    let mut left = total;
    loop {
        let result = if args.removed {
            relay
                .wait_for_removal(&args.table, &args.name, left)
                .await
                .map(|()| None)
        } else {
            relay
                .wait_for(&args.table, &args.name, &args.conditions, left)
                .await
                .map(Some)
        };
        match result {
            Ok(row) => {
                return match row.filter(|_| args.json) {
                    Some(row) => write_stdout(&what, &format!("{}\n", dict_json(&row))),
                    None => Ok(()),
                };
            }
            Err(CallError::NotConnected(m)) => {
                if !forever && Instant::now() + NOT_READY_RETRY >= deadline {
                    return Err(Failure::not_met(format!(
                        "{what}: timed out: the relay did not sync with OVSDB in time ({m})"
                    )));
                }
                tokio::time::sleep(NOT_READY_RETRY).await;
                if !forever {
                    let rest = deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis();
                    left = u32::try_from(rest).unwrap_or(u32::MAX - 1);
                }
            }
            Err(e) => return Err(e.into_failure(&what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_in_milliseconds() {
        assert_eq!(timeout_ms(0.0).unwrap(), u32::MAX);
        assert_eq!(timeout_ms(1.5).unwrap(), 1500);
        assert_eq!(timeout_ms(0.0001).unwrap(), 1);
        assert_eq!(timeout_ms(1e12).unwrap(), u32::MAX);
        assert_eq!(timeout_ms(-1.0).unwrap_err().code, 2);
        assert_eq!(timeout_ms(f64::NAN).unwrap_err().code, 2);
    }
}
