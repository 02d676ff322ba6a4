//! A cheap cloneable [`Client`] handle and the one task that owns the socket.
//!
//! Each request carries its own reply channel; the connection task matches replies by id,
//! answers the server's `echo`, probes an idle TCP peer, and forwards notifications into a
//! bounded queue. When that queue is full it waits before reading more: the consumer is
//! the relay's own CPU-bound pipeline (it never waits for the bus), and a pause on the
//! socket makes ovsdb-server merge its pending updates per row for us, as it does for any
//! slow client. Nothing is dropped and nothing reconnects because we were busy.

use super::codec::{CodecError, Framer};
use super::jsonrpc::{self, Incoming, RawJson};
use super::remote::Transport;
use bytes::BytesMut;
use serde_json::value::RawValue;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

const READ_CHUNK: usize = 256 << 10;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("connection closed")]
    Closed,
    #[error("OVSDB error: {0}")]
    Rpc(Json),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("protocol error: a message larger than --max-message-size ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("no reply to inactivity probe within {0:?}")]
    Inactive(Duration),
}

impl From<CodecError> for ClientError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::TooLarge { limit } => Self::TooLarge { limit },
            CodecError::Garbage { .. } => Self::Protocol(e.to_string()),
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            // A TLS peer that closes without close_notify (as ovsdb-server does when it
            // exits) has simply closed the connection.
            std::io::ErrorKind::UnexpectedEof => Self::Closed,
            _ => Self::Io(super::tls::describe(&e)),
        }
    }
}

/// A notification from the server, stamped when its bytes were read off the socket.
/// `params` is still JSON text: the session parses it straight into typed rows.
#[derive(Debug)]
pub struct Notification {
    pub method: String,
    pub params: RawJson,
    pub received: Instant,
    /// CLOCK_REALTIME microseconds at `received`.
    pub received_usec: u64,
    /// Position in the stream of notifications counted by [`Options::received`].
    pub index: u64,
}

/// A reply, with how many notifications had arrived before it. ovsdb-server sends a
/// monitor's update for a transaction before the transaction's reply, so once the updates
/// up to `watermark` are applied, the replica shows the transaction's effect.
#[derive(Debug)]
pub struct Reply<T = Json> {
    pub result: T,
    pub watermark: u64,
}

type RawReply = Reply<RawJson>;

struct Request {
    method: String,
    params: Json,
    reply: oneshot::Sender<Result<RawReply, ClientError>>,
}

#[derive(Clone)]
pub struct Client {
    requests: mpsc::Sender<Request>,
}

impl Client {
    /// Sends one request and waits for its reply. A server-side `error` becomes
    /// [`ClientError::Rpc`].
    pub async fn request(&self, method: &str, params: Json) -> Result<Json, ClientError> {
        Ok(self.request_with_watermark(method, params).await?.result)
    }

    /// Like [`Client::request`], also telling how far the notification stream had got.
    pub async fn request_with_watermark(
        &self,
        method: &str,
        params: Json,
    ) -> Result<Reply, ClientError> {
        let reply = self.request_raw(method, params).await?;
        let result = serde_json::from_str(reply.result.get())
            .map_err(|e| ClientError::Protocol(format!("{method} reply: {e}")))?;
        Ok(Reply {
            result,
            watermark: reply.watermark,
        })
    }

    /// Like [`Client::request_with_watermark`], the result left as JSON text for the
    /// caller to parse with its own types (a monitor's initial rows).
    pub async fn request_raw(&self, method: &str, params: Json) -> Result<RawReply, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request {
                method: method.to_owned(),
                params,
                reply,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}

pub struct Options {
    /// Send `echo` after this much silence and give up after as much again (TCP only).
    pub inactivity_probe: Option<Duration>,
    /// The largest message accepted from the server, in bytes; a longer one ends the
    /// connection ([`ClientError::TooLarge`]) once that much of it has arrived.
    pub max_message: usize,
    /// Counts notifications across every connection of the process, so positions stay
    /// comparable after a reconnect.
    pub received: Arc<AtomicU64>,
}

/// Starts the connection task on `transport`. The task ends, returning why, when the peer
/// closes, the stream breaks or sends what is not JSON-RPC or too large, the probe fails,
/// or every [`Client`] is dropped.
pub fn spawn<T: Transport>(
    transport: T,
    notifications: mpsc::Sender<Notification>,
    options: Options,
) -> (Client, tokio::task::JoinHandle<ClientError>) {
    let (requests, commands) = mpsc::channel(64);
    let connection = Connection {
        transport,
        framer: Framer::new(options.max_message),
        buf: BytesMut::with_capacity(READ_CHUNK),
        pending: HashMap::new(),
        next_id: 0,
        commands,
        notifications,
        probe: options.inactivity_probe,
        received: options.received,
    };
    (Client { requests }, tokio::spawn(connection.run()))
}

struct Connection<T> {
    transport: T,
    framer: Framer,
    buf: BytesMut,
    pending: HashMap<u64, oneshot::Sender<Result<RawReply, ClientError>>>,
    next_id: u64,
    commands: mpsc::Receiver<Request>,
    notifications: mpsc::Sender<Notification>,
    probe: Option<Duration>,
    received: Arc<AtomicU64>,
}

/// The id of our own inactivity probes; the reply only matters as traffic.
const PROBE_ID: &str = "probe";

impl<T: Transport> Connection<T> {
    async fn run(mut self) -> ClientError {
        let error = self.serve().await;
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        error
    }

