//! Turns for the expensive replies — those that walk the whole replica and can be tens of
//! megabytes (`GetManagedObjects`, `Show`): one per caller at a time, a few in all, and
//! none while the bus still holds too much of what the relay sent.
//!
//! The last rule is what keeps a client that does not read from stalling everyone:
//! dbus-daemon counts a message against its *sender's* incoming quota until every
//! recipient has read it, and stops reading from a sender whose quota is full. Replies
//! piling up for a client that never reads would fill the relay's quota, and then no
//! signal would leave the relay at all. So before a whole-switch reply is built the relay
//! asks the daemon (`org.freedesktop.DBus.Debug.Stats.GetConnectionStats`) how much of its
//! output is still undelivered, and how much the caller has not read yet.

use super::error::MethodError;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use zbus::Connection;
use zbus::OwnedVariant;

/// What the bus may still hold of the relay's messages when a whole-switch reply starts:
/// a quarter of dbus-daemon's system-bus `max_incoming_bytes` (127 MiB). Two replies in
/// the making, each at most the system bus's 32 MiB message limit, still leave room for
/// signals.
const RELAY_BACKLOG_BUDGET: u64 = 32 << 20;
/// What a caller may leave unread before it gets another whole-switch reply: less than a
/// reply, more than the signals a subscriber has queued in a burst.
const CALLER_BACKLOG_BUDGET: u64 = 1 << 20;
// dbus-daemon's system-bus defaults: max_incoming_bytes 127 MiB, max_message_size 32 MiB.
// Two replies in the making on top of the budget must still fit.
const _: () = assert!(RELAY_BACKLOG_BUDGET + 2 * (32 << 20) < 127 << 20);
const _: () = assert!(CALLER_BACKLOG_BUDGET < RELAY_BACKLOG_BUDGET);
/// How long a call waits for its turn — other callers' replies being built, the bus
/// draining — before it is `LimitsExceeded`: below the 25 s D-Bus clients wait by default.
const TURN_WAIT: Duration = Duration::from_secs(15);
/// How long a caller's own unread replies may take to drain: one that reads is done in
/// milliseconds.
const CALLER_WAIT: Duration = Duration::from_secs(2);
/// How often the daemon is asked again while waiting for a backlog to drain.
const BACKLOG_POLL: Duration = Duration::from_millis(50);

pub struct Expensive {
    /// Replies in the making at once, over all callers.
    all: Semaphore,
    /// The callers with one in the making (or waiting for a turn).
    callers: Mutex<HashSet<String>>,
    /// The daemon answers `GetConnectionStats` (dbus-daemon built with stats, a policy
    /// that lets the relay call it); cleared at the first refusal, after which only the
    /// counts apply.
    stats: AtomicBool,
}

/// A caller's turn; dropping it (the reply sent, or the call abandoned) frees it.
pub struct Turn<'a> {
    _permit: SemaphorePermit<'a>,
    _caller: CallerSlot<'a>,
}

struct CallerSlot<'a> {
    owner: &'a Expensive,
    caller: String,
}

impl Drop for CallerSlot<'_> {
    fn drop(&mut self) {
        // Critical section: one set removal.
        self.owner.lock().remove(&self.caller);
    }
}

/// Whose backlog is measured, and how much of it is too much.
struct Backlog<'a> {
    /// The unique name whose undelivered bytes count.
    of: &'a str,
    /// `IncomingBytes` (what the daemon still holds of its messages) or `OutgoingBytes`
    /// (what is queued for it to read).
    counter: &'static str,
    budget: u64,
    deadline: Instant,
}

impl Expensive {
    pub fn new(at_once: usize) -> Self {
        Self {
            all: Semaphore::new(at_once),
            callers: Mutex::default(),
            stats: AtomicBool::new(true),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.callers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a turn: `LimitsExceeded` at once when `caller` already has one, and after
    /// a bounded wait when other replies take all the turns, the caller has not read its
    /// earlier replies, or the bus still holds too much of the relay's output.
    pub async fn turn(
        &self,
        conn: &Connection,
        caller: &str,
        what: &str,
    ) -> Result<Turn<'_>, MethodError> {
        let start = Instant::now();
        let slot = self.slot(caller, what)?;
        // The caller's own backlog first: a client that does not read must not hold one of
        // the few permits while it is found out.
        if !caller.is_empty() {
            let unread = Backlog {
                of: caller,
                counter: "OutgoingBytes",
                budget: CALLER_BACKLOG_BUDGET,
                deadline: start + CALLER_WAIT,
            };
            self.drained(conn, unread).await.map_err(|bytes| {
                MethodError::LimitsExceeded(format!(
                    "{caller} has not read {bytes} bytes of earlier messages from the relay: \
                     read them before asking for a {what}"
                ))
            })?;
        }
        let permit = self.permit(what, start + TURN_WAIT).await?;
        if let Some(relay) = conn.unique_name() {
            let undelivered = Backlog {
                of: relay.as_str(),
                counter: "IncomingBytes",
                budget: RELAY_BACKLOG_BUDGET,
                deadline: start + TURN_WAIT,
            };
            self.drained(conn, undelivered).await.map_err(|bytes| {
                MethodError::LimitsExceeded(format!(
                    "the bus still holds {bytes} bytes of the relay's messages for clients \
                     that read slowly: ask for the {what} again"
                ))
            })?;
        }
        Ok(Turn {
            _permit: permit,
            _caller: slot,
        })
    }

    /// The caller's one slot; `LimitsExceeded` when it is taken.
    fn slot(&self, caller: &str, what: &str) -> Result<CallerSlot<'_>, MethodError> {
        if !self.lock().insert(caller.to_owned()) {
            return Err(MethodError::LimitsExceeded(format!(
                "{caller} already has a {what} or another whole-switch reply in progress: \
                 wait for its answer"
            )));
        }
        Ok(CallerSlot {
            owner: self,
            caller: caller.to_owned(),
        })
    }

