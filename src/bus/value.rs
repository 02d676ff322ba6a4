//! OVSDB values as D-Bus values (SPEC §3). The D-Bus type comes from the column's schema
//! type, never from the value, so an empty optional is still `ax` and a subscriber can rely
//! on one signature per column.
//!
//! Two encodings of the same mapping: [`ColumnVariant`] and [`ColumnsDict`] write a value
//! straight into a message while it is serialised (signals, properties, GetManagedObjects:
//! the hot paths, where building a `Variant` tree first was most of a burst's cost);
//! [`datum_variant`] builds an owned `Variant` for replies that are kept (`GetRow`,
//! `WaitFor`). A unit test holds the two to the same bytes.

use crate::ovsdb::datum::{Atom, Datum};
use crate::ovsdb::schema::{AtomType, ColumnType};
use crate::replica::layout::TableLayout;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use std::collections::BTreeMap;
use zbus::zvariant::Type;
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

/// Index into the signature tables below: `x`, `d`, `b`, `s`.
fn atom_code(ty: AtomType) -> usize {
    match ty {
        AtomType::Integer => 0,
        AtomType::Real => 1,
        AtomType::Boolean => 2,
        AtomType::String | AtomType::Uuid => 3,
    }
}

const SCALARS: [&str; 4] = ["x", "d", "b", "s"];
const ARRAYS: [&str; 4] = ["ax", "ad", "ab", "as"];
const DICTS: [[&str; 4]; 4] = [
    ["a{xx}", "a{xd}", "a{xb}", "a{xs}"],
    ["a{dx}", "a{dd}", "a{db}", "a{ds}"],
    ["a{bx}", "a{bd}", "a{bb}", "a{bs}"],
    ["a{sx}", "a{sd}", "a{sb}", "a{ss}"],
];

/// The D-Bus signature of a column: the atom, an array of atoms, or a dictionary.
pub fn column_signature(ty: &ColumnType) -> &'static str {
    match ty.value {
        Some(value) => DICTS[atom_code(ty.key)][atom_code(value)],
        None if ty.is_scalar() => SCALARS[atom_code(ty.key)],
        None => ARRAYS[atom_code(ty.key)],
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

/// Writes `value` as a variant of type `signature`: the D-Bus serializer takes a struct
/// of (signature text, value) in a `v` position as exactly that.
pub fn serialize_variant<S: Serializer, T: Serialize + ?Sized>(
    serializer: S,
    signature: &str,
    value: &T,
) -> Result<S::Ok, S::Error> {
    let mut variant = serializer.serialize_struct("Variant", 2)?;
    variant.serialize_field("signature", signature)?;
    variant.serialize_field("value", value)?;
    variant.end()
}

/// A column value as a variant (`v`), written while the message is serialised.
pub struct ColumnVariant<'a> {
    pub ty: &'a ColumnType,
    pub datum: &'a Datum,
}

impl Type for ColumnVariant<'_> {
    const SIGNATURE: &'static Signature = &Signature::Variant;
}

impl Serialize for ColumnVariant<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_variant(serializer, column_signature(self.ty), &BareColumn(self))
    }
}

/// The value inside the variant.
struct BareColumn<'a>(&'a ColumnVariant<'a>);

impl Serialize for BareColumn<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ColumnVariant { ty, datum } = self.0;
        match datum {
            Datum::Map(map) => {
                let mut dict = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map.iter() {
                    dict.serialize_entry(&BareAtom(k), &BareAtom(v))?;
                }
                dict.end()
            }
            Datum::Set(set) if ty.is_scalar() => match set.first() {
                Some(atom) => BareAtom(atom).serialize(serializer),
                None => BareAtom(&Atom::default_of(ty.key)).serialize(serializer),
            },
            Datum::Set(set) => {
                let mut array = serializer.serialize_seq(Some(set.len()))?;
                for atom in set {
                    array.serialize_element(&BareAtom(atom))?;
                }
                array.end()
            }
        }
    }
}

struct BareAtom<'a>(&'a Atom);

impl Serialize for BareAtom<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Atom::Integer(i) => serializer.serialize_i64(*i),
            Atom::Real(r) => serializer.serialize_f64(*r),
            Atom::Boolean(b) => serializer.serialize_bool(*b),
            Atom::String(s) => serializer.serialize_str(s),
            Atom::Uuid(u) => serializer.serialize_str(&u.to_string()),
        }
    }
}

