//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use switchboard_server::config::address;

use clap::{Parser, Subcommand};

/// Switchboard: a real-time communication server.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    pub(crate) log_level: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server (hub, server API, WebSocket endpoint) with the embedded store.
    Serve(ServeArgs),
    /// Configuration helpers.
    Config(ConfigArgs),
    /// Mint a connection token for development, signed as the configuration says: HS256
    /// with the server's token secret, or RS256/ES256 with --private-key.
    Token(TokenArgs),
    /// Subscribe to a channel and print each publication as one JSON line.
    Sub(SubArgs),
    /// Publish to a channel through the server API.
    Pub(PubArgs),
    /// Run a WebSocket echo server (for conformance suites and diagnostics).
    Echo(EchoArgs),
    /// Load-test a server.
    Bench(BenchArgs),
    /// Accounts of the built-in apps (kept in DATA_DIR/apps.db; the server may be
    /// running).
    User(UserArgs),
    /// Invites to create an account of the built-in apps.
    Invite(InviteArgs),
    /// Run the host agent: push this machine's samples, log files and commands' output to
    /// a server (see docs/agent.md).
    Agent(AgentArgs),
}

/// `switchboard agent`.
#[derive(clap::Args)]
pub(crate) struct AgentArgs {
    /// The server: its base URL (http://HOST:PORT) or its WebSocket URL
    /// (ws://HOST:PORT/ws). TLS is left to a proxy on the same machine.
    #[arg(long, value_name = "URL")]
    pub(crate) server: String,
    /// The agent's token, from `switchboard token --agent HOST` (or the monitor page).
    /// Better given in the environment, SWITCHBOARD_AGENT_TOKEN, which keeps it out of
    /// the process list.
    #[arg(
        long,
        env = "SWITCHBOARD_AGENT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: String,
    /// The agent's configuration (agent.toml: logs, commands, intervals; see
    /// docs/agent.md). Without one it sends samples only.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The host name in its channels (metrics:HOST, logs:HOST:NAME); it must be the one
    /// the token was minted for. Default: `host` in the configuration, else this
    /// machine's name.
    #[arg(long, value_name = "NAME")]
    pub(crate) host: Option<String>,
}

