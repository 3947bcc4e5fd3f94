//! Shared fixtures: a server on `127.0.0.1:0`, tokens, a WebSocket client that matches
//! replies to commands, a raw WebSocket peer that does only what a test tells it, a tiny
//! HTTP/1.1 client for the server API, and clients of the HTTP transports (an SSE stream
//! reader, [`SseClient`] and [`Poller`]). Every wait is bounded by [`WAIT`], so no test
//! can hang.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{Value, json};
use switchboard_server::auth::{Claims, mint, now_secs};
use switchboard_server::secrets::Secrets;
use switchboard_server::{Config, run};
use switchboard_ws::frame::{OpCode, encode_frame};
use switchboard_ws::tokio::WebSocket;
use switchboard_ws::{Error as WsError, Message};
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

async fn start_inner(
    tweak: impl FnOnce(&mut Config),
    store: Option<std::sync::Arc<dyn switchboard_server::engine::Store>>,
) -> Server {
    let data_dir =
        std::env::temp_dir().join(format!("sb-server-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&data_dir).expect("create the data dir");
    let mut config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    tweak(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let secrets = Secrets {
        api_key: API_KEY.into(),
        token_secret: TOKEN_SECRET.into(),
        generated: vec![],
    };
    let (tx, rx) = oneshot::channel::<()>();
    let stop = async {
        let _ = rx.await;
    };
    let task = match store {
        None => tokio::spawn(run(listener, config, secrets, stop)),
        Some(store) => tokio::spawn(switchboard_server::run_with_store(
            listener, config, secrets, store, stop,
        )),
    };
    Server {
        addr,
        shutdown: Some(tx),
        task: Some(task),
        data_dir,
    }
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
    };
    mint(TOKEN_SECRET, &claims).expect("mint")
}

/// What the client read: a JSON message, or the server's close frame.
#[derive(Debug)]
enum Incoming {
    Json(Value),
    Close(u16, String),
}

/// A WebSocket client over our own adapter (pongs are automatic while it reads). It
/// tells replies (`result`/`error`) from pushes (`push`) and keeps whatever it reads
/// while waiting for something else.
#[derive(Debug)]
pub(crate) struct Client {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    pushes: VecDeque<Value>,
    replies: VecDeque<Value>,
    /// The result of the `connect` command, once connected.
    pub(crate) hello: Value,
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
        stream.set_nodelay(true).expect("nodelay");
        let (ws, _) = bounded(
            "WebSocket handshake",
            switchboard_ws::tokio::connect(
                stream,
                &addr.to_string(),
                "/ws",
                &[],
                &[],
                switchboard_ws::Config::default(),
            ),
        )
        .await
        .expect("WebSocket handshake");
        Client {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
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
        bounded("send", self.ws.send(message)).await.expect("send");
    }

    /// Sends a command with a fresh id (unless it has one) without waiting; returns the id.
    pub(crate) async fn send_cmd(&mut self, mut command: Value) -> u64 {
        let id = match command["id"].as_u64() {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                command["id"] = json!(id);
                id
            }
        };
        self.send_text(&command.to_string()).await;
        id
    }

    /// Sends a command and waits for the reply with its id (keeping pushes seen meanwhile).
    pub(crate) async fn cmd(&mut self, command: Value) -> Value {
        let id = self.send_cmd(command).await;
        self.reply(id).await
    }

    /// Waits for the reply with `id`.
    pub(crate) async fn reply(&mut self, id: u64) -> Value {
        if let Some(i) = self.replies.iter().position(|r| r["id"] == id) {
            return self.replies.remove(i).expect("present");
        }
        loop {
            match self.read().await {
                // A reply is what is not a push.
                Incoming::Json(v) if v.get("push").is_none() && v["id"] == id => return v,
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => {
                    panic!("closed ({code} {reason:?}) while waiting for the reply to {id}")
                }
            }
        }
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
        if let Some(reply) = self.replies.pop_front() {
            return reply;
        }
        loop {
            match self.read().await {
                Incoming::Json(v) if v.get("push").is_none() => return v,
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => {
                    panic!("closed ({code} {reason:?}) while waiting for a reply")
                }
            }
        }
    }

    /// The next push.
    pub(crate) async fn next_push(&mut self) -> Value {
        if let Some(push) = self.pushes.pop_front() {
            return push;
        }
        loop {
            match self.read().await {
                Incoming::Json(v) if v.get("push").is_some() => return v,
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => {
                    panic!("closed ({code} {reason:?}) while waiting for a push")
                }
            }
        }
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
        self.pushes.drain(..).collect()
    }

    /// Waits for the server's close frame; returns its code and reason. Messages that
    /// arrive first are kept.
    pub(crate) async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.read().await {
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => return (code, reason),
            }
        }
    }

    /// Reads (answering pings) for `duration`, keeping what arrives; panics on a close.
    pub(crate) async fn pump(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.recv()).await {
                Err(_) => return,
                Ok(received) => match decode(received) {
                    Some(Incoming::Json(v)) => self.keep(v),
                    Some(Incoming::Close(code, reason)) => {
                        panic!("closed ({code} {reason:?}) while idle")
                    }
                    None => {}
                },
            }
        }
    }

    /// Closes normally (completing the close handshake).
    pub(crate) async fn close(mut self) {
        let _ = bounded("close", self.ws.close(None)).await;
    }

    fn keep(&mut self, value: Value) {
        if value.get("push").is_some() {
            self.pushes.push_back(value);
        } else {
            self.replies.push_back(value);
        }
    }

    async fn read(&mut self) -> Incoming {
        loop {
            let received = bounded("a message from the server", self.ws.recv()).await;
            if let Some(incoming) = decode(received) {
                return incoming;
            }
        }
    }
}

