//! Prometheus metrics (SPEC §8): the one [`Metrics`] registry the daemon updates, and its
//! text exposition. The HTTP endpoint serving it (`/metrics`, `/healthz`) is in [`http`].
//!
//! Everything here is lock-free on the update path: prometheus counters and gauges are
//! atomics, and the children the hot path touches are resolved once in [`Metrics::new`],
//! so a scrape (which reads the label maps) never contends with the publisher.

pub mod http;
mod process;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Values of the `table` label (`ovsdbus_events_total`, `ovsdbus_rows`).
pub const TABLES: [&str; 3] = ["bridge", "port", "interface"];
/// Values of the `op` label of `ovsdbus_events_total`.
pub const OPS: [&str; 3] = ["added", "changed", "removed"];
/// Values of the `kind` label of `ovsdbus_resyncs_total`.
pub const RESYNC_KINDS: [&str; 2] = ["fast", "full"];
/// Values of the `kind` label of `ovsdbus_ovsdb_protocol_errors_total`.
pub const PROTOCOL_ERROR_KINDS: [&str; 2] = ["too_large", "malformed"];
/// Values of the `kind` label of `ovsdbus_dbus_signals_total`.
pub const SIGNAL_KINDS: [&str; 3] = ["typed", "properties", "objects"];
/// Values of the `result` label of `ovsdbus_method_calls_total`.
pub const RESULTS: [&str; 2] = ["ok", "error"];

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of SPEC §8 except `process_*`, which the registry collects on scrape.
///
/// Update the public fields directly; label values must come from the constants above
/// (or, for `method_calls`, from the method list given to [`Metrics::new`]) so that no
/// series appears that was not exported at 0 from the start.
pub struct Metrics {
    registry: Registry,
    /// `ovsdbus_events_total{table, op}`: typed row signals published.
    pub events: IntCounterVec,
    /// `ovsdbus_event_latency_seconds`: OVSDB update received → typed signal written.
    pub event_latency: Histogram,
    /// `ovsdbus_ovsdb_updates_total`: `update`/`update2`/`update3` notifications received.
    pub ovsdb_updates: IntCounter,
    /// `ovsdbus_ovsdb_connected`: 1 while the OVSDB session is up and monitoring.
    pub ovsdb_connected: IntGauge,
    /// `ovsdbus_ovsdb_reconnects_total`: connections re-established after a loss.
    pub ovsdb_reconnects: IntCounter,
    /// `ovsdbus_ovsdb_protocol_errors_total{kind}`: connections dropped because the server
    /// sent a message over `--max-message-size` (`too_large`) or one that is not what the
    /// protocol allows (`malformed`). Not in SPEC §8 (docs/DEVIATIONS.md).
    pub ovsdb_protocol_errors: IntCounterVec,
    /// `ovsdbus_resyncs_total{kind}`: `fast` (monitor_cond_since resumed from the last
    /// transaction) or `full` (fresh snapshot compared with the replica).
    pub resyncs: IntCounterVec,
    /// `ovsdbus_dbus_connected`: 1 while the bus connection is up.
    pub dbus_connected: IntGauge,
    /// `ovsdbus_dbus_reconnects_total`: bus connections re-established.
    pub dbus_reconnects: IntCounter,
    /// `ovsdbus_state{state}`: 1 for the relay's current `State`, 0 for the others.
    pub state: IntGaugeVec,
    /// `ovsdbus_dbus_signals_total{kind}`: `typed` (Relay1 signals), `properties`
    /// (PropertiesChanged), `objects` (InterfacesAdded/InterfacesRemoved).
    pub dbus_signals: IntCounterVec,
    /// `ovsdbus_dbus_emit_errors_total`: signals or object updates the bus refused.
    pub dbus_emit_errors: IntCounter,
    /// `ovsdbus_rows{table}`: rows in the replica.
    pub rows: IntGaugeVec,
    /// `ovsdbus_queue_depth`: updates waiting between the session and the publisher.
    pub queue_depth: IntGauge,
    /// `ovsdbus_waiters`: `WaitFor`/`WaitForRemoval` calls pending.
    pub waiters: IntGauge,
    /// `ovsdbus_coalesced_updates_total`: OVSDB updates merged into another one's signals
    /// because the bus side was slower than OVSDB at that moment.
    pub coalesced_updates: IntCounter,
    /// `ovsdbus_method_calls_total{method, result}`: D-Bus method calls answered.
    pub method_calls: IntCounterVec,
    /// `ovsdbus_last_event_timestamp_seconds`: Unix time of the last typed row signal.
    pub last_event_timestamp: Gauge,
    /// `events` children by `[table][op]` index, so [`Metrics::observe_event`] does no
    /// hashing and takes no lock.
    event_children: [[IntCounter; 3]; 3],
}

