//! Server configuration: every limit with its documented default.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (`--config`), environment
//! variables (`SWITCHBOARD_*`, applied by the binary), then command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8000`: loopback unless told otherwise.
    /// Written `IP:PORT` or `HOST:PORT`; a host name is resolved when the configuration is
    /// read (see [`address::parse`]).
    #[serde(deserialize_with = "address::deserialize")]
    pub listen: SocketAddr,
    /// Where the secrets and the database (`switchboard.db`) live. Default
    /// `./switchboard-data`.
    pub data_dir: PathBuf,
    /// Where history and mailboxes are kept: `sqlite` (default; durable, in
    /// `DATA_DIR/switchboard.db`), `memory` (lost on restart; for tests and demos), or
    /// `redis` (several nodes as one hub, see [`EngineConfig`]). `--engine` on the
    /// command line.
    pub store: StoreKind,
    /// The Redis engine's settings (with `store = "redis"`).
    pub engine: EngineConfig,
    /// Origins allowed to open a WebSocket or use SSE and polling, e.g.
    /// `https://app.example.com`. The server's own origin (the `Host` the request was sent
    /// to) is always allowed; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Host names (with or without a port) requests may be addressed to; others are
    /// refused with 421, which defeats DNS rebinding (a hostile name resolving to this
    /// server's address). `*` allows any. Default (empty): when listening on a loopback
    /// address, only loopback names and addresses (`localhost`, `*.localhost`,
    /// `127.0.0.0/8`, `[::1]`); otherwise any host.
    pub allowed_hosts: Vec<String>,
    /// Addresses of reverse proxies in front of the server. A request from one of them
    /// is counted against the per-address limits by the address its `X-Forwarded-For`
    /// names (the nearest one that is not itself a trusted proxy). Default: none, so every
    /// client is its TCP peer.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Whether clients may connect without a token (as anonymous users). Default false.
    pub allow_anonymous: bool,
    /// Token and API key settings.
    pub auth: AuthConfig,
    /// Per-connection limits.
    pub limits: Limits,
    /// Which transports are served.
    pub transports: Transports,
    /// The `rpc` command: where methods no extension of the server handles are sent.
    pub rpc: RpcConfig,
    /// Offline mailbox limits.
    pub mailbox: MailboxConfig,
    /// Budgets of the store (disk, or memory with `store = "memory"`) and of the hub's
    /// in-memory history cache.
    pub storage: StorageConfig,
    /// Options of channels whose name has no `namespace:` prefix.
    pub default_namespace: NamespaceOptions,
    /// Named namespaces: a channel `chat:lobby` takes the options of namespace `chat`.
    /// A channel whose namespace is not listed is refused (error 102).
    pub namespaces: Vec<Namespace>,
    /// `[tls]`: HTTPS and `wss://` on the listening port (`--tls-cert`, `--tls-key`).
    pub tls: TlsConfig,
    /// `[deflate]`: permessage-deflate on WebSocket connections.
    pub deflate: DeflateSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("switchboard-data"),
            store: StoreKind::Sqlite,
            engine: EngineConfig::default(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            allow_anonymous: false,
            auth: AuthConfig::default(),
            limits: Limits::default(),
            transports: Transports::default(),
            rpc: RpcConfig::default(),
            mailbox: MailboxConfig::default(),
            storage: StorageConfig::default(),
            default_namespace: NamespaceOptions::default(),
            namespaces: default_namespaces(),
            tls: TlsConfig::default(),
            deflate: DeflateSettings::default(),
        }
    }
}

/// `[deflate]`: permessage-deflate (RFC 7692) on WebSocket connections, negotiated when
/// the client offers it (every browser does).
///
/// By default the server keeps no compression context between messages, in either
/// direction: a publication is then compressed once and the same frame goes to every
/// subscriber, and an idle connection holds no zlib state. Keeping the server's context
/// compresses a stream of similar messages better, at the price of a compressor (about
/// 256 KiB with the default window) per connection and a compression per subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeflateSettings {
    /// Whether to accept a client's offer. Default true.
    pub enabled: bool,
    /// zlib level, 1 (fastest) to 9 (smallest). Default 6.
    pub level: u32,
    /// Messages with a shorter payload are sent uncompressed (a deflate block's overhead
    /// makes small ones larger). Default 64 bytes.
    pub min_size: usize,
    /// Whether the server keeps its compression context from one message to the next
    /// (see above). Default false.
    pub server_context_takeover: bool,
    /// Whether clients may keep theirs, which makes the server keep an inflater (about
    /// 40 KiB) per connection. Default false.
    pub client_context_takeover: bool,
    /// The server's window, as a power of two, 9 to 15. Default 15.
    pub server_max_window_bits: u8,
    /// The largest window clients may compress with, 8 to 15. Default 15.
    pub client_max_window_bits: u8,
}

