//! The line protocol between the subscriber processes and the orchestrator.
//!
//! Both subscribers, the D-Bus one (relay path) and the direct OVSDB one (baseline), print
//! the same lines through [`EventSink`] and are read back by the same [`EventLog`], so
//! every measurement treats the two paths identically:
//!
//! ```text
//! READY <usec> <rows>                  subscribed; rows = initial snapshot size (0 on D-Bus)
//! E <recv_usec> <seq> <coalesced> <member> <name>
//!                                      one row event; seq 0 where the path has none;
//!                                      coalesced: OVSDB updates merged into it, 0 = none
//! RESYNC <recv_usec> <seq>             the relay resynchronised (it lost its OVSDB stream)
//! ```
//!
//! `member` uses the relay's signal names on both paths (`PortAdded`, `BridgeChanged`, …).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub struct EventSink {
    out: BufWriter<std::io::Stdout>,
}

impl Default for EventSink {
    fn default() -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
        }
    }
}

impl EventSink {
    /// A failed write means the orchestrator is gone; the subscriber has no one left to
    /// report to, so it exits instead of measuring into the void.
    fn check(result: std::io::Result<()>) {
        if result.is_err() {
            std::process::exit(0);
        }
    }

    pub fn ready(&mut self, usec: u64, rows: usize) {
        Self::check(writeln!(self.out, "READY {usec} {rows}"));
        self.flush();
    }

    pub fn event(&mut self, recv_usec: u64, seq: u64, coalesced: u32, member: &str, name: &str) {
        // Names come from our own workload, but an empty one would shift the columns.
        let name = if name.is_empty() { "-" } else { name };
        Self::check(writeln!(
            self.out,
            "E {recv_usec} {seq} {coalesced} {member} {name}"
        ));
    }

    pub fn resync(&mut self, recv_usec: u64, seq: u64) {
        Self::check(writeln!(self.out, "RESYNC {recv_usec} {seq}"));
    }

    pub fn flush(&mut self) {
        Self::check(self.out.flush());
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub recv_usec: u64,
    pub seq: u64,
    /// OVSDB updates the relay merged into this event; 0 when it was not merged.
    pub coalesced: u32,
    pub member: String,
    pub name: String,
}

#[derive(Default)]
struct LogState {
    events: Vec<Event>,
    ready: Option<(u64, usize)>,
    resyncs: usize,
    closed: bool,
}

/// What one subscriber process reported, filled by a reader thread and waited on with
/// bounded waits.
#[derive(Clone)]
pub struct EventLog {
    label: &'static str,
    shared: Arc<(Mutex<LogState>, Condvar)>,
}

impl EventLog {
    pub fn spawn_reader(label: &'static str, stdout: impl Read + Send + 'static) -> EventLog {
        let log = EventLog {
            label,
            shared: Arc::default(),
        };
        let writer = log.clone();
        thread::spawn(move || {
            for line in BufReader::with_capacity(1 << 16, stdout).lines() {
                let Ok(line) = line else { break };
                writer.take_line(&line);
            }
            writer.lock().closed = true;
            writer.shared.1.notify_all();
        });
        log
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_line(&self, line: &str) {
        fn num<'a>(fields: &mut impl Iterator<Item = &'a str>) -> u64 {
            fields.next().and_then(|f| f.parse().ok()).unwrap_or(0)
        }
        let mut fields = line.splitn(6, ' ');
        let kind = fields.next().unwrap_or_default();
        let mut state = self.lock();
        match kind {
            "E" => {
                let (recv_usec, seq) = (num(&mut fields), num(&mut fields));
                let coalesced = u32::try_from(num(&mut fields)).unwrap_or(u32::MAX);
                let member = fields.next().unwrap_or_default().to_owned();
                let name = fields.next().unwrap_or_default().to_owned();
                state.events.push(Event {
                    recv_usec,
                    seq,
                    coalesced,
                    member,
                    name,
                });
            }
            "READY" => {
                let (usec, rows) = (num(&mut fields), num(&mut fields));
                state.ready = Some((usec, rows as usize));
            }
            "RESYNC" => state.resyncs += 1,
            _ => eprintln!(
                "bench: unexpected line from the {} subscriber: {line}",
                self.label
            ),
        }
        drop(state);
        self.shared.1.notify_all();
    }

    /// Waits until `done` holds for the state, the subscriber exits, or `timeout` passes.
    fn wait(&self, timeout: Duration, done: impl Fn(&LogState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if done(&state) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                return false;
            }
            state = self
                .shared
                .1
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn wait_ready(&self, timeout: Duration) -> Option<(u64, usize)> {
        self.wait(timeout, |s| s.ready.is_some());
        self.lock().ready
    }

    /// Waits until at least `n` events arrived in total; gives up after `timeout`, or
    /// once nothing arrived for `quiet` (a relay that resynchronised, or ovsdb-server
    /// merging the updates of a slow client, delivers fewer events than rows written,
    /// and waiting out the full timeout for them would only stretch the run).
    pub fn wait_len(&self, n: usize, quiet: Duration, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        let mut seen = state.events.len();
        let mut moved = Instant::now();
        loop {
            if state.events.len() >= n {
                return true;
            }
            let now = Instant::now();
            if state.events.len() != seen {
                (seen, moved) = (state.events.len(), now);
            }
            let until = deadline.min(moved + quiet);
            if state.closed || now >= until {
                return false;
            }
            state = self
                .shared
                .1
                .wait_timeout(state, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until nothing arrived for `quiet`, at most `timeout`.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) {
        self.wait_len(usize::MAX, quiet, timeout);
    }

    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn resyncs(&self) -> usize {
        self.lock().resyncs
    }

    /// Events from index `start` on (a phase's events, `start` taken before it began).
    pub fn since(&self, start: usize) -> Vec<Event> {
        let state = self.lock();
        state.events[start.min(state.events.len())..].to_vec()
    }

    /// Seq gaps over everything received so far: a gap is a pair of neighbours that are
    /// not consecutive (a lost or reordered signal).
    pub fn seq_gaps(&self) -> usize {
        let state = self.lock();
        let mut expected = 1;
        let mut gaps = 0;
        for event in &state.events {
            if event.seq != expected {
                gaps += 1;
            }
            expected = event.seq + 1;
        }
        gaps
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().events.last().map_or(0, |e| e.seq)
    }
}
