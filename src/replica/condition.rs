//! `ovs-vsctl wait-until` conditions (`col=v`, `col!=v`, `col<v`, `col>v`, `col<=v`,
//! `col>=v`, `col:key=v`, `[]` for the empty set, and the set relations `col{=}v`,
//! `{!=}`, `{<}`, `{>}`, `{<=}`, `{>=}`: equal, unequal, proper subset, proper superset,
//! subset, superset — of elements, or of key=value pairs for maps), parsed against a
//! table's schema and evaluated on replica rows. Values compare by the column's type:
//! `ofport>0` is numeric.

use super::layout::TableLayout;
use crate::ovsdb::atoms::{AtomMap, AtomSet};
use crate::ovsdb::datum::{Atom, Datum, Uuid};
use crate::ovsdb::schema::{AtomType, ColumnType};
use std::cmp::Ordering;

/// How a condition compares: `=` … `>=` in OVSDB's datum order, or `{=}` … `{>=}` as sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Order(Relation),
    Set(Relation),
}

/// Equal, unequal, less, greater, less or equal, greater or equal — for sets: proper
/// subset, proper superset, subset, superset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Relation {
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Self::Eq => ordering == Ordering::Equal,
            Self::Ne => ordering != Ordering::Equal,
            Self::Lt => ordering == Ordering::Less,
            Self::Gt => ordering == Ordering::Greater,
            Self::Le => ordering != Ordering::Greater,
            Self::Ge => ordering != Ordering::Less,
        }
    }
}

/// Whether every element of `a` (every key=value pair, for maps) is in `b`.
fn subset(a: &Datum, b: &Datum) -> bool {
    match (a, b) {
        (Datum::Set(a), Datum::Set(b)) => a.iter().all(|x| b.contains(x)),
        (Datum::Map(a), Datum::Map(b)) => a.iter().all(|(k, v)| b.get(k) == Some(v)),
        _ => false,
    }
}

