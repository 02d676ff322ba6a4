//! `WaitFor` / `WaitForRemoval` waiters.
//!
//! A waiter is checked against the replica and registered under one lock; the publisher
//! takes the same lock after applying each update to wake the waiters of the rows it
//! touched. So a change either happens before the check (and the check sees it) or after
//! the registration (and the wake-up sees the waiter): there is no window in between.

use super::error::MethodError;
use super::read::row_dict;
use super::relay::Shared;
use super::value::VariantDict;
use crate::replica::condition::Condition;
use crate::replica::layout::{Layout, TableId};
use crate::replica::{ChangeSet, Replica, Row};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Waiters in the whole relay, and per D-Bus caller, before new ones are refused.
pub const MAX_WAITERS: usize = 4096;
pub const MAX_WAITERS_PER_CALLER: usize = 512;
/// Bytes of names and conditions the waiters hold, in all and per caller: counts alone
/// would let a few callers pin gigabytes with long names.
pub const MAX_WAITER_BYTES: usize = 16 << 20;
pub const MAX_WAITER_BYTES_PER_CALLER: usize = 1 << 20;

pub enum Want {
    /// Every condition holds (none: the row exists).
    Row(Conditions),
    Removal,
}

impl Want {
    fn bytes(&self) -> usize {
        match self {
            Want::Row(conditions) => conditions.bytes(),
            Want::Removal => 0,
        }
    }
}

/// `WaitFor` conditions as the caller wrote them, parsed against the layout they were last
/// checked with. Parsed conditions name columns by position, so a new layout (an online
/// schema conversion) parses the texts again: a column that is gone fails the waiter.
pub struct Conditions {
    table: TableId,
    texts: Vec<String>,
    layout: Arc<Layout>,
    parsed: Vec<Condition>,
}

impl Conditions {
    /// What the conditions hold in memory, roughly: their texts, once as written and once
    /// parsed.
    fn bytes(&self) -> usize {
        2 * self.texts.iter().map(String::len).sum::<usize>()
    }

    pub fn parse(layout: &Arc<Layout>, table: TableId, texts: Vec<String>) -> Result<Self, String> {
        let parsed = texts
            .iter()
            .map(|text| Condition::parse(layout.table(table), text))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            table,
            texts,
            layout: layout.clone(),
            parsed,
        })
    }

    /// Parses again if `layout` is not the one the conditions were parsed against.
    fn refresh(&mut self, layout: &Arc<Layout>) -> Result<(), String> {
        if !Arc::ptr_eq(&self.layout, layout) {
            let texts = std::mem::take(&mut self.texts);
            *self = Self::parse(layout, self.table, texts)
                .map_err(|e| format!("after a schema change: {e}"))?;
        }
        Ok(())
    }

    fn hold(&self, row: &Row) -> bool {
        self.parsed.iter().all(|c| c.holds(row))
    }
}

pub enum Outcome {
    Row(VariantDict),
    Removed,
    /// The conditions no longer make sense (a column the schema dropped).
    Invalid(String),
}

pub enum Registration {
    Done(Outcome),
    Pending {
        id: u64,
        reply: oneshot::Receiver<Outcome>,
    },
}

type Key = (TableId, String);

struct Waiter {
    id: u64,
    caller: String,
    held: Held,
    want: Want,
    reply: oneshot::Sender<Outcome>,
}

/// What waiters hold: how many, and the bytes of their names and conditions.
#[derive(Default, Clone, Copy, PartialEq)]
struct Held {
    waiters: usize,
    bytes: usize,
}

impl Held {
    fn add(&mut self, other: Held) {
        self.waiters += other.waiters;
        self.bytes += other.bytes;
    }

    fn remove(&mut self, other: Held) {
        self.waiters -= other.waiters;
        self.bytes -= other.bytes;
    }

