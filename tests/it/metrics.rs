//! Metrics and health end to end (SPEC §8, §9): the relay binary with its endpoint on a
//! loopback port, a REAL Prometheus scraping it, `promtool` linting a scrape, and every
//! query of `grafana/ovs-dbus-relay.json` evaluated against the live data.
//!
//! Needs the Debian package `prometheus` (it ships `promtool` too); a missing binary fails
//! the test with the package to install, never skips it.

use crate::common::cluster::free_ports;
use crate::common::signals::{CallMonitor, Dict, relay_proxy};
use crate::common::{
    Bus, Ovsdb, POLL, Relay, Stack, dbus_send_relay, poll_until, require, send_signal, wait_until,
};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

const READY: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// What `$__rate_interval`, `$__interval` and `$__range` become: with a 1 s scrape
/// interval this spans many samples, like Grafana's 4 × scrape-interval minimum.
const WINDOW: &str = "30s";
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/ovs-dbus-relay.json");
const JOB: &str = "ovs-dbus-relay";

/// SPEC §6: the read methods every relay serves (on `org.ovsdbus.Relay1`).
const READ_METHODS: [&str; 7] = [
    "ListBridges",
    "ListPorts",
    "ListInterfaces",
    "GetRow",
    "Show",
    "WaitFor",
    "WaitForRemoval",
];

// ---------------------------------------------------------------------------------------
// Helpers: ports, a raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------

/// A loopback port nobody listens on right now. The gap before the real bind is tiny
/// and the kernel does not hand out the same ephemeral port again at once.
fn free_port() -> u16 {
    free_ports(1)[0]
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET target` over a fresh connection with `Connection: close`; reads to EOF and
/// undoes chunked transfer coding (Prometheus' Go server uses it for larger answers).
fn http_get(addr: &str, target: &str) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of header"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `GET target` until `accept` holds for a reply (connection errors count as
/// "not yet"); returns the last reply, or panics with it after `timeout`.
fn poll_http(
    addr: &str,
    target: &str,
    timeout: Duration,
    accept: impl Fn(&Reply) -> bool,
) -> Reply {
    let polled = poll_until(timeout, Duration::from_millis(100), || {
        match http_get(addr, target) {
            Ok(r) if accept(&r) => Ok(r),
            last => Err(last),
        }
    });
    match polled {
        Ok(r) => r,
        Err(Ok(r)) => panic!(
            "GET http://{addr}{target}: still {} {:?} after {timeout:?}",
            r.status, r.body
        ),
        Err(Err(e)) => panic!("GET http://{addr}{target}: {e} after {timeout:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The relay with its metrics endpoint, and a scraping Prometheus
// ---------------------------------------------------------------------------------------

struct Setup {
    stack: Stack,
    /// `127.0.0.1:PORT` of the relay's metrics endpoint.
    metrics: String,
}

/// Starts ovsdb-server, a bus and the relay with `--metrics-listen` on a free port, and
/// waits until the relay is ready and its endpoint answers.
async fn setup() -> Setup {
    let db = Ovsdb::start();
    let bus = Bus::start();
    let metrics = format!("127.0.0.1:{}", free_port());
    let relay = Relay::spawn_args(&[
        "run",
        "--db",
        &db.remote(),
        "--bus",
        &bus.address(),
        "--metrics-listen",
        &metrics,
    ]);
    let stack = Stack::attach(db, bus, relay, READY).await;
    poll_http(&metrics, "/metrics", READY, |r| r.status == 200);
    Setup { stack, metrics }
}

pub(crate) fn scrape(addr: &str) -> String {
    let reply = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("scrape {addr}: {e}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    reply.body
}

/// Every sample of a scrape keyed by `name{labels as written}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.parse().unwrap_or(f64::NAN)))
        .collect()
}

pub(crate) fn sample(text: &str, series: &str) -> f64 {
    *samples(text)
        .get(series)
        .unwrap_or_else(|| panic!("{series} not in scrape:\n{text}"))
}