impl Default for DeflateSettings {
    fn default() -> Self {
        DeflateSettings {
            enabled: true,
            level: 6,
            min_size: 64,
            server_context_takeover: false,
            client_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

impl DeflateSettings {
    /// The WebSocket layer's settings for these.
    pub fn to_ws(&self) -> switchboard_ws::DeflateConfig {
        switchboard_ws::DeflateConfig {
            enabled: self.enabled,
            level: self.level,
            min_size: self.min_size,
            context_takeover: self.server_context_takeover,
            peer_context_takeover: self.client_context_takeover,
            max_window_bits: self.server_max_window_bits,
            peer_max_window_bits: self.client_max_window_bits,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(1..=9).contains(&self.level) {
            return Err(Error::Config("deflate.level must be 1 to 9".into()));
        }
        if !(9..=15).contains(&self.server_max_window_bits) {
            return Err(Error::Config(
                "deflate.server_max_window_bits must be 9 to 15".into(),
            ));
        }
        if !(8..=15).contains(&self.client_max_window_bits) {
            return Err(Error::Config(
                "deflate.client_max_window_bits must be 8 to 15".into(),
            ));
        }
        Ok(())
    }
}

/// `[tls]`: TLS on the listening port. With `cert` and `key` set, the port speaks HTTPS
/// and `wss://` only (TLS 1.2 and 1.3); the files are read again on SIGHUP.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM: the server's certificate first, then the intermediates.
    pub cert: Option<PathBuf>,
    /// The private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC), matching the certificate.
    pub key: Option<PathBuf>,
    /// `Strict-Transport-Security: max-age=…` on every TLS response, e.g. `"365d"`; `"off"`
    /// (the default) sends none. Off by default because a browser keeps it for the whole
    /// max-age: set it once the certificate is one browsers trust, never for a test
    /// certificate on `localhost`.
    #[serde(deserialize_with = "hsts::deserialize")]
    pub hsts: Option<Duration>,
}

impl TlsConfig {
    /// Whether TLS is on (a certificate and a key are configured).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's path only: never anything read from it.
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("hsts", &self.hsts)
            .finish()
    }
}

/// `tls.hsts`: `"off"`, or a max-age written as a duration.
pub mod hsts {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Parses `off` (no header) or a duration (`365d`, `31536000`).
    pub fn parse(text: &str) -> Result<Option<Duration>, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        super::duration::parse(text)
            .map(Some)
            .ok_or_else(|| format!("tls.hsts {text:?}: use \"off\" or a max-age such as \"365d\""))
    }

    /// serde: `"off"`, a duration string, or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Some(Duration::from_secs(s))),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// The namespaces of the built-in apps, so `switchboard serve` works without a config.
fn default_namespaces() -> Vec<Namespace> {
    let chat = NamespaceOptions {
        history_size: 100,
        history_ttl: Duration::from_secs(24 * 3600),
        presence: true,
        join_leave: true,
        publish: true,
        private: false,
        roles: Vec::new(),
    };
    vec![
        Namespace {
            name: "chat".into(),
            options: chat.clone(),
        },
        Namespace {
            name: "vote".into(),
            options: NamespaceOptions {
                presence: false,
                join_leave: false,
                ..chat.clone()
            },
        },
        // Hosts' logs and vital signs, from `switchboard agent`: readable by
        // administrators only, published only by tokens scoped to the host.
        Namespace {
            name: "logs".into(),
            options: NamespaceOptions {
                history_size: 1000,
                history_ttl: Duration::from_secs(24 * 3600),
                presence: false,
                join_leave: false,
                publish: false,
                private: true,
                roles: vec!["admin".into()],
            },
        },
        // Presence and join/leave tell an agent when someone watches its host.
        Namespace {
            name: "metrics".into(),
            options: NamespaceOptions {
                history_size: 1000,
                history_ttl: Duration::from_secs(3600),
                presence: true,
                join_leave: true,
                publish: false,
                private: true,
                roles: vec!["admin".into()],
            },
        },
    ]
}

/// Which storage engine keeps history and mailboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in the data directory: survives restarts and crashes.
    #[default]
    Sqlite,
    /// In memory: lost on restart.
    Memory,
    /// In Redis, shared by every node of a group ([`EngineConfig`]).
    Redis,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sqlite" => Ok(StoreKind::Sqlite),
            "memory" => Ok(StoreKind::Memory),
            "redis" => Ok(StoreKind::Redis),
            other => Err(format!(
                "unknown engine {other:?}: use sqlite, memory or redis"
            )),
        }
    }
}

