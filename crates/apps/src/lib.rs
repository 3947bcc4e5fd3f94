//! Switchboard's built-in apps: accounts and sign-in, the home page and chat, built on the
//! hub's public extension points only (rpc handlers, server-side publish and send, routes)
//! — what a user's own backend could use too.
//!
//! [`configure`] adds the apps' namespaces to a configuration; [`mount`] opens their store
//! (`apps.db` in the data directory) and adds their routes and rpc handlers to a
//! [`Server`]. `docs/apps.md` describes what they do for the people who use them.
//!
//! # Layout
//! Modules depend on the ones listed before them, never on one after:
//! - [`error`], [`options`] (the `[apps]` settings and limits), [`rules`] (names,
//!   passwords, rooms, texts), `limit` (rate limits by key), [`metrics`];
//! - [`password`]: Argon2id hashes;
//! - [`store`]: the [`Store`](store::Store) trait and its SQLite implementation;
//! - [`assets`]: the embedded files of `web/`, one table;
//! - `http`: what the endpoints share (JSON errors, safe body reading, the cookie);
//! - `auth`: `/auth/*` (sign-in, sign-up, guests, sign-out, the token endpoint);
//! - `pages`: the pages and files, with ETags and the security headers;
//! - `calls`: what the rpc handlers share (who calls, `data`, results, store errors);
//! - `chat`: the `chat.` rpc methods;
//! - [`vote`]: the `vote.` rpc methods, the live tally on `poll:ID` and its coalescing;
//! - `ops`: the `admin.` rpc methods (the console's API tab, `/admin`);
//! - [`monitor`]: the host registry on the `metrics` namespace (an observer), its events
//!   and webhook, the hub as host `@hub`, the `monitor.` rpc methods and `POST
//!   /api/ingest`, for `/monitor` and `/logs`;
//! - [`admin`]: what the CLI does to accounts and invites.

pub mod admin;
pub mod assets;
mod auth;
mod calls;
mod chat;
pub mod error;
mod http;
mod limit;
pub mod metrics;
pub mod monitor;
mod ops;
pub mod options;
mod pages;
pub mod password;
pub mod rules;
pub mod store;
pub mod vote;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde_json::json;
use switchboard_server::config::{Namespace, NamespaceOptions, TokenAlgorithm};
use switchboard_server::{Config, Node, PublishOptions, Server};
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;

pub use error::{Error, Result};
pub use metrics::AppsMetrics;
pub use monitor::options::MonitorOptions;
pub use options::{AppsLimits, AppsOptions, Signup};
pub use vote::POLL_NAMESPACE;

use limit::{Interval, Limiter};
use store::{Room, Store, StoreError};

/// Adds the apps' namespaces to `config` when it lacks them: `room` (chat rooms, channel
/// `room:NAME`: 1000 messages kept 30 days, presence, join/leave, and no publishing by
/// clients: messages go through the `chat.post` rpc, which checks them) and `apps` (the
/// home page's live figures on `apps:stats`, room-list changes on `apps:rooms`) and
/// `poll` (a poll's live tally and state on `poll:ID`: the newest push kept a day,
/// presence for the count of watchers without join/leave notices, and no publishing by
/// clients: votes go through the `vote.cast` rpc); and the hosts' `metrics` and `logs`
/// (see [`monitor`]) as the server's defaults define them.
///
/// The apps keep to namespaces of their own, so the server's `chat:` (where clients
/// publish, as docs/protocol.md shows) stays what it is. A `room` or `apps` namespace the
/// operator configured is theirs and stays as written.
pub fn configure(config: &mut Config) {
    let room = NamespaceOptions {
        history_size: 1000,
        history_ttl: Duration::from_secs(30 * 86_400),
        presence: true,
        join_leave: true,
        publish: false,
        private: false,
        roles: Vec::new(),
    };
    let apps = NamespaceOptions {
        // The newest figures for whoever opens the home page.
        history_size: 10,
        history_ttl: Duration::from_secs(86_400),
        presence: true,
        join_leave: false,
        publish: false,
        private: false,
        roles: Vec::new(),
    };
    let poll = NamespaceOptions {
        history_size: 1,
        history_ttl: Duration::from_secs(86_400),
        presence: true,
        join_leave: false,
        publish: false,
        private: false,
        roles: Vec::new(),
    };
    for (name, options) in [
        (ROOM_NAMESPACE, room),
        ("apps", apps),
        (POLL_NAMESPACE, poll),
    ] {
        if !config.namespaces.iter().any(|ns| ns.name == name) {
            config.namespaces.push(Namespace {
                name: name.into(),
                options,
            });
        }
    }
    // The hosts' namespaces, as the server's defaults define them (the admins' only,
    // published by agent tokens): a configuration that lists namespaces of its own
    // replaces the server's defaults, and `/logs` and `/monitor` need these two.
    for ns in Config::default().namespaces {
        let wanted = ns.name == monitor::NAMESPACE || ns.name == monitor::LOGS_NAMESPACE;
        if wanted && !config.namespaces.iter().any(|have| have.name == ns.name) {
            config.namespaces.push(ns);
        }
    }
}

