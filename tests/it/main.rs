//! The integration tests: one binary, so the suite links once. Every test starts the real
//! programs it needs (ovsdb-server, dbus-daemon, ovs-vswitchd, Prometheus, the relay) in a
//! temp dir and tears them down; `common` has the fixtures.

mod common;

mod applied;

mod cli;
mod examples;
mod failures;
mod harness_smoke;
mod introspection;
mod metrics;
mod notify;
mod objects;
mod openqa;
mod scale;
mod shipped_files;
mod signals;
mod startup;
mod switch;
mod tls;
mod txn;
