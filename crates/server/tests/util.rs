//! Shared fixtures: a server on `127.0.0.1:0`, tokens, and the clients of
//! `switchboard-client` wrapped so that a test reads as what it checks: a WebSocket
//! [`Client`] that matches replies to commands, HTTP requests ([`http_response`], [`api`]),
//! an event stream ([`SseStream`]) and the HTTP sessions ([`SseClient`], [`Poller`]). What
//! the library does not do on purpose stays here: a raw WebSocket peer ([`RawPeer`]) that
//! does only what a test tells it, malformed frames included. Every wait is bounded by
//! [`WAIT`], so no test can hang; a failure panics with what was awaited.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{Value, json};
use switchboard_client::{Incoming, http::request};
use switchboard_server::Config;
use switchboard_server::auth::{Claims, mint, now_secs};
use switchboard_server::secrets::Secrets;
use switchboard_ws::Message;
use switchboard_ws::frame::{OpCode, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any one expected event (a reply, a push, a close, an HTTP response).
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// The server API key of every test server.
pub(crate) const API_KEY: &str = "test-api-key-0123456789";
/// The HS256 token secret of every test server.
pub(crate) const TOKEN_SECRET: &str = "test-token-secret-0123456789abcdef";

/// A running server.
#[derive(Debug)]
pub(crate) struct Server {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<switchboard_server::Result<()>>>,
    /// Its data directory (removed when the server is dropped).
    pub(crate) data_dir: PathBuf,
}

/// Starts a server with the default configuration changed by `tweak`.
pub(crate) async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
    start_inner(tweak, None).await
}

/// [`start`] over a store the test made (to make the store fail where that is the point).
pub(crate) async fn start_with_store(
    tweak: impl FnOnce(&mut Config),
    store: std::sync::Arc<dyn switchboard_server::engine::Store>,
) -> Server {
    start_inner(tweak, Some(store)).await
}

/// [`start`], with `extend` given the server before it runs (to register `rpc` handlers,
/// add routes, keep its [`switchboard_server::Node`]).
pub(crate) async fn start_extended(
    tweak: impl FnOnce(&mut Config),
    extend: impl FnOnce(&mut switchboard_server::Server),
) -> Server {
    let mut config = test_config();
    tweak(&mut config);
    let data_dir = config.data_dir.clone();
    let store = switchboard_server::open_store(&config).expect("open the store");
    let mut server =
        switchboard_server::Server::new(config, secrets(), store).expect("build the server");
    extend(&mut server);
    launch(server, data_dir).await
}

/// A node of a group over the Redis at `redis_url` (keys under `prefix`), presence
/// expiring 2 s after a node's last heartbeat, with the default configuration changed by
/// `tweak`.
pub(crate) async fn start_node(
    redis_url: &str,
    prefix: &str,
    tweak: impl FnOnce(&mut Config),
) -> Server {
    let mut config = test_config();
    config.store = switchboard_server::config::StoreKind::Redis;
    config.engine.redis_url = redis_url.to_owned();
    config.engine.prefix = prefix.to_owned();
    config.engine.presence_ttl = Duration::from_secs(2);
    tweak(&mut config);
    let data_dir = config.data_dir.clone();
    let engine = switchboard_server::open_engine(&config)
        .await
        .expect("open the Redis engine");
    let server = switchboard_server::Server::with_engine(config, secrets(), engine)
        .expect("build the server");
    launch(server, data_dir).await
}

