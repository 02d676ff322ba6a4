//! More OVSDB topologies for the failure tests: a 3-member Raft cluster on loopback, a
//! second `ovsdb-server` on an existing standalone database file, and `ovs-vsctl` against
//! any remote.
//!
//! Like the rest of the harness, every process is a direct child killed on `Drop`, every
//! wait is bounded, and a missing program panics with install instructions.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use super::{
    COMMAND_TIMEOUT, VSWITCH_SCHEMA, expect_success, kill_child, kill_slot, ovs_env, poll_until,
    read_lossy, require, run_bounded, short_tempdir, start_server, tail, wait_child,
};

/// How long a fresh cluster may take to elect a leader and connect every member.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// `n` distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Runs `ovs-vsctl --db=<remote> --no-wait --timeout=<secs> <args>` (bounded) and returns
/// the raw output. `remote` may be a comma-separated list.
pub fn vsctl_at(remote: &str, timeout_secs: u32, args: &[&str]) -> Output {
    let vsctl = require("ovs-vsctl", "openvswitch-switch");
    run_bounded(
        Command::new(vsctl)
            .arg(format!("--db={remote}"))
            .arg("--no-wait")
            .arg(format!("--timeout={timeout_secs}"))
            .args(args),
        COMMAND_TIMEOUT,
    )
}

/// Like [`vsctl_at`], panicking with stderr on failure; returns trimmed stdout.
pub fn vsctl_ok(remote: &str, args: &[&str]) -> String {
    let out = vsctl_at(remote, 10, args);
    expect_success(
        &out,
        format_args!("ovs-vsctl --db={remote} {}", args.join(" ")),
    )
}

/// Starts `ovsdb-server` on `db_file` serving `remotes` into `slot`, with its control
/// socket, pid file and log named `DIR/<name>.*`; waits until `DIR/<name>.sock` accepts
/// connections.
fn launch_server(
    slot: &mut Option<Child>,
    dir: &Path,
    name: &str,
    db_file: &Path,
    remotes: &[String],
    extra: &[String],
) {
    let server = require("ovsdb-server", "openvswitch-switch");
    let sock = dir.join(format!("{name}.sock"));
    let _ = fs::remove_file(dir.join(format!("{name}.pid")));
    let stderr = File::create(dir.join(format!("{name}.stderr"))).expect("create server stderr");
    let mut cmd = Command::new(&server);
    cmd.arg(db_file)
        .arg(format!("--remote=punix:{}", sock.display()))
        .args(remotes.iter().map(|r| format!("--remote={r}")))
        .args(extra)
        .arg(format!(
            "--unixctl={}",
            dir.join(format!("{name}.ctl")).display()
        ))
        .arg(format!(
            "--pidfile={}",
            dir.join(format!("{name}.pid")).display()
        ))
        .arg(format!(
            "--log-file={}",
            dir.join(format!("{name}.log")).display()
        ))
        .arg("--no-chdir")
        .envs(ovs_env(dir));
    start_server(
        slot,
        &format!("ovsdb-server {name}"),
        &mut cmd,
        stderr,
        &sock,
        || server_log(dir, name, 40),
    );
}

fn server_log(dir: &Path, name: &str, lines: usize) -> String {
    tail(
        &format!(
            "{}{}",
            read_lossy(&dir.join(format!("{name}.log"))),
            read_lossy(&dir.join(format!("{name}.stderr")))
        ),
        lines,
    )
}

