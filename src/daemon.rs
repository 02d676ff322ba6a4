//! `run`: wires the OVSDB session, the publisher, the bus connection, the metrics endpoint
//! and systemd notification together, and decides when the process ends.

use crate::bus::dispatch::Role;
use crate::bus::publisher::Publisher;
use crate::bus::relay::Shared;
use crate::bus::{self, BusError, BusTarget};
use crate::engine::{Engine, OnApplied, Pending, Store};
use crate::metrics::{Metrics, http};
use crate::notify::Notifier;
use crate::openqa::flows::FlowSettings;
use crate::openqa::keeper::Keeper;
use crate::ovsdb::remote::Remote;
use crate::ovsdb::session::{Session, SessionConfig, SessionError};
use crate::replica::layout::TableId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// Update messages between the session and the engine. The engine never waits for the
/// bus, so this only evens out bursts; when full, the session waits (and so, in turn,
/// does the socket, which makes ovsdb-server coalesce for us).
pub const EVENT_QUEUE: usize = 1024;

/// A send to the bus that has waited this long makes `/healthz` unhealthy: a burst of
/// thousands of signals is written in well under a second, so this is a bus that is not
/// reading from the relay.
const SEND_STALL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub session: SessionConfig,
    pub bus: BusTarget,
    /// `None`: no metrics endpoint (`--metrics-listen off`).
    pub metrics_listen: Option<SocketAddr>,
    /// With `--openqa-compat`: also serve the openQA switch API, and keep its flows.
    pub openqa: Option<OpenQaConfig>,
    /// How long a write waits for ovs-vswitchd to apply it; `None` with `--no-wait`.
    pub vswitchd_wait: Option<Duration>,
}

/// os-autoinst-openvswitch's part.
#[derive(Debug, Clone)]
pub struct OpenQaConfig {
    /// The bridge whose taps the API manages and whose OpenFlow rules the relay keeps.
    pub bridge: String,
    pub flows: FlowSettings,
    /// `OVS_RUNDIR`: where ovs-vswitchd serves `<bridge>.mgmt`.
    pub rundir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("D-Bus: {0}")]
    Dbus(#[from] zbus::Error),
    #[error("cannot listen for metrics on {0}: {1}")]
    Metrics(SocketAddr, std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("internal error: the OVSDB session failed: {0}")]
    Crashed(String),
}

