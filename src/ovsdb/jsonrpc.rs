//! JSON-RPC 1.0 messages as OVSDB uses them (RFC 7047 §4): requests carry an id, replies
//! echo it with `result` and `error`, notifications have `"id": null`.
//!
//! Incoming messages are read with their `params` and `result` left as JSON text: the
//! consumer parses those with its own types (a 20,000-row snapshot goes straight into
//! typed rows), so no message is ever held as a `Json` tree. Nor is the text copied: it
//! stays in the frame it arrived in, which [`RawJson`] shares.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value as Json, json};
use std::borrow::Cow;

#[derive(Debug)]
pub enum Incoming {
    Request {
        id: Json,
        method: String,
        params: RawJson,
    },
    Notification {
        method: String,
        params: RawJson,
    },
    Response {
        id: Json,
        /// `Err` holds the server's `error` member when it is not null.
        result: Result<RawJson, Json>,
    },
}

/// The text of one JSON value inside a received frame, sharing the frame's bytes: a
/// copy would double the memory a large monitor reply or update takes while it is parsed.
#[derive(Debug)]
pub struct RawJson(Bytes);

impl RawJson {
    /// `raw`, borrowed from `frame` by serde_json (which checked that it is UTF-8 JSON).
    fn within(frame: &Bytes, raw: &RawValue) -> Self {
        Self(frame.slice_ref(raw.get().as_bytes()))
    }

    fn literal(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    pub fn get(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a slice of a str serde_json read")
    }
}

/// The members of any message; `params` and `result` borrowed from the frame.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Json,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Json,
}

impl Incoming {
    /// Reads one framed message.
    pub fn parse(frame: &Bytes) -> Result<Self, String> {
        // Checked here because a derived struct would also accept an array of members.
        if frame.trim_ascii_start().first() != Some(&b'{') {
            return Err("JSON-RPC message is not an object".into());
        }
        let envelope: Envelope = serde_json::from_slice(frame)
            .map_err(|e| format!("invalid JSON-RPC message from peer: {e}"))?;
        let Envelope {
            id,
            method,
            params,
            result,
            error,
        } = envelope;
        if let Some(method) = method {
            let params = params.map_or(RawJson::literal("[]"), |p| RawJson::within(frame, p));
            let method = method.into_owned();
            return Ok(if id.is_null() {
                Self::Notification { method, params }
            } else {
                Self::Request { id, method, params }
            });
        }
        if id.is_null() {
            return Err("JSON-RPC reply without id".into());
        }
        let result = if error.is_null() {
            Ok(result.map_or(RawJson::literal("null"), |r| RawJson::within(frame, r)))
        } else {
            Err(error)
        };
        Ok(Self::Response { id, result })
    }
}

/// An outgoing request.
pub fn request(id: &Json, method: &str, params: &Json) -> Json {
    json!({"id": id, "method": method, "params": params})
}

/// An outgoing reply.
pub fn response(id: &Json, result: Result<&RawValue, &Json>) -> Json {
    match result {
        Ok(result) => json!({"id": id, "result": result, "error": null}),
        Err(error) => json!({"id": id, "result": null, "error": error}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: Json) -> Result<Incoming, String> {
        Incoming::parse(&Bytes::from(json.to_string()))
    }

    #[test]
    fn classifies_messages() {
        let request = parse(json!({"id": "echo", "method": "echo", "params": []}));
        assert!(matches!(request, Ok(Incoming::Request { .. })));
        let note = parse(json!({"id": null, "method": "update2", "params": [1]})).unwrap();
        let Incoming::Notification { method, params } = note else {
            panic!("not a notification: {note:?}")
        };
        assert_eq!((method.as_str(), params.get()), ("update2", "[1]"));
        let ok = parse(json!({"id": 3, "result": {"a": 1}, "error": null})).unwrap();
        let Incoming::Response {
            id,
            result: Ok(result),
        } = ok
        else {
            panic!("not a success: {ok:?}")
        };
        assert_eq!((id, result.get()), (json!(3), r#"{"a":1}"#));
        let err = parse(json!({"id": 4, "result": null, "error": "unknown method"}));
        assert!(
            matches!(err, Ok(Incoming::Response { result: Err(e), .. }) if e == "unknown method")
        );
        let bare = parse(json!({"id": null, "method": "update2"})).unwrap();
        assert!(matches!(bare, Incoming::Notification { params, .. } if params.get() == "[]"));
    }

    #[test]
    fn rejects_malformed_messages() {
        assert!(parse(json!([1])).is_err());
        assert!(parse(json!({"method": 5})).is_err());
        assert!(parse(json!({"result": 1})).is_err());
        // Balanced (so framed) but not JSON.
        for frame in [&br#"{"a":}"#[..], b"{]", br#"{"a" 1}"#, b"{\"\xff\":1}"] {
            assert!(
                Incoming::parse(&Bytes::from_static(frame)).is_err(),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn outgoing_messages_read_back() {
        let sent = request(&json!(1), "get_schema", &json!(["x"]));
        let Ok(Incoming::Request { id, method, params }) = parse(sent.clone()) else {
            panic!("{sent}")
        };
        assert_eq!(
            (id, method.as_str(), params.get()),
            (json!(1), "get_schema", r#"["x"]"#)
        );
        let echo = RawValue::from_string(r#"["e"]"#.into()).unwrap();
        let sent = response(&json!("e"), Ok(&echo));
        assert!(
            matches!(parse(sent), Ok(Incoming::Response { result: Ok(r), .. }) if r.get() == r#"["e"]"#)
        );
        let sent = response(&json!(2), Err(&json!({"error": "x"})));
        assert!(matches!(
            parse(sent),
            Ok(Incoming::Response { result: Err(_), .. })
        ));
    }

    #[test]
    fn params_and_results_stay_in_the_frame() {
        let inside =
            |frame: &Bytes, raw: &RawJson| frame.as_ptr_range().contains(&raw.get().as_ptr());
        let frame =
            Bytes::from(json!({"id": null, "method": "update2", "params": [null, {}]}).to_string());
        let Ok(Incoming::Notification { params, .. }) = Incoming::parse(&frame) else {
            panic!("not a notification")
        };
        assert!(inside(&frame, &params));
        let frame =
            Bytes::from(json!({"id": 1, "result": [true, "txn", {}], "error": null}).to_string());
        let Ok(Incoming::Response {
            result: Ok(result), ..
        }) = Incoming::parse(&frame)
        else {
            panic!("not a success")
        };
        assert!(inside(&frame, &result));
    }
}