/// The tests' configuration: the defaults, a fresh data directory, and `feed:`.
fn test_config() -> Config {
    let data_dir =
        std::env::temp_dir().join(format!("sb-server-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&data_dir).expect("create the data dir");
    let mut config = Config {
        data_dir,
        ..Config::default()
    };
    config.namespaces.push(feed());
    config
}

/// Runs `server` on 127.0.0.1:0 until the test shuts it down.
async fn launch(server: switchboard_server::Server, data_dir: PathBuf) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let (tx, rx) = oneshot::channel::<()>();
    let stop = async {
        let _ = rx.await;
    };
    Server {
        addr,
        shutdown: Some(tx),
        task: Some(tokio::spawn(server.run(listener, stop))),
        data_dir,
    }
}

/// `feed:`, the tests' channel with history that clients read and may not publish to
/// (the server's own such namespaces are private).
fn feed() -> switchboard_server::config::Namespace {
    switchboard_server::config::Namespace {
        name: "feed".into(),
        options: switchboard_server::config::NamespaceOptions {
            history_size: 1000,
            history_ttl: std::time::Duration::from_secs(3600),
            ..Default::default()
        },
    }
}

/// The secrets of every test server.
pub(crate) fn secrets() -> Secrets {
    Secrets {
        api_key: API_KEY.into(),
        token_secret: TOKEN_SECRET.into(),
        generated: vec![],
    }
}

async fn start_inner(
    tweak: impl FnOnce(&mut Config),
    store: Option<std::sync::Arc<dyn switchboard_server::engine::Store>>,
) -> Server {
    let mut config = test_config();
    tweak(&mut config);
    let data_dir = config.data_dir.clone();
    let store = match store {
        Some(store) => store,
        None => switchboard_server::open_store(&config).expect("open the store"),
    };
    let server =
        switchboard_server::Server::new(config, secrets(), store).expect("build the server");
    launch(server, data_dir).await
}

impl Server {
    /// Triggers graceful shutdown and returns the server task, to await `run`'s result.
    pub(crate) fn shutdown(&mut self) -> JoinHandle<switchboard_server::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("the server was already shut down")
    }

    /// A connected client with a fresh token for `user`.
    pub(crate) async fn client(&self, user: &str) -> Client {
        Client::connect(self.addr, Some(&token(user, None, &[], 3600))).await
    }

    /// Calls the server API.
    pub(crate) async fn api(&self, command: &str, body: Value) -> (u16, Value) {
        api(self.addr, command, body).await
    }

    /// Calls the server API and expects 200.
    pub(crate) async fn api_ok(&self, command: &str, body: Value) -> Value {
        let (status, reply) = api(self.addr, command, body.clone()).await;
        assert_eq!(status, 200, "api {command} {body} -> {reply}");
        reply
    }

    /// Publishes through the server API; returns the offset.
    pub(crate) async fn publish(&self, channel: &str, data: Value) -> u64 {
        let reply = self
            .api_ok("publish", json!({"channel": channel, "data": data}))
            .await;
        reply["offset"].as_u64().expect("offset")
    }

    /// The value of a metric from `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        metric(self.addr, name).await
    }

    /// Subscriber counts per channel, from the `channels` API.
    pub(crate) async fn subscribers(&self, channel: &str) -> u64 {
        let reply = self.api_ok("channels", json!({})).await;
        reply["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .find(|c| c["channel"] == channel)
            .map_or(0, |c| c["subscribers"].as_u64().expect("subscribers"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Mints an HS256 token for `user`, valid for `ttl` seconds (negative: already expired).
pub(crate) fn token(user: &str, info: Option<Value>, channels: &[&str], ttl: i64) -> String {
    let exp = now_secs().saturating_add_signed(ttl);
    let claims = Claims {
        sub: user.into(),
        exp,
        info: info.map(|v| {
            serde_json::value::RawValue::from_string(v.to_string()).expect("info is JSON")
        }),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        roles: Vec::new(),
        publish: Vec::new(),
    };
    mint(TOKEN_SECRET, &claims).expect("mint")
}

/// A WebSocket client of the client protocol (`switchboard_client::Client`; pongs are
/// automatic while it reads). It tells replies (`result`/`error`) from pushes (`push`) and
/// keeps whatever it reads while waiting for something else.
#[derive(Debug)]
pub(crate) struct Client {
    inner: switchboard_client::Client,
    /// The result of the `connect` command, once connected.
    pub(crate) hello: Value,
}

/// The value, or a panic that says what was awaited and why it failed.
fn or_panic<T>(what: &str, result: switchboard_client::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(switchboard_client::Error::Closed { code, reason }) => {
            panic!("closed ({code} {reason:?}) while waiting for {what}")
        }
        Err(err) => panic!("{what}: {err}"),
    }
}

impl Client {
    /// Opens the WebSocket, without sending `connect`.
    pub(crate) async fn open(addr: SocketAddr) -> Client {
        Client::open_from(addr, std::net::IpAddr::from([127, 0, 0, 1])).await
    }

    /// [`Client::open`] from another loopback address (`127.0.0.2`…), for the limits
    /// counted per client address.
    pub(crate) async fn open_from(addr: SocketAddr, source: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = bounded("TCP connect", socket.connect(addr))
            .await
            .expect("TCP connect");
        let host = addr.to_string();
        let handshake = switchboard_client::Client::handshake(stream, &host, "/ws", &[]);
        let inner = or_panic(
            "the WebSocket handshake",
            bounded("WebSocket handshake", handshake).await,
        );
        Client {
            inner,
            hello: Value::Null,
        }
    }

    /// Opens the WebSocket and connects (with `token`, or anonymously), expecting success.
    pub(crate) async fn connect(addr: SocketAddr, token: Option<&str>) -> Client {
        let mut client = Client::open(addr).await;
        let mut command = json!({"cmd": "connect"});
        if let Some(token) = token {
            command["token"] = json!(token);
        }
        client.hello = client.ok(command).await;
        client
    }

    /// Sends a text frame as is.
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.send(&Message::text(text)).await;
    }

    /// Sends any message.
    pub(crate) async fn send(&mut self, message: &Message) {
        or_panic("send", bounded("send", self.inner.send(message)).await);
    }

    /// Sends a command with a fresh id (unless it has one) without waiting; returns the id.
    pub(crate) async fn send_cmd(&mut self, command: Value) -> u64 {
        or_panic(
            "send",
            bounded("send", self.inner.send_command(command)).await,
        )
    }

    /// Sends a command and waits for the reply with its id (keeping pushes seen meanwhile).
    pub(crate) async fn cmd(&mut self, command: Value) -> Value {
        let id = self.send_cmd(command).await;
        self.reply(id).await
    }

    /// Waits for the reply with `id`.
    pub(crate) async fn reply(&mut self, id: u64) -> Value {
        let what = format!("the reply to {id}");
        or_panic(&what, bounded(&what, self.inner.reply(id)).await)
    }

    /// Sends a command and returns its `result`, panicking on an error reply.
    pub(crate) async fn ok(&mut self, command: Value) -> Value {
        let reply = self.cmd(command.clone()).await;
        assert!(reply.get("error").is_none(), "{command} -> {reply}");
        reply["result"].clone()
    }

    /// Sends a command and returns its error's code and message, panicking on success.
    pub(crate) async fn err(&mut self, command: Value) -> (u64, String) {
        let reply = self.cmd(command.clone()).await;
        error_of(&reply).unwrap_or_else(|| panic!("{command} should fail, got {reply}"))
    }

    /// The next reply of any id (for errors to frames that had no id).
    pub(crate) async fn next_reply(&mut self) -> Value {
        or_panic("a reply", bounded("a reply", self.inner.next_reply()).await)
    }

    /// The next push.
    pub(crate) async fn next_push(&mut self) -> Value {
        or_panic("a push", bounded("a push", self.inner.next_push()).await)
    }

    /// The next publication, skipping join and leave pushes.
    pub(crate) async fn next_publication(&mut self) -> Value {
        loop {
            let push = self.next_push().await;
            match push["push"].as_str() {
                Some("join" | "leave") => {}
                Some("publication") => return push,
                _ => panic!("expected a publication, got {push}"),
            }
        }
    }

    /// A round trip (`ping` command): everything queued to this connection before it has
    /// arrived once it returns.
    pub(crate) async fn barrier(&mut self) {
        self.ok(json!({"cmd": "ping"})).await;
    }

    /// Pushes received and not yet taken, in order.
    pub(crate) fn take_pushes(&mut self) -> Vec<Value> {
        self.inner.take_pushes()
    }

    /// Waits for the server's close frame; returns its code and reason. Messages that
    /// arrive first are kept.
    pub(crate) async fn expect_close(&mut self) -> (u16, String) {
        let what = "the close frame";
        or_panic(what, bounded(what, self.inner.expect_close()).await)
    }

    /// Reads (answering pings) for `duration`, keeping what arrives; panics on a close.
    pub(crate) async fn pump(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            // `next_message` is cancel-safe: the deadline may cut it at any time.
            match tokio::time::timeout_at(deadline, self.inner.next_message()).await {
                Err(_) => return,
                Ok(Ok(Incoming::Json(v))) => self.inner.keep(v),
                Ok(Ok(Incoming::Close(code, reason))) => {
                    panic!("closed ({code} {reason:?}) while idle")
                }
                Ok(Err(err)) => panic!("the connection failed while idle: {err}"),
            }
        }
    }

    /// Closes normally (completing the close handshake).
    pub(crate) async fn close(mut self) {
        let _ = bounded("close", self.inner.close_plain()).await;
    }
}

/// The `(code, message)` of an error reply, `None` for a success.
pub(crate) fn error_of(reply: &Value) -> Option<(u64, String)> {
    let error = reply.get("error")?;
    Some((
        error["code"].as_u64().expect("error code"),
        error["message"].as_str().expect("error message").to_owned(),
    ))
}

/// Awaits `fut`, panicking after [`WAIT`].
pub(crate) async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// A WebSocket peer on a raw TCP stream: it sends masked frames and reads server frames,
/// and does nothing else (no pongs, no close replies) unless told to.
#[derive(Debug)]
pub(crate) struct RawPeer {
    stream: TcpStream,
    buf: BytesMut,
}

/// A raw frame from the server.
#[derive(Debug)]
pub(crate) struct RawFrame {
    pub(crate) opcode: u8,
    /// RSV1: a permessage-deflate message's first frame.
    pub(crate) rsv1: bool,
    pub(crate) payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub(crate) fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Sends a WebSocket upgrade request to `/ws` with extra header lines; returns the
/// response status, the response head, and the stream with what followed the head.
pub(crate) async fn upgrade(
    stream: TcpStream,
    host: &str,
    extra_headers: &[(&str, &str)],
) -> (u16, String, RawPeer) {
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut peer = RawPeer {
        stream,
        buf: BytesMut::new(),
    };
    bounded("write upgrade", peer.stream.write_all(request.as_bytes()))
        .await
        .expect("write upgrade");
    let head = loop {
        if let Some(end) = find(&peer.buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&peer.buf[..end + 4]).into_owned();
            let _ = peer.buf.split_to(end + 4);
            break head;
        }
        let n = bounded("upgrade response", peer.stream.read_buf(&mut peer.buf))
            .await
            .expect("read upgrade response");
        assert!(n > 0, "EOF before the upgrade response");
    };
    (status_of(&head), head, peer)
}

impl RawPeer {
    /// Opens a WebSocket on a raw stream and sends `connect` with `token`; returns once the
    /// connect reply arrived.
    pub(crate) async fn connect(
        addr: SocketAddr,
        token: &str,
        recv_buffer: Option<u32>,
    ) -> RawPeer {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = bounded("TCP connect", socket.connect(addr))
            .await
            .expect("TCP connect");
        let (status, head, mut peer) = upgrade(stream, &addr.to_string(), &[]).await;
        assert_eq!(status, 101, "{head}");
        peer.send_text(&json!({"id": 1, "cmd": "connect", "token": token}).to_string())
            .await;
        let reply = peer.read_json().await;
        assert!(reply.get("result").is_some(), "connect -> {reply}");
        peer
    }

    /// Sends a masked text frame.
    pub(crate) async fn send_text(&mut self, text: &str) {
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            true,
            OpCode::Text,
            text.as_bytes(),
            Some([1, 2, 3, 4]),
        );
        bounded("raw write", self.stream.write_all(&out))
            .await
            .expect("raw write");
    }

    /// Sends raw bytes (a frame made by the test).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        bounded("raw write", self.stream.write_all(bytes))
            .await
            .expect("raw write");
    }

    /// Sends a masked ping frame with `payload`.
    pub(crate) async fn send_ping(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_frame(&mut out, true, OpCode::Ping, payload, Some([5, 6, 7, 8]));
        bounded("raw write", self.stream.write_all(&out))
            .await
            .expect("raw write");
    }

    /// Sends a masked close frame with `code`.
    pub(crate) async fn send_close(&mut self, code: u16) {
        let mut out = BytesMut::new();
        encode_frame(
            &mut out,
            true,
            OpCode::Close,
            &code.to_be_bytes(),
            Some([1, 2, 3, 4]),
        );
        bounded("raw write", self.stream.write_all(&out))
            .await
            .expect("raw write");
    }

    /// Reads one frame (unfragmented, as the server sends them).
    pub(crate) async fn read_frame(&mut self) -> RawFrame {
        self.try_read_frame()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads one frame; on EOF, says what was left of a partial frame.
    pub(crate) async fn try_read_frame(&mut self) -> Result<RawFrame, String> {
        loop {
            if let Some(frame) = self.parse() {
                return Ok(frame);
            }
            let n = bounded("a raw frame", self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                let b = &self.buf;
                return Err(format!(
                    "EOF while waiting for a frame: {} bytes buffered, starting {:02x?}, ending {:?}",
                    b.len(),
                    &b[..b.len().min(10)],
                    String::from_utf8_lossy(&b[b.len().saturating_sub(48)..])
                ));
            }
        }
    }

    /// Reads frames until a text one, and parses it.
    pub(crate) async fn read_json(&mut self) -> Value {
        loop {
            let frame = self.read_frame().await;
            match frame.opcode {
                0x1 => return serde_json::from_slice(&frame.payload).expect("JSON"),
                0x9 | 0xA => {}
                other => panic!("expected text, got opcode {other:#x}: {:?}", frame.payload),
            }
        }
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
                10,
            ),
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        let total = header + usize::try_from(len).expect("frame length");
        if b.len() < total {
            return None;
        }
        let (opcode, rsv1) = (b[0] & 0x0f, b[0] & 0x40 != 0);
        let frame = self.buf.split_to(total);
        Some(RawFrame {
            opcode,
            rsv1,
            payload: frame[header..].to_vec(),
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// One HTTP/1.1 request (`Connection: close`); returns the status and the body.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let response = http_response(addr, method, path, headers, body).await;
    (response.status, response.body)
}

/// A whole HTTP response.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: String,
}

impl HttpResponse {
    /// A header's value (the first, by case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// One HTTP/1.1 request (`Connection: close`); returns the whole response.
pub(crate) async fn http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let what = format!("{method} {path}");
    let addr = addr.to_string();
    let sent = request(
        &addr,
        method,
        path,
        headers,
        bytes::Bytes::copy_from_slice(body),
    );
    let response = or_panic(&what, bounded(&what, sent).await);
    HttpResponse {
        status: response.status,
        body: String::from_utf8(response.body.to_vec()).expect("UTF-8 body"),
        headers: response.headers,
    }
}

/// `POST /api/{command}` with the right key and a JSON body; returns the status and the
/// JSON reply.
pub(crate) async fn api(addr: SocketAddr, command: &str, body: Value) -> (u16, Value) {
    let api = switchboard_client::Api::at(&addr.to_string(), API_KEY);
    let what = format!("api {command}");
    or_panic(&what, bounded(&what, api.call(command, &body)).await)
}

/// A metric's value from `/metrics`.
pub(crate) async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, text) = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Polls `check` every 20 ms until it holds, panicking after [`WAIT`]. For state with no
/// event to await (a server-side counter).
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    bounded(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// One block of an event stream: an event (its fields) or a comment.
#[derive(Debug, Default, Clone)]
pub(crate) struct SseEvent {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    /// The `data:` lines joined with `\n`, as EventSource does.
    pub(crate) data: Option<String>,
    pub(crate) retry: Option<u64>,
    /// The text of a comment line (`: ping`), for a block that is only that.
    pub(crate) comment: Option<String>,
}

impl SseEvent {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        let data = self.data.as_deref().expect("an event with data");
        serde_json::from_str(data).unwrap_or_else(|e| panic!("event data {data:?}: {e}"))
    }
}

