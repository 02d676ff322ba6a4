//! A typed client of the relay: what the CLI, the integration tests and the benchmark use
//! to talk to it, so that each of them decodes signals and follows the relay the same way.
//!
//! - [`Relay`]: the relay's read methods through a zbus proxy, with failures sorted by
//!   what a caller should do about them ([`CallError`]);
//! - [`Switch1Proxy`]: the write methods;
//! - [`Signal`]: one decoder for the typed signals and `Resynced`;
//! - [`Mirror`]: the subscriber protocol (SPEC §4): seed the tables from
//!   `GetManagedObjects`, apply signals in `seq` order, re-seed after a gap or a
//!   `Resynced`.

mod mirror;
mod relay;
mod signal;
mod switch;

pub use mirror::{Mirror, MirrorError, MirrorRow, Next};
pub use relay::{CallError, ManagedObjects, Relay};
pub use signal::{Dict, Kind, SeqTracker, Signal, What, signal_rule};
pub use switch::{Options, Switch1Proxy};
