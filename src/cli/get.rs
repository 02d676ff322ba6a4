//! `ovs-dbus-relay get` and `list`: rows as `ovs-vsctl get`/`list-br`/`list-ports` print
//! them, read from the relay (no access to the OVSDB socket needed), or as JSON.

use super::format::{dict_json, ovs_text, variant_json};
use super::{Failure, Outcome, bus_target, relay, write_stdout};
use crate::replica::layout::TableId;
use clap::Args;
use clap::builder::BoolishValueParser;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// system, session, or a D-Bus address.
    #[arg(long, env = "OVS_DBUS_RELAY_BUS", default_value = "system")]
    pub bus: String,
    /// One JSON object with the columns instead.
    #[arg(long, env = "OVS_DBUS_RELAY_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Bridge, Port or Interface.
    pub table: String,
    /// The row's name.
    pub name: String,
    /// Only these columns, one value per line in this order (all when none are given).
    pub columns: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// system, session, or a D-Bus address.
    #[arg(long, env = "OVS_DBUS_RELAY_BUS", default_value = "system")]
    pub bus: String,
    /// One JSON array of {name, bridge, uuid} instead.
    #[arg(long, env = "OVS_DBUS_RELAY_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Only the rows of this bridge.
    #[arg(long, env = "OVS_DBUS_RELAY_BRIDGE", default_value = "")]
    pub bridge: String,
    /// Bridge, Port or Interface.
    pub table: String,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(25);

fn table(text: &str) -> Result<TableId, Failure> {
    TableId::parse_published(text)
        .ok_or_else(|| Failure::error(format!("{text:?}: expected Bridge, Port or Interface")))
}

pub async fn get(args: GetArgs) -> Outcome {
    let target = bus_target(&args.bus)?;
    let table = table(&args.table)?;
    let what = format!("get {table} {}", args.name);
    let relay = relay(&target, Some(CALL_TIMEOUT), &what).await?;
    let row = relay
        .get_row(table.name(), &args.name)
        .await
        .map_err(|e| e.into_failure(&what))?;
    let mut picked = Vec::new();
    for column in &args.columns {
        let value = row.get(column).ok_or_else(|| {
            Failure::error(format!("{what}: {table} has no mirrored column {column:?}"))
        })?;
        picked.push((column.as_str(), value));
    }
    if args.columns.is_empty() {
        picked = row.iter().map(|(c, v)| (c.as_str(), v)).collect();
    }
    let mut text = String::new();
    if args.json {
        let dict = picked
            .iter()
            .map(|(c, v)| ((*c).to_owned(), (*v).clone()))
            .collect();
        let _ = writeln!(text, "{}", dict_json(&dict));
    } else if args.columns.is_empty() {
        // `ovs-vsctl list` layout: the names padded to one width.
        let width = picked.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        for (column, value) in &picked {
            let _ = writeln!(text, "{column:width$} : {}", ovs_text(&variant_json(value)));
        }
    } else {
        for (_, value) in &picked {
            let _ = writeln!(text, "{}", ovs_text(&variant_json(value)));
        }
    }
    write_stdout(&what, &text)
}

pub async fn list(args: ListArgs) -> Outcome {
    let target = bus_target(&args.bus)?;
    let table = table(&args.table)?;
    let what = format!("list {table}");
    let relay = relay(&target, Some(CALL_TIMEOUT), &what).await?;
    let rows = relay
        .list(table, &args.bridge)
        .await
        .map_err(|e| e.into_failure(&what))?;
    let mut text = String::new();
    if args.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(name, bridge, uuid)| serde_json::json!({"name": name, "bridge": bridge, "uuid": uuid}))
            .collect();
        let _ = writeln!(text, "{}", serde_json::Value::Array(rows));
    } else {
        for (name, ..) in &rows {
            let _ = writeln!(text, "{name}");
        }
    }
    write_stdout(&what, &text)
}
