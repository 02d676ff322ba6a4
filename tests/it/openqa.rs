//! The openQA drop-in (`--openqa-compat`, issue 11) end to end, against os-autoinst-
//! openvswitch's behaviour: the same OVSDB effect as the `ovs-vsctl` commands it runs
//! (compared on a second server), its checks, return codes and messages, the tap's link
//! brought up, `show()` byte for byte `ovs-vsctl show`, its eight OpenFlow rules on the
//! bridge — again after ovs-vswitchd restarts or the bridge is re-created — and a client
//! written like os-autoinst's qemu backend (Perl, Net::DBus).
//!
//! The relay runs in a network namespace of its own (with ovs-vswitchd, when there is
//! one), so that the taps it brings up are the test's, never the host's.

use crate::common::compare::{assert_same, assert_unchanged, pair, snapshot};
use crate::common::signals::error_of;
use crate::common::{
    Bus, COMMAND_TIMEOUT, Netns, Ovsdb, Relay, Stack, Vswitchd, expect_success, netdev_bridge,
    ovs_env, poll_until, require, run_bounded, text,
};
use ovs_dbus_relay::client::Switch1Proxy;
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use zbus::{Connection, Proxy};

const WAIT: Duration = Duration::from_secs(20);
const OPENQA_NAME: &str = "org.opensuse.os_autoinst.switch";
const OPENQA_PATH: &str = "/switch";

/// `org.opensuse.os_autoinst.switch` at `/switch`.
pub struct OpenQa(Proxy<'static>);

impl OpenQa {
    pub async fn new(conn: &Connection) -> OpenQa {
        OpenQa(
            Proxy::new(conn, OPENQA_NAME, OPENQA_PATH, OPENQA_NAME)
                .await
                .expect("openQA proxy"),
        )
    }

    pub async fn set_vlan(&self, tap: &str, vlan: u32) -> (i32, String) {
        self.0
            .call("set_vlan", &(tap, vlan))
            .await
            .unwrap_or_else(|e| panic!("set_vlan({tap}, {vlan}): {e}"))
    }

    pub async fn unset_vlan(&self, tap: &str, vlan: u32) -> (i32, String) {
        self.0
            .call("unset_vlan", &(tap, vlan))
            .await
            .unwrap_or_else(|e| panic!("unset_vlan({tap}, {vlan}): {e}"))
    }

    pub async fn show(&self) -> (i32, String) {
        self.0.call("show", &()).await.expect("show")
    }
}

/// `ovs-vsctl ARGS` on `db`: its exit status as the original returns it (`$?`, the raw wait
/// status) and its stderr, as the original passes it on.
fn vsctl_answer(db: &Ovsdb, args: &[&str]) -> (i32, String) {
    let out = db.vsctl_output(args);
    let status = out.status.code().expect("ovs-vsctl exited") << 8;
    (status, text(&out.stderr))
}

/// Whether `device` in `netns` is administratively up (`UP` among its flags).
fn link_up(netns: &Netns, device: &str) -> bool {
    let line = netns.ip(&["-o", "link", "show", device]);
    let flags = line
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags)
        .unwrap_or_else(|| panic!("no flags in {line:?}"));
    flags.split(',').any(|f| f == "UP")
}

