//! Real-component test harness shared by the integration tests (`mod common;`).
//!
//! Every fixture runs a REAL process in its own temporary directory, talks over unix
//! sockets only, and is torn down by `Drop` (so also when a test panics):
//!
//! - [`Ovsdb`]: a private `ovsdb-server` on a fresh `vswitch.ovsschema` database;
//! - [`Bus`]: a private `dbus-daemon` with a permissive, session-like configuration;
//! - [`Relay`]: the `ovs-dbus-relay` binary under test, its output captured to a file.
//!
//! A missing prerequisite panics with install instructions; tests never skip silently.
//! Every wait is bounded. Everything is synchronous (`std::process`), so the fixtures work
//! from both `#[test]` and `#[tokio::test]` (they block briefly; keep them out of hot
//! async paths or wrap them in `spawn_blocking` if that matters).

pub mod cluster;
pub mod compare;
pub mod pki;
pub mod signals;
pub mod stack;
pub mod system_bus;

pub use stack::Stack;

use std::fmt::Display;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The Open vSwitch schema the server is created from.
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// How long a server may take to start accepting connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for helper commands (`ovsdb-tool`, `ovs-vsctl`, `dbus-send`, ...).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

const SETUP_HINT: &str = "run `sudo scripts/setup-deps.sh`";

// ---------------------------------------------------------------------------------------
// Prerequisites and small helpers
// ---------------------------------------------------------------------------------------

/// Asserts that `cmd` exists on `PATH` (or in `/usr/sbin`, `/sbin`, which are often not on
/// a non-root `PATH`), else panics with install instructions. Returns the full path.
pub fn require(cmd: &str, package: &str) -> PathBuf {
    find_command(cmd).unwrap_or_else(|| {
        panic!(
            "{cmd} not found: {SETUP_HINT} or `apt-get install {package}` \
             (integration tests need real components and never skip)"
        )
    })
}

fn find_command(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(cmd))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A temporary directory whose paths stay short enough for unix sockets (108 bytes).
pub fn short_tempdir(prefix: &str) -> TempDir {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("cannot create a temporary directory in {base:?}: {e}"))
}

/// Reads a file for diagnostics; never fails.
fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The last `max` lines of `text`, for panic messages.
fn tail(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max)..].join("\n")
}

/// Captured output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a helper command succeeded, else panics with `what` and its stderr;
/// returns its trimmed stdout.
#[track_caller]
pub fn expect_success(out: &Output, what: impl Display) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    // `Ok(None)`: `try_wait` failed, give up at once.
    poll_until(timeout, POLL, || match child.try_wait() {
        Ok(Some(status)) => Ok(Some(status)),
        Ok(None) => Err(()),
        Err(_) => Ok(None),
    })
    .unwrap_or(None)
}

/// SIGKILLs and reaps a child (no-op if it already exited).
fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    // Reaping after SIGKILL is immediate unless the process is stuck in the kernel.
    let _ = wait_child(child, Duration::from_secs(5));
}

/// SIGKILLs and reaps the child in `slot`, if any, leaving the slot empty.
fn kill_slot(slot: &mut Option<Child>) {
    if let Some(mut child) = slot.take() {
        kill_child(&mut child);
    }
}

/// A child process SIGKILLed and reaped on drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends a signal by name (`"TERM"`, `"KILL"`, `"STOP"`, ...) with `kill(1)`.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// [`run_bounded`] with [`COMMAND_TIMEOUT`] off the async runtime's threads.
pub async fn run_blocking(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || run_bounded(&mut cmd, COMMAND_TIMEOUT))
        .await
        .expect("command thread")
}

