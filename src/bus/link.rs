//! Keeps the relay on the bus: notices when the bus daemon goes away (restart, crash) and
//! reconnects with backoff, handing each new main connection to the publisher, which tells
//! subscribers what they missed. Nothing is registered per row: the dispatcher serves
//! the new connection from its first message. The openQA connection is kept the same way
//! on its own, and nothing is handed on: it only answers calls.

use super::dispatch::Role;
use super::{BusError, Connector};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use zbus::{Connection, MatchRule, MessageStream};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// Watches `first`, a connection in `role`, and every later one. The main connection's
/// replacements are sent on the returned channel and counted in the bus metrics. Abort the
/// returned task before releasing the name at shutdown, or the release itself looks like a
/// lost connection.
pub fn supervise(
    connector: Connector,
    role: Role,
    first: Connection,
    metrics: Arc<Metrics>,
) -> (mpsc::Receiver<Connection>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        let mut conn = first;
        let name = role.name();
        loop {
            closed(&conn, name).await;
            if role == Role::Relay {
                metrics.dbus_connected.set(0);
            }
            tracing::warn!(bus = %connector.target, name, "lost the bus connection; reconnecting");
            conn = reconnect(&connector, role).await;
            tracing::info!(bus = %connector.target, name, "back on the bus");
            if role == Role::Relay {
                metrics.dbus_connected.set(1);
                metrics.dbus_reconnects.inc();
                if tx.send(conn.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
    (rx, task)
}

/// Returns when the connection is gone or has lost `name`. A stream for a signal that the
/// bus daemon only sends when we lose a name ends (or errs) as soon as the socket does, and
/// is otherwise idle, so polling it costs nothing and never holds up other traffic.
async fn closed(conn: &Connection, name: &str) {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameLost")
        .build();
    let stream = match rule {
        Ok(rule) => MessageStream::for_match_rule(rule, conn, None).await,
        Err(e) => Err(e),
    };
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!("cannot watch the bus connection: {e}");
            return;
        }
    };
    while let Some(message) = stream.next().await {
        match message {
            Ok(message) => {
                let lost: Result<String, _> = message.body().deserialize();
                if lost.is_ok_and(|lost| lost == name) {
                    tracing::error!("lost ownership of {name}");
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn reconnect(connector: &Connector, role: Role) -> Connection {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connector.connect(role).await {
            Ok(conn) => return conn,
            Err(e @ (BusError::NameTaken(_) | BusError::OpenQaNameTaken { .. })) => {
                tracing::error!("{e}")
            }
            Err(e) => tracing::debug!("{e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
