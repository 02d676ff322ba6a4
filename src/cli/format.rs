//! Values for people and for `jq`: D-Bus values as natural JSON, and JSON values written
//! the way `ovs-vsctl` writes OVSDB data (`[1, 2]`, `{key=value}`, `"3.1.0"`).

use serde_json::{Map, Number, Value as Json};
use std::collections::BTreeMap;
use zbus::{OwnedVariant, Variant};

/// A D-Bus value as JSON: numbers, booleans and strings as themselves, arrays and structs
/// as arrays, dictionaries as objects (non-string keys written as text).
pub fn variant_json(value: &Variant<'_>) -> Json {
    match value {
        Variant::U8(v) => Json::from(*v),
        Variant::Bool(v) => Json::from(*v),
        Variant::I16(v) => Json::from(*v),
        Variant::U16(v) => Json::from(*v),
        Variant::I32(v) => Json::from(*v),
        Variant::U32(v) => Json::from(*v),
        Variant::I64(v) => Json::from(*v),
        Variant::U64(v) => Json::from(*v),
        Variant::F64(v) => Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Variant::Str(s) => Json::from(s.to_string()),
        Variant::Signature(s) => Json::from(s.to_string()),
        Variant::ObjectPath(p) => Json::from(p.as_str()),
        Variant::Variant(inner) => variant_json(inner),
        Variant::Array(array) => Json::Array(array.inner().iter().map(variant_json).collect()),
        Variant::Dict(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| (key_text(k), variant_json(v)))
                .collect(),
        ),
        Variant::Structure(s) => Json::Array(s.fields().iter().map(variant_json).collect()),
        #[cfg(unix)]
        Variant::Fd(_) => Json::Null,
    }
}

fn key_text(key: &Variant<'_>) -> String {
    match variant_json(key) {
        Json::String(s) => s,
        other => other.to_string(),
    }
}

/// An `a{sv}` dictionary as a JSON object (keys sorted).
pub fn dict_json(dict: &BTreeMap<String, OwnedVariant>) -> Json {
    Json::Object(
        dict.iter()
            .map(|(k, v)| (k.clone(), variant_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// Whether `ovs-vsctl` would quote this string: anything but an identifier-like word
/// (letters, digits, `_`, `-`, `.`, not starting with a digit), `true`, `false` and
/// UUID-shaped strings.
pub fn needs_quotes(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return true;
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return true;
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return true;
    }
    matches!(s, "true" | "false") || looks_like_uuid(s)
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A string as `ovs-vsctl` prints it: bare when safe, else JSON-quoted.
pub fn ovs_string(s: &str) -> String {
    if needs_quotes(s) {
        Json::from(s).to_string()
    } else {
        s.to_owned()
    }
}

/// A JSON value in `ovs-vsctl` notation: `[1, 2]` for sets, `{key=value}` for maps.
pub fn ovs_text(value: &Json) -> String {
    match value {
        Json::Null => "[]".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => ovs_string(s),
        Json::Array(items) => format!(
            "[{}]",
            items.iter().map(ovs_text).collect::<Vec<_>>().join(", ")
        ),
        Json::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}={}", ovs_string(k), ovs_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether a value is "nothing": null, `""`, `[]` or `{}` (what `ovs-vsctl show` omits).
pub fn is_empty(value: &Json) -> bool {
    match value {
        Json::Null => true,
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
        Json::Bool(_) | Json::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zbus::Dict;

    fn owned<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
        v.into().try_into_owned().unwrap()
    }

    #[test]
    fn dbus_values_become_natural_json() {
        let mut dict = BTreeMap::new();
        dict.insert("tag".to_string(), owned(vec![10i64]));
        dict.insert("name".to_string(), owned("tap0"));
        dict.insert("seq".to_string(), owned(7u64));
        dict.insert("up".to_string(), owned(true));
        dict.insert(
            "external_ids".to_string(),
            owned(BTreeMap::from([("a".to_string(), "b".to_string())])),
        );
        dict.insert("trunks".to_string(), owned(Vec::<i64>::new()));
        assert_eq!(
            dict_json(&dict),
            json!({"tag": [10], "name": "tap0", "seq": 7, "up": true,
                   "external_ids": {"a": "b"}, "trunks": []})
        );
        let mut int_keys = Dict::new(&zbus::Signature::I64, &zbus::Signature::Str);
        int_keys.add(1i64, "x").unwrap();
        assert_eq!(variant_json(&Variant::Dict(int_keys)), json!({"1": "x"}));
        assert_eq!(variant_json(&Variant::F64(1.5)), json!(1.5));
    }

    #[test]
    fn quotes_like_ovs_vsctl() {
        assert_eq!(ovs_string("br0"), "br0");
        assert_eq!(ovs_string("br-int.1"), "br-int.1");
        assert_eq!(ovs_string("3.1.0"), "\"3.1.0\"");
        assert_eq!(ovs_string(""), "\"\"");
        assert_eq!(ovs_string("true"), "\"true\"");
        assert_eq!(ovs_string("a b"), "\"a b\"");
        assert_eq!(
            ovs_string("fb84e616-e5f4-4f8a-b963-37ba704ed742"),
            "\"fb84e616-e5f4-4f8a-b963-37ba704ed742\""
        );
        assert_eq!(ovs_text(&json!([1, 2])), "[1, 2]");
        assert_eq!(
            ovs_text(&json!({"peer": "p1", "k": "a b"})),
            "{k=\"a b\", peer=p1}"
        );
        assert_eq!(ovs_text(&json!([])), "[]");
        assert!(is_empty(&json!("")) && is_empty(&json!({})) && !is_empty(&json!(0)));
    }
}