impl Metrics {
    /// Creates the registry with every metric, and every label combination that can
    /// exist at 0 (SPEC: "every label set that can exist is exported from start").
    /// `methods` is every D-Bus method name the relay serves.
    pub fn new(methods: &[&str]) -> Arc<Self> {
        // Every input that could make this fail is a constant of this module (names,
        // label names, bucket layout), so a failure is a programming error caught by the
        // unit tests, not something a deployment can trigger.
        Arc::new(Self::build(methods).expect("static metric definitions are valid"))
    }

    fn build(methods: &[&str]) -> prometheus::Result<Self> {
        let registry = Registry::new();

        let events = IntCounterVec::new(
            Opts::new(
                "ovsdbus_events_total",
                "Typed row signals published on org.ovsdbus.Relay1, by OVSDB table and operation.",
            ),
            &["table", "op"],
        )?;
        let event_latency = Histogram::with_opts(
            HistogramOpts::new(
                "ovsdbus_event_latency_seconds",
                "Time from receiving an OVSDB update to writing its typed D-Bus signal.",
            )
            // 50 µs doubling to ~3.3 s: a local relay answers in well under a millisecond,
            // the top buckets catch a stalled bus or a huge transaction.
            .buckets(prometheus::exponential_buckets(50e-6, 2.0, 17)?),
        )?;
        let ovsdb_updates = IntCounter::new(
            "ovsdbus_ovsdb_updates_total",
            "Update notifications received from the OVSDB server.",
        )?;
        let ovsdb_connected = IntGauge::new(
            "ovsdbus_ovsdb_connected",
            "1 while the relay has a monitoring session with the OVSDB server, else 0.",
        )?;
        let ovsdb_reconnects = IntCounter::new(
            "ovsdbus_ovsdb_reconnects_total",
            "Times the OVSDB connection was re-established after being lost.",
        )?;
        let ovsdb_protocol_errors = IntCounterVec::new(
            Opts::new(
                "ovsdbus_ovsdb_protocol_errors_total",
                "OVSDB connections dropped because the server broke the protocol: too_large (a \
                 message over --max-message-size) or malformed (not JSON-RPC, or an update that \
                 does not fit the schema).",
            ),
            &["kind"],
        )?;
        let resyncs = IntCounterVec::new(
            Opts::new(
                "ovsdbus_resyncs_total",
                "Resynchronisations after a reconnect: fast (resumed from the last \
                 transaction id) or full (fresh snapshot compared with the replica).",
            ),
            &["kind"],
        )?;
        let dbus_connected = IntGauge::new(
            "ovsdbus_dbus_connected",
            "1 while the relay is connected to the message bus, else 0.",
        )?;
        let dbus_signals = IntCounterVec::new(
            Opts::new(
                "ovsdbus_dbus_signals_total",
                "D-Bus signals emitted: typed (Relay1 row and Resynced signals), properties \
                 (PropertiesChanged), objects (InterfacesAdded/InterfacesRemoved).",
            ),
            &["kind"],
        )?;
        let dbus_emit_errors = IntCounter::new(
            "ovsdbus_dbus_emit_errors_total",
            "Signals or object updates that could not be written to the bus.",
        )?;
        let rows = IntGaugeVec::new(
            Opts::new(
                "ovsdbus_rows",
                "Rows currently mirrored in the replica, by OVSDB table.",
            ),
            &["table"],
        )?;
        let queue_depth = IntGauge::new(
            "ovsdbus_queue_depth",
            "Rows with a change waiting for the publisher (merged per row while the bus is slower than OVSDB).",
        )?;
        let dbus_reconnects = IntCounter::new(
            "ovsdbus_dbus_reconnects_total",
            "Bus connections re-established after the bus daemon went away.",
        )?;
        let state = IntGaugeVec::new(
            Opts::new(
                "ovsdbus_state",
                "1 for the relay's current State (connecting, syncing, ready, reconnecting), 0 for the others.",
            ),
            &["state"],
        )?;
        for s in crate::event::State::ALL {
            state
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == crate::event::State::Connecting));
        }
        let waiters = IntGauge::new(
            "ovsdbus_waiters",
            "WaitFor and WaitForRemoval calls pending (a caller that leaves the bus takes its own with it).",
        )?;
        let coalesced_updates = IntCounter::new(
            "ovsdbus_coalesced_updates_total",
            "OVSDB updates merged into a later net difference because the bus side was slower.",
        )?;
        let method_calls = IntCounterVec::new(
            Opts::new(
                "ovsdbus_method_calls_total",
                "D-Bus method calls answered, by method and result (ok or error).",
            ),
            &["method", "result"],
        )?;
        let last_event_timestamp = Gauge::new(
            "ovsdbus_last_event_timestamp_seconds",
            "Unix time of the last typed row signal; 0 until the first one.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "ovsdbus_build_info",
                "Always 1; the version label is the relay's version.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let event_children =
            TABLES.map(|table| OPS.map(|op| events.with_label_values(&[table, op])));
        for kind in RESYNC_KINDS {
            resyncs.with_label_values(&[kind]);
        }
        for kind in PROTOCOL_ERROR_KINDS {
            ovsdb_protocol_errors.with_label_values(&[kind]);
        }
        for kind in SIGNAL_KINDS {
            dbus_signals.with_label_values(&[kind]);
        }
        for table in TABLES {
            rows.with_label_values(&[table]);
        }
        for method in methods {
            for result in RESULTS {
                method_calls.with_label_values(&[method, result]);
            }
        }

        let collectors: [Box<dyn Collector>; 20] = [
            Box::new(events.clone()),
            Box::new(event_latency.clone()),
            Box::new(ovsdb_updates.clone()),
            Box::new(ovsdb_connected.clone()),
            Box::new(ovsdb_reconnects.clone()),
            Box::new(ovsdb_protocol_errors.clone()),
            Box::new(resyncs.clone()),
            Box::new(dbus_connected.clone()),
            Box::new(dbus_reconnects.clone()),
            Box::new(state.clone()),
            Box::new(dbus_signals.clone()),
            Box::new(dbus_emit_errors.clone()),
            Box::new(rows.clone()),
            Box::new(queue_depth.clone()),
            Box::new(waiters.clone()),
            Box::new(coalesced_updates.clone()),
            Box::new(method_calls.clone()),
            Box::new(last_event_timestamp.clone()),
            Box::new(build_info),
            Box::new(process::ProcessCollector::new()?),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }

        Ok(Metrics {
            registry,
            events,
            event_latency,
            ovsdb_updates,
            ovsdb_connected,
            ovsdb_reconnects,
            ovsdb_protocol_errors,
            resyncs,
            dbus_connected,
            dbus_reconnects,
            state,
            dbus_signals,
            dbus_emit_errors,
            rows,
            queue_depth,
            waiters,
            coalesced_updates,
            method_calls,
            last_event_timestamp,
            event_children,
        })
    }

    /// The registry in text exposition format 0.0.4 ([`CONTENT_TYPE`]), `process_*`
    /// included. On an encoding error (which would mean a malformed metric family) the
    /// error is logged and the text encoded so far is returned; [`Metrics::try_encode`]
    /// reports it instead.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Like [`Metrics::encode`] but failing on an encoding error, so the endpoint can
    /// answer 500 rather than serve a truncated scrape.
    pub fn try_encode(&self) -> prometheus::Result<String> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    /// Hot-path helper for one typed row signal written to the bus: counts it in
    /// `ovsdbus_events_total{table, op}`, observes `latency` (update received → signal
    /// written) and sets `ovsdbus_last_event_timestamp_seconds` to now.
    ///
    /// `table` is `bridge`/`port`/`interface` and `op` `added`/`changed`/`removed`, ASCII
    /// case-insensitively (`Port`, `Added` work too). It does not touch
    /// `ovsdbus_dbus_signals_total`, which also counts `Resynced` and is the caller's.
    pub fn observe_event(&self, table: &str, op: &str, latency: Duration) {
        let index = |values: &[&str; 3], wanted: &str| {
            values.iter().position(|v| v.eq_ignore_ascii_case(wanted))
        };
        match (index(&TABLES, table), index(&OPS, op)) {
            (Some(t), Some(o)) => self.event_children[t][o].inc(),
            // Counting it under a new label value would create a series that did not
            // exist at start, which SPEC §8 rules out; the latency is still real.
            _ => tracing::warn!(table, op, "observe_event: unknown table or op, not counted"),
        }
        self.event_latency.observe(latency.as_secs_f64());
        self.last_event_timestamp.set(unix_now());
    }
}

fn unix_now() -> f64 {
    // A clock before 1970 only happens on a broken host; 0 reads as "never" there.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
