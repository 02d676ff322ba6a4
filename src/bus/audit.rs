//! The audit trail of writes: every `Switch1` and openQA write call is logged at info
//! level once answered, with who asked (the caller's uid and pid, from the bus daemon),
//! what (the method and its arguments) and how it ended. Logged after the reply, so the
//! extra round trip to the bus daemon never delays the caller.

use zbus::message::Header;
use zbus::{Connection, Message};
use zbus::{OwnedVariant, Structure};

/// The caller's credentials as the bus daemon knows them: `uid 0 pid 1234`. Asked before
/// the call is answered: a client that exits right after the reply is gone by then.
pub async fn caller(conn: &Connection, header: &Header<'_>) -> String {
    let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
    credentials(conn, &sender).await
}

async fn credentials(conn: &Connection, sender: &str) -> String {
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetConnectionCredentials",
            &(sender,),
        )
        .await;
    let Ok(reply) = reply else {
        return "unknown uid and pid".into();
    };
    let Ok(credentials) = reply
        .body()
        .deserialize::<std::collections::HashMap<String, OwnedVariant>>()
    else {
        return "unknown uid and pid".into();
    };
    let field = |name: &str| {
        credentials
            .get(name)
            .and_then(|v| u32::try_from(v).ok())
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    };
    format!("uid {} pid {}", field("UnixUserID"), field("ProcessID"))
}

/// The call's arguments in GVariant text notation: `('tap0', uint32 5)`.
fn arguments(call: &Message) -> String {
    let body = call.body();
    if body.signature().to_string().is_empty() {
        return "()".into();
    }
    match body.deserialize::<Structure>() {
        Ok(arguments) => arguments.to_string(),
        Err(_) => "(unreadable arguments)".into(),
    }
}

/// Logs one answered write call by `who` ([`caller`]); `outcome` is `ok` or the error the
/// caller got.
pub fn write_answered(who: &str, header: &Header<'_>, call: &Message, outcome: &str) {
    let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
    let interface = header
        .interface()
        .map(|i| i.to_string())
        .unwrap_or_default();
    let member = header.member().map(|m| m.to_string()).unwrap_or_default();
    tracing::info!(
        caller = sender,
        "write by {who}: {interface}.{member}{}: {outcome}",
        arguments(call)
    );
}