impl From<switchboard_client::sse::Event> for SseEvent {
    fn from(event: switchboard_client::sse::Event) -> SseEvent {
        assert!(event.unknown.is_empty(), "unknown SSE fields in {event:?}");
        let text = |field: Option<bytes::Bytes>| {
            field.map(|b| String::from_utf8(b.to_vec()).expect("UTF-8 event stream"))
        };
        SseEvent {
            id: text(event.id),
            event: text(event.event),
            data: text(event.data),
            retry: event.retry,
            comment: text(event.comment),
        }
    }
}

/// A `GET /sse` response read block by block, as it arrives.
#[derive(Debug)]
pub(crate) struct SseStream {
    inner: switchboard_client::EventStream,
}

impl SseStream {
    /// Sends `GET path` with extra headers; returns once the response head arrived.
    pub(crate) async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let what = format!("GET {path}");
        let addr = addr.to_string();
        let opened = switchboard_client::EventStream::open(&addr, path, headers);
        let inner = or_panic(&what, bounded(&what, opened).await);
        assert_eq!(inner.header("content-type"), Some("text/event-stream"));
        assert!(
            inner
                .header("transfer-encoding")
                .is_some_and(|v| v.contains("chunked")),
            "{:?}",
            inner.headers()
        );
        SseStream { inner }
    }

    /// A response header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.inner.header(name)
    }

    /// The next block (event or comment), or `None` once the response has ended.
    pub(crate) async fn next_block(&mut self) -> Option<SseEvent> {
        let what = "an SSE event";
        or_panic(what, bounded(what, self.inner.next_block()).await).map(SseEvent::from)
    }

    /// The next event, skipping comments and blocks without data; panics at the end.
    pub(crate) async fn next_event(&mut self) -> SseEvent {
        loop {
            match self.next_block().await {
                Some(event) if event.data.is_some() => return event,
                Some(_) => {}
                None => panic!("the event stream ended while an event was expected"),
            }
        }
    }

    /// Waits for the end of the response, returning the events that came first.
    pub(crate) async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next_block().await {
            if event.data.is_some() {
                events.push(event);
            }
        }
        events
    }
}

