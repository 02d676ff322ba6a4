//! The relay benchmark (issue 7): the relay path — transaction sent → typed D-Bus signal
//! received by a subscriber in another process — side by side with the baseline, a direct
//! OVSDB `monitor_cond` subscriber receiving the same updates, in one run.
//!
//! ```text
//! cargo bench --bench relay                  # full run, about 1.5 minutes
//! cargo bench --bench relay -- --smoke       # seconds; for CI, numbers are not asserted
//! cargo bench --bench relay -- --json PATH   # default: target/bench/relay.json
//! ```
//!
//! Everything runs privately under a temp dir on unix sockets: `ovsdb-server`,
//! `dbus-daemon`, the release relay, and this binary twice more as the two subscribers
//! (hidden modes `--subscriber BUS_ADDRESS` and `--monitor DB_SOCKET`). Load comes from a
//! raw pipelining OVSDB client in this process. See BENCHMARKS.md for what each row means.
//!
//! `cargo test --all-targets` runs benchmarks too, without `--bench`: then this is a
//! smoke run against the relay binary cargo built for the tests (debug), so the benchmark
//! cannot rot, and no release build or JSON file comes with it.

mod support;

use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use support::dbus::Observer;
use support::events::{Event, EventLog};
use support::now_usec;
use support::ovsdb::{self, Client, NewPort};
use support::procs::{self, Guard};
use support::report::{self, Metric, Row, Val};

const BRIDGE: &str = "br0";
/// The one port the light-load row retags.
const LATENCY_PORT: &str = "lat";
/// How much later than its own commit the relay may deliver the end of a burst or of the
/// throughput run and still count as having kept up: a backlog that grows with the run
/// length would blow it, scheduling noise on a loaded 2-core machine would not.
const KEPT_UP_DRAIN_MS: f64 = 250.0;

/// No event for this long after the writer finished means no more are coming: far longer
/// than any delivery gap seen while events still flow.
const QUIET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Scale {
    smoke: bool,
    latency_txns: usize,
    latency_rate: f64,
    throughput: Duration,
    /// Transactions in flight at once: enough to keep ovsdb-server busy between our
    /// reads of its replies, so the writer runs at the server's rate, not at round-trip
    /// rate.
    window: usize,
    burst_ports: usize,
    startup_ports: usize,
    /// Rows 6 and 7: ports on the bridge (twice as many rows), row changes per second
    /// and for how long.
    scale_ports: usize,
    scale_rate: f64,
    scale_duration: Duration,
    idle: Duration,
    /// Upper bound for any wait on delivery.
    patience: Duration,
}

impl Scale {
    const FULL: Scale = Scale {
        smoke: false,
        latency_txns: 200,
        latency_rate: 100.0,
        throughput: Duration::from_secs(10),
        window: 64,
        burst_ports: 5_000,
        startup_ports: 10_000,
        scale_ports: 10_000,
        scale_rate: 3_000.0,
        scale_duration: Duration::from_secs(10),
        idle: Duration::from_secs(30),
        patience: Duration::from_secs(60),
    };
    const SMOKE: Scale = Scale {
        smoke: true,
        latency_txns: 20,
        latency_rate: 100.0,
        throughput: Duration::from_secs(2),
        window: 64,
        burst_ports: 500,
        startup_ports: 1_000,
        scale_ports: 500,
        scale_rate: 300.0,
        scale_duration: Duration::from_secs(2),
        idle: Duration::from_secs(2),
        patience: Duration::from_secs(20),
    };

    fn json(&self) -> Json {
        json!({
            "mode": if self.smoke { "smoke" } else { "full" },
            "latency_txns": self.latency_txns,
            "latency_rate_per_s": self.latency_rate,
            "throughput_s": self.throughput.as_secs_f64(),
            "window": self.window,
            "burst_ports": self.burst_ports,
            "startup_ports": self.startup_ports,
            "scale_ports": self.scale_ports,
            "scale_rate_per_s": self.scale_rate,
            "scale_s": self.scale_duration.as_secs_f64(),
            "idle_s": self.idle.as_secs_f64(),
        })
    }
}

const USAGE: &str = "usage: cargo bench --bench relay [-- [--smoke] [--json PATH] [--keep]]
  --smoke      scaled-down run (seconds), for CI; numbers are printed, not asserted
  --json PATH  where to write the results (default target/bench/relay.json)
  --keep       keep the temp dir with the ovsdb-server, dbus-daemon and relay logs";

struct Options {
    scale: Scale,
    json: Option<PathBuf>,
    keep: bool,
    /// Started by `cargo bench` (which passes `--bench`), not by `cargo test`.
    bench: bool,
}