/// The namespace of chat rooms: room `lobby` is channel `room:lobby`.
pub const ROOM_NAMESPACE: &str = "room";

/// The mounted apps: what the binary reports at start-up, and the metrics.
#[derive(Debug, Clone)]
pub struct Apps {
    shared: Arc<Shared>,
}

impl Apps {
    /// The one-time code that creates the first administrator, when this start made one
    /// (invite-only sign-up and no account yet). The link is
    /// `http://HOST/signin?invite=CODE`.
    pub fn first_admin_invite(&self) -> Option<&str> {
        self.shared.first_invite.as_deref()
    }

    /// Whether anyone may create an account (`signup` open, or `auto` on a loopback
    /// address).
    pub fn signup_open(&self) -> bool {
        self.shared.signup_open
    }

    /// Whether only the application's backend mints tokens (the sign-in endpoints are
    /// off).
    pub fn external_tokens(&self) -> bool {
        self.shared.external
    }

    /// The apps' counters.
    pub fn metrics(&self) -> &AppsMetrics {
        &self.shared.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }
}

/// The path of an invite's link on this server.
pub fn invite_path(code: &str) -> String {
    format!("/signin?invite={code}")
}

/// What every endpoint and rpc method shares.
pub(crate) struct Shared {
    node: Node,
    store: Arc<dyn Store>,
    options: AppsOptions,
    /// `options.signup` resolved against the listen address.
    signup_open: bool,
    /// Tokens come from the application's backend only.
    external: bool,
    limits: Limits,
    metrics: AppsMetrics,
    /// Password hashes running at once.
    hashing: Semaphore,
    /// Store calls running at once. The store is one connection behind a mutex, so more
    /// threads would only wait on it: without this bound, 1,000 votes at once grew
    /// Tokio's blocking pool to 512 threads parked on that mutex (220 MiB RSS, and a
    /// 1 s convoy on one core), where queueing here costs a task each.
    store_calls: Semaphore,
    /// Room names, so a post checks its room without the database. The store stays the
    /// truth: in a group, a room another node created is read from it on the first miss
    /// (`chat::known_room`) and every few seconds (`figures`).
    rooms: Mutex<HashSet<String>>,
    /// The polls' coalesced tally pushes.
    pushes: vote::Pushes,
    /// The host registry, its options and queues.
    monitor: monitor::Monitor,
    pages: pages::Pages,
    first_invite: Option<String>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("signup_open", &self.signup_open)
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

/// The rate limits.
#[derive(Debug)]
struct Limits {
    signin_ip: Limiter<IpAddr>,
    signin_account: Limiter<String>,
    signup_ip: Limiter<IpAddr>,
    guest_ip: Limiter<IpAddr>,
    token_ip: Limiter<IpAddr>,
    posts: Limiter<String>,
    votes: Limiter<String>,
    typing: Interval<String>,
}

impl Limits {
    fn new(l: &AppsLimits) -> Limits {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        let keys = l.max_tracked;
        Limits {
            signin_ip: Limiter::per(l.signin_per_ip_per_minute, MINUTE, keys),
            signin_account: Limiter::per(l.signin_failures_per_account_per_hour, HOUR, keys),
            signup_ip: Limiter::per(l.signups_per_ip_per_hour, HOUR, keys),
            guest_ip: Limiter::per(l.guests_per_ip_per_hour, HOUR, keys),
            token_ip: Limiter::per(l.tokens_per_ip_per_minute, MINUTE, keys),
            posts: Limiter::per_second(l.posts_per_second, l.post_burst, keys),
            votes: Limiter::per_second(vote::VOTES_PER_SECOND, vote::VOTE_BURST, keys),
            typing: Interval::new(l.typing_interval, keys),
        }
    }