/// What an HTTP session delivered: a JSON message, or the end of the session.
#[derive(Debug)]
pub(crate) enum Delivered {
    Json(Value),
    /// The `close` event or the poll's `closed`: `{"code","reason"}`.
    Closed(Value),
}

/// Sorts delivered messages into replies and pushes, as [`Client`] does.
#[derive(Debug, Default)]
struct Inbox {
    next_id: u64,
    pushes: VecDeque<Value>,
    replies: VecDeque<Value>,
}

impl Inbox {
    fn keep(&mut self, value: Value) {
        if value.get("push").is_some() {
            self.pushes.push_back(value);
        } else {
            self.replies.push_back(value);
        }
    }

    fn reply(&mut self, id: u64) -> Option<Value> {
        let i = self.replies.iter().position(|r| r["id"] == id)?;
        self.replies.remove(i)
    }

    fn with_id(&mut self, mut command: Value) -> (u64, Value) {
        let id = match command["id"].as_u64() {
            Some(id) => id,
            None => {
                self.next_id += 1;
                command["id"] = json!(self.next_id);
                self.next_id
            }
        };
        (id, command)
    }
}

/// An SSE session: its stream, commands through `POST /sse/send`.
#[derive(Debug)]
pub(crate) struct SseClient {
    /// Where its requests go (a test of several nodes moves it).
    pub(crate) addr: SocketAddr,
    pub(crate) stream: SseStream,
    /// The session id.
    pub(crate) sid: String,
    /// The id of the last event received (`<sid>:<seq>`), for `Last-Event-ID`.
    pub(crate) last_id: String,
    inbox: Inbox,
}

