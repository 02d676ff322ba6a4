//! The `update2` "modify" rules (ovsdb-server(7)): how a column diff turns the old value into
//! the new one. Re-applying a diff undoes it, which the tests use as a property.

use crate::ovsdb::datum::{Atom, Datum};
use crate::ovsdb::schema::{AtomRange, ColumnType};

/// Applies `diff` to `old` for a column of type `ty`:
/// scalars and optionals are replaced; set elements toggle (present → removed,
/// absent → added); map keys: absent → inserted, same value → deleted, other value → replaced.
/// A result with an element count outside the column's `min..=max` is an error: the replica
/// and the server disagree and the caller must resynchronise instead of guessing.
pub fn apply_diff(ty: &ColumnType, old: &Datum, diff: Datum) -> Result<Datum, String> {
    let new = if ty.is_scalar() || ty.is_optional() {
        diff
    } else {
        match (old.clone(), diff) {
            (Datum::Set(mut set), Datum::Set(toggles)) => {
                for atom in toggles {
                    if !set.remove(&atom) {
                        set.insert(atom);
                    }
                }
                Datum::Set(set)
            }
            (Datum::Map(mut map), Datum::Map(changes)) => {
                for (key, value) in changes {
                    match map.get(&key) {
                        Some(current) if *current == value => {
                            map.remove(&key);
                        }
                        _ => {
                            map.insert(key, value);
                        }
                    }
                }
                Datum::Map(map)
            }
            _ => return Err("diff is not of the column's kind".into()),
        }
    };
    check_bounds(ty, &new)?;
    Ok(new)
}

/// A value with an element count the column does not allow is an inconsistency.
pub fn check_bounds(ty: &ColumnType, value: &Datum) -> Result<(), String> {
    if !ty.allows_len(value.len()) {
        return Err(format!(
            "{} elements, outside {}..{}",
            value.len(),
            ty.min,
            ty.max.map_or("unlimited".into(), |m| m.to_string())
        ));
    }
    match value {
        Datum::Set(set) => set.iter().try_for_each(|atom| allowed(&ty.key_range, atom)),
        Datum::Map(map) => map.iter().try_for_each(|(k, v)| {
            allowed(&ty.key_range, k)?;
            allowed(&ty.value_range, v)
        }),
    }
}

/// Whether an atom is within its base type's constraints (a value the server's own schema
/// forbids is an inconsistency, as a wrong count is).
fn allowed(range: &AtomRange, atom: &Atom) -> Result<(), String> {
    let outside = |what: String| Err(format!("{} outside the schema's {what}", atom.to_json()));
    if let Atom::Integer(n) = atom {
        if range.min_integer.is_some_and(|min| *n < min)
            || range.max_integer.is_some_and(|max| *n > max)
        {
            return outside(format!(
                "range {}..{}",
                range.min_integer.map_or("".into(), |m| m.to_string()),
                range.max_integer.map_or("".into(), |m| m.to_string())
            ));
        }
    }
    if let Atom::String(text) = atom {
        let length = text.chars().count() as u64;
        if range.min_length.is_some_and(|min| length < min)
            || range.max_length.is_some_and(|max| length > max)
        {
            return outside("string length".into());
        }
    }
    if let Some(allowed) = &range.allowed
        && !allowed.iter().any(|choice| same_atom(choice, atom))
    {
        return outside("enumeration".into());
    }
    Ok(())
}

