//! What os-autoinst-openvswitch does besides answering D-Bus calls (those are in
//! [`crate::bus::openqa`]): its OpenFlow rules on the bridge, kept installed across
//! ovs-vswitchd restarts; bringing tap links up; its `ovs-vsctl show` text.

pub mod flows;
pub mod keeper;
pub mod netlink;
pub mod show;
