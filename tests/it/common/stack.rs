//! The whole stack most end-to-end tests start from: an `ovsdb-server`, a private bus, the
//! relay on both, and a test subscriber that has seen the relay become ready.

use std::time::Duration;

use super::signals::Subscriber;
use super::{Bus, Ovsdb, Relay};

/// How long [`Stack::start`] waits for the relay to report `State` = `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Every part is torn down by its own `Drop`, in the order of the fields: the subscriber,
/// the relay (SIGTERM while its bus and server still run), the bus, the server.
///
/// Keep the whole `Stack` and borrow its fields (`let (db, sub) = (&stack.db,
/// &stack.sub);`), or bind every field when destructuring it: a pattern with `..`
/// (`let Stack { db, .. } = …`) drops the fields it leaves out at the end of the `let`,
/// which stops the relay and kills the bus. Name an unused field `bus: _bus`, not `bus: _`.
pub struct Stack {
    pub sub: Subscriber,
    pub relay: Relay,
    pub bus: Bus,
    pub db: Ovsdb,
}

impl Stack {
    /// A fresh `ovsdb-server` and bus, the relay (`run` with `extra_relay_args`) on them,
    /// and a subscriber once the relay is ready.
    pub async fn start(extra_relay_args: &[&str]) -> Stack {
        Stack::start_on(Ovsdb::start(), extra_relay_args, READY_TIMEOUT).await
    }

    /// Like [`Stack::start`] on a server the test has prepared, waiting up to `ready`.
    pub async fn start_on(db: Ovsdb, extra_relay_args: &[&str], ready: Duration) -> Stack {
        let bus = Bus::start();
        let relay = Relay::spawn(&db.remote(), &bus.address(), extra_relay_args);
        Stack::attach(db, bus, relay, ready).await
    }

    /// Completes a stack whose relay the test has spawned itself (other flags, another
    /// remote of `db`): connects the subscriber and waits up to `ready` for `ready`.
    pub async fn attach(db: Ovsdb, bus: Bus, relay: Relay, ready: Duration) -> Stack {
        let sub = Subscriber::connect(&bus.address()).await;
        sub.wait_ready(ready).await;
        Stack {
            sub,
            relay,
            bus,
            db,
        }
    }
}