/// `atom == choice` without building JSON for the atom (checked for every enum-typed value
/// of every update and snapshot).
fn same_atom(choice: &serde_json::Value, atom: &Atom) -> bool {
    use serde_json::Value as Json;
    match (choice, atom) {
        (Json::String(a), Atom::String(b)) => a == b,
        (Json::Number(n), Atom::Integer(i)) => n.as_i64() == Some(*i),
        (Json::Number(n), Atom::Real(r)) => n.as_f64() == Some(*r),
        (Json::Bool(a), Atom::Boolean(b)) => a == b,
        (choice, atom) => *choice == atom.to_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::Atom;
    use crate::ovsdb::schema::AtomType;

    fn column(value: Option<AtomType>, min: u64, max: Option<u64>) -> ColumnType {
        let key = if value.is_some() {
            AtomType::String
        } else {
            AtomType::Integer
        };
        crate::ovsdb::schema::test_type(key, value, min, max)
    }

    fn ints(values: &[i64]) -> Datum {
        Datum::Set(values.iter().map(|&i| Atom::Integer(i)).collect())
    }

    fn strmap(pairs: &[(&str, &str)]) -> Datum {
        Datum::Map(
            pairs
                .iter()
                .map(|(k, v)| (Atom::String(k.to_string()), Atom::String(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn scalar_is_replaced() {
        let ty = column(None, 1, Some(1));
        assert_eq!(
            apply_diff(&ty, &ints(&[1]), ints(&[7])).unwrap(),
            ints(&[7])
        );
    }

    #[test]
    fn optional_is_replaced_set_and_cleared() {
        let ty = column(None, 0, Some(1));
        assert_eq!(
            apply_diff(&ty, &ints(&[]), ints(&[10])).unwrap(),
            ints(&[10])
        );
        assert_eq!(
            apply_diff(&ty, &ints(&[10]), ints(&[20])).unwrap(),
            ints(&[20])
        );
        assert_eq!(apply_diff(&ty, &ints(&[20]), ints(&[])).unwrap(), ints(&[]));
    }

    #[test]
    fn set_elements_toggle() {
        let ty = column(None, 0, None);
        // {2,3} with diff {1,3} (as ovsdb-server sends for trunks=2,3 → 1,2)
        assert_eq!(
            apply_diff(&ty, &ints(&[2, 3]), ints(&[1, 3])).unwrap(),
            ints(&[1, 2])
        );
    }

    #[test]
    fn toggling_an_element_twice_restores_the_set() {
        let ty = column(None, 0, None);
        let once = apply_diff(&ty, &ints(&[1]), ints(&[5])).unwrap();
        assert_eq!(once, ints(&[1, 5]));
        assert_eq!(apply_diff(&ty, &once, ints(&[5])).unwrap(), ints(&[1]));
    }

    #[test]
    fn map_keys_insert_delete_replace() {
        let ty = column(Some(AtomType::String), 0, None);
        let old = strmap(&[("a", "1"), ("b", "2")]);
        let diff = strmap(&[("a", "1"), ("b", "3"), ("c", "4")]);
        assert_eq!(
            apply_diff(&ty, &old, diff).unwrap(),
            strmap(&[("b", "3"), ("c", "4")])
        );
    }

    #[test]
    fn map_key_set_to_same_value_deletes_it() {
        let ty = column(Some(AtomType::String), 0, None);
        assert_eq!(
            apply_diff(&ty, &strmap(&[("x", "1")]), strmap(&[("x", "1")])).unwrap(),
            strmap(&[])
        );
    }

    #[test]
    fn reapplying_a_diff_undoes_it() {
        let ty = column(None, 0, None);
        let old = ints(&[1, 2, 3]);
        let diff = ints(&[3, 4]);
        let new = apply_diff(&ty, &old, diff.clone()).unwrap();
        assert_eq!(apply_diff(&ty, &new, diff).unwrap(), old);
    }

    #[test]
    fn results_outside_bounds_are_errors() {
        let ty = column(None, 1, Some(2));
        assert!(apply_diff(&ty, &ints(&[1]), ints(&[1])).is_err()); // empties a min=1 set
        assert!(apply_diff(&ty, &ints(&[1, 2]), ints(&[3])).is_err()); // 3 > max
        let optional = column(None, 0, Some(1));
        assert!(apply_diff(&optional, &ints(&[]), ints(&[1, 2])).is_err());
    }

    #[test]
    fn kind_mismatch_is_an_error() {
        let ty = column(None, 0, None);
        assert!(apply_diff(&ty, &ints(&[1]), strmap(&[("a", "b")])).is_err());
    }
}
