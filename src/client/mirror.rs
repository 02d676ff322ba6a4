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
use std::collections::{BTreeMap, BTreeSet};
use zbus::{Array, OwnedVariant, Variant};

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
                let deltas = signal.delta_columns();
                if !replay {
                    if changed.keys().ne(old.keys()) {
                        return fail("changed and old name different columns");
                    }
                    let fits = |column: &String, old: &OwnedVariant| {
                        let current = row.columns.get(column);
                        if deltas.contains(column) {
                            current.is_some_and(|current| contains_all(current, old))
                        } else {
                            current == Some(old)
                        }
                    };
                    if let Some((column, _)) = old.iter().find(|(c, v)| !fits(c, v)) {
                        return fail(&format!(
                            "old {column} is not what the mirror has ({:?})",
                            row.columns.get(column)
                        ));
                    }
                }
                for (column, value) in changed {
                    let value = match (deltas.contains(column), row.columns.get(column)) {
                        (true, Some(current)) => {
                            let left = old.get(column).ok_or_else(|| {
                                MirrorError(format!("{}: no old {column}", what()))
                            })?;
                            apply_delta(current, left, value)
                        }
                        _ => value.try_clone().map_err(|e| e.to_string()),
                    }
                    .map_err(|e| MirrorError(format!("{}: {column}: {e}", what())))?;
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

/// Whether every element (map entry) of `part` is in `whole`.
fn contains_all(whole: &Variant<'_>, part: &Variant<'_>) -> bool {
    match (whole, part) {
        (Variant::Array(whole), Variant::Array(part)) => {
            let whole: BTreeSet<_> = whole.inner().iter().collect();
            part.inner().iter().all(|e| whole.contains(e))
        }
        (Variant::Dict(whole), Variant::Dict(part)) => {
            let whole: BTreeMap<_, _> = whole.iter().collect();
            part.iter().all(|(k, v)| whole.get(k) == Some(&v))
        }
        _ => false,
    }
}

/// A column the relay sent as a delta (`meta.delta`): `current` without what `left` holds
/// (elements, or map keys), plus what `came` holds; in the relay's order, sorted.
fn apply_delta(
    current: &Variant<'_>,
    left: &Variant<'_>,
    came: &Variant<'_>,
) -> Result<OwnedVariant, String> {
    let value = match (current, left, came) {
        (Variant::Array(current), Variant::Array(left), Variant::Array(came)) => {
            // Sets, so that a bridge of thousands of ports costs no more than sorting them.
            let left: BTreeSet<_> = left.inner().iter().collect();
            let elements: BTreeSet<&Variant<'_>> = current
                .inner()
                .iter()
                .filter(|e| !left.contains(e))
                .chain(came.inner())
                .collect();
            let mut array = Array::new(current.element_signature());
            for element in elements {
                array.append(copy(element)?).map_err(|e| e.to_string())?;
            }
            Variant::Array(array)
        }
        (Variant::Dict(current), Variant::Dict(left), Variant::Dict(came)) => {
            let zbus::Signature::Dict { key, value } = current.signature() else {
                return Err("a map without a map signature".into());
            };
            let left: BTreeSet<_> = left.iter().map(|(k, _)| k).collect();
            let mut entries = BTreeMap::new();
            let kept = current.iter().filter(|(k, _)| !left.contains(k));
            for (k, v) in kept.chain(came.iter()) {
                entries.insert(copy(k)?, copy(v)?);
            }
            let mut dict = zbus::Dict::new(key.signature(), value.signature());
            for (k, v) in entries {
                dict.append(k, v).map_err(|e| e.to_string())?;
            }
            Variant::Dict(dict)
        }
        _ => return Err("a delta of a column that is neither a set nor a map".into()),
    };
    OwnedVariant::try_from(value).map_err(|e| e.to_string())
}

fn copy<'a>(value: &Variant<'a>) -> Result<Variant<'a>, String> {
    value.try_clone().map_err(|e| e.to_string())
}