    fn sweep(&self) {
        self.signin_ip.sweep();
        self.signin_account.sweep();
        self.signup_ip.sweep();
        self.guest_ip.sweep();
        self.token_ip.sweep();
        self.posts.sweep();
        self.votes.sweep();
        self.typing.sweep();
    }
}

impl Shared {
    /// Runs `work` on the store, on a blocking thread.
    async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .store_calls
            .acquire()
            .await
            .map_err(|_| StoreError::Backend("the store is closed".into()))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store.as_ref()))
            .await
            .map_err(|e| StoreError::Backend(format!("the store's thread failed: {e}")))?
    }

    fn room_exists(&self, room: &str) -> bool {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(room)
    }

    fn add_room(&self, room: &str) {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.to_owned());
    }

    fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Publishes a room-list change on `apps:rooms` (best effort: the list is also
    /// `chat.rooms`).
    async fn announce_rooms(&self, value: serde_json::Value) {
        self.publish_best_effort("apps:rooms", &value).await;
    }

    async fn publish_best_effort(&self, channel: &str, value: &serde_json::Value) {
        let Ok(data) = serde_json::value::to_raw_value(value) else {
            return;
        };
        if let Err(err) = self
            .node
            .publish(channel, data, PublishOptions::default())
            .await
        {
            tracing::debug!(channel, cause = %err, "apps: a notice was not published");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The home page's figures: users online and rooms. A node alone counts its own. Nodes
/// of a group (the Redis store) count the group's, or each would publish its own share
/// on the one `apps:stats` channel and the page would show whichever came last: each
/// writes its users online to the store and reads back the union over the live nodes,
/// and takes the rooms other nodes created into its list. `None` when the store failed
/// (the last figures stay).
async fn figures(shared: &Shared, node: &str) -> Option<(usize, usize)> {
    if shared.node.config().store != switchboard_server::config::StoreKind::Redis {
        return Some((shared.node.users_online(), shared.room_count()));
    }
    let users: Vec<String> = shared
        .node
        .users_connections()
        .into_iter()
        .map(|(user, _)| user)
        .collect();
    let node = node.to_owned();
    let counted = shared
        .db(move |s| Ok((s.users_online(&node, &users, ONLINE_TTL)?, s.rooms()?)))
        .await;
    match counted {
        Ok((online, rooms)) => {
            for room in rooms {
                shared.add_room(&room.name);
            }
            Some((online, shared.room_count()))
        }
        Err(err) => {
            tracing::warn!(cause = %err, "apps: counting the group's users online failed");
            None
        }
    }
}

/// Opens the apps' store in the server's data directory and mounts them on `server`.
/// Call it within a Tokio runtime (a task keeps the figures and sweeps expired sessions).
/// With the Redis engine, open the store with [`open_store`] and use [`mount_with_store`].
pub fn mount(server: &mut Server, options: AppsOptions) -> Result<Apps> {
    let store = store::sqlite::SqliteStore::open_in(&server.node().config().data_dir)?;
    mount_with_store(server, options, Arc::new(store))
}

/// Opens the apps' store the server's configuration calls for: SQLite in the data
/// directory (`apps.db`), or, with the Redis engine, the group's Redis (keys under
/// `PREFIX:app:`), so that every node sees the same accounts, rooms and polls.
pub async fn open_store(config: &switchboard_server::Config) -> Result<Arc<dyn Store>> {
    if config.store != switchboard_server::config::StoreKind::Redis {
        let store = store::sqlite::SqliteStore::open_in(&config.data_dir)?;
        return Ok(Arc::new(store));
    }
    let settings = switchboard_server::engine::redis::RedisSettings::from_config(&config.engine);
    let client = settings
        .client()
        .await
        .map_err(|e| Error::Store(StoreError::Backend(e.to_string())))?;
    let prefix = settings.prefix.clone();
    let store =
        tokio::task::spawn_blocking(move || store::redis::RedisStore::open(client, &prefix))
            .await
            .map_err(|e| Error::Store(StoreError::Backend(e.to_string())))??;
    Ok(Arc::new(store))
}

/// [`mount`] with a store the caller opened.
pub fn mount_with_store(
    server: &mut Server,
    options: AppsOptions,
    store: Arc<dyn Store>,
) -> Result<Apps> {
    options.validate().map_err(Error::Invalid)?;
    let node = server.node();
    let config = node.config();
    let external =
        options.external_tokens_only || config.auth.token_algorithm != TokenAlgorithm::HS256;
    let signup_open = match options.signup {
        Signup::Open => true,
        Signup::Invite => false,
        Signup::Auto => config.listen.ip().is_loopback(),
    };
    let now = now_ms();
    match store.create_room(
        &Room {
            name: chat::LOBBY.into(),
            topic: String::new(),
            creator: String::new(),
        },
        usize::MAX,
        usize::MAX,
        now,
    ) {
        Ok(()) | Err(StoreError::RoomTaken) => {}
        Err(err) => return Err(err.into()),
    }
    let rooms = store.rooms()?.into_iter().map(|r| r.name).collect();
    let first_invite = if !signup_open && !external && store.account_count()? == 0 {
        Some(admin::create_invite_at(
            store.as_ref(),
            true,
            true,
            options.limits.invite_ttl,
            now,
        )?)
    } else {
        None
    };
    let (monitor, queues) = monitor::Monitor::new(options.monitor.clone());
    let shared = Arc::new(Shared {
        monitor,
        limits: Limits::new(&options.limits),
        hashing: Semaphore::new(options.limits.hash_concurrency),
        store_calls: Semaphore::new(STORE_CALLS),
        pages: pages::Pages::new(options.assets),
        rooms: Mutex::new(rooms),
        pushes: vote::Pushes::default(),
        metrics: AppsMetrics::default(),
        node,
        store,
        options,
        signup_open,
        external,
        first_invite,
    });
    if shared.options.enabled {
        server.routes(routes(shared.clone()));
        server.rpc("chat.", Arc::new(chat::Chat(shared.clone())));
        server.rpc("vote.", Arc::new(vote::Vote(shared.clone())));
        server.rpc("admin.", Arc::new(ops::Ops(shared.clone())));
        monitor::start(server, &shared, queues);
        let weak = Arc::downgrade(&shared);
        server.metrics(move || {
            weak.upgrade()
                .map(|s| s.metrics.render())
                .unwrap_or_default()
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(upkeep(Arc::downgrade(&shared)));
            runtime.spawn(vote::closer(Arc::downgrade(&shared)));
        }
    }
    Ok(Apps { shared })
}

fn routes(shared: Arc<Shared>) -> Router {
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/signin", get(pages::signin))
        .route("/chat", get(pages::chat))
        .route("/vote", get(pages::vote))
        .route("/apps/{*path}", get(pages::file))
        .route("/console", get(pages::console))
        .route("/admin", get(pages::admin))
        .route("/logs", get(pages::logs))
        .route("/monitor", get(pages::monitor))
        .layer(CompressionLayer::new());
    let auth = Router::new()
        .route("/auth/me", get(auth::me))
        .route("/auth/signin", post(auth::signin))
        .route("/auth/signup", post(auth::signup))
        .route("/auth/guest", post(auth::guest))
        .route("/auth/signout", post(auth::signout))
        .route("/auth/token", post(auth::token))
        .route("/api/ingest", post(monitor::ingest));
    pages.merge(auth).with_state(shared)
}

/// Store calls on blocking threads at once (see `Shared::store_calls`): one works, the
/// others are ready for the mutex the moment it is free.
const STORE_CALLS: usize = 4;

/// How often the home page's figures are looked at (and published when they changed).
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How often expired sessions, invites and rate-limit buckets are dropped.
const SWEEP_EVERY: u32 = 30;

/// How long a node's list of its users online counts for the group after the node wrote
/// it: three rounds of the figures, so one late round does not drop a live node's users,
/// and a node that died stops counting within seconds.
const ONLINE_TTL: Duration = Duration::from_secs(3 * STATS_EVERY.as_secs());

/// The apps' background work: the live figures on `apps:stats`, and the sweeps. Ends
/// when the server that holds the apps is gone.
async fn upkeep(shared: Weak<Shared>) {
    // This node's name among the group's lists of users online: random, since a restart
    // is a new member whose old list expires on its own.
    let node = format!("{:016x}", rand::random::<u64>());
    let mut tick = tokio::time::interval(STATS_EVERY);
    let mut last = None;
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // A failed count keeps the last figures (and the sweeps still run).
        if let Some(figures) = figures(&shared, &node).await
            && last != Some(figures)
        {
            last = Some(figures);
            let value = json!({"type": "stats", "users_online": figures.0, "rooms": figures.1});
            shared.publish_best_effort("apps:stats", &value).await;
        }
        ticks = ticks.wrapping_add(1);
        if ticks % SWEEP_EVERY == 0 {
            shared.limits.sweep();
            if let Err(err) = shared.db(|s| s.sweep(now_ms())).await {
                tracing::warn!(cause = %err, "apps: sweeping expired sessions failed");
            }
        }
    }
}
