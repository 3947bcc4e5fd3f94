//! Shared fixtures: a real server in-process on `127.0.0.1` ([`Hub`], restartable on the
//! same address and data directory), agents run as tasks ([`Agent`]), an administrator's
//! WebSocket client ([`Admin`]), temporary directories ([`TempDir`]). Every wait is
//! bounded by [`WAIT`] and panics with what it was waiting for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_agent::{Config, Options, Token};
use switchboard_client::{Client, Incoming};
use switchboard_server::auth::{Claims, agent_claims, mint, now_secs};
use switchboard_server::config::StoreKind;
use switchboard_server::secrets::Secrets;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bound on any one awaited condition.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// The HS256 token secret of every test server.
pub(crate) const TOKEN_SECRET: &str = "test-token-secret-0123456789abcdef";

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("sb-agent-{what}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<switchboard_server::Result<()>>>,
}

impl Hub {
    /// A server with the default configuration (its `logs` and `metrics` namespaces)
    /// over an in-memory store.
    pub(crate) async fn start() -> Hub {
        Hub::start_at(None, None).await
    }

    /// A server on `addr` (any free port when `None`), with its SQLite store in
    /// `data_dir` when given (kept across restarts) and in memory otherwise.
    pub(crate) async fn start_at(addr: Option<SocketAddr>, data_dir: Option<&Path>) -> Hub {
        let mut config = switchboard_server::Config::default();
        match data_dir {
            Some(dir) => config.data_dir = dir.to_owned(),
            None => config.store = StoreKind::Memory,
        }
        let listener = bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await;
        let addr = listener.local_addr().expect("local_addr");
        let secrets = Secrets {
            api_key: "test-api-key-0123456789".into(),
            token_secret: TOKEN_SECRET.into(),
            generated: vec![],
        };
        let store = switchboard_server::open_store(&config).expect("open the store");
        let server =
            switchboard_server::Server::new(config, secrets, store).expect("build the server");
        let (tx, rx) = oneshot::channel::<()>();
        let stop = async {
            let _ = rx.await;
        };
        Hub {
            addr,
            shutdown: Some(tx),
            task: Some(tokio::spawn(server.run(listener, stop))),
        }
    }

    /// Stops the server and waits until it has closed every connection.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }

    /// The WebSocket URL.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// An agent token for `host`.
    pub(crate) fn agent_token(&self, host: &str) -> String {
        agent_token(host)
    }

    /// An administrator, connected.
    pub(crate) async fn admin(&self) -> Admin {
        let claims = Claims {
            sub: "admin".into(),
            exp: now_secs() + 3600,
            info: None,
            channels: Vec::new(),
            roles: vec!["admin".into()],
            publish: Vec::new(),
        };
        let token = mint(TOKEN_SECRET, &claims).expect("mint");
        let mut client = Client::open(&self.url()).await.expect("open");
        client.connect(Some(&token)).await.expect("connect");
        Admin { client }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `addr`, retrying for a while: a restarted server's port may still be held for
/// a moment by the listener of the one that stopped.
async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

/// An agent token for `host`, signed with the test secret.
pub(crate) fn agent_token(host: &str) -> String {
    let claims = agent_claims(host, now_secs() + 3600).expect("agent claims");
    mint(TOKEN_SECRET, &claims).expect("mint")
}

/// A configuration that samples fast: every 300 ms idle, 100 ms watched; files polled
/// every 50 ms.
pub(crate) fn fast_config() -> Config {
    let mut config = Config::default();
    config.interval.idle = Duration::from_millis(300);
    config.interval.watched = Duration::from_millis(100);
    config.tail_poll = Duration::from_millis(50);
    config.glob_rescan = Duration::from_millis(200);
    config
}

/// An agent running as a task of the test's runtime.
#[derive(Debug)]
pub(crate) struct Agent {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<switchboard_agent::Result<()>>>,
}

impl Agent {
    /// Starts an agent for `host` against `url` with `token`.
    pub(crate) fn start(url: &str, token: &str, host: &str, config: Config) -> Agent {
        // With RUST_LOG set, the agent's log goes to the test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let options = Options {
            server: url.to_owned(),
            token: Token::Fixed(token.to_owned()),
            host: host.to_owned(),
            config,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(switchboard_agent::run(options, async {
            let _ = rx.await;
        }));
        Agent {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Starts an agent for `host` against `hub` with a token for that host.
    pub(crate) fn on(hub: &Hub, host: &str, config: Config) -> Agent {
        Agent::start(&hub.url(), &hub.agent_token(host), host, config)
    }

    /// Stops the agent and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(WAIT, task)
                .await
                .expect("the agent stops in time")
                .expect("the agent's task");
            result.expect("the agent ran");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An administrator's connection (role `admin` reads `logs:` and `metrics:`).
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) client: Client,
}

impl Admin {
    /// Subscribes to `channel`.
    pub(crate) async fn subscribe(&mut self, channel: &str) {
        self.result(json!({"cmd": "subscribe", "channel": channel}))
            .await;
    }

    /// Unsubscribes from `channel`.
    pub(crate) async fn unsubscribe(&mut self, channel: &str) {
        self.result(json!({"cmd": "unsubscribe", "channel": channel}))
            .await;
    }

    /// Sends a command and returns its result.
    pub(crate) async fn result(&mut self, command: Value) -> Value {
        tokio::time::timeout(WAIT, self.client.result(command.clone()))
            .await
            .unwrap_or_else(|_| panic!("no reply to {command}"))
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    /// The `data` of every publication of `channel` in its history, oldest first.
    pub(crate) async fn history(&mut self, channel: &str) -> Vec<Value> {
        let result = self
            .result(json!({"cmd": "history", "channel": channel, "limit": 1000}))
            .await;
        result["publications"]
            .as_array()
            .map(|p| p.iter().map(|p| p["data"].clone()).collect())
            .unwrap_or_default()
    }

    /// Polls the history of `channel` until `done` holds for it; returns it.
    pub(crate) async fn history_until(
        &mut self,
        channel: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let history = self.history(channel).await;
            if done(&history) {
                return history;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{what}: not seen in {channel} within {WAIT:?}; history: {history:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next publication pushed on `channel`: its data and `time`.
    pub(crate) async fn next_publication(&mut self, channel: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let push = match tokio::time::timeout(left, self.client.next_push()).await {
                Ok(Ok(push)) => push,
                Ok(Err(e)) => panic!("waiting for a publication on {channel}: {e}"),
                Err(_) => panic!("no publication on {channel} within {WAIT:?}"),
            };
            if push["push"] == "publication" && push["channel"] == channel {
                return push["data"].clone();
            }
        }
    }

    /// Reads the next message (for tests that look at every push).
    #[allow(dead_code)]
    pub(crate) async fn next_message(&mut self) -> Incoming {
        tokio::time::timeout(WAIT, self.client.next_message())
            .await
            .expect("a message in time")
            .expect("a message")
    }
}

/// The texts of the lines of log batches, in order.
pub(crate) fn texts(batches: &[Value]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b["lines"].as_array().cloned().unwrap_or_default())
        .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The events of log batches, in order.
pub(crate) fn events(batches: &[Value]) -> Vec<String> {
    batches
        .iter()
        .filter_map(|b| b["event"].as_str().map(str::to_owned))
        .collect()
}

/// Appends lines to a file.
pub(crate) fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log for appending");
    for line in lines {
        writeln!(file, "{line}").expect("append a line");
    }
}
