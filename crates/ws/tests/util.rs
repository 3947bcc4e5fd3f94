//! Shared helpers: an echo server built on our `accept`, a raw TCP peer that writes and
//! reads exact bytes (with a timeout on every read), and masked client frames.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_ws::frame::{OpCode, encode_frame};
use switchboard_ws::{CloseCode, Config, Error, Message, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Upper bound on any one test: nothing may hang.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on any one expected read.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs a test body under [`TEST_TIMEOUT`].
pub(crate) async fn timed<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test did not finish within TEST_TIMEOUT")
}

/// The RFC 6455 §1.3 sample request.
pub(crate) const SAMPLE_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: http://example.com\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Our server's exact answer to [`SAMPLE_REQUEST`] (no subprotocol: `accept` picks none).
pub(crate) const SAMPLE_RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// The masking key of every frame built by [`frame`] (the RFC 6455 §5.7 example key).
pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, built with the crate's encoder.
pub(crate) fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(&mut out, fin, opcode, payload, Some(MASK));
    out.to_vec()
}

/// An unmasked server frame, built with the crate's encoder.
pub(crate) fn server_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(&mut out, fin, opcode, payload, None);
    out.to_vec()
}

/// A close frame payload: the code in network order, then the reason.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// What the echo server saw, in order, for one connection.
#[derive(Debug)]
pub(crate) enum Event {
    /// `accept` failed (and answered 400/426, or dropped the connection).
    HandshakeFailed(Error),
    /// `recv` returned a message.
    Received(Message),
    /// `recv` returned `Ok(None)`: the close handshake completed.
    Closed,
    /// A server-initiated `close_with` (the `!close` command) returned.
    CloseDone(Result<(), Error>),
    /// `recv` or a send failed.
    Failed(Error),
}

/// An echo server on `127.0.0.1:0` built on `switchboard_ws::tokio::accept`.
///
/// It echoes text and binary messages (batched with `feed`; `recv` flushes) and reports
/// every step as an [`Event`]. Two text commands make it act first: `!ping <payload>`
/// sends a ping, `!close <reason>` starts the close handshake with code 4000.
#[derive(Debug)]
pub(crate) struct EchoServer {
    pub(crate) addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Event>,
}

impl EchoServer {
    /// Starts the server with default limits.
    pub(crate) async fn start() -> EchoServer {
        EchoServer::with_config(Config::default()).await
    }

    /// Starts the server with `config`.
    pub(crate) async fn with_config(config: Config) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo(stream, config.clone(), tx.clone()));
            }
        });
        EchoServer { addr, events }
    }

    /// The next event from any connection.
    pub(crate) async fn event(&mut self) -> Event {
        tokio::time::timeout(READ_TIMEOUT, self.events.recv())
            .await
            .expect("no server event within READ_TIMEOUT")
            .expect("the server task is gone")
    }

    /// The next event, which must be a received message.
    pub(crate) async fn received(&mut self) -> Message {
        match self.event().await {
            Event::Received(message) => message,
            other => panic!("expected a received message, got {other:?}"),
        }
    }

    /// The next event, which must be a failure; returns the error.
    pub(crate) async fn failed(&mut self) -> Error {
        match self.event().await {
            Event::Failed(err) => err,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// Checks that the server failed `raw`'s connection for `expected`: a close frame with
    /// its code and its message as the reason, then EOF; and that `recv` returned it.
    pub(crate) async fn expect_failure(&mut self, mut raw: Raw, expected: ProtocolError) {
        let reason = raw.expect_failure(expected.close_code().0).await;
        assert_eq!(
            reason,
            expected.to_string(),
            "the close reason names the rule"
        );
        // The server drains until we close (§7.1.1), and only then returns the error.
        drop(raw);
        match self.failed().await {
            Error::Protocol(err) => assert_eq!(err, expected),
            other => panic!("expected {expected:?}, the server failed with {other:?}"),
        }
    }

    /// A raw client that completed the sample handshake with this server.
    pub(crate) async fn raw(&self) -> Raw {
        Raw::upgrade(self.addr).await
    }
}

async fn echo(stream: TcpStream, config: Config, events: mpsc::UnboundedSender<Event>) {
    let mut ws = match switchboard_ws::tokio::accept(stream, config).await {
        Ok(ws) => ws,
        Err(err) => {
            let _ = events.send(Event::HandshakeFailed(err));
            return;
        }
    };
    loop {
        let message = match ws.recv().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                let _ = events.send(Event::Closed);
                return;
            }
            Err(err) => {
                let _ = events.send(Event::Failed(err));
                return;
            }
        };
        let _ = events.send(Event::Received(message.clone()));
        let command = match &message {
            Message::Text(text) => text.as_str(),
            _ => "",
        };
        let sent = if let Some(reason) = command.strip_prefix("!close ") {
            let result = ws.close_with(CloseCode(4000), reason).await;
            let _ = events.send(Event::CloseDone(result));
            return;
        } else if let Some(payload) = command.strip_prefix("!ping ") {
            ws.send(&Message::Ping(payload.as_bytes().to_vec().into()))
                .await
        } else if message.is_data() {
            ws.feed(&message).await
        } else {
            Ok(())
        };
        if let Err(err) = sent {
            let _ = events.send(Event::Failed(err));
            return;
        }
    }
}