/// A private Prometheus server scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = require("prometheus", "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .expect("temp dir for prometheus");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = File::create(dir.path().join("prometheus.log")).expect("create prometheus.log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut prometheus = Prometheus { child, dir, addr };
        let ready = poll_until(READY, Duration::from_millis(100), || {
            if http_get(&prometheus.addr, "/-/ready").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "prometheus exited during start-up ({status}):\n{}",
                    prometheus.log()
                );
            }
            Err(())
        });
        assert!(ready.is_ok(), "prometheus not ready:\n{}", prometheus.log());
        prometheus
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<endpoint>?<query>`; returns `data`, panicking on an API error.
    fn api(&self, endpoint: &str, query: &str) -> Value {
        let target = format!("/api/v1/{endpoint}?{query}");
        let reply = http_get(&self.addr, &target)
            .unwrap_or_else(|e| panic!("GET {target} from prometheus: {e}"));
        let json: Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("GET {target}: not JSON ({e}): {}", reply.body));
        assert_eq!(
            json["status"], "success",
            "GET {target} answered {}: {}",
            reply.status, reply.body
        );
        json["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &format!("query={}", urlencode(expr)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until `expr` returns something.
    fn wait_for(&self, expr: &str, timeout: Duration) {
        assert!(
            self.wait_all(&[expr.to_owned()], timeout).is_empty(),
            "prometheus: {expr} still empty after {timeout:?}; targets: {}\n{}",
            self.api("targets", "state=active"),
            self.log()
        );
    }

    /// Polls until each of `exprs` has returned something; returns those still empty
    /// after `timeout`.
    fn wait_all(&self, exprs: &[String], timeout: Duration) -> Vec<String> {
        let mut empty = exprs.to_vec();
        let _all_returned = poll_until(timeout, Duration::from_millis(200), || {
            empty.retain(|expr| self.query(expr).is_empty());
            if empty.is_empty() { Ok(()) } else { Err(()) }
        });
        empty
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("----- prometheus log -----\n{}\n-----", self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------------------

fn dashboard() -> Value {
    let text = fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every `expr` string anywhere in the dashboard (panels, nested row panels, targets).
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Every panel, including those nested in collapsed rows.
fn panels(value: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in value["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panels(panel));
    }
    out
}

/// What Grafana sends for a dashboard query: its variables replaced by their values.
fn expand(expr: &str) -> String {
    let mut expr = expr.to_owned();
    for var in ["__rate_interval", "__interval", "__range"] {
        expr = expr.replace(&format!("${{{var}}}"), WINDOW);
        expr = expr.replace(&format!("${var}"), WINDOW);
    }
    // `instance` defaults to All, whose allValue is `.*`.
    expr = expr.replace("${instance}", ".*").replace("$instance", ".*");
    assert!(!expr.contains('$'), "unexpanded variable in {expr}");
    expr
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "ovs-dbus-relay");
    assert_eq!(dash["title"], "ovs-dbus-relay");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let want = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let all = panels(&dash);
    assert!(all.len() > 10, "dashboard has {} panels", all.len());
    let mut ids = BTreeSet::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        assert!(
            ids.insert(panel["id"].as_u64()),
            "duplicate panel id in {title}"
        );
        assert_eq!(panel["datasource"], want, "panel {title}");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"], want, "a target of {title}");
        }
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "panel {title} gridPos {grid}"
        );
    }
    for var in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(var["datasource"], want, "variable {}", var["name"]);
    }

    // Every SPEC §8 metric is charted somewhere.
    let mut all_exprs = Vec::new();
    exprs(&dash, &mut all_exprs);
    let text = all_exprs.join("\n");
    for metric in [
        "ovsdbus_events_total",
        "ovsdbus_event_latency_seconds_bucket",
        "ovsdbus_ovsdb_updates_total",
        "ovsdbus_ovsdb_connected",
        "ovsdbus_ovsdb_reconnects_total",
        "ovsdbus_resyncs_total",
        "ovsdbus_dbus_connected",
        "ovsdbus_dbus_signals_total",
        "ovsdbus_dbus_emit_errors_total",
        "ovsdbus_rows",
        "ovsdbus_queue_depth",
        "ovsdbus_method_calls_total",
        "ovsdbus_last_event_timestamp_seconds",
        "ovsdbus_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(metric), "no panel charts {metric}");
    }
    for expr in &all_exprs {
        expand(expr);
    }
}

// ---------------------------------------------------------------------------------------
// Against a real Prometheus
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let s = setup().await;
    let prometheus = Prometheus::start(&s.metrics);
    prometheus.wait_for(&format!("up{{job=\"{JOB}\"}} == 1"), READY);

    // A workload after the first scrape, so rates and increases see it happen.
    let db = &s.stack.db;
    db.vsctl(&["add-br", "br0"]);
    db.vsctl(&["add-port", "br0", "tap0"]);
    db.vsctl(&["add-port", "br0", "tap1"]);
    db.vsctl(&["set", "port", "tap0", "tag=10"]);
    db.vsctl(&["set", "interface", "tap1", "external_ids:role=test"]);
    db.vsctl(&["del-port", "br0", "tap1"]);
    let bus = s.stack.bus.address();
    let ok = dbus_send_relay(&bus, "org.ovsdbus.Relay1.ListBridges", &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let failed = dbus_send_relay(
        &bus,
        "org.ovsdbus.Relay1.GetRow",
        &["string:Port", "string:no-such-port"],
    );
    assert!(
        !failed.status.success(),
        "GetRow of a missing port must fail"
    );

    // The relay has published the events, and Prometheus has scraped them twice since.
    let scraped = |expr: &str| prometheus.wait_for(expr, READY);
    scraped(&format!(
        "sum(increase(ovsdbus_events_total{{job=\"{JOB}\"}}[{WINDOW}])) > 0"
    ));
    scraped(&format!(
        "count_over_time(up{{job=\"{JOB}\"}}[{WINDOW}]) >= 5"
    ));

    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    assert!(
        all.len() > 15,
        "only {} queries in the dashboard",
        all.len()
    );
    // Some (rates over the workload) need a scrape or two more: wait for each one's data.
    let queries: Vec<String> = all.iter().map(|expr| expand(expr)).collect();
    let empty = prometheus.wait_all(&queries, READY);
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned no data:\n  {}\nscrape:\n{}",
        empty.len(),
        all.len(),
        empty.join("\n  "),
        scrape(&s.metrics)
    );

    // The `instance` variable's `label_values(ovsdbus_build_info, instance)`.
    let instances = prometheus.api("label/instance/values", "match[]=ovsdbus_build_info");
    assert_eq!(instances, serde_json::json!([s.metrics]));

    // The events reached Prometheus with the right labels.
    let added = prometheus.query(&format!(
        "ovsdbus_events_total{{job=\"{JOB}\",table=\"port\",op=\"added\"}}"
    ));
    let value = added
        .first()
        .and_then(|r| r["value"][1].as_str())
        .and_then(|v| v.parse::<f64>().ok());
    // br0's own port, tap0 and tap1.
    assert_eq!(value, Some(3.0), "three ports added: {added:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_passes_promtool_and_exports_every_label_set() {
    let s = setup().await;
    let text = scrape(&s.metrics);

    let promtool = require("promtool", "prometheus");
    let file = s.stack.bus.dir().join("scrape.prom");
    fs::write(&file, &text).expect("write scrape");
    let (code, lint) = run_with_stdin(&promtool, &["check", "metrics"], &file);
    assert!(
        code == Some(0) && lint.trim().is_empty(),
        "promtool check metrics ({code:?}):\n{lint}\nscrape:\n{text}"
    );

    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            types.insert(name.to_owned(), kind.to_owned());
        }
    }
    for (name, kind) in [
        ("ovsdbus_events_total", "counter"),
        ("ovsdbus_event_latency_seconds", "histogram"),
        ("ovsdbus_ovsdb_updates_total", "counter"),
        ("ovsdbus_ovsdb_connected", "gauge"),
        ("ovsdbus_ovsdb_reconnects_total", "counter"),
        ("ovsdbus_resyncs_total", "counter"),
        ("ovsdbus_dbus_connected", "gauge"),
        ("ovsdbus_dbus_reconnects_total", "counter"),
        ("ovsdbus_state", "gauge"),
        ("ovsdbus_dbus_signals_total", "counter"),
        ("ovsdbus_dbus_emit_errors_total", "counter"),
        ("ovsdbus_rows", "gauge"),
        ("ovsdbus_queue_depth", "gauge"),
        ("ovsdbus_method_calls_total", "counter"),
        ("ovsdbus_last_event_timestamp_seconds", "gauge"),
        ("ovsdbus_build_info", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }

    // Label sets exist from start; the prometheus crate writes labels sorted by name.
    for table in ["bridge", "port", "interface"] {
        for op in ["added", "changed", "removed"] {
            sample(
                &text,
                &format!("ovsdbus_events_total{{op=\"{op}\",table=\"{table}\"}}"),
            );
        }
        sample(&text, &format!("ovsdbus_rows{{table=\"{table}\"}}"));
    }
    for kind in ["fast", "full"] {
        assert_eq!(
            sample(&text, &format!("ovsdbus_resyncs_total{{kind=\"{kind}\"}}")),
            0.0
        );
    }
    for kind in ["typed", "properties", "objects"] {
        sample(
            &text,
            &format!("ovsdbus_dbus_signals_total{{kind=\"{kind}\"}}"),
        );
    }
    // Every method the running relay serves on its own interfaces, as it introspects
    // (so a method added later without a metrics label set is caught here).
    let served = served_methods(&s.stack.bus.address());
    for method in READ_METHODS {
        assert!(
            served.contains(method),
            "SPEC §6 {method} not served: {served:?}"
        );
    }
    for method in &served {
        for result in ["ok", "error"] {
            sample(
                &text,
                &format!("ovsdbus_method_calls_total{{method=\"{method}\",result=\"{result}\"}}"),
            );
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &text,
            &format!("ovsdbus_build_info{{version=\"{version}\"}}")
        ),
        1.0
    );
    assert_eq!(sample(&text, "ovsdbus_ovsdb_connected"), 1.0);
    assert_eq!(sample(&text, "ovsdbus_dbus_connected"), 1.0);
    // Nothing has happened yet: no typed signal for the start-up snapshot (SPEC §4).
    assert_eq!(sample(&text, "ovsdbus_last_event_timestamp_seconds"), 0.0);

    // Counters move with the workload, and rows follow the replica.
    s.stack.db.vsctl(&["add-br", "br0"]);
    s.stack.db.vsctl(&["add-port", "br0", "tap0"]);
    let moved = wait_until(READY, || {
        let text = scrape(&s.metrics);
        // add-br also adds the bridge's own port br0.
        sample(&text, r#"ovsdbus_events_total{op="added",table="port"}"#) == 2.0
            && sample(&text, r#"ovsdbus_rows{table="port"}"#) == 2.0
    });
    let text = scrape(&s.metrics);
    assert!(
        moved,
        "events and rows did not follow add-br/add-port:\n{text}"
    );
    assert_eq!(
        sample(&text, r#"ovsdbus_events_total{op="added",table="bridge"}"#),
        1.0
    );
    assert_eq!(sample(&text, r#"ovsdbus_rows{table="bridge"}"#), 1.0);
    assert!(sample(&text, "ovsdbus_event_latency_seconds_count") >= 3.0);
    assert!(sample(&text, "ovsdbus_ovsdb_updates_total") >= 2.0);
    assert!(sample(&text, r#"ovsdbus_dbus_signals_total{kind="typed"}"#) >= 3.0);
    assert!(sample(&text, "ovsdbus_last_event_timestamp_seconds") > 1.6e9);
    for line in text.lines().filter(|l| l.starts_with("ovsdbus_")) {
        assert!(
            !line.contains("br0") && !line.contains("tap0"),
            "no row names in labels: {line}"
        );
    }
}

/// Method names of the `org.ovsdbus.*` interfaces on the relay's root object.
fn served_methods(bus: &str) -> BTreeSet<String> {
    let out = dbus_send_relay(bus, "org.freedesktop.DBus.Introspectable.Introspect", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8_lossy(&out.stdout);
    let mut methods = BTreeSet::new();
    for block in xml.split("<interface name=\"").skip(1) {
        let Some((iface, body)) = block.split_once('"') else {
            continue;
        };
        if !iface.starts_with("org.ovsdbus.") {
            continue;
        }
        let body = body.split("</interface>").next().unwrap_or_default();
        for method in body.split("<method name=\"").skip(1) {
            if let Some((name, _)) = method.split_once('"') {
                methods.insert(name.to_owned());
            }
        }
    }
    methods
}

/// Runs `bin args < stdin_file` with a bounded wait; exit code and stdout+stderr.
fn run_with_stdin(bin: &Path, args: &[&str], stdin_file: &Path) -> (Option<i32>, String) {
    let out_path = stdin_file.with_extension("out");
    let out = File::create(&out_path).expect("create output file");
    let err = out.try_clone().expect("clone output handle");
    let mut child = Command::new(bin)
        .args(args)
        .stdin(File::open(stdin_file).expect("open stdin file"))
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    // `Ok(None)`: `try_wait` failed, give up at once.
    let exited = poll_until(Duration::from_secs(30), POLL, || match child.try_wait() {
        Ok(Some(status)) => Ok(Some(status.code())),
        Ok(None) => Err(()),
        Err(_) => Ok(None),
    });
    let Ok(Some(code)) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not finish", bin.display());
    };
    (code, fs::read_to_string(&out_path).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_ovsdb_connection() {
    let mut s = setup().await;
    let reply = poll_http(&s.metrics, "/healthz", READY, |r| r.status == 200);
    assert_eq!(reply.body, "ok\n");

    s.stack.db.kill();
    let reply = poll_http(&s.metrics, "/healthz", READY, |r| r.status == 503);
    assert_eq!(
        reply.body.trim(),
        "reconnecting",
        "SPEC §5: a synced relay that lost OVSDB is `reconnecting`"
    );
    let text = scrape(&s.metrics);
    assert_eq!(sample(&text, "ovsdbus_ovsdb_connected"), 0.0);
    assert_eq!(sample(&text, r#"ovsdbus_state{state="reconnecting"}"#), 1.0);
    assert_eq!(sample(&text, r#"ovsdbus_state{state="ready"}"#), 0.0);
    // Still 503 after the relay has tried the server again (the first `ended` is the
    // loss): it keeps retrying, it does not pretend.
    assert!(
        s.stack
            .relay
            .wait_log_count("OVSDB connection ended", 2, READY),
        "the relay did not retry the server:\n{}",
        s.stack.relay.log()
    );
    assert_eq!(
        http_get(&s.metrics, "/healthz").expect("healthz").status,
        503
    );

    s.stack.db.restart();
    let reply = poll_http(&s.metrics, "/healthz", READY, |r| r.status == 200);
    assert_eq!(reply.body, "ok\n");
    s.stack.sub.wait_ready(READY).await;
    let text = scrape(&s.metrics);
    assert_eq!(sample(&text, "ovsdbus_ovsdb_connected"), 1.0);
    assert!(
        sample(&text, "ovsdbus_ovsdb_reconnects_total") >= 1.0,
        "{text}"
    );
    let resyncs = sample(&text, r#"ovsdbus_resyncs_total{kind="fast"}"#)
        + sample(&text, r#"ovsdbus_resyncs_total{kind="full"}"#);
    assert!(resyncs >= 1.0, "a reconnect resyncs:\n{text}");
    assert!(s.stack.relay.is_running());
}

/// `/healthz` covers the bus too: with dbus-daemon gone nothing can be published, so it
/// says 503 `bus disconnected` until the relay is back on a bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_bus_connection() {
    let mut s = setup().await;
    poll_http(&s.metrics, "/healthz", READY, |r| r.status == 200);
    s.stack.bus.kill();
    let reply = poll_http(&s.metrics, "/healthz", READY, |r| r.status == 503);
    assert_eq!(reply.body.trim(), "bus disconnected");
    s.stack.bus.restart();
    let reply = poll_http(&s.metrics, "/healthz", READY, |r| r.status == 200);
    assert_eq!(reply.body, "ok\n");
    assert_eq!(
        sample(&scrape(&s.metrics), "ovsdbus_dbus_reconnects_total"),
        1.0
    );
}

/// `/healthz` also notices a bus that is there but takes nothing (dbus-daemon stopped, its
/// socket open): once a send has waited over 5 s it says 503 `bus not taking messages for
/// N s`, and `ok` again as soon as the bus reads — without a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_notices_a_bus_that_takes_nothing() {
    let s = setup().await;
    poll_http(&s.metrics, "/healthz", READY, |r| r.status == 200);
    let bus = s.stack.bus.pid().expect("bus running");
    send_signal(bus, "STOP");
    // Thousands of signals: more than the socket buffers hold, so the publisher's send
    // waits for the bus.
    let mut args = vec!["add-br".to_owned(), "br0".to_owned()];
    for i in 0..2_000 {
        args.extend([
            "--".into(),
            "add-port".into(),
            "br0".into(),
            format!("p{i}"),
        ]);
    }
    s.stack
        .db
        .vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let started = std::time::Instant::now();
    let stalled = poll_http(&s.metrics, "/healthz", Duration::from_secs(20), |r| {
        r.status == 503
    });
    let noticed = started.elapsed();
    send_signal(bus, "CONT");
    assert!(
        stalled.body.starts_with("bus not taking messages for "),
        "{}",
        stalled.body
    );
    assert!(noticed >= Duration::from_secs(4), "503 after {noticed:?}");
    let reply = poll_http(&s.metrics, "/healthz", Duration::from_secs(30), |r| {
        r.status == 200
    });
    assert_eq!(reply.body, "ok\n");
    assert_eq!(
        sample(&scrape(&s.metrics), "ovsdbus_dbus_reconnects_total"),
        0.0
    );
}

