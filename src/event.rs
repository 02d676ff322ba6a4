//! What the OVSDB session hands the publisher: connection states and update messages, in
//! the order they happened, through one bounded queue.

use crate::replica::layout::Layout;
use crate::replica::update::Update;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// The relay's `State` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Syncing,
    Ready,
    Reconnecting,
}

impl State {
    pub const ALL: [State; 4] = [
        Self::Connecting,
        Self::Syncing,
        Self::Ready,
        Self::Reconnecting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Syncing => "syncing",
            Self::Ready => "ready",
            Self::Reconnecting => "reconnecting",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When and how an update reached the relay.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// CLOCK_REALTIME microseconds, as `meta.received_usec`.
    pub usec: u64,
    /// The server's transaction id (`update3`, monitor_cond_since), when it gives one.
    pub txn: Option<String>,
    /// Position in the process-wide notification stream; once applied, every reply with
    /// a watermark up to it is reflected in the replica.
    pub index: u64,
}

#[derive(Debug)]
pub enum Event {
    /// The session's connection state changed; `remote` is the server in use.
    State { state: State, remote: String },
    /// A complete copy of the tables (a monitor reply without history): the replica is
    /// replaced and, except for the very first one, only the differences are published.
    Snapshot {
        layout: Arc<Layout>,
        update: Update,
        received: Received,
    },
    /// One update message, applied whole.
    Update { update: Update, received: Received },
}