/// Runs `cmd` to completion with a bounded wait, capturing stdout and stderr.
/// Panics if it cannot be started or does not finish within `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = match wait_child(&mut child, timeout) {
        Some(status) => status,
        None => {
            kill_child(&mut child);
            panic!("{what} did not finish within {timeout:?}");
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Waits (bounded) until `sock` accepts a connection. While waiting, `alive` is asked
/// whether the server is still running; `diagnostics` is included in any panic.
fn wait_for_socket(
    what: &str,
    sock: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
    diagnostics: impl Fn() -> String,
) {
    let accepted = poll_until(timeout, POLL, || {
        if UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        if let Err(exit) = alive() {
            panic!("{what} exited during start-up ({exit}):\n{}", diagnostics());
        }
        Err(())
    });
    if accepted.is_err() {
        panic!(
            "{what} did not accept connections on {} within {timeout:?}:\n{}",
            sock.display(),
            diagnostics()
        );
    }
}

fn child_alive(child: &mut Child) -> Result<(), String> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(status.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Spawns the server `cmd` (stdin and stdout closed, stderr to `stderr`) into `slot`, so
/// that its owner's `Drop` kills it even if the start-up fails, and waits until `sock`
/// accepts connections (see [`wait_for_socket`]). A stale `sock` is removed first: the
/// server would replace it itself, but then the wait could see the old one.
fn start_server(
    slot: &mut Option<Child>,
    what: &str,
    cmd: &mut Command,
    stderr: File,
    sock: &Path,
    diagnostics: impl Fn() -> String,
) {
    let _ = fs::remove_file(sock);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}",
                Path::new(cmd.get_program()).display()
            )
        });
    let child = slot.insert(child);
    wait_for_socket(
        what,
        sock,
        START_TIMEOUT,
        || child_alive(child),
        diagnostics,
    );
}

// ---------------------------------------------------------------------------------------
// ovsdb-server
// ---------------------------------------------------------------------------------------

/// A private `ovsdb-server` serving a fresh Open_vSwitch database on `DIR/db.sock`.
///
/// The server is a direct (non-detached) child, so [`Ovsdb::kill`] is a plain SIGKILL and
/// [`Ovsdb::restart`] reopens the same `conf.db` on the same socket.
pub struct Ovsdb {
    dir: TempDir,
    server: PathBuf,
    vsctl: PathBuf,
    /// More `ovsdb-server` arguments (e.g. `--sync-from`).
    extra: Vec<String>,
    child: Option<Child>,
}

impl Ovsdb {
    /// Creates `DIR/conf.db` from the vswitch schema, starts `ovsdb-server` on
    /// `punix:DIR/db.sock`, waits until the socket accepts, then runs `ovs-vsctl init`.
    pub fn start() -> Ovsdb {
        let ovsdb = Ovsdb::create(Vec::new());
        ovsdb.vsctl(&["init"]);
        ovsdb
    }

    /// A server in backup mode on a fresh database: it replicates `active`
    /// (`--sync-from`, as in an active-backup deployment), serves reads and monitors, and
    /// refuses every write. Returns once it shows `active`'s bridges.
    pub fn start_backup(active: &Ovsdb) -> Ovsdb {
        let backup = Ovsdb::create(vec![format!("--sync-from={}", active.remote())]);
        let want = active.vsctl(&["list-br"]);
        let synced = wait_until(START_TIMEOUT, || {
            let out = backup.vsctl_output(&["list-br"]);
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == want
        });
        assert!(synced, "backup did not sync:\n{}", backup.log());
        backup
    }

    /// Like [`Ovsdb::start`], with more `ovsdb-server` arguments (another `--remote`, TLS
    /// files); a restart keeps them.
    pub fn start_with(extra: Vec<String>) -> Ovsdb {
        let ovsdb = Ovsdb::create(extra);
        ovsdb.vsctl(&["init"]);
        ovsdb
    }

    fn create(extra: Vec<String>) -> Ovsdb {
        let server = require("ovsdb-server", "openvswitch-switch");
        let tool = require("ovsdb-tool", "openvswitch-switch");
        let vsctl = require("ovs-vsctl", "openvswitch-switch");
        assert!(
            Path::new(VSWITCH_SCHEMA).is_file(),
            "{VSWITCH_SCHEMA} not found: {SETUP_HINT} or `apt-get install openvswitch-switch`"
        );

        let dir = short_tempdir("ovsdb-");
        let db = dir.path().join("conf.db");
        let out = run_bounded(
            Command::new(&tool)
                .arg("create")
                .arg(&db)
                .arg(VSWITCH_SCHEMA)
                .envs(ovs_env(dir.path())),
            COMMAND_TIMEOUT,
        );
        expect_success(&out, format_args!("ovsdb-tool create {}", db.display()));

        let mut ovsdb = Ovsdb {
            dir,
            server,
            vsctl,
            extra,
            child: None,
        };
        ovsdb.launch();
        ovsdb
    }

    /// The temporary directory holding `conf.db`, `db.sock`, `ovsdb.log`, ...
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The OVSDB remote for clients: `unix:DIR/db.sock`.
    pub fn remote(&self) -> String {
        format!("unix:{}", self.sock_path().display())
    }