fn set_relation(op: Relation, actual: &Datum, given: &Datum) -> bool {
    let equal = actual == given;
    match op {
        Relation::Eq => equal,
        Relation::Ne => !equal,
        Relation::Le => subset(actual, given),
        Relation::Lt => subset(actual, given) && !equal,
        Relation::Ge => subset(given, actual),
        Relation::Gt => subset(given, actual) && !equal,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    column: usize,
    /// `col:key=v` compares the map's value at `key`.
    key: Option<Atom>,
    op: Op,
    value: Datum,
}

impl Condition {
    pub fn parse(layout: &TableLayout, text: &str) -> Result<Self, String> {
        let (lhs, op, rhs) = split_operator(text).ok_or_else(|| {
            format!(
                "{text:?}: expected COLUMN[:KEY]OP VALUE with OP one of = != < > <= >= \
                 or a set relation {{=}} {{!=}} {{<}} {{>}} {{<=}} {{>=}}"
            )
        })?;
        let (column_name, key) = match lhs.split_once(':') {
            Some((c, k)) => (c, Some(k)),
            None => (lhs, None),
        };
        let column = layout.column_index(column_name).ok_or_else(|| {
            format!(
                "{text:?}: {} has no mirrored column {column_name:?}",
                layout.id
            )
        })?;
        let ty = &layout.columns[column].ty;
        let (key, value) = match (key, ty.value) {
            (Some(_), Some(_)) if matches!(op, Op::Set(_)) => {
                return Err(format!(
                    "{text:?}: a set relation compares a whole column, not one key"
                ));
            }
            (Some(key), Some(value_ty)) => {
                let key = parse_atom(ty.key, key).map_err(|e| format!("{text:?}: key: {e}"))?;
                let value = parse_atom(value_ty, rhs).map_err(|e| format!("{text:?}: {e}"))?;
                (Some(key), Datum::Set(AtomSet::from([value])))
            }
            (Some(_), None) => return Err(format!("{text:?}: {column_name} is not a map")),
            (None, _) => {
                // A set relation may name more (or fewer) elements than the column holds.
                let relaxed;
                let ty = if matches!(op, Op::Set(_)) {
                    relaxed = ColumnType {
                        min: 0,
                        max: None,
                        ..ty.clone()
                    };
                    &relaxed
                } else {
                    ty
                };
                (
                    None,
                    parse_datum(ty, rhs).map_err(|e| format!("{text:?}: {e}"))?,
                )
            }
        };
        Ok(Self {
            column,
            key,
            op,
            value,
        })
    }

    pub fn holds(&self, row: &[Datum]) -> bool {
        // A row of another layout than the one parsed against is simply not a match.
        let Some(actual) = row.get(self.column) else {
            return false;
        };
        match (&self.key, actual) {
            (Some(key), Datum::Map(map)) => {
                // Parsing refuses set relations with a key.
                let Op::Order(relation) = self.op else {
                    return false;
                };
                match map.get(key) {
                    Some(v) => relation.accepts(compare_sets(
                        &AtomSet::from([v.clone()]),
                        set_of(&self.value),
                    )),
                    // A missing key equals nothing, so only `!=` can hold.
                    None => relation == Relation::Ne,
                }
            }
            (Some(_), Datum::Set(_)) => false,
            (None, _) => match self.op {
                Op::Set(relation) => set_relation(relation, actual, &self.value),
                Op::Order(relation) => relation.accepts(compare(actual, &self.value)),
            },
        }
    }
}

fn set_of(datum: &Datum) -> &AtomSet {
    static EMPTY: AtomSet = AtomSet::new();
    match datum {
        Datum::Set(s) => s,
        Datum::Map(_) => &EMPTY,
    }
}

/// OVSDB's datum order: element by element in sorted order, then the shorter first — so
/// `[] < [0] < [5]` and `ofport>0` holds once a port number is assigned.
fn compare(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Set(a), Datum::Set(b)) => compare_sets(a, b),
        (Datum::Map(a), Datum::Map(b)) => a.iter().cmp(b.iter()),
        (Datum::Set(_), Datum::Map(_)) => Ordering::Less,
        (Datum::Map(_), Datum::Set(_)) => Ordering::Greater,
    }
}

fn compare_sets(a: &AtomSet, b: &AtomSet) -> Ordering {
    a.iter().cmp(b.iter())
}

fn split_operator(text: &str) -> Option<(&str, Op, &str)> {
    // Set relations first (`{<=}` holds `<=`), then two-character operators, so that `<=`
    // is not read as `<` followed by `=v`.
    let ops = [
        ("{!=}", Op::Set(Relation::Ne)),
        ("{<=}", Op::Set(Relation::Le)),
        ("{>=}", Op::Set(Relation::Ge)),
        ("{=}", Op::Set(Relation::Eq)),
        ("{<}", Op::Set(Relation::Lt)),
        ("{>}", Op::Set(Relation::Gt)),
        ("!=", Op::Order(Relation::Ne)),
        ("<=", Op::Order(Relation::Le)),
        (">=", Op::Order(Relation::Ge)),
        ("=", Op::Order(Relation::Eq)),
        ("<", Op::Order(Relation::Lt)),
        (">", Op::Order(Relation::Gt)),
    ];
    let position = text.find(['=', '!', '<', '>', '{'])?;
    let rest = &text[position..];
    let (symbol, op) = ops
        .into_iter()
        .find(|(symbol, _)| rest.starts_with(symbol))?;
    let lhs = text[..position].trim();
    if lhs.is_empty() {
        return None;
    }
    Some((lhs, op, text[position + symbol.len()..].trim()))
}

fn unquote(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
        serde_json::from_str::<String>(text).map_err(|e| format!("bad quoted string {text}: {e}"))
    } else {
        Ok(text.to_owned())
    }
}

