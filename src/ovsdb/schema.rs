//! The database schema as `get_schema` returns it (RFC 7047 §3.2), reduced to what the relay
//! needs: each column's type, so values are parsed, defaulted and mapped to D-Bus by the
//! schema and never guessed from the value at hand.

use serde_json::Value as Json;
use std::collections::BTreeMap;

/// The five OVSDB atomic types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtomType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomType {
    fn parse(name: &str) -> Result<Self, SchemaError> {
        Ok(match name {
            "integer" => Self::Integer,
            "real" => Self::Real,
            "boolean" => Self::Boolean,
            "string" => Self::String,
            "uuid" => Self::Uuid,
            other => return Err(SchemaError(format!("unknown atomic type {other:?}"))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Real => "real",
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Uuid => "uuid",
        }
    }
}

/// A column's type: a set of `key` atoms, or a map `key → value`, with `min..=max` elements
/// (`max == None` is "unlimited").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub key: AtomType,
    pub value: Option<AtomType>,
    pub min: u64,
    pub max: Option<u64>,
    /// The table a uuid key refers to, when the schema says so.
    pub key_ref_table: Option<String>,
    /// What the schema allows of each key atom, and of each value atom of a map.
    pub key_range: AtomRange,
    pub value_range: AtomRange,
}

/// A base type's constraints (RFC 7047 §3.2): integer bounds, string length in characters,
/// an enumeration of the allowed atoms. (Real bounds are not kept: no mirrored column has
/// them.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtomRange {
    pub min_integer: Option<i64>,
    pub max_integer: Option<i64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    /// The allowed atoms, as JSON (`"access"`, `1`).
    pub allowed: Option<Vec<Json>>,
}

impl ColumnType {
    pub fn scalar(key: AtomType) -> Self {
        Self {
            key,
            value: None,
            min: 1,
            max: Some(1),
            key_ref_table: None,
            key_range: AtomRange::default(),
            value_range: AtomRange::default(),
        }
    }

    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// Exactly one atom (min = max = 1), not a map.
    pub fn is_scalar(&self) -> bool {
        !self.is_map() && self.min == 1 && self.max == Some(1)
    }

    /// Zero or one atom: modify-diffs replace such a value instead of toggling elements.
    pub fn is_optional(&self) -> bool {
        !self.is_map() && self.min == 0 && self.max == Some(1)
    }

    pub fn allows_len(&self, len: usize) -> bool {
        let len = len as u64;
        len >= self.min && self.max.is_none_or(|max| len <= max)
    }

    fn parse(json: &Json) -> Result<Self, SchemaError> {
        match json {
            Json::String(name) => Ok(Self::scalar(AtomType::parse(name)?)),
            Json::Object(obj) => {
                let key = obj
                    .get("key")
                    .ok_or_else(|| SchemaError("column type without \"key\"".into()))?;
                let (key, key_ref_table, key_range) = parse_base(key)?;
                let (value, value_range) = match obj.get("value").map(parse_base).transpose()? {
                    Some((value, _, range)) => (Some(value), range),
                    None => (None, AtomRange::default()),
                };
                let min = match obj.get("min") {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .ok_or_else(|| SchemaError(format!("bad min {v}")))?,
                };
                let max = match obj.get("max") {
                    None => Some(1),
                    Some(Json::String(s)) if s == "unlimited" => None,
                    Some(v) => Some(
                        v.as_u64()
                            .ok_or_else(|| SchemaError(format!("bad max {v}")))?,
                    ),
                };
                Ok(Self {
                    key,
                    value,
                    min,
                    max,
                    key_ref_table,
                    key_range,
                    value_range,
                })
            }
            other => Err(SchemaError(format!("bad column type {other}"))),
        }
    }
}

fn parse_base(json: &Json) -> Result<(AtomType, Option<String>, AtomRange), SchemaError> {
    match json {
        Json::String(name) => Ok((AtomType::parse(name)?, None, AtomRange::default())),
        Json::Object(obj) => {
            let name = obj
                .get("type")
                .and_then(Json::as_str)
                .ok_or_else(|| SchemaError("base type without \"type\"".into()))?;
            let ref_table = obj
                .get("refTable")
                .and_then(Json::as_str)
                .map(str::to_owned);
            // `"enum": "a"` or `"enum": ["set", ["a", "b"]]`.
            let allowed = obj
                .get("enum")
                .map(|e| match e.as_array().map(Vec::as_slice) {
                    Some([kind, Json::Array(atoms)]) if kind == "set" => atoms.clone(),
                    _ => vec![e.clone()],
                });
            let range = AtomRange {
                min_integer: obj.get("minInteger").and_then(Json::as_i64),
                max_integer: obj.get("maxInteger").and_then(Json::as_i64),
                min_length: obj.get("minLength").and_then(Json::as_u64),
                max_length: obj.get("maxLength").and_then(Json::as_u64),
                allowed,
            };
            Ok((AtomType::parse(name)?, ref_table, range))
        }
        other => Err(SchemaError(format!("bad base type {other}"))),
    }
}

