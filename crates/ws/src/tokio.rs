//! The tokio adapter: [`WebSocket`] over any `AsyncRead + AsyncWrite`.
//!
//! Writes are batched: [`WebSocket::feed`] only encodes into a buffer, and
//! [`WebSocket::recv`] flushes that buffer before it waits for the socket. An echo loop
//! that answers every message it receives therefore writes once per batch of frames that
//! arrived together, not once per frame. [`WebSocket::send`] is feed + flush.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::timeout;

use crate::close::{CloseCode, CloseFrame};
use crate::conn::{CloseState, Connection};
use crate::deflate::{self, Params, SharedCompression};
use crate::error::{Error, Result};
use crate::handshake::{HandshakeError, client, server};
use crate::message::Message;
use crate::prepared::PreparedMessage;
use crate::utf8::Utf8Bytes;
use crate::{Config, Role};

/// Bytes the read buffer keeps free before each read.
const READ_CHUNK: usize = 8 << 10;

/// Size of the scratch array an idle connection reads into (see `read_idle`).
const IDLE_READ: usize = 4 << 10;

/// A WebSocket connection over a byte stream.
#[derive(Debug)]
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    config: Config,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// A large payload that goes out right after `write_buf`, written from the caller's
    /// buffer without a copy. Nothing is appended to `write_buf` while it is pending
    /// (see `settle`), so the two always leave in order, even across a cancelled flush.
    tail: Bytes,
    /// Whether the wait for the peer to close TCP is done (see `drain`).
    drained: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose handshake is done. `leftover` holds bytes read past the end of
    /// the handshake (frames the peer sent right after it).
    pub fn from_raw(stream: S, role: Role, config: Config, leftover: BytesMut) -> Self {
        WebSocket {
            stream,
            conn: Connection::new(role, &config),
            config,
            read_buf: leftover,
            write_buf: BytesMut::new(),
            tail: Bytes::new(),
            drained: false,
        }
    }

    /// Turns on permessage-deflate with the parameters of the server's response and the
    /// settings of this socket's [`Config::deflate`]. `accept_with` and `connect` do this
    /// themselves; a server that answers the upgrade elsewhere (hyper) calls it after
    /// [`crate::deflate::negotiate`]. Before the first message only.
    pub fn set_deflate(&mut self, params: &Params) {
        self.conn.set_deflate(params, &self.config.deflate);
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.conn.deflate()
    }

    /// See [`Connection::shared_compression`]: how a writer outside this socket (a server's
    /// fan-out writing prepared frames straight to the stream) encodes messages for it.
    pub fn shared_compression(&self) -> Option<SharedCompression> {
        self.conn.shared_compression()
    }

    /// The close handshake's progress.
    pub fn close_state(&self) -> CloseState {
        self.conn.state()
    }

    /// Receives the next message. Pings are answered with pongs and a close frame is
    /// echoed, before the message is returned to the caller. `Ok(None)` once the
    /// connection is closed cleanly. A protocol violation closes the connection with its
    /// RFC close code and is returned as [`Error::Protocol`].
    ///
    /// Cancel-safe while it waits for data (the usual case in a `select!`): received
    /// bytes stay buffered and a partly flushed write resumes on the next call. Only the
    /// close handshake itself, once a close frame has arrived, should not be cancelled.
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        loop {
            match self.conn.read(&mut self.read_buf) {
                Ok(Some(message)) => {
                    self.obey(&message).await?;
                    return Ok(Some(message));
                }
                Ok(None) => {}
                Err(err) => {
                    let reason = err.to_string();
                    // Best effort: the peer may be gone already.
                    let _ = self.fail(CloseFrame::new(err.close_code(), reason)).await;
                    return Err(err.into());
                }
            }
            if self.conn.state() == CloseState::Closed {
                if !self.drained {
                    self.drained = true;
                    self.drain().await;
                }
                return Ok(None);
            }
            self.flush().await?;
            let read = if self.read_buf.is_empty() && !self.conn.frame_in_progress() {
                self.read_idle().await?
            } else {
                if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK {
                    self.read_buf.reserve(READ_CHUNK);
                }
                self.stream.read_buf(&mut self.read_buf).await?
            };
            if read == 0 {
                self.conn.set_closed();
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Reads when nothing is buffered: an idle connection (most of a server's) should hold
    /// no read buffer, so the wait happens with the buffer freed, and bytes are read into a
    /// scratch array on the stack of one `poll` (not kept in the future) and copied into a
    /// buffer of their own size.
    async fn read_idle(&mut self) -> Result<usize> {
        self.read_buf = BytesMut::new();
        let (stream, read_buf) = (&mut self.stream, &mut self.read_buf);
        let n = std::future::poll_fn(|cx| {
            // Uninitialised: zeroing 4 KiB on every poll of every idle connection cost
            // 10% of the server's CPU in a fan-out benchmark.
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); IDLE_READ];
            let mut filled = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut filled) {
                Poll::Ready(Ok(())) => {
                    read_buf.extend_from_slice(filled.filled());
                    Poll::Ready(Ok(filled.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        Ok(n)
    }

    /// Honours what a received control frame obliges us to do.
    async fn obey(&mut self, message: &Message) -> Result<()> {
        if matches!(message, Message::Ping(_) | Message::Close(_)) {
            self.settle().await?;
        }
        match message {
            Message::Ping(payload) if self.conn.state() == CloseState::Open => self
                .conn
                .encode(&Message::Pong(payload.clone()), &mut self.write_buf),
            Message::Close(frame) => {
                if let Some(reply) = self.conn.close_reply(frame) {
                    self.conn.encode(&reply, &mut self.write_buf)?;
                }
                self.flush().await?;
                // §7.1.1: the server closes TCP first. The wait for the peer's end happens
                // in the next `recv`, so the caller sees the close frame at once.
                if self.conn.role() == Role::Server {
                    let _ = self.stream.shutdown().await;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads and discards until the peer closes or the close timeout passes, so unread
    /// bytes do not make the kernel reset the connection under our close frame (a client
    /// waits here for the server to close TCP, §7.1.1).
    async fn drain(&mut self) {
        let mut sink = [0u8; 1024];
        let wait = async { while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = timeout(self.config.close_timeout, wait).await;
    }

    /// Fails the connection (§7.1.7): sends a close frame with `frame`, then closes.
    async fn fail(&mut self, frame: CloseFrame) -> Result<()> {
        self.settle().await?;
        if self.conn.state() == CloseState::Open {
            self.conn
                .encode(&Message::Close(Some(frame)), &mut self.write_buf)?;
        }
        self.conn.set_closed();
        self.drained = true;
        self.flush().await?;
        let _ = self.stream.shutdown().await;
        self.drain().await;
        Ok(())
    }

    /// Buffers a message; it is written by the next [`flush`](Self::flush), by
    /// [`recv`](Self::recv) before it waits, or at once if the buffer is full or the payload
    /// is large.
    pub async fn feed(&mut self, message: &Message) -> Result<()> {
        self.settle().await?;
        let payload = match message {
            Message::Text(t) => Some((true, t.as_bytes())),
            Message::Binary(b) => Some((false, b)),
            _ => None,
        };
        match payload {
            Some((text, data))
                if self.conn.role() == Role::Server
                    && data.len() >= self.config.vectored_write_threshold
                    && !self.conn.compresses(data.len()) =>
            {
                self.conn
                    .encode_data_header(text, data.len(), &mut self.write_buf)?;
                self.tail = data.clone();
                return self.flush().await;
            }
            _ => self.conn.encode(message, &mut self.write_buf)?,
        }
        if self.write_buf.len() >= self.config.write_buffer_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends a message now.
    pub async fn send(&mut self, message: &Message) -> Result<()> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Buffers a message encoded once for many connections (server side).
    pub async fn feed_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        if matches!(
            self.conn.state(),
            CloseState::CloseSent | CloseState::Closed
        ) {
            return Err(Error::AlreadyClosed);
        }
        self.settle().await?;
        let frame = if message.is_compressed() {
            // Encoded by the caller for this connection (`SharedCompression::encode`).
            message.as_bytes().clone()
        } else if let Some(shared) = self.conn.shared_compression() {
            // Compressed once for every connection with this setting (RFC 7692 without
            // context takeover: the same bytes are valid on each).
            shared.encode(message).as_bytes().clone()
        } else if self.conn.compresses_in_context(message.payload_len()) {
            // Our context is this connection's alone: compress here.
            let payload = message.payload();
            let message = match message.as_bytes()[0] & 0x0f {
                // Only `PreparedMessage::text`, from a `&str`, makes text frames.
                0x1 => Message::Text(Utf8Bytes::from_validated(payload)),
                _ => Message::Binary(payload),
            };
            return self.feed(&message).await;
        } else {
            message.as_bytes().clone()
        };
        if frame.len() >= self.config.vectored_write_threshold {
            self.tail = frame;
            return self.flush().await;
        }
        self.write_buf.extend_from_slice(&frame);
        if self.write_buf.len() >= self.config.write_buffer_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes everything buffered. Cancel-safe: bytes leave the buffers only once
    /// written, so a cancelled flush resumes where it stopped.
    pub async fn flush(&mut self) -> Result<()> {
        while !self.write_buf.is_empty() || !self.tail.is_empty() {
            let n = if self.tail.is_empty() {
                self.stream.write(&self.write_buf).await?
            } else if self.write_buf.is_empty() {
                self.stream.write(&self.tail).await?
            } else {
                let bufs = [IoSlice::new(&self.write_buf), IoSlice::new(&self.tail)];
                self.stream.write_vectored(&bufs).await?
            };
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            let from_buf = n.min(self.write_buf.len());
            self.write_buf.advance(from_buf);
            self.tail.advance(n - from_buf);
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Finishes writing a pending large payload, so new frames can be buffered after it.
    async fn settle(&mut self) -> Result<()> {
        if !self.tail.is_empty() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Starts the close handshake with `frame` (or no status) and completes it: waits for
    /// the peer's close frame, discarding data that arrives meanwhile, then closes the
    /// stream. Bounded by the close timeout.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        let close_timeout = self.config.close_timeout;
        // The flush is inside the timeout too: a peer that stopped reading must not hold
        // the connection open forever. Then until `recv` reports the end: past the peer's
        // close frame and, for a client, the server closing TCP.
        let wait = async {
            self.settle().await?;
            if self.conn.state() == CloseState::Open {
                self.conn
                    .encode(&Message::Close(frame), &mut self.write_buf)?;
            }
            self.flush().await?;
            while self.recv().await?.is_some() {}
            Ok(())
        };
        match timeout(close_timeout, wait).await {
            Ok(result) => result,
            Err(_) => {
                self.conn.set_closed();
                let _ = self.stream.shutdown().await;
                Err(Error::Timeout)
            }
        }
    }

    /// Closes with a code and a reason.
    pub async fn close_with(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.close(Some(CloseFrame::new(code, reason))).await
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

/// Reads an HTTP head (request or response) into `buf` until `parse` finds it whole,
/// within the size limit that `parse` enforces and the handshake timeout.
async fn read_head<S, T>(
    stream: &mut S,
    buf: &mut BytesMut,
    config: &Config,
    mut parse: impl FnMut(&[u8]) -> std::result::Result<Option<(usize, T)>, HandshakeError>,
) -> Result<(usize, T)>
where
    S: AsyncRead + Unpin,
{
    let read = async {
        loop {
            if let Some(done) = parse(buf)? {
                return Ok(done);
            }
            // Never read past the limit: a head that fills it is refused by `parse`.
            let room = config.max_handshake_size.saturating_sub(buf.len()).max(1);
            buf.reserve(room);
            let n = (&mut *stream).take(room as u64).read_buf(buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    };
    timeout(config.handshake_timeout, read)
        .await
        .unwrap_or(Err(Error::Timeout))
}

/// Accepts a WebSocket connection on a raw stream: reads and checks the upgrade request,
/// then lets `decide` refuse it (e.g. a bad `Origin`) or pick a subprotocol. A refused or
/// invalid request is answered with its 400/426 and returned as an error.
pub async fn accept_with<S, F>(mut stream: S, config: Config, decide: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(
        &server::Request,
        &server::Upgrade,
    ) -> std::result::Result<Option<String>, HandshakeError>,
{
    let mut buf = BytesMut::new();
    let max = config.max_handshake_size;
    let checked = match read_head(&mut stream, &mut buf, &config, |b| {
        server::parse_request(b, max)
    })
    .await
    {
        Ok((len, request)) => request.check().and_then(|up| {
            let protocol = decide(&request, &up)?;
            Ok((len, up, protocol))
        }),
        Err(Error::Handshake(err)) => Err(err),
        Err(other) => return Err(other),
    };
    match checked {
        Ok((len, upgrade, protocol)) => {
            let deflate = deflate::negotiate(&upgrade.extensions, &config.deflate);
            let extensions = deflate.as_ref().map(Params::to_header);
            stream
                .write_all(&upgrade.response_with(protocol.as_deref(), extensions.as_deref()))
                .await?;
            stream.flush().await?;
            buf.advance(len);
            let mut ws = WebSocket::from_raw(stream, Role::Server, config, buf);
            if let Some(params) = &deflate {
                ws.set_deflate(params);
            }
            Ok(ws)
        }
        Err(err) => {
            stream.write_all(&server::rejection(&err)).await?;
            let _ = stream.shutdown().await;
            Err(err.into())
        }
    }
}

/// Accepts any valid upgrade request, without a subprotocol.
pub async fn accept<S>(stream: S, config: Config) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, config, |_, _| Ok(None)).await
}

/// Performs the client handshake on a connected stream. `host` is the `Host` header
/// (`host[:port]`), `path` the request target. Offers permessage-deflate when
/// [`Config::deflate`] is enabled, and fails on a response it cannot accept.
pub async fn connect<S>(
    mut stream: S,
    host: &str,
    path: &str,
    protocols: &[&str],
    headers: &[(&str, &str)],
    config: Config,
) -> Result<(WebSocket<S>, client::Response)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request =
        client::Request::with_deflate(host, path, protocols, headers, Some(&config.deflate));
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = BytesMut::new();
    let max = config.max_handshake_size;
    let (len, response) = read_head(&mut stream, &mut buf, &config, |b| {
        request.parse_response(b, max)
    })
    .await?;
    buf.advance(len);
    let mut ws = WebSocket::from_raw(stream, Role::Client, config, buf);
    if let Some(params) = &response.deflate {
        ws.set_deflate(params);
    }
    Ok((ws, response))
}
