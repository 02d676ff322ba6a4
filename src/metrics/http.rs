//! The Prometheus and health endpoint (SPEC §8): a bare hyper 1.x HTTP/1.1 server.
//!
//! - `GET /metrics` → 200, the registry in text format 0.0.4;
//! - `GET /healthz` → 200 `ok` when the relay's state is `ready` (and it is on a bus that
//!   takes its messages), else 503 with the state, `bus disconnected` or `bus not taking
//!   messages for N s`;
//! - `HEAD` is answered like `GET` without a body; other methods → 405; other paths → 404.
//!
//! Each connection is its own task and encodes on that task, so a slow scraper costs
//! nothing to the event path. Shutdown stops accepting at once and gives open
//! connections [`SHUTDOWN_GRACE`] to finish the request they are serving.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};

/// What `/healthz` reports: the relay's state string (`ready` → 200 `ok\n`; anything else
/// → 503 with the state).
pub type Health = Arc<dyn Fn() -> String + Send + Sync>;

/// How long open connections may take to finish after shutdown is requested. A scrape
/// is answered in milliseconds; this only bounds a peer that stopped reading.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A peer must send its request head within this long, so idle or trickling
/// connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed `accept` (typically EMFILE), wait before retrying rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Binds the listener up front, so the caller can report a bad or busy address at
/// start-up (exit 2) instead of from inside the serving task.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` resolves, then stops
/// accepting and waits up to [`SHUTDOWN_GRACE`] for open connections before dropping
/// them. Never fails: per-connection errors are logged at debug level and a failed
/// `accept` is retried.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // A watch rather than a Notify: a connection accepted just as shutdown fires still
    // sees the flag when it first polls.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections as we go; JoinSet keeps their results otherwise.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let metrics = Arc::clone(&metrics);
                let health = Arc::clone(&health);
                let service = hyper::service::service_fn(move |req| {
                    let response = respond(&req, &metrics, &health);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = http.serve_connection(TokioIo::new(stream), service);
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        result = conn.as_mut() => result,
                        // The inner block drops the watch guard, which is not Send.
                        () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                            // Finishes the request in flight, then closes instead of
                            // keeping the connection alive.
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, "metrics endpoint connection: {e}");
                    }
                });
            }
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::debug!(
            open = connections.len(),
            "metrics endpoint: dropping connections still open after {SHUTDOWN_GRACE:?}"
        );
        connections.shutdown().await;
    }
}

/// Routes one request. Synchronous on purpose: nothing here waits, and encoding on the
/// connection's task keeps it off every other task.
fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return text(StatusCode::NOT_FOUND, "not found\n".to_owned());
    }
    // hyper leaves the body out of HEAD responses itself (keeping Content-Length).
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_owned(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if path == "/healthz" {
        let state = health();
        return if state == "ready" {
            text(StatusCode::OK, "ok\n".to_owned())
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{state}\n"))
        };
    }
    match metrics.try_encode() {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        Err(e) => {
            tracing::error!("encoding metrics: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            )
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const METHODS: [&str; 3] = ["ListBridges", "GetRow", "AddPort"];
    const WAIT: Duration = Duration::from_secs(5);

    struct Server {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        state: Arc<Mutex<String>>,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
    }

    impl Server {
        async fn start() -> Server {
            let listener = bind("127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let metrics = Metrics::new(&METHODS);
            let state = Arc::new(Mutex::new("ready".to_owned()));
            let health: Health = {
                let state = Arc::clone(&state);
                Arc::new(move || state.lock().expect("state lock").clone())
            };
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, Arc::clone(&metrics), health, async {
                let _ = stopped.await;
            }));
            Server {
                addr,
                metrics,
                state,
                stop: Some(stop),
                task,
            }
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            tokio::time::timeout(WAIT, self.task)
                .await
                .expect("serve returns after shutdown")
                .expect("serve task");
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One request on a fresh connection with `Connection: close`; reads to EOF.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
            .await
            .expect("response within timeout")
            .expect("read");
        parse(&raw)
    }

    fn parse(raw: &[u8]) -> Reply {
        let text = String::from_utf8(raw.to_vec()).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_spec_exposition() {
        let server = Server::start().await;
        let reply = request(server.addr, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        crate::metrics::tests::check_spec_exposition(&reply.body, &METHODS);
        server.stop().await;
    }

    #[tokio::test]
    async fn counters_move_between_scrapes() {
        let server = Server::start().await;
        server
            .metrics
            .observe_event("port", "added", Duration::from_micros(300));
        let reply = request(server.addr, "GET", "/metrics").await;
        let samples = crate::metrics::tests::samples(&reply.body);
        let value = |key: &str| {
            *samples
                .get(key)
                .unwrap_or_else(|| panic!("{key} missing in\n{}", reply.body))
        };
        assert_eq!(
            value(r#"ovsdbus_events_total{op="added",table="port"}"#),
            1.0
        );
        assert_eq!(
            value(r#"ovsdbus_events_total{op="changed",table="port"}"#),
            0.0
        );
        assert_eq!(value("ovsdbus_event_latency_seconds_count"), 1.0);
        assert_eq!(
            value(r#"ovsdbus_event_latency_seconds_bucket{le="0.0004"}"#),
            1.0
        );
        assert_eq!(
            value(r#"ovsdbus_event_latency_seconds_bucket{le="0.0002"}"#),
            0.0
        );
        assert!(value("ovsdbus_last_event_timestamp_seconds") > 1.6e9);
        server.stop().await;
    }

    #[tokio::test]
    async fn healthz_follows_the_state() {
        let server = Server::start().await;
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
        assert_eq!(reply.header("content-type"), Some(TEXT_PLAIN));

        *server.state.lock().expect("state lock") = "reconnecting".to_owned();
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("reconnecting"), "{}", reply.body);
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_refused() {
        let server = Server::start().await;
        for path in ["/", "/metrics/", "/metricsx", "/health"] {
            assert_eq!(
                request(server.addr, "GET", path).await.status,
                404,
                "{path}"
            );
        }
        for method in ["POST", "PUT", "DELETE"] {
            for path in ["/metrics", "/healthz"] {
                let reply = request(server.addr, method, path).await;
                assert_eq!(reply.status, 405, "{method} {path}");
                assert_eq!(reply.header("allow"), Some("GET, HEAD"));
            }
        }
        let head = request(server.addr, "HEAD", "/metrics").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "HEAD has no body: {:?}", head.body);
        server.stop().await;
    }

    #[tokio::test]
    async fn query_strings_do_not_change_routing() {
        let server = Server::start().await;
        assert_eq!(
            request(server.addr, "GET", "/metrics?x=1").await.status,
            200
        );
        assert_eq!(
            request(server.addr, "GET", "/healthz?x=1").await.status,
            200
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_closes_idle_keep_alive_connections() {
        let server = Server::start().await;
        let addr = server.addr;
        // A keep-alive connection that has completed one request and stays open.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, idle.read(&mut buf))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

        // Returns well before SHUTDOWN_GRACE: the idle connection closes gracefully.
        let started = tokio::time::Instant::now();
        server.stop().await;
        assert!(
            started.elapsed() < SHUTDOWN_GRACE,
            "{:?}",
            started.elapsed()
        );
        let n = tokio::time::timeout(WAIT, idle.read(&mut buf))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(n, 0, "idle connection is closed");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener is closed"
        );
    }
}
