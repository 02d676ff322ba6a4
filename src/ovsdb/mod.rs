//! OVSDB client side: stream framing, JSON-RPC, protocol types and the monitor session.

pub mod atoms;
pub mod client;
pub mod codec;
pub mod datum;
pub mod jsonrpc;
pub mod remote;
pub mod schema;
pub mod session;
pub mod tls;
pub mod txn;