/// One table: column name → type, in name order (the order `Columns` dictionaries use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSchema {
    pub columns: BTreeMap<String, ColumnType>,
}

/// The parts of a database schema the relay uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSchema {
    pub name: String,
    pub version: String,
    pub tables: BTreeMap<String, TableSchema>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema: {0}")]
pub struct SchemaError(pub String);

impl DbSchema {
    pub fn parse(json: &Json) -> Result<Self, SchemaError> {
        let field = |name: &str| {
            json.get(name)
                .ok_or_else(|| SchemaError(format!("no \"{name}\" member")))
        };
        let name = field("name")?
            .as_str()
            .ok_or_else(|| SchemaError("\"name\" is not a string".into()))?
            .to_owned();
        let version = json
            .get("version")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut tables = BTreeMap::new();
        let tables_json = field("tables")?
            .as_object()
            .ok_or_else(|| SchemaError("\"tables\" is not an object".into()))?;
        for (table_name, table) in tables_json {
            let columns_json = table
                .get("columns")
                .and_then(Json::as_object)
                .ok_or_else(|| SchemaError(format!("table {table_name} has no columns")))?;
            let mut columns = BTreeMap::new();
            for (column, def) in columns_json {
                let ty = def
                    .get("type")
                    .ok_or_else(|| SchemaError(format!("{table_name}.{column} has no type")))?;
                let ty = ColumnType::parse(ty)
                    .map_err(|e| SchemaError(format!("{table_name}.{column}: {}", e.0)))?;
                columns.insert(column.clone(), ty);
            }
            tables.insert(table_name.clone(), TableSchema { columns });
        }
        Ok(Self {
            name,
            version,
            tables,
        })
    }
}

/// A column type for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn test_type(
    key: AtomType,
    value: Option<AtomType>,
    min: u64,
    max: Option<u64>,
) -> ColumnType {
    ColumnType {
        key,
        value,
        min,
        max,
        key_ref_table: None,
        key_range: AtomRange::default(),
        value_range: AtomRange::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_column_shapes() {
        let schema = DbSchema::parse(&json!({
            "name": "Open_vSwitch", "version": "8.3.1",
            "tables": {"Port": {"columns": {
                "name": {"type": "string"},
                "tag": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095},
                                 "min": 0, "max": 1}},
                "trunks": {"type": {"key": "integer", "min": 0, "max": 4096}},
                "interfaces": {"type": {"key": {"type": "uuid", "refTable": "Interface"},
                                        "min": 1, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string",
                                          "min": 0, "max": "unlimited"}}
            }}}
        }))
        .unwrap();
        let port = &schema.tables["Port"].columns;
        assert!(port["name"].is_scalar());
        assert!(port["tag"].is_optional());
        assert_eq!(port["trunks"].max, Some(4096));
        assert_eq!(port["interfaces"].max, None);
        assert_eq!(
            port["interfaces"].key_ref_table.as_deref(),
            Some("Interface")
        );
        assert!(port["external_ids"].is_map());
        assert!(port["external_ids"].allows_len(0));
        assert!(!port["interfaces"].allows_len(0));
    }

    #[test]
    fn rejects_unknown_atomic_type() {
        let err = DbSchema::parse(&json!({"name": "x", "tables": {"T": {"columns": {
            "c": {"type": "float"}}}}}))
        .unwrap_err();
        assert!(err.0.contains("float"), "{err}");
    }

    #[test]
    fn parses_base_type_constraints() {
        let schema = DbSchema::parse(&json!({
            "name": "Open_vSwitch", "version": "8.3.1",
            "tables": {"Port": {"columns": {
                "tag": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095},
                                 "min": 0, "max": 1}},
                "vlan_mode": {"type": {"key": {"type": "string",
                    "enum": ["set", ["access", "trunk"]]}, "min": 0, "max": 1}},
                "other_config": {"type": {"key": "string",
                    "value": {"type": "string", "maxLength": 8}, "min": 0, "max": "unlimited"}}
            }}}
        }))
        .unwrap();
        let port = &schema.tables["Port"].columns;
        assert_eq!(port["tag"].key_range.min_integer, Some(0));
        assert_eq!(port["tag"].key_range.max_integer, Some(4095));
        assert_eq!(
            port["vlan_mode"].key_range.allowed,
            Some(vec![json!("access"), json!("trunk")])
        );
        assert_eq!(port["other_config"].value_range.max_length, Some(8));
    }
}
