//! The `ovs-dbus-relay` command: argument parsing and exit codes; the library does the work.

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use ovs_dbus_relay::bus::BusTarget;
use ovs_dbus_relay::cli;
use ovs_dbus_relay::daemon::{self, Config, OpenQaConfig};
use ovs_dbus_relay::openqa::flows::FlowSettings;
use ovs_dbus_relay::ovsdb::remote::Remote;
use ovs_dbus_relay::ovsdb::session::SessionConfig;
use ovs_dbus_relay::ovsdb::tls::TlsFiles;
use ovs_dbus_relay::replica::layout::{ColumnSelection, TableId};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    propagate_version = true,
    about = "Publishes Open vSwitch database changes on D-Bus",
    after_long_help = "Exit status: 0 done; 1 condition not met or timed out; 2 usage or other \
error; 3 relay not running or bus unreachable; 4 relay not synced with OVSDB. `run` exits 2 \
for a fatal start-up problem, always with one line on stderr naming it.\n\n\
The D-Bus API (org.ovsdbus.Relay1) is described in /usr/share/doc/ovs-dbus-relay/dbus-api.md; \
settings for the service go into /etc/default/ovs-dbus-relay."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay daemon.
    Run(RunArgs),
    /// Print the relay's signals as they arrive (Ctrl-C to stop).
    Watch(cli::watch::WatchArgs),
    /// Wait until a row meets conditions (exit 0), or time out (exit 1).
    Wait(cli::wait::WaitArgs),
    /// Show bridges, ports and interfaces like `ovs-vsctl show`.
    Show(cli::show::ShowArgs),
    /// Print a row's columns, like `ovs-vsctl get` / `ovs-vsctl list TABLE NAME`.
    Get(cli::get::GetArgs),
    /// Print the names of a table's rows, like `ovs-vsctl list-br` / `list-ports`.
    List(cli::get::ListArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (ovs-dbus-relay.8 and one per command) into DIR (packaging).
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
}

#[derive(Args)]
struct RunArgs {
    /// OVSDB remote(s): unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT, comma-separated for a
    /// cluster.
    #[arg(
        long,
        env = "OVS_DBUS_RELAY_DB",
        default_value = "unix:/run/openvswitch/db.sock"
    )]
    db: String,
    /// system, session, or a D-Bus address.
    #[arg(long, env = "OVS_DBUS_RELAY_BUS", default_value = "system")]
    bus: String,
    /// Prometheus endpoint ADDR:PORT, or `off`.
    #[arg(
        long,
        env = "OVS_DBUS_RELAY_METRICS_LISTEN",
        default_value = "127.0.0.1:9476"
    )]
    metrics_listen: String,
    /// At start-up, give up (exit 2) when no OVSDB server answered for this many seconds.
    #[arg(long, env = "OVS_DBUS_RELAY_CONNECT_TIMEOUT", default_value_t = 30.0)]
    connect_timeout: f64,
    /// Seconds of silence on a tcp: remote before an echo probe; as long again without an
    /// answer drops the connection. Any remote that does not answer the schema and monitor
    /// requests within twice this is left for the next.
    #[arg(long, env = "OVS_DBUS_RELAY_INACTIVITY_PROBE", default_value_t = 5.0)]
    inactivity_probe: f64,
    /// The largest message accepted from OVSDB: bytes, or a number with K, M or G (powers
    /// of 1024). A longer one is a protocol error: the connection is dropped once that much
    /// of it has arrived, and made again with backoff. The default is 8 times the start-up
    /// snapshot of a switch with 10,000 busy ports (20,000 rows, 8 MB).
    #[arg(
        long,
        env = "OVS_DBUS_RELAY_MAX_MESSAGE_SIZE",
        value_name = "BYTES",
        default_value = "64M"
    )]
    max_message_size: String,
    /// Mirror only these columns of a table (plus the ones the tree needs): TABLE:col,col.
    #[arg(long, env = "OVS_DBUS_RELAY_INCLUDE_COLUMNS", value_delimiter = ';')]
    include_columns: Vec<String>,
    /// Do not mirror these columns: TABLE:col,col (statistics and rstp_statistics are
    /// always left out).
    #[arg(long, env = "OVS_DBUS_RELAY_EXCLUDE_COLUMNS", value_delimiter = ';')]
    exclude_columns: Vec<String>,
    /// Also serve os-autoinst-openvswitch's API (org.opensuse.os_autoinst.switch on /switch).
    #[arg(long, env = "OVS_DBUS_RELAY_OPENQA_COMPAT", value_parser = BoolishValueParser::new())]
    openqa_compat: bool,
    /// The bridge whose taps the openQA API manages [default: $OS_AUTOINST_USE_BRIDGE, else
    /// br0]. Its OpenFlow rules come from os-autoinst-openvswitch's variables
    /// (OS_AUTOINST_BRIDGE_LOCAL_IP, _NETMASK, _REWRITE_TARGET, _LOCAL_IPV6).
    #[arg(long, env = "OVS_DBUS_RELAY_OPENQA_BRIDGE")]
    openqa_bridge: Option<String>,
    /// ssl: remotes: the relay's private key (PEM).
    #[arg(long, env = "OVS_DBUS_RELAY_PRIVATE_KEY", value_name = "FILE")]
    private_key: Option<std::path::PathBuf>,
    /// ssl: remotes: the relay's certificate (PEM), signed by a CA the server trusts.
    #[arg(long, env = "OVS_DBUS_RELAY_CERTIFICATE", value_name = "FILE")]
    certificate: Option<std::path::PathBuf>,
    /// ssl: remotes: the CA certificate (PEM) the server's certificate must chain to.
    #[arg(long, env = "OVS_DBUS_RELAY_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Seconds a write waits for ovs-vswitchd to apply it (as plain ovs-vsctl waits)
    /// before failing with org.ovsdbus.Error.Timeout.
    #[arg(long, env = "OVS_DBUS_RELAY_VSWITCHD_TIMEOUT", default_value_t = 10.0)]
    vswitchd_timeout: f64,
    /// Writes do not wait for ovs-vswitchd (as ovs-vsctl --no-wait): they return once
    /// OVSDB committed them and the relay's replica shows them.
    #[arg(long, env = "OVS_DBUS_RELAY_NO_WAIT", value_parser = BoolishValueParser::new())]
    no_wait: bool,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{name}: {value} is not a duration"))
}

