//! ovs-dbus-relay: an Open vSwitch database replica that speaks D-Bus.
//!
//! Data flows one way: `ovsdb` (wire protocol and session) → `replica` (pure state and
//! change computation) → `bus` (one publisher task emitting signals and updating objects).

pub mod bus;
pub mod cli;
pub mod daemon;
pub mod event;
pub mod metrics;
pub mod notify;
pub mod ovsdb;
pub mod replica;
