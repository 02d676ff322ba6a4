//! OVSDB values (RFC 7047 §5.1): atoms, and data that are sets or maps of atoms, parsed and
//! written according to a column's schema type.

use super::atoms::{AtomMap, AtomSet};
use super::schema::{AtomType, ColumnType};
use serde_json::{Value as Json, json};
use std::cmp::Ordering;
use std::fmt;

/// A row UUID, kept as 128 bits: rows are compared and hashed far more often than printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(pub u128);

impl Uuid {
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let mut value: u128 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b != b'-' {
                    return None;
                }
                continue;
            }
            let digit = (b as char).to_digit(16)?;
            value = (value << 4) | u128::from(digit);
        }
        Some(Self(value))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

/// One atomic value. Reals order by `total_cmp` so atoms can live in ordered sets.
#[derive(Debug, Clone)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    Uuid(Uuid),
}

impl Atom {
    /// The value OVSDB gives a column it does not mention (`ovsdb_atom_init_default`).
    pub fn default_of(ty: AtomType) -> Self {
        match ty {
            AtomType::Integer => Self::Integer(0),
            AtomType::Real => Self::Real(0.0),
            AtomType::Boolean => Self::Boolean(false),
            AtomType::String => Self::String(String::new()),
            AtomType::Uuid => Self::Uuid(Uuid::default()),
        }
    }

    pub fn from_json(ty: AtomType, json: &Json) -> Result<Self, DatumError> {
        let bad = || DatumError(format!("expected {} atom, got {json}", ty.name()));
        Ok(match ty {
            AtomType::Integer => Self::Integer(json.as_i64().ok_or_else(bad)?),
            AtomType::Real => Self::Real(json.as_f64().ok_or_else(bad)?),
            AtomType::Boolean => Self::Boolean(json.as_bool().ok_or_else(bad)?),
            AtomType::String => Self::String(json.as_str().ok_or_else(bad)?.to_owned()),
            AtomType::Uuid => match json.as_array().map(Vec::as_slice) {
                Some([tag, Json::String(text)]) if tag == "uuid" => {
                    Self::Uuid(Uuid::parse(text).ok_or_else(bad)?)
                }
                _ => return Err(bad()),
            },
        })
    }