    pub fn sock_path(&self) -> PathBuf {
        self.dir().join("db.sock")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir().join("conf.db")
    }

    /// The server's pid, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log file (`DIR/ovsdb.log`) plus anything it wrote to stderr.
    pub fn log(&self) -> String {
        format!(
            "{}{}",
            read_lossy(&self.dir().join("ovsdb.log")),
            read_lossy(&self.dir().join("ovsdb.stderr"))
        )
    }

    /// Runs `ovs-vsctl --db=<remote> --no-wait --timeout=10 <args>`; panics with stderr on
    /// failure; returns trimmed stdout.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let out = self.vsctl_output(args);
        expect_success(&out, format_args!("ovs-vsctl {}", args.join(" ")))
    }

    /// Like [`Ovsdb::vsctl`] but returns the raw output instead of panicking on failure.
    pub fn vsctl_output(&self, args: &[&str]) -> Output {
        run_bounded(&mut self.vsctl_command(args), COMMAND_TIMEOUT)
    }

    /// [`Ovsdb::vsctl_output`] in a task of its own once `ready` is done: a change that
    /// comes while the test waits for it, e.g. once [`signals::CallMonitor::reached`] has
    /// seen the test's `WaitFor` reach the relay.
    pub fn vsctl_after(
        &self,
        ready: impl Future<Output = ()> + Send + 'static,
        args: &[&str],
    ) -> tokio::task::JoinHandle<Output> {
        let cmd = self.vsctl_command(args);
        tokio::spawn(async move {
            ready.await;
            run_blocking(cmd).await
        })
    }

    fn vsctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.vsctl);
        cmd.arg(format!("--db={}", self.remote()))
            .arg("--no-wait")
            .arg("--timeout=10")
            .args(args)
            .envs(ovs_env(self.dir()));
        cmd
    }

    /// SIGKILLs the server, keeping the database file.
    pub fn kill(&mut self) {
        kill_slot(&mut self.child);
    }

    /// Starts the server again on the same database file and socket (kills it first if
    /// it is still running).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let sock = dir.join("db.sock");
        let _ = fs::remove_file(dir.join("ovsdb.pid"));
        let stderr = File::create(dir.join("ovsdb.stderr")).expect("create ovsdb.stderr");
        let mut cmd = Command::new(&self.server);
        cmd.arg(dir.join("conf.db"))
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--unixctl={}", dir.join("ovsdb.ctl").display()))
            .arg(format!("--pidfile={}", dir.join("ovsdb.pid").display()))
            .arg(format!("--log-file={}", dir.join("ovsdb.log").display()))
            .args(&self.extra)
            .envs(ovs_env(&dir));
        start_server(
            &mut self.child,
            "ovsdb-server",
            &mut cmd,
            stderr,
            &sock,
            || {
                tail(
                    &format!(
                        "{}{}",
                        read_lossy(&dir.join("ovsdb.log")),
                        read_lossy(&dir.join("ovsdb.stderr"))
                    ),
                    40,
                )
            },
        );
    }
}

impl Drop for Ovsdb {
    fn drop(&mut self) {
        self.kill();
        // TempDir removes the database, socket and logs.
    }
}

