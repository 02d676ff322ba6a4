//! Coalescing: when the bus side is slower than OVSDB, the change sets waiting for it are
//! merged per row into their net difference, as ovsdb-server does for a slow client. Memory
//! stays bounded by the number of rows, and a subscriber still sees only real differences.
//! Pure: no I/O, no clocks.

use crate::ovsdb::datum::Uuid;
use crate::replica::layout::TableId;
use crate::replica::{ChangeKind, ChangeSet, RowChange};
use std::collections::HashMap;

/// Change sets merged per row, in a stable order until [`Merged::into_change_set`].
#[derive(Debug, Default, Clone)]
pub struct Merged {
    /// `None` marks a row whose changes cancelled out (added, then removed).
    changes: Vec<Option<RowChange>>,
    index: HashMap<(TableId, Uuid), usize>,
    root_changed: bool,
}

impl Merged {
    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && !self.root_changed
    }

    /// Whether the root row changed (versions, system-id).
    pub fn root_changed(&self) -> bool {
        self.root_changed
    }

    /// Rows with a pending net change.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Folds a later change set into this one.
    pub fn merge(&mut self, later: ChangeSet) {
        self.root_changed |= later.root_changed;
        for change in later.changes {
            let key = (change.table, change.uuid);
            match self.index.get(&key).copied() {
                // A row retired under one name and back under another (a resync after a
                // server renamed it) is two objects: the removal keeps its slot, unindexed.
                Some(slot) if is_rename(self.changes[slot].as_ref(), &change) => {
                    self.index.insert(key, self.changes.len());
                    self.changes.push(Some(change));
                }
                None => {
                    self.index.insert(key, self.changes.len());
                    self.changes.push(Some(change));
                }
                Some(slot) => {
                    let earlier = self.changes[slot].take().expect("indexed slots are full");
                    match net(earlier, change) {
                        Some(merged) => self.changes[slot] = Some(merged),
                        None => {
                            self.index.remove(&key);
                        }
                    }
                }
            }
        }
    }

    /// The net change set, in the order signals go out.
    pub fn into_change_set(self) -> ChangeSet {
        let mut set = ChangeSet {
            changes: self.changes.into_iter().flatten().collect(),
            root_changed: self.root_changed,
        };
        set.sort();
        set
    }
}

fn is_rename(earlier: Option<&RowChange>, later: &RowChange) -> bool {
    earlier.is_some_and(|earlier| {
        matches!(earlier.kind, ChangeKind::Removed { .. })
            && matches!(later.kind, ChangeKind::Added { .. })
            && earlier.name != later.name
    })
}