impl SseClient {
    /// Opens a new session (reading its `session` event), without sending `connect`.
    pub(crate) async fn open(addr: SocketAddr) -> SseClient {
        let mut stream = SseStream::open(addr, "/sse", &[]).await;
        let first = stream.next_event().await;
        assert_eq!(first.event.as_deref(), Some("session"), "{first:?}");
        let sid = first.json()["session"]
            .as_str()
            .expect("session id")
            .to_owned();
        assert_eq!(first.id, Some(format!("{sid}:0")));
        assert_eq!(first.retry, Some(1000));
        SseClient {
            addr,
            stream,
            last_id: format!("{sid}:0"),
            sid,
            inbox: Inbox::default(),
        }
    }

    /// Opens a session and connects with a fresh token for `user`.
    pub(crate) async fn connect(addr: SocketAddr, user: &str) -> SseClient {
        let mut client = SseClient::open(addr).await;
        let hello = client
            .ok(json!({"cmd": "connect", "token": token(user, None, &[], 3600)}))
            .await;
        assert_eq!(hello["user"], user);
        client
    }

    /// `POST /sse/send?session=<sid>` with `body`.
    pub(crate) async fn post(&self, body: &str) -> HttpResponse {
        self.post_bytes(body.as_bytes()).await
    }

    /// The same with any bytes.
    pub(crate) async fn post_bytes(&self, body: &[u8]) -> HttpResponse {
        http_response(
            self.addr,
            "POST",
            &format!("/sse/send?session={}", self.sid),
            &[("Content-Type", "application/json")],
            body,
        )
        .await
    }