/// The relay with `--openqa-compat` and `extra`, in `netns`, with `OVS_RUNDIR` at `db`'s
/// directory (where a switch started on `db` serves its bridges) and `env` set.
fn spawn_relay(
    db: &Ovsdb,
    bus: &Bus,
    netns: &Netns,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Relay {
    let args = [&["--openqa-compat"], extra].concat();
    let mut cmd = Relay::run_command(&db.remote(), &bus.address(), &args);
    cmd.envs(ovs_env(db.dir()));
    cmd.envs(env.iter().copied());
    Relay::spawn_command(netns.wrap(&cmd))
}

// ---------------------------------------------------------------------------------------
// Checks and OVSDB effect, without a switch: the taps are plain tap devices
// ---------------------------------------------------------------------------------------

const SETUP: &[&[&str]] = &[
    &["add-br", "br0"],
    &["add-br", "br1"],
    &["add-port", "br0", "tap0"],
    &["add-port", "br0", "tap1", "tag=3", "vlan_mode=access"],
    &["add-port", "br0", "tap2"],
    &["add-port", "br0", "tap3"],
    &["add-port", "br0", "eth0"],
    &["add-port", "br0", "tap0x"],
    &["add-port", "br1", "tap7"],
];

/// The taps of [`SETUP`] that have a device; `tap3` has none.
const DEVICES: &[&str] = &["tap0", "tap1", "tap2", "tap7"];

/// The relay on the first of two servers prepared with [`SETUP`]; `ovs-vsctl --no-wait`
/// does on the second what os-autoinst-openvswitch would (no ovs-vswitchd runs here).
struct Env {
    stack: Stack,
    theirs: Ovsdb,
    netns: Netns,
}

impl Env {
    async fn start(extra: &[&str], env: &[(&str, &str)]) -> Env {
        let (ours, theirs) = pair(SETUP);
        let netns = Netns::new();
        for device in DEVICES {
            // What qemu's taps are: tap devices (and a kernel may lack the dummy driver).
            netns.ip(&["tuntap", "add", "dev", device, "mode", "tap"]);
        }
        let bus = Bus::start();
        let extra = [&["--no-wait"], extra].concat();
        let relay = spawn_relay(&ours, &bus, &netns, &extra, env);
        let stack = Stack::attach(ours, bus, relay, WAIT).await;
        Env {
            stack,
            theirs,
            netns,
        }
    }

    fn ours(&self) -> &Ovsdb {
        &self.stack.db
    }

    async fn openqa(&self) -> OpenQa {
        OpenQa::new(&self.stack.sub.conn).await
    }

    fn port(&self, port: &str, column: &str) -> String {
        self.ours().vsctl(&["get", "port", port, column])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_vlan_and_unset_vlan_do_what_the_script_does() {
    let env = Env::start(&[], &[]).await;
    let openqa = env.openqa().await;
    assert!(!link_up(&env.netns, "tap0"));

    assert_eq!(openqa.set_vlan("tap0", 5).await, (0, String::new()));
    assert_eq!(env.port("tap0", "tag"), "5");
    assert_eq!(env.port("tap0", "vlan_mode"), "dot1q-tunnel");
    assert!(link_up(&env.netns, "tap0"), "set_vlan brings the tap up");
    // In the audit trail, like every write.
    let audited = crate::common::wait_until(WAIT, || {
        env.stack
            .relay
            .log()
            .contains("org.opensuse.os_autoinst.switch.set_vlan(\"tap0\", uint32 5): ok")
    });
    assert!(audited, "{}", env.stack.relay.log());
    // A port in another mode and VLAN is moved over.
    assert_eq!(openqa.set_vlan("tap1", 8).await, (0, String::new()));
    assert_eq!(env.port("tap1", "tag"), "8");
    // What os-autoinst-openvswitch runs for set_vlan (Open vSwitch >= 2.8.1).
    for args in [
        ["set", "port", "tap0", "tag=5", "vlan_mode=dot1q-tunnel"],
        ["set", "port", "tap1", "tag=8", "vlan_mode=dot1q-tunnel"],
    ] {
        env.theirs.vsctl(&args);
    }
    assert_same(env.ours(), &env.theirs);

    // unset_vlan removes the tag if it is that VLAN, and only the tag; another VLAN, or
    // no tag at all, is success with nothing removed.
    assert_eq!(openqa.unset_vlan("tap0", 5).await, (0, String::new()));
    assert_eq!(env.port("tap0", "tag"), "[]");
    assert_eq!(env.port("tap0", "vlan_mode"), "dot1q-tunnel");
    assert_eq!(openqa.unset_vlan("tap1", 9).await, (0, String::new()));
    assert_eq!(env.port("tap1", "tag"), "8");
    assert_eq!(openqa.unset_vlan("tap2", 5).await, (0, String::new()));
    for args in [
        ["remove", "port", "tap0", "tag", "5"],
        ["remove", "port", "tap1", "tag", "9"],
        ["remove", "port", "tap2", "tag", "5"],
    ] {
        env.theirs.vsctl(&args);
    }
    assert_same(env.ours(), &env.theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_answer_the_originals_codes_and_messages() {
    let env = Env::start(&[], &[]).await;
    let openqa = env.openqa().await;
    let before = snapshot(env.ours());

    // Names outside ^tap[0-9]+$ (eth0 and tap0x exist on br0).
    for tap in ["eth0", "tap0x", "tap", "br0", "TAP0", " tap0"] {
        let expected = (1, format!("'{tap}' does not fit the naming scheme"));
        assert_eq!(openqa.set_vlan(tap, 5).await, expected);
        assert_eq!(openqa.unset_vlan(tap, 5).await, expected);
    }
    // A tap on another bridge, and one that does not exist: `port-to-br` names no br0.
    for tap in ["tap7", "tap9"] {
        let expected = (1, format!("'{tap}' is not connected to bridge 'br0'"));
        assert_eq!(openqa.set_vlan(tap, 5).await, expected);
        assert_eq!(openqa.unset_vlan(tap, 5).await, expected);
    }
    // A VLAN the schema cannot hold: ovs-vsctl's status and message, as the original
    // passes them on.
    assert_eq!(
        openqa.set_vlan("tap0", 4096).await,
        vsctl_answer(
            &env.theirs,
            &["set", "port", "tap0", "tag=4096", "vlan_mode=dot1q-tunnel"]
        )
    );
    assert_eq!(
        openqa.unset_vlan("tap0", 4096).await,
        vsctl_answer(&env.theirs, &["remove", "port", "tap0", "tag", "4096"])
    );
    assert_unchanged(env.ours(), &before, "refused openQA calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_without_a_device_fails_as_ip_link_does() {
    let env = Env::start(&[], &[]).await;
    let openqa = env.openqa().await;
    // The original's `ovs-vsctl set` succeeds, then `ip link set tap3 up` fails.
    assert_eq!(
        openqa.set_vlan("tap3", 5).await,
        (
            256,
            "Failed to set tap3 up: Cannot find device \"tap3\"\n".into()
        )
    );
    env.theirs
        .vsctl(&["set", "port", "tap3", "tag=5", "vlan_mode=dot1q-tunnel"]);
    assert_same(env.ours(), &env.theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_is_exactly_ovs_vsctl_show() {
    let env = Env::start(&[], &[]).await;
    let db = env.ours();
    // Everything ovs-vsctl show prints: managers, controllers, fail_mode, VLANs, trunks,
    // options, errors, BFD status, and names that need quoting.
    db.vsctl(&["set-manager", "ptcp:6640:127.0.0.1", "punix:/tmp/none.sock"]);
    db.vsctl(&["set-controller", "br0", "tcp:127.0.0.1:6653", "ptcp:6654"]);
    let controller = db.vsctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "controller",
        "target=\"tcp:127.0.0.1:6653\"",
    ]);
    db.vsctl(&["set", "controller", &controller, "is_connected=true"]);
    db.vsctl(&["set", "bridge", "br0", "fail_mode=secure"]);
    db.vsctl(&["set", "port", "tap2", "trunks=1,2,3"]);
    db.vsctl(&[
        "set",
        "interface",
        "tap0",
        "type=internal",
        "options:peer=x y",
        "options:a=1",
    ]);
    db.vsctl(&[
        "set",
        "interface",
        "tap1",
        "error=\"could not open network device tap1\"",
    ]);
    db.vsctl(&[
        "set",
        "interface",
        "tap2",
        "bfd_status:state=up",
        "bfd_status:forwarding=true",
    ]);
    db.vsctl(&["add-port", "br1", "p 1"]);
    let openqa = env.openqa().await;
    assert_eq!(openqa.set_vlan("tap0", 5).await, (0, String::new()));

    let out = db.vsctl_output(&["show"]);
    let theirs = text(&out.stdout);
    assert!(
        theirs.contains("Manager") && theirs.contains("Controller"),
        "{theirs}"
    );
    let (rc, ours) = openqa.show().await;
    assert_eq!(rc, 0, "{ours}");
    assert_eq!(ours, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_comes_from_the_flag_then_os_autoinst_use_bridge() {
    for (extra, env) in [
        (&["--openqa-bridge", "br1"][..], &[][..]),
        (&[][..], &[("OS_AUTOINST_USE_BRIDGE", "br1")][..]),
        (
            &["--openqa-bridge", "br1"][..],
            &[("OS_AUTOINST_USE_BRIDGE", "br0")][..],
        ),
    ] {
        let env = Env::start(extra, env).await;
        let openqa = env.openqa().await;
        assert_eq!(openqa.set_vlan("tap7", 12).await, (0, String::new()));
        assert_eq!(env.port("tap7", "tag"), "12");
        assert_eq!(
            openqa.set_vlan("tap0", 12).await,
            (1, "'tap0' is not connected to bridge 'br1'".into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openqa_connection_serves_only_switch() {
    let env = Env::start(&[], &[]).await;
    let conn = &env.stack.sub.conn;
    // Switch1 through the openQA name reaches a connection that has no such object.
    let sneaky = Proxy::new(
        conn,
        OPENQA_NAME,
        "/org/ovsdbus/Relay1",
        "org.ovsdbus.Switch1",
    )
    .await
    .unwrap();
    let result: zbus::Result<()> = sneaky.call("SetVlan", &("tap0", 5u32)).await;
    let (name, text) = error_of(result);
    assert_eq!(name, "org.freedesktop.DBus.Error.UnknownObject", "{text}");
    assert_eq!(env.port("tap0", "tag"), "[]");
    // ... and the relay's name has no `/switch`.
    let relay = Proxy::new(conn, "org.ovsdbus.Relay1", OPENQA_PATH, OPENQA_NAME)
        .await
        .unwrap();
    let result: zbus::Result<(i32, String)> = relay.call("set_vlan", &("tap0", 5u32)).await;
    let (name, text) = error_of(result);
    assert_eq!(name, "org.freedesktop.DBus.Error.UnknownObject", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_is_only_owned_with_the_option() {
    let stack = Stack::start(&[]).await;
    let dbus = zbus::fdo::DBusProxy::new(&stack.sub.conn)
        .await
        .expect("dbus");
    let owned = dbus
        .name_has_owner(OPENQA_NAME.try_into().unwrap())
        .await
        .expect("NameHasOwner");
    assert!(!owned, "{OPENQA_NAME} is owned without --openqa-compat");
}

// ---------------------------------------------------------------------------------------
// With ovs-vswitchd: OpenFlow rules, restarts, a Perl client
// ---------------------------------------------------------------------------------------

/// ovs-vswitchd and the relay in one network namespace, `br0` (netdev) with the address
/// os-autoinst-openvswitch expects, and the internal ports `tap3` and `tap4`.
struct Switched {
    stack: Stack,
    vswitchd: Option<Vswitchd>,
    netns: Netns,
}

impl Switched {
    async fn start() -> Switched {
        let db = Ovsdb::start();
        let netns = Netns::new();
        let vswitchd = Vswitchd::start_in(&db, &netns);
        db.vsctl(&netdev_bridge("br0"));
        for tap in ["tap3", "tap4"] {
            db.vsctl(&crate::common::internal_port("br0", tap));
        }
        let switched_br0 = || netns_has(&netns, "br0");
        assert!(
            crate::common::wait_until(WAIT, switched_br0),
            "ovs-vswitchd made no br0:\n{}",
            vswitchd.log()
        );
        netns.ip(&["addr", "add", "10.0.2.2/15", "dev", "br0"]);
        let bus = Bus::start();
        let relay = spawn_relay(&db, &bus, &netns, &[], &[]);
        let stack = Stack::attach(db, bus, relay, WAIT).await;
        Switched {
            stack,
            vswitchd: Some(vswitchd),
            netns,
        }
    }

    fn db(&self) -> &Ovsdb {
        &self.stack.db
    }

    fn restart_vswitchd(&mut self) {
        drop(self.vswitchd.take());
        self.vswitchd = Some(Vswitchd::start_in(self.db(), &self.netns));
    }

    /// `ovs-ofctl ARGS` for the test's switch.
    fn ofctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(require("ovs-ofctl", "openvswitch-common"));
        cmd.args(args).envs(ovs_env(self.db().dir()));
        expect_success(
            &run_bounded(&mut cmd, COMMAND_TIMEOUT),
            format!("ovs-ofctl {args:?}"),
        )
    }

    /// A bridge's flows without statistics, as a set.
    fn flows(&self, bridge: &str) -> BTreeSet<String> {
        self.ofctl(&["--no-stats", "dump-flows", bridge])
            .lines()
            .filter(|l| !l.starts_with("NXST_FLOW") && !l.starts_with("OFPST_FLOW"))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    fn mac(&self, device: &str) -> String {
        let line = self.netns.ip(&["-o", "link", "show", device]);
        line.split_once("link/ether ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no MAC in {line:?}"))
            .to_owned()
    }

    /// What os-autoinst-openvswitch installs on br0 (its rules, with its defaults, for
    /// br0's current MAC), put on the scratch bridge `br9` by `ovs-ofctl add-flow` one at
    /// a time as the original does, and read back in ovs-ofctl's normal form.
    fn original_rules(&self) -> BTreeSet<String> {
        let mac = self.mac("br0");
        let br9 = self.db().vsctl_output(&["br-exists", "br9"]);
        if !br9.status.success() {
            self.db().vsctl(&netdev_bridge("br9"));
        }
        // Until the switch (perhaps just restarted) serves br9.
        let serves = || {
            let mut cmd = Command::new(require("ovs-ofctl", "openvswitch-common"));
            cmd.args(["del-flows", "br9"])
                .envs(ovs_env(self.db().dir()));
            run_bounded(&mut cmd, COMMAND_TIMEOUT).status.success()
        };
        assert!(
            crate::common::wait_until(WAIT, serves),
            "ovs-vswitchd does not serve br9"
        );
        // fec0:0000:0000:0001:0000:0000:0000:0000 without colons, as the original writes it.
        let ipv6 = "fec00000000000010000000000000000";
        let rules = [
            "table=0,priority=0,action=normal".to_owned(),
            "table=0,priority=1,in_port=LOCAL,actions=resubmit(,1)".to_owned(),
            "table=0,priority=100,dl_type=0x0806,nw_dst=10.0.2.2,actions=learn(table=1,priority=100,in_port=LOCAL,dl_type=0x0806,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],output:NXM_OF_IN_PORT[]),load:0x0a010000->NXM_OF_ARP_SPA[],move:NXM_OF_ETH_SRC[0..15]->NXM_OF_ARP_SPA[0..15],local".to_owned(),
            format!("table=0,priority=100,dl_type=0x0800,tcp_flags=+syn-ack,dl_dst={mac},actions=learn(table=1,priority=100,in_port=LOCAL,dl_type=0x0800,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_OF_IP_SRC[]->NXM_OF_IP_DST[],output:NXM_OF_IN_PORT[]),mod_nw_src:10.1.0.0,move:NXM_OF_ETH_SRC[0..15]->NXM_OF_IP_SRC[0..15],local"),
            format!("table=0,priority=99,dl_type=0x0800,dl_dst={mac},actions=mod_nw_src:10.1.0.0,move:NXM_OF_ETH_SRC[0..15]->NXM_OF_IP_SRC[0..15],local"),
            format!("table=0,priority=100,eth_type=0x86dd,ip_proto=58,icmpv6_type=135,icmpv6_code=0,nd_target=fec0::2,actions=learn(table=1,priority=100,in_port=LOCAL,eth_type=0x86dd,ip_proto=58,icmpv6_type=136,icmpv6_code=0,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],output:NXM_OF_IN_PORT[]),load:0x{ipv6}->NXM_NX_IPV6_SRC[],move:NXM_OF_ETH_SRC[0..47]->NXM_NX_IPV6_SRC[0..47],local"),
            format!("table=0,priority=100,dl_type=0x86dd,tcp_flags=+syn-ack,dl_dst={mac},actions=learn(table=1,priority=100,in_port=LOCAL,dl_type=0x86dd,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],output:NXM_OF_IN_PORT[]),load:0x{ipv6}->NXM_NX_IPV6_SRC[],move:NXM_OF_ETH_SRC[0..47]->NXM_NX_IPV6_SRC[0..47],local"),
            format!("table=0,priority=99,dl_type=0x86dd,dl_dst={mac},actions=load:0x{ipv6}->NXM_NX_IPV6_SRC[],move:NXM_OF_ETH_SRC[0..47]->NXM_NX_IPV6_SRC[0..47],local"),
        ];
        for rule in &rules {
            self.ofctl(&["add-flow", "br9", rule]);
        }
        self.flows("br9")
    }

    /// Waits until br0 carries exactly the original's rules.
    fn assert_rules_installed(&self, when: &str) {
        let expected = self.original_rules();
        assert_eq!(expected.len(), 8, "{expected:#?}");
        let seen = poll_until(WAIT, Duration::from_millis(50), || {
            let flows = self.flows("br0");
            if flows == expected {
                Ok(flows)
            } else {
                Err(flows)
            }
        });
        if let Err(flows) = seen {
            panic!(
                "{when}: br0's flows are not the original's rules:\n{flows:#?}\nexpected:\n{expected:#?}\n{}",
                self.stack.relay.log()
            );
        }
    }
}

fn netns_has(netns: &Netns, device: &str) -> bool {
    let mut cmd = netns.enter();
    cmd.arg(require("ip", "iproute2"))
        .args(["link", "show", device]);
    run_bounded(&mut cmd, COMMAND_TIMEOUT).status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_openflow_rules_are_kept_installed() {
    let mut env = Switched::start().await;
    env.assert_rules_installed("at start-up");

    // ovs-vswitchd restarts: its rules are gone with it, the relay installs them again.
    env.restart_vswitchd();
    env.assert_rules_installed("after ovs-vswitchd restarted");
    // Writes wait for the new switch again.
    let switch = Switch1Proxy::new(&env.stack.sub.conn).await.unwrap();
    switch
        .set_vlan("tap4", 7)
        .await
        .expect("SetVlan after the restart");
    assert_eq!(env.db().vsctl(&["get", "port", "tap4", "tag"]), "7");

    // The bridge is deleted and created again (with a new device and MAC).
    env.db().vsctl(&["del-br", "br0"]);
    env.db().vsctl(&netdev_bridge("br0"));
    assert!(
        crate::common::wait_until(WAIT, || netns_has(&env.netns, "br0")),
        "br0 was not created again"
    );
    env.assert_rules_installed("after br0 was re-created");
}

/// os-autoinst's qemu backend, as it calls the service (`_dbus_do_call` and `_dbus_call`
/// in backend/qemu.pm): a private system-bus connection per call, `get_service`,
/// `get_object('/switch', …)`, the method, disconnect; the message chomped. One JSON line
/// per call.
const QEMU_PM_CLIENT: &str = r#"
use strict;
use warnings;
use Net::DBus;
use JSON::PP;

sub _dbus_do_call {
    my ($fn, @args) = @_;
    my $bus = Net::DBus->system(private => 1);
    my $bus_service = $bus->get_service('org.opensuse.os_autoinst.switch');
    my $bus_object = $bus_service->get_object('/switch', 'org.opensuse.os_autoinst.switch');
    my @result = $bus_object->$fn(@args);
    $bus->get_connection->disconnect;
    return @result;
}

for my $call (@ARGV) {
    my ($fn, @args) = split / /, $call;
    my ($rt, $message) = _dbus_do_call($fn, @args);
    chomp $message;
    print JSON::PP->new->canonical->encode({fn => $fn, rt => $rt, message => $message}), "\n";
}
"#;

/// Runs [`QEMU_PM_CLIENT`] with `calls` ("set_vlan tap3 10") against `bus`.
fn qemu_pm(bus: &Bus, calls: &[&str]) -> Vec<(i64, String)> {
    let mut cmd = Command::new(require("perl", "perl"));
    cmd.arg("-e")
        .arg(QEMU_PM_CLIENT)
        .args(calls)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address());
    let out = run_bounded(&mut cmd, COMMAND_TIMEOUT);
    let stdout = expect_success(&out, "the Perl Net::DBus client (libnet-dbus-perl)");
    stdout
        .lines()
        .map(|line| {
            let answer: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            (
                answer["rt"].as_i64().unwrap(),
                answer["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_written_like_qemu_pm_works_unchanged() {
    let env = Switched::start().await;
    let db = env.db();
    let answers = qemu_pm(
        &env.stack.bus,
        &["set_vlan tap3 10", "set_vlan tap4 11", "show"],
    );
    assert_eq!(answers[0], (0, String::new()));
    assert_eq!(answers[1], (0, String::new()));
    for (tap, tag) in [("tap3", "10"), ("tap4", "11")] {
        assert_eq!(db.vsctl(&["get", "port", tap, "tag"]), tag);
        assert_eq!(db.vsctl(&["get", "port", tap, "vlan_mode"]), "dot1q-tunnel");
        assert!(link_up(&env.netns, tap), "{tap} is not up");
    }
    let theirs = text(&db.vsctl_output(&["show"]).stdout);
    assert_eq!(answers[2], (0, theirs.trim_end_matches('\n').to_owned()));

    let answers = qemu_pm(
        &env.stack.bus,
        &[
            "unset_vlan tap3 10",
            "set_vlan tap9 12",
            "set_vlan tap4 5000",
        ],
    );
    assert_eq!(answers[0], (0, String::new()));
    assert_eq!(db.vsctl(&["get", "port", "tap3", "tag"]), "[]");
    assert_eq!(
        answers[1],
        (1, "'tap9' is not connected to bridge 'br0'".into())
    );
    assert_eq!(answers[2].0, 256, "{:?}", answers[2]);
    assert!(
        answers[2].1.contains("5000 is not in the valid range"),
        "{:?}",
        answers[2]
    );
}
