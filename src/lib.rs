//! ovs-dbus-relay: an Open vSwitch database replica that speaks D-Bus.
//!
//! Data flows one way: `ovsdb` (wire protocol and session) → `replica` (pure state and
//! change computation) → `engine` (the only writer: immutable versions for readers, change
//! sets merged while the bus is slower) → `bus` (one publisher task emitting signals).

pub mod bus;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod engine;
pub mod event;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod openqa;
pub mod ovsdb;
pub mod replica;
