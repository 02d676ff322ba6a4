//! OVSDB values as D-Bus values (SPEC §3). The D-Bus type comes from the column's schema
//! type, never from the value, so an empty optional is still `ax` and a subscriber can rely
//! on one signature per column.

use crate::ovsdb::datum::{Atom, Datum};
use crate::ovsdb::schema::{AtomType, ColumnType};
use crate::replica::layout::TableLayout;
use std::collections::BTreeMap;
use zbus::{Array, Dict, Signature, Variant};

/// `a{sv}` as sent in signals and the `Columns` property.
pub type VariantDict = BTreeMap<String, Variant<'static>>;

pub fn atom_signature(ty: AtomType) -> Signature {
    match ty {
        AtomType::Integer => Signature::I64,
        AtomType::Real => Signature::F64,
        AtomType::Boolean => Signature::Bool,
        AtomType::String | AtomType::Uuid => Signature::Str,
    }
}

/// The D-Bus signature of a column: the atom, an array of atoms, or a dictionary.
pub fn column_signature(ty: &ColumnType) -> Signature {
    match ty.value {
        Some(value) => Signature::dict(atom_signature(ty.key), atom_signature(value)),
        None if ty.is_scalar() => atom_signature(ty.key),
        None => Signature::array(atom_signature(ty.key)),
    }
}

pub fn atom_variant(atom: &Atom) -> Variant<'static> {
    match atom {
        Atom::Integer(i) => Variant::from(*i),
        Atom::Real(r) => Variant::from(*r),
        Atom::Boolean(b) => Variant::from(*b),
        Atom::String(s) => Variant::from(s.clone()),
        Atom::Uuid(u) => Variant::from(u.to_string()),
    }
}

/// Converts a column value. Values were parsed with the same column type, so the element
/// signatures always agree; a mismatch would be a bug and is reported, not hidden.
pub fn datum_variant(ty: &ColumnType, datum: &Datum) -> zbus::Result<Variant<'static>> {
    match datum {
        Datum::Map(map) => {
            let value_ty = ty.value.unwrap_or(ty.key);
            let mut dict = Dict::new(&atom_signature(ty.key), &atom_signature(value_ty));
            for (k, v) in map.iter() {
                dict.append(atom_variant(k), atom_variant(v))?;
            }
            Ok(Variant::Dict(dict))
        }
        Datum::Set(set) if ty.is_scalar() => Ok(set
            .first()
            .map(atom_variant)
            .unwrap_or_else(|| atom_variant(&Atom::default_of(ty.key)))),
        Datum::Set(set) => {
            let mut array = Array::new(&atom_signature(ty.key));
            for atom in set {
                array.append(atom_variant(atom))?;
            }
            Ok(Variant::Array(array))
        }
    }
}

/// The listed columns of a row as `a{sv}` keyed by OVSDB column name.
pub fn columns_dict(
    layout: &TableLayout,
    row: &[Datum],
    columns: impl IntoIterator<Item = usize>,
) -> zbus::Result<VariantDict> {
    columns
        .into_iter()
        .map(|i| {
            let column = &layout.columns[i];
            Ok((column.name.clone(), datum_variant(&column.ty, &row[i])?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::Uuid;

    use crate::ovsdb::schema::test_type as ty;

    fn sig(v: &Variant<'_>) -> String {
        v.value_signature().to_string()
    }

    #[test]
    fn scalar_atoms_map_to_basic_types() {
        let cases = [
            (AtomType::Integer, Atom::Integer(-3), "x"),
            (AtomType::Real, Atom::Real(1.5), "d"),
            (AtomType::Boolean, Atom::Boolean(true), "b"),
            (AtomType::String, Atom::String("s".into()), "s"),
            (AtomType::Uuid, Atom::Uuid(Uuid(1)), "s"),
        ];
        for (atom_ty, atom, expected) in cases {
            let column = ty(atom_ty, None, 1, Some(1));
            let v = datum_variant(&column, &Datum::Set([atom].into())).unwrap();
            assert_eq!(sig(&v), expected);
            assert_eq!(column_signature(&column).to_string(), expected);
        }
        let uuid = datum_variant(
            &ty(AtomType::Uuid, None, 1, Some(1)),
            &Datum::Set([Atom::Uuid(Uuid(0xab))].into()),
        )
        .unwrap();
        assert_eq!(
            uuid,
            Variant::from("00000000-0000-0000-0000-0000000000ab".to_string())
        );
    }

    #[test]
    fn optionals_and_sets_are_arrays_even_when_empty() {
        let optional = ty(AtomType::Integer, None, 0, Some(1));
        let empty = datum_variant(&optional, &Datum::Set(Default::default())).unwrap();
        assert_eq!(sig(&empty), "ax");
        let one = datum_variant(&optional, &Datum::Set([Atom::Integer(10)].into())).unwrap();
        assert_eq!(one, Variant::from(vec![10i64]));
        let strings = ty(AtomType::String, None, 0, None);
        assert_eq!(
            sig(&datum_variant(&strings, &Datum::Set(Default::default())).unwrap()),
            "as"
        );
        assert_eq!(column_signature(&strings).to_string(), "as");
    }

    #[test]
    fn maps_are_typed_dicts() {
        let map = ty(AtomType::String, Some(AtomType::Integer), 0, None);
        let empty = datum_variant(&map, &Datum::Map(Default::default())).unwrap();
        assert_eq!(sig(&empty), "a{sx}");
        let value = datum_variant(
            &map,
            &Datum::Map([(Atom::String("rx".into()), Atom::Integer(5))].into()),
        )
        .unwrap();
        assert_eq!(
            value,
            Variant::from(BTreeMap::from([("rx".to_string(), 5i64)]))
        );
        assert_eq!(column_signature(&map).to_string(), "a{sx}");
    }
}