/// `--max-message-size` below this could not even carry a server's schema (the
/// Open_vSwitch one is 26 KB), let alone its rows.
const MIN_MESSAGE_SIZE: usize = 1 << 20;

/// `--max-message-size`: `67108864`, `64M`, `1g`.
fn message_size(text: &str) -> Result<usize, String> {
    let (digits, unit) = [(['K', 'k'], 10), (['M', 'm'], 20), (['G', 'g'], 30)]
        .into_iter()
        .find_map(|(suffix, shift)| Some((text.strip_suffix(suffix)?, 1usize << shift)))
        .unwrap_or((text, 1));
    let size = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            format!("--max-message-size {text:?}: expected bytes, or a number with K, M or G")
        })?;
    if size < MIN_MESSAGE_SIZE {
        return Err(format!(
            "--max-message-size {text}: below the minimum of 1M (an OVSDB schema alone is \
             tens of kilobytes)"
        ));
    }
    Ok(size)
}

impl RunArgs {
    /// Turns flags into a configuration without touching the network.
    fn config(self) -> Result<Config, String> {
        let remotes = Remote::parse_list(&self.db).map_err(|e| format!("--db {e}"))?;
        let bus = BusTarget::parse(&self.bus).map_err(|e| format!("--bus {e}"))?;
        let metrics_listen = match self.metrics_listen.as_str() {
            "off" => None,
            addr => Some(
                addr.parse::<std::net::SocketAddr>()
                    .map_err(|_| format!("--metrics-listen {addr:?}: expected ADDR:PORT or off"))?,
            ),
        };
        let tls = tls_files(&remotes, self.private_key, self.certificate, self.ca_cert)?;
        let mut columns = ColumnSelection::default();
        let lists: [(&mut std::collections::HashMap<TableId, Vec<String>>, _); 2] = [
            (&mut columns.include, self.include_columns),
            (&mut columns.exclude, self.exclude_columns),
        ];
        for (target, items) in lists {
            for item in items {
                let (table, cols) = ColumnSelection::parse_item(&item)?;
                target.entry(table).or_default().extend(cols);
            }
        }
        Ok(Config {
            session: SessionConfig {
                remotes,
                columns,
                connect_timeout: seconds("connect-timeout", self.connect_timeout)?,
                inactivity_probe: seconds("inactivity-probe", self.inactivity_probe)?,
                tls,
                max_message_size: message_size(&self.max_message_size)?,
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(4),
            },
            bus,
            metrics_listen,
            openqa: if self.openqa_compat {
                Some(openqa_config(self.openqa_bridge)?)
            } else {
                None
            },
            vswitchd_wait: match self.no_wait {
                true => None,
                false => Some(seconds("vswitchd-timeout", self.vswitchd_timeout)?),
            },
        })
    }
}