/// A frame as read off the wire, parsed independently of the crate's decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireFrame {
    pub(crate) fin: bool,
    /// RSV1-3 as the 3 bits below FIN.
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    /// The masking key, if the frame was masked.
    pub(crate) mask: Option<[u8; 4]>,
    /// Unmasked.
    pub(crate) payload: Vec<u8>,
}

/// One end of a raw TCP connection: exact bytes out, exact bytes in, every read bounded by
/// [`READ_TIMEOUT`].
#[derive(Debug)]
pub(crate) struct Raw {
    rd: OwnedReadHalf,
    wr: Option<OwnedWriteHalf>,
    buf: BytesMut,
}

impl Raw {
    /// Wraps a connected stream.
    pub(crate) fn new(stream: TcpStream) -> Raw {
        let (rd, wr) = stream.into_split();
        Raw {
            rd,
            wr: Some(wr),
            buf: BytesMut::new(),
        }
    }

    /// Connects to `addr` without a handshake.
    pub(crate) async fn connect(addr: SocketAddr) -> Raw {
        Raw::new(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Connects and completes the RFC sample handshake, checking the exact 101 response.
    pub(crate) async fn upgrade(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.write(SAMPLE_REQUEST).await;
        let head = raw.read_head().await;
        assert_eq!(
            head.as_bytes(),
            SAMPLE_RESPONSE,
            "unexpected handshake response"
        );
        raw
    }

    /// Accepts one connection on `listener` and answers its upgrade request with a 101
    /// (accept key from tungstenite, not from the crate under test).
    pub(crate) async fn accept_upgrade(listener: &TcpListener) -> Raw {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut raw = Raw::new(stream);
        let head = raw.read_head().await;
        let key = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .expect("the request has a Sec-WebSocket-Key");
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        raw.write(response.as_bytes()).await;
        raw
    }

    /// Writes all of `bytes`.
    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        let wr = self.wr.as_mut().expect("the write half was taken");
        tokio::time::timeout(READ_TIMEOUT, wr.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Gives the write half away, e.g. to a task that writes while this end reads.
    pub(crate) fn take_writer(&mut self) -> OwnedWriteHalf {
        self.wr.take().expect("the write half was taken")
    }

    /// One read into the buffer; 0 at EOF.
    async fn fill(&mut self, waiting_for: &str) -> usize {
        self.buf.reserve(64 << 10);
        tokio::time::timeout(READ_TIMEOUT, self.rd.read_buf(&mut self.buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {waiting_for}"))
            .unwrap_or_else(|err| panic!("read failed waiting for {waiting_for}: {err}"))
    }

    /// Reads exactly `n` bytes.
    pub(crate) async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let what = format!("{n} bytes (have {})", self.buf.len());
            assert!(self.fill(&what).await > 0, "EOF while waiting for {what}");
        }
        self.buf.split_to(n).to_vec()
    }

    /// Reads an HTTP head, up to and including the blank line, and nothing past it.
    pub(crate) async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.buf.split_to(end + 4);
                return String::from_utf8(head.to_vec()).expect("the HTTP head is UTF-8");
            }
            assert!(
                self.fill("an HTTP head").await > 0,
                "EOF inside an HTTP head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads one frame, unmasking it if it is masked.
    pub(crate) async fn read_frame(&mut self) -> WireFrame {
        let head = self.read_exact(2).await;
        let len = match head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes(
                self.read_exact(2).await.try_into().expect("2 bytes"),
            )),
            127 => u64::from_be_bytes(self.read_exact(8).await.try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        let masked = head[1] & 0x80 != 0;
        let mask = if masked {
            Some(<[u8; 4]>::try_from(self.read_exact(4).await).expect("4 bytes"))
        } else {
            None
        };
        let len = usize::try_from(len).expect("frame length fits usize");
        let mut payload = self.read_exact(len).await;
        if let Some(key) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        WireFrame {
            fin: head[0] & 0x80 != 0,
            rsv: (head[0] >> 4) & 0x7,
            opcode: head[0] & 0x0f,
            mask,
            payload,
        }
    }

    /// Reads one unmasked, final frame with no RSV bits and checks its opcode and payload.
    pub(crate) async fn expect_frame(&mut self, opcode: u8, payload: &[u8]) {
        let frame = self.read_frame().await;
        assert_eq!(
            (frame.fin, frame.rsv, frame.opcode, frame.mask),
            (true, 0, opcode, None),
            "frame header of {frame:?}"
        );
        assert_eq!(frame.payload, payload, "payload of opcode {opcode:#x}");
    }

    /// Reads a close frame (masked or not), checks its code and returns its reason.
    pub(crate) async fn expect_close(&mut self, code: u16) -> String {
        let frame = self.read_frame().await;
        assert_eq!(
            (frame.fin, frame.rsv, frame.opcode),
            (true, 0, 0x8),
            "expected a close frame with code {code}, got {frame:?} ({:?})",
            String::from_utf8_lossy(&frame.payload)
        );
        assert!(frame.payload.len() >= 2, "close frame without a code");
        let got = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
        let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("UTF-8 reason");
        assert_eq!(got, code, "close code (reason {reason:?})");
        reason
    }

    /// Reads a close frame with `code`, then EOF: the connection was failed (§7.1.7).
    /// Returns the reason.
    pub(crate) async fn expect_failure(&mut self, code: u16) -> String {
        let reason = self.expect_close(code).await;
        self.expect_eof().await;
        reason
    }

    /// Expects the peer to close the TCP connection with nothing more to read.
    pub(crate) async fn expect_eof(&mut self) {
        if self.buf.is_empty() {
            let n = self.fill("EOF").await;
            assert_eq!(n, 0, "expected EOF, got {:?}", &self.buf[..]);
        } else {
            panic!("expected EOF, have unread bytes {:?}", &self.buf[..]);
        }
    }

    /// Expects nothing to arrive for `wait` (and the connection to stay open).
    pub(crate) async fn expect_silence(&mut self, wait: Duration) {
        assert!(self.buf.is_empty(), "unread bytes {:?}", &self.buf[..]);
        if let Ok(read) = tokio::time::timeout(wait, self.rd.read_buf(&mut self.buf)).await {
            panic!("expected silence, got {read:?}: {:?}", &self.buf[..]);
        }
    }

    /// Reads until EOF, tolerating a reset (a peer that closes with unread input resets
    /// the connection). Returns everything read.
    pub(crate) async fn read_to_end(&mut self) -> Vec<u8> {
        loop {
            self.buf.reserve(64 << 10);
            let read = tokio::time::timeout(READ_TIMEOUT, self.rd.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for EOF");
            match read {
                Ok(0) | Err(_) => return std::mem::take(&mut self.buf).to_vec(),
                Ok(_) => {}
            }
        }
    }
}
