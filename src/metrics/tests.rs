//! Unit tests of the registry, plus the exposition checks shared with the HTTP tests.

use super::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every `ovsdbus_*` metric and its type: SPEC §8's and the relay's additions.
pub(crate) const SPEC_METRICS: [(&str, &str); 19] = [
    ("ovsdbus_events_total", "counter"),
    ("ovsdbus_event_latency_seconds", "histogram"),
    ("ovsdbus_ovsdb_updates_total", "counter"),
    ("ovsdbus_ovsdb_connected", "gauge"),
    ("ovsdbus_ovsdb_reconnects_total", "counter"),
    ("ovsdbus_ovsdb_protocol_errors_total", "counter"),
    ("ovsdbus_resyncs_total", "counter"),
    ("ovsdbus_dbus_connected", "gauge"),
    ("ovsdbus_dbus_reconnects_total", "counter"),
    ("ovsdbus_state", "gauge"),
    ("ovsdbus_dbus_signals_total", "counter"),
    ("ovsdbus_dbus_emit_errors_total", "counter"),
    ("ovsdbus_rows", "gauge"),
    ("ovsdbus_queue_depth", "gauge"),
    ("ovsdbus_waiters", "gauge"),
    ("ovsdbus_coalesced_updates_total", "counter"),
    ("ovsdbus_method_calls_total", "counter"),
    ("ovsdbus_last_event_timestamp_seconds", "gauge"),
    ("ovsdbus_build_info", "gauge"),
];

type Labels = BTreeMap<String, String>;

/// One sample line: metric name, labels, value.
pub(crate) fn parse_sample(line: &str) -> (String, Labels, f64) {
    let (series, value) = line.rsplit_once(' ').expect("sample has a value");
    let value: f64 = value.parse().expect("sample value is a number");
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_owned(), Labels::new(), value);
    };
    let body = rest.strip_suffix('}').expect("labels end with }");
    let mut labels = Labels::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label value is quoted in {line}");
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => val.push(chars.next().expect("escaped char")),
                '"' => break,
                c => val.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), val);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name.to_owned(), labels, value)
}

/// Every sample keyed `name{label="v",…}` with labels sorted by name.
pub(crate) fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (name, labels, value) = parse_sample(line);
            let key = if labels.is_empty() {
                name
            } else {
                let pairs: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                format!("{name}{{{}}}", pairs.join(","))
            };
            (key, value)
        })
        .collect()
}

fn label_sets(text: &str, metric: &str) -> BTreeSet<Labels> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(parse_sample)
        .filter(|(name, _, _)| name == metric)
        .map(|(_, labels, _)| labels)
        .collect()
}

fn set_of(combos: &[&[(&str, &str)]]) -> BTreeSet<Labels> {
    combos
        .iter()
        .map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Asserts that `text` (a fresh registry's exposition) has every SPEC §8 metric with its
/// type and a help string, exactly the label sets that can exist, all at 0, `build_info`
/// at 1, and the standard `process_*` metrics.
pub(crate) fn check_spec_exposition(text: &str, methods: &[&str]) {
    let mut types = HashMap::new();
    let mut helps = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            types.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            helps.insert(name.to_owned(), help.to_owned());
        }
    }
    for (name, kind) in SPEC_METRICS {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "# TYPE of {name} in\n{text}"
        );
        assert!(
            helps.get(name).is_some_and(|h| h.len() > 20),
            "{name} needs a meaningful help string"
        );
    }
    let ours: BTreeSet<&str> = types
        .keys()
        .map(String::as_str)
        .filter(|n| n.starts_with("ovsdbus_"))
        .collect();
    let spec: BTreeSet<&str> = SPEC_METRICS.iter().map(|(n, _)| *n).collect();
    assert_eq!(ours, spec, "exactly the SPEC §8 metrics");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(types.contains_key(name), "{name} missing");
    }

    let mut events = Vec::new();
    for table in TABLES {
        for op in OPS {
            events.push(vec![("table", table), ("op", op)]);
        }
    }
    let events: Vec<&[(&str, &str)]> = events.iter().map(Vec::as_slice).collect();
    assert_eq!(label_sets(text, "ovsdbus_events_total"), set_of(&events));
    assert_eq!(
        label_sets(text, "ovsdbus_resyncs_total"),
        set_of(&[&[("kind", "fast")], &[("kind", "full")]])
    );
    assert_eq!(
        label_sets(text, "ovsdbus_ovsdb_protocol_errors_total"),
        set_of(&[&[("kind", "too_large")], &[("kind", "malformed")]])
    );
    assert_eq!(
        label_sets(text, "ovsdbus_dbus_signals_total"),
        set_of(&[
            &[("kind", "typed")],
            &[("kind", "properties")],
            &[("kind", "objects")]
        ])
    );
    assert_eq!(
        label_sets(text, "ovsdbus_rows"),
        set_of(&[
            &[("table", "bridge")],
            &[("table", "port")],
            &[("table", "interface")]
        ])
    );
    let mut calls = Vec::new();
    for method in methods {
        for result in RESULTS {
            calls.push(vec![("method", *method), ("result", result)]);
        }
    }
    let calls: Vec<&[(&str, &str)]> = calls.iter().map(Vec::as_slice).collect();
    assert_eq!(
        label_sets(text, "ovsdbus_method_calls_total"),
        set_of(&calls)
    );
    assert_eq!(
        label_sets(text, "ovsdbus_build_info"),
        set_of(&[&[("version", env!("CARGO_PKG_VERSION"))]])
    );
    let buckets = label_sets(text, "ovsdbus_event_latency_seconds_bucket");
    assert_eq!(buckets.len(), 18, "17 buckets plus +Inf");
    assert!(buckets.iter().all(|l| l.len() == 1 && l.contains_key("le")));
    for unlabelled in [
        "ovsdbus_ovsdb_updates_total",
        "ovsdbus_ovsdb_connected",
        "ovsdbus_ovsdb_reconnects_total",
        "ovsdbus_dbus_connected",
        "ovsdbus_dbus_reconnects_total",
        "ovsdbus_dbus_emit_errors_total",
        "ovsdbus_queue_depth",
        "ovsdbus_coalesced_updates_total",
        "ovsdbus_last_event_timestamp_seconds",
        "ovsdbus_event_latency_seconds_sum",
        "ovsdbus_event_latency_seconds_count",
    ] {
        assert_eq!(label_sets(text, unlabelled), set_of(&[&[]]), "{unlabelled}");
    }

    assert_eq!(
        label_sets(text, "ovsdbus_state"),
        set_of(&[
            &[("state", "connecting")],
            &[("state", "syncing")],
            &[("state", "ready")],
            &[("state", "reconnecting")],
        ])
    );
    for line in text.lines().filter(|l| l.starts_with("ovsdbus_")) {
        let (name, labels, value) = parse_sample(line);
        let starting = labels.get("state").map(String::as_str) == Some("connecting");
        let expected = if name == "ovsdbus_build_info" || (name == "ovsdbus_state" && starting) {
            1.0
        } else {
            0.0
        };
        assert_eq!(value, expected, "fresh registry: {line}");
    }
}