/// Runs the relay until SIGTERM/SIGINT (Ok) or a fatal error.
pub async fn run(config: Config) -> Result<(), RunError> {
    let remotes: Vec<String> = config
        .session
        .remotes
        .iter()
        .map(|r| r.to_string())
        .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        db = remotes.join(","),
        bus = %config.bus,
        metrics = %config.metrics_listen.map_or("off".into(), |a| a.to_string()),
        openqa = config.openqa.as_ref().map_or("off", |o| o.bridge.as_str()),
        vswitchd_wait = ?config.vswitchd_wait,
        connect_timeout = ?config.session.connect_timeout,
        "starting ovs-dbus-relay"
    );
    let metrics = Metrics::new(bus::METHODS);
    let listener = match config.metrics_listen {
        Some(addr) => Some(
            http::bind(addr)
                .await
                .map_err(|e| RunError::Metrics(addr, e))?,
        ),
        None => None,
    };
    let remotes = Remote::join(&config.session.remotes);
    let store = Arc::new(Store::default());
    let shared = Shared::new(remotes, metrics.clone(), store.clone());
    let (client_tx, client) = watch::channel(None);
    let writer = bus::switch::Writer {
        shared: shared.clone(),
        client,
        vswitchd: config.vswitchd_wait,
    };
    let service = Arc::new(bus::dispatch::Service {
        relay: bus::relay::RelayInterface {
            shared: shared.clone(),
        },
        switch: bus::switch::SwitchInterface {
            writer: writer.clone(),
        },
        openqa: config
            .openqa
            .as_ref()
            .map(|openqa| bus::openqa::OpenQaSwitch {
                writer,
                bridge: openqa.bridge.clone(),
            }),
        // Two whole-switch replies at once: one can be written while the next is built.
        expensive: bus::limits::Expensive::new(2),
    });
    let connector = bus::Connector {
        target: config.bus.clone(),
        service,
    };
    let conn = connector.connect(Role::Relay).await?;
    tracing::info!(bus = %config.bus, name = bus::BUS_NAME, "owning bus name");
    let openqa = match config.openqa {
        Some(openqa) => {
            let conn = connector.connect(Role::OpenQa).await?;
            tracing::info!(bus = %config.bus, name = Role::OpenQa.name(), "owning bus name");
            let link = bus::link::supervise(connector.clone(), Role::OpenQa, conn, metrics.clone());
            let keeper = Keeper {
                bridge: openqa.bridge,
                settings: openqa.flows,
                rundir: openqa.rundir,
            };
            Some((link.1, tokio::spawn(keeper.run())))
        }
        None => None,
    };
    let (reconnected, link) =
        bus::link::supervise(connector, Role::Relay, conn.clone(), metrics.clone());
    metrics.dbus_connected.set(1);

    let notifier = Arc::new(Notifier::from_env());
    let (stop_tx, stop) = watch::channel(false);
    let http = listener.map(|listener| {
        let health_shared = shared.clone();
        let health_metrics = metrics.clone();
        // Not healthy without the bus either, or with a bus that takes nothing: nothing
        // would be published.
        let health: http::Health = Arc::new(move || {
            let stalled = health_shared.sending.waiting().filter(|w| *w > SEND_STALL);
            match (health_metrics.dbus_connected.get(), stalled) {
                (0, _) => "bus disconnected".to_owned(),
                (_, Some(waited)) => {
                    format!("bus not taking messages for {} s", waited.as_secs())
                }
                _ => health_shared.status().state.as_str().to_owned(),
            }
        });
        let mut stop = stop.clone();
        tokio::spawn(http::serve(listener, metrics.clone(), health, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let resync = Arc::new(Notify::new());
    let pending = Arc::new(Pending::default());
    let engine = Engine::new(
        store,
        pending.clone(),
        events,
        resync.clone(),
        after_apply(shared.clone()),
    );
    let engine = tokio::spawn(engine.run());
    let publisher = Publisher::new(conn.clone(), shared, pending, reconnected, notifier.clone());
    let publisher = tokio::spawn(publisher.run());
    // Spawned like the others rather than polled by `block_on`: every update hops from
    // the connection task to the session to the engine, and all of them on the one worker
    // costs no thread wake-up per hop.
    let mut session =
        tokio::spawn(Session::new(config.session, events_tx, resync, metrics, client_tx).run());

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    // Handled so that it does not kill us (its default action): there is no configuration
    // file to reload, everything comes from flags and the environment.
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let result = loop {
        tokio::select! {
            result = &mut session => break match result {
                Ok(result) => result.map_err(RunError::from),
                Err(e) => Err(RunError::Crashed(e.to_string())),
            },
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP ignored: nothing to reload (settings come from flags and the environment)");
            }
        }
    };
    notifier.stopping();
    tracing::info!("shutting down");
    session.abort();
    publisher.abort();
    engine.abort();
    link.abort();
    if let Some((link, keeper)) = openqa {
        link.abort();
        keeper.abort();
    }
    let _ = stop_tx.send(true);
    let _ = conn.release_name(bus::BUS_NAME).await;
    if let Some(http) = http {
        let _ = tokio::time::timeout(Duration::from_millis(500), http).await;
    }
    result
}

/// After every new version of the replica: wake the waiters it satisfies, set the row
/// gauges.
fn after_apply(shared: Arc<Shared>) -> OnApplied {
    let rows = TableId::PUBLISHED.map(|t| shared.metrics.rows.with_label_values(&[t.label()]));
    Box::new(move |replica, changes| {
        shared.waiters.wake(replica, changes);
        for (table, gauge) in TableId::PUBLISHED.into_iter().zip(&rows) {
            gauge.set(replica.len(table) as i64);
        }
    })
}