/// The Redis engine (`store = "redis"`): every node configured with the same Redis (and
/// prefix) is a member of one group, and they behave as one hub.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` (`rediss://` is not supported). With Sentinel,
    /// the host is ignored and the password and database are used for the master.
    /// Default `redis://127.0.0.1:6379/0`. `--redis-url` on the command line.
    pub redis_url: String,
    /// Prefix of every Redis key and pub/sub channel, so several groups can share one
    /// Redis. Default `switchboard`.
    pub prefix: String,
    /// Sentinel addresses (`HOST:PORT`); the master is asked of them, and asked again
    /// after a failover. Default: none (the URL's host is the server).
    pub sentinels: Vec<String>,
    /// The master's name at the Sentinels. Default `mymaster`.
    pub master: String,
    /// How long a node's presence entries (and the node itself) outlive its last
    /// heartbeat (every third of it): a node killed has its subscribers' leave events
    /// published by the other nodes within about this long. Default 15 s.
    #[serde(with = "duration")]
    pub presence_ttl: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            redis_url: "redis://127.0.0.1:6379/0".into(),
            prefix: "switchboard".into(),
            sentinels: Vec::new(),
            master: "mymaster".into(),
            presence_ttl: Duration::from_secs(15),
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    /// The URL's password stays out of logs and debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("prefix", &self.prefix)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("presence_ttl", &self.presence_ttl)
            .finish()
    }
}

/// A URL with its password (the user-info part) replaced.
pub fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://(credentials)@{host}")
        }
        _ => url.to_owned(),
    }
}

/// Token and API key settings. Secrets never have a built-in default: without them in the
/// config or environment, the first start generates them into the data directory.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Key for the server API (`X-API-Key`). Default: generated into `DATA_DIR/api-key`.
    pub api_key: Option<String>,
    /// HMAC secret for HS256 tokens. Default: generated into `DATA_DIR/token-secret`.
    pub token_secret: Option<String>,
    /// `HS256` (default), `RS256` or `ES256`.
    pub token_algorithm: TokenAlgorithm,
    /// PEM file with the public key that verifies RS256/ES256 tokens.
    pub token_public_key_file: Option<PathBuf>,
    /// The audience tokens must name in their `aud` claim. Default: none, and an `aud`
    /// claim is then ignored.
    pub audience: Option<String>,
}

// By hand: a configuration printed for debugging must not print the secrets in it.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| s.as_ref().map(|_| "(set)");
        f.debug_struct("AuthConfig")
            .field("api_key", &set(&self.api_key))
            .field("token_secret", &set(&self.token_secret))
            .field("token_algorithm", &self.token_algorithm)
            .field("token_public_key_file", &self.token_public_key_file)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Algorithms accepted for connection tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TokenAlgorithm {
    /// HMAC with SHA-256 and the shared `token_secret`.
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256; verified with `token_public_key_file`.
    RS256,
    /// ECDSA P-256 with SHA-256; verified with `token_public_key_file`.
    ES256,
}

