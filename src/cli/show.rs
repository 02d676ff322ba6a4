//! `ovs-dbus-relay show`: the relay's `Show()` JSON, as is (`--json`, pretty-printed) or
//! laid out like `ovs-vsctl show`, empty values left out as it does.

use super::format::{is_empty, ovs_string, ovs_text};
use super::{Failure, Outcome, bus_target, relay, write_stdout};
use clap::Args;
use clap::builder::BoolishValueParser;
use serde_json::Value as Json;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// system, session, or a D-Bus address.
    #[arg(long, env = "OVS_DBUS_RELAY_BUS", default_value = "system")]
    pub bus: String,
    /// Print the relay's JSON instead.
    #[arg(long, env = "OVS_DBUS_RELAY_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
}

/// Columns printed under each level, in this order (those `ovs-vsctl show` prints, plus
/// the port's VLAN mode and bond mode).
const BRIDGE_COLUMNS: &[&str] = &["fail_mode", "datapath_type"];
const PORT_COLUMNS: &[&str] = &["tag", "trunks", "vlan_mode", "bond_mode"];
const INTERFACE_COLUMNS: &[&str] = &["type", "options", "error"];

/// The columns above that hold at most one value: `ovs-vsctl show` prints that value bare.
const OPTIONAL: &[&str] = &["tag", "vlan_mode", "bond_mode", "fail_mode", "error"];

fn columns(out: &mut String, indent: usize, row: &Json, names: &[&str]) {
    for name in names {
        let Some(value) = row.get(*name).filter(|v| !is_empty(v)) else {
            continue;
        };
        let value = match value.as_array().map(Vec::as_slice) {
            Some([only]) if OPTIONAL.contains(name) => only,
            _ => value,
        };
        let _ = writeln!(out, "{:indent$}{name}: {}", "", ovs_text(value));
    }
}

fn children<'a>(row: &'a Json, key: &str) -> impl Iterator<Item = &'a Json> {
    row.get(key).and_then(Json::as_array).into_iter().flatten()
}

fn name(row: &Json) -> String {
    ovs_string(row.get("name").and_then(Json::as_str).unwrap_or_default())
}

/// The `ovs-vsctl show` layout of a `Show()` answer.
pub fn render(show: &Json) -> String {
    let mut out = String::new();
    // `ovs-vsctl show` heads its output with the root row's uuid.
    let header = ["uuid", "system_id"]
        .iter()
        .filter_map(|key| show.get(*key).and_then(Json::as_str))
        .find(|value| !value.is_empty())
        .unwrap_or("Open_vSwitch");
    out.push_str(header);
    out.push('\n');
    for bridge in children(show, "bridges") {
        let _ = writeln!(out, "    Bridge {}", name(bridge));
        columns(&mut out, 8, bridge, BRIDGE_COLUMNS);
        for port in children(bridge, "ports") {
            let _ = writeln!(out, "        Port {}", name(port));
            columns(&mut out, 12, port, PORT_COLUMNS);
            for interface in children(port, "interfaces") {
                let _ = writeln!(out, "            Interface {}", name(interface));
                columns(&mut out, 16, interface, INTERFACE_COLUMNS);
            }
        }
    }
    if let Some(version) = show.get("ovs_version").filter(|v| !is_empty(v)) {
        let _ = writeln!(out, "    ovs_version: {}", ovs_text(version));
    }
    out
}

pub async fn run(args: ShowArgs) -> Outcome {
    let target = bus_target(&args.bus)?;
    let relay = relay(&target, Some(Duration::from_secs(25)), "show").await?;
    let text = relay.show().await.map_err(|e| e.into_failure("show"))?;
    let show: Json = serde_json::from_str(&text)
        .map_err(|e| Failure::error(format!("show: the relay sent invalid JSON: {e}")))?;
    let output = if args.json {
        let mut pretty = serde_json::to_string_pretty(&show)
            .map_err(|e| Failure::error(format!("show: {e}")))?;
        pretty.push('\n');
        pretty
    } else {
        render(&show)
    };
    write_stdout("show", &output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lays_out_like_ovs_vsctl_show() {
        let show = json!({
            "system_id": "8f1c5e0a-host",
            "ovs_version": "3.1.0",
            "bridges": [{
                "name": "br0", "uuid": "u1", "datapath_type": "netdev", "fail_mode": [],
                "controller": [],
                "ports": [
                    {"name": "br0", "uuid": "u2", "tag": [], "trunks": [], "vlan_mode": [],
                     "bond_mode": [],
                     "interfaces": [{"name": "br0", "uuid": "u3", "type": "internal",
                                     "ofport": [65534], "options": {}, "error": []}]},
                    {"name": "tap0", "uuid": "u4", "tag": [10], "trunks": [1, 2],
                     "vlan_mode": ["dot1q-tunnel"], "bond_mode": [],
                     "interfaces": [{"name": "tap0", "uuid": "u5", "type": "",
                                     "options": {"peer": "x y"},
                                     "error": ["could not open network device tap0"]}]}
                ]
            }]
        });
        assert_eq!(
            render(&show),
            "8f1c5e0a-host
    Bridge br0
        datapath_type: netdev
        Port br0
            Interface br0
                type: internal
        Port tap0
            tag: 10
            trunks: [1, 2]
            vlan_mode: dot1q-tunnel
            Interface tap0
                options: {peer=\"x y\"}
                error: \"could not open network device tap0\"
    ovs_version: \"3.1.0\"
"
        );
    }

    #[test]
    fn empty_switch() {
        assert_eq!(
            render(&json!({"system_id": "", "ovs_version": "", "bridges": []})),
            "Open_vSwitch\n"
        );
    }
}