    pub fn to_json(&self) -> Json {
        match self {
            Self::Integer(i) => json!(i),
            Self::Real(r) => json!(r),
            Self::Boolean(b) => json!(b),
            Self::String(s) => json!(s),
            Self::Uuid(u) => json!(["uuid", u.to_string()]),
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Self::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Integer(_) => 0,
            Self::Real(_) => 1,
            Self::Boolean(_) => 2,
            Self::String(_) => 3,
            Self::Uuid(_) => 4,
        }
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Integer(a), Self::Integer(b)) => a.cmp(b),
            (Self::Real(a), Self::Real(b)) => a.total_cmp(b),
            (Self::Boolean(a), Self::Boolean(b)) => a.cmp(b),
            (Self::String(a), Self::String(b)) => a.cmp(b),
            (Self::Uuid(a), Self::Uuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(i) => write!(f, "{i}"),
            Self::Real(r) => write!(f, "{r}"),
            Self::Boolean(b) => write!(f, "{b}"),
            Self::String(s) => write!(f, "{s}"),
            Self::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// A column value. A scalar is a one-element set; a map is ordered by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Set(AtomSet),
    Map(AtomMap),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DatumError(pub String);

impl Datum {
    /// The value of a column the server omitted: the type's default.
    pub fn default_of(ty: &ColumnType) -> Self {
        if ty.is_map() {
            Self::Map(AtomMap::new())
        } else if ty.min == 1 {
            Self::Set(AtomSet::from([Atom::default_of(ty.key)]))
        } else {
            Self::Set(AtomSet::new())
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Set(s) => s.len(),
            Self::Map(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses `<value>` as RFC 7047 writes it: a bare atom, `["set", [...]]` or
    /// `["map", [[k, v], ...]]`. Element counts are not checked here: a modify-diff is
    /// allowed to exceed the column's bounds.
    pub fn from_json(ty: &ColumnType, json: &Json) -> Result<Self, DatumError> {
        match (ty.value, tagged(json)) {
            (Some(value_ty), Some(("map", pairs))) => {
                let mut map = AtomMap::new();
                for pair in pairs {
                    match pair.as_array().map(Vec::as_slice) {
                        Some([k, v]) => {
                            map.insert(Atom::from_json(ty.key, k)?, Atom::from_json(value_ty, v)?);
                        }
                        _ => return Err(DatumError(format!("bad map pair {pair}"))),
                    }
                }
                Ok(Self::Map(map))
            }
            (Some(_), _) => Err(DatumError(format!("expected a map, got {json}"))),
            (None, Some(("set", atoms))) => atoms
                .iter()
                .map(|a| Atom::from_json(ty.key, a))
                .collect::<Result<_, _>>()
                .map(Self::Set),
            (None, _) => Ok(Self::Set(AtomSet::from([Atom::from_json(ty.key, json)?]))),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Self::Set(set) if set.len() == 1 => set.first().map(Atom::to_json).unwrap_or_default(),
            Self::Set(set) => json!(["set", set.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Self::Map(map) => json!([
                "map",
                map.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// The single atom of a scalar or a non-empty optional.
    pub fn first(&self) -> Option<&Atom> {
        match self {
            Self::Set(s) => s.first(),
            Self::Map(_) => None,
        }
    }

    /// Every uuid among the set's atoms (or the map's values, for uuid-valued maps).
    pub fn uuids(&self) -> impl Iterator<Item = Uuid> + '_ {
        let atoms: Box<dyn Iterator<Item = &Atom>> = match self {
            Self::Set(s) => Box::new(s.iter()),
            Self::Map(m) => Box::new(m.values()),
        };
        atoms.filter_map(Atom::as_uuid)
    }
}

/// Splits `["set", [...]]` / `["map", [...]]` into its tag and elements.
fn tagged(json: &Json) -> Option<(&str, &Vec<Json>)> {
    match json.as_array().map(Vec::as_slice) {
        Some([Json::String(tag), Json::Array(items)]) if tag == "set" || tag == "map" => {
            Some((tag.as_str(), items))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ovsdb::schema::test_type as ty;

    #[test]
    fn uuid_round_trips_lowercase() {
        let text = "0e3a1b2c-4d5e-6f70-8192-a3b4c5d6e7f8";
        assert_eq!(Uuid::parse(text).unwrap().to_string(), text);
        assert_eq!(
            Uuid::parse("0E3A1B2C-4D5E-6F70-8192-A3B4C5D6E7F8")
                .unwrap()
                .to_string(),
            text
        );
        assert!(Uuid::parse("0e3a1b2c-4d5e-6f70-8192-a3b4c5d6e7f").is_none());
        assert!(Uuid::parse("0e3a1b2cx4d5e-6f70-8192-a3b4c5d6e7f8").is_none());
        assert!(Uuid::parse("0e3a1b2c-4d5e-6f70-8192-a3b4c5d6e7fg").is_none());
    }

    #[test]
    fn parses_bare_atom_set_and_map() {
        let int = ty(AtomType::Integer, None, 0, None);
        assert_eq!(
            Datum::from_json(&int, &json!(5)).unwrap(),
            Datum::Set([Atom::Integer(5)].into())
        );
        assert_eq!(
            Datum::from_json(&int, &json!(["set", [3, 1]])).unwrap(),
            Datum::Set([Atom::Integer(1), Atom::Integer(3)].into())
        );
        let map = ty(AtomType::String, Some(AtomType::String), 0, None);
        let parsed = Datum::from_json(&map, &json!(["map", [["a", "1"], ["b", "2"]]])).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed.to_json(), json!(["map", [["a", "1"], ["b", "2"]]]));
        let uuid = ty(AtomType::Uuid, None, 0, None);
        let u = "0e3a1b2c-4d5e-6f70-8192-a3b4c5d6e7f8";
        assert_eq!(
            Datum::from_json(&uuid, &json!(["uuid", u]))
                .unwrap()
                .uuids()
                .next(),
            Uuid::parse(u)
        );
    }

    #[test]
    fn rejects_wrong_atom_types_without_panicking() {
        let int = ty(AtomType::Integer, None, 1, Some(1));
        assert!(Datum::from_json(&int, &json!("x")).is_err());
        assert!(Datum::from_json(&int, &json!(1.5)).is_err());
        let map = ty(AtomType::String, Some(AtomType::Integer), 0, None);
        assert!(Datum::from_json(&map, &json!(["map", [["a"]]])).is_err());
        assert!(Datum::from_json(&map, &json!(["set", []])).is_err());
        let uuid = ty(AtomType::Uuid, None, 1, Some(1));
        assert!(Datum::from_json(&uuid, &json!(["named-uuid", "x"])).is_err());
    }

    #[test]
    fn defaults_follow_the_type() {
        assert_eq!(
            Datum::default_of(&ty(AtomType::String, None, 1, Some(1))),
            Datum::Set([Atom::String(String::new())].into())
        );
        assert!(Datum::default_of(&ty(AtomType::Integer, None, 0, Some(1))).is_empty());
        assert_eq!(
            Datum::default_of(&ty(AtomType::String, Some(AtomType::String), 0, None)),
            Datum::Map(AtomMap::new())
        );
    }

    #[test]
    fn reals_accept_integer_json() {
        let real = ty(AtomType::Real, None, 1, Some(1));
        assert_eq!(
            Datum::from_json(&real, &json!(2)).unwrap().first(),
            Some(&Atom::Real(2.0))
        );
    }
}
