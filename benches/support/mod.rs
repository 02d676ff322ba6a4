//! Building blocks of the relay benchmark, shared by the orchestrator and by the two
//! subscriber processes it spawns of itself (`--subscriber` for the relay path over
//! D-Bus, `--monitor` for the direct OVSDB baseline).

pub mod dbus;
pub mod events;
pub mod ovsdb;
pub mod procs;
pub mod report;

use std::time::{SystemTime, UNIX_EPOCH};

/// CLOCK_REALTIME in µs. Send and receive times are taken in different processes, and
/// the realtime clock is the one they share without a handshake; it is also the clock of
/// the relay's own `meta.received_usec`.
pub fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