// By hand: the token never appears in a debug print.
impl std::fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentArgs")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("config", &self.config)
            .field("host", &self.host)
            .finish()
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct UserArgs {
    #[command(subcommand)]
    pub(crate) command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account; the password is read from standard input (one line), or asked
    /// for twice at a terminal.
    Add {
        #[command(flatten)]
        source: ConfigSource,
        /// The name (2-32 letters, digits, `_`, `-`, `.`).
        name: String,
        /// Make it an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Set an account's password (read like `user add` reads it); its sessions end.
    Passwd {
        #[command(flatten)]
        source: ConfigSource,
        /// The account's name.
        name: String,
    },
    /// List the accounts: name, role, creation time.
    List {
        #[command(flatten)]
        source: ConfigSource,
    },
    /// Remove an account and its sessions.
    Remove {
        #[command(flatten)]
        source: ConfigSource,
        /// The account's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct InviteArgs {
    #[command(subcommand)]
    pub(crate) command: InviteCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InviteCommand {
    /// Create a one-time invite and print its link.
    Create {
        #[command(flatten)]
        source: ConfigSource,
        /// The account it creates is an administrator.
        #[arg(long)]
        admin: bool,
    },
}

/// Where the configuration comes from; shared by every command that reads it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConfigSource {
    /// TOML configuration file (see `switchboard config init`).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (secrets, database). Default ./switchboard-data.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) source: ConfigSource,
    /// Address to listen on: IP:PORT, or HOST:PORT with the host name resolved at start-up
    /// (its first IPv4 address: localhost is 127.0.0.1). Default 127.0.0.1:8000 (loopback
    /// only). Environment: SWITCHBOARD_LISTEN.
    // Not clap's `env`: its errors name the flag even when the variable was wrong, so
    // `serve` reads the variable itself (`load_config`).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// Another origin allowed to open WebSockets (repeatable; `*` for any). The variable
    /// SWITCHBOARD_ALLOWED_ORIGINS holds a comma-separated list.
    #[arg(
        long = "allow-origin",
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub(crate) allowed_origins: Vec<String>,
    /// Let clients connect without a token. Environment: SWITCHBOARD_ALLOW_ANONYMOUS=true
    /// or false (also 1/0, yes/no, on/off), which the flag overrides.
    #[arg(long)]
    pub(crate) allow_anonymous: bool,
    /// Engine: sqlite (default; durable, this node alone), memory (lost on restart), or
    /// redis (several nodes as one hub; see --redis-url and `[engine]` in --config).
    /// `--store` is the older name.
    #[arg(long = "engine", alias = "store", env = "SWITCHBOARD_ENGINE")]
    pub(crate) store: Option<switchboard_server::config::StoreKind>,
    /// The Redis of a group (with --engine redis): redis://[:PASSWORD@]HOST:PORT/DB.
    /// Environment: SWITCHBOARD_REDIS_URL.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Also run an agent for this machine inside the server (its samples on
    /// metrics:HOST; the logs and commands of an `[agent]` table in --config, if any),
    /// so that one command gives a working dashboard.
    #[arg(long)]
    pub(crate) local_agent: bool,
    /// Serve HTTPS and wss:// (TLS 1.2 and 1.3) with this certificate chain (PEM), with
    /// --tls-key. SIGHUP reads both files again; open connections stay. `tls.cert` in
    /// --config.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert. `tls.key` in --config.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    pub(crate) command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Write a commented example configuration.
    Init {
        /// Where to write it.
        #[arg(default_value = "switchboard.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    pub(crate) source: ConfigSource,
    /// The user id (the token's `sub`).
    #[arg(long, required_unless_present = "agent", conflicts_with = "agent")]
    pub(crate) user: Option<String>,
    /// A token for `switchboard agent` on HOST instead: user `agent:HOST`, allowed to
    /// publish to metrics:HOST and logs:HOST:* and to watch metrics:HOST, nothing else.
    #[arg(long, value_name = "HOST", conflicts_with_all = ["info", "channels"])]
    pub(crate) agent: Option<String>,
    /// Public user info as JSON, e.g. '{"name":"Alice"}'.
    #[arg(long)]
    pub(crate) info: Option<String>,
    /// Lifetime: 30s, 10m, 1h, 7d… Default 1h, 365d for --agent.
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    /// Private channels the user may subscribe to.
    #[arg(long, value_delimiter = ',')]
    pub(crate) channels: Vec<String>,
    /// With auth.token_algorithm RS256 or ES256: the PEM private key that signs the token,
    /// the private half of auth.token_public_key_file. HS256 tokens are signed with the
    /// token secret instead.
    #[arg(long, value_name = "PEM")]
    pub(crate) private_key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    pub(crate) source: ConfigSource,
    /// The channel, e.g. chat:lobby.
    pub(crate) channel: String,
    /// The server: its WebSocket URL (ws://HOST:PORT/ws, wss:// with TLS) or its base URL
    /// (http://HOST:PORT or https://, whose WebSocket is at /ws). Default: the configured
    /// listen address (`listen` in --config, SWITCHBOARD_LISTEN; https:// when the
    /// configuration has `[tls]`), 127.0.0.1:8000 without one.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// With wss:// or https://: trust the certificates of this PEM file (a private CA, a
    /// self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// A connection token; without one, a token for --user is minted from the local
    /// secret, or the connection is anonymous.
    #[arg(long, env = "SWITCHBOARD_TOKEN")]
    pub(crate) token: Option<String>,
    /// The user to mint a token for (needs the server's data directory, or --private-key
    /// with RS256/ES256).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// With RS256 or ES256: the PEM private key that signs --user's tokens (see
    /// `switchboard token --help`).
    #[arg(long, value_name = "PEM")]
    pub(crate) private_key: Option<PathBuf>,
    /// Print the last N publications from history first.
    #[arg(long)]
    pub(crate) history: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    pub(crate) source: ConfigSource,
    /// The channel.
    pub(crate) channel: String,
    /// The data: JSON, or any other text (sent as a JSON string).
    pub(crate) data: String,
    /// The server: its base URL (http://HOST:PORT or https://; the API is at
    /// /api/publish) or its WebSocket URL (ws://HOST:PORT/ws, wss://). Default: the
    /// configured listen address (`listen` in --config, SWITCHBOARD_LISTEN; https:// when
    /// the configuration has `[tls]`), 127.0.0.1:8000 without one.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// With https:// or wss://: trust the certificates of this PEM file (a private CA, a
    /// self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// The API key; by default read like the server reads it.
    #[arg(long, env = "SWITCHBOARD_API_KEY")]
    pub(crate) api_key: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    /// Address to listen on, IP:PORT or HOST:PORT. Loopback by default; say 0.0.0.0 to
    /// expose it.
    #[arg(long, default_value = "127.0.0.1:9001", value_parser = address::parse)]
    pub(crate) listen: SocketAddr,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Largest message accepted, in bytes (larger ones close with 1009).
    #[arg(long, default_value_t = 64 << 20)]
    pub(crate) max_message_size: usize,
    /// A subprotocol to accept (repeatable); of those a client offers, its first
    /// preference among these is chosen. None by default.
    #[arg(long = "protocol", value_name = "NAME")]
    pub(crate) protocols: Vec<String>,
    /// Decline permessage-deflate (RFC 7692). By default it is accepted, answered with
    /// server_no_context_takeover and client_no_context_takeover.
    #[arg(long)]
    pub(crate) no_deflate: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Echo round trips: C connections each keep K messages of N bytes in flight.
    Echo(BenchEchoArgs),
    /// Fan-out: N subscribers on one channel, publishers at R publications/s; reports
    /// deliveries, end-to-end latency and losses.
    Fanout(BenchFanoutArgs),
    /// Opens N subscribed connections and holds them (for the server's RSS per connection).
    Idle(BenchIdleArgs),
    /// Hostile load (sessions that never authenticate, or bodies without a key or that
    /// never come) from 127.0.0.2 and up, while a legitimate client keeps connecting.
    Flood(BenchFloodArgs),
    /// The built-in chat: U users in R rooms, each typing and posting a message every
    /// interval; reports deliveries per second, latency and the server's CPU.
    Chat(BenchChatArgs),
    /// The built-in voting app: W watchers of one poll, V voters casting and changing
    /// votes through `rpc` at R votes/s; reports votes per second, the delay from a vote
    /// to the watchers' tally that includes it, and the server's CPU.
    Vote(BenchVoteArgs),
    /// Live operations: A simulated agents publishing samples and log lines as
    /// `switchboard agent` does, V administrators' viewers reading every host; reports the
    /// delay from a line's write to the viewers and the server's CPU.
    Agents(BenchAgentsArgs),
}

/// What `bench flood` attacks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FloodKind {
    /// HTTP sessions that never authenticate (`GET /sse` without a token).
    Slots,
    /// Keyless 1 MB bodies to the server API, and `/poll` bodies that never come.
    Bodies,
}

impl FloodKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FloodKind::Slots => "slots",
            FloodKind::Bodies => "bodies",
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchFloodArgs {
    #[command(flatten)]
    pub(crate) source: ConfigSource,
    /// The server's WebSocket URL, ws:// or wss:// (a loopback address: the attackers use
    /// 127.0.0.2…). With wss:// every connection, the attackers' too, does a TLS handshake.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    pub(crate) url: String,
    /// With a wss:// URL: trust the certificates of this PEM file (a private CA, a
    /// self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// The attack.
    #[arg(long, value_enum, default_value_t = FloodKind::Slots)]
    pub(crate) kind: FloodKind,
    /// Attacker tasks, each with one connection at a time.
    #[arg(long, default_value_t = 64)]
    pub(crate) attackers: usize,
    /// Attacker addresses, 127.0.0.2 and up (the attackers are spread over them).
    #[arg(long, default_value_t = 4)]
    pub(crate) sources: usize,
    /// Seconds the flood lasts.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Legitimate connects (WebSocket and `connect`) per second, from 127.0.0.1.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) legit_rate: f64,
    /// PID of the server, to read its RSS and CPU time.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Worker threads of the load client (0: one per core).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchEchoArgs {
    /// Server URL, ws://127.0.0.1:PORT/PATH (wss:// with TLS), or tcp://127.0.0.1:PORT for
    /// a raw TCP echo (the same bytes without WebSocket framing: the physical limit).
    #[arg(long)]
    pub(crate) url: String,
    /// With a wss:// URL: trust the certificates of this PEM file (a private CA, a
    /// self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub(crate) conns: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Test duration in seconds (after a 1 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub(crate) pipeline: usize,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub(crate) binary: bool,
    /// Worker threads of the load client (0: one per core).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// PID of the server, to report its CPU time per message from /proc/PID/stat.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
}

/// The transport of the bench's subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// WebSocket (`--url`).
    Ws,
    /// Server-Sent Events: `GET /sse` and `POST /sse/send`.
    Sse,
    /// Long polling: `POST /poll`.
    Longpoll,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Longpoll => "longpoll",
        }
    }
}