    /// Sends a command (with a fresh id unless it has one), expecting 202; returns the id.
    pub(crate) async fn send_cmd(&mut self, command: Value) -> u64 {
        let (id, command) = self.inbox.with_id(command);
        let response = self.post(&command.to_string()).await;
        assert_eq!(response.status, 202, "{command} -> {response:?}");
        assert_eq!(response.body, "");
        id
    }

    /// Sends a command and returns its `result`, panicking on an error reply.
    pub(crate) async fn ok(&mut self, command: Value) -> Value {
        let reply = self.cmd(command.clone()).await;
        assert!(reply.get("error").is_none(), "{command} -> {reply}");
        reply["result"].clone()
    }

    /// Sends a command and waits for its reply on the stream.
    pub(crate) async fn cmd(&mut self, command: Value) -> Value {
        let id = self.send_cmd(command).await;
        self.reply(id).await
    }

    /// Waits for the reply with `id`.
    pub(crate) async fn reply(&mut self, id: u64) -> Value {
        loop {
            if let Some(reply) = self.inbox.reply(id) {
                return reply;
            }
            self.read_one().await;
        }
    }

    /// The next reply of any id.
    pub(crate) async fn next_reply(&mut self) -> Value {
        loop {
            if let Some(reply) = self.inbox.replies.pop_front() {
                return reply;
            }
            self.read_one().await;
        }
    }

