//! The subscriber protocol (SPEC §4) as a type: a copy of the Bridge, Port and Interface
//! tables seeded from `GetManagedObjects` and kept current by the typed signals.
//!
//! Seeding and subscribing cannot happen at one instant, so signals whose update reached
//! the relay before the seed was read (`meta.received_usec` ≤ the seed's time) may
//! already be in it: those are replayed idempotently. Every later signal must fit
//! exactly, or the mirror says so. A `seq` gap, or a `Resynced` after a bus reconnect,
//! means signals were lost: the caller re-seeds.

use super::relay::ManagedObjects;
use super::signal::{Dict, Kind, Signal, What};
use crate::replica::layout::TableId;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct MirrorRow {
    pub name: String,
    /// Every mirrored column, as the `Columns` property and the signals carry them.
    pub columns: Dict,
}

#[derive(Debug, Clone, Default)]
pub struct Mirror {
    /// By table and row uuid.
    rows: BTreeMap<(TableId, String), MirrorRow>,
    /// The last typed signal applied.
    last_seq: Option<u64>,
    /// When the seed was read (CLOCK_REALTIME µs).
    seeded_usec: u64,
}

/// A signal that does not fit the mirror: the relay (or the bus) broke its contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MirrorError(pub String);

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Signals were lost: seed again from `GetManagedObjects`.
    Reseed,
}

impl Mirror {
    /// The tables as `GetManagedObjects` shows them (`Columns` of every row object), read
    /// at `seeded_usec`.
    pub fn from_managed(objects: &ManagedObjects, seeded_usec: u64) -> Result<Mirror, String> {
        let mut rows = BTreeMap::new();
        for (path, interfaces) in objects {
            for (interface, properties) in interfaces {
                let Some(table) = TableId::PUBLISHED
                    .into_iter()
                    .find(|t| interface == &format!("org.ovsdbus.{}1", t.name()))
                else {
                    continue;
                };
                let text = |name: &str| {
                    properties
                        .get(name)
                        .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
                        .ok_or_else(|| format!("{path}: no {name}"))
                };
                let columns = properties
                    .get("Columns")
                    .and_then(|v| Dict::try_from(v.try_clone().ok()?).ok())
                    .ok_or_else(|| format!("{path}: no Columns"))?;
                let row = MirrorRow {
                    name: text("Name")?,
                    columns,
                };
                rows.insert((table, text("Uuid")?), row);
            }
        }
        Ok(Mirror {
            rows,
            last_seq: None,
            seeded_usec,
        })
    }

    pub fn rows(&self) -> &BTreeMap<(TableId, String), MirrorRow> {
        &self.rows
    }

    /// Applies one signal (in arrival order).
    pub fn apply(&mut self, signal: &Signal) -> Result<Next, MirrorError> {
        let (table, kind) = match signal.what {
            What::Row { table, kind } => (table, kind),
            What::Resynced { .. } => {
                let lost = signal.meta_str("reason").as_deref() == Some("bus");
                return Ok(if lost { Next::Reseed } else { Next::Continue });
            }
        };
        let seq = signal.seq().unwrap_or_default();
        if self
            .last_seq
            .replace(seq)
            .is_some_and(|last| seq != last + 1)
        {
            return Ok(Next::Reseed);
        }
        let received = signal
            .meta
            .get("received_usec")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let replay = received <= self.seeded_usec;
        let what = || format!("{} (seq {seq})", signal.summary());
        let fail = |why: &str| Err(MirrorError(format!("{}: {why}", what())));
        let key = (table, signal.uuid.clone());
        match kind {
            Kind::Added => {
                if self.rows.contains_key(&key) && !replay {
                    return fail("Added for a row the mirror already has");
                }
                let columns = signal.dicts.first().cloned().unwrap_or_default();
                let name = signal.name.clone();
                self.rows.insert(key, MirrorRow { name, columns });
            }
            Kind::Changed => {
                let Some(row) = self.rows.get_mut(&key) else {
                    return if replay {
                        Ok(Next::Continue)
                    } else {
                        fail("Changed for an unknown row")
                    };
                };
                let [changed, old] = signal.dicts.as_slice() else {
                    return fail("Changed without changed and old");
                };
                if !replay {
                    if changed.keys().ne(old.keys()) {
                        return fail("changed and old name different columns");
                    }
                    if let Some((column, _)) =
                        old.iter().find(|(c, v)| row.columns.get(*c) != Some(v))
                    {
                        return fail(&format!(
                            "old {column} is not what the mirror has ({:?})",
                            row.columns.get(column)
                        ));
                    }
                }
                for (column, value) in changed {
                    let value = value
                        .try_clone()
                        .map_err(|e| MirrorError(format!("{}: {e}", what())))?;
                    row.columns.insert(column.clone(), value);
                }
            }
            Kind::Removed => {
                if self.rows.remove(&key).is_none() && !replay {
                    return fail("Removed for an unknown row");
                }
            }
        }
        Ok(Next::Continue)
    }
}
