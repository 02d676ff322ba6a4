//! Keeps os-autoinst-openvswitch's OpenFlow rules on the bridge. OpenFlow rules live in
//! ovs-vswitchd's memory only: they are gone when it restarts, and when the bridge is
//! deleted and created again. Both close every connection to the bridge's management
//! socket (`<OVS_RUNDIR>/<bridge>.mgmt`), so the keeper holds one open, and installs the
//! rules each time it connects: at start-up, after every restart of ovs-vswitchd and after
//! every re-creation of the bridge (the original installs them once, at its own start).
//!
//! The connection carries no flows itself: it says hello and answers echo requests (the
//! switch drops a silent peer), and reads and discards everything else. The rules are
//! written by `ovs-ofctl add-flows`, a child process: OVSDB cannot carry flows, and the
//! learn actions are ovs-ofctl's own syntax.

use super::flows::FlowSettings;
use super::netlink;
use bytes::BytesMut;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Between attempts to reach a bridge that is not there (yet): ovs-vswitchd restarting, or
/// the bridge not created yet.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// After a failed installation (no ovs-ofctl, no such device here yet), while connected.
const INSTALL_RETRY: Duration = Duration::from_secs(5);

/// OpenFlow message types, the same in every version.
const OFPT_HELLO: u8 = 0;
const OFPT_ECHO_REQUEST: u8 = 2;
const OFPT_ECHO_REPLY: u8 = 3;
/// OpenFlow 1.5: the peer answers with the highest version both allow.
const OFP_VERSION: u8 = 0x06;
const HEADER_LEN: usize = 8;
/// A hello without version bitmap: version, type, length 8, xid 0.
const HELLO: [u8; HEADER_LEN] = [OFP_VERSION, OFPT_HELLO, 0, 8, 0, 0, 0, 0];

pub struct Keeper {
    pub bridge: String,
    pub settings: FlowSettings,
    /// `OVS_RUNDIR`, where ovs-vswitchd puts `<bridge>.mgmt`.
    pub rundir: PathBuf,
}

impl Keeper {
    fn socket(&self) -> PathBuf {
        self.rundir.join(format!("{}.mgmt", self.bridge))
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        let socket = self.socket();
        let mut backoff = RECONNECT_MIN;
        let mut waiting = false;
        loop {
            match UnixStream::connect(&socket).await {
                Ok(stream) => {
                    backoff = RECONNECT_MIN;
                    waiting = false;
                    self.hold(stream).await;
                    tracing::info!(
                        bridge = self.bridge,
                        "openQA: the bridge's OpenFlow connection closed (ovs-vswitchd \
                         stopped, or the bridge is gone); its rules are installed again \
                         once it is back"
                    );
                }
                Err(e) => {
                    if !waiting {
                        tracing::info!(
                            bridge = self.bridge,
                            "openQA: waiting for ovs-vswitchd to serve the bridge ({}: {e})",
                            socket.display()
                        );
                        waiting = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// Installs the rules, then keeps the connection up until the switch closes it.
    async fn hold(&self, mut stream: UnixStream) {
        if stream.write_all(&HELLO).await.is_err() {
            return;
        }
        let mut retry = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut installed = false;
        let mut buffer = BytesMut::with_capacity(4096);
        loop {
            tokio::select! {
                // `read_buf` is cancel-safe: what has arrived stays in `buffer`.
                read = stream.read_buf(&mut buffer) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return;
                    }
                    loop {
                        match next_message(&mut buffer) {
                            Ok(Some(mut message)) if message[1] == OFPT_ECHO_REQUEST => {
                                // The reply is the request with its type changed.
                                message[1] = OFPT_ECHO_REPLY;
                                if stream.write_all(&message).await.is_err() {
                                    return;
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(()) => return,
                        }
                    }
                }
                () = &mut retry, if !installed => match self.install().await {
                    Ok(count) => {
                        installed = true;
                        tracing::info!(bridge = self.bridge, "openQA: installed {count} OpenFlow rules");
                    }
                    Err(e) => {
                        tracing::error!(
                            bridge = self.bridge,
                            "openQA: cannot install the OpenFlow rules (trying again in {} s): {e}",
                            INSTALL_RETRY.as_secs()
                        );
                        retry.as_mut().reset(tokio::time::Instant::now() + INSTALL_RETRY);
                    }
                },
            }
        }
    }

    /// The original's rules for the bridge's current MAC address, in one `ovs-ofctl`.
    async fn install(&self) -> Result<usize, String> {
        let addresses = netlink::addresses(&self.bridge).await.map_err(|e| {
            format!("cannot read the bridge's local port (is the relay in ovs-vswitchd's network namespace?): {e}")
        })?;
        let mac = addresses
            .mac
            .ok_or_else(|| format!("{} has no MAC address", self.bridge))?;
        let expected = self.settings.expected_address();
        if !addresses.ipv4.contains(&expected) {
            // The original refuses to start; the rules do not depend on the address, and
            // the relay has more to do than openQA, so it says so and goes on.
            tracing::warn!(
                bridge = self.bridge,
                "openQA: bridge local port IP is expected to be {expected} (it has {}); \
                 multi-machine VMs cannot reach the host until it is",
                if addresses.ipv4.is_empty() {
                    "none".to_owned()
                } else {
                    addresses.ipv4.join(", ")
                }
            );
        }
        let rules = self.settings.rules(&mac);
        let mut child = tokio::process::Command::new("ovs-ofctl")
            .arg("add-flows")
            .arg(format!("unix:{}", self.socket().display()))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run ovs-ofctl (package openvswitch-common): {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let text = rules.join("\n") + "\n";
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("ovs-ofctl: {e}"))?;
        drop(stdin);
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| format!("ovs-ofctl: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned());
        }
        Ok(rules.len())
    }
}

/// Splits the next whole OpenFlow message (header included) off `buffer`: `None` until
/// it has all arrived, `Err` for a length no message can have.
fn next_message(buffer: &mut BytesMut) -> Result<Option<BytesMut>, ()> {
    if buffer.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes([buffer[2], buffer[3]]));
    if length < HEADER_LEN {
        return Err(());
    }
    if buffer.len() < length {
        return Ok(None);
    }
    Ok(Some(buffer.split_to(length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_when_whole() {
        let mut buffer = BytesMut::new();
        assert_eq!(next_message(&mut buffer), Ok(None));
        let echo = [
            OFP_VERSION,
            OFPT_ECHO_REQUEST,
            0,
            12,
            0,
            0,
            0,
            7,
            1,
            2,
            3,
            4,
        ];
        buffer.extend_from_slice(&echo[..10]);
        assert_eq!(next_message(&mut buffer), Ok(None));
        buffer.extend_from_slice(&echo[10..]);
        buffer.extend_from_slice(&HELLO);
        assert_eq!(next_message(&mut buffer).unwrap().unwrap().as_ref(), &echo);
        assert_eq!(next_message(&mut buffer).unwrap().unwrap().as_ref(), &HELLO);
        assert_eq!(next_message(&mut buffer), Ok(None));
        buffer.extend_from_slice(&[OFP_VERSION, 0, 0, 4, 0, 0, 0, 0]);
        assert_eq!(next_message(&mut buffer), Err(()));
    }
}
