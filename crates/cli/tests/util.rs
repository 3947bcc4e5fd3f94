//! Shared fixtures: the real `switchboard` binary as a child process ([`Proc`], [`Server`]),
//! the lines it writes ([`Lines`]), temporary data directories ([`TempDir`]), and the
//! clients of `switchboard-client` wrapped for the tests: the client protocol over
//! WebSocket ([`Ws`]) and the server API ([`api`]). Every wait is bounded, so no test can
//! hang.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_client::{Api, Client, Incoming};
use switchboard_ws::Message;

/// The bound on every wait for a child process, a reply or an HTTP answer.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// The lines a child writes to a pipe, read to the end by a thread (so that the child
/// never blocks on a full pipe).
pub(crate) struct Lines {
    rx: Receiver<String>,
    seen: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Lines {
    fn new(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(String::new()));
        let all = seen.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut all = all.lock().expect("lock");
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
        });
        Lines {
            rx,
            seen,
            reader: Some(reader),
        }
    }

    /// Everything read so far.
    pub(crate) fn seen(&self) -> String {
        self.seen.lock().expect("lock").clone()
    }

    /// The next line not yet taken.
    pub(crate) fn next(&self) -> String {
        self.rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|err| panic!("no line ({err}); so far:\n{}", self.seen()))
    }

    /// Skips to the first line that starts with `prefix`; returns the rest of that line.
    pub(crate) fn until(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(err) => panic!("no line {prefix:?}… ({err}); so far:\n{}", self.seen()),
            }
        }
    }

    /// Everything, once the child has closed the pipe.
    pub(crate) fn all(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("reader thread");
        }
        self.seen()
    }
}

/// A running `switchboard`, killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) stdout: Lines,
    pub(crate) stderr: Lines,
}

impl Proc {
    pub(crate) fn start<S: AsRef<OsStr>>(args: &[S]) -> Proc {
        Proc::start_program(env!("CARGO_BIN_EXE_switchboard"), args)
    }

