//! Child processes (ovsdb-server, dbus-daemon, the relay, our own subscriber processes)
//! behind kill-on-drop guards, and the `/proc` readings the benchmark reports.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const SETUP_HINT: &str = "run scripts/setup-deps.sh (as root) first";

pub fn require(cmd: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(cmd))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("{cmd} not found: {SETUP_HINT}"))
}

/// A child that is stopped when the guard goes, including on panic, so an aborted run
/// leaves no servers behind.
pub struct Guard {
    pub name: &'static str,
    child: Child,
    /// SIGTERM first (and a grace period) for the relay, so it can release its bus name;
    /// servers and our own subscribers are simply killed.
    graceful: bool,
}

impl Guard {
    pub fn spawn(name: &'static str, cmd: &mut Command, graceful: bool) -> Guard {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Guard {
            name,
            child,
            graceful,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout was piped")
    }

    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(e.to_string()),
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            if self.wait_exit(Duration::from_secs(3)) {
                return;
            }
        }
        let _ = self.child.kill();
        self.wait_exit(Duration::from_secs(5));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_socket(guard: &mut Guard, sock: &Path, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while UnixStream::connect(sock).is_err() {
        let tail = || fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = guard.exited() {
            panic!(
                "{} exited during start-up ({status}):\n{}",
                guard.name,
                tail()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{} not listening on {} after {START_TIMEOUT:?}:\n{}",
                guard.name,
                sock.display(),
                tail()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A private `ovsdb-server` on a fresh `vswitch.ovsschema` database in `dir`.
pub fn start_ovsdb(dir: &Path) -> (Guard, PathBuf) {
    let server = require("ovsdb-server");
    let tool = require("ovsdb-tool");
    assert!(
        Path::new(VSWITCH_SCHEMA).is_file(),
        "{VSWITCH_SCHEMA} missing: {SETUP_HINT}"
    );
    fs::create_dir_all(dir).expect("create the ovsdb directory");
    let env = [("OVS_RUNDIR", dir), ("OVS_LOGDIR", dir), ("OVS_DBDIR", dir)];
    let db = dir.join("conf.db");
    let status = Command::new(tool)
        .arg("create")
        .arg(&db)
        .arg(VSWITCH_SCHEMA)
        .envs(env)
        .status()
        .expect("run ovsdb-tool");
    assert!(status.success(), "ovsdb-tool create failed: {status}");
    let sock = dir.join("db.sock");
    let log = dir.join("ovsdb.log");
    let mut guard = Guard::spawn(
        "ovsdb-server",
        Command::new(server)
            .arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--unixctl={}", dir.join("ovsdb.ctl").display()))
            .arg(format!("--log-file={}", log.display()))
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        false,
    );
    wait_for_socket(&mut guard, &sock, &log);
    (guard, sock)
}

/// A private `dbus-daemon` with a permissive session-like policy; returns its address.
pub fn start_bus(dir: &Path) -> (Guard, String) {
    let daemon = require("dbus-daemon");
    fs::create_dir_all(dir).expect("create the bus directory");
    let sock = dir.join("bus.sock");
    let config = format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        sock = sock.display()
    );
    let conf = dir.join("bus.conf");
    fs::write(&conf, config).expect("write bus.conf");
    let log = dir.join("bus.log");
    let mut guard = Guard::spawn(
        "dbus-daemon",
        Command::new(daemon)
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create bus.log")),
        false,
    );
    wait_for_socket(&mut guard, &sock, &log);
    (guard, format!("unix:path={}", sock.display()))
}

/// Starts the relay as a user would, logging to `log`. Inherited `OVS_DBUS_RELAY_*`
/// variables are dropped so the environment cannot change what is measured.
pub fn start_relay(
    bin: &Path,
    db_sock: &Path,
    bus: &str,
    notify: Option<&Path>,
    log: &Path,
) -> Guard {
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--db")
        .arg(format!("unix:{}", db_sock.display()))
        .args(["--bus", bus, "--metrics-listen", "off"])
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("create relay.log"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OVS_DBUS_RELAY_") {
            cmd.env_remove(key);
        }
    }
    if let Some(notify) = notify {
        cmd.env("NOTIFY_SOCKET", notify);
    }
    Guard::spawn("ovs-dbus-relay", &mut cmd, true)
}

/// This benchmark binary again, in one of its hidden subscriber modes.
pub fn spawn_self(name: &'static str, args: &[&str]) -> Guard {
    let exe = std::env::current_exe().expect("path of the benchmark binary");
    Guard::spawn(
        name,
        Command::new(exe).args(args).stdout(Stdio::piped()),
        false,
    )
}

/// The release relay as users get it. The binary `cargo bench` builds next to the
/// benchmark has the dev-dependencies' features compiled in (tokio's `test-util`), so
/// build the plain release binary (a no-op when fresh) and take the path cargo reports,
/// which also honours `CARGO_TARGET_DIR`.
pub fn release_relay() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release --bin ovs-dbus-relay");
    let output = Command::new(cargo)
        .args(["build", "--release", "--bin", "ovs-dbus-relay"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build --release failed: {}",
        output.status
    );
    let executable = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "ovs-dbus-relay")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    executable.expect("cargo did not report the ovs-dbus-relay executable")
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// utime + stime of the whole process, exited threads included (tick resolution, 10 ms:
/// fine for phases of seconds of work).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name, which may itself contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks_per_second())
}

/// Nanosecond CPU time per live thread (`/proc/PID/task/*/schedstat`). Idle usage is a
/// few milliseconds over the whole window, below what the 10 ms ticks of [`cpu_time`]
/// can resolve.
pub fn cpu_by_thread(pid: u32) -> HashMap<u32, u64> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_string_lossy().parse().ok()?;
            let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
            Some((tid, text.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// CPU used between two [`cpu_by_thread`] readings. A thread that started in between
/// counts in full; one that ended is lost, which only under-reports a short-lived helper.
pub fn cpu_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> Duration {
    let ns = after
        .iter()
        .map(|(tid, &ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    Duration::from_nanos(ns)
}

/// The number that follows `key:` in a `/proc/.../status` file.
fn status_value(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Peak resident set size in MB (VmHWM).
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    status_value(&format!("/proc/{pid}/status"), "VmHWM").map(|kb| kb as f64 / 1024.0)
}

/// Voluntary context switches summed over every live thread: each is a sleep-then-wake,
/// the closest thing to a wakeup count available without tracing. The process-level
/// status line counts the main thread only.
pub fn voluntary_switches(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            let path = task.path().join("status");
            status_value(&path.to_string_lossy(), "voluntary_ctxt_switches")
        })
        .sum()
}
