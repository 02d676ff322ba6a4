//! `ovs-dbus-relay watch`: prints the relay's typed signals (SPEC §4) as they arrive, one
//! line each, for people or (`--json`) for `jq`.
//!
//! `--name` and `--bridge` become `arg0`/`arg1` in the match rule, so the bus daemon does
//! the filtering; `--table` is applied here. Without `--name`/`--bridge` every signal
//! reaches us, so a jump in `meta.seq` means signals were lost, and is reported on stderr.

use super::format::{dict_json, is_empty, ovs_string, ovs_text, variant_json};
use super::{Failure, Outcome, bus_target, connect};
use crate::bus::BUS_NAME;
use crate::client::{Dict, Kind, SeqTracker, Signal, What, signal_rule};
use crate::replica::layout::TableId;
use clap::Args;
use clap::builder::BoolishValueParser;
use serde::Serialize;
use serde_json::Value as Json;
use std::io::Write;
use std::num::NonZeroUsize;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{MatchRule, MessageStream};

/// Signals queued between the socket and the printer before zbus drops the oldest.
const QUEUE: usize = 100_000;

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// system, session, or a D-Bus address.
    #[arg(long, env = "OVS_DBUS_RELAY_BUS", default_value = "system")]
    pub bus: String,
    /// Only this table's signals: Bridge, Port or Interface.
    #[arg(long, env = "OVS_DBUS_RELAY_TABLE")]
    pub table: Option<String>,
    /// Only signals about rows with this name (arg0).
    #[arg(long, env = "OVS_DBUS_RELAY_NAME")]
    pub name: Option<String>,
    /// Only signals about rows of this bridge (arg1).
    #[arg(long, env = "OVS_DBUS_RELAY_BRIDGE")]
    pub bridge: Option<String>,
    /// One JSON object per signal per line.
    #[arg(long, env = "OVS_DBUS_RELAY_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
}

/// One line of JSON: `member`, `name`, `bridge`, `uuid`, the dictionaries under their
/// SPEC names, `meta`; for `Resynced`: `member`, `added`, `changed`, `removed`, `meta`.
pub fn json_line(signal: &Signal) -> String {
    #[derive(Serialize)]
    struct RowLine<'a> {
        member: &'a str,
        name: &'a str,
        bridge: &'a str,
        uuid: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        columns: Option<Json>,
        #[serde(skip_serializing_if = "Option::is_none")]
        changed: Option<Json>,
        #[serde(skip_serializing_if = "Option::is_none")]
        old: Option<Json>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last: Option<Json>,
        meta: Json,
    }
    #[derive(Serialize)]
    struct ResyncedLine {
        member: &'static str,
        added: u64,
        changed: u64,
        removed: u64,
        meta: Json,
    }
    let line = match signal.what {
        What::Row { kind, .. } => {
            let dict = |i: usize| signal.dicts.get(i).map(dict_json);
            let mut line = RowLine {
                member: &signal.member,
                name: &signal.name,
                bridge: &signal.bridge,
                uuid: &signal.uuid,
                columns: None,
                changed: None,
                old: None,
                last: None,
                meta: dict_json(&signal.meta),
            };
            match kind {
                Kind::Added => line.columns = dict(0),
                Kind::Changed => (line.changed, line.old) = (dict(0), dict(1)),
                Kind::Removed => line.last = dict(0),
            }
            serde_json::to_string(&line)
        }
        What::Resynced {
            added,
            changed,
            removed,
        } => serde_json::to_string(&ResyncedLine {
            member: "Resynced",
            added,
            changed,
            removed,
            meta: dict_json(&signal.meta),
        }),
    };
    line.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// One line for people, e.g. `#12 PortChanged tap0 (br0) tag: [] → [10]`.
pub fn human_line(signal: &Signal) -> String {
    let seq = signal.seq().map_or("#?".to_owned(), |s| format!("#{s}"));
    let member = &signal.member;
    let resync = if signal.meta_str("origin").as_deref() == Some("resync") {
        " (resync)"
    } else {
        ""
    };
    let (table, kind) = match signal.what {
        What::Resynced {
            added,
            changed,
            removed,
        } => return format!("{seq} {member} {added} added, {changed} changed, {removed} removed"),
        What::Row { table, kind } => (table, kind),
    };
    let (name, bridge, dicts) = (&signal.name, &signal.bridge, &signal.dicts);
    let mut line = format!("{seq} {member} {}", ovs_string(name));
    let mut context = Vec::new();
    let own_bridge = table == TableId::Bridge && bridge == name;
    if !bridge.is_empty() && !own_bridge {
        context.push(ovs_string(bridge));
    }
    if let Some(port) = signal.meta_str("port").filter(|p| !p.is_empty()) {
        context.push(format!("port {}", ovs_string(&port)));
    }
    if context.is_empty() && table != TableId::Bridge {
        context.push("detached".into());
    }
    if !context.is_empty() {
        line.push_str(&format!(" ({})", context.join(", ")));
    }
    let details = match kind {
        Kind::Added => added_summary(table, dicts.first()),
        Kind::Changed => changes(dicts.first(), dicts.get(1), &signal.delta_columns()),
        Kind::Removed => String::new(),
    };
    if !details.is_empty() {
        line.push(' ');
        line.push_str(&details);
    }
    line.push_str(resync);
    line
}

