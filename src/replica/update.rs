//! `table-updates2` (the body of `update2`/`update3` notifications and of monitor replies),
//! parsed against the layout into typed row operations.

use super::layout::{Layout, TableId, TableLayout};
use crate::ovsdb::datum::{Datum, DatumSeed, Uuid};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// One row's operation, with the columns as (column index, value). `initial` and
/// `insert` both carry a whole row, so they share `Insert`; it lists the columns the server
/// sent, and the others have their defaults. Those are filled in only when the row is
/// stored, so that parsing takes memory in proportion to the message: a row of 35 columns
/// of which the server sent one holds one value here, not 35.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    Insert(Vec<(usize, Datum)>),
    /// Column index → diff, in the `update2` modify sense.
    Modify(Vec<(usize, Datum)>),
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowUpdate {
    pub table: TableId,
    pub uuid: Uuid,
    pub op: RowOp,
}

/// One update message: applied whole, before any of its signals go out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub rows: Vec<RowUpdate>,
}

impl Update {
    /// Parses `{"<table>": {"<uuid>": {"initial"|"insert"|"modify": <row>} | {"delete": null}}}`
    /// straight from the JSON text into typed rows, without a `Json` tree in between: a
    /// start-up snapshot of 20,000 rows is converted as it is read. Tables the relay does
    /// not mirror are skipped; an unknown column is an error because it means the server
    /// and the relay disagree on the schema.
    pub fn parse(layout: &Layout, text: &str) -> Result<Self, String> {
        let mut rows = Vec::new();
        let mut deserializer = serde_json::Deserializer::from_str(text);
        TablesSeed {
            layout,
            rows: &mut rows,
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|e| format!("table-updates: {e}"))?;
        Ok(Self { rows })
    }
}

/// The whole `table-updates2` object; rows are appended to `rows`.
struct TablesSeed<'a> {
    layout: &'a Layout,
    rows: &'a mut Vec<RowUpdate>,
}

impl<'de> DeserializeSeed<'de> for TablesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TablesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of tables")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            match TableId::ALL.into_iter().find(|t| t.name() == name) {
                Some(table) => map.next_value_seed(RowsSeed {
                    table,
                    layout: self.layout.table(table),
                    rows: &mut *self.rows,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// One table's `{"<uuid>": <row-update2>, …}`.
struct RowsSeed<'a> {
    table: TableId,
    layout: &'a TableLayout,
    rows: &'a mut Vec<RowUpdate>,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object of {} rows", self.table)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.rows.reserve(map.size_hint().unwrap_or(0));
        while let Some(uuid_text) = map.next_key::<Cow<'de, str>>()? {
            let uuid = Uuid::parse(&uuid_text).ok_or_else(|| {
                de::Error::custom(format!("{}: bad row uuid {uuid_text:?}", self.table))
            })?;
            let op = map
                .next_value_seed(RowOpSeed(self.layout))
                .map_err(|e| de::Error::custom(format!("{} {uuid_text}: {e}", self.table)))?;
            self.rows.push(RowUpdate {
                table: self.table,
                uuid,
                op,
            });
        }
        Ok(())
    }
}

/// `{"initial"|"insert": <row>}`, `{"modify": <diff>}` or `{"delete": null}`.
struct RowOpSeed<'a>(&'a TableLayout);

impl<'de> DeserializeSeed<'de> for RowOpSeed<'_> {
    type Value = RowOp;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RowOp, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowOpSeed<'_> {
    type Value = RowOp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row update with exactly one member")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowOp, A::Error> {
        let layout = self.0;
        let kind = map
            .next_key::<Cow<'de, str>>()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let op = match kind.as_ref() {
            "initial" | "insert" => RowOp::Insert(map.next_value_seed(ColumnsSeed(layout))?),
            "modify" => RowOp::Modify(map.next_value_seed(ColumnsSeed(layout))?),
            "delete" => {
                map.next_value::<IgnoredAny>()?;
                RowOp::Delete
            }
            other => {
                return Err(de::Error::custom(format!(
                    "unknown row update kind {other:?}"
                )));
            }
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(2, &self));
        }
        Ok(op)
    }
}

/// `{"<column>": <datum>, …}` → (column index, value).
struct ColumnsSeed<'a>(&'a TableLayout);

impl<'de> DeserializeSeed<'de> for ColumnsSeed<'_> {
    type Value = Vec<(usize, Datum)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ColumnsSeed<'_> {
    type Value = Vec<(usize, Datum)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row: an object of columns")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let index = self
                .0
                .column_index(&name)
                .ok_or_else(|| de::Error::custom(format!("unexpected column {name:?}")))?;
            let datum = map
                .next_value_seed(DatumSeed(&self.0.columns[index].ty))
                .map_err(|e| de::Error::custom(format!("column {name}: {e}")))?;
            columns.push((index, datum));
        }
        Ok(columns)
    }
}

/// [`Update::parse`] of a `json!` value, for tests.
#[cfg(test)]
pub(crate) fn parse_json(layout: &Layout, json: serde_json::Value) -> Result<Update, String> {
    Update::parse(layout, &json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::Atom;
    use crate::replica::layout::ColumnSelection;
    use crate::replica::layout::tests::test_schema;
    use serde_json::json;

    const U1: &str = "11111111-1111-1111-1111-111111111111";

    fn layout() -> Layout {
        Layout::new(&test_schema(), &ColumnSelection::default()).unwrap()
    }

    #[test]
    fn insert_holds_only_the_columns_sent() {
        let layout = layout();
        let update = parse_json(
            &layout,
            json!({"Port": {U1: {"insert": {"name": "p1", "tag": 5}}}}),
        )
        .unwrap();
        let port = layout.table(TableId::Port);
        let RowOp::Insert(values) = &update.rows[0].op else {
            panic!("not an insert")
        };
        let sent: Vec<(usize, Option<&Atom>)> =
            values.iter().map(|(i, v)| (*i, v.first())).collect();
        assert_eq!(
            sent,
            [
                (
                    port.column_index("name").unwrap(),
                    Some(&Atom::String("p1".into()))
                ),
                (port.column_index("tag").unwrap(), Some(&Atom::Integer(5)))
            ]
        );
    }

    #[test]
    fn skips_unmirrored_tables_and_rejects_unknown_columns() {
        let layout = layout();
        let update = parse_json(&layout, json!({"Mirror": {U1: {"delete": null}}})).unwrap();
        assert!(update.rows.is_empty());
        let err = parse_json(&layout, json!({"Port": {U1: {"modify": {"bogus": 1}}}})).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        assert!(parse_json(&layout, json!({"Port": {"nope": {"delete": null}}})).is_err());
        assert!(parse_json(&layout, json!({"Port": {U1: {"upsert": {}}}})).is_err());
        assert!(parse_json(&layout, json!({"Port": {U1: {}}})).is_err());
        assert!(parse_json(&layout, json!([])).is_err());
    }
}
