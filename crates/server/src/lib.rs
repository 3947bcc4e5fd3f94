//! Switchboard's server: a pub/sub hub that browsers reach over WebSocket and backends
//! drive over HTTP.
//!
//! # Layout
//! - [`config`]: [`Config`] with every limit and its default; TOML loading.
//! - [`admission`]: connection slots, pending (before `connect`) and connected, per
//!   address and per user.
//! - [`error`]: [`Error`] for the server, [`ClientError`](error::ClientError) codes answered
//!   to clients, and the close codes.
//! - [`protocol`]: the client protocol: commands, replies (and their result shapes), pushes.
//! - [`hub`]: channels (subscribers, presence, recent history) and users' connections.
//! - [`engine`]: the [`Store`](engine::Store) trait for durable history and mailboxes, and
//!   its in-memory implementation.
//! - [`outbox`]: per-connection bounded queues; slow consumers are disconnected.
//! - [`session`]: one client's protocol state machine, transport-independent.
//! - [`transport`]: WebSocket, Server-Sent Events and polling; the HTTP ones keep a
//!   session between requests.
//! - [`auth`]: JWT verification and minting, API key comparison.
//! - [`secrets`]: API key and token secret from config or generated into the data dir.
//! - `listen`: the accept loop (hyper HTTP/1.1 connections, accept back-off, graceful
//!   shutdown); `write_deadline`: the stalled-write deadline of every socket; `body`:
//!   request bodies read with a size limit and a deadline.
//! - [`http`]: routes, the Origin check of the upgrade and the HTTP transports, health
//!   and metrics.
//! - `api`: the server API handlers.
//! - `assets`: the browser library, `/switchboard.js` and `/switchboard.d.ts`.
//! - [`metrics`]: counters rendered for Prometheus.
//! - [`rate`]: the token bucket behind the rate limits and quotas.
//! - [`state`]: what handlers share.
//! - [`util`]: small shared helpers (a rate-limited log).

pub mod admission;
mod api;
mod assets;
pub mod auth;
mod body;
pub mod config;
#[cfg(test)]
mod doc_examples;
pub mod engine;
pub mod error;
pub mod http;
pub mod hub;
mod listen;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod rate;
pub mod secrets;
pub mod session;
pub mod state;
pub mod transport;
pub mod util;
mod write_deadline;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;
pub use error::{Error, Result};

/// Name of the SQLite database in the data directory.
pub const DATABASE_FILE: &str = "switchboard.db";

/// Opens the configured store; a SQLite file that cannot be used is a clear start-up error
/// naming it.
pub fn open_store(config: &Config) -> Result<Arc<dyn engine::Store>> {
    Ok(match config.store {
        config::StoreKind::Memory => Arc::new(engine::memory::MemoryStore::with_max_bytes(
            config.storage.max_bytes,
        )),
        config::StoreKind::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).map_err(|cause| Error::DataDir {
                path: config.data_dir.clone(),
                cause,
            })?;
            let path = config.data_dir.join(DATABASE_FILE);
            // It holds private messages: readable by its owner only. SQLite gives its WAL
            // and shared-memory files the database file's mode, so creating the (empty)
            // file first is enough.
            let mut create = std::fs::OpenOptions::new();
            create.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
            match create.open(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(cause) => return Err(Error::DataDir { path, cause }),
            }
            let options = engine::sqlite::Options::new(&config.storage);
            Arc::new(engine::sqlite::SqliteStore::open_with(&path, options)?)
        }
    })
}

/// How long shutdown waits for connections to finish their close handshakes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then closes every connection with 1001 and waits
/// (bounded) for them to finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    secrets: secrets::Secrets,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = open_store(&config)?;
    run_with_store(listener, config, secrets, store, shutdown).await
}

/// [`run`] with a store the caller opened (so it can report a bad store before it says
/// it is listening).
pub async fn run_with_store(
    listener: TcpListener,
    config: Config,
    secrets: secrets::Secrets,
    store: Arc<dyn engine::Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::default());
    let hub = Arc::new(hub::Hub::new(config.clone(), metrics, store));
    let state = Arc::new(state::AppState {
        verifier: auth::Verifier::new(&config.auth, &secrets.token_secret)?,
        api_key: secrets.api_key,
        admission: admission::Admission::new(&config.limits, hub.metrics().clone()),
        config,
        hub: hub.clone(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        http_sessions: Default::default(),
    });
    // Retention runs beside the hot path, never in it.
    let sweeper = {
        let hub = hub.clone();
        let stop = state.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        hub.sweep();
                        if let Err(err) = hub.store().sweep().await {
                            warn!(cause = %err, "store retention failed");
                        }
                    }
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    info!(addr = %listener.local_addr()?, "switchboard listening");
    let (token, hub_at_stop) = (state.shutdown.clone(), hub.clone());
    let stop = async move {
        shutdown.await;
        // Connections opening from now on see the token; those already open are told.
        token.cancel();
        hub_at_stop.disconnect_all(error::close::SHUTDOWN, "server shutting down");
    };
    listen::serve(
        listener,
        http::router(state.clone()),
        &state.config.limits,
        hub.metrics().clone(),
        stop,
    )
    .await;
    info!("shutting down: closing connections");
    state.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, state.tracker.wait())
        .await
        .is_err()
    {
        warn!("some connections did not close in time");
    }
    sweeper.abort();
    Ok(())
}
