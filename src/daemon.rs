//! `run`: wires the OVSDB session, the publisher, the bus connection, the metrics endpoint
//! and systemd notification together, and decides when the process ends.

use crate::bus::publisher::Publisher;
use crate::bus::relay::Shared;
use crate::bus::{self, BusError, BusTarget};
use crate::metrics::{Metrics, http};
use crate::notify::Notifier;
use crate::ovsdb::remote::Remote;
use crate::ovsdb::session::{Session, SessionConfig, SessionError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, watch};

/// Update messages waiting for the publisher before the session declares an overflow.
pub const EVENT_QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub session: SessionConfig,
    pub bus: BusTarget,
    /// `None`: no metrics endpoint (`--metrics-listen off`).
    pub metrics_listen: Option<SocketAddr>,
    /// `Some(bridge)` with `--openqa-compat`: also serve the openQA switch API for it.
    pub openqa_bridge: Option<String>,
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
}

/// Runs the relay until SIGTERM/SIGINT (Ok) or a fatal error.
pub async fn run(config: Config) -> Result<(), RunError> {
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
    let shared = Shared::new(remotes, metrics.clone());
    let (client_tx, client) = watch::channel(None);
    let writer = bus::switch::Writer {
        shared: shared.clone(),
        client,
    };
    let connector = bus::Connector {
        target: config.bus.clone(),
        writer,
        openqa_bridge: config.openqa_bridge,
    };
    let conn = connector.connect().await?;
    let (reconnected, link) = bus::link::supervise(connector, conn.clone(), metrics.clone());
    metrics.dbus_connected.set(1);
    tracing::info!(bus = %config.bus, name = bus::BUS_NAME, "owning bus name");

    let notifier = Arc::new(Notifier::from_env());
    let (stop_tx, stop) = watch::channel(false);
    let http = listener.map(|listener| {
        let health_shared = shared.clone();
        let health: http::Health =
            Arc::new(move || health_shared.status().state.as_str().to_owned());
        let mut stop = stop.clone();
        tokio::spawn(http::serve(listener, metrics.clone(), health, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let resync = Arc::new(Notify::new());
    let publisher = Publisher::new(
        conn.clone(),
        shared,
        events,
        reconnected,
        resync.clone(),
        notifier.clone(),
    )
    .await?;
    let publisher = tokio::spawn(publisher.run());
    let session = Session::new(config.session, events_tx, resync, metrics, client_tx).run();

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let result = tokio::select! {
        result = session => result.map_err(RunError::from),
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    };
    notifier.stopping();
    tracing::info!("shutting down");
    publisher.abort();
    link.abort();
    let _ = stop_tx.send(true);
    let _ = conn.release_name(bus::BUS_NAME).await;
    if let Some(http) = http {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), http).await;
    }
    result
}
