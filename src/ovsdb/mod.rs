//! OVSDB client side: stream framing, JSON-RPC, protocol types and the monitor session.

pub mod codec;
pub mod datum;
pub mod schema;