pub fn ovs_env(dir: &Path) -> [(&'static str, PathBuf); 3] {
    [
        ("OVS_RUNDIR", dir.to_path_buf()),
        ("OVS_LOGDIR", dir.to_path_buf()),
        ("OVS_DBDIR", dir.to_path_buf()),
    ]
}

// ---------------------------------------------------------------------------------------
// dbus-daemon
// ---------------------------------------------------------------------------------------

/// A private `dbus-daemon` listening on `unix:path=DIR/bus.sock`.
///
/// The configuration is session-like and permissive: every user may connect (the temp
/// dir is made world-searchable so `setpriv`-dropped clients can reach the socket), send
/// to anyone, eavesdrop, and own any name.
pub struct Bus {
    dir: TempDir,
    daemon: PathBuf,
    child: Option<Child>,
}

impl Bus {
    pub fn start() -> Bus {
        Bus::start_with_config("")
    }

    /// Like [`Bus::start`], with `extra` XML inserted into `<busconfig>` after the default
    /// policy, e.g. `<include>/path/to/org.ovsdbus.Relay1.conf</include>` or more
    /// `<policy>` elements.
    pub fn start_with_config(extra: &str) -> Bus {
        Bus::start_custom(
            "session",
            &format!(
                r#"<policy context="default">
    <!-- Without this only the daemon's own uid may connect. -->
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  {extra}"#
            ),
        )
    }

    /// A daemon of `bus_type` (`session`, `system`) whose `<busconfig>` holds `body` (the
    /// policies, includes, ...) after its `<type>`, `<listen>` and `<auth>EXTERNAL`.
    pub fn start_custom(bus_type: &str, body: &str) -> Bus {
        let daemon = require("dbus-daemon", "dbus");
        let dir = short_tempdir("dbus-");
        // Let non-root clients (tests dropping privileges with setpriv) reach the socket;
        // dbus-daemon itself makes the socket 0777.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod bus temp dir");
        let sock = dir.path().join("bus.sock");
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>{bus_type}</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  {body}
</busconfig>
"#,
            sock = sock.display()
        );
        fs::write(dir.path().join("bus.conf"), config).expect("write bus.conf");
        let mut bus = Bus {
            dir,
            daemon,
            child: None,
        };
        bus.launch();
        bus
    }

    /// The bus address: `unix:path=DIR/bus.sock`.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.sock_path().display())
    }

    pub fn sock_path(&self) -> PathBuf {
        self.dir.path().join("bus.sock")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the daemon wrote to stderr.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("bus.log"))
    }

    /// SIGKILLs the daemon; every connection drops.
    pub fn kill(&mut self) {
        kill_slot(&mut self.child);
    }

    /// Starts a new daemon on the same address (kills the old one first if needed).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let sock = dir.join("bus.sock");
        let log = File::create(dir.join("bus.log")).expect("create bus.log");
        let mut cmd = Command::new(&self.daemon);
        cmd.arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .arg("--nofork")
            .arg("--nopidfile");
        start_server(&mut self.child, "dbus-daemon", &mut cmd, log, &sock, || {
            tail(&read_lossy(&dir.join("bus.log")), 40)
        });
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// The relay under test
// ---------------------------------------------------------------------------------------

/// The `ovs-dbus-relay` binary as a child process; stdout and stderr go to a log file.
/// If the test is panicking when the relay is dropped, the log is printed to stderr.
pub struct Relay {
    child: std::process::Child,
    /// Holds the log file; removed when the relay is dropped.
    _dir: TempDir,
    log_path: PathBuf,
}

impl Relay {
    /// Spawns `ovs-dbus-relay run --db <db> --bus <bus_address> --metrics-listen off
    /// <extra...>` with `RUST_LOG=ovs_dbus_relay=debug`. Inherited `OVS_DBUS_RELAY_*`
    /// variables are removed so the environment cannot change the flags.
    pub fn spawn(db: &str, bus_address: &str, extra: &[&str]) -> Relay {
        Relay::spawn_command(Relay::run_command(db, bus_address, extra))
    }

    /// The [`relay_command`] [`Relay::spawn`] runs, for a test that adds to its
    /// environment before it passes it to [`Relay::spawn_command`].
    pub fn run_command(db: &str, bus_address: &str, extra: &[&str]) -> Command {
        let mut args = vec![
            "run",
            "--db",
            db,
            "--bus",
            bus_address,
            "--metrics-listen",
            "off",
        ];
        args.extend_from_slice(extra);
        relay_command(&args)
    }

    /// Spawns the binary with exactly `args` (e.g. for `watch`, `wait`, `show`), same
    /// environment and logging as [`Relay::spawn`].
    pub fn spawn_args(args: &[&str]) -> Relay {
        Relay::spawn_command(relay_command(args))
    }

    /// Spawns `cmd`, a [`relay_command`] perhaps given more environment, with
    /// `RUST_LOG=ovs_dbus_relay=debug` and its output going to the log.
    pub fn spawn_command(cmd: Command) -> Relay {
        Relay::spawn_logged(cmd, false)
    }

    /// Like [`Relay::spawn_command`], the log file standing in for the journal stream
    /// systemd would give it (`JOURNAL_STREAM` names its device and inode).
    pub fn spawn_journal(cmd: Command) -> Relay {
        Relay::spawn_logged(cmd, true)
    }