#[test]
fn fresh_registry_exports_every_label_set_at_zero() {
    let methods = ["ListBridges", "ListPorts", "GetRow", "SetVlan"];
    check_spec_exposition(&Metrics::new(&methods).encode(), &methods);
}

#[test]
fn no_methods_means_no_method_series() {
    // prometheus leaves a family without children out entirely, so the method list is
    // what makes `ovsdbus_method_calls_total` exist from start.
    let text = Metrics::new(&[]).encode();
    assert!(label_sets(&text, "ovsdbus_method_calls_total").is_empty());
    assert!(!text.contains("ovsdbus_method_calls_total"));
}

#[test]
fn observe_event_counts_times_and_stamps() {
    let m = Metrics::new(&[]);
    m.observe_event("bridge", "added", Duration::from_micros(60));
    m.observe_event("Interface", "Removed", Duration::from_millis(3));
    m.observe_event("interface", "removed", Duration::from_secs(10));
    let s = samples(&m.encode());
    assert_eq!(s[r#"ovsdbus_events_total{op="added",table="bridge"}"#], 1.0);
    assert_eq!(
        s[r#"ovsdbus_events_total{op="removed",table="interface"}"#],
        2.0
    );
    assert_eq!(s[r#"ovsdbus_events_total{op="changed",table="port"}"#], 0.0);
    assert_eq!(s["ovsdbus_event_latency_seconds_count"], 3.0);
    assert_eq!(
        s[r#"ovsdbus_event_latency_seconds_bucket{le="0.0001"}"#],
        1.0
    );
    assert_eq!(
        s[r#"ovsdbus_event_latency_seconds_bucket{le="3.2768"}"#],
        2.0
    );
    assert_eq!(s[r#"ovsdbus_event_latency_seconds_bucket{le="+Inf"}"#], 3.0);
    assert!(s["ovsdbus_last_event_timestamp_seconds"] > 1.6e9);
}

#[test]
fn observe_event_never_invents_label_values() {
    let m = Metrics::new(&[]);
    m.observe_event("Open_vSwitch", "added", Duration::from_micros(60));
    m.observe_event("port", "modified", Duration::from_micros(60));
    let text = m.encode();
    assert_eq!(label_sets(&text, "ovsdbus_events_total").len(), 9);
    assert!(!text.contains("Open_vSwitch") && !text.contains("modified"));
    assert_eq!(samples(&text)["ovsdbus_event_latency_seconds_count"], 2.0);
}

#[test]
fn fields_feed_the_exposition() {
    let m = Metrics::new(&["GetRow"]);
    m.ovsdb_connected.set(1);
    m.rows.with_label_values(&["port"]).set(7);
    m.method_calls.with_label_values(&["GetRow", "error"]).inc();
    m.resyncs.with_label_values(&["full"]).inc();
    let s = samples(&m.encode());
    assert_eq!(s["ovsdbus_ovsdb_connected"], 1.0);
    assert_eq!(s[r#"ovsdbus_rows{table="port"}"#], 7.0);
    assert_eq!(
        s[r#"ovsdbus_method_calls_total{method="GetRow",result="error"}"#],
        1.0
    );
    assert_eq!(
        s[r#"ovsdbus_method_calls_total{method="GetRow",result="ok"}"#],
        0.0
    );
    assert_eq!(s[r#"ovsdbus_resyncs_total{kind="full"}"#], 1.0);
}

#[test]
fn registries_are_independent() {
    // A private registry per instance: two relays in one test process do not collide
    // (the global default registry would refuse the second registration).
    let a = Metrics::new(&[]);
    let b = Metrics::new(&[]);
    a.ovsdb_updates.inc();
    assert_eq!(samples(&b.encode())["ovsdbus_ovsdb_updates_total"], 0.0);
    let ours = |text: String| -> Vec<String> {
        // process_* moves between two scrapes; ours must not.
        text.lines()
            .filter(|l| !l.starts_with("process_"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(ours(a.try_encode().expect("encodes")), ours(a.encode()));
}
