//! `run`: wires the OVSDB session, the publisher and the bus connection together and
//! decides when the process ends.

use crate::bus::publisher::Publisher;
use crate::bus::relay::Shared;
use crate::bus::{self, BusError, BusTarget};
use crate::ovsdb::session::{Session, SessionConfig, SessionError};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// Update messages waiting for the publisher before the session declares an overflow.
const EVENT_QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub session: SessionConfig,
    pub bus: BusTarget,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("D-Bus: {0}")]
    Dbus(#[from] zbus::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the relay until SIGTERM/SIGINT (Ok) or a fatal error.
pub async fn run(config: Config) -> Result<(), RunError> {
    let remotes = config
        .session
        .remotes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let shared = Shared::new(remotes);
    let conn = bus::connect(&config.bus, shared.clone()).await?;
    tracing::info!(bus = %config.bus, name = bus::BUS_NAME, "owning bus name");

    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let resync = Arc::new(Notify::new());
    let publisher = Publisher::new(conn.clone(), shared, events, resync.clone()).await?;
    let publisher = tokio::spawn(publisher.run());
    let session = Session::new(config.session, events_tx, resync).run();

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let result = tokio::select! {
        result = session => result.map_err(RunError::from),
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    };
    publisher.abort();
    tracing::info!("shutting down");
    let _ = conn.release_name(bus::BUS_NAME).await;
    result
}