/// The few columns that say what a new row is; `external_ids` only when set.
fn added_summary(table: TableId, columns: Option<&Dict>) -> String {
    let Some(columns) = columns else {
        return String::new();
    };
    let key: &[&str] = match table {
        TableId::Bridge => &["datapath_type", "fail_mode"],
        TableId::Port => &["tag", "trunks", "vlan_mode"],
        _ => &["type", "ofport"],
    };
    let mut parts: Vec<String> = key
        .iter()
        .filter_map(|c| {
            columns
                .get(*c)
                .map(|v| format!("{c}={}", ovs_text(&variant_json(v))))
        })
        .collect();
    if let Some(ids) = columns.get("external_ids") {
        let ids = variant_json(ids);
        if !is_empty(&ids) {
            parts.push(format!("external_ids={}", ovs_text(&ids)));
        }
    }
    parts.join(" ")
}

/// `col: old → new` for every changed column, `col: -removed +added` for one sent as a
/// delta; `; `-separated.
fn changes(changed: Option<&Dict>, old: Option<&Dict>, deltas: &[String]) -> String {
    let Some(changed) = changed else {
        return String::new();
    };
    changed
        .iter()
        .map(|(column, new)| {
            let old = old
                .and_then(|o| o.get(column))
                .map_or("?".to_owned(), |v| ovs_text(&variant_json(v)));
            let new = ovs_text(&variant_json(new));
            if deltas.contains(column) {
                format!("{column}: -{old} +{new}")
            } else {
                format!("{column}: {old} → {new}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes one line and flushes; `false` once stdout is gone (e.g. `| head`).
fn emit(line: &str) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::error(format!(
            "watch: cannot write to stdout: {e}"
        ))),
    }
}

pub async fn run(args: WatchArgs) -> Outcome {
    let target = bus_target(&args.bus)?;
    let table = match args.table.as_deref() {
        None => None,
        Some(t) => Some(TableId::parse_published(t).ok_or_else(|| {
            Failure::error(format!("--table {t:?}: expected Bridge, Port or Interface"))
        })?),
    };
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Failure::error(format!("watch: cannot handle SIGTERM: {e}")))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Failure::error(format!("watch: cannot handle SIGINT: {e}")))?;

    let conn = connect(&target, Some(Duration::from_secs(25))).await?;
    let subscribe_failed =
        |e: zbus::Error| Failure::error(format!("watch: cannot subscribe on the {target}: {e}"));
    let rule = signal_rule(args.name.as_deref(), args.bridge.as_deref())
        .map_err(|e| Failure::error(format!("watch: bad filter: {e}")))?;
    let mut signals = MessageStream::for_match_rule(rule, &conn, NonZeroUsize::new(QUEUE))
        .await
        .map_err(subscribe_failed)?;
    let owner_rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .arg(0, BUS_NAME)
        .build()
        .map_err(subscribe_failed)?;
    let mut owners = MessageStream::for_match_rule(owner_rule, &conn, NonZeroUsize::new(16))
        .await
        .map_err(subscribe_failed)?;

    let running = zbus::fdo::DBusProxy::new(&conn)
        .await
        .map_err(subscribe_failed)?
        .name_has_owner(BUS_NAME.try_into().map_err(subscribe_failed)?)
        .await
        .unwrap_or(false);
    eprintln!(
        "ovs-dbus-relay: watching {BUS_NAME} on the {target}{}",
        if running {
            ""
        } else {
            " (the relay is not running yet)"
        }
    );

    // Filtering on the bus hides other rows' numbers, so gaps only mean loss without it.
    let check_gaps = args.name.is_none() && args.bridge.is_none();
    let mut seqs = SeqTracker::default();
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            change = owners.next() => {
                let change = match change {
                    None => return Err(Failure::unreachable(format!("watch: lost the connection to the {target}"))),
                    Some(Err(_)) => continue,
                    Some(Ok(change)) => change,
                };
                if let Ok((_, _, new)) = change.body().deserialize::<(String, String, String)>() {
                    seqs.reset();
                    if new.is_empty() {
                        eprintln!("ovs-dbus-relay: the relay left the {target}");
                    } else {
                        eprintln!("ovs-dbus-relay: the relay is on the {target} ({new})");
                    }
                }
            }
            message = signals.next() => {
                let message = match message {
                    None => return Err(Failure::unreachable(format!("watch: lost the connection to the {target}"))),
                    Some(Err(e)) => return Err(Failure::error(format!("watch: {e}"))),
                    Some(Ok(message)) => message,
                };
                let event = match Signal::from_message(&message) {
                    Ok(Some(event)) => event,
                    Ok(None) => continue,
                    Err(e) => {
                        eprintln!("ovs-dbus-relay: warning: {e}");
                        continue;
                    }
                };
                if check_gaps
                    && let Some(seq) = event.seq()
                    && let Some(warning) = seqs.observe(seq, event.table().is_some())
                {
                    eprintln!("ovs-dbus-relay: {warning}");
                }
                if table.is_some() && event.table().is_some() && event.table() != table {
                    continue;
                }
                let line = if args.json { json_line(&event) } else { human_line(&event) };
                if !emit(&line)? {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::What;
    use serde_json::Value as Json;
    use std::collections::BTreeMap;
    use zbus::OwnedVariant;

    fn row(table: TableId, kind: Kind, name: &str, dicts: Vec<Dict>, meta: Dict) -> Signal {
        Signal {
            member: format!("{}{}", table.name(), kind.suffix()),
            what: What::Row { table, kind },
            name: name.into(),
            bridge: "br0".into(),
            uuid: "u".into(),
            dicts,
            meta,
        }
    }

    fn owned<'a>(v: impl Into<zbus::Variant<'a>>) -> OwnedVariant {
        v.into().try_into_owned().unwrap()
    }

    fn meta(seq: u64) -> Dict {
        Dict::from([
            ("seq".to_string(), owned(seq)),
            ("origin".to_string(), owned("live")),
        ])
    }

    #[test]
    fn changed_reads_at_a_glance() {
        let event = row(
            TableId::Port,
            Kind::Changed,
            "tap0",
            vec![
                Dict::from([("tag".to_string(), owned(vec![10i64]))]),
                Dict::from([("tag".to_string(), owned(Vec::<i64>::new()))]),
            ],
            meta(12),
        );
        assert_eq!(
            human_line(&event),
            "#12 PortChanged tap0 (br0) tag: [] → [10]"
        );
        let json: Json = serde_json::from_str(&json_line(&event)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"member": "PortChanged", "name": "tap0", "bridge": "br0",
                "uuid": "u", "changed": {"tag": [10]}, "old": {"tag": []},
                "meta": {"seq": 12, "origin": "live"}})
        );
    }

    #[test]
    fn a_delta_shows_what_left_and_what_came() {
        let mut m = meta(14);
        m.insert("delta".into(), owned(vec!["ports"]));
        let event = row(
            TableId::Bridge,
            Kind::Changed,
            "br0",
            vec![
                Dict::from([("ports".to_string(), owned(vec!["u2"]))]),
                Dict::from([("ports".to_string(), owned(vec!["u1"]))]),
            ],
            m,
        );
        assert_eq!(
            human_line(&event),
            "#14 BridgeChanged br0 ports: -[u1] +[u2]"
        );
    }

    #[test]
    fn added_shows_key_columns_only() {
        let mut m = meta(13);
        m.insert("port".into(), owned("tap0"));
        let event = row(
            TableId::Interface,
            Kind::Added,
            "tap0",
            vec![Dict::from([
                ("type".to_string(), owned("internal")),
                ("ofport".to_string(), owned(Vec::<i64>::new())),
                ("mtu".to_string(), owned(Vec::<i64>::new())),
                (
                    "external_ids".to_string(),
                    owned(BTreeMap::<String, String>::new()),
                ),
            ])],
            m,
        );
        assert_eq!(
            human_line(&event),
            "#13 InterfaceAdded tap0 (br0, port tap0) type=internal ofport=[]"
        );
        let bridge = row(
            TableId::Bridge,
            Kind::Removed,
            "br0",
            vec![Dict::new()],
            meta(14),
        );
        assert_eq!(human_line(&bridge), "#14 BridgeRemoved br0");
    }

    #[test]
    fn resynced_json_has_counts() {
        let event = Signal {
            member: "Resynced".into(),
            what: What::Resynced {
                added: 1,
                changed: 2,
                removed: 3,
            },
            name: String::new(),
            bridge: String::new(),
            uuid: String::new(),
            dicts: Vec::new(),
            meta: meta(9),
        };
        let json: Json = serde_json::from_str(&json_line(&event)).unwrap();
        assert_eq!(json["member"], "Resynced");
        assert_eq!(json["changed"], 2);
        assert_eq!(json["meta"]["seq"], 9);
        assert_eq!(
            human_line(&event),
            "#9 Resynced 1 added, 2 changed, 3 removed"
        );
    }
}