/// How the bench clients reach the server: shared by `bench fanout` and `bench idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchConnArgs {
    #[command(flatten)]
    pub(crate) source: ConfigSource,
    /// The server's WebSocket URL, ws:// or wss:// (TLS). The SSE and polling endpoints
    /// are at its host and port (`/sse`, `/sse/send`, `/poll`; over HTTPS with wss://).
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    pub(crate) url: String,
    /// With a wss:// URL: trust the certificates of this PEM file (a private CA, a
    /// self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// The subscribers' transport; publishers always use WebSocket.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub(crate) transport: Transport,
    /// A connection token for every connection; without one, a token per connection
    /// (user bench-sub-I, bench-pub-J) is minted from the server's token secret.
    #[arg(long, env = "SWITCHBOARD_TOKEN")]
    pub(crate) token: Option<String>,
    /// PID of the server, to read its CPU time (/proc/PID/stat) and RSS (/proc/PID/status).
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Connections one task of the load client reads (they share its counters).
    #[arg(long, default_value_t = 64)]
    pub(crate) conns_per_task: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Worker threads of the load client (0: one per core).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// WebSocket subscribers offer permessage-deflate, as browsers do (the server takes
    /// it unless its [deflate] says otherwise).
    #[arg(long)]
    pub(crate) deflate: bool,
    /// What fills each publication's `pad`: `x` repeated, or access-log lines (text
    /// that compresses as real traffic does).
    #[arg(long, value_enum, default_value_t = Padding::X)]
    pub(crate) pad: Padding,
}