    /// Starts `program` (a wrapper such as `prlimit` that runs `switchboard`) like
    /// [`Proc::start`].
    pub(crate) fn start_program<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Proc {
        let mut command = Command::new(program);
        // Only what the test says: no configuration or secrets from the environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SWITCHBOARD_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let stdout = Lines::new(child.stdout.take().expect("stdout"));
        let stderr = Lines::new(child.stderr.take().expect("stderr"));
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`…) with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the exit; the status, stdout and stderr.
    pub(crate) fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {WAIT:?}; stderr:\n{}",
                self.stderr.seen()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, self.stdout.all(), self.stderr.all())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `switchboard` to its end: status, stdout, stderr.
pub(crate) fn run<S: AsRef<OsStr>>(args: &[S]) -> (ExitStatus, String, String) {
    Proc::start(args).finish()
}

/// A running `switchboard echo` or `serve`, and the address it printed on stderr.
pub(crate) struct Server {
    pub(crate) proc: Proc,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start<S: AsRef<OsStr>>(args: &[S]) -> Server {
        let proc = Proc::start(args);
        let addr = proc.stderr.until("listening on ");
        Server { proc, addr }
    }

    pub(crate) fn echo() -> Server {
        Server::start(&["echo", "--listen", "127.0.0.1:0", "--log-level", "warn"])
    }

    pub(crate) fn serve(data_dir: &Path) -> Server {
        Server::serve_with(data_dir, &[])
    }

    /// `serve` on 127.0.0.1:0 with `data_dir` and the `extra` arguments (`--config F`,
    /// `--store memory`…).
    pub(crate) fn serve_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<&OsStr> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--data-dir",
        ]
        .iter()
        .map(OsStr::new)
        .collect();
        args.push(data_dir.as_os_str());
        args.extend(extra.iter().map(OsStr::new));
        Server::start(&args)
    }

    /// `serve --engine redis` on 127.0.0.1:0 in `dir`: a node of the group over the Redis
    /// at `redis_url`, with `settings` (TOML) before its `[engine]` table and `engine`
    /// lines in it, and the secrets of `secrets_from` (every node of a group shares them,
    /// here by copying the first node's files).
    pub(crate) fn redis_node(
        redis_url: &str,
        dir: &TempDir,
        secrets_from: Option<&TempDir>,
        settings: &str,
        engine: &str,
    ) -> Server {
        let config = dir.join("node.toml");
        let toml = format!("{settings}[engine]\nredis_url = \"{redis_url}\"\n{engine}");
        std::fs::write(&config, toml).expect("write the node's configuration");
        if let Some(from) = secrets_from {
            for file in ["api-key", "token-secret"] {
                std::fs::copy(from.join(file), dir.join(file)).expect("copy a secret");
            }
        }
        let config = config.to_str().expect("UTF-8 path").to_owned();
        Server::serve_with(&dir.0, &["--engine", "redis", "--config", &config])
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, then waits for the exit and expects status 0; returns stderr.
    pub(crate) fn stop(self) -> String {
        self.proc.signal("TERM");
        let (status, _, stderr) = self.proc.finish();
        assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
        stderr
    }
}

/// A fresh directory, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("switchboard-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp dir")
    }

    /// A path inside the directory.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"))
}

/// A token for `user` from `switchboard token`, with the secret of the server whose data
/// directory is `data_dir`.
pub(crate) fn token(data_dir: &Path, user: &str) -> String {
    let (status, stdout, stderr) = run(&[
        OsStr::new("token"),
        OsStr::new("--user"),
        OsStr::new(user),
        OsStr::new("--data-dir"),
        data_dir.as_os_str(),
    ]);
    assert!(status.success(), "token: {status}: {stderr}");
    stdout.trim().to_owned()
}

/// The API key the server generated into `data_dir`.
pub(crate) fn api_key(data_dir: &Path) -> String {
    let path = data_dir.join("api-key");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
        .trim()
        .to_owned()
}

/// Runs `future` for at most [`WAIT`]; `what` names it in the panic.
pub(crate) async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// `POST /api/COMMAND` with `body`: the status and the answer's JSON. An `Err` when the
/// server cannot be reached, drops the connection or does not answer within [`WAIT`]:
/// the durability tests tell those apart from answers.
pub(crate) async fn api(
    addr: &str,
    key: &str,
    command: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    // One request per connection, as `switchboard pub` sends it.
    let api = Api::at(addr, key);
    let answer = tokio::time::timeout(WAIT, api.post(command, &body.to_string()))
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))?
        .map_err(|e| e.to_string())?;
    let json = answer.json().map_err(|e| e.to_string())?;
    Ok((answer.status, json))
}

/// [`api`], expecting 200.
pub(crate) async fn api_ok(addr: &str, key: &str, command: &str, body: &Value) -> Value {
    match api(addr, key, command, body).await {
        Ok((200, answer)) => answer,
        Ok((status, answer)) => panic!("api {command} {body}: HTTP {status}: {answer}"),
        Err(err) => panic!("api {command} {body}: {err}"),
    }
}

/// A client of the client protocol (`switchboard_client::Client`). It tells replies (no
/// `push` key) from pushes and keeps the pushes it reads while waiting for a reply.
pub(crate) struct Ws {
    inner: Client,
    next_id: u64,
    pushes: VecDeque<Value>,
}

impl Ws {
    /// Opens `ws://ADDR/ws`, without sending `connect`.
    pub(crate) async fn open(addr: &str) -> Ws {
        let inner = bounded(
            "WebSocket handshake",
            Client::open(&format!("ws://{addr}/ws")),
        )
        .await
        .unwrap_or_else(|e| panic!("open ws://{addr}/ws: {e}"));
        Ws {
            inner,
            next_id: 1,
            pushes: VecDeque::new(),
        }
    }

    /// Opens the WebSocket and connects with `token`; the connect result.
    pub(crate) async fn connect(addr: &str, token: &str) -> (Ws, Value) {
        let mut ws = Ws::open(addr).await;
        let hello = ws.ok(json!({"cmd": "connect", "token": token})).await;
        (ws, hello)
    }

    /// Buffers a command as is; it leaves with the next [`recv`](Self::recv).
    pub(crate) async fn feed(&mut self, command: &Value) -> Result<(), String> {
        self.inner
            .feed(&Message::text(command.to_string()))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next JSON message, after flushing what was fed. `Err` when the connection
    /// ends (a close frame, an I/O error) or nothing arrives within [`WAIT`].
    pub(crate) async fn recv(&mut self) -> Result<Value, String> {
        let message = tokio::time::timeout(WAIT, self.inner.next_message())
            .await
            .map_err(|_| format!("nothing received within {WAIT:?}"))?
            .map_err(|e| e.to_string())?;
        match message {
            Incoming::Json(value) => Ok(value),
            Incoming::Close(code, reason) => Err(format!("closed: {code} {reason}")),
        }
    }

    /// Sends `command` with a fresh id and waits for its reply (the whole frame), keeping
    /// the pushes that arrive meanwhile.
    pub(crate) async fn call(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.feed(&command)
            .await
            .unwrap_or_else(|e| panic!("send {command}: {e}"));
        loop {
            let frame = self
                .recv()
                .await
                .unwrap_or_else(|e| panic!("waiting for the reply to {command}: {e}"));
            if frame.get("push").is_some() {
                self.pushes.push_back(frame);
            } else if frame["id"] == id {
                return frame;
            } else {
                panic!("a reply to another command while waiting for {command}: {frame}");
            }
        }
    }

    /// [`call`](Self::call), expecting success; the result.
    pub(crate) async fn ok(&mut self, command: Value) -> Value {
        let reply = self.call(command.clone()).await;
        assert!(reply.get("error").is_none(), "{command} -> {reply}");
        reply["result"].clone()
    }

    /// The next push, from those kept or from the connection.
    pub(crate) async fn push(&mut self) -> Value {
        if let Some(push) = self.pushes.pop_front() {
            return push;
        }
        let frame = self
            .recv()
            .await
            .unwrap_or_else(|e| panic!("waiting for a push: {e}"));
        assert!(frame.get("push").is_some(), "a reply, not a push: {frame}");
        frame
    }

    /// Takes the pushes kept so far.
    pub(crate) fn take_pushes(&mut self) -> Vec<Value> {
        self.pushes.drain(..).collect()
    }
}
