//! The in-memory copy of the Bridge, Port, Interface and root tables. Pure and synchronous:
//! it applies update messages and snapshots and says what changed, with each changed row's
//! name and parents already resolved, in the order signals must go out.

pub mod condition;
pub mod diff;
pub mod layout;
pub mod update;

use crate::ovsdb::datum::{Atom, Datum, Uuid};
use diff::{apply_diff, check_bounds};
use imbl::HashMap as PersistentMap;
use layout::{Column, Layout, TableId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use update::{RowOp, Update};

/// A row's values in the layout's column order. Shared, so changes and readers hold rows
/// without copying them.
pub type Row = Arc<[Datum]>;

#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    Added {
        row: Row,
    },
    Changed {
        old: Row,
        new: Row,
        columns: Vec<usize>,
    },
    Removed {
        row: Row,
    },
}

impl ChangeKind {
    /// The signal name suffix: `Added`, `Changed` or `Removed`.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Added { .. } => "Added",
            Self::Changed { .. } => "Changed",
            Self::Removed { .. } => "Removed",
        }
    }

    /// Removals go first, so a name deleted and re-created in one update ends `Added` for
    /// a subscriber that keys rows by name.
    fn rank(&self) -> u8 {
        match self {
            Self::Removed { .. } => 0,
            Self::Added { .. } => 1,
            Self::Changed { .. } => 2,
        }
    }
}

/// One row that changed, with its names resolved: for a removal, as they were before it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: TableId,
    pub uuid: Uuid,
    pub name: String,
    /// The bridge the row belongs to (a bridge's own name); `""` when not attached.
    pub bridge: String,
    /// The parent port of an interface; `""` otherwise.
    pub port: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// Removed Interface→Port→Bridge, then Added Bridge→Port→Interface, then Changed
    /// Bridge→Port→Interface; by name within each group.
    pub changes: Vec<RowChange>,
    /// The root row changed (versions, system-id).
    pub root_changed: bool,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && !self.root_changed
    }

    pub(crate) fn sort(&mut self) {
        self.changes.sort_by(|a, b| {
            let table_order = |c: &RowChange| match c.kind {
                ChangeKind::Removed { .. } => 3 - c.table.index(),
                _ => c.table.index(),
            };
            (a.kind.rank(), table_order(a), &a.name, a.uuid).cmp(&(
                b.kind.rank(),
                table_order(b),
                &b.name,
                b.uuid,
            ))
        });
    }
}

/// The replica and the server disagree; the only safe answer is a full resync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replica inconsistent with server: {0}")]
pub struct Inconsistency(pub String);

/// Names of a row and its parents, resolved against one state of the replica.
struct Names {
    name: String,
    bridge: String,
    port: String,
}

/// Every map is persistent (structurally shared): cloning a replica is O(1) and a change
/// copies only the paths it touches, so the writer can publish a new immutable version
/// after every update while readers keep using the one they loaded.
#[derive(Debug, Clone)]
pub struct Replica {
    layout: Arc<Layout>,
    tables: Vec<PersistentMap<Uuid, Row>>,
    /// Port → the bridge listing it; interface → the port listing it.
    port_bridge: PersistentMap<Uuid, Uuid>,
    iface_port: PersistentMap<Uuid, Uuid>,
    /// Name → uuid per table (names are unique in the Open_vSwitch schema).
    by_name: Vec<PersistentMap<String, Uuid>>,
}