    /// The next push.
    pub(crate) async fn next_push(&mut self) -> Value {
        loop {
            if let Some(push) = self.inbox.pushes.pop_front() {
                return push;
            }
            self.read_one().await;
        }
    }

    /// The next publication, skipping joins and leaves.
    pub(crate) async fn next_publication(&mut self) -> Value {
        loop {
            let push = self.next_push().await;
            if push["push"] == "publication" {
                return push;
            }
            assert!(push["push"] == "join" || push["push"] == "leave", "{push}");
        }
    }

    /// Reads one message event and keeps it; panics on the end of the session.
    async fn read_one(&mut self) {
        match self.next().await {
            Delivered::Json(value) => self.inbox.keep(value),
            Delivered::Closed(closed) => panic!("the session ended: {closed}"),
        }
    }

    /// The next thing the stream delivers; message events must carry the next seq.
    pub(crate) async fn next(&mut self) -> Delivered {
        let event = self.stream.next_event().await;
        if event.event.as_deref() == Some("close") {
            assert_eq!(event.id, None);
            return Delivered::Closed(event.json());
        }
        assert_eq!(event.event, None, "{event:?}");
        let id = event.id.clone().expect("a message event has an id");
        let (sid, seq) = id.rsplit_once(':').expect("<sid>:<seq>");
        assert_eq!(sid, self.sid);
        let (_, last) = self.last_id.rsplit_once(':').expect("<sid>:<seq>");
        let (seq, last): (u64, u64) = (seq.parse().expect("seq"), last.parse().expect("seq"));
        assert_eq!(seq, last + 1, "events arrive in seq order, each once");
        self.last_id = id;
        Delivered::Json(event.json())
    }

    /// Waits for the `close` event (keeping messages that come first) and the end of the
    /// stream; returns the close code and reason.
    pub(crate) async fn expect_close(&mut self) -> (u64, String) {
        loop {
            match self.next().await {
                Delivered::Json(value) => self.inbox.keep(value),
                Delivered::Closed(closed) => {
                    assert!(
                        self.stream.next_block().await.is_none(),
                        "the stream ends after close"
                    );
                    return (
                        closed["code"].as_u64().expect("code"),
                        closed["reason"].as_str().expect("reason").to_owned(),
                    );
                }
            }
        }
    }

    /// Reconnects the stream with `Last-Event-ID: last_id` (as EventSource does after a
    /// cut), dropping the old connection.
    pub(crate) async fn reconnect(&mut self, last_id: &str) {
        self.stream = SseStream::open(self.addr, "/sse", &[("Last-Event-ID", last_id)]).await;
        self.last_id = last_id.to_owned();
        let first = self
            .stream
            .next_block()
            .await
            .expect("the resumed stream starts");
        assert_eq!(
            (first.retry, first.data),
            (Some(1000), None),
            "no session event on a resume"
        );
    }
}

/// A polling session: every call is one `/poll` request.
#[derive(Debug)]
pub(crate) struct Poller {
    addr: SocketAddr,
    /// When not empty, each request goes to the next of these in turn (a load balancer
    /// without sticky sessions, in front of several nodes).
    pub(crate) rotate: Vec<SocketAddr>,
    turn: std::cell::Cell<usize>,
    /// The session id, once the first answer named it.
    pub(crate) session: Option<String>,
    /// The seq to acknowledge on the next poll.
    pub(crate) ack: u64,
    /// The session's end, once an answer carried it.
    pub(crate) closed: Option<Value>,
    inbox: Inbox,
}