    /// One of the few permits, by `deadline`.
    async fn permit(
        &self,
        what: &str,
        deadline: Instant,
    ) -> Result<SemaphorePermit<'_>, MethodError> {
        let permit = tokio::time::timeout_at(deadline, self.all.acquire()).await;
        let permit = permit.map_err(|_| {
            MethodError::LimitsExceeded(format!(
                "the relay is busy with other whole-switch replies: ask for the {what} again"
            ))
        })?;
        Ok(permit.expect("the semaphore is never closed"))
    }

    /// Waits until the daemon reports `backlog.of`'s backlog within its budget; `Err` with
    /// the last reading at the deadline. `Ok` at once when the daemon has no statistics.
    async fn drained(&self, conn: &Connection, backlog: Backlog<'_>) -> Result<(), u64> {
        loop {
            let Some(bytes) = self.reading(conn, &backlog).await else {
                return Ok(());
            };
            if bytes <= backlog.budget {
                return Ok(());
            }
            if Instant::now() + BACKLOG_POLL > backlog.deadline {
                tracing::debug!(of = backlog.of, bytes, "backlog over budget");
                return Err(bytes);
            }
            tokio::time::sleep(BACKLOG_POLL).await;
        }
    }

    /// One reading of a backlog counter; `None` when the daemon gives none.
    async fn reading(&self, conn: &Connection, backlog: &Backlog<'_>) -> Option<u64> {
        if !self.stats.load(Ordering::Relaxed) {
            return None;
        }
        let reply = conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus.Debug.Stats"),
                "GetConnectionStats",
                &backlog.of,
            )
            .await;
        let stats = reply.and_then(|reply| {
            reply
                .body()
                .deserialize::<std::collections::HashMap<String, OwnedVariant>>()
        });
        match stats {
            Ok(stats) => stats
                .get(backlog.counter)
                .and_then(|value| u32::try_from(value).ok())
                .map(u64::from),
            // The name left meanwhile: nothing of its is queued any more.
            Err(zbus::Error::FDO(fdo)) if matches!(*fdo, zbus::fdo::Error::NameHasNoOwner(_)) => {
                Some(0)
            }
            // dbus-broker, a daemon built without stats, or a policy without the shipped
            // rule: whole-switch replies are then limited by counts alone.
            Err(zbus::Error::FDO(fdo))
                if matches!(
                    *fdo,
                    zbus::fdo::Error::UnknownMethod(_)
                        | zbus::fdo::Error::UnknownInterface(_)
                        | zbus::fdo::Error::AccessDenied(_)
                ) =>
            {
                self.stats.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "the bus gives no connection statistics ({fdo}): whole-switch replies \
                     are limited per caller and in number, not by what clients leave unread"
                );
                None
            }
            // A bus going away or restarting: this reply goes without the check.
            Err(e) => {
                tracing::debug!("no connection statistics this time: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_turn_per_caller_and_a_few_in_all() {
        let limits = Expensive::new(1);
        let soon = || Instant::now() + TURN_WAIT;
        let first = (
            limits.slot(":1.1", "Show").unwrap(),
            limits.permit("Show", soon()).await,
        );
        assert!(matches!(
            limits.slot(":1.1", "Show"),
            Err(MethodError::LimitsExceeded(_))
        ));
        // Another caller has a slot of its own, and waits for the one permit, not for ever.
        let other = limits.slot(":1.2", "Show").unwrap();
        let refused = limits.permit("Show", soon()).await;
        assert!(matches!(refused, Err(MethodError::LimitsExceeded(_))));
        let waiting = limits.permit("Show", soon());
        tokio::pin!(waiting);
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        drop(first);
        assert!(waiting.await.is_ok());
        drop(other);
        // The first caller's slot is free again.
        assert!(limits.slot(":1.1", "Show").is_ok());
    }

    /// Polls a future once: `Some` if it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
