//! The OpenFlow rules os-autoinst-openvswitch installs on its bridge, from the same
//! environment variables with the same defaults: they let multi-machine VMs, whose
//! addresses may collide across VLANs, reach the host's os-autoinst (the bridge's local
//! port). A VM's packet to the host gets its source rewritten into the rewrite range from
//! its MAC (`52:54:00:12:XX:YY` → `10.1.XX.YY`, or `fec0:0:0:1::…` for IPv6), and a
//! rule learnt on the way back undoes it. Pure: the rule text only.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The variables the original reads, and their defaults.
const LOCAL_IP: (&str, &str) = ("OS_AUTOINST_BRIDGE_LOCAL_IP", "10.0.2.2");
const NETMASK: (&str, &str) = ("OS_AUTOINST_BRIDGE_NETMASK", "15");
const REWRITE_TARGET: (&str, &str) = ("OS_AUTOINST_BRIDGE_REWRITE_TARGET", "10.1.0.0");
const LOCAL_IPV6: (&str, &str) = ("OS_AUTOINST_BRIDGE_LOCAL_IPV6", "fec0::2");

/// Where IPv6 sources are rewritten to: `fec0:0:0:1::` plus the VM's 48-bit MAC (fixed in
/// the original too).
const REWRITE_TARGET_IPV6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 1, 0, 0, 0, 0);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSettings {
    /// The bridge's own address, the one the VMs talk to.
    pub local_ip: Ipv4Addr,
    /// Its prefix length; also how many low bits of the VM's MAC go into the rewritten
    /// source (`[0..netmask]`, as the original writes it).
    pub netmask: u8,
    pub rewrite_target: Ipv4Addr,
    pub local_ipv6: Ipv6Addr,
}

