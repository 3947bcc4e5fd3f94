//! Switchboard's server: a pub/sub hub that browsers reach over WebSocket (or SSE and
//! polling) and backends drive over HTTP.
//!
//! The façade is [`Server`] (built from a [`Config`], [`secrets::Secrets`] and a store from
//! [`open_store`]; extended with `rpc` handlers and routes; then run), or [`run`] /
//! [`run_with_store`] for a plain server; the public modules are what the binary and the tests use: the
//! configuration, errors, tokens, secrets, the protocol's types, the storage engines and
//! the metrics. Everything else is private to the crate.
//!
//! # Layout
//! Modules depend on the ones listed before them, never on one after (bottom-up):
//! - [`config`], [`error`] (the server's errors; the client's error codes as one enum,
//!   [`error::ErrorCode`], and the close codes), `util`, `rate`, [`metrics`];
//! - [`protocol`]: commands, replies (and their result shapes), pushes;
//! - [`engine`]: the [`Store`](engine::Store) trait and its memory and SQLite engines, with
//!   one behaviour suite;
//! - [`auth`], [`secrets`]: tokens and the API key;
//! - `outbox`: per-connection output (direct socket writes, a bounded queue, slow
//!   consumers);
//! - `hub`: channels (streams, the history cache, presence, the deliverer), users (their
//!   connections, mailboxes, quotas), the connection registry;
//! - `admission`: connection slots, pending and connected;
//! - `session`: one client's protocol state machine over a small context (hub, verifier,
//!   slots, configuration), transport-independent and unit-tested;
//! - `net`: the accept loop, TLS ([`Tls`]), the write deadline, request bodies, client
//!   addresses;
//! - `transport`: WebSocket, SSE and polling (HTTP sessions with their replay buffer), the
//!   Origin check;
//! - `http`: the routes, the Host check, the server API, health, metrics, the browser
//!   library's assets;
//! - [`rpc`] (the `rpc` command's handlers and its HTTP proxy to the application's
//!   backend) and [`Node`] (the hub as the server's extensions see it), the extension
//!   points; [`Server`] puts everything together.

pub mod auth;
mod cluster;
pub mod config;
#[cfg(test)]
mod doc_examples;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod protocol;
pub mod rpc;
pub mod secrets;

mod admission;
mod http;
mod hub;
mod net;
mod node;
mod outbox;
mod rate;
mod session;
mod transport;
mod util;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use config::Config;
pub use error::{Error, Result};
pub use net::tls::{OverTls, Tls, over_tls};
pub use node::{HistoryRequest, Node, PublishOptions};

/// The browser library (`GET /switchboard.js`), for an extension that serves it under a
/// URL of its own (the built-in apps serve it beside their pages, under a versioned path
/// a browser may cache for good).
pub const BROWSER_LIBRARY: &str = http::SWITCHBOARD_JS;

/// Name of the SQLite database in the data directory.
pub const DATABASE_FILE: &str = "switchboard.db";

/// The configured engine, opened: a store of this node's own, or the Redis engine that
/// makes it a member of a group.
#[derive(Debug, Clone)]
pub enum Engine {
    /// SQLite or memory: this node alone.
    Local(Arc<dyn engine::Store>),
    /// Redis: one node of a group that behaves as one hub.
    Redis(Arc<engine::redis::RedisEngine>),
}

/// Opens the configured engine ([`open_store`] for SQLite and memory; Redis is connected
/// to, and a Redis that does not answer is a clear start-up error).
pub async fn open_engine(config: &Config) -> Result<Engine> {
    if config.store != config::StoreKind::Redis {
        return open_store(config).map(Engine::Local);
    }
    let settings = engine::redis::RedisSettings::from_config(&config.engine);
    let engine = engine::redis::RedisEngine::connect(&settings)
        .await
        .map_err(|cause| {
            Error::Config(format!(
                "cannot use Redis at {}: {cause}",
                config::redact_url(&settings.url)
            ))
        })?;
    Ok(Engine::Redis(Arc::new(engine)))
}