/// Limits per connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most connected clients (WebSocket connections and HTTP sessions that sent a
    /// successful `connect`) at once. While all are taken, new WebSockets and sessions
    /// are refused with HTTP 503, and a `connect` that finds none gets error 118 and close
    /// code 1013. Default 20,000.
    pub max_connections: usize,
    /// Most connections and HTTP sessions that have not yet sent a successful `connect`,
    /// at once. They hold no `max_connections` slot and each must connect within
    /// `connect_timeout`, so clients that never authenticate cannot starve those that do.
    /// More are refused with HTTP 503. Default 2,000.
    pub max_pending: usize,
    /// Most such unauthenticated connections and sessions from one client address. More
    /// are refused with HTTP 503. Default 256.
    pub pending_per_ip: usize,
    /// Most connected clients of one user (the token's `sub`; anonymous clients count
    /// per address). A `connect` past it gets error 118 and close code 1013. Default 100.
    pub connections_per_user: usize,
    /// Largest WebSocket message (a command), in bytes; larger frames close with 1009.
    /// Default 64 KiB.
    pub max_message_size: usize,
    /// Largest `data` of a publication or private message, in bytes; larger ones get
    /// error 114 and the connection stays. Default 32 KiB.
    pub max_payload_size: usize,
    /// Messages waiting to be written to one connection before it is disconnected as a
    /// slow consumer (close 4004). Default 1024.
    pub outbox_messages: usize,
    /// Bytes waiting to be written to one connection before the same. Default 4 MiB.
    pub outbox_bytes: usize,
    /// The kernel's send buffer of each accepted socket (SO_SNDBUF; Linux doubles it), or
    /// 0 for the kernel's autotuning. Bounded, so a client that stops reading fills it
    /// soon and then the outbox, which cuts it off (4004), instead of parking up to
    /// 4 MB per connection in the kernel first. Default 256 KiB: ample for real-time
    /// traffic at any realistic round trip.
    pub socket_send_buffer: usize,
    /// Commands per second a connection may send (token bucket refill). Default 100.
    pub commands_per_second: u32,
    /// Bytes of `data` per second one user may publish and send, over all their
    /// connections (anonymous clients: per connection). Past it, commands get error 111.
    /// Default 256 KiB.
    pub publish_bytes_per_second: usize,
    /// Bytes of `data` a user may publish and send in a burst. Must be at least
    /// `max_payload_size`. Default 1 MiB.
    pub publish_bytes_burst: usize,
    /// Commands a connection may send in a burst. Default 200.
    pub command_burst: u32,
    /// Commands refused for the rate in a row before the connection is closed (4005).
    /// Default 20.
    pub rate_strikes: u32,
    /// Channels one connection may subscribe to. Default 256.
    pub max_subscriptions: usize,
    /// Idle time after which the server pings a connection. Default 25 s.
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    /// Time to answer a ping before the connection is closed as dead. Default 10 s.
    #[serde(with = "duration")]
    pub pong_timeout: Duration,
    /// Time a new connection has to send `connect` (close 4007 after). Default 10 s.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Time a client has to send a request's head, and longest idle time of a kept-alive
    /// HTTP connection between requests. Default 30 s.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (`/poll`, `/sse/send`, `/api/*`);
    /// past it the request gets 408 and the connection is closed. Default 10 s.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Longest time a write to a client's socket may stall (the client stopped reading):
    /// past it the socket is closed. Covers every HTTP response and SSE stream;
    /// WebSockets are cut off sooner by the outbox bound. Default 30 s.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// Longest time a long poll is held open when there is nothing to deliver. Default 25 s,
    /// under the 30 s or more after which proxies commonly cut an idle request.
    #[serde(with = "duration")]
    pub poll_timeout: Duration,
    /// Time an HTTP session (SSE or polling) lives with no open stream and no poll before
    /// it ends, as a dropped WebSocket would. Must be longer than `poll_timeout`.
    /// Default 60 s.
    #[serde(with = "duration")]
    pub session_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            max_pending: 2_000,
            pending_per_ip: 256,
            connections_per_user: 100,
            max_message_size: 64 << 10,
            max_payload_size: 32 << 10,
            outbox_messages: 1024,
            outbox_bytes: 4 << 20,
            socket_send_buffer: 256 << 10,
            commands_per_second: 100,
            publish_bytes_per_second: 256 << 10,
            publish_bytes_burst: 1 << 20,
            command_burst: 200,
            rate_strikes: 20,
            max_subscriptions: 256,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            poll_timeout: Duration::from_secs(25),
            session_idle: Duration::from_secs(60),
        }
    }
}

/// The `rpc` command's proxy (`[rpc]`): methods that no extension of the server claims
/// are POSTed to the application's backend, so a Flask or Django app answers client calls
/// without hosting WebSockets (see docs/protocol.md, `rpc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// The backend's endpoint, `http://HOST:PORT/PATH`. Default none: such methods get
    /// error 104.
    pub proxy_url: Option<String>,
    /// How long a call may take, the backend's answer included; then error 100.
    /// Default 5 s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Bytes of the backend's answer read at most; a longer one is error 100. Default
    /// 1 MiB.
    pub max_response_bytes: usize,
    /// Calls to the backend in flight at once over the whole server; a call past it
    /// waits (within `timeout`). Default 64.
    pub max_concurrent: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            proxy_url: None,
            timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
            max_concurrent: 64,
        }
    }
}