impl FlowSettings {
    /// From `lookup` (the process environment in the relay): a value that is not an
    /// address, or a netmask outside 0..=32, is an error naming the variable. The original
    /// would have pasted it into a rule that ovs-ofctl then refuses.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        fn get<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            (name, default): (&str, &str),
            what: &str,
        ) -> Result<T, String> {
            let value = lookup(name).unwrap_or_else(|| default.to_owned());
            value
                .trim()
                .parse()
                .map_err(|_| format!("{name}={value:?} is not {what}"))
        }
        let settings = Self {
            local_ip: get(&lookup, LOCAL_IP, "an IPv4 address")?,
            netmask: get(&lookup, NETMASK, "a prefix length")?,
            rewrite_target: get(&lookup, REWRITE_TARGET, "an IPv4 address")?,
            local_ipv6: get(&lookup, LOCAL_IPV6, "an IPv6 address")?,
        };
        if settings.netmask > 32 {
            return Err(format!(
                "{}={} is not a prefix length (0 to 32)",
                NETMASK.0, settings.netmask
            ));
        }
        Ok(settings)
    }

    /// The address the original insists the bridge has (`ip addr show` of the bridge).
    pub fn expected_address(&self) -> String {
        format!("{}/{}", self.local_ip, self.netmask)
    }

    /// The original's eight rules, in its order, for a bridge whose local port has `mac`
    /// (lower-case `aa:bb:cc:dd:ee:ff`). One per line, as `ovs-ofctl add-flows` reads them.
    pub fn rules(&self, mac: &str) -> Vec<String> {
        let FlowSettings {
            local_ip,
            netmask: bits,
            rewrite_target,
            ..
        } = self;
        let target_hex: String = rewrite_target
            .octets()
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
        let target_hex_ipv6 = format!("{:032x}", u128::from(REWRITE_TARGET_IPV6));
        let nd_target = self.local_ipv6;
        // What the learnt reply rule does, per protocol: back to the VM's port, with the
        // original address restored.
        let learn = |matches: &str, load: &str| {
            format!(
                "learn(table=1,priority=100,in_port=LOCAL,{matches},\
                 NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:{load},output:NXM_OF_IN_PORT[])"
            )
        };
        let rewrite_ipv6 = format!(
            "load:0x{target_hex_ipv6}->NXM_NX_IPV6_SRC[],\
             move:NXM_OF_ETH_SRC[0..47]->NXM_NX_IPV6_SRC[0..47]"
        );
        let rewrite_ipv4 = format!(
            "mod_nw_src:{rewrite_target},move:NXM_OF_ETH_SRC[0..{bits}]->NXM_OF_IP_SRC[0..{bits}]"
        );
        vec![
            "table=0,priority=0,action=normal".to_owned(),
            "table=0,priority=1,in_port=LOCAL,actions=resubmit(,1)".to_owned(),
            format!(
                "table=0,priority=100,dl_type=0x0806,nw_dst={local_ip},actions={},\
                 load:0x{target_hex}->NXM_OF_ARP_SPA[],\
                 move:NXM_OF_ETH_SRC[0..{bits}]->NXM_OF_ARP_SPA[0..{bits}],local",
                learn("dl_type=0x0806", "NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]")
            ),
            format!(
                "table=0,priority=100,dl_type=0x0800,tcp_flags=+syn-ack,dl_dst={mac},actions={},\
                 {rewrite_ipv4},local",
                learn("dl_type=0x0800", "NXM_OF_IP_SRC[]->NXM_OF_IP_DST[]")
            ),
            format!("table=0,priority=99,dl_type=0x0800,dl_dst={mac},actions={rewrite_ipv4},local"),
            format!(
                "table=0,priority=100,eth_type=0x86dd,ip_proto=58,icmpv6_type=135,icmpv6_code=0,\
                 nd_target={nd_target},actions={},{rewrite_ipv6},local",
                learn(
                    "eth_type=0x86dd,ip_proto=58,icmpv6_type=136,icmpv6_code=0",
                    "NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[]"
                )
            ),
            format!(
                "table=0,priority=100,dl_type=0x86dd,tcp_flags=+syn-ack,dl_dst={mac},actions={},\
                 {rewrite_ipv6},local",
                learn("dl_type=0x86dd", "NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[]")
            ),
            format!("table=0,priority=99,dl_type=0x86dd,dl_dst={mac},actions={rewrite_ipv6},local"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<FlowSettings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        FlowSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.expected_address(), "10.0.2.2/15");
        assert_eq!(s.rewrite_target, Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(s.local_ipv6, "fec0::2".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn rules_with_the_default_settings() {
        let rules = settings(&[]).unwrap().rules("52:54:00:aa:bb:cc");
        assert_eq!(rules.len(), 8);
        // Written out as the original's Perl builds them with its defaults.
        assert_eq!(
            rules[2],
            "table=0,priority=100,dl_type=0x0806,nw_dst=10.0.2.2,actions=learn(table=1,\
             priority=100,in_port=LOCAL,dl_type=0x0806,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],\
             load:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],output:NXM_OF_IN_PORT[]),\
             load:0x0a010000->NXM_OF_ARP_SPA[],move:NXM_OF_ETH_SRC[0..15]->NXM_OF_ARP_SPA[0..15],\
             local"
        );
        assert_eq!(
            rules[4],
            "table=0,priority=99,dl_type=0x0800,dl_dst=52:54:00:aa:bb:cc,actions=\
             mod_nw_src:10.1.0.0,move:NXM_OF_ETH_SRC[0..15]->NXM_OF_IP_SRC[0..15],local"
        );
        assert_eq!(
            rules[7],
            "table=0,priority=99,dl_type=0x86dd,dl_dst=52:54:00:aa:bb:cc,actions=\
             load:0xfec00000000000010000000000000000->NXM_NX_IPV6_SRC[],\
             move:NXM_OF_ETH_SRC[0..47]->NXM_NX_IPV6_SRC[0..47],local"
        );
        assert!(rules[5].contains("nd_target=fec0::2,"), "{}", rules[5]);
    }

    #[test]
    fn settings_follow_the_variables_and_refuse_garbage() {
        let s = settings(&[
            ("OS_AUTOINST_BRIDGE_LOCAL_IP", "192.168.7.1"),
            ("OS_AUTOINST_BRIDGE_NETMASK", "16"),
            ("OS_AUTOINST_BRIDGE_REWRITE_TARGET", "192.168.128.0"),
        ])
        .unwrap();
        let rules = s.rules("02:00:00:00:00:01");
        assert!(rules[2].contains("nw_dst=192.168.7.1,"));
        assert!(rules[2].contains("load:0xc0a88000->NXM_OF_ARP_SPA[]"));
        assert!(rules[3].contains("[0..16]"));
        for (name, value) in [
            ("OS_AUTOINST_BRIDGE_LOCAL_IP", "10.0.2"),
            ("OS_AUTOINST_BRIDGE_NETMASK", "33"),
            ("OS_AUTOINST_BRIDGE_NETMASK", "/15"),
            ("OS_AUTOINST_BRIDGE_REWRITE_TARGET", "x"),
            ("OS_AUTOINST_BRIDGE_LOCAL_IPV6", "10.0.2.2"),
        ] {
            let error = settings(&[(name, value)]).unwrap_err();
            assert!(error.contains(name), "{error}");
        }
    }
}