    async fn serve(&mut self) -> ClientError {
        let mut last_traffic = Instant::now();
        let mut probe_sent = false;
        loop {
            let probe_deadline = self.probe.map(|p| last_traffic + p);
            let idle = async {
                match probe_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            self.make_room();
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(request) = command else { return ClientError::Closed };
                    if let Err(e) = self.send_request(request).await {
                        return e;
                    }
                }
                read = self.transport.read_buf(&mut self.buf) => {
                    match read {
                        Ok(0) => return ClientError::Closed,
                        Ok(_) => {}
                        Err(e) => return e.into(),
                    }
                    last_traffic = Instant::now();
                    probe_sent = false;
                    // Before frames are split off, while it still tells the allocation's size.
                    let grown = self.buf.capacity() > 4 * READ_CHUNK;
                    if let Err(e) = self.drain_messages(last_traffic).await {
                        return e;
                    }
                    // A start-up snapshot grows the buffer to tens of megabytes; give that
                    // back once it is parsed rather than keep it for the connection's life
                    // (the frames split off it hold it only until they are parsed).
                    if grown && self.buf.len() < READ_CHUNK {
                        let rest = std::mem::replace(&mut self.buf, BytesMut::with_capacity(READ_CHUNK));
                        self.buf.extend_from_slice(&rest);
                    }
                }
                () = idle => {
                    let probe = self.probe.expect("idle fires only with a probe");
                    if probe_sent {
                        return ClientError::Inactive(probe);
                    }
                    let echo = jsonrpc::request(&json!(PROBE_ID), "echo", &json!([]));
                    if let Err(e) = self.write(&echo).await {
                        return e;
                    }
                    probe_sent = true;
                    last_traffic = Instant::now();
                }
            }
        }
    }

    /// Room for the next read. A message that has outgrown a few reads gets room up to
    /// the limit at once instead of by doubling: only the pages it fills become resident,
    /// and it is not copied again as it grows. (Each doubling's copy stayed resident until
    /// the allocator purged it: 2.4 times the message in all, where this is 1.2.)
    fn make_room(&mut self) {
        let room = self.framer.room(&self.buf);
        if self.buf.len() > 4 * READ_CHUNK {
            self.buf.reserve(room);
        } else {
            self.buf.reserve(READ_CHUNK.min(room));
        }
    }

    async fn send_request(&mut self, request: Request) -> Result<(), ClientError> {
        if request.reply.is_closed() {
            return Ok(());
        }
        self.next_id += 1;
        let id = self.next_id;
        let message = jsonrpc::request(&json!(id), &request.method, &request.params);
        self.pending.insert(id, request.reply);
        self.write(&message).await
    }

    async fn write(&mut self, message: &Json) -> Result<(), ClientError> {
        let bytes = super::codec::encode(message);
        self.transport.write_all(&bytes).await?;
        Ok(())
    }