/// Which transports the server answers. A disabled one's endpoint answers 404, as if it
/// did not exist: the way to test a client against a proxy that blocks it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Transports {
    /// WebSocket at `/ws`. Default true.
    pub websocket: bool,
    /// Server-Sent Events at `/sse` and `/sse/send`. Default true.
    pub sse: bool,
    /// Long and short polling at `/poll`. Default true.
    pub polling: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            websocket: true,
            sse: true,
            polling: true,
        }
    }
}

/// Offline mailbox limits. Messages from users and messages from the server API are
/// counted apart, so users filling someone's mailbox never crowd out the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxConfig {
    /// Unacknowledged messages from users kept per user; past it, users' messages to them
    /// are refused (error 115). Default 1000.
    pub size: usize,
    /// Unacknowledged messages from one sender kept in one user's mailbox; past it, that
    /// sender's messages to them are refused (error 115). Default 100.
    pub per_sender: usize,
    /// Unacknowledged messages from the server API kept per user, apart from `size`;
    /// past it, `POST /api/send` to them gets 507. Default 1000.
    pub server_size: usize,
    /// How long a message waits for its user. Default 7 days.
    #[serde(with = "duration")]
    pub ttl: Duration,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            size: 1000,
            per_sender: 100,
            server_size: 1000,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What the store and the hub's history cache may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Bytes the store may hold: the database file with `store = "sqlite"`, the stored
    /// history and mailboxes with `store = "memory"`. Past it, new publications that
    /// keep history and new private messages are refused (error 117, HTTP 507) until
    /// retention frees room; deletions always proceed. Default 1 GiB.
    pub max_bytes: u64,
    /// Free space the SQLite store leaves on its filesystem: new writes are refused
    /// (error 117) while less is free, before the disk is full. Default 64 MiB.
    pub min_free_bytes: u64,
    /// Bytes of recent history the hub keeps in memory, over all channels, to answer
    /// recovery and `history` without reading the store. Past it, the oldest cached
    /// publications are dropped from memory (not from the store). Default 64 MiB.
    pub history_cache_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            max_bytes: 1 << 30,
            min_free_bytes: 64 << 20,
            history_cache_bytes: 64 << 20,
        }
    }
}

/// A named namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// The prefix before `:` in channel names.
    pub name: String,
    /// Its options.
    #[serde(flatten)]
    pub options: NamespaceOptions,
}

