//! sd_notify(3) client: READY, STATUS, WATCHDOG and STOPPING messages to systemd.
//!
//! The protocol is one datagram per message on the `AF_UNIX` socket named by
//! `NOTIFY_SOCKET`, holding newline-separated `KEY=VALUE` assignments. A path starting
//! with `/` is a file-system socket, one starting with `@` an abstract one (the `@`
//! stands for the leading NUL byte). systemd learns the sender's pid from the kernel
//! (it enables `SO_PASSCRED` on its end), which is what `NotifyAccess=main` checks, so
//! nothing but the text needs to be sent.
//!
//! Notification is best effort: when `NOTIFY_SOCKET` is unset every call is a no-op,
//! and a message that cannot be sent is logged and dropped. A service manager that
//! stopped listening must never take the relay down with it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// Sends sd_notify messages, or nothing when not started by a service manager.
///
/// Cheap to clone (the socket is shared), so the watchdog task and the main task can
/// each hold one.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `None` when `NOTIFY_SOCKET` is unset or unusable: every call is a no-op.
    target: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    /// Unbound and non-blocking: sending never stalls the async runtime, even when the
    /// receiver's queue is full (the message is then dropped and logged instead).
    socket: UnixDatagram,
    addr: SocketAddr,
    /// The socket as `NOTIFY_SOCKET` spelled it, for log messages.
    name: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`. The variable is left set (the relay starts no children
    /// that could mistake it for their own).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(socket) if !socket.is_empty() => Notifier::with_socket(socket),
            _ => Notifier::disabled(),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// A notifier for an explicit socket, in `NOTIFY_SOCKET` syntax (`/path` or
    /// `@abstract-name`). An unusable value is logged and yields a disabled notifier.
    pub fn with_socket(socket: impl AsRef<OsStr>) -> Notifier {
        let socket = socket.as_ref();
        let name = socket.to_string_lossy().into_owned();
        let target = parse_address(socket)
            .and_then(|addr| {
                let socket = UnixDatagram::unbound()
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|e| format!("cannot create a datagram socket: {e}"))?;
                Ok(Target {
                    socket,
                    addr,
                    name: name.clone(),
                })
            })
            .map_err(|e| tracing::warn!(socket = %name, "sd_notify disabled: {e}"))
            .ok();
        Notifier {
            target: target.map(Arc::new),
        }
    }

    /// Whether messages are sent anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Start-up is complete: `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A free-form status line (shown by `systemctl status`).
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Keep-alive ping for `WatchdogSec=`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Half of `WATCHDOG_USEC` when it is set and `WATCHDOG_PID` is unset or equals our
    /// pid (as sd_watchdog_enabled(3) decides); pinging at half the timeout leaves a
    /// whole half for a late tick. Never zero, so it is safe for `tokio::time::interval`.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = target.socket.send_to_addr(message.as_bytes(), &target.addr) {
            // Only the first assignment: enough to tell which message was lost.
            let what = message.lines().next().unwrap_or_default();
            tracing::warn!(socket = %target.name, "sd_notify {what} not sent: {e}");
        }
    }
}

/// Turns a `NOTIFY_SOCKET` value into a socket address.
fn parse_address(socket: &OsStr) -> Result<SocketAddr, String> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket).map_err(|e| e.to_string()),
        Some(b'@') => abstract_address(&bytes[1..]),
        // systemd 253+ may also pass `vsock:CID:PORT` (for virtual machines), which the
        // standard library cannot reach; such a relay simply runs without notification.
        _ => Err("expected an absolute path or @abstract-name".to_owned()),
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> Result<SocketAddr, String> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name).map_err(|e| e.to_string())
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> Result<SocketAddr, String> {
    Err("abstract sockets exist only on Linux".to_owned())
}