impl Replica {
    pub fn new(layout: Arc<Layout>) -> Self {
        Self {
            layout,
            tables: vec![PersistentMap::new(); TableId::ALL.len()],
            port_bridge: PersistentMap::new(),
            iface_port: PersistentMap::new(),
            by_name: vec![PersistentMap::new(); TableId::ALL.len()],
        }
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn len(&self, table: TableId) -> usize {
        self.tables[table.index()].len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(PersistentMap::is_empty)
    }

    pub fn row(&self, table: TableId, uuid: Uuid) -> Option<&Row> {
        self.tables[table.index()].get(&uuid)
    }

    pub fn rows(&self, table: TableId) -> impl Iterator<Item = (Uuid, &Row)> {
        self.tables[table.index()].iter().map(|(u, r)| (*u, r))
    }

    pub fn find(&self, table: TableId, name: &str) -> Option<(Uuid, &Row)> {
        let uuid = *self.by_name[table.index()].get(name)?;
        Some((uuid, self.row(table, uuid)?))
    }

    /// A column's value by name, when the column is mirrored.
    pub fn column<'r>(&self, table: TableId, row: &'r Row, column: &str) -> Option<&'r Datum> {
        Some(&row[self.layout.table(table).column_index(column)?])
    }

    /// The bridge a port is on / the port an interface is in.
    pub fn parent(&self, table: TableId, uuid: Uuid) -> Option<Uuid> {
        match table {
            TableId::Port => self.port_bridge.get(&uuid).copied(),
            TableId::Interface => self.iface_port.get(&uuid).copied(),
            _ => None,
        }
    }

    /// An integer column of the root row (`cur_cfg`).
    pub fn root_integer(&self, column: &str) -> Option<i64> {
        let (_, row) = self.rows(TableId::Root).next()?;
        match self.column(TableId::Root, row, column)?.first()? {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// A string column of the root row (`ovs_version`), or a key of its `external_ids`.
    pub fn root_string(&self, column: &str, key: Option<&str>) -> String {
        let Some((_, row)) = self.rows(TableId::Root).next() else {
            return String::new();
        };
        let value = self.column(TableId::Root, row, column);
        let atom = match (value, key) {
            (Some(Datum::Map(map)), Some(key)) => map.get(&Atom::String(key.to_owned())),
            (Some(datum), None) => datum.first(),
            _ => None,
        };
        atom.and_then(Atom::as_str).unwrap_or_default().to_owned()
    }

    pub fn name_of<'r>(&self, table: TableId, row: &'r Row) -> &'r str {
        self.layout
            .table(table)
            .name_index
            .and_then(|i| row.get(i))
            .and_then(Datum::first)
            .and_then(Atom::as_str)
            .unwrap_or_default()
    }

    fn names(&self, table: TableId, uuid: Uuid, row: &Row) -> Names {
        let name = self.name_of(table, row).to_owned();
        let name_by_uuid = |table: TableId, uuid: Option<Uuid>| {
            uuid.and_then(|u| self.row(table, u))
                .map(|r| self.name_of(table, r))
                .unwrap_or_default()
                .to_owned()
        };
        match table {
            TableId::Bridge => Names {
                bridge: name.clone(),
                name,
                port: String::new(),
            },
            TableId::Port => Names {
                bridge: name_by_uuid(TableId::Bridge, self.parent(TableId::Port, uuid)),
                name,
                port: String::new(),
            },
            TableId::Interface => {
                let port = self.parent(TableId::Interface, uuid);
                Names {
                    bridge: name_by_uuid(
                        TableId::Bridge,
                        port.and_then(|p| self.parent(TableId::Port, p)),
                    ),
                    port: name_by_uuid(TableId::Port, port),
                    name,
                }
            }
            TableId::Root => Names {
                name,
                bridge: String::new(),
                port: String::new(),
            },
        }
    }

    /// Applies one update message atomically: either every row operation is consistent with
    /// the replica and all are applied, or nothing changes and the error says why.
    pub fn apply(&mut self, update: Update) -> Result<ChangeSet, Inconsistency> {
        let mut planned = Vec::with_capacity(update.rows.len());
        let mut operated = HashSet::with_capacity(update.rows.len());
        for row_update in update.rows {
            let (table, uuid) = (row_update.table, row_update.uuid);
            let columns = &self.layout.table(table).columns;
            let old = self.row(table, uuid).cloned();
            let fail = |what: &str| Inconsistency(format!("{what} {table} row {uuid}"));
            // Each operation is planned against the state before the update, so a second one
            // on a row (a JSON object may repeat a member) could not build on the first.
            if !operated.insert((table, uuid)) {
                return Err(fail("second operation on"));
            }
            let new = match (row_update.op, &old) {
                (RowOp::Insert(_), Some(_)) => return Err(fail("insert of existing")),
                (RowOp::Modify(_) | RowOp::Delete, None) => return Err(fail("change to missing")),
                (RowOp::Insert(values), None) => {
                    let row = inserted_row(columns, values);
                    for (value, column) in row.iter().zip(columns) {
                        check_bounds(&column.ty, value)
                            .map_err(|e| fail(&format!("insert with {}: {e} in", column.name)))?;
                    }
                    Some(row)
                }
                (RowOp::Modify(diffs), Some(old)) => {
                    let mut new = old.to_vec();
                    for (index, diff) in diffs {
                        let column = &columns[index];
                        new[index] = apply_diff(&column.ty, &old[index], diff)
                            .map_err(|e| fail(&format!("modify of {}: {e} in", column.name)))?;
                    }
                    Some(Row::from(new))
                }
                (RowOp::Delete, Some(_)) => None,
            };
            planned.push((table, uuid, old, new));
        }
        self.check_names(&planned)?;

        // Names of removed rows are resolved before anything changes.
        let mut changes = ChangeSet::default();
        let mut removed_names = HashMap::new();
        for (table, uuid, old, new) in &planned {
            if let (Some(old), None) = (old, new) {
                removed_names.insert((*table, *uuid), self.names(*table, *uuid, old));
            }
        }
        for (table, uuid, old, new) in &planned {
            self.commit(*table, *uuid, old.as_ref(), new.clone());
        }
        for (table, uuid, old, new) in planned {
            if table == TableId::Root {
                changes.root_changed = true;
                continue;
            }
            let kind = match (old, new) {
                (None, Some(row)) => ChangeKind::Added { row },
                (Some(old), Some(new)) => {
                    let columns: Vec<usize> =
                        (0..new.len()).filter(|&i| old[i] != new[i]).collect();
                    if columns.is_empty() {
                        continue;
                    }
                    ChangeKind::Changed { old, new, columns }
                }
                (Some(row), None) => ChangeKind::Removed { row },
                (None, None) => continue,
            };
            let names = match &kind {
                ChangeKind::Removed { .. } => removed_names
                    .remove(&(table, uuid))
                    .expect("names resolved before the commit"),
                ChangeKind::Added { row } | ChangeKind::Changed { new: row, .. } => {
                    self.names(table, uuid, row)
                }
            };
            changes.changes.push(RowChange {
                table,
                uuid,
                name: names.name,
                bridge: names.bridge,
                port: names.port,
                kind,
            });
        }
        changes.sort();
        Ok(changes)
    }

    /// Objects are named after rows, so a name must stay with its row and belong to one row
    /// at a time: the schema makes names immutable and unique, and a server that renames a
    /// row or gives a second row a name in use is not followed (re-creating a name in one
    /// update — delete and insert — is fine).
    fn check_names(
        &self,
        planned: &[(TableId, Uuid, Option<Row>, Option<Row>)],
    ) -> Result<(), Inconsistency> {
        let deleted: HashSet<(TableId, Uuid)> = planned
            .iter()
            .filter(|(_, _, old, new)| old.is_some() && new.is_none())
            .map(|(table, uuid, _, _)| (*table, *uuid))
            .collect();
        let mut claimed: HashSet<(TableId, &str)> = HashSet::new();
        for (table, uuid, old, new) in planned {
            if *table == TableId::Root {
                continue;
            }
            match (old, new) {
                (Some(old), Some(new))
                    if self.name_of(*table, old) != self.name_of(*table, new) =>
                {
                    return Err(Inconsistency(format!(
                        "rename of {table} row {uuid} from {:?} to {:?}",
                        self.name_of(*table, old),
                        self.name_of(*table, new)
                    )));
                }
                (None, Some(new)) => {
                    let name = self.name_of(*table, new);
                    let holder = self.by_name[table.index()].get(name);
                    let taken = holder.is_some_and(|holder| !deleted.contains(&(*table, *holder)));
                    if taken || !claimed.insert((*table, name)) {
                        return Err(Inconsistency(format!(
                            "{table} row {uuid} named {name:?}, a name another row has"
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The replica's rows in `layout`'s columns, for comparing with `incoming`, a snapshot
    /// under a new schema (an online conversion): a column both layouts have with the same
    /// type keeps its value; any other column (new, or of a new type, so that its values
    /// cannot be compared) takes the value `incoming` has for the row, or its default for a
    /// row `incoming` lacks. [`Replica::replace`] of `incoming` on the result then finds
    /// only the real differences in the columns both schemas share; added columns appear
    /// without a change of their own, removed ones disappear.
    pub fn relayout(&self, layout: Arc<Layout>, incoming: &Update) -> Result<Self, Inconsistency> {
        let arriving: HashMap<(TableId, Uuid), &Vec<(usize, Datum)>> = incoming
            .rows
            .iter()
            .filter_map(|row| match &row.op {
                RowOp::Insert(values) => Some(((row.table, row.uuid), values)),
                _ => None,
            })
            .collect();
        let mut rows = Update::default();
        for table in TableId::ALL {
            let (old, new) = (self.layout.table(table), layout.table(table));
            // For each new column, where the old row has it (same name, same type).
            let sources: Vec<Option<usize>> = new
                .columns
                .iter()
                .map(|column| {
                    old.column_index(&column.name)
                        .filter(|&i| old.columns[i].ty == column.ty)
                })
                .collect();
            for (uuid, row) in self.rows(table) {
                let arrived = arriving.get(&(table, uuid));
                // A column left out takes its default.
                let values = sources
                    .iter()
                    .enumerate()
                    .filter_map(|(i, source)| match source {
                        Some(j) => Some((i, row[*j].clone())),
                        None => arrived?
                            .iter()
                            .rfind(|(sent, _)| *sent == i)
                            .map(|(_, value)| (i, value.clone())),
                    })
                    .collect();
                rows.rows.push(update::RowUpdate {
                    table,
                    uuid,
                    op: RowOp::Insert(values),
                });
            }
        }
        let mut migrated = Replica::new(layout);
        migrated.apply(rows)?;
        Ok(migrated)
    }

    /// Replaces the whole replica with a snapshot (a monitor reply, all `initial` rows) and
    /// returns only the real differences from the previous state: after a reconnect the
    /// subscribers hear about exactly what changed while the relay was away.
    pub fn replace(&mut self, snapshot: Update) -> Result<ChangeSet, Inconsistency> {
        let mut fresh = Replica::new(self.layout.clone());
        let mut incoming = Update::default();
        for row in snapshot.rows {
            if !matches!(row.op, RowOp::Insert(_)) {
                return Err(Inconsistency(format!(
                    "snapshot has a non-initial {} row {}",
                    row.table, row.uuid
                )));
            }
            incoming.rows.push(row);
        }
        fresh.apply(incoming)?;

        // Express the difference as an update against the current state, so that names,
        // ordering and parent resolution follow exactly the live path. A row whose name
        // differs in the snapshot (possible only from a non-conforming server, or another
        // database behind the same remote) is a different object: it is removed first and
        // inserted again, so objects keep matching the data. Rows the snapshot lacks are
        // removed in that first step too, so that their removals carry the names from before
        // the snapshot (once a renamed bridge is removed, its ports are on no bridge).
        let mut removals = Update::default();
        let mut delta = Update::default();
        for table in TableId::ALL {
            for (uuid, row) in fresh.rows(table) {
                let old = self.row(table, uuid);
                let renamed = old.is_some_and(|old| {
                    table != TableId::Root && self.name_of(table, old) != self.name_of(table, row)
                });
                if renamed {
                    removals.rows.push(update::RowUpdate {
                        table,
                        uuid,
                        op: RowOp::Delete,
                    });
                }
                match old.filter(|_| !renamed) {
                    None => delta.rows.push(update::RowUpdate {
                        table,
                        uuid,
                        op: RowOp::Insert(row.iter().cloned().enumerate().collect()),
                    }),
                    Some(old) if old != row => delta.rows.push(update::RowUpdate {
                        table,
                        uuid,
                        op: RowOp::Modify(self.replacing_diff(table, old, row)),
                    }),
                    Some(_) => {}
                }
            }
            for (uuid, _) in self.rows(table) {
                if fresh.row(table, uuid).is_none() {
                    removals.rows.push(update::RowUpdate {
                        table,
                        uuid,
                        op: RowOp::Delete,
                    });
                }
            }
        }
        if removals.rows.is_empty() {
            return self.apply(delta);
        }
        // Both steps or neither: the replica is persistent, so the copy is cheap.
        let mut next = self.clone();
        let mut changes = next.apply(removals)?;
        let rest = next.apply(delta)?;
        changes.changes.extend(rest.changes);
        changes.root_changed |= rest.root_changed;
        changes.sort();
        *self = next;
        Ok(changes)
    }

    /// A modify-diff that turns `old` into `new` under the `update2` rules.
    fn replacing_diff(&self, table: TableId, old: &Row, new: &Row) -> Vec<(usize, Datum)> {
        let columns = &self.layout.table(table).columns;
        (0..new.len())
            .filter(|&i| old[i] != new[i])
            .map(|i| {
                let ty = &columns[i].ty;
                let diff = match (&old[i], &new[i]) {
                    _ if ty.is_scalar() || ty.is_optional() => new[i].clone(),
                    (Datum::Set(a), Datum::Set(b)) => {
                        Datum::Set(a.symmetric_difference(b).cloned().collect())
                    }
                    (Datum::Map(a), Datum::Map(b)) => {
                        let mut diff = b.clone();
                        diff.retain(|k, v| a.get(k) != Some(v));
                        for (k, v) in a.iter() {
                            if !b.contains_key(k) {
                                diff.insert(k.clone(), v.clone());
                            }
                        }
                        Datum::Map(diff)
                    }
                    _ => new[i].clone(),
                };
                (i, diff)
            })
            .collect()
    }

    /// Stores one row's new state and keeps the parent and name indexes in step.
    fn commit(&mut self, table: TableId, uuid: Uuid, old: Option<&Row>, new: Option<Row>) {
        if let Some((column, _)) = table.children() {
            // Only the children that changed: a bridge with thousands of ports must not
            // cost thousands of index operations (or worse) per update.
            let (removed, added) = {
                let before = old.and_then(|r| self.column(table, r, column));
                let after = new.as_ref().and_then(|r| self.column(table, r, column));
                (missing_from(before, after), missing_from(after, before))
            };
            let index = if table == TableId::Bridge {
                &mut self.port_bridge
            } else {
                &mut self.iface_port
            };
            for child in removed {
                // A child moved to another parent in the same update keeps the new one.
                if index.get(&child) == Some(&uuid) {
                    index.remove(&child);
                }
            }
            for child in added {
                index.insert(child, uuid);
            }
        }
        // The name index only changes with a name: touching a persistent map copies a
        // path of it, so an update of other columns leaves it alone.
        let renamed = match (old, &new) {
            (Some(old), Some(new)) => self.name_of(table, old) != self.name_of(table, new),
            _ => true,
        };
        if let Some(old) = old.filter(|_| renamed) {
            let name = self.name_of(table, old);
            let names = &mut self.by_name[table.index()];
            if names.get(name) == Some(&uuid) {
                names.remove(name);
            }
        }
        match new {
            Some(row) => {
                if renamed {
                    let name = self.name_of(table, &row).to_owned();
                    self.by_name[table.index()].insert(name, uuid);
                }
                self.tables[table.index()].insert(uuid, row);
            }
            None => {
                self.tables[table.index()].remove(&uuid);
            }
        }
    }
}

/// The row an insert makes: the values the server sent, the other columns at their
/// defaults. A column sent twice keeps the last value, as a repeated JSON member would.
fn inserted_row(columns: &[Column], mut values: Vec<(usize, Datum)>) -> Row {
    values.sort_by_key(|(index, _)| *index);
    let mut sent = values.into_iter().peekable();
    // One allocation: the iterator knows its length, so it is collected straight into
    // the shared row.
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let mut value = None;
            while let Some((_, v)) = sent.next_if(|(i, _)| *i == index) {
                value = Some(v);
            }
            value.unwrap_or_else(|| Datum::default_of(&column.ty))
        })
        .collect()
}

/// The uuids in `a` that are not in `b` (both uuid-set columns, kept sorted).
pub(crate) fn missing_from(a: Option<&Datum>, b: Option<&Datum>) -> Vec<Uuid> {
    match (a, b) {
        (Some(Datum::Set(a)), Some(Datum::Set(b))) => a
            .iter()
            .filter(|atom| !b.contains(atom))
            .filter_map(Atom::as_uuid)
            .collect(),
        (Some(a), _) => a.uuids().collect(),
        (None, _) => Vec::new(),
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