/// What fills a bench publication's padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Padding {
    /// `x` repeated.
    X,
    /// Access-log lines.
    Log,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchFanoutArgs {
    #[command(flatten)]
    pub(crate) conn: BenchConnArgs,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Publications per second, all publishers together.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) rate: f64,
    /// Publishing window in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// The channel. The default namespace has no join/leave pushes: with them, N
    /// subscribers joining cost the server N²/2 pushes (chat:…).
    #[arg(long, default_value = "vote:bench")]
    pub(crate) channel: String,
    /// Publish round-robin to this many channels, CHANNEL-0, CHANNEL-1… (publishing
    /// throughput; needs --subscribers 0).
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Bytes of padding in each publication's data.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Extra subscribers that stop reading after subscribing (slow consumers; WebSocket
    /// whatever --transport says).
    #[arg(long, default_value_t = 0)]
    pub(crate) slow: usize,
    /// Publisher connections (0: enough to stay at 80% of the server's
    /// limits.commands_per_second on each).
    #[arg(long, default_value_t = 0)]
    pub(crate) publishers: usize,
    /// Another node of the same group (`serve --engine redis`), by its WebSocket URL
    /// (repeat for more): the subscribers are spread over --url and these, a task's
    /// connections on one node; the publishers stay on --url.
    #[arg(long = "node-url")]
    pub(crate) node_urls: Vec<String>,
    /// PID of another node, to add its CPU time and RSS to the server's (repeat for more).
    #[arg(long = "node-pid")]
    pub(crate) node_pids: Vec<u32>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchIdleArgs {
    #[command(flatten)]
    pub(crate) conn: BenchConnArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub(crate) conns: usize,
    /// The channel every connection subscribes to (no join/leave pushes by default, see
    /// `bench fanout --channel`).
    #[arg(long, default_value = "vote:idle")]
    pub(crate) channel: String,
    /// Seconds to hold the connections once open (default: until ctrl-c or SIGTERM).
    #[arg(long)]
    pub(crate) hold: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchChatArgs {
    #[command(flatten)]
    pub(crate) client: BenchAppClient,
    /// Users, each on one WebSocket connection.
    #[arg(long, default_value_t = 2000)]
    pub(crate) users: usize,
    /// Rooms (`bench-0`…), the users spread evenly over them.
    #[arg(long, default_value_t = 50)]
    pub(crate) rooms: usize,
    /// Seconds between two messages of one user.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) interval: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) duration: f64,
    /// Bytes of text in each message (besides its time mark).
    #[arg(long, default_value_t = 40)]
    pub(crate) size: usize,
    /// Post without the `chat.typing` call before each message.
    #[arg(long)]
    pub(crate) no_typing: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchVoteArgs {
    #[command(flatten)]
    pub(crate) client: BenchAppClient,
    /// Watchers: connections subscribed to the poll's channel.
    #[arg(long, default_value_t = 5000)]
    pub(crate) watchers: usize,
    /// Voters, each a user on one connection, changing their vote on each turn.
    #[arg(long, default_value_t = 200)]
    pub(crate) voters: usize,
    /// Votes per second, all voters together (at most 5 per voter: the app's limit).
    #[arg(long, default_value_t = 200.0)]
    pub(crate) rate: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Options of the poll (2-20).
    #[arg(long, default_value_t = 4)]
    pub(crate) options: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchAgentsArgs {
    #[command(flatten)]
    pub(crate) client: BenchAppClient,
    /// Simulated agents, hosts bench-0, bench-1… (at most 128: a viewer subscribes to two
    /// channels per host).
    #[arg(long, default_value_t = 100)]
    pub(crate) agents: usize,
    /// Log lines per second per agent, batched every 100 ms.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) lines: f64,
    /// Seconds between an agent's samples.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) interval: f64,
    /// Viewers, each subscribed to every host's metrics and log channels.
    #[arg(long, default_value_t = 20)]
    pub(crate) viewers: usize,
    /// Bytes of padding in each log line.
    #[arg(long, default_value_t = 80)]
    pub(crate) line_size: usize,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
}

/// How the load clients of the apps' benches (`chat`, `vote`, `agents`) reach the server
/// and measure it.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchAppClient {
    #[command(flatten)]
    pub(crate) source: ConfigSource,
    /// The server's WebSocket URL, ws:// or wss:// (TLS) (its token secret mints the
    /// bench's tokens).
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    pub(crate) url: String,
    /// With a wss:// URL: trust the certificates of this PEM file (a private CA, a
    /// self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub(crate) connect_concurrency: usize,
    /// PID of the server, for its CPU time and RSS.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Worker threads of the load client (0: one per core).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
}
