//! `table-updates2` (the body of `update2`/`update3` notifications and of monitor replies),
//! parsed against the layout into typed row operations.

use super::layout::{Layout, TableId, TableLayout};
use crate::ovsdb::datum::{Datum, Uuid};
use serde_json::Value as Json;

/// One row's operation. `initial` and `insert` both carry the whole row (omitted columns
/// already filled with their defaults), so they share `Insert`.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    Insert(Vec<Datum>),
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
    /// Parses `{"<table>": {"<uuid>": {"initial"|"insert"|"modify": <row>} | {"delete": null}}}`.
    /// Tables the relay does not mirror are skipped; an unknown column is an error because it
    /// means the server and the relay disagree on the schema. It consumes the JSON so that
    /// each row's text is freed as soon as it is converted: a start-up snapshot of 20,000
    /// rows never exists twice.
    pub fn parse(layout: &Layout, json: Json) -> Result<Self, String> {
        let Json::Object(tables) = json else {
            return Err(format!("table-updates is not an object: {json}"));
        };
        let mut rows = Vec::new();
        for (table_name, table_rows) in tables {
            let Some(table) = TableId::ALL.into_iter().find(|t| t.name() == table_name) else {
                continue;
            };
            let table_layout = layout.table(table);
            let Json::Object(table_rows) = table_rows else {
                return Err(format!("{table_name} update is not an object"));
            };
            rows.reserve(table_rows.len());
            for (uuid_text, row_update) in table_rows {
                let uuid = Uuid::parse(&uuid_text)
                    .ok_or_else(|| format!("{table_name}: bad row uuid {uuid_text:?}"))?;
                let op = parse_row_update(table_layout, &row_update)
                    .map_err(|e| format!("{table_name} {uuid_text}: {e}"))?;
                rows.push(RowUpdate { table, uuid, op });
            }
        }
        Ok(Self { rows })
    }
}

fn parse_row_update(layout: &TableLayout, json: &Json) -> Result<RowOp, String> {
    let obj = json
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("row update must have exactly one member: {json}"))?;
    let (kind, body) = obj.iter().next().expect("one member");
    match kind.as_str() {
        "initial" | "insert" => {
            let mut row: Vec<Datum> = layout
                .columns
                .iter()
                .map(|c| Datum::default_of(&c.ty))
                .collect();
            for (index, value) in parse_columns(layout, body)? {
                row[index] = value;
            }
            Ok(RowOp::Insert(row))
        }
        "modify" => Ok(RowOp::Modify(parse_columns(layout, body)?)),
        "delete" => Ok(RowOp::Delete),
        other => Err(format!("unknown row update kind {other:?}")),
    }
}

fn parse_columns(layout: &TableLayout, json: &Json) -> Result<Vec<(usize, Datum)>, String> {
    let columns = json
        .as_object()
        .ok_or_else(|| format!("row is not an object: {json}"))?;
    columns
        .iter()
        .map(|(name, value)| {
            let index = layout
                .column_index(name)
                .ok_or_else(|| format!("unexpected column {name:?}"))?;
            let datum = Datum::from_json(&layout.columns[index].ty, value)
                .map_err(|e| format!("column {name}: {e}"))?;
            Ok((index, datum))
        })
        .collect()
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
    fn insert_fills_omitted_columns_with_defaults() {
        let layout = layout();
        let update = Update::parse(
            &layout,
            json!({"Port": {U1: {"insert": {"name": "p1", "tag": 5}}}}),
        )
        .unwrap();
        let port = layout.table(TableId::Port);
        let RowOp::Insert(row) = &update.rows[0].op else {
            panic!("not an insert")
        };
        assert_eq!(
            row[port.column_index("name").unwrap()].first(),
            Some(&Atom::String("p1".into()))
        );
        assert!(row[port.column_index("trunks").unwrap()].is_empty());
        assert!(row[port.column_index("external_ids").unwrap()].is_empty());
    }

    #[test]
    fn skips_unmirrored_tables_and_rejects_unknown_columns() {
        let layout = layout();
        let update = Update::parse(&layout, json!({"Mirror": {U1: {"delete": null}}})).unwrap();
        assert!(update.rows.is_empty());
        let err =
            Update::parse(&layout, json!({"Port": {U1: {"modify": {"bogus": 1}}}})).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        assert!(Update::parse(&layout, json!({"Port": {"nope": {"delete": null}}})).is_err());
        assert!(Update::parse(&layout, json!({"Port": {U1: {"upsert": {}}}})).is_err());
        assert!(Update::parse(&layout, json!({"Port": {U1: {}}})).is_err());
        assert!(Update::parse(&layout, json!([])).is_err());
    }
}
