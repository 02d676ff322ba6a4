//! `ssl:` remotes (issue 12) against real `ovsdb-server`s with certificates made by
//! `ovs-pki`: the relay syncs and publishes over mutual TLS, refuses a server its CA did not
//! sign (exit 2, one line), reads rotated certificate files on the next reconnect, and
//! fails over between the members of a cluster served over `ssl:`.

use crate::common::cluster::{Cluster, free_ports};
use crate::common::pki::Pki;
use crate::common::signals::Subscriber;
use crate::common::{
    Bus, COMMAND_TIMEOUT, Ovsdb, Relay, Stack, expect_success, relay_command, require, run_bounded,
    short_tempdir, text,
};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A server that also listens on `pssl:PORT:127.0.0.1` with `pki`'s server certificate;
/// its `ssl:` remote.
fn ssl_server(pki: &Pki) -> (Ovsdb, String) {
    let port = free_ports(1)[0];
    let mut extra = vec![format!("--remote=pssl:{port}:127.0.0.1")];
    extra.extend(pki.server_args("server"));
    (Ovsdb::start_with(extra), format!("ssl:127.0.0.1:{port}"))
}

/// `ovs-vsctl --db=REMOTE` over TLS with `pki`'s client certificate.
fn vsctl_ssl(pki: &Pki, remote: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(require("ovs-vsctl", "openvswitch-switch"));
    cmd.arg(format!("--db={remote}"))
        .args(pki.server_args("client"))
        .args(["--no-wait", "--timeout=10"])
        .args(args);
    expect_success(
        &run_bounded(&mut cmd, COMMAND_TIMEOUT),
        "ovs-vsctl over ssl:",
    )
}

