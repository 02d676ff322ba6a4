//! OVSDB remotes (`unix:PATH`, `tcp:HOST:PORT`), parsed without I/O, and the transport
//! they open.

use std::fmt;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
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
            // IPv6 literals are written in brackets: tcp:[::1]:6640.
            let (host, port) = match rest.strip_prefix('[') {
                Some(v6) => v6
                    .split_once("]:")
                    .ok_or_else(|| format!("{text:?}: expected tcp:[ADDR]:PORT"))?,
                None => rest
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{text:?}: expected tcp:HOST:PORT"))?,
            };
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{text:?}: bad port {port:?}"))?;
            if host.is_empty() {
                return Err(format!("{text:?}: empty host"));
            }
            return Ok(Self::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        if text.starts_with("ssl:") {
            return Err(format!("{text:?}: ssl: remotes are not supported yet"));
        }
        Err(format!("{text:?}: expected unix:PATH or tcp:HOST:PORT"))
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

    pub fn is_tcp(&self) -> bool {
        matches!(self, Self::Tcp { .. })
    }

    pub async fn connect(&self) -> std::io::Result<Box<dyn Transport>> {
        Ok(match self {
            Self::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            Self::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
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
        ] {
            assert_eq!(Remote::parse(text).unwrap().to_string(), text);
        }
        let list = Remote::parse_list("tcp:127.0.0.1:1,tcp:127.0.0.1:2").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(Remote::join(&list), "tcp:127.0.0.1:1,tcp:127.0.0.1:2");
        assert!(list[0].is_tcp());
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
            "ssl:h:1",
            "/path",
            "tcp:[::1]6640",
        ] {
            let err = Remote::parse_list(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