/// A received message as JSON or a close; `None` for pings and pongs.
fn decode(received: Result<Option<Message>, WsError>) -> Option<Incoming> {
    match received {
        Ok(Some(Message::Text(text))) => Some(Incoming::Json(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("server sent bad JSON {text:?}: {e}")),
        )),
        Ok(Some(Message::Close(frame))) => Some(match frame {
            Some(f) => Incoming::Close(f.code.0, f.reason.to_string()),
            None => Incoming::Close(1005, String::new()),
        }),
        Ok(Some(Message::Binary(b))) => panic!("server sent a binary message: {b:?}"),
        Ok(Some(_)) => None,
        Ok(None) => panic!("the connection ended without a close frame"),
        Err(e) => panic!("the connection failed: {e}"),
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
        let opcode = b[0] & 0x0f;
        let frame = self.buf.split_to(total);
        Some(RawFrame {
            opcode,
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
    /// The status line and the headers.
    pub(crate) head: String,
    pub(crate) body: String,
}

impl HttpResponse {
    /// A header's value (the first, by case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One HTTP/1.1 request (`Connection: close`); returns the whole response.
pub(crate) async fn http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = bounded("TCP connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bounded("HTTP request", stream.write_all(&bytes))
        .await
        .expect("write request");
    let mut response = Vec::new();
    bounded("HTTP response", stream.read_to_end(&mut response))
        .await
        .expect("read response");
    let end = find(&response, b"\r\n\r\n").expect("a whole response head");
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let raw = &response[end + 4..];
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    HttpResponse {
        status: status_of(&head),
        body: String::from_utf8(body).expect("UTF-8 body"),
        head,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// `POST /api/{command}` with the right key and a JSON body; returns the status and the
/// JSON reply.
pub(crate) async fn api(addr: SocketAddr, command: &str, body: Value) -> (u16, Value) {
    let (status, text) = http(
        addr,
        "POST",
        &format!("/api/{command}"),
        &[("X-API-Key", API_KEY), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("API reply {text:?}: {e}"));
    (status, json)
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

/// A `GET /sse` response read over a raw TCP stream, block by block, as it arrives.
#[derive(Debug)]
pub(crate) struct SseStream {
    stream: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: BytesMut,
    /// De-chunked text not yet parsed into blocks.
    text: String,
    /// The response's status line and headers.
    pub(crate) head: String,
    ended: bool,
}

impl SseStream {
    /// Sends `GET path` with extra headers; returns once the response head arrived.
    pub(crate) async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut stream = bounded("TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        bounded("SSE request", stream.write_all(request.as_bytes()))
            .await
            .expect("write request");
        let mut raw = BytesMut::new();
        let head = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                let _ = raw.split_to(end + 4);
                break head;
            }
            let n = bounded("SSE response head", stream.read_buf(&mut raw))
                .await
                .expect("read");
            assert!(n > 0, "EOF before the SSE response head");
        };
        assert_eq!(status_of(&head), 200, "{head}");
        assert_eq!(header_of(&head, "content-type"), Some("text/event-stream"));
        assert!(
            header_of(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")),
            "{head}"
        );
        SseStream {
            stream,
            raw,
            text: String::new(),
            head,
            ended: false,
        }
    }

    /// A response header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }

    /// Moves whole chunks from `raw` to `text`; notes the last chunk.
    fn dechunk(&mut self) {
        while !self.ended {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|e| panic!("chunk size {size_text:?}: {e}"));
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let chunk = self.raw.split_to(line_end + 2 + size + 2);
            if size == 0 {
                self.ended = true;
            }
            self.text.push_str(
                std::str::from_utf8(&chunk[line_end + 2..line_end + 2 + size]).expect("UTF-8"),
            );
        }
    }

    /// The next block (event or comment), or `None` once the response has ended.
    pub(crate) async fn next_block(&mut self) -> Option<SseEvent> {
        loop {
            // The head's read may have brought the first chunks too.
            self.dechunk();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(parse_block(&block));
            }
            if self.ended {
                assert!(
                    self.text.is_empty(),
                    "a partial event at the end: {:?}",
                    self.text
                );
                return None;
            }
            let n = bounded("an SSE event", self.stream.read_buf(&mut self.raw))
                .await
                .expect("read the event stream");
            if n == 0 {
                panic!("the connection closed in the middle of the event stream");
            }
        }
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

fn parse_block(block: &str) -> SseEvent {
    let mut event = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            event.comment = Some(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "data" => data.push(value),
            "retry" => event.retry = Some(value.parse().expect("retry is a number")),
            other => panic!("unknown SSE field {other:?} in {block:?}"),
        }
    }
    if !data.is_empty() {
        event.data = Some(data.join("\n"));
    }
    event
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
    addr: SocketAddr,
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
        let response = http_response(
            self.addr,
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
