//! OVSDB values (RFC 7047 §5.1): atoms, and data that are sets or maps of atoms, parsed and
//! written according to a column's schema type.

use super::atoms::{AtomMap, AtomSet};
use super::schema::{AtomType, ColumnType};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
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
        AtomSeed(ty)
            .deserialize(json)
            .map_err(|e| DatumError(e.to_string()))
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
        DatumSeed(ty)
            .deserialize(json)
            .map_err(|e| DatumError(e.to_string()))
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

/// Reads one datum of a column type straight from the JSON text (or from a parsed
/// `Json`, which is a deserializer too): the hot path of every update and of the
/// start-up snapshot never builds a `Json` tree first.
#[derive(Clone, Copy)]
pub struct DatumSeed<'a>(pub &'a ColumnType);

impl<'de> DeserializeSeed<'de> for DatumSeed<'_> {
    type Value = Datum;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Datum, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DatumSeed<'_> {
    type Value = Datum;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0.value {
            Some(_) => f.write_str("a map, [\"map\", [[key, value], …]]"),
            None => write!(f, "{} atom or [\"set\", […]]", self.0.key.name()),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
        self.single(AtomSeed(self.0.key).visit_i64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
        self.single(AtomSeed(self.0.key).visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Datum, E> {
        self.single(AtomSeed(self.0.key).visit_f64(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Datum, E> {
        self.single(AtomSeed(self.0.key).visit_bool(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Datum, E> {
        self.single(AtomSeed(self.0.key).visit_str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        let ty = self.0;
        let tag: std::borrow::Cow<'de, str> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let datum = match (tag.as_ref(), ty.value) {
            ("map", Some(value)) => seq
                .next_element_seed(PairsSeed(ty.key, value))?
                .map(Datum::Map),
            ("set", None) => seq.next_element_seed(AtomsSeed(ty.key))?.map(Datum::Set),
            ("uuid", None) if ty.key == AtomType::Uuid => seq
                .next_element::<std::borrow::Cow<'de, str>>()?
                .map(|text| uuid_atom(&text))
                .transpose()?
                .map(|atom| Datum::Set(AtomSet::from([atom]))),
            _ => return Err(de::Error::invalid_value(de::Unexpected::Str(&tag), &self)),
        };
        let datum = datum.ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok(datum)
    }
}

impl DatumSeed<'_> {
    /// A bare atom: a set of one, never a map.
    fn single<E: de::Error>(self, atom: Result<Atom, E>) -> Result<Datum, E> {
        if self.0.value.is_some() {
            return Err(E::custom(format!(
                "expected a map, got a bare {}",
                self.0.key.name()
            )));
        }
        atom.map(|atom| Datum::Set(AtomSet::from([atom])))
    }
}

/// D-Bus strings cannot hold NUL (the bus daemon drops a connection that sends one), so a
/// value with one is refused here, as an error of the update that carries it.
fn carriable<E: de::Error>(text: &str) -> Result<&str, E> {
    match text.contains('\0') {
        true => Err(E::custom(format!(
            "a string with a NUL character, which D-Bus cannot carry: {text:?}"
        ))),
        false => Ok(text),
    }
}

fn uuid_atom<E: de::Error>(text: &str) -> Result<Atom, E> {
    Uuid::parse(text)
        .map(Atom::Uuid)
        .ok_or_else(|| E::custom(format!("bad uuid {text:?}")))
}

/// One atom of a type. Integers are accepted where reals are expected (JSON does not
/// tell them apart), not the other way round.
#[derive(Clone, Copy)]
struct AtomSeed(AtomType);

impl<'de> DeserializeSeed<'de> for AtomSeed {
    type Value = Atom;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Atom, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AtomSeed {
    type Value = Atom;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} atom", self.0.name())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Atom, E> {
        match self.0 {
            AtomType::Integer => Ok(Atom::Integer(v)),
            AtomType::Real => Ok(Atom::Real(v as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Atom, E> {
        match (self.0, i64::try_from(v)) {
            (AtomType::Integer, Ok(v)) => Ok(Atom::Integer(v)),
            (AtomType::Real, _) => Ok(Atom::Real(v as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Atom, E> {
        match self.0 {
            AtomType::Real => Ok(Atom::Real(v)),
            _ => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Atom, E> {
        match self.0 {
            AtomType::Boolean => Ok(Atom::Boolean(v)),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Atom, E> {
        match self.0 {
            AtomType::String => Ok(Atom::String(carriable(v)?.to_owned())),
            _ => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Atom, E> {
        match self.0 {
            AtomType::String => {
                carriable::<E>(&v)?;
                Ok(Atom::String(v))
            }
            _ => Err(E::invalid_type(de::Unexpected::Str(&v), &self)),
        }
    }

    /// `["uuid", "…"]`.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        if self.0 != AtomType::Uuid {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let tag: std::borrow::Cow<'de, str> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        if tag != "uuid" {
            return Err(de::Error::invalid_value(de::Unexpected::Str(&tag), &self));
        }
        let text: std::borrow::Cow<'de, str> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        uuid_atom(&text)
    }
}

/// `[atom, …]` of a set.
struct AtomsSeed(AtomType);

impl<'de> DeserializeSeed<'de> for AtomsSeed {
    type Value = AtomSet;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<AtomSet, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AtomsSeed {
    type Value = AtomSet;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {} atoms", self.0.name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AtomSet, A::Error> {
        let mut atoms = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(atom) = seq.next_element_seed(AtomSeed(self.0))? {
            atoms.push(atom);
        }
        Ok(atoms.into_iter().collect())
    }
}

/// `[[key, value], …]` of a map; a repeated key keeps its last value.
struct PairsSeed(AtomType, AtomType);

impl<'de> DeserializeSeed<'de> for PairsSeed {
    type Value = AtomMap;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<AtomMap, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairsSeed {
    type Value = AtomMap;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an array of [{}, {}] pairs",
            self.0.name(),
            self.1.name()
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AtomMap, A::Error> {
        let mut map = AtomMap::new();
        while let Some((key, value)) = seq.next_element_seed(PairSeed(self.0, self.1))? {
            map.insert(key, value);
        }
        Ok(map)
    }
}

struct PairSeed(AtomType, AtomType);

impl<'de> DeserializeSeed<'de> for PairSeed {
    type Value = (Atom, Atom);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairSeed {
    type Value = (Atom, Atom);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a [{}, {}] pair", self.0.name(), self.1.name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let key = seq
            .next_element_seed(AtomSeed(self.0))?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let value = seq
            .next_element_seed(AtomSeed(self.1))?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok((key, value))
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
    fn strings_the_bus_cannot_carry_are_refused() {
        let s = ty(AtomType::String, None, 0, None);
        let err = Datum::from_json(&s, &json!(["set", ["ok", "a\u{0}b"]])).unwrap_err();
        assert!(err.0.contains("NUL"), "{err}");
        let map = ty(AtomType::String, Some(AtomType::String), 0, None);
        assert!(Datum::from_json(&map, &json!(["map", [["k\u{0}", "v"]]])).is_err());
        // The same from the JSON text, as updates are read.
        let layout = crate::replica::layout::Layout::new(
            &crate::replica::layout::tests::test_schema(),
            &Default::default(),
        )
        .unwrap();
        let text = r#"{"Port": {"11111111-1111-1111-1111-111111111111": {"insert": {"name": "p\u0000"}}}}"#;
        let err = crate::replica::update::Update::parse(&layout, text).unwrap_err();
        assert!(err.contains("NUL"), "{err}");
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