fn parse_atom(ty: AtomType, text: &str) -> Result<Atom, String> {
    let text = unquote(text)?;
    let bad = || format!("{text:?} is not a valid {}", ty.name());
    Ok(match ty {
        AtomType::Integer => Atom::Integer(text.parse().map_err(|_| bad())?),
        AtomType::Real => Atom::Real(text.parse().map_err(|_| bad())?),
        AtomType::Boolean => Atom::Boolean(text.parse().map_err(|_| bad())?),
        AtomType::String => Atom::String(text),
        AtomType::Uuid => Atom::Uuid(Uuid::parse(&text).ok_or_else(bad)?),
    })
}

/// Splits on commas outside double quotes.
fn split_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A value in `ovs-vsctl` syntax: `5`, `[]`, `[1,2]` or `1,2` for sets, `{k=v, k2=v2}` for
/// maps.
fn parse_datum(ty: &ColumnType, text: &str) -> Result<Datum, String> {
    let text = text.trim();
    if let Some(value_ty) = ty.value {
        let inner = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| format!("{text:?}: a map value is written {{key=value, …}}"))?;
        let mut map = AtomMap::new();
        for item in split_items(inner) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected key=value"))?;
            map.insert(parse_atom(ty.key, k)?, parse_atom(value_ty, v)?);
        }
        return Ok(Datum::Map(map));
    }
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let set = split_items(inner)
        .into_iter()
        .map(|item| parse_atom(ty.key, item))
        .collect::<Result<AtomSet, _>>()?;
    // `type=` compares a string column with the empty string, as ovs-vsctl reads it.
    let set = if set.is_empty() && ty.is_scalar() && ty.key == AtomType::String {
        AtomSet::from([Atom::String(String::new())])
    } else {
        set
    };
    if !ty.allows_len(set.len()) {
        let max = ty.max.map_or("unlimited".into(), |m| m.to_string());
        return Err(format!(
            "{text:?}: {} values where the column takes {}..{max}",
            set.len(),
            ty.min
        ));
    }
    Ok(Datum::Set(set))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::layout::tests::test_schema;
    use crate::replica::layout::{ColumnSelection, Layout, TableId};
    use serde_json::json;

    fn layout() -> Layout {
        Layout::new(&test_schema(), &ColumnSelection::default()).unwrap()
    }

    fn row(layout: &Layout, table: TableId, values: serde_json::Value) -> Vec<Datum> {
        let t = layout.table(table);
        let mut row: Vec<Datum> = t.columns.iter().map(|c| Datum::default_of(&c.ty)).collect();
        for (name, value) in values.as_object().unwrap() {
            let i = t.column_index(name).unwrap();
            row[i] = Datum::from_json(&t.columns[i].ty, value).unwrap();
        }
        row
    }

    fn holds(table: TableId, values: serde_json::Value, condition: &str) -> bool {
        let layout = layout();
        let c = Condition::parse(layout.table(table), condition).unwrap();
        c.holds(&row(&layout, table, values))
    }

    #[test]
    fn optional_integers_compare_numerically() {
        let i = TableId::Interface;
        assert!(!holds(i, json!({}), "ofport>0"));
        assert!(holds(i, json!({"ofport": 3}), "ofport>0"));
        assert!(!holds(i, json!({"ofport": -1}), "ofport>0"));
        assert!(holds(i, json!({"ofport": 12}), "ofport>=12"));
        assert!(holds(i, json!({"ofport": 12}), "ofport<=12"));
        assert!(
            holds(i, json!({"ofport": 2}), "ofport<10"),
            "2 < 10 numerically, not as text"
        );
        assert!(holds(i, json!({}), "ofport=[]"));
        assert!(holds(i, json!({"ofport": 1}), "ofport!=[]"));
    }

    #[test]
    fn strings_sets_and_maps() {
        let i = TableId::Interface;
        assert!(holds(i, json!({"link_state": "up"}), "link_state=up"));
        assert!(holds(i, json!({"link_state": "up"}), r#"link_state="up""#));
        assert!(!holds(i, json!({"link_state": "down"}), "link_state=up"));
        assert!(holds(
            i,
            json!({"external_ids": ["map", [["iface-id", "abc"]]]}),
            "external_ids:iface-id=abc"
        ));
        assert!(!holds(
            i,
            json!({"external_ids": ["map", []]}),
            "external_ids:iface-id=abc"
        ));
        assert!(holds(
            i,
            json!({"external_ids": ["map", []]}),
            "external_ids:iface-id!=abc"
        ));
        assert!(holds(
            i,
            json!({"external_ids": ["map", [["a", "1"]]]}),
            "external_ids={a=1}"
        ));
        assert!(holds(
            TableId::Port,
            json!({"trunks": ["set", [2, 1]]}),
            "trunks=[1,2]"
        ));
        assert!(holds(
            TableId::Port,
            json!({"trunks": ["set", [2, 1]]}),
            "trunks=1,2"
        ));
        assert!(holds(TableId::Port, json!({"tag": 10}), "tag=10"));
        assert!(holds(
            TableId::Interface,
            json!({"holder": true}),
            "holder=true"
        ));
        assert!(holds(
            TableId::Interface,
            json!({"weight": 1.5}),
            "weight>1"
        ));
        assert!(holds(
            TableId::Interface,
            json!({"name": "a,b"}),
            r#"name="a,b""#
        ));
    }

    #[test]
    fn bad_conditions_name_the_problem() {
        let layout = layout();
        let port = layout.table(TableId::Port);
        for (text, needle) in [
            ("tag", "expected"),
            ("=5", "expected"),
            ("bogus=1", "bogus"),
            ("tag=abc", "integer"),
            ("tag=[1,2]", "values"),
            ("name:x=1", "not a map"),
            ("external_ids=x", "map value"),
            ("tag=~1", "integer"),
        ] {
            let err = Condition::parse(port, text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn operator_precedence() {
        assert_eq!(
            split_operator("a<=1").map(|x| x.1),
            Some(Op::Order(Relation::Le))
        );
        assert_eq!(
            split_operator("a!=1").map(|x| x.1),
            Some(Op::Order(Relation::Ne))
        );
        assert_eq!(
            split_operator("a:k=v=w").map(|x| (x.0, x.2)),
            Some(("a:k", "v=w"))
        );
        assert!(split_operator("a!1").is_none());
        assert_eq!(
            split_operator("a{<=}1").map(|x| x.1),
            Some(Op::Set(Relation::Le))
        );
        assert_eq!(
            split_operator("a{=}[]").map(|x| (x.1, x.2)),
            Some((Op::Set(Relation::Eq), "[]"))
        );
        assert!(split_operator("a{~}1").is_none());
    }

    #[test]
    fn set_relations_as_ovs_vsctl_has_them() {
        let port = |values| row(&layout(), TableId::Port, values);
        let layout = layout();
        let table = layout.table(TableId::Port);
        let trunks = port(json!({"name": "p", "trunks": ["set", [1, 2]],
                                 "external_ids": ["map", [["a", "1"], ["b", "2"]]]}));
        for (condition, expected) in [
            ("trunks{=}1,2", true),
            ("trunks{=}[2,1]", true),
            ("trunks{!=}1", true),
            ("trunks{<=}1,2,3", true),
            ("trunks{<}1,2,3", true),
            ("trunks{<}1,2", false),
            ("trunks{<=}1", false),
            ("trunks{>=}1", true),
            ("trunks{>}1", true),
            ("trunks{>}1,2", false),
            ("trunks{>=}[]", true),
            ("tag{<=}[1,2,3]", true),
            ("tag{=}[]", true),
            ("external_ids{>=}{a=1}", true),
            ("external_ids{>=}{a=2}", false),
            ("external_ids{<}{a=1, b=2, c=3}", true),
        ] {
            let parsed = Condition::parse(table, condition).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.holds(&trunks), expected, "{condition}");
        }
        let err = Condition::parse(table, "external_ids:a{=}1").unwrap_err();
        assert!(err.contains("whole column"), "{err}");
    }
}