/// A status value must stay on one line: a newline would start a new assignment.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// [`Notifier::watchdog_interval`] without the process environment, for tests.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        // Set for another process (e.g. inherited from a parent service): not ours.
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    // Half of usec microseconds = usec × 500 ns, exact and non-zero for usec ≥ 1.
    Some(Duration::from_nanos(usec.saturating_mul(500)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A bound datagram socket standing in for systemd, with a bounded `recv`.
    fn listen(socket: UnixDatagram) -> UnixDatagram {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set read timeout");
        socket
    }

    fn recv(listener: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = listener.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8 notification")
    }

    /// A short temporary directory: socket paths are limited to 107 bytes.
    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("notify-")
            .tempdir_in("/tmp")
            .expect("temp dir")
    }

    #[test]
    fn every_message_reaches_a_path_socket() {
        let dir = tempdir();
        let path = dir.path().join("notify.sock");
        let listener = listen(UnixDatagram::bind(&path).expect("bind"));
        let notifier = Notifier::with_socket(&path);
        assert!(notifier.is_enabled());

        notifier.ready("snapshot loaded");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=snapshot loaded");
        notifier.status("syncing");
        assert_eq!(recv(&listener), "STATUS=syncing");
        notifier.watchdog();
        assert_eq!(recv(&listener), "WATCHDOG=1");
        notifier.clone().stopping();
        assert_eq!(recv(&listener), "STOPPING=1");
    }

    #[test]
    fn status_stays_on_one_line() {
        let dir = tempdir();
        let path = dir.path().join("notify.sock");
        let listener = listen(UnixDatagram::bind(&path).expect("bind"));
        let notifier = Notifier::with_socket(&path);
        notifier.status("lost\nREADY=1\r\nagain");
        assert_eq!(recv(&listener), "STATUS=lost READY=1  again");
    }

    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        // Abstract names are shared by every process in the network namespace and are
        // not cleaned up by a temp dir: make the name unique to this process and test.
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ovs-dbus-relay-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let listener = listen(UnixDatagram::bind_addr(&addr).expect("bind abstract"));
        let notifier = Notifier::with_socket(format!("@{name}"));
        assert!(notifier.is_enabled());
        notifier.ready("ok");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=ok");
        notifier.watchdog();
        assert_eq!(recv(&listener), "WATCHDOG=1");
    }

    #[test]
    fn a_missing_listener_is_not_fatal() {
        let dir = tempdir();
        let path = dir.path().join("nobody.sock");
        let notifier = Notifier::with_socket(&path);
        assert!(notifier.is_enabled());
        // Logged and dropped, never a panic; a listener appearing later gets messages.
        notifier.ready("x");
        notifier.watchdog();
        let listener = listen(UnixDatagram::bind(&path).expect("bind"));
        notifier.watchdog();
        assert_eq!(recv(&listener), "WATCHDOG=1");
    }

    #[test]
    fn unusable_sockets_disable_notification() {
        let too_long = format!("/tmp/{}", "x".repeat(200));
        for socket in ["relative.sock", "vsock:2:1234", too_long.as_str()] {
            let notifier = Notifier::with_socket(socket);
            assert!(!notifier.is_enabled(), "{socket}");
            notifier.ready("no-op");
            notifier.stopping();
        }
        let notifier = Notifier::disabled();
        assert!(!notifier.is_enabled());
        notifier.watchdog();
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_us() {
        let me = 4242;
        let half = |usec, pid| watchdog_interval_from(usec, pid, me);
        assert_eq!(half(Some("400000"), None), Some(Duration::from_millis(200)));
        assert_eq!(
            half(Some("30000000"), Some("4242")),
            Some(Duration::from_secs(15))
        );
        assert_eq!(half(Some("1"), None), Some(Duration::from_nanos(500)));
        assert_eq!(half(None, None), None);
        assert_eq!(half(None, Some("4242")), None);
        assert_eq!(half(Some("0"), None), None);
        assert_eq!(half(Some("soon"), None), None);
        assert_eq!(half(Some("-5"), None), None);
        // Meant for another process, or unreadable: not ours to serve.
        assert_eq!(half(Some("400000"), Some("1")), None);
        assert_eq!(half(Some("400000"), Some("me")), None);
    }
}