/// The TLS files, when a remote is `ssl:`: all three are needed, and are read once here so
/// that a missing or unusable one stops the relay at start-up with its name.
fn tls_files(
    remotes: &[Remote],
    private_key: Option<std::path::PathBuf>,
    certificate: Option<std::path::PathBuf>,
    ca_cert: Option<std::path::PathBuf>,
) -> Result<Option<TlsFiles>, String> {
    if !remotes.iter().any(Remote::is_ssl) {
        return Ok(None);
    }
    let (Some(private_key), Some(certificate), Some(ca_cert)) = (private_key, certificate, ca_cert)
    else {
        return Err("ssl: remotes need --private-key, --certificate and --ca-cert".into());
    };
    let files = TlsFiles {
        private_key,
        certificate,
        ca_cert,
    };
    files.client_config().map_err(|e| e.to_string())?;
    Ok(Some(files))
}

/// os-autoinst-openvswitch's settings, from the same variables with the same defaults.
fn openqa_config(bridge: Option<String>) -> Result<OpenQaConfig, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let bridge = bridge
        .or_else(|| var("OS_AUTOINST_USE_BRIDGE"))
        .unwrap_or_else(|| "br0".to_owned());
    ovs_dbus_relay::ovsdb::txn::validate_name(&bridge)
        .map_err(|e| format!("--openqa-bridge: {e}"))?;
    Ok(OpenQaConfig {
        bridge,
        flows: FlowSettings::from_lookup(var)?,
        // Where ovs-vswitchd puts the bridge's management socket, as ovs-ofctl finds it.
        rundir: var("OVS_RUNDIR")
            .unwrap_or_else(|| "/var/run/openvswitch".to_owned())
            .into(),
    })
}

/// Clap's message as one line (SPEC §7), e.g. `unexpected argument '-x' found (see --help)`.
fn usage_error(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    format!("{first} (see --help)")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            eprintln!("ovs-dbus-relay: {}", usage_error(&e));
            return ExitCode::from(2);
        }
    };
    // The daemon logs at info; the client commands keep stderr for their own messages.
    let default_level = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    ovs_dbus_relay::logging::init(default_level);
    let result = match cli.command {
        Command::Watch(args) => return cli::execute(cli::watch::run(args)),
        Command::Wait(args) => return cli::execute(cli::wait::run(args)),
        Command::Show(args) => return cli::execute(cli::show::run(args)),
        Command::Get(args) => return cli::execute(cli::get::get(args)),
        Command::List(args) => return cli::execute(cli::get::list(args)),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "ovs-dbus-relay", &mut out);
            return cli::execute(async move {
                cli::write_stdout("completions", &String::from_utf8_lossy(&out))
            });
        }
        Command::Manpages { dir } => manpages(&dir),
        Command::Run(args) => args.config().and_then(|config| {
            without_transparent_huge_pages();
            // One worker: an update passes through several tasks (connection, session,
            // engine, publisher, the bus connection's writer); on one thread that costs no
            // wake-ups between threads, which took more CPU than the work itself. Replies
            // that walk the whole replica run on blocking threads beside it.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| format!("tokio: {e}"))?;
            runtime.spawn(return_freed_memory());
            runtime
                .block_on(daemon::run(config))
                .map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ovs-dbus-relay: {message}");
            ExitCode::from(2)
        }
    }
}

/// `ovs-dbus-relay(8)` and `ovs-dbus-relay-COMMAND(8)` for every visible command, rendered
/// from the same definitions that parse the arguments, so they cannot drift apart.
fn manpages(dir: &std::path::Path) -> Result<(), String> {
    let command = <Cli as clap::CommandFactory>::command();
    let write = |name: &str, page: clap::Command| {
        let path = dir.join(format!("{name}.8"));
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .section("8")
            .manual("ovs-dbus-relay")
            .source(format!("ovs-dbus-relay {}", env!("CARGO_PKG_VERSION")))
            .render(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("ovs-dbus-relay-{}", sub.get_name());
        write(
            &name,
            sub.clone()
                .name(name.clone())
                .version(env!("CARGO_PKG_VERSION")),
        )?;
    }
    write("ovs-dbus-relay", command)
}

/// A burst allocates tens of megabytes of short-lived messages spread over the allocator's
/// pages; with transparent huge pages each first touch zeroes 2 MiB, which was 40% of a
/// 10,001-row burst's CPU time and a third of the RSS (measured, BENCHMARKS.md). Best
/// effort: a kernel without the knob just keeps its default.
fn without_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// mimalloc gives freed memory back to the system lazily, from within later allocations, so
/// once a large message had come and gone an idle relay kept it resident (hundreds of
/// megabytes after a 100 MB monitor reply; BENCHMARKS.md). A collection every few seconds
/// lets those deferred purges run; it only visits what is already free.
async fn return_freed_memory() {
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        // SAFETY: takes no pointers and touches only mimalloc's own bookkeeping.
        unsafe { mi_collect(false) };
    }
}

/// Every update allocates and frees many small values (atoms, variants, paths) across
/// threads; mimalloc does that markedly cheaper than glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
