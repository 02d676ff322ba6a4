//! A private dbus-daemon configured like the system bus (its default-deny policy and its
//! limits, the shipped policy files included), and clients that drop privileges with
//! `setpriv`: what the policy tests and the tests of unprivileged misuse run against.

use super::{Bus, COMMAND_TIMEOUT, require, run_bounded, text};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;

pub(crate) const NOBODY: u32 = 65534;

/// A file of the source tree, as it ships.
pub(crate) fn shipped(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Creates the `ovsdbus` group once per test process and returns its gid. It must exist
/// before a bus starts: dbus-daemon resolves `<policy group=...>` when it loads the
/// configuration and ignores a group it cannot find.
pub(crate) fn ovsdbus_gid() -> u32 {
    static GID: OnceLock<u32> = OnceLock::new();
    *GID.get_or_init(|| {
        let groupadd = require("groupadd", "passwd");
        // -f: succeed if the group exists already (other runs, or a real installation).
        let out = run_bounded(
            Command::new(groupadd).args(["-f", "--system", "ovsdbus"]),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "groupadd ovsdbus failed (the policy tests need root): {}",
            text(&out.stderr)
        );
        let out = run_bounded(
            Command::new(require("getent", "libc-bin")).args(["group", "ovsdbus"]),
            COMMAND_TIMEOUT,
        );
        let line = text(&out.stdout);
        line.split(':')
            .nth(2)
            .and_then(|gid| gid.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot read the gid of ovsdbus from {line:?}"))
    })
}

/// A private `dbus-daemon` configured like the system bus: connecting is open to all,
/// owning names and method calls are denied unless a policy file punches a hole, and the
/// shipped policy files are included from the source tree. Its directory is
/// world-searchable, so that clients running as nobody reach the socket.
pub(crate) struct SystemBus(Bus);

impl SystemBus {
    pub(crate) fn start() -> SystemBus {
        SystemBus::launch("")
    }

    /// Also with the shipped `dbus/` directory as service directory, so that dbus-daemon
    /// itself parses the activation file. Not for tests that start the relay: a call
    /// racing its start-up would activate Exec=/bin/false.
    pub(crate) fn start_with_activation() -> SystemBus {
        SystemBus::launch(&format!(
            "<servicedir>{}</servicedir>",
            shipped("dbus").display()
        ))
    }

    /// `extra` goes after every policy (a later rule wins in the same context).
    pub(crate) fn launch(extra: &str) -> SystemBus {
        // dbus-daemon resolves the policies' group when it loads the configuration.
        ovsdbus_gid();
        // The default policy is /usr/share/dbus-1/system.conf's (dbus 1.14), minus what
        // a private test bus cannot or need not do (user switch, fork, syslog, helper).
        SystemBus(Bus::start_custom(
            "system",
            &format!(
                r#"<policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{relay_conf}</include>
  <include>{openqa_conf}</include>
  {extra}"#,
                relay_conf = shipped("dbus/org.ovsdbus.Relay1.conf").display(),
                openqa_conf = shipped("dbus/org.opensuse.os_autoinst.switch.conf").display(),
            ),
        ))
    }
}

impl Deref for SystemBus {
    type Target = Bus;

    fn deref(&self) -> &Bus {
        &self.0
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        // A malformed or rejected policy file shows up here, with dbus-daemon's reason.
        if thread::panicking() {
            eprintln!("----- dbus-daemon log -----\n{}", self.log());
        }
    }
}

/// Who runs a client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Root,
    /// uid/gid 65534, no supplementary groups.
    Nobody,
    /// uid/gid 65534 with `ovsdbus` as supplementary group.
    NobodyInOvsdbus,
    /// The openQA worker user (`_openqa-worker`, no supplementary groups).
    OpenQaWorker,
    /// `_ovsdbus-test`: a member of `ovsdbus` in /etc/group, where polkit looks.
    OvsdbusUser,
}

pub(crate) const OPENQA_WORKER: &str = "_openqa-worker";

/// `program args...` run as `who` (through `setpriv` unless root).
pub(crate) fn command_as(who: Who, program: &Path) -> Command {
    let ids = [format!("--reuid={NOBODY}"), format!("--regid={NOBODY}")];
    match who {
        Who::Root => Command::new(program),
        Who::Nobody => {
            let mut cmd = Command::new(require("setpriv", "util-linux"));
            cmd.args(ids).arg("--clear-groups").arg(program);
            cmd
        }
        Who::NobodyInOvsdbus => {
            let mut cmd = Command::new(require("setpriv", "util-linux"));
            cmd.args(ids)
                .arg(format!("--groups={}", ovsdbus_gid()))
                .arg(program);
            cmd
        }
        Who::OpenQaWorker | Who::OvsdbusUser => {
            let user = if who == Who::OpenQaWorker {
                OPENQA_WORKER
            } else {
                "_ovsdbus-test"
            };
            let known = Command::new("id").arg(user).output();
            assert!(
                known.is_ok_and(|out| out.status.success()),
                "no user {user}: run `sudo scripts/setup-deps.sh`, which creates it"
            );
            let mut cmd = Command::new(require("setpriv", "util-linux"));
            cmd.arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .arg("--init-groups")
                .arg(program);
            cmd
        }
    }
}