/// Waiters belong to their caller: one that leaves the bus takes its pending `WaitFor`s
/// with it (`ovsdbus_waiters` falls back), instead of holding them until they time out.
/// What a caller's waiters hold is capped in bytes as well as in count: a second waiter
/// with a 600 kB name is `LimitsExceeded` for its caller (1 MiB each), not for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_leave_with_their_caller() {
    let s = setup().await;
    let address = s.stack.bus.address();
    let connect = || async {
        zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .unwrap()
    };
    let (caller, other) = (connect().await, connect().await);
    let mut calls = CallMonitor::start(&address, "WaitFor").await;
    let long_name = "x".repeat(600_000);
    let wait = |connection: &zbus::Connection, name: String| {
        let connection = connection.clone();
        async move {
            let proxy = relay_proxy(&connection).await;
            proxy
                .call::<_, _, Dict>("WaitFor", &("Port", name, Vec::<String>::new(), 600_000u32))
                .await
        }
    };
    // The tasks hold clones of the connections: they are aborted before a connection is
    // dropped, so that dropping it closes it.
    let callers = [
        tokio::spawn(wait(&caller, "never".to_owned())),
        tokio::spawn(wait(&caller, long_name.clone())),
    ];
    let others = tokio::spawn(wait(&other, long_name.clone()));
    calls.wait_calls(3, READY).await;
    let waiters = || sample(&scrape(&s.metrics), "ovsdbus_waiters");
    assert!(
        wait_until(READY, || waiters() == 3.0),
        "{}",
        scrape(&s.metrics)
    );
    let refused = tokio::time::timeout(READY, wait(&caller, long_name.replace('x', "y")))
        .await
        .expect("a waiter over the cap is refused at once, not registered")
        .expect_err("a caller's waiters are capped in bytes");
    let zbus::Error::FDO(error) = &refused else {
        panic!("{refused:?}");
    };
    let zbus::fdo::Error::LimitsExceeded(text) = error.as_ref() else {
        panic!("{error:?}");
    };
    assert!(text.contains("1048576 bytes"), "{text}");
    assert_eq!(waiters(), 3.0);

    callers.iter().for_each(|task| task.abort());
    drop(caller);
    assert!(
        wait_until(READY, || waiters() == 1.0),
        "the other caller's waiter stays: {}",
        scrape(&s.metrics)
    );
    others.abort();
    drop(other);
    assert!(
        wait_until(READY, || waiters() == 0.0),
        "{}",
        scrape(&s.metrics)
    );
}

/// The shipped alert rules load (`promtool check rules`) and fire as their unit tests
/// expect (`promtool test rules`: relay down, OVSDB lost, resync rate).
#[test]
fn alert_rules_check_and_pass_their_tests() {
    let promtool = require("promtool", "prometheus");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus");
    for args in [
        ["check", "rules", "ovs-dbus-relay.rules.yml"],
        ["test", "rules", "ovs-dbus-relay.rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
