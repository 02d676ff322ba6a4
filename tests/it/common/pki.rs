//! Certificates as Open vSwitch deployments make them: `ovs-pki` (openvswitch-common) in a
//! temp dir — a CA, a server certificate and client certificates it signs, none of them
//! carrying a host name.

use super::{COMMAND_TIMEOUT, expect_success, require, run_bounded, short_tempdir};
use std::path::PathBuf;
use std::process::Command;
use tempfile::TempDir;

pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A new CA with a certificate for the server (`server`) and one for the relay
    /// (`client`).
    pub fn new() -> Pki {
        let pki = Pki {
            dir: short_tempdir("pki-"),
        };
        pki.ovs_pki(&["init", "--force"]);
        pki.sign("server");
        pki.sign("client");
        pki
    }

    fn ovs_pki(&self, args: &[&str]) {
        let mut cmd = Command::new(require("ovs-pki", "openvswitch-common"));
        cmd.arg(format!("--dir={}", self.dir.path().join("ca").display()))
            .arg("--log=/dev/null")
            .args(args)
            .current_dir(self.dir.path());
        expect_success(
            &run_bounded(&mut cmd, COMMAND_TIMEOUT),
            format!("ovs-pki {args:?}"),
        );
    }

    /// Another key and certificate signed by this CA: `NAME-privkey.pem`, `NAME-cert.pem`.
    pub fn sign(&self, name: &str) {
        self.ovs_pki(&["req+sign", name, "switch"]);
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca/switchca/cacert.pem")
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-privkey.pem"))
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-cert.pem"))
    }

    /// `ovsdb-server` (and `ovs-vsctl`) options: its key and certificate, and this CA.
    pub fn server_args(&self, name: &str) -> Vec<String> {
        vec![
            format!("--private-key={}", self.key(name).display()),
            format!("--certificate={}", self.cert(name).display()),
            format!("--ca-cert={}", self.ca_cert().display()),
        ]
    }

    /// The relay's flags for `name`'s key and certificate and this CA.
    pub fn relay_args(&self, name: &str) -> Vec<String> {
        vec![
            "--private-key".into(),
            self.key(name).display().to_string(),
            "--certificate".into(),
            self.cert(name).display().to_string(),
            "--ca-cert".into(),
            self.ca_cert().display().to_string(),
        ]
    }
}