/// The net effect of `earlier` followed by `later` on one row; `None` when nothing is left.
/// Names come from the later change: they are the row's latest (for a removal, as they were
/// just before it).
fn net(earlier: RowChange, later: RowChange) -> Option<RowChange> {
    use ChangeKind::{Added, Changed, Removed};
    let kind = match (earlier.kind, later.kind) {
        (Added { .. }, Added { row } | Changed { new: row, .. }) => Added { row },
        (Added { .. }, Removed { .. }) => return None,
        (Changed { old, .. } | Removed { row: old }, Changed { new, .. } | Added { row: new }) => {
            let columns: Vec<usize> = (0..new.len()).filter(|&i| old[i] != new[i]).collect();
            if columns.is_empty() {
                return None;
            }
            Changed { old, new, columns }
        }
        (_, Removed { row }) => Removed { row },
    };
    Some(RowChange { kind, ..later })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::{Atom, Datum};
    use crate::replica::Row;

    fn int(value: i64) -> Datum {
        Datum::Set(std::iter::once(Atom::Integer(value)).collect())
    }

    fn row(name: &str, tag: i64) -> Row {
        Row::from(vec![
            Datum::Set(std::iter::once(Atom::String(name.into())).collect()),
            int(tag),
        ])
    }

    fn change(uuid: u128, name: &str, kind: ChangeKind) -> RowChange {
        RowChange {
            table: TableId::Port,
            uuid: Uuid(uuid),
            name: name.into(),
            bridge: "br0".into(),
            port: String::new(),
            kind,
        }
    }

    fn added(uuid: u128, name: &str, tag: i64) -> RowChange {
        change(
            uuid,
            name,
            ChangeKind::Added {
                row: row(name, tag),
            },
        )
    }

    fn changed(uuid: u128, name: &str, from: i64, to: i64) -> RowChange {
        let kind = ChangeKind::Changed {
            old: row(name, from),
            new: row(name, to),
            columns: vec![1],
        };
        change(uuid, name, kind)
    }

    fn removed(uuid: u128, name: &str, tag: i64) -> RowChange {
        change(
            uuid,
            name,
            ChangeKind::Removed {
                row: row(name, tag),
            },
        )
    }

    fn merged(sets: Vec<Vec<RowChange>>) -> Vec<RowChange> {
        let mut merged = Merged::default();
        for changes in sets {
            merged.merge(ChangeSet {
                changes,
                root_changed: false,
            });
        }
        merged.into_change_set().changes
    }

    #[test]
    fn removed_then_added_under_another_name_stays_two_objects() {
        let out = merged(vec![vec![removed(1, "p", 1)], vec![added(1, "q", 1)]]);
        assert_eq!(out, vec![removed(1, "p", 1), added(1, "q", 1)]);
        // Under the same name it is one object that changed.
        let out = merged(vec![vec![removed(1, "p", 1)], vec![added(1, "p", 2)]]);
        assert_eq!(out, vec![changed(1, "p", 1, 2)]);
    }

    #[test]
    fn added_then_changed_is_added_with_the_final_row() {
        let out = merged(vec![vec![added(1, "p", 1)], vec![changed(1, "p", 1, 2)]]);
        assert_eq!(out, vec![added(1, "p", 2)]);
    }

    #[test]
    fn added_then_removed_is_nothing() {
        let mut merged_set = Merged::default();
        merged_set.merge(ChangeSet {
            changes: vec![added(1, "p", 1)],
            root_changed: false,
        });
        merged_set.merge(ChangeSet {
            changes: vec![removed(1, "p", 1)],
            root_changed: false,
        });
        assert!(merged_set.is_empty());
        assert!(merged_set.into_change_set().changes.is_empty());
    }

    #[test]
    fn changed_twice_keeps_the_first_old_and_the_last_new() {
        let out = merged(vec![
            vec![changed(1, "p", 1, 2)],
            vec![changed(1, "p", 2, 3)],
        ]);
        assert_eq!(out, vec![changed(1, "p", 1, 3)]);
    }

    #[test]
    fn changed_back_to_the_start_is_nothing() {
        let out = merged(vec![
            vec![changed(1, "p", 1, 2)],
            vec![changed(1, "p", 2, 1)],
        ]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn only_columns_that_really_differ_are_reported() {
        let two = |a: i64, b: i64| Row::from(vec![int(a), int(b)]);
        let first = change(
            1,
            "p",
            ChangeKind::Changed {
                old: two(1, 1),
                new: two(2, 2),
                columns: vec![0, 1],
            },
        );
        let second = change(
            1,
            "p",
            ChangeKind::Changed {
                old: two(2, 2),
                new: two(2, 1),
                columns: vec![1],
            },
        );
        let out = merged(vec![vec![first], vec![second]]);
        let ChangeKind::Changed { columns, old, new } = &out[0].kind else {
            panic!("{out:?}")
        };
        assert_eq!(columns, &vec![0]);
        assert_eq!((old.clone(), new.clone()), (two(1, 1), two(2, 1)));
    }

    #[test]
    fn changed_then_removed_is_removed_with_the_last_row() {
        let out = merged(vec![vec![changed(1, "p", 1, 2)], vec![removed(1, "p", 2)]]);
        assert_eq!(out, vec![removed(1, "p", 2)]);
    }

    #[test]
    fn a_name_recreated_with_a_new_uuid_is_removed_then_added() {
        let out = merged(vec![vec![removed(1, "p", 1)], vec![added(2, "p", 5)]]);
        assert_eq!(out, vec![removed(1, "p", 1), added(2, "p", 5)]);
        // The same in the other order of arrival is still Removed first.
        let out = merged(vec![vec![added(2, "p", 5)], vec![removed(1, "p", 1)]]);
        assert_eq!(out, vec![removed(1, "p", 1), added(2, "p", 5)]);
    }

    #[test]
    fn removed_then_added_with_the_same_uuid_is_a_change() {
        let out = merged(vec![vec![removed(1, "p", 1)], vec![added(1, "p", 4)]]);
        assert_eq!(out, vec![changed(1, "p", 1, 4)]);
    }

    #[test]
    fn names_follow_the_latest_change() {
        let mut moved = changed(1, "p", 2, 3);
        moved.bridge = "br1".into();
        let out = merged(vec![vec![added(1, "p", 1)], vec![moved]]);
        assert_eq!(out[0].bridge, "br1");
    }

    #[test]
    fn rows_never_merged_keep_their_own_changes_and_root_changes_accumulate() {
        let mut merged_set = Merged::default();
        merged_set.merge(ChangeSet {
            changes: vec![added(1, "a", 1)],
            root_changed: true,
        });
        merged_set.merge(ChangeSet {
            changes: vec![changed(2, "b", 1, 2)],
            root_changed: false,
        });
        assert_eq!(merged_set.len(), 2);
        let set = merged_set.into_change_set();
        assert!(set.root_changed);
        assert_eq!(set.changes, vec![added(1, "a", 1), changed(2, "b", 1, 2)]);
    }
}
