//! The client commands `watch`, `wait`, `show`, `get` and `list` (SPEC §7). They talk to a running relay
//! over D-Bus only, so they need no access to the OVSDB socket.
//!
//! Exit codes: 0 done; 1 condition not met / timeout; 2 usage or any other error; 3 the
//! relay is not running or the bus cannot be reached; 4 the relay runs but has not synced
//! with OVSDB (yet) — each with one line on stderr naming what failed.

pub mod format;
pub mod get;
pub mod show;
pub mod wait;
pub mod watch;

use crate::bus::BusTarget;
pub use crate::client::CallError;
use crate::client::Relay;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;
use zbus::Connection;

/// Why a command did not succeed, and the exit code that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Exit 1: the awaited condition did not come true in time.
    pub fn not_met(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// Exit 2: usage or any other error.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// Exit 3: no relay to ask (nobody owns its name, or the bus itself is unreachable).
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            code: 3,
            message: message.into(),
        }
    }

    /// Exit 4: the relay answers but has not synced with OVSDB.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self {
            code: 4,
            message: message.into(),
        }
    }
}

pub type Outcome = Result<(), Failure>;

/// Runs a client command on a fresh runtime and turns its outcome into the exit code,
/// printing the failure as one line on stderr.
pub fn execute(command: impl Future<Output = Outcome>) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::error(format!("tokio: {e}")))
        .and_then(|runtime| runtime.block_on(command));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("ovs-dbus-relay: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Writes a command's output; a closed pipe (`| head`) is not an error.
pub fn write_stdout(what: &str, text: &str) -> Outcome {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::error(format!(
            "{what}: cannot write to stdout: {e}"
        ))),
        _ => Ok(()),
    }
}

/// Parses `--bus`.
pub fn bus_target(text: &str) -> Result<BusTarget, Failure> {
    BusTarget::parse(text).map_err(|e| Failure::error(format!("--bus {e}")))
}

/// The relay on the chosen bus; `what` names the command for errors.
pub async fn relay(
    target: &BusTarget,
    method_timeout: Option<Duration>,
    what: &str,
) -> Result<Relay, Failure> {
    let conn = connect(target, method_timeout).await?;
    Relay::new(&conn, target)
        .await
        .map_err(|e| e.into_failure(what))
}

/// Connects to the chosen bus as a plain client. `method_timeout` bounds every method call
/// (zbus has none by default); `None` waits as long as the relay takes.
pub async fn connect(
    target: &BusTarget,
    method_timeout: Option<Duration>,
) -> Result<Connection, Failure> {
    let mut builder = target.builder();
    if let Some(timeout) = method_timeout {
        builder = builder.method_timeout(timeout);
    }
    builder
        .build()
        .await
        .map_err(|e| Failure::unreachable(format!("cannot connect to the {target}: {e}")))
}

impl CallError {
    /// As a command failure: a timeout is exit 1, no relay 3, a relay not synced 4,
    /// everything else 2. `what` names the operation (`wait Port tap0`, `show`).
    pub fn into_failure(self, what: &str) -> Failure {
        match self {
            Self::Timeout(m) => Failure::not_met(format!("{what}: timed out: {m}")),
            Self::InvalidArgs(m) => Failure::error(format!("{what}: invalid argument: {m}")),
            Self::NotConnected(m) => Failure::not_ready(format!("{what}: relay not ready: {m}")),
            Self::NotRunning(m) => Failure::unreachable(format!("{what}: {m}")),
            Self::Other(m) => Failure::error(format!("{what}: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        let code = |e: CallError| e.into_failure("get").code;
        assert_eq!(code(CallError::Timeout("t".into())), 1);
        assert_eq!(code(CallError::InvalidArgs("a".into())), 2);
        assert_eq!(code(CallError::Other("o".into())), 2);
        assert_eq!(code(CallError::NotRunning("r".into())), 3);
        assert_eq!(code(CallError::NotConnected("c".into())), 4);
    }

    #[test]
    fn messages_name_the_operation() {
        let i = CallError::InvalidArgs("bad".into()).into_failure("wait Port x");
        assert_eq!(i.message, "wait Port x: invalid argument: bad");
    }
}