    fn spawn_logged(mut cmd: Command, journal: bool) -> Relay {
        use std::os::unix::fs::MetadataExt;
        let bin = relay_bin();
        let dir = short_tempdir("relay-");
        let log_path = dir.path().join("relay.log");
        let log = File::create(&log_path).expect("create relay.log");
        if journal {
            let meta = log.metadata().expect("relay.log metadata");
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let log2 = log.try_clone().expect("clone relay.log handle");
        cmd.env("RUST_LOG", "ovs_dbus_relay=debug")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Relay {
            child,
            _dir: dir,
            log_path,
        }
    }

    /// Contents of the relay's log file (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal by name (`"TERM"`, `"INT"`, `"HUP"`, ...).
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits up to `timeout` for exit; returns the exit code. `None` on timeout (or if
    /// the process was killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.wait_status(timeout).and_then(|status| status.code())
    }

    /// Waits up to `timeout` for exit; `None` if it is still running.
    pub fn wait_status(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Waits up to `timeout` until the log contains `needle`; returns whether it did.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_log_count(needle, 1, timeout)
    }

    /// Waits up to `timeout` until `needle` is in at least `count` lines of the log (e.g.
    /// a second `OVSDB connection ended`: the relay has retried); returns whether it was.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.log().lines().filter(|l| l.contains(needle)).count() >= count
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            send_signal(self.child.id(), "TERM");
            if wait_child(&mut self.child, Duration::from_secs(2)).is_none() {
                kill_child(&mut self.child);
            }
        }
        if thread::panicking() {
            eprintln!(
                "----- ovs-dbus-relay log ({}) -----\n{}\n----- end of relay log -----",
                self.log_path.display(),
                tail(&self.log(), 200)
            );
        }
    }
}

/// Path of the binary under test (built by cargo for integration tests).
pub fn relay_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ovs-dbus-relay")
}

/// The binary under test with `args` and a clean environment: no inherited
/// `OVS_DBUS_RELAY_*` or `OS_AUTOINST_*` variables or bus addresses, so only the test
/// chooses its settings. `OVS_RUNDIR` names a directory that does not exist, so that a
/// relay with `--openqa-compat` never finds (and installs flows on) a bridge of the host's
/// own Open vSwitch; tests with a switch point it at their own.
pub fn relay_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(relay_bin());
    cmd.args(args)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env("OVS_RUNDIR", "/nonexistent/ovs-dbus-relay-tests");
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("OVS_DBUS_RELAY_") || key_text.starts_with("OS_AUTOINST_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

// ---------------------------------------------------------------------------------------
// Bounded polling: every wait for a condition in the tests goes through these
// ---------------------------------------------------------------------------------------

/// How often [`wait_until`] and [`wait_until_async`] look again.
pub const POLL: Duration = Duration::from_millis(20);

/// The tests' one bounded poll: calls `probe` until it returns `Ok`, sleeping `every`
/// between calls; once `timeout` has passed, returns the last `Err` instead (so a caller
/// can report what it saw). `probe` runs at least once; it may panic to fail at once, or
/// return `Ok` of "give up" to stop early.
pub fn poll_until<T, E>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(done) => return Ok(done),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => thread::sleep(every),
        }
    }
}

/// [`poll_until`] for async probes (`|| async { ... }`), sleeping on the runtime's timer.
pub async fn poll_until_async<T, E, F, Fut>(
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(done) => return Ok(done),
            Err(last) if tokio::time::Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Polls `cond` every [`POLL`] until it holds or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_until(timeout, POLL, || if cond() { Ok(()) } else { Err(()) }).is_ok()
}

/// [`wait_until`] for an async condition: `wait_until_async(t, || async { ... }).await`.
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until_async(timeout, POLL, || {
        let holds = cond();
        async move { if holds.await { Ok(()) } else { Err(()) } }
    })
    .await
    .is_ok()
}

/// Runs `dbus-send --bus=<address> --print-reply <args>` (bounded); returns the output.
pub fn dbus_send(address: &str, args: &[&str]) -> Output {
    let bin = require("dbus-send", "dbus");
    run_bounded(
        Command::new(bin)
            .arg(format!("--bus={address}"))
            .arg("--print-reply")
            .args(args),
        COMMAND_TIMEOUT,
    )
}

/// [`dbus_send`] of `method` (`INTERFACE.MEMBER`) with `args` to the relay's root object.
pub fn dbus_send_relay(address: &str, method: &str, args: &[&str]) -> Output {
    let mut all = vec!["--dest=org.ovsdbus.Relay1", "/org/ovsdbus/Relay1", method];
    all.extend_from_slice(args);
    dbus_send(address, &all)
}