    async fn drain_messages(&mut self, received: Instant) -> Result<(), ClientError> {
        let received_usec = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        while let Some(frame) = self.framer.decode(&mut self.buf)? {
            match Incoming::parse(&frame).map_err(ClientError::Protocol)? {
                Incoming::Request { id, method, params } => {
                    // Text serde_json has read once already, so this cannot fail.
                    let echoed: &RawValue = serde_json::from_str(params.get())
                        .map_err(|e| ClientError::Protocol(format!("{method} params: {e}")))?;
                    let unknown = json!(format!("unknown method {method}"));
                    let result = if method == "echo" {
                        Ok(echoed)
                    } else {
                        Err(&unknown)
                    };
                    self.write(&jsonrpc::response(&id, result)).await?;
                }
                Incoming::Response { id, result } => {
                    if id == json!(PROBE_ID) {
                        continue;
                    }
                    let reply = id.as_u64().and_then(|id| self.pending.remove(&id));
                    let Some(reply) = reply else {
                        return Err(ClientError::Protocol(format!("reply to unknown id {id}")));
                    };
                    let watermark = self.received.load(Ordering::Acquire);
                    let _ = reply.send(
                        result
                            .map(|result| Reply { result, watermark })
                            .map_err(ClientError::Rpc),
                    );
                }
                Incoming::Notification { method, params } => {
                    let index = self.received.fetch_add(1, Ordering::AcqRel) + 1;
                    let notification = Notification {
                        method,
                        params,
                        received,
                        received_usec,
                        index,
                    };
                    if self.notifications.send(notification).await.is_err() {
                        return Err(ClientError::Closed);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn options(inactivity_probe: Option<Duration>) -> Options {
        Options {
            inactivity_probe,
            max_message: 1 << 20,
            received: Arc::default(),
        }
    }

    async fn read_json(server: &mut tokio::io::DuplexStream, framer: &mut Framer) -> Json {
        let mut buf = BytesMut::new();
        loop {
            if let Some(frame) = framer.decode(&mut buf).unwrap() {
                return serde_json::from_slice(&frame).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let n = server.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn matches_replies_answers_echo_and_forwards_notifications() {
        let (client_side, mut server) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(4);
        let (client, _task) = spawn(client_side, tx, options(None));
        let mut framer = Framer::new(1 << 20);

        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("get_schema", json!(["Open_vSwitch"])).await }
        });
        let request = read_json(&mut server, &mut framer).await;
        assert_eq!(request["method"], "get_schema");
        // A notification and an echo arrive before the reply, in one write.
        let reply = json!({"id": request["id"], "result": {"ok": true}, "error": null});
        let bytes = format!(
            "{}{}{}",
            json!({"id": null, "method": "update2", "params": [null, {}]}),
            json!({"id": "e1", "method": "echo", "params": ["x"]}),
            reply
        );
        server.write_all(bytes.as_bytes()).await.unwrap();
        assert_eq!(call.await.unwrap().unwrap(), json!({"ok": true}));
        assert_eq!(rx.recv().await.unwrap().method, "update2");
        let echo_reply = read_json(&mut server, &mut framer).await;
        assert_eq!(
            echo_reply,
            json!({"id": "e1", "result": ["x"], "error": null})
        );
    }

    #[tokio::test]
    async fn server_errors_and_disconnects_reach_callers() {
        let (client_side, mut server) = duplex(1 << 16);
        let (tx, _rx) = mpsc::channel(4);
        let (client, task) = spawn(client_side, tx, options(None));
        let mut framer = Framer::new(1 << 20);
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("monitor_cond_since", json!([])).await }
        });
        let request = read_json(&mut server, &mut framer).await;
        let error = json!({"id": request["id"], "result": null, "error": "unknown method"});
        server
            .write_all(error.to_string().as_bytes())
            .await
            .unwrap();
        assert!(matches!(call.await.unwrap(), Err(ClientError::Rpc(e)) if e == "unknown method"));

        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.request("transact", json!([])).await }
        });
        read_json(&mut server, &mut framer).await;
        drop(server);
        assert!(matches!(pending.await.unwrap(), Err(ClientError::Closed)));
        assert!(matches!(task.await.unwrap(), ClientError::Closed));
    }

    #[tokio::test]
    async fn garbage_ends_the_connection_with_a_protocol_error() {
        let (client_side, mut server) = duplex(1 << 16);
        let (tx, _rx) = mpsc::channel(4);
        let (_client, task) = spawn(client_side, tx, options(None));
        server.write_all(b"  nonsense").await.unwrap();
        assert!(matches!(task.await.unwrap(), ClientError::Protocol(_)));
    }

    #[tokio::test]
    async fn a_message_over_the_limit_ends_the_connection_before_its_end() {
        let (client_side, mut server) = duplex(1 << 16);
        let (tx, _rx) = mpsc::channel(4);
        let (_client, task) = spawn(client_side, tx, options(None));
        // Twice the limit and never closed: the connection must not wait for the end.
        let writer = tokio::spawn(async move {
            server
                .write_all(br#"{"id":null,"method":"update2","params":[""#)
                .await?;
            server.write_all(&[b'x'; 2 << 20]).await
        });
        assert!(matches!(
            task.await.unwrap(),
            ClientError::TooLarge { limit } if limit == 1 << 20
        ));
        assert!(writer.await.unwrap().is_err(), "the rest was not read");
    }

    #[tokio::test]
    async fn a_full_queue_pauses_reading_and_loses_nothing() {
        let (client_side, mut server) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(1);
        let (_client, task) = spawn(client_side, tx, options(None));
        let note = |n: u32| json!({"id": null, "method": "update2", "params": [n]}).to_string();
        let burst: String = (0..50).map(note).collect();
        server.write_all(burst.as_bytes()).await.unwrap();
        for n in 0..50 {
            let notification = rx.recv().await.expect("the connection stays up");
            assert_eq!(notification.params.get(), format!("[{n}]"));
        }
        assert!(!task.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_probed_then_dropped() {
        let (client_side, mut server) = duplex(1 << 16);
        let (tx, _rx) = mpsc::channel(1);
        let probe = Duration::from_secs(5);
        let (_client, task) = spawn(client_side, tx, options(Some(probe)));
        let mut framer = Framer::new(1 << 20);
        let echo = read_json(&mut server, &mut framer).await;
        assert_eq!(echo["method"], "echo");
        assert!(matches!(task.await.unwrap(), ClientError::Inactive(p) if p == probe));
    }
}