    /// Why `self` cannot take `more` within `waiters` and `bytes`, if it cannot.
    fn refuse(self, more: Held, waiters: usize, bytes: usize) -> Option<String> {
        if self.waiters + more.waiters > waiters {
            Some(format!("{waiters} waiters"))
        } else if self.bytes + more.bytes > bytes {
            Some(format!("{bytes} bytes of names and conditions in waiters"))
        } else {
            None
        }
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// The layout of the last version waiters were checked against.
    layout: Option<Arc<Layout>>,
    by_row: HashMap<Key, Vec<Waiter>>,
    per_caller: HashMap<String, Held>,
    total: Held,
}

impl Inner {
    fn forget(&mut self, caller: &str, gone: Held) {
        self.total.remove(gone);
        if let Some(held) = self.per_caller.get_mut(caller) {
            held.remove(gone);
            if *held == Held::default() {
                self.per_caller.remove(caller);
            }
        }
    }
}

pub struct Waiters {
    inner: Mutex<Inner>,
    /// `ovsdbus_waiters`, kept equal to the number pending.
    gauge: prometheus::IntGauge,
}

/// Whether `want` is met by the replica now.
fn check(
    replica: &Replica,
    table: TableId,
    name: &str,
    want: &mut Want,
) -> zbus::Result<Option<Outcome>> {
    if let Want::Row(conditions) = want
        && let Err(e) = conditions.refresh(replica.layout())
    {
        return Ok(Some(Outcome::Invalid(e)));
    }
    let row = replica.find(table, name);
    Ok(match (want, row) {
        (Want::Removal, None) => Some(Outcome::Removed),
        (Want::Row(conditions), Some((uuid, row))) if conditions.hold(row) => {
            Some(Outcome::Row(row_dict(replica, table, uuid, row)?))
        }
        _ => None,
    })
}

impl Waiters {
    pub fn new(gauge: prometheus::IntGauge) -> Self {
        Self {
            inner: Mutex::default(),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, inner: &Inner) {
        self.gauge.set(inner.total.waiters as i64);
    }

    /// Drops every waiter of a caller that left the bus: nobody is there to answer, and
    /// its waiters would otherwise hold their slots (and memory) until they time out.
    pub fn caller_left(&self, caller: &str) {
        let mut inner = self.lock();
        if !inner.per_caller.contains_key(caller) {
            return;
        }
        inner.by_row.retain(|_, list| {
            list.retain(|w| w.caller != caller);
            !list.is_empty()
        });
        let gone = inner.per_caller.get(caller).copied().unwrap_or_default();
        inner.forget(caller, gone);
        self.count(&inner);
        tracing::debug!(
            caller,
            gone = gone.waiters,
            "waiters of a caller that left the bus dropped"
        );
    }

    pub fn register(
        &self,
        shared: &Shared,
        table: TableId,
        name: &str,
        mut want: Want,
        caller: &str,
    ) -> Result<Registration, MethodError> {
        let mut inner = self.lock();
        let now = shared.with_replica(|replica| {
            let replica = replica.ok_or_else(|| {
                MethodError::NotConnected("the relay has not synced with OVSDB yet".into())
            })?;
            Ok::<_, MethodError>(check(replica, table, name, &mut want)?)
        })?;
        if let Some(outcome) = now {
            return Ok(Registration::Done(outcome));
        }
        let held = Held {
            waiters: 1,
            bytes: caller.len() + name.len() + want.bytes(),
        };
        if let Some(limit) = inner.total.refuse(held, MAX_WAITERS, MAX_WAITER_BYTES) {
            return Err(MethodError::LimitsExceeded(format!(
                "the relay's waiters would exceed {limit}"
            )));
        }
        let mine = inner.per_caller.get(caller).copied().unwrap_or_default();
        if let Some(limit) = mine.refuse(held, MAX_WAITERS_PER_CALLER, MAX_WAITER_BYTES_PER_CALLER)
        {
            return Err(MethodError::LimitsExceeded(format!(
                "{caller}'s waiters would exceed {limit}"
            )));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let (tx, rx) = oneshot::channel();
        inner.total.add(held);
        inner
            .per_caller
            .entry(caller.to_owned())
            .or_default()
            .add(held);
        inner
            .by_row
            .entry((table, name.to_owned()))
            .or_default()
            .push(Waiter {
                id,
                caller: caller.to_owned(),
                held,
                want,
                reply: tx,
            });
        self.count(&inner);
        Ok(Registration::Pending { id, reply: rx })
    }

    /// Drops a waiter that timed out or whose caller went away.
    pub fn cancel(&self, table: TableId, name: &str, id: u64) {
        let mut inner = self.lock();
        let key = (table, name.to_owned());
        let Some(list) = inner.by_row.get_mut(&key) else {
            return;
        };
        let Some(pos) = list.iter().position(|w| w.id == id) else {
            return;
        };
        let waiter = list.swap_remove(pos);
        if list.is_empty() {
            inner.by_row.remove(&key);
        }
        inner.forget(&waiter.caller, waiter.held);
        self.count(&inner);
    }

    /// Wakes the waiters of every row the change set touched whose wish is now met; after
    /// a schema change, every waiter (its conditions are parsed again).
    pub fn wake(&self, replica: &Replica, changes: &ChangeSet) {
        let mut inner = self.lock();
        if inner.total.waiters == 0 {
            return;
        }
        let new_layout = inner
            .layout
            .as_ref()
            .is_none_or(|seen| !Arc::ptr_eq(seen, replica.layout()));
        inner.layout = Some(replica.layout().clone());
        let keys: Vec<Key> = if new_layout {
            inner.by_row.keys().cloned().collect()
        } else {
            changes
                .changes
                .iter()
                .map(|change| (change.table, change.name.clone()))
                .collect()
        };
        for key in keys {
            let Some(mut list) = inner.by_row.remove(&key) else {
                continue;
            };
            let mut kept = Vec::with_capacity(list.len());
            let mut woken = Vec::new();
            for mut waiter in list.drain(..) {
                match check(replica, key.0, &key.1, &mut waiter.want) {
                    Ok(Some(outcome)) => {
                        let _ = waiter.reply.send(outcome);
                        woken.push((waiter.caller, waiter.held));
                    }
                    Ok(None) => kept.push(waiter),
                    Err(e) => {
                        tracing::warn!("waiter check failed: {e}");
                        kept.push(waiter);
                    }
                }
            }
            for (caller, held) in woken {
                inner.forget(&caller, held);
            }
            if !kept.is_empty() {
                inner.by_row.insert(key, kept);
            }
        }
        self.count(&inner);
    }
}