/// SIGTERM, then SIGKILL if the process has not gone within 5 s; reaps it.
fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        super::send_signal(child.id(), "TERM");
        if wait_child(child, Duration::from_secs(5)).is_none() {
            kill_child(child);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A second server on an existing standalone database file
// ---------------------------------------------------------------------------------------

/// Another `ovsdb-server` opened on an existing database file (whose own server is not
/// running), on its own unix socket `DIR/<name>.sock` inside that file's directory: the
/// way to change a standalone database "offline", behind the back of its clients.
pub struct SideServer {
    dir: PathBuf,
    name: String,
    child: Option<Child>,
}

impl SideServer {
    pub fn start(db_file: &Path, name: &str) -> SideServer {
        let dir = db_file.parent().expect("database file has a directory");
        let mut side = SideServer {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            child: None,
        };
        launch_server(&mut side.child, dir, name, db_file, &[], &[]);
        side
    }

    /// An OVSDB relay server (`ovsdb-server relay:Open_vSwitch:SOURCE`, OVS ≥ 2.16) in
    /// `dir`: no file of its own, the database is `source`'s (a server or cluster).
    pub fn relay(source: &str, dir: &Path, name: &str) -> SideServer {
        let mut side = SideServer {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            child: None,
        };
        let database = PathBuf::from(format!("relay:Open_vSwitch:{source}"));
        launch_server(&mut side.child, dir, name, &database, &[], &[]);
        side
    }

    pub fn remote(&self) -> String {
        format!(
            "unix:{}",
            self.dir.join(format!("{}.sock", self.name)).display()
        )
    }

    /// The tail of its log.
    pub fn log(&self) -> String {
        server_log(&self.dir, &self.name, 40)
    }

    /// Closes every client connection (the listening socket is removed and added again),
    /// the server staying up with its state.
    pub fn drop_clients(&self) {
        let appctl = require("ovs-appctl", "openvswitch-common");
        let ctl = self.dir.join(format!("{}.ctl", self.name));
        let listen = format!(
            "punix:{}",
            self.dir.join(format!("{}.sock", self.name)).display()
        );
        for command in ["ovsdb-server/remove-remote", "ovsdb-server/add-remote"] {
            let out = run_bounded(
                Command::new(&appctl)
                    .arg("-t")
                    .arg(&ctl)
                    .arg(command)
                    .arg(&listen),
                COMMAND_TIMEOUT,
            );
            expect_success(&out, command);
        }
    }

    /// `ovs-vsctl` through this server; `--no-leader-only`, which a relay server needs.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let mut full = vec!["--no-leader-only"];
        full.extend_from_slice(args);
        vsctl_ok(&self.remote(), &full)
    }

    /// Stops the server cleanly (SIGTERM) so the file is closed and unlocked.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

impl Drop for SideServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// A 3-member Raft cluster
// ---------------------------------------------------------------------------------------

pub struct Member {
    /// `tcp:127.0.0.1:PORT` for Raft traffic between members.
    pub raft: String,
    /// `tcp:127.0.0.1:PORT` for clients.
    pub client: String,
    client_port: u16,
    /// `ssl:127.0.0.1:PORT` for clients, when the cluster serves TLS too.
    pub ssl: Option<String>,
    ssl_port: Option<u16>,
    name: String,
    db: PathBuf,
    child: Option<Child>,
}

/// A clustered `Open_vSwitch` database on three local `ovsdb-server` processes
/// (`ovsdb-tool create-cluster` + `join-cluster`), each serving clients on its own tcp port
/// on 127.0.0.1 and on `DIR/sN.sock`; initialised with `ovs-vsctl init`.
pub struct Cluster {
    dir: TempDir,
    pub members: Vec<Member>,
    /// `ovsdb-server`'s TLS options, for the `ssl:` remotes.
    tls: Vec<String>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::create(None)
    }

    /// Also serving clients over TLS with `pki`'s `server` certificate (Member::ssl).
    pub fn start_ssl(pki: &super::pki::Pki) -> Cluster {
        Cluster::create(Some(pki))
    }

    fn create(pki: Option<&super::pki::Pki>) -> Cluster {
        let tool = require("ovsdb-tool", "openvswitch-switch");
        require("ovs-appctl", "openvswitch-common");
        assert!(
            Path::new(VSWITCH_SCHEMA).is_file(),
            "{VSWITCH_SCHEMA} not found: apt-get install openvswitch-switch"
        );
        let dir = short_tempdir("raft-");
        let ports = free_ports(9);
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                raft: format!("tcp:127.0.0.1:{}", ports[i]),
                client: format!("tcp:127.0.0.1:{}", ports[3 + i]),
                client_port: ports[3 + i],
                ssl: pki.map(|_| format!("ssl:127.0.0.1:{}", ports[6 + i])),
                ssl_port: pki.map(|_| ports[6 + i]),
                name: format!("s{}", i + 1),
                db: dir.path().join(format!("db{}.db", i + 1)),
                child: None,
            })
            .collect();
        let run_tool = |args: &[&str]| {
            let out = run_bounded(
                Command::new(&tool).args(args).envs(ovs_env(dir.path())),
                COMMAND_TIMEOUT,
            );
            expect_success(&out, format_args!("ovsdb-tool {}", args.join(" ")));
        };
        let db_arg = |m: &Member| m.db.to_str().expect("utf-8 path").to_owned();
        run_tool(&[
            "create-cluster",
            &db_arg(&members[0]),
            VSWITCH_SCHEMA,
            &members[0].raft,
        ]);
        for m in &members[1..] {
            run_tool(&[
                "join-cluster",
                &db_arg(m),
                "Open_vSwitch",
                &m.raft,
                &members[0].raft,
            ]);
        }
        let tls = pki.map(|pki| pki.server_args("server")).unwrap_or_default();
        let mut cluster = Cluster { dir, members, tls };
        for i in 0..3 {
            cluster.launch(i);
        }
        cluster.wait_healthy(CLUSTER_TIMEOUT);
        vsctl_ok(&cluster.remotes(), &["init"]);
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn launch(&mut self, i: usize) {
        let dir = self.dir.path().to_path_buf();
        let m = &mut self.members[i];
        let mut remotes = vec![format!("ptcp:{}:127.0.0.1", m.client_port)];
        remotes.extend(m.ssl_port.map(|port| format!("pssl:{port}:127.0.0.1")));
        launch_server(&mut m.child, &dir, &m.name, &m.db, &remotes, &self.tls);
    }

    /// Every member's client remote, comma-separated (`tcp:…,tcp:…,tcp:…`).
    pub fn remotes(&self) -> String {
        self.remotes_of(&[0, 1, 2])
    }

    pub fn remotes_of(&self, members: &[usize]) -> String {
        members
            .iter()
            .map(|&i| self.members[i].client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every member's `ssl:` remote, comma-separated (after [`Cluster::start_ssl`]).
    pub fn ssl_remotes(&self) -> String {
        self.members
            .iter()
            .filter_map(|m| m.ssl.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member whose client remote (`tcp:` or `ssl:`) is `remote`.
    pub fn index_of(&self, remote: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.client == remote || m.ssl.as_deref() == Some(remote))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// `ovs-appctl cluster/status Open_vSwitch` of member `i` (empty when it is down).
    pub fn status(&self, i: usize) -> String {
        let appctl = require("ovs-appctl", "openvswitch-common");
        let ctl = self.dir().join(format!("{}.ctl", self.members[i].name));
        let out = run_bounded(
            Command::new(appctl)
                .arg("-t")
                .arg(ctl)
                .args(["cluster/status", "Open_vSwitch"]),
            COMMAND_TIMEOUT,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The member that reports `Role: leader`, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..3).find(|&i| self.is_running(i) && self.status(i).contains("Role: leader"))
    }

    /// Waits until every running member is a cluster member that knows the leader, and
    /// one of them is the leader.
    pub fn wait_healthy(&self, timeout: Duration) {
        let healthy = poll_until(timeout, Duration::from_millis(100), || {
            let statuses: Vec<(usize, String)> = (0..3)
                .filter(|&i| self.is_running(i))
                .map(|i| (i, self.status(i)))
                .collect();
            let healthy = statuses.iter().all(|(_, s)| {
                s.contains("Status: cluster member")
                    && s.lines()
                        .any(|l| l.starts_with("Leader: ") && !l.contains("unknown"))
            }) && statuses.iter().any(|(_, s)| s.contains("Role: leader"));
            if healthy { Ok(()) } else { Err(statuses) }
        });
        if let Err(statuses) = healthy {
            panic!(
                "cluster not healthy within {timeout:?}:\n{}\n{}",
                statuses
                    .iter()
                    .map(|(i, s)| format!("--- member {i} ---\n{s}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.logs()
            );
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        kill_slot(&mut self.members[i].child);
    }

    /// `ovs-vsctl` through the given members (any of them, leader or not); panics on
    /// failure.
    pub fn vsctl(&self, members: &[usize], args: &[&str]) -> String {
        let mut full = vec!["--no-leader-only"];
        full.extend_from_slice(args);
        vsctl_ok(&self.remotes_of(members), &full)
    }

    /// The tail of every member's log, for panic messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {} log ---\n{}",
                    m.name,
                    server_log(self.dir(), &m.name, 30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