/// `Ok(None)` for `--help`.
fn parse_options(args: Vec<String>) -> Result<Option<Options>, String> {
    let bench = args.iter().any(|a| a == "--bench");
    let mut options = Options {
        scale: if bench { Scale::FULL } else { Scale::SMOKE },
        json: bench.then(|| target_dir().join("bench/relay.json")),
        keep: false,
        bench,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => options.scale = Scale::SMOKE,
            "--json" => options.json = Some(args.next().ok_or("--json needs a path")?.into()),
            "--keep" => options.keep = true,
            "--bench" => {}
            "-h" | "--help" => return Ok(None),
            // Under `cargo test` the arguments are libtest's (filters, --nocapture, ...).
            _ if !bench => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let child = match args.first().map(String::as_str) {
        Some("--subscriber") => Some(support::dbus::subscriber_main(
            args.get(1).map_or("", String::as_str),
        )),
        Some("--monitor") => Some(ovsdb::monitor_main(Path::new(
            args.get(1).map_or("", String::as_str),
        ))),
        _ => None,
    };
    if let Some(result) = child {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench subscriber: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match parse_options(args) {
        Ok(Some(options)) => {
            run(&options);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn write_json(path: &Path, document: &Json) {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let text = serde_json::to_string_pretty(document).expect("serialises");
    match std::fs::write(path, text) {
        Ok(()) => println!("JSON: {}", path.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
    }
}

/// Runs one phase with progress on stderr, so a slow or stuck phase is easy to spot.
fn timed<T>(what: &str, phase: impl FnOnce() -> T) -> T {
    eprintln!("bench: {what} ...");
    let began = Instant::now();
    let result = phase();
    eprintln!(
        "bench: {what} done in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    result
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// What every phase needs: the bus and the orchestrator's connection to it outlive the
/// relays of the individual phases.
struct Ctx {
    scale: Scale,
    relay_bin: PathBuf,
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    observer: Observer,
    bus_address: String,
    bus_pid: u32,
}

fn run(options: &Options) {
    let scale = options.scale;
    let relay_bin = if options.bench {
        procs::release_relay()
    } else {
        eprintln!("bench: not started by `cargo bench`: smoke run, numbers mean nothing");
        PathBuf::from(env!("CARGO_BIN_EXE_ovs-dbus-relay"))
    };
    // Unix socket paths are limited to 108 bytes; a long $TMPDIR would not fit them.
    let tmp_base = Some(std::env::temp_dir())
        .filter(|t| t.as_os_str().len() < 60)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let tmp = tempfile::Builder::new()
        .prefix("relay-bench-")
        .tempdir_in(tmp_base)
        .expect("create a temporary directory");
    // Kept from the start, so the logs also survive a failed run.
    let (dir, _cleanup) = if options.keep {
        let dir = tmp.keep();
        eprintln!("bench: keeping {}", dir.display());
        (dir, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };
    let (bus, bus_address) = procs::start_bus(&dir.join("bus"));
    // One worker: the orchestrator should take as little CPU as possible from the
    // processes it measures.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let observer = runtime
        .block_on(Observer::connect(&bus_address))
        .expect("connect to the private bus");
    let ctx = Ctx {
        scale,
        relay_bin,
        dir,
        runtime,
        observer,
        bus_address,
        bus_pid: bus.pid(),
    };
    eprintln!(
        "bench: {} run, relay {}",
        if scale.smoke { "smoke" } else { "full" },
        ctx.relay_bin.display()
    );
    let load_before = load_average();
    if load_before.unwrap_or(0.0) > 0.5 {
        eprintln!(
            "bench: warning: load average {:.2} before the run; other processes compete \
             for the CPU and the numbers will be noisy",
            load_before.unwrap_or(0.0)
        );
    }

    let (latency, throughput, burst, idle) = {
        let mut live = timed("set-up", || Live::start(&ctx, "live", 0));
        (
            timed("1/7 light-load latency", || light_latency(&ctx, &mut live)),
            timed("2/7 sustained throughput", || {
                sustained_throughput(&ctx, &mut live)
            }),
            timed("3/7 burst", || burst(&ctx, &mut live)),
            timed("5/7 idle", || idle(&ctx, &mut live)),
        )
    };
    let startup = timed("4/7 start-up", || startup(&ctx));
    let (steady, introspect) = timed("6-7/7 at scale", || at_scale(&ctx));
    let rows = [
        latency, throughput, burst, startup, idle, steady, introspect,
    ];

    let load_after = load_average();
    let table = report::table(&rows);
    println!("\n{table}");
    let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
    println!(
        "{} run; relay {}; 1-min load average {} before, {} after",
        if scale.smoke { "smoke" } else { "full" },
        ctx.relay_bin.display(),
        load(load_before),
        load(load_after)
    );
    let context = json!({
        "relay_binary": ctx.relay_bin,
        "load_average_1min": {"before": load_before, "after": load_after},
        "machine": machine(),
        "scale": scale.json(),
        "finished_unix_usec": now_usec(),
    });
    let document = report::json(&rows, context);
    if let Some(path) = &options.json {
        write_json(path, &document);
    }
}

/// The relay under steady load: one ovsdb-server, one relay, and both subscribers running
/// for rows 1, 2, 3 and 5.
struct Live {
    // Declaration order is drop order: the relay goes first, while the bus it is
    // releasing its name on and the database it is reading are still up.
    relay: Guard,
    relay_sub: Guard,
    direct_sub: Guard,
    relay_events: EventLog,
    direct_events: EventLog,
    writer: Client,
    /// The uuids of ports `s0`, `s1`, … added at the start.
    ports: Vec<String>,
    relay_log: PathBuf,
    _ovsdb: Guard,
}

impl Live {
    /// In `ctx.dir/name`, with the latency port and `ports` more (`s0`, `s1`, …).
    fn start(ctx: &Ctx, name: &str, ports: usize) -> Live {
        let dir = ctx.dir.join(name);
        let (ovsdb, sock) = procs::start_ovsdb(&dir);
        let mut writer = Client::connect(&sock).expect("connect to ovsdb-server");
        let setup = Duration::from_secs(10);
        writer.transact_wait(ovsdb::init_ops(BRIDGE), setup);
        writer.transact_wait(
            ovsdb::add_ports_ops(BRIDGE, &[NewPort::named(LATENCY_PORT.into())]),
            setup,
        );
        let ports = add_ports(&mut writer, ports, ctx.scale.patience);

        let relay_log = dir.join("relay.log");
        ctx.observer.reset();
        let mut relay =
            procs::start_relay(&ctx.relay_bin, &sock, &ctx.bus_address, None, &relay_log);
        if ctx
            .runtime
            .block_on(ctx.observer.wait_ready(Duration::from_secs(30)))
            .is_none()
        {
            let exit = relay.exited().unwrap_or_else(|| "still running".into());
            panic!(
                "relay not ready within 30 s ({exit}):\n{}",
                log_tail(&relay_log)
            );
        }

        let bus = ctx.bus_address.as_str();
        let sock = sock.to_string_lossy();
        let mut relay_sub = procs::spawn_self("D-Bus subscriber", &["--subscriber", bus]);
        let mut direct_sub = procs::spawn_self("OVSDB subscriber", &["--monitor", &sock]);
        let relay_events = EventLog::spawn_reader("D-Bus", relay_sub.take_stdout());
        let direct_events = EventLog::spawn_reader("OVSDB", direct_sub.take_stdout());
        for (log, what) in [(&relay_events, "D-Bus"), (&direct_events, "OVSDB")] {
            log.wait_ready(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("the {what} subscriber did not subscribe within 10 s"));
        }
        Live {
            relay,
            relay_sub,
            direct_sub,
            relay_events,
            direct_events,
            writer,
            ports,
            relay_log,
            _ovsdb: ovsdb,
        }
    }

    /// Numbers from a dead relay would be meaningless; stop the run with its log.
    fn check_alive(&mut self) {
        if let Some(exit) = self.relay.exited() {
            panic!("the relay exited ({exit}):\n{}", log_tail(&self.relay_log));
        }
    }

    fn lens(&self) -> (usize, usize) {
        (self.relay_events.len(), self.direct_events.len())
    }

    /// Waits (bounded) for `expected` more events on both paths; returns each path's
    /// events of the phase.
    fn collect(
        &self,
        start: (usize, usize),
        expected: usize,
        patience: Duration,
    ) -> (Vec<Event>, Vec<Event>) {
        let deadline = Instant::now() + patience;
        for (log, from) in [
            (&self.relay_events, start.0),
            (&self.direct_events, start.1),
        ] {
            let left = deadline.saturating_duration_since(Instant::now());
            log.wait_len(from + expected, QUIET, left);
        }
        (
            self.relay_events.since(start.0),
            self.direct_events.since(start.1),
        )
    }
}

/// Adds ports `s0` … `s{n-1}` to the bridge, 1,000 per transaction; returns their uuids.
fn add_ports(writer: &mut Client, n: usize, patience: Duration) -> Vec<String> {
    let names: Vec<NewPort> = (0..n).map(|i| NewPort::named(format!("s{i}"))).collect();
    let mut uuids = Vec::with_capacity(n);
    for chunk in names.chunks(1000) {
        let reply = writer.transact_wait(ovsdb::add_ports_ops(BRIDGE, chunk), patience);
        // One Interface insert, then one Port insert, per port.
        let results = reply.result.as_ref().ok().and_then(Json::as_array);
        for i in 0..chunk.len() {
            let uuid = results
                .and_then(|r| r.get(2 * i + 1)?["uuid"][1].as_str())
                .expect("the Port insert's uuid");
            uuids.push(uuid.to_owned());
        }
    }
    uuids
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn ms(usec_a: u64, usec_b: u64) -> f64 {
    (usec_a as f64 - usec_b as f64) / 1000.0
}

/// Per-event latency in ms, sorted: `txn_of` maps an event to the transaction that caused
/// it (or `None` for events not attributable to a single one).
fn latencies(
    events: &[Event],
    sent: &[u64],
    txn_of: impl Fn(usize, &Event) -> Option<usize>,
) -> Vec<f64> {
    let mut out: Vec<f64> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some(ms(e.recv_usec, *sent.get(txn_of(i, e)?)?)))
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

fn pct(sorted: &[f64], p: f64) -> Val {
    Val::opt(report::percentile(sorted, p), "no events")
}

fn rss(pid: u32) -> Val {
    Val::opt(procs::peak_rss_mb(pid), "process gone")
}

fn count(events: &[Event]) -> Val {
    Val::Num(events.len() as f64)
}

/// `tag` values cycle through the valid VLAN range so consecutive writes always differ
/// (an unchanged value would produce no update at all).
fn tag(i: usize) -> u16 {
    (i % 4094) as u16 + 1
}

// ---------------------------------------------------------------------------------------
// Row 1: latency under light load
// ---------------------------------------------------------------------------------------

fn light_latency(ctx: &Ctx, live: &mut Live) -> Row {
    let n = ctx.scale.latency_txns;
    let start = live.lens();
    let period = Duration::from_secs_f64(1.0 / ctx.scale.latency_rate);
    let began = Instant::now();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        // A fixed schedule, not sleep-after-send: the rate stays put however long a
        // send takes.
        let due = began + period * i as u32;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        sent.push(now_usec());
        live.writer
            .transact(vec![ovsdb::set_tag_op(LATENCY_PORT, tag(i))]);
    }
    live.writer.wait_all(n, ctx.scale.patience);
    let (a, b) = live.collect(start, n, ctx.scale.patience);
    live.check_alive();

    // One signal per transaction, in commit order on both paths.
    let txn_of = |i: usize, e: &Event| (e.name == LATENCY_PORT).then_some(i);
    let (la, lb) = (latencies(&a, &sent, txn_of), latencies(&b, &sent, txn_of));
    let mut row = Row::new(&format!(
        "1 light load ({n} txn @{}/s)",
        ctx.scale.latency_rate
    ));
    row.push(Metric::new("events received", "", count(&a), count(&b)));
    let within = |a: &Val, b: &Val, extra: f64| a.num().zip(b.num()).map(|(a, b)| a <= b + extra);
    let (p50a, p50b) = (pct(&la, 50.0), pct(&lb, 50.0));
    let pass = within(&p50a, &p50b, 0.15);
    row.push(Metric::new("p50", "ms", p50a, p50b).target("≤ b + 0.15 ms", pass));
    let (p99a, p99b) = (pct(&la, 99.0), pct(&lb, 99.0));
    let pass = within(&p99a, &p99b, 0.5);
    row.push(Metric::new("p99", "ms", p99a, p99b).target("≤ b + 0.5 ms", pass));
    row.push(Metric::new("max", "ms", pct(&la, 100.0), pct(&lb, 100.0)));
    if a.len() != n || b.len() != n {
        row.note(format!(
            "expected {n} events per path, got {} and {}",
            a.len(),
            b.len()
        ));
    }
    row
}

// ---------------------------------------------------------------------------------------
// Row 2: sustained throughput
// ---------------------------------------------------------------------------------------

/// Port churn, three transactions per port and three rows per transaction, so every kind
/// of signal flows and the bridge stays small: add (Interface + Port inserted, Bridge
/// `ports`), modify (Port `tag`, Interface and Bridge `external_ids`), delete (Bridge
/// `ports`; ovsdb-server garbage-collects the Port and Interface).
fn churn_txn(k: usize) -> Vec<Json> {
    let n = k / 3;
    let name = format!("t{n}");
    // A fixed uuid lets the delete be pipelined right behind the add.
    let uuid = format!("00000000-0000-4000-8000-{n:012x}");
    match k % 3 {
        0 => ovsdb::add_ports_ops(
            BRIDGE,
            &[NewPort {
                name,
                uuid: Some(uuid),
            }],
        ),
        1 => vec![
            ovsdb::set_tag_op(&name, tag(n)),
            ovsdb::set_external_id_op("Interface", &name, &k.to_string()),
            ovsdb::set_external_id_op("Bridge", BRIDGE, &k.to_string()),
        ],
        _ => ovsdb::delete_port_ops(BRIDGE, &uuid),
    }
}

/// The churn transaction behind a Port or Interface event (`t<n>` names); Bridge events
/// are shared by every transaction and left out.
fn churn_txn_of(_: usize, e: &Event) -> Option<usize> {
    let n: usize = e.name.strip_prefix('t')?.parse().ok()?;
    let table = ["Port", "Interface"]
        .into_iter()
        .find(|t| e.member.starts_with(t))?;
    let op = match &e.member[table.len()..] {
        "Added" => 0,
        "Changed" => 1,
        "Removed" => 2,
        _ => return None,
    };
    Some(3 * n + op)
}

fn sustained_throughput(ctx: &Ctx, live: &mut Live) -> Row {
    let scale = ctx.scale;
    let start = live.lens();
    let pids = [
        live.relay.pid(),
        live.direct_sub.pid(),
        ctx.bus_pid,
        live.relay_sub.pid(),
    ];
    let cpu_before = pids.map(procs::cpu_time);
    let began_usec = now_usec();
    let began = Instant::now();
    let mut sent = Vec::new();
    let mut in_flight = 0;
    let mut last_commit = began_usec;
    // Whole add/modify/delete cycles only, so no port outlives the run.
    while began.elapsed() < scale.throughput || sent.len() % 3 != 0 {
        if in_flight >= scale.window {
            let reply = live
                .writer
                .recv(scale.patience)
                .expect("ovsdb-server stopped answering");
            ovsdb::check(&reply);
            last_commit = reply.at_usec;
            in_flight -= 1;
        }
        let txn = churn_txn(sent.len());
        sent.push(now_usec());
        live.writer.transact(txn);
        in_flight += 1;
    }
    if in_flight > 0 {
        last_commit = live.writer.wait_all(in_flight, scale.patience).at_usec;
    }
    let txns = sent.len();
    let expected = 3 * txns;
    let (a, b) = live.collect(start, expected, scale.patience);
    live.check_alive();
    let cpu_after = pids.map(procs::cpu_time);
    let cpu = |i: usize| (cpu_after[i] - cpu_before[i]).as_secs_f64();

    let mut row = Row::new(&format!(
        "2 throughput ({} s, 3 rows/txn)",
        scale.throughput.as_secs()
    ));
    let writer_secs = ms(last_commit, began_usec) / 1000.0;
    row.note(format!(
        "writer: {txns} txn in {writer_secs:.2} s = {:.0} txn/s ({:.0} rows/s) committed by ovsdb-server, window {}",
        txns as f64 / writer_secs,
        expected as f64 / writer_secs,
        scale.window
    ));
    row.push(Metric::new("events received", "", count(&a), count(&b)));
    let last = |events: &[Event]| events.last().map(|e| e.recv_usec);
    let rate = |events: &[Event]| {
        last(events).map(|end| events.len() as f64 / (ms(end, began_usec) / 1000.0))
    };
    row.push(Metric::new(
        "events delivered/s",
        "1/s",
        Val::opt(rate(&a), "no events"),
        Val::opt(rate(&b), "no events"),
    ));
    let (la, lb) = (
        latencies(&a, &sent, churn_txn_of),
        latencies(&b, &sent, churn_txn_of),
    );
    row.push(Metric::new(
        "latency p50 under load",
        "ms",
        pct(&la, 50.0),
        pct(&lb, 50.0),
    ));
    row.push(Metric::new(
        "latency p99 under load",
        "ms",
        pct(&la, 99.0),
        pct(&lb, 99.0),
    ));

    let gaps = live.relay_events.seq_gaps();
    let resyncs = live.relay_events.resyncs();
    row.push(Metric::relay("seq gaps", "", Val::Num(gaps as f64)).at_most(0.0, "0"));
    let last_seq = ctx.runtime.block_on(ctx.observer.last_seq());
    let received_total = live.relay_events.len() as u64;
    let seq_ok = last_seq == Some(received_total) && live.relay_events.last_seq() == received_total;
    row.push(
        Metric::relay("LastSeq = signals received", "", Val::Flag(seq_ok))
            .target("yes", Some(seq_ok)),
    );
    row.note(format!(
        "LastSeq {} vs {received_total} signals received since start; {resyncs} resyncs",
        last_seq.map_or("n/a".into(), |s| s.to_string())
    ));

    let per_event_us = |secs: f64, events: &[Event]| {
        (!events.is_empty()).then(|| secs * 1e6 / events.len() as f64)
    };
    let (us_a, us_b) = (per_event_us(cpu(0), &a), per_event_us(cpu(1), &b));
    row.push(Metric::new(
        "CPU per 10k events",
        "s",
        Val::opt(us_a.map(|us| us / 100.0), "no events"),
        Val::opt(us_b.map(|us| us / 100.0), "no events"),
    ));
    row.push(Metric::new(
        "CPU per event",
        "µs",
        Val::opt(us_a, "no events"),
        Val::opt(us_b, "no events"),
    ));
    // Merged events are fewer than row changes; the work to do is the row changes.
    row.push(
        Metric::new(
            "CPU per row change",
            "µs",
            Val::opt(per_event_us(cpu(0), &b), "no events"),
            Val::opt(us_b, "no events"),
        )
        .at_most(10.0, "≤ 10 µs"),
    );
    row.push(Metric::relay(
        "dbus-daemon CPU per event",
        "µs",
        Val::opt(per_event_us(cpu(2), &a), "no events"),
    ));
    // Everything the relay path costs next to everything the baseline costs (ovsdb-server
    // serves both and is left out).
    row.push(Metric::new(
        "path CPU per event (relay+bus+subscriber)",
        "µs",
        Val::opt(per_event_us(cpu(0) + cpu(2) + cpu(3), &a), "no events"),
        Val::opt(us_b, "no events"),
    ));
    row.push(Metric::new("peak RSS", "MB", rss(pids[0]), rss(pids[1])));
    let drain = |events: &[Event]| last(events).map(|end| ms(end, last_commit));
    let (drain_a, drain_b) = (drain(&a), drain(&b));
    row.push(
        Metric::new(
            "last event after writer stopped",
            "ms",
            Val::opt(drain_a, "no events"),
            Val::opt(drain_b, "no events"),
        )
        .without_ratio(),
    );
    // Merging is allowed (that is how the relay keeps up); what must hold is the end
    // state: the same rows as the database, soon after the writer stopped.
    let converged = alive(&a) == alive(&b);
    row.push(Metric::relay(
        "same rows as the database at the end",
        "",
        Val::Flag(converged),
    ));
    let kept_up =
        converged && gaps == 0 && resyncs == 0 && drain_a.is_some_and(|d| d <= KEPT_UP_DRAIN_MS);
    row.push(Metric::relay("kept up", "", Val::Flag(kept_up)).target(
        format!("converged ≤ {KEPT_UP_DRAIN_MS} ms, 0 gaps, 0 resyncs"),
        Some(kept_up),
    ));
    row
}

/// The rows present after `events`, by table and name.
fn alive(events: &[Event]) -> std::collections::BTreeSet<(String, String)> {
    let mut rows = std::collections::BTreeSet::new();
    for e in events {
        for (op, present) in [("Added", true), ("Removed", false)] {
            if let Some(table) = e.member.strip_suffix(op) {
                let key = (table.to_owned(), e.name.clone());
                if present {
                    rows.insert(key);
                } else {
                    rows.remove(&key);
                }
            }
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------
// Row 3: burst
// ---------------------------------------------------------------------------------------

fn burst(ctx: &Ctx, live: &mut Live) -> Row {
    let n = ctx.scale.burst_ports;
    let ports: Vec<NewPort> = (0..n).map(|i| NewPort::named(format!("b{i}"))).collect();
    let ops = ovsdb::add_ports_ops(BRIDGE, &ports);
    let start = live.lens();
    let gaps_before = live.relay_events.seq_gaps();
    let sent = now_usec();
    live.writer.transact(ops);
    let commit = live.writer.wait_all(1, ctx.scale.patience).at_usec;
    // n Port and n Interface rows added, one Bridge changed.
    let expected = 2 * n + 1;
    let (a, b) = live.collect(start, expected, ctx.scale.patience);
    live.check_alive();

    let mut row = Row::new(&format!("3 burst ({n} ports, {expected} rows, 1 txn)"));
    row.note(format!(
        "commit reply {:.1} ms after the transaction was sent",
        ms(commit, sent)
    ));
    row.push(Metric::new("events received", "", count(&a), count(&b)));
    let gaps = live.relay_events.seq_gaps() - gaps_before;
    row.push(Metric::relay("seq gaps", "", Val::Num(gaps as f64)).at_most(0.0, "0"));
    let complete = |events: &[Event]| events.len() == expected;
    let since = |events: &[Event], from: u64, pick: fn(&[Event]) -> Option<&Event>| {
        Val::opt(pick(events).map(|e| ms(e.recv_usec, from)), "no events")
    };
    row.push(Metric::new(
        "first event after send",
        "ms",
        since(&a, sent, <[Event]>::first),
        since(&b, sent, <[Event]>::first),
    ));
    let last_a = since(&a, commit, <[Event]>::last);
    let pass = last_a.num().map(|ms| ms <= 300.0 && complete(&a));
    row.push(
        Metric::new(
            "last event after commit",
            "ms",
            last_a,
            since(&b, commit, <[Event]>::last),
        )
        .target("≤ 300 ms, all rows", pass),
    );
    row.push(Metric::new(
        "peak RSS",
        "MB",
        rss(live.relay.pid()),
        rss(live.direct_sub.pid()),
    ));
    if ctx.scale.smoke {
        row.note("smoke scale: the 300 ms target is meant for 10,000 rows");
    }
    row
}

// ---------------------------------------------------------------------------------------
// Row 5: idle
// ---------------------------------------------------------------------------------------

fn idle(ctx: &Ctx, live: &mut Live) -> Row {
    for log in [&live.relay_events, &live.direct_events] {
        log.wait_quiet(Duration::from_millis(500), Duration::from_secs(10));
    }
    // Lets allocator trimming, timers armed by the burst and the like settle first.
    thread::sleep(Duration::from_secs(1));
    let pids = [live.relay.pid(), live.direct_sub.pid()];
    let start = live.lens();
    let cpu_before = pids.map(procs::cpu_by_thread);
    let switches_before = pids.map(procs::voluntary_switches);
    let began = Instant::now();
    thread::sleep(ctx.scale.idle);
    let secs = began.elapsed().as_secs_f64();
    let cpu_after = pids.map(procs::cpu_by_thread);
    let switches_after = pids.map(procs::voluntary_switches);
    live.check_alive();

    let mut row = Row::new(&format!("5 idle ({} s)", ctx.scale.idle.as_secs()));
    let pct =
        |i: usize| procs::cpu_between(&cpu_before[i], &cpu_after[i]).as_secs_f64() / secs * 100.0;
    row.push(
        Metric::new("CPU", "% of a core", Val::Num(pct(0)), Val::Num(pct(1)))
            .at_most(0.1, "< 0.1 %"),
    );
    let wakeups = |i: usize| (switches_after[i].saturating_sub(switches_before[i])) as f64 / secs;
    row.push(Metric::new(
        "voluntary context switches",
        "1/s",
        Val::Num(wakeups(0)),
        Val::Num(wakeups(1)),
    ));
    let (now_a, now_b) = live.lens();
    if (now_a, now_b) != start {
        row.note(format!(
            "{} relay and {} direct events arrived while idle",
            now_a - start.0,
            now_b - start.1
        ));
    }
    row
}

// ---------------------------------------------------------------------------------------
// Row 4: start-up
// ---------------------------------------------------------------------------------------

/// Listens on a `NOTIFY_SOCKET` for `READY=1`, as systemd would. It keeps listening
/// until dropped, so the relay's later messages (`STOPPING=1`) find the socket too.
struct ReadyListener {
    stop: Arc<AtomicBool>,
    ready: mpsc::Receiver<u64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ReadyListener {
    fn start(sock: UnixDatagram) -> ReadyListener {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, ready) = mpsc::channel();
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // The timeout only bounds how late the thread notices `stop`.
            let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let at = now_usec();
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.lines().any(|l| l == "READY=1") {
                        let _ = tx.send(at);
                    }
                }
            }
        });
        ReadyListener {
            stop,
            ready,
            thread: Some(thread),
        }
    }

    /// When `READY=1` arrived, waiting at most `timeout` more for it.
    fn ready_at(&self, timeout: Duration) -> Option<u64> {
        self.ready.recv_timeout(timeout).ok()
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn startup(ctx: &Ctx) -> Row {
    let n = ctx.scale.startup_ports;
    let dir = ctx.dir.join("startup");
    let (_ovsdb, sock) = procs::start_ovsdb(&dir);
    let mut writer = Client::connect(&sock).expect("connect to ovsdb-server");
    writer.transact_wait(ovsdb::init_ops(BRIDGE), ctx.scale.patience);
    add_ports(&mut writer, n, ctx.scale.patience);
    drop(writer);

    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let relay_log = dir.join("relay.log");
    let ready_timeout = Duration::from_secs(30);
    let notified = ReadyListener::start(notify);
    ctx.observer.reset();
    let spawned = now_usec();
    let mut relay = procs::start_relay(
        &ctx.relay_bin,
        &sock,
        &ctx.bus_address,
        Some(&notify_path),
        &relay_log,
    );
    let ready = ctx.runtime.block_on(ctx.observer.wait_ready(ready_timeout));
    if let Some(exit) = relay.exited() {
        panic!(
            "the relay exited during start-up ({exit}):\n{}",
            log_tail(&relay_log)
        );
    }
    let rss_ready = procs::peak_rss_mb(relay.pid());
    // READY=1 may come a little after State=ready, or not at all before sd_notify support.
    let notified_at = notified.ready_at(Duration::from_secs(2));
    let gmo = ctx
        .runtime
        .block_on(ctx.observer.get_managed_objects(Duration::from_secs(30)));
    let rss_after = procs::peak_rss_mb(relay.pid());
    relay.stop();
    drop(notified);

    // The baseline's start-up: connect, monitor_cond, initial snapshot decoded.
    let spawned_b = now_usec();
    let mut direct = procs::spawn_self("OVSDB subscriber", &["--monitor", &sock.to_string_lossy()]);
    let direct_events = EventLog::spawn_reader("OVSDB", direct.take_stdout());
    let snapshot = direct_events.wait_ready(ready_timeout);
    let rss_b = procs::peak_rss_mb(direct.pid());
    direct.stop();

    let mut row = Row::new(&format!("4 start-up ({n} ports + {n} interfaces)"));
    let ready_ms = ready.map(|at| ms(at, spawned));
    let snapshot_ms = snapshot.map(|(at, _)| ms(at, spawned_b));
    row.push(
        Metric::new(
            "start → ready",
            "ms",
            Val::opt(ready_ms, "not ready within 30 s"),
            Val::opt(snapshot_ms, "no snapshot within 30 s"),
        )
        .at_most(600.0, "≤ 600 ms"),
    );
    row.push(Metric::relay(
        "start → READY=1 (sd_notify)",
        "ms",
        Val::opt(notified_at.map(|at| ms(at, spawned)), "no READY=1"),
    ));
    row.push(
        Metric::new(
            "peak RSS at ready",
            "MB",
            Val::opt(rss_ready, "process gone"),
            Val::opt(rss_b, "process gone"),
        )
        .at_most(60.0, "≤ 60 MB"),
    );
    row.push(
        Metric::new(
            "peak RSS incl. GetManagedObjects",
            "MB",
            Val::opt(rss_after, "process gone"),
            Val::opt(rss_b, "process gone"),
        )
        .at_most(80.0, "< 80 MB"),
    );
    let gmo_ms = match &gmo {
        Ok(reply) => Val::Num(reply.elapsed.as_secs_f64() * 1000.0),
        Err(why) => Val::Na(why.clone()),
    };
    row.push(Metric::relay("GetManagedObjects", "ms", gmo_ms).at_most(300.0, "≤ 300 ms"));
    row.note(match &gmo {
        Ok(reply) => format!(
            "GetManagedObjects returned {} objects in a {:.1} MB reply",
            reply.objects,
            reply.bytes as f64 / 1e6
        ),
        Err(why) => format!("GetManagedObjects: {why}"),
    });
    if let Some((_, rows)) = snapshot {
        row.note(format!(
            "baseline = direct monitor_cond: start → snapshot of {rows} rows decoded"
        ));
    }
    row
}

// ---------------------------------------------------------------------------------------
// Rows 6 and 7: a large switch under a steady load, and introspecting it
// ---------------------------------------------------------------------------------------

fn at_scale(ctx: &Ctx) -> (Row, Row) {
    let scale = ctx.scale;
    let n = scale.scale_ports;
    let mut live = Live::start(ctx, "scale", n);
    let rows = 2 * n + 3;

    // Row 7 first, on the quiet relay.
    let calls = 20;
    let introspected = ctx.runtime.block_on(ctx.observer.introspect_root(calls));
    let mut introspect = Row::new(&format!("7 Introspect / ({rows} rows)"));
    match introspected {
        Ok((times, size)) => {
            introspect.push(
                Metric::relay("reply size", "KiB", Val::Num(size as f64 / 1024.0))
                    .at_most(16.0, "< 16 KiB"),
            );
            introspect.push(
                Metric::relay("time (median)", "ms", pct(&times, 50.0)).at_most(10.0, "< 10 ms"),
            );
            introspect.push(Metric::relay("time (max)", "ms", pct(&times, 100.0)));
            introspect.note(format!("{calls} calls one after the other"));
        }
        Err(why) => introspect.note(format!("Introspect failed: {why}")),
    }

    // Row 6: every txn retags three ports, round-robin, at a fixed schedule.
    const PER_TXN: usize = 3;
    let txns = (scale.scale_rate * scale.scale_duration.as_secs_f64()) as usize / PER_TXN;
    let period = Duration::from_secs_f64(PER_TXN as f64 / scale.scale_rate);
    let start = live.lens();
    let cpu_before = procs::cpu_time(live.relay.pid());
    let resyncs_before = live.relay_events.resyncs();
    let gaps_before = live.relay_events.seq_gaps();
    let began = Instant::now();
    let mut sent = Vec::with_capacity(txns);
    for i in 0..txns {
        let due = began + period * i as u32;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        sent.push(now_usec());
        let ops = (0..PER_TXN)
            .map(|j| ovsdb::set_tag_by_uuid_op(&live.ports[(PER_TXN * i + j) % n], tag(i)))
            .collect();
        live.writer.transact(ops);
    }
    live.writer.wait_all(txns, scale.patience);
    let expected = PER_TXN * txns;
    let (a, b) = live.collect(start, expected, scale.patience);
    live.check_alive();
    let cpu = (procs::cpu_time(live.relay.pid()) - cpu_before).as_secs_f64();

    // The m-th change of port `s<p>` came from change number p + m·n, in transaction
    // (p + m·n) / PER_TXN.
    let latencies = |events: &[Event]| {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out: Vec<f64> = events
            .iter()
            .filter(|e| e.member == "PortChanged")
            .filter_map(|e| {
                let p: usize = e.name.strip_prefix('s')?.parse().ok()?;
                let m = seen.entry(e.name.as_str()).or_default();
                let txn = (p + *m * n) / PER_TXN;
                *m += 1;
                Some(ms(e.recv_usec, *sent.get(txn)?))
            })
            .collect();
        out.sort_by(f64::total_cmp);
        out
    };
    let (la, lb) = (latencies(&a), latencies(&b));
    let mut row = Row::new(&format!(
        "6 steady load on {rows} rows ({} row changes/s, {} s)",
        scale.scale_rate,
        scale.scale_duration.as_secs()
    ));
    row.push(Metric::new("events received", "", count(&a), count(&b)));
    let merged = a.iter().filter(|e| e.coalesced > 0).count();
    row.push(
        Metric::relay("events merged", "", Val::Num(merged as f64))
            .at_most(0.0, "0: every change on its own"),
    );
    row.push(Metric::new("p50", "ms", pct(&la, 50.0), pct(&lb, 50.0)));
    row.push(Metric::new("p99", "ms", pct(&la, 99.0), pct(&lb, 99.0)).at_most(20.0, "≤ 20 ms"));
    row.push(
        Metric::relay(
            "relay CPU per row change",
            "µs",
            Val::opt(
                (!b.is_empty()).then(|| cpu * 1e6 / b.len() as f64),
                "no events",
            ),
        )
        .at_most(15.0, "≤ 15 µs"),
    );
    let resyncs = live.relay_events.resyncs() - resyncs_before;
    row.push(Metric::relay("resyncs", "", Val::Num(resyncs as f64)).at_most(0.0, "0"));
    let gaps = live.relay_events.seq_gaps() - gaps_before;
    row.push(Metric::relay("seq gaps", "", Val::Num(gaps as f64)).at_most(0.0, "0"));
    row.push(Metric::new(
        "peak RSS",
        "MB",
        rss(live.relay.pid()),
        rss(live.direct_sub.pid()),
    ));
    row.note(format!(
        "{txns} transactions of {PER_TXN} `tag` changes, round-robin over {n} ports"
    ));
    (row, introspect)
}

// ---------------------------------------------------------------------------------------
// Machine description
// ---------------------------------------------------------------------------------------

/// The 1-minute load average: other work on the machine skews every number here, so
/// the report says how busy it was.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_owned())
    });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: Option<u64> = meminfo.lines().find_map(|l| {
        l.strip_prefix("MemTotal:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    let versions: HashMap<&str, Option<String>> = [
        ("ovsdb-server", first_line("ovsdb-server", &["--version"])),
        ("dbus-daemon", first_line("dbus-daemon", &["--version"])),
        ("kernel", first_line("uname", &["-r"])),
        (
            "relay_git",
            first_line(
                "git",
                &[
                    "-C",
                    env!("CARGO_MANIFEST_DIR"),
                    "describe",
                    "--always",
                    "--dirty",
                ],
            ),
        ),
    ]
    .into_iter()
    .collect();
    json!({
        "nproc": thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": model,
        "mem_total_mb": mem_kb.map(|kb| kb / 1024),
        "versions": versions,
    })
}