/// What a channel does, per namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Publications kept for history and recovery; 0 keeps none. Default 0.
    pub history_size: usize,
    /// How long publications stay in history. Default 0 (none kept).
    #[serde(with = "duration")]
    pub history_ttl: Duration,
    /// Whether `presence` may be asked. Default false.
    pub presence: bool,
    /// Whether subscribers get join/leave pushes. Default false.
    pub join_leave: bool,
    /// Whether clients may publish (the server API always may). Default false.
    pub publish: bool,
    /// Whether subscribing needs the channel in the token's `channels` claim.
    /// Default false.
    pub private: bool,
    /// Roles that open every channel of a private namespace (subscribe, history,
    /// presence) without listing them in `channels`, e.g. `["admin"]`. Default none.
    pub roles: Vec<String>,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            history_size: 0,
            history_ttl: Duration::ZERO,
            presence: false,
            join_leave: false,
            publish: false,
            private: false,
            roles: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors, so typos do not pass silently.
    pub fn from_file(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::ConfigRead {
            path: path.to_owned(),
            cause,
        })?;
        Self::from_toml(&text).map_err(|err| match err {
            Error::Config(message) => Error::Config(format!("{}: {message}", path.display())),
            Error::Secret(message) => Error::Secret(format!("{}: {message}", path.display())),
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        self.deflate.validate()?;
        for ns in &self.namespaces {
            if ns.name.is_empty() || !ns.name.chars().all(channel_char) || ns.name.contains(':') {
                return Err(Error::Config(format!(
                    "invalid namespace name {:?}",
                    ns.name
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.namespaces.iter().find(|ns| !seen.insert(&ns.name)) {
            return Err(Error::Config(format!(
                "namespace {:?} is defined twice",
                dup.name
            )));
        }
        if self.store == StoreKind::Redis {
            let e = &self.engine;
            let scheme = e.redis_url.split_once("://").map(|(s, _)| s);
            if scheme != Some("redis") {
                return Err(Error::Config(format!(
                    "engine.redis_url {} must be a redis:// URL",
                    redact_url(&e.redis_url)
                )));
            }
            if e.prefix.is_empty() || e.prefix.contains(['{', '}', ' ']) {
                return Err(Error::Config(
                    "engine.prefix must be non-empty, without braces or spaces".into(),
                ));
            }
            if e.presence_ttl < Duration::from_secs(1) {
                return Err(Error::Config(
                    "engine.presence_ttl must be 1s or more".into(),
                ));
            }
        }
        let rpc = &self.rpc;
        if let Some(url) = &rpc.proxy_url {
            let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if scheme.as_deref() != Some("http") {
                return Err(Error::Config(format!(
                    "rpc.proxy_url {url:?} must be an http:// URL (the backend's endpoint)"
                )));
            }
        }
        if rpc.timeout.is_zero() || rpc.max_concurrent == 0 || rpc.max_response_bytes == 0 {
            return Err(Error::Config(
                "rpc.timeout, rpc.max_concurrent and rpc.max_response_bytes must be above 0".into(),
            ));
        }
        let l = &self.limits;
        for (name, value) in [
            ("max_connections", l.max_connections),
            ("max_pending", l.max_pending),
            ("pending_per_ip", l.pending_per_ip),
            ("connections_per_user", l.connections_per_user),
            ("publish_bytes_per_second", l.publish_bytes_per_second),
            ("max_message_size", l.max_message_size),
            ("max_payload_size", l.max_payload_size),
            ("outbox_messages", l.outbox_messages),
            ("outbox_bytes", l.outbox_bytes),
            ("commands_per_second", l.commands_per_second as usize),
            ("command_burst", l.command_burst as usize),
            ("rate_strikes", l.rate_strikes as usize),
            ("max_subscriptions", l.max_subscriptions),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("limits.{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("ping_interval", l.ping_interval),
            ("pong_timeout", l.pong_timeout),
            ("connect_timeout", l.connect_timeout),
            ("header_timeout", l.header_timeout),
            ("body_timeout", l.body_timeout),
            ("write_timeout", l.write_timeout),
            ("poll_timeout", l.poll_timeout),
            ("session_idle", l.session_idle),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!(
                    "limits.{name} must be longer than 0"
                )));
            }
        }
        // Otherwise a client waiting in a long poll would count as gone.
        if l.session_idle <= l.poll_timeout {
            return Err(Error::Config(
                "limits.session_idle must be longer than limits.poll_timeout".into(),
            ));
        }
        if self.limits.max_payload_size > self.limits.max_message_size {
            return Err(Error::Config(
                "limits.max_payload_size must not exceed limits.max_message_size".into(),
            ));
        }
        // Otherwise a payload under the size limit could never be published.
        if l.publish_bytes_burst < l.max_payload_size {
            return Err(Error::Config(
                "limits.publish_bytes_burst must be at least limits.max_payload_size".into(),
            ));
        }
        let m = &self.mailbox;
        for (name, value) in [
            ("size", m.size),
            ("per_sender", m.per_sender),
            ("server_size", m.server_size),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("mailbox.{name} must be at least 1")));
            }
        }
        if self.storage.max_bytes == 0 {
            return Err(Error::Config("storage.max_bytes must be at least 1".into()));
        }
        // A secret written in the file is checked here, so the error names the file.
        for (kind, value, setting) in [
            (SecretKind::ApiKey, &self.auth.api_key, "auth.api_key"),
            (
                SecretKind::TokenSecret,
                &self.auth.token_secret,
                "auth.token_secret",
            ),
        ] {
            if let Some(value) = value {
                check_secret(kind, value, setting)?;
            }
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(Error::Config(
                    "tls.cert is set but tls.key is not (--tls-key): TLS needs both".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "tls.key is set but tls.cert is not (--tls-cert): TLS needs both".into(),
                ));
            }
            _ => {}
        }
        if self.auth.audience.as_deref() == Some("") {
            return Err(Error::Config(
                "auth.audience is empty: leave it out, or name the audience".into(),
            ));
        }
        Ok(())
    }

    /// The options for a channel, or `None` when its namespace is unknown.
    pub fn channel_options(&self, channel: &str) -> Option<&NamespaceOptions> {
        match channel.split_once(':') {
            None => Some(&self.default_namespace),
            Some((ns, _)) => self
                .namespaces
                .iter()
                .find(|n| n.name == ns)
                .map(|n| &n.options),
        }
    }
}