/// `ovs-vsctl` arguments adding `bridge` with `datapath_type=netdev`.
pub const fn netdev_bridge(bridge: &str) -> [&str; 7] {
    [
        "add-br",
        bridge,
        "--",
        "set",
        "bridge",
        bridge,
        "datapath_type=netdev",
    ]
}

/// `ovs-vsctl` arguments adding `port` to `bridge` with an interface of `type=internal`.
pub const fn internal_port<'a>(bridge: &'a str, port: &'a str) -> [&'a str; 8] {
    [
        "add-port",
        bridge,
        port,
        "--",
        "set",
        "interface",
        port,
        "type=internal",
    ]
}

/// A real `ovs-vswitchd` on an [`Ovsdb`]'s database, for tests that need what the switch
/// writes back (ofport, link_state). Use bridges with `datapath_type=netdev` and ports of
/// `type=internal`: they need no kernel datapath module. It runs in a network namespace of
/// its own, because the netdev datapath's tap devices (and its `ovs-netdev` device, of
/// which a host can have one) would otherwise collide between tests and outlive them.
pub struct Vswitchd {
    child: Option<Child>,
    log: PathBuf,
}

impl Vswitchd {
    /// In a network namespace of its own, which ends with it.
    pub fn start(db: &Ovsdb) -> Vswitchd {
        let unshare = require("unshare", "util-linux");
        let mut cmd = Command::new(unshare);
        cmd.arg("--net");
        Vswitchd::spawn(db, cmd)
    }

    /// In `netns`, which outlives it: a restarted switch finds its devices there, and a
    /// relay started in it sees them too.
    pub fn start_in(db: &Ovsdb, netns: &Netns) -> Vswitchd {
        Vswitchd::spawn(db, netns.enter())
    }

    fn spawn(db: &Ovsdb, mut cmd: Command) -> Vswitchd {
        let bin = require("ovs-vswitchd", "openvswitch-switch");
        let dir = db.dir().to_path_buf();
        let log = dir.join("vswitchd.log");
        let ctl = dir.join("vswitchd.ctl");
        // A restart must not see the control socket of the switch before it.
        let _ = fs::remove_file(&ctl);
        let child = cmd
            .arg(bin)
            .arg(db.remote())
            .arg(format!("--unixctl={}", ctl.display()))
            .arg(format!("--pidfile={}", dir.join("vswitchd.pid").display()))
            .arg(format!("--log-file={}", log.display()))
            .envs(ovs_env(&dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ovs-vswitchd: {e}"));
        assert!(
            wait_until(START_TIMEOUT, || ctl.exists()),
            "ovs-vswitchd did not start:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        Vswitchd {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vswitchd {
    fn drop(&mut self) {
        kill_slot(&mut self.child);
    }
}

/// A network namespace held open by a child process (killed on drop, which ends the
/// namespace with the last process in it). Programs run in it through `nsenter`, which
/// execs them: the child's pid is the program's.
pub struct Netns {
    holder: Child,
}

impl Netns {
    pub fn new() -> Netns {
        let unshare = require("unshare", "util-linux");
        require("nsenter", "util-linux");
        let holder = Command::new(unshare)
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start unshare: {e}"));
        let netns = Netns { holder };
        let ours = fs::read_link("/proc/self/ns/net").expect("our network namespace");
        assert!(
            wait_until(START_TIMEOUT, || fs::read_link(netns.path())
                .is_ok_and(|theirs| theirs != ours)),
            "unshare --net did not make a network namespace"
        );
        netns
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// `nsenter` into the namespace; add the program and its arguments.
    pub fn enter(&self) -> Command {
        let mut cmd = Command::new(require("nsenter", "util-linux"));
        cmd.arg(format!("--net={}", self.path())).arg("--");
        cmd
    }

    /// `cmd` (its program, arguments and environment) run in the namespace.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut wrapped = self.enter();
        wrapped.arg(cmd.get_program()).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }

    /// Runs `ip ARGS` in the namespace; its output, or a panic with its error.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut cmd = self.enter();
        cmd.arg(require("ip", "iproute2")).args(args);
        expect_success(
            &run_bounded(&mut cmd, COMMAND_TIMEOUT),
            format!("ip {args:?}"),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_child(&mut self.holder);
    }
}