/// Opens the configured store; a SQLite file that cannot be used is a clear start-up error
/// naming it. The Redis engine is opened with [`open_engine`].
pub fn open_store(config: &Config) -> Result<Arc<dyn engine::Store>> {
    Ok(match config.store {
        config::StoreKind::Redis => {
            return Err(Error::Config(
                "the Redis engine is opened with open_engine".into(),
            ));
        }
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
    Server::new(config, secrets, store)?
        .run(listener, shutdown)
        .await
}

/// A server built and not yet serving: the place to add extensions (`rpc` handlers,
/// routes) before [`Server::run`]. [`Server::node`] is the extensions' handle on the hub.
///
/// ```no_run
/// # async fn example(config: switchboard_server::Config, secrets: switchboard_server::secrets::Secrets) -> switchboard_server::Result<()> {
/// let store = switchboard_server::open_store(&config)?;
/// let mut server = switchboard_server::Server::new(config, secrets, store)?;
/// let node = server.node(); // publish, send, presence… from the extension's code
/// server.routes(axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" })));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// server.run(listener, std::future::pending()).await
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    secrets: secrets::Secrets,
    hub: Arc<hub::Hub>,
    rpc: rpc::Handlers,
    routes: axum::Router,
    metrics: Vec<metrics::Source>,
    observers: observe::Observers,
    /// The group this node is a member of (the Redis engine).
    cluster: Option<Arc<cluster::Cluster>>,
    /// TLS on the listening port, when `[tls]` is configured.
    tls: Option<Tls>,
}

impl Server {
    /// Checks the configuration and builds the hub over `engine` ([`open_engine`]). With
    /// Redis, the node joins its group at once, so that extensions publishing before
    /// [`Server::run`] already publish to the group; call it within a Tokio runtime.
    pub fn with_engine(
        config: Config,
        secrets: secrets::Secrets,
        engine: Engine,
    ) -> Result<Server> {
        match engine {
            Engine::Local(store) => Server::new(config, secrets, store),
            Engine::Redis(redis) => {
                let mut server = Server::new(config, secrets, redis.clone())?;
                let events = Arc::new(hub::Remote(Arc::downgrade(&server.hub)));
                let ttl = server.config.engine.presence_ttl;
                let cluster = cluster::Cluster::start(redis, ttl, events);
                server.hub.set_cluster(cluster.clone());
                server.cluster = Some(cluster);
                Ok(server)
            }
        }
    }

    /// Checks the configuration and builds the hub over `store`.
    pub fn new(
        config: Config,
        secrets: secrets::Secrets,
        store: Arc<dyn engine::Store>,
    ) -> Result<Server> {
        config.validate()?;
        // Read now: a missing or mismatched key stops the start before anything listens.
        let tls = Tls::load(&config.tls)?;
        let config = Arc::new(config);
        let metrics = Arc::new(metrics::Metrics::default());
        let hub = Arc::new(hub::Hub::new(config.clone(), metrics, store));
        Ok(Server {
            rpc: rpc::Handlers::new(&config.rpc)?,
            config,
            secrets,
            hub,
            routes: axum::Router::new(),
            metrics: Vec::new(),
            observers: observe::Observers::default(),
            cluster: None,
            tls,
        })
    }

    /// The server's TLS, when `[tls]` is configured: [`Tls::reload`] reads the certificate
    /// and key again (the binary calls it on SIGHUP).
    pub fn tls(&self) -> Option<Tls> {
        self.tls.clone()
    }

    /// The extensions' handle on the hub.
    pub fn node(&self) -> Node {
        Node {
            hub: self.hub.clone(),
            config: self.config.clone(),
            token_secret: Arc::from(self.secrets.token_secret.as_str()),
            api_key: Arc::from(self.secrets.api_key.as_str()),
        }
    }

    /// Answers every `rpc` method that starts with `prefix` with `handler` (the longest
    /// matching prefix wins; see [`rpc`]).
    pub fn rpc(&mut self, prefix: &str, handler: Arc<dyn rpc::RpcHandler>) {
        self.rpc.add(prefix, handler);
    }

    /// Adds routes beside the server's own, behind the same Host check. A path the
    /// server already serves (`/ws`, `/api/…`) cannot be taken: the merge panics at start,
    /// as axum's does.
    pub fn routes(&mut self, router: axum::Router) {
        self.routes = std::mem::take(&mut self.routes).merge(router);
    }

    /// Adds an extension's metrics to `GET /metrics`: `render` is called on every scrape
    /// and returns Prometheus text (its own `# HELP`/`# TYPE` lines, names outside the
    /// server's `switchboard_` ones, e.g. `switchboard_apps_…`).
    pub fn metrics(&mut self, render: impl Fn() -> String + Send + Sync + 'static) {
        self.metrics.push(metrics::Source(Arc::new(render)));
    }

    /// Tells `observer` of every publication committed in `namespace` (a name without
    /// `:` is in the namespace `""`). See [`observe::Observer`] for what it may do there.
    pub fn observe(&mut self, namespace: &str, observer: Arc<dyn observe::Observer>) {
        self.observers.add(namespace, observer);
    }

    /// Serves until `shutdown` resolves, then closes every connection with 1001 and waits
    /// (bounded) for them to finish.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Server {
            config,
            secrets,
            hub,
            rpc,
            routes,
            metrics,
            observers,
            cluster,
            tls,
        } = self;
        if let Some(cluster) = &cluster {
            cluster.observe(&observers.namespaces());
        }
        hub.set_observers(observers);
        let session = Arc::new(session::Context {
            verifier: auth::Verifier::new(&config.auth, &secrets.token_secret)?,
            admission: admission::Admission::new(&config.limits, hub.metrics().clone()),
            config: config.clone(),
            hub: hub.clone(),
            rpc: Arc::new(rpc),
        });
        let transports = Arc::new(transport::Shared {
            session,
            http_sessions: Default::default(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let state = http::AppState {
            transports: transports.clone(),
            api: Arc::new(http::ApiState {
                hub: hub.clone(),
                api_key: secrets.api_key,
                config: config.clone(),
                extra_metrics: metrics,
            }),
        };
        // Retention runs beside the hot path, never in it.
        let sweeper = {
            let hub = hub.clone();
            let stop = transports.shutdown.clone();
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
        if let Some(cluster) = &cluster {
            let host = transport::http_session::Host::new(Arc::downgrade(&transports));
            cluster.set_session_host(Arc::new(host));
        }
        let heartbeat = cluster.as_ref().map(|_| {
            let (hub, stop) = (hub.clone(), transports.shutdown.clone());
            let period = config.engine.presence_ttl / 3;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    if let Err(err) = hub.heartbeat().await {
                        warn!(cause = %err, "the group's heartbeat failed; retrying");
                    }
                }
            })
        });
        // The binary announces the address in its start-up block; this is for embedders.
        debug!(addr = %listener.local_addr()?, "switchboard listening");
        let (token, hub_at_stop) = (transports.shutdown.clone(), hub.clone());
        let stop = async move {
            shutdown.await;
            // Connections opening from now on see the token; those already open are told.
            token.cancel();
            hub_at_stop.disconnect_all(error::close::SHUTDOWN, "server shutting down");
        };
        net::listen::serve(
            listener,
            http::router(state, routes),
            tls,
            &config.limits,
            hub.metrics().clone(),
            stop,
        )
        .await;
        info!("shutting down: closing connections");
        transports.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, transports.tracker.wait())
            .await
            .is_err()
        {
            warn!("some connections did not close in time");
        }
        sweeper.abort();
        if let Some(heartbeat) = heartbeat {
            heartbeat.abort();
        }
        if let Some(cluster) = cluster {
            cluster.leave().await;
        }
        Ok(())
    }
}