/// Columns of a row as `a{sv}` keyed by OVSDB column name, written while serialised.
pub struct ColumnsDict<'a> {
    pub layout: &'a TableLayout,
    pub row: &'a [Datum],
    /// `None`: every mirrored column.
    pub only: Option<&'a [usize]>,
    /// Values written instead of the row's, by column index (the deltas of large sets).
    pub instead: &'a [(usize, Datum)],
}

static COLUMNS_SIGNATURE: Signature = Signature::static_dict(&Signature::Str, &Signature::Variant);

impl Type for ColumnsDict<'_> {
    const SIGNATURE: &'static Signature = &COLUMNS_SIGNATURE;
}

impl Serialize for ColumnsDict<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let count = self.only.map_or(self.layout.columns.len(), <[usize]>::len);
        let mut dict = serializer.serialize_map(Some(count))?;
        let mut entry = |i: usize| {
            let column = &self.layout.columns[i];
            let datum = self
                .instead
                .iter()
                .find_map(|(j, datum)| (*j == i).then_some(datum))
                .unwrap_or(&self.row[i]);
            let value = ColumnVariant {
                ty: &column.ty,
                datum,
            };
            dict.serialize_entry(column.name.as_str(), &value)
        };
        match self.only {
            Some(only) => only.iter().try_for_each(|&i| entry(i))?,
            None => (0..self.layout.columns.len()).try_for_each(entry)?,
        }
        dict.end()
    }
}

/// `value` as it goes on the wire.
#[cfg(test)]
fn to_wire<T: Serialize + Type>(value: &T) -> zbus::wire::serialized::Data<'static, 'static> {
    use zbus::wire::{LE, serialized::Context, to_bytes};
    to_bytes(Context::new(LE, 0), value).unwrap()
}

/// Serialises `value` as a message body and reads it back as a variant.
#[cfg(test)]
pub(crate) fn round_trip<T: Serialize + Type>(value: &T) -> zbus::OwnedVariant {
    let (variant, _) = to_wire(value).deserialize().unwrap();
    variant
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::Uuid;
    use serde_json::json;

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

    /// Written straight into a message or built as a `Variant` first: the same bytes, for
    /// every column type of the schema, empty and filled.
    #[test]
    fn written_columns_equal_built_variants() {
        use crate::replica::layout::{ColumnSelection, Layout, TableId};
        let layout = Layout::new(
            &crate::replica::layout::tests::test_schema(),
            &ColumnSelection::default(),
        )
        .unwrap();
        for table in TableId::PUBLISHED {
            let layout = layout.table(table);
            let empty: Vec<Datum> = layout
                .columns
                .iter()
                .map(|c| Datum::default_of(&c.ty))
                .collect();
            let filled: Vec<Datum> = layout
                .columns
                .iter()
                .map(|c| {
                    let json = match (c.ty.key, c.ty.value) {
                        (_, Some(_)) if c.ty.key == AtomType::String => {
                            json!(["map", [["k", sample(c.ty.value.unwrap())]]])
                        }
                        (key, None) if c.ty.is_scalar() => sample(key),
                        (key, None) => json!(["set", [sample(key)]]),
                        _ => json!(["map", []]),
                    };
                    Datum::from_json(&c.ty, &json).unwrap_or_else(|e| panic!("{}: {e}", c.name))
                })
                .collect();
            for row in [&empty, &filled] {
                let written = ColumnsDict {
                    layout,
                    row,
                    only: None,
                    instead: &[],
                };
                let built = columns_dict(layout, row, 0..layout.columns.len()).unwrap();
                assert_eq!(
                    to_wire(&written).bytes(),
                    to_wire(&built).bytes(),
                    "{table}"
                );
                let only = [0, layout.columns.len() - 1];
                let written = ColumnsDict {
                    layout,
                    row,
                    only: Some(&only),
                    instead: &[],
                };
                let built = columns_dict(layout, row, only).unwrap();
                assert_eq!(
                    to_wire(&written).bytes(),
                    to_wire(&built).bytes(),
                    "{table}, 2"
                );
            }
        }
    }

    fn sample(ty: AtomType) -> serde_json::Value {
        match ty {
            AtomType::Integer => json!(7),
            AtomType::Real => json!(1.5),
            AtomType::Boolean => json!(true),
            AtomType::String => json!("x"),
            AtomType::Uuid => json!(["uuid", "00000000-0000-0000-0000-0000000000ab"]),
        }
    }
}