fn relay_args(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_syncs_and_publishes_over_ssl() {
    let pki = Pki::new();
    let (db, remote) = ssl_server(&pki);
    db.vsctl(&["add-br", "br0"]);
    let bus = Bus::start();
    let tls = pki.relay_args("client");
    let relay = Relay::spawn(&remote, &bus.address(), &relay_args(&tls));
    // (br0 is in the snapshot the relay loaded over TLS.)
    let mut stack = Stack::attach(db, bus, relay, WAIT).await;
    let remote_property: String = stack.sub.property("Remote").await;
    assert_eq!(remote_property, remote);
    vsctl_ssl(&pki, &remote, &["add-port", "br0", "p1"]);
    let signals = stack.sub.take(2, WAIT).await;
    let summaries: Vec<String> = signals.iter().map(|s| s.summary()).collect();
    assert_eq!(
        summaries,
        ["PortAdded p1 br0", "InterfaceAdded p1 br0"],
        "{}",
        stack.relay.log()
    );
    // ovsdb-server exits without close_notify: an ordinary disconnect, then a reconnect.
    stack.db.restart();
    assert!(
        stack.relay.wait_log_count("full snapshot", 2, WAIT),
        "{}",
        stack.relay.log()
    );
    assert!(
        !stack.relay.log().contains("I/O error"),
        "{}",
        stack.relay.log()
    );
}

/// The relay's last line on stderr after it exits with `code` within `within`.
fn exits_with(mut relay: Relay, code: i32, within: Duration) -> String {
    let status = relay.wait_exit(within);
    let log = relay.log();
    assert_eq!(status, Some(code), "{log}");
    log.lines().last().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_another_ca_or_a_bad_file_exits_2_with_one_line() {
    let pki = Pki::new();
    let (_db, remote) = ssl_server(&pki);
    let bus = Bus::start();

    // The relay trusts another CA: refused at every attempt, then exit 2 with the reason.
    let other = Pki::new();
    // The relay with `client`'s files of `own`, trusting the CA of `trusted`, within 2 s.
    let refused = |own: &Pki, trusted: &Pki| {
        let mut tls = own.relay_args("client");
        tls[5] = trusted.ca_cert().display().to_string();
        let mut args = relay_args(&tls);
        args.extend(["--connect-timeout", "2"]);
        exits_with(Relay::spawn(&remote, &bus.address(), &args), 2, WAIT)
    };
    let line = refused(&pki, &other);
    assert!(
        line.contains("cannot reach OVSDB") && line.contains("not signed by the CA in --ca-cert"),
        "{line}"
    );

    // The server does not trust the relay's certificate.
    let line = refused(&other, &pki);
    assert!(line.contains("refused the relay's certificate"), "{line}");

    // Unusable files: at once, naming the file.
    for (flag, value, expected) in [
        (
            "--private-key",
            "/nonexistent/key.pem",
            "/nonexistent/key.pem: ",
        ),
        (
            "--private-key",
            &pki.cert("client").display().to_string(),
            "no RSA, EC or PKCS#8 private key",
        ),
        (
            "--ca-cert",
            &pki.key("client").display().to_string(),
            "no PEM certificate",
        ),
    ] {
        let mut tls = pki.relay_args("client");
        let at = tls.iter().position(|a| a == flag).unwrap() + 1;
        tls[at] = value.to_owned();
        let out = run_bounded(
            relay_command(&["run", "--db", &remote, "--bus", &bus.address()]).args(&tls),
            COMMAND_TIMEOUT,
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }
    // ssl: without the files is a usage error.
    let out = run_bounded(
        &mut relay_command(&["run", "--db", &remote, "--bus", &bus.address()]),
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--private-key, --certificate and --ca-cert"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_read_on_the_next_reconnect() {
    let pki = Pki::new();
    let (db, remote) = ssl_server(&pki);
    let files = short_tempdir("relay-tls-");
    let (key, cert) = (files.path().join("key.pem"), files.path().join("cert.pem"));
    let install = |from: &Pki, name: &str| {
        std::fs::copy(from.key(name), &key).unwrap();
        std::fs::copy(from.cert(name), &cert).unwrap();
    };
    install(&pki, "client");
    let tls = [
        "--private-key".to_owned(),
        key.display().to_string(),
        "--certificate".to_owned(),
        cert.display().to_string(),
        "--ca-cert".to_owned(),
        pki.ca_cert().display().to_string(),
    ];
    let bus = Bus::start();
    let relay = Relay::spawn(&remote, &bus.address(), &relay_args(&tls));
    let mut stack = Stack::attach(db, bus, relay, WAIT).await;

    // Replaced by a certificate the server does not trust: used from the next connection.
    let other = Pki::new();
    install(&other, "client");
    stack.db.restart();
    assert!(
        stack
            .relay
            .wait_log("refused the relay's certificate", WAIT),
        "{}",
        stack.relay.log()
    );
    // A new certificate of the right CA: the relay gets back by itself, no restart.
    pki.sign("client2");
    install(&pki, "client2");
    let sub = Subscriber::connect(&stack.bus.address()).await;
    sub.wait_ready(WAIT).await;
    assert!(stack.relay.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ssl_cluster_fails_over_to_another_member() {
    let pki = Pki::new();
    let mut cluster = Cluster::start_ssl(&pki);
    cluster.vsctl(&[0], &["add-br", "br0"]);
    let bus = Bus::start();
    let tls = pki.relay_args("client");
    let relay = Relay::spawn(&cluster.ssl_remotes(), &bus.address(), &relay_args(&tls));
    let mut sub = Subscriber::connect(&bus.address()).await;
    sub.wait_ready(WAIT).await;
    let remote: String = sub.property("Remote").await;
    let used = cluster.index_of(&remote).expect("a member");
    assert!(remote.starts_with("ssl:"), "{remote}");

    cluster.kill(used);
    let others: Vec<usize> = (0..3).filter(|&i| i != used).collect();
    cluster.vsctl(&others, &["add-port", "br0", "p1"]);
    let signals = sub.take(2, WAIT).await;
    let summaries: Vec<String> = signals.iter().map(|s| s.summary()).collect();
    assert_eq!(
        summaries,
        ["PortAdded p1 br0", "InterfaceAdded p1 br0"],
        "{}",
        relay.log()
    );
    let now: String = sub.property("Remote").await;
    assert_ne!(now, remote, "still on the dead member");
    assert!(now.starts_with("ssl:"), "{now}");
    assert!(relay.log().contains("fast resync"), "{}", relay.log());
}
