//! OVSDB remotes (`unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT`), parsed without I/O, and
//! the transport they open.

use super::tls::{self, TlsFiles};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Ssl { host: String, port: u16 },
}

/// What opening a network remote needs besides its address.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// For `ssl:` remotes.
    pub tls: Option<TlsFiles>,
    /// `--inactivity-probe`: the kernel gives up on a peer that stops acknowledging (a
    /// black-holed connection, even with writes pending) after twice this, and probes an
    /// idle one after this much silence.
    pub probe: Duration,
}

/// Keepalive and a bound on unacknowledged data, so that a dead peer ends the socket even
/// when the relay's own probe cannot be sent (its writes stuck behind unacknowledged ones).
/// The kernel counts keepalive times in whole seconds, at least one.
fn keep_alive(stream: &tokio::net::TcpStream, probe: Duration) -> std::io::Result<()> {
    let second = Duration::from_secs(1);
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(probe.max(second))
        .with_interval((probe / 3).max(second))
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(probe * 2))
}

async fn tcp(host: &str, port: u16, probe: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    // A kernel without these options still gets the relay's own inactivity probe.
    if let Err(e) = keep_alive(&stream, probe) {
        tracing::warn!("cannot set TCP keepalive on the OVSDB connection: {e}");
    }
    Ok(stream)
}

/// `tcp:HOST:PORT` / `ssl:HOST:PORT` after the prefix; IPv6 literals in brackets.
fn host_port(text: &str, rest: &str, scheme: &str) -> Result<(String, u16), String> {
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => v6
            .split_once("]:")
            .ok_or_else(|| format!("{text:?}: expected {scheme}:[ADDR]:PORT"))?,
        None => rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: expected {scheme}:HOST:PORT"))?,
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?}: bad port {port:?}"))?;
    if host.is_empty() {
        return Err(format!("{text:?}: empty host"));
    }
    Ok((host.to_owned(), port))
}

impl Remote {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{text:?}: unix: needs a socket path"));
            }
            return Ok(Self::Unix(path.into()));
        }
        if let Some(rest) = text.strip_prefix("tcp:") {
            let (host, port) = host_port(text, rest, "tcp")?;
            return Ok(Self::Tcp { host, port });
        }
        if let Some(rest) = text.strip_prefix("ssl:") {
            let (host, port) = host_port(text, rest, "ssl")?;
            return Ok(Self::Ssl { host, port });
        }
        Err(format!(
            "{text:?}: expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"
        ))
    }

    /// A comma-separated list, as `--db` takes for the members of a cluster.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let remotes: Vec<Self> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Self::parse)
            .collect::<Result<_, _>>()?;
        if remotes.is_empty() {
            return Err("no OVSDB remote given".into());
        }
        Ok(remotes)
    }

    /// The `--db` form of a list of remotes.
    pub fn join(remotes: &[Self]) -> String {
        remotes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A network remote (`tcp:` or `ssl:`): probed for silence, unlike a local socket.
    pub fn is_tcp(&self) -> bool {
        matches!(self, Self::Tcp { .. } | Self::Ssl { .. })
    }

    pub fn is_ssl(&self) -> bool {
        matches!(self, Self::Ssl { .. })
    }

    pub async fn connect(&self, options: &ConnectOptions) -> std::io::Result<Box<dyn Transport>> {
        Ok(match self {
            Self::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            Self::Tcp { host, port } => Box::new(tcp(host, *port, options.probe).await?),
            Self::Ssl { host, port } => {
                let files = options.tls.as_ref().ok_or_else(|| {
                    std::io::Error::other("ssl: needs --private-key, --certificate and --ca-cert")
                })?;
                // Read again for every connection: rotated files take effect on the next.
                let config = files.client_config().map_err(std::io::Error::other)?;
                let stream = tcp(host, *port, options.probe).await?;
                Box::new(tls::connect(stream, host, config).await?)
            }
        })
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Self::Ssl { host, port } if host.contains(':') => write!(f, "ssl:[{host}]:{port}"),
            Self::Ssl { host, port } => write!(f, "ssl:{host}:{port}"),
        }
    }
}

/// Any byte stream the connection can own: sockets in production, in-memory pipes in tests.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_remotes() {
        for text in [
            "unix:/run/openvswitch/db.sock",
            "tcp:127.0.0.1:6640",
            "tcp:[::1]:6641",
            "ssl:ovsdb.example.net:6641",
            "ssl:[::1]:6641",
        ] {
            assert_eq!(Remote::parse(text).unwrap().to_string(), text);
        }
        let list = Remote::parse_list("tcp:127.0.0.1:1,tcp:127.0.0.1:2").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(Remote::join(&list), "tcp:127.0.0.1:1,tcp:127.0.0.1:2");
        assert!(list[0].is_tcp());
    }

    /// A connection to a loopback listener (kept with it), opened as a tcp: remote is.
    async fn connected(probe: Duration) -> (tokio::net::TcpListener, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = tcp("127.0.0.1", port, probe).await.unwrap();
        (listener, stream)
    }

    #[tokio::test]
    async fn a_probe_below_a_second_still_gets_keepalive() {
        let (_listener, stream) = connected(Duration::from_millis(300)).await;
        let socket = socket2::SockRef::from(&stream);
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(600))
        );
    }

    #[tokio::test]
    async fn network_sockets_get_keepalive_and_a_user_timeout() {
        let (_listener, stream) = connected(Duration::from_secs(6)).await;
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(6));
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(12))
        );
        assert!(stream.nodelay().unwrap());
    }

    #[test]
    fn rejects_bad_remotes_with_a_reason() {
        for bad in [
            "",
            "unix:",
            "tcp:host",
            "tcp::1",
            "tcp:h:0",
            "tcp:h:99999",
            "ssl:h",
            "ssl::1",
            "/path",
            "tcp:[::1]6640",
        ] {
            let err = Remote::parse_list(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