/// Shortest API key accepted, in bytes: guessing 16 random characters over HTTP is out of
/// reach, while an empty or short key is a mistake (an unset variable, a placeholder).
pub const MIN_API_KEY: usize = 16;
/// Shortest HS256 token secret accepted, in bytes: RFC 7518 §3.2 requires a key of at
/// least the hash's size (256 bits) for HS256.
pub const MIN_TOKEN_SECRET: usize = 32;

/// Which secret a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// The server API key.
    ApiKey,
    /// The HS256 token secret.
    TokenSecret,
}

impl SecretKind {
    fn minimum(self) -> usize {
        match self {
            SecretKind::ApiKey => MIN_API_KEY,
            SecretKind::TokenSecret => MIN_TOKEN_SECRET,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SecretKind::ApiKey => "API key",
            SecretKind::TokenSecret => "token secret",
        }
    }
}

/// Refuses an empty or short secret, naming `source` (a setting, a variable, a file) so
/// the operator knows what to fix. An empty API key would let every request through; an
/// empty token secret would accept tokens anyone can sign.
pub fn check_secret(kind: SecretKind, value: &str, source: &str) -> Result<()> {
    let minimum = kind.minimum();
    if value.trim().is_empty() {
        return Err(Error::Secret(format!(
            "the {} from {source} is empty; set at least {minimum} random characters, or \
             remove it to have one generated into the data directory",
            kind.name()
        )));
    }
    if value.len() < minimum {
        return Err(Error::Secret(format!(
            "the {} from {source} is {} bytes long; it must be at least {minimum} (a random \
             string; remove it to have one generated into the data directory)",
            kind.name(),
            value.len()
        )));
    }
    Ok(())
}

/// Characters allowed in channel names: ASCII letters, digits and `_-.:@/=`.
pub fn channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.:@/=".contains(c)
}

/// Listen addresses written `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`.
pub mod address {
    use std::net::{SocketAddr, ToSocketAddrs};

    use serde::{Deserialize, Deserializer};

    const USAGE: &str = "use HOST:PORT, e.g. 127.0.0.1:8000, [::1]:8000 or localhost:8000";

