//! JSON-RPC 1.0 messages as OVSDB uses them (RFC 7047 §4): requests carry an id, replies
//! echo it with `result` and `error`, notifications have `"id": null`.

use serde_json::{Value as Json, json};

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Json,
        method: String,
        params: Json,
    },
    Notification {
        method: String,
        params: Json,
    },
    Response {
        id: Json,
        /// `Err` holds the server's `error` member when it is not null.
        result: Result<Json, Json>,
    },
}

impl Message {
    pub fn from_json(mut json: Json) -> Result<Self, String> {
        let obj = json
            .as_object_mut()
            .ok_or_else(|| "JSON-RPC message is not an object".to_owned())?;
        let id = obj.remove("id").unwrap_or(Json::Null);
        if let Some(method) = obj.remove("method") {
            let method = method
                .as_str()
                .ok_or_else(|| "JSON-RPC method is not a string".to_owned())?
                .to_owned();
            let params = obj.remove("params").unwrap_or(Json::Array(Vec::new()));
            return Ok(if id.is_null() {
                Self::Notification { method, params }
            } else {
                Self::Request { id, method, params }
            });
        }
        let error = obj.remove("error").unwrap_or(Json::Null);
        let result = if error.is_null() {
            Ok(obj.remove("result").unwrap_or(Json::Null))
        } else {
            Err(error)
        };
        if id.is_null() {
            return Err("JSON-RPC reply without id".into());
        }
        Ok(Self::Response { id, result })
    }

    pub fn to_json(&self) -> Json {
        match self {
            Self::Request { id, method, params } => {
                json!({"id": id, "method": method, "params": params})
            }
            Self::Notification { method, params } => {
                json!({"id": null, "method": method, "params": params})
            }
            Self::Response { id, result } => match result {
                Ok(result) => json!({"id": id, "result": result, "error": null}),
                Err(error) => json!({"id": id, "result": null, "error": error}),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let request = Message::from_json(json!({"id": "echo", "method": "echo", "params": []}));
        assert!(matches!(request, Ok(Message::Request { .. })));
        let note = Message::from_json(json!({"id": null, "method": "update2", "params": [1]}));
        assert!(
            matches!(note, Ok(Message::Notification { ref method, .. }) if method == "update2")
        );
        let ok = Message::from_json(json!({"id": 3, "result": {"a": 1}, "error": null})).unwrap();
        assert_eq!(
            ok,
            Message::Response {
                id: json!(3),
                result: Ok(json!({"a": 1}))
            }
        );
        let err = Message::from_json(json!({"id": 4, "result": null, "error": "unknown method"}));
        assert!(matches!(err, Ok(Message::Response { result: Err(_), .. })));
    }

    #[test]
    fn rejects_malformed_messages() {
        assert!(Message::from_json(json!([1])).is_err());
        assert!(Message::from_json(json!({"method": 5})).is_err());
        assert!(Message::from_json(json!({"result": 1})).is_err());
    }

    #[test]
    fn round_trips() {
        for m in [
            Message::Request {
                id: json!(1),
                method: "get_schema".into(),
                params: json!(["x"]),
            },
            Message::Notification {
                method: "update2".into(),
                params: json!([]),
            },
            Message::Response {
                id: json!("e"),
                result: Ok(json!([])),
            },
            Message::Response {
                id: json!(2),
                result: Err(json!({"error": "x"})),
            },
        ] {
            assert_eq!(Message::from_json(m.to_json()).unwrap(), m);
        }
    }
}