impl Poller {
    /// A poller with no session yet (the first poll opens one).
    pub(crate) fn new(addr: SocketAddr) -> Poller {
        Poller {
            addr,
            rotate: Vec::new(),
            turn: std::cell::Cell::new(0),
            session: None,
            ack: 0,
            closed: None,
            inbox: Inbox::default(),
        }
    }

    /// Opens a session and connects with a fresh token for `user`.
    pub(crate) async fn connect(addr: SocketAddr, user: &str) -> Poller {
        let mut poller = Poller::new(addr);
        let hello = poller
            .ok(json!({"cmd": "connect", "token": token(user, None, &[], 3600)}))
            .await;
        assert_eq!(hello["user"], user);
        poller
    }

    /// The `/poll` path and query for `ack` and `wait`.
    pub(crate) fn path(&self, ack: u64, wait: bool) -> String {
        let mut path = format!("/poll?ack={ack}&wait={}", u8::from(wait));
        if let Some(sid) = &self.session {
            path.push_str(&format!("&session={sid}"));
        }
        path
    }

    /// One raw poll acknowledging `ack`, with `body`; returns the status and the answer.
    pub(crate) async fn raw(&self, ack: u64, wait: bool, body: &str) -> (u16, Value) {
        let addr = match self.rotate.len() {
            0 => self.addr,
            n => {
                let turn = self.turn.get();
                self.turn.set(turn + 1);
                self.rotate[turn % n]
            }
        };
        let response = http_response(
            addr,
            "POST",
            &self.path(ack, wait),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await;
        if response.status == 200 {
            assert_eq!(response.header("content-type"), Some("application/json"));
        }
        let value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("poll answer {:?}: {e}", response.body));
        (response.status, value)
    }

    /// One poll with commands; checks the answer, keeps its messages, and acknowledges
    /// them on the next poll. Returns the answer.
    pub(crate) async fn poll(&mut self, commands: &[Value], wait: bool) -> Value {
        let body = match commands {
            [] => String::new(),
            [one] => one.to_string(),
            many => Value::from(many.to_vec()).to_string(),
        };
        let (status, answer) = self.raw(self.ack, wait, &body).await;
        assert_eq!(status, 200, "{answer}");
        let sid = answer["session"].as_str().expect("session").to_owned();
        if let Some(known) = &self.session {
            assert_eq!(&sid, known);
        }
        self.session = Some(sid);
        let messages = answer["messages"].as_array().expect("messages");
        let seq = answer["seq"].as_u64().expect("seq");
        // Never a message already acknowledged; seq names the last one.
        assert_eq!(seq, self.ack + messages.len() as u64, "{answer}");
        self.ack = seq;
        for message in messages {
            self.inbox.keep(message.clone());
        }
        if let Some(closed) = answer.get("closed") {
            self.closed = Some(closed.clone());
        }
        answer
    }

    /// Sends a command (with a fresh id unless it has one) and polls until its reply.
    pub(crate) async fn cmd(&mut self, command: Value) -> Value {
        let (id, command) = self.inbox.with_id(command);
        self.poll(&[command], true).await;
        self.reply(id).await
    }

    /// Sends a command and returns its `result`, panicking on an error reply.
    pub(crate) async fn ok(&mut self, command: Value) -> Value {
        let reply = self.cmd(command.clone()).await;
        assert!(reply.get("error").is_none(), "{command} -> {reply}");
        reply["result"].clone()
    }

    /// Polls until the reply with `id`.
    pub(crate) async fn reply(&mut self, id: u64) -> Value {
        bounded("a reply by polling", async {
            loop {
                if let Some(reply) = self.inbox.reply(id) {
                    return reply;
                }
                self.poll_more().await;
            }
        })
        .await
    }

    /// Polls until a push.
    pub(crate) async fn next_push(&mut self) -> Value {
        bounded("a push by polling", async {
            loop {
                if let Some(push) = self.inbox.pushes.pop_front() {
                    return push;
                }
                self.poll_more().await;
            }
        })
        .await
    }

    /// Polls until a publication, skipping joins and leaves.
    pub(crate) async fn next_publication(&mut self) -> Value {
        loop {
            let push = self.next_push().await;
            if push["push"] == "publication" {
                return push;
            }
            assert!(push["push"] == "join" || push["push"] == "leave", "{push}");
        }
    }

    async fn poll_more(&mut self) {
        assert!(
            self.closed.is_none(),
            "the session ended: {:?}",
            self.closed
        );
        self.poll(&[], true).await;
    }
}