    /// Parses an address, resolving a host name. Of a name's addresses the first IPv4 one
    /// is taken, else the first: `localhost` is then 127.0.0.1 (the default, and what the
    /// docs and scripts connect to) even where the resolver lists ::1 first. One address,
    /// because the server binds one listener. The error says what is wrong with `text`;
    /// the caller names where it came from.
    pub fn parse(text: &str) -> Result<SocketAddr, String> {
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("invalid address {text:?}: no port; {USAGE}"));
        };
        // A valid IP literal parsed above; a colon left in the host is a broken one.
        if host.is_empty() || host.contains([':', '[', ']']) {
            return Err(format!("invalid address {text:?}: {USAGE}"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid address {text:?}: {port:?} is not a port; {USAGE}"))?;
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the host name {host:?} of {text:?}: {e}"))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("the host name {host:?} of {text:?} has no address"))
    }

    /// serde: an address string, resolved by [`parse`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Durations written as `500ms`, `25s`, `10m`, `1h`, `7d` (or a bare number of seconds).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Parses a duration string.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().ok()?;
        let secs = match unit.trim() {
            "ms" => return Some(Duration::from_millis(n)),
            "" | "s" => n,
            "m" => n.checked_mul(60)?,
            "h" => n.checked_mul(3600)?,
            "d" => n.checked_mul(86_400)?,
            _ => return None,
        };
        Some(Duration::from_secs(secs))
    }

    /// serde: a string like `25s`, or an integer number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {t:?}: use a number with ms, s, m, h or d"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration::parse("25s"), Some(Duration::from_secs(25)));
        assert_eq!(duration::parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration::parse("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(duration::parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(duration::parse("10"), Some(Duration::from_secs(10)));
        assert_eq!(duration::parse("1y"), None);
        assert_eq!(duration::parse("h"), None);
    }

    #[test]
    fn the_tls_table_takes_both_files_and_hsts_off_or_a_max_age() {
        let config = Config::from_toml(
            r#"
            [tls]
            cert = "/etc/sb/cert.pem"
            key = "/etc/sb/key.pem"
            hsts = "365d"
            "#,
        )
        .unwrap();
        assert!(config.tls.enabled());
        assert_eq!(config.tls.hsts, Some(Duration::from_secs(365 * 86_400)));
        let off = Config::from_toml("[tls]\nhsts = \"off\"").unwrap();
        assert_eq!((off.tls.hsts, off.tls.enabled()), (None, false));
        assert_eq!(Config::default().tls.hsts, None);
        let secs = Config::from_toml("[tls]\nhsts = 600").unwrap();
        assert_eq!(secs.tls.hsts, Some(Duration::from_secs(600)));
        let err = Config::from_toml("[tls]\nhsts = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.hsts"), "{err}");
        let err = Config::from_toml("[tls]\ncert = \"c.pem\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.key"), "{err}");
        let err = Config::from_toml("[tls]\nkey = \"k.pem\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.cert"), "{err}");
        let err = Config::from_toml("[tls]\nciphers = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn deflate_settings_are_read_and_checked() {
        let d = Config::default().deflate;
        assert!(d.enabled && !d.server_context_takeover && !d.client_context_takeover);
        let ws =
            Config::from_toml("[deflate]\nlevel = 1\nmin_size = 256\nclient_max_window_bits = 10")
                .unwrap()
                .deflate
                .to_ws();
        assert_eq!(
            (ws.level, ws.min_size, ws.peer_max_window_bits),
            (1, 256, 10)
        );
        assert!(
            !Config::from_toml("[deflate]\nenabled = false")
                .unwrap()
                .deflate
                .enabled
        );
        for (bad, says) in [
            ("level = 0", "deflate.level"),
            ("level = 10", "deflate.level"),
            (
                "server_max_window_bits = 8",
                "deflate.server_max_window_bits",
            ),
            (
                "client_max_window_bits = 16",
                "deflate.client_max_window_bits",
            ),
            ("window = 15", "unknown field"),
        ] {
            let err = Config::from_toml(&format!("[deflate]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn toml_overrides_defaults_and_rejects_typos() {
        let config = Config::from_toml(
            r#"
            listen = "127.0.0.1:9000"
            [limits]
            ping_interval = "5s"
            [[namespaces]]
            name = "news"
            history_size = 10
            history_ttl = "1m"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.ping_interval, Duration::from_secs(5));
        assert_eq!(config.limits.outbox_messages, 1024);
        let news = config.channel_options("news:today").unwrap();
        assert_eq!(news.history_size, 10);
        assert!(
            config.channel_options("chat:x").is_none(),
            "replaced the defaults"
        );
        assert!(config.channel_options("plain").is_some());
        let err = Config::from_toml("listne = \"x\"").unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    /// Issue 11, point 7: `listen` takes a host name, resolved to one address (IPv4
    /// first), and a bad one says what to write.
    #[test]
    fn listen_takes_a_host_name() {
        let config = Config::from_toml("listen = \"localhost:9000\"").unwrap();
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(
            address::parse("[::1]:80").unwrap(),
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 80))
        );
        for bad in ["localhost", "localhost:http", ":80", "[::1]", "::1:x"] {
            let err = address::parse(bad).unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
        let err = Config::from_toml("listen = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen") && err.contains("HOST:PORT"), "{err}");
    }

    #[test]
    fn transports_and_session_lifetimes() {
        let config = Config::from_toml("[transports]\nwebsocket = false\n").unwrap();
        assert!(!config.transports.websocket);
        assert!(config.transports.sse && config.transports.polling);
        assert_eq!(config.limits.poll_timeout, Duration::from_secs(25));
        assert_eq!(config.limits.session_idle, Duration::from_secs(60));
        let err = Config::from_toml("[limits]\npoll_timeout = \"60s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("session_idle must be longer"), "{err}");
        assert!(Config::from_toml("[transports]\nsse2 = true\n").is_err());
    }

    #[test]
    fn debug_output_hides_the_secrets() {
        let auth = AuthConfig {
            api_key: Some("key-material-1".into()),
            token_secret: Some("secret-material-2".into()),
            ..Default::default()
        };
        let config = Config {
            auth: auth.clone(),
            ..Default::default()
        };
        let printed = format!("{auth:?} {config:?}");
        assert!(!printed.contains("material"), "{printed}");
        assert!(printed.contains("(set)"), "{printed}");
    }
}
