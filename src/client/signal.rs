//! The relay's typed signals (`<Table>Added`/`Changed`/`Removed`) and `Resynced`, decoded
//! once for every client.

use crate::bus::{BUS_NAME, RELAY_INTERFACE, ROOT_PATH};
use crate::replica::layout::TableId;
use std::collections::BTreeMap;
use zbus::message::Type as MessageType;
use zbus::{MatchRule, Message, OwnedVariant};

/// `a{sv}` of a signal: columns by OVSDB name, or `meta`.
pub type Dict = BTreeMap<String, OwnedVariant>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Added,
    Changed,
    Removed,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Added, Kind::Changed, Kind::Removed];

    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Added => "Added",
            Kind::Changed => "Changed",
            Kind::Removed => "Removed",
        }
    }
}

/// What a signal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Row {
        table: TableId,
        kind: Kind,
    },
    /// The relay resynchronised: this many differences were published (after an OVSDB
    /// reconnect), or this many signals were lost (after a bus reconnect).
    Resynced {
        added: u64,
        changed: u64,
        removed: u64,
    },
}

/// One signal of `org.ovsdbus.Relay1`. For `Resynced`, `name`, `bridge` and `uuid` are
/// empty and `dicts` is too.
#[derive(Debug, Clone)]
pub struct Signal {
    /// `PortAdded`, …, `Resynced`.
    pub member: String,
    pub what: What,
    pub name: String,
    pub bridge: String,
    pub uuid: String,
    /// `columns` (Added), `changed` + `old` (Changed) or `last` (Removed).
    pub dicts: Vec<Dict>,
    pub meta: Dict,
}

/// What a typed signal's member says: table and kind (`PortChanged` → Port, Changed).
fn parse_member(member: &str) -> Option<(TableId, Kind)> {
    Kind::ALL.into_iter().find_map(|kind| {
        let table = member.strip_suffix(kind.suffix())?;
        TableId::PUBLISHED
            .into_iter()
            .find(|t| t.name() == table)
            .map(|t| (t, kind))
    })
}

impl Signal {
    /// Decodes a signal; `Ok(None)` for members this version does not know, `Err` when
    /// the body does not have the member's signature.
    pub fn from_message(message: &Message) -> Result<Option<Signal>, String> {
        let header = message.header();
        let Some(member) = header.member() else {
            return Ok(None);
        };
        let member = member.to_string();
        let body = message.body();
        let bad = |e: zbus::Error| format!("cannot decode {member}: {e}");
        if member == "Resynced" {
            let (added, changed, removed, meta): (u64, u64, u64, Dict) =
                body.deserialize().map_err(bad)?;
            return Ok(Some(Signal {
                what: What::Resynced {
                    added,
                    changed,
                    removed,
                },
                member,
                name: String::new(),
                bridge: String::new(),
                uuid: String::new(),
                dicts: Vec::new(),
                meta,
            }));
        }
        let Some((table, kind)) = parse_member(&member) else {
            return Ok(None);
        };
        let (name, bridge, uuid, dicts, meta) = match kind {
            Kind::Changed => {
                let (n, b, u, changed, old, meta): (String, String, String, Dict, Dict, Dict) =
                    body.deserialize().map_err(bad)?;
                (n, b, u, vec![changed, old], meta)
            }
            Kind::Added | Kind::Removed => {
                let (n, b, u, dict, meta): (String, String, String, Dict, Dict) =
                    body.deserialize().map_err(bad)?;
                (n, b, u, vec![dict], meta)
            }
        };
        Ok(Some(Signal {
            member,
            what: What::Row { table, kind },
            name,
            bridge,
            uuid,
            dicts,
            meta,
        }))
    }

    /// `meta.seq`; a relay always sends it.
    pub fn seq(&self) -> Option<u64> {
        self.meta.get("seq").and_then(|v| u64::try_from(v).ok())
    }

    /// The columns of a `…Changed` sent as deltas (`meta.delta`): for those, `old` holds
    /// what left and `changed` what came.
    pub fn delta_columns(&self) -> Vec<String> {
        self.meta
            .get("delta")
            .and_then(|v| Vec::<String>::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default()
    }

    pub fn meta_str(&self, key: &str) -> Option<String> {
        self.meta
            .get(key)
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
    }

    pub fn table(&self) -> Option<TableId> {
        match self.what {
            What::Row { table, .. } => Some(table),
            What::Resynced { .. } => None,
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        match self.what {
            What::Row { kind, .. } => Some(kind),
            What::Resynced { .. } => None,
        }
    }

    /// `Resynced`'s (added, changed, removed).
    pub fn counts(&self) -> Option<(u64, u64, u64)> {
        match self.what {
            What::Resynced {
                added,
                changed,
                removed,
            } => Some((added, changed, removed)),
            What::Row { .. } => None,
        }
    }

    /// `PortAdded tap0 br0`: enough to tell signals apart in a message.
    pub fn summary(&self) -> String {
        format!("{} {} {}", self.member, self.name, self.bridge)
    }
}

/// The relay's signals, from the relay only (any peer may emit signals with these
/// names), optionally filtered by the bus daemon on `arg0` (name) and `arg1` (bridge).
pub fn signal_rule<'a>(
    name: Option<&'a str>,
    bridge: Option<&'a str>,
) -> zbus::Result<MatchRule<'a>> {
    let mut rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path(ROOT_PATH)
        .interface(RELAY_INTERFACE);
    if let Some(name) = name {
        rule = rule.arg(0, name);
    }
    if let Some(bridge) = bridge {
        rule = rule.arg(1, bridge);
    }
    rule.build()
}

/// Follows `meta.seq` to notice lost signals (a jump) and relay restarts (a drop).
#[derive(Debug, Default)]
pub struct SeqTracker {
    last: Option<u64>,
}

impl SeqTracker {
    /// Forgets the last number (the relay was replaced).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Records `seq`; `numbered` is false for `Resynced`, which repeats the last typed
    /// signal's number. Returns a warning when something is off.
    pub fn observe(&mut self, seq: u64, numbered: bool) -> Option<String> {
        let previous = self.last.replace(seq);
        let last = previous?;
        let expected = if numbered { last + 1 } else { last };
        if seq > expected {
            Some(format!(
                "warning: seq jumped from {last} to {seq}: {} signal(s) lost; \
                 re-read the state (ovs-dbus-relay show)",
                seq - expected
            ))
        } else if seq < expected {
            Some(format!(
                "note: seq went back from {last} to {seq}: the relay restarted"
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_table_and_kind() {
        assert_eq!(
            parse_member("PortChanged"),
            Some((TableId::Port, Kind::Changed))
        );
        assert_eq!(
            parse_member("InterfaceAdded"),
            Some((TableId::Interface, Kind::Added))
        );
        assert_eq!(
            parse_member("BridgeRemoved"),
            Some((TableId::Bridge, Kind::Removed))
        );
        assert_eq!(parse_member("Resynced"), None);
        assert_eq!(parse_member("Open_vSwitchAdded"), None);
    }

    #[test]
    fn seq_jumps_are_reported() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(5, true), None);
        assert_eq!(t.observe(6, true), None);
        assert_eq!(t.observe(6, false), None);
        let gap = t.observe(9, true).unwrap();
        assert!(gap.contains("2 signal(s) lost"), "{gap}");
        assert!(t.observe(1, true).unwrap().contains("restarted"));
        t.reset();
        assert_eq!(t.observe(1, true), None);
    }
}
