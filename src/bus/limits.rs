//! Turns for the expensive replies — those that walk the whole replica and can be tens of
//! megabytes (`GetManagedObjects`, `Show`): one per caller at a time, and a few in all.
//! Without them one unprivileged client could ask for hundreds at once and grow the
//! relay's memory by gigabytes while the bus carries the answers.

use super::error::MethodError;
use std::collections::HashSet;
use std::sync::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

pub struct Expensive {
    /// Replies in the making at once, over all callers.
    all: Semaphore,
    /// The callers with one in the making (or waiting for a turn).
    callers: Mutex<HashSet<String>>,
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

impl Expensive {
    pub fn new(at_once: usize) -> Self {
        Self {
            all: Semaphore::new(at_once),
            callers: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.callers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a turn; `LimitsExceeded` at once when `caller` already has one.
    pub async fn turn(&self, caller: &str, what: &str) -> Result<Turn<'_>, MethodError> {
        if !self.lock().insert(caller.to_owned()) {
            return Err(MethodError::LimitsExceeded(format!(
                "{caller} already has a {what} or another whole-switch reply in progress: \
                 wait for its answer"
            )));
        }
        let slot = CallerSlot {
            owner: self,
            caller: caller.to_owned(),
        };
        let permit = self
            .all
            .acquire()
            .await
            .expect("the semaphore is never closed");
        Ok(Turn {
            _permit: permit,
            _caller: slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_turn_per_caller_and_a_few_in_all() {
        let limits = Expensive::new(1);
        let first = limits.turn(":1.1", "Show").await.unwrap();
        let again = limits.turn(":1.1", "Show").await;
        assert!(matches!(again, Err(MethodError::LimitsExceeded(_))));
        // Another caller waits for the one permit.
        let other = limits.turn(":1.2", "Show");
        tokio::pin!(other);
        assert!(futures_poll_once(other.as_mut()).await.is_none());
        drop(first);
        assert!(other.await.is_ok());
        // The first caller's slot is free again.
        assert!(limits.turn(":1.1", "Show").await.is_ok());
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
