//! A WebSocket session of the client protocol.
//!
//! [`Client`] sends commands as JSON text frames, each with an `id`, and reads what comes
//! back: a reply (`{"id", "result"}` or `{"id", "error"}`) or a push (`{"push", …}`).
//! Whatever arrives while it waits for something else is kept, in order, so a test or a
//! tool can ask for "the reply to 7" and later for "the next push" without losing either.
//! Pings are answered while it reads (the adapter does that). For what the sorting does
//! not cover (a load client counting frames, a test sending a binary frame), the raw
//! frames are there too: [`Client::recv`], [`Client::send`].

use std::collections::VecDeque;

use crate::api::error_of;
use crate::error::{Error, Result, quote};
use crate::tls::{Stream, Tls};
use crate::url::Endpoint;
use serde_json::{Value, json};
use switchboard_ws::tokio::WebSocket;
use switchboard_ws::{CloseCode, CloseFrame, CloseState, Message};

/// What a read brought: a JSON message, or the server's close frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A text frame, parsed.
    Json(Value),
    /// The server's close frame: its code (1005 when it had none) and reason.
    Close(u16, String),
}

/// The code and reason of a close frame; 1005 (no status) for an empty one.
pub fn close_parts(frame: &Option<CloseFrame>) -> (u16, String) {
    match frame {
        Some(f) => (f.code.0, f.reason.to_string()),
        None => (CloseCode::NO_STATUS.0, String::new()),
    }
}

/// A WebSocket connection speaking the client protocol.
#[derive(Debug)]
pub struct Client {
    ws: WebSocket<Stream>,
    next_id: u64,
    pushes: VecDeque<Value>,
    replies: VecDeque<Value>,
}

impl Client {
    /// Opens a WebSocket to a `ws://HOST[:PORT]/PATH` URL (or `wss://`, trusting the
    /// system's roots), without sending `connect`.
    pub async fn open(url: &str) -> Result<Client> {
        Client::open_with(url, None).await
    }

    /// [`open`](Self::open), offering permessage-deflate as browsers do: a server that
    /// takes it sends its larger messages compressed, and ours of 64 bytes and more leave
    /// compressed (log lines and JSON shrink several times). `wss://` trusts the system's
    /// roots.
    pub async fn open_compressed(url: &str) -> Result<Client> {
        let endpoint = Endpoint::parse(url)?;
        let stream = endpoint.connect(None).await?;
        Client::handshake_with(stream, &endpoint.authority, &endpoint.path, &[], true).await
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.ws.deflate()
    }

    /// [`open`](Self::open), trusting `tls` (a CA file…) for a `wss://` URL.
    pub async fn open_with(url: &str, tls: Option<&Tls>) -> Result<Client> {
        let endpoint = Endpoint::parse(url)?;
        let stream = endpoint.connect(tls).await?;
        Client::handshake(stream, &endpoint.authority, &endpoint.path, &[]).await
    }

    /// Opens a WebSocket on a stream the caller connected (from a chosen source address,
    /// with a small receive buffer…; a `TcpStream`, or a TLS [`Stream`] from
    /// [`Endpoint::secure`]): `host` is the `Host` header, `path` the endpoint, `headers`
    /// extra request headers (`Origin`…).
    pub async fn handshake(
        stream: impl Into<Stream>,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client> {
        Client::handshake_with(stream, host, path, headers, false).await
    }

    /// [`handshake`](Self::handshake), offering permessage-deflate when `deflate` is set
    /// (as browsers do): the server's messages may then arrive compressed, and ours over
    /// 64 bytes leave compressed.
    pub async fn handshake_with(
        stream: impl Into<Stream>,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        deflate: bool,
    ) -> Result<Client> {
        let stream = stream.into();
        stream.no_delay(host)?;
        let config = switchboard_ws::Config {
            deflate: switchboard_ws::DeflateConfig {
                enabled: deflate,
                ..switchboard_ws::DeflateConfig::default()
            },
            ..switchboard_ws::Config::default()
        };
        let (ws, _) =
            switchboard_ws::tokio::connect(stream, host, path, &[], headers, config).await?;
        Ok(Client {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
        })
    }

    /// Sends `connect` (with `token`, or anonymously) and returns its result.
    pub async fn connect(&mut self, token: Option<&str>) -> Result<Value> {
        let mut command = json!({"cmd": "connect"});
        if let Some(token) = token {
            command["token"] = json!(token);
        }
        self.result(command).await
    }

    /// Gives `command` an id unless it has one; the id and the text to send.
    fn with_id(&mut self, mut command: Value) -> (u64, String) {
        let id = match command["id"].as_u64() {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                command["id"] = json!(id);
                id
            }
        };
        (id, command.to_string())
    }

    /// Buffers a command (with a fresh id unless it has one); it leaves with the next
    /// [`flush`](Self::flush), send or read. Returns the id.
    pub async fn feed_command(&mut self, command: Value) -> Result<u64> {
        let (id, text) = self.with_id(command);
        self.ws.feed(&Message::text(text)).await?;
        Ok(id)
    }

    /// Sends a command (with a fresh id unless it has one) without waiting; returns the id.
    pub async fn send_command(&mut self, command: Value) -> Result<u64> {
        let id = self.feed_command(command).await?;
        self.ws.flush().await?;
        Ok(id)
    }

    /// Sends a command and waits for its reply, the whole object (`result` or `error`).
    pub async fn call(&mut self, command: Value) -> Result<Value> {
        let id = self.send_command(command).await?;
        self.reply(id).await
    }

    /// Sends a command and returns its `result`; an error reply is [`Error::Refused`].
    pub async fn result(&mut self, command: Value) -> Result<Value> {
        let id = self.send_command(command).await?;
        self.reply_result(id).await
    }

    /// Waits for the reply with `id` and returns its `result`; an error reply is
    /// [`Error::Refused`]. For commands sent with [`feed_command`](Self::feed_command) or
    /// [`send_command`](Self::send_command), e.g. several pipelined.
    pub async fn reply_result(&mut self, id: u64) -> Result<Value> {
        let mut reply = self.reply(id).await?;
        match error_of(&reply) {
            Some(refused) => Err(refused),
            None => Ok(reply["result"].take()),
        }
    }

    /// Waits for the reply with `id`, keeping what arrives first.
    pub async fn reply(&mut self, id: u64) -> Result<Value> {
        if let Some(i) = self.replies.iter().position(|r| r["id"] == id) {
            if let Some(reply) = self.replies.remove(i) {
                return Ok(reply);
            }
        }
        loop {
            match self.next_message().await? {
                // A reply is what is not a push.
                Incoming::Json(v) if v.get("push").is_none() && v["id"] == id => return Ok(v),
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => return Err(Error::Closed { code, reason }),
            }
        }
    }

    /// The next reply of any id (errors to frames that had none have `"id": null`).
    pub async fn next_reply(&mut self) -> Result<Value> {
        if let Some(reply) = self.replies.pop_front() {
            return Ok(reply);
        }
        loop {
            match self.next_message().await? {
                Incoming::Json(v) if v.get("push").is_none() => return Ok(v),
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => return Err(Error::Closed { code, reason }),
            }
        }
    }

    /// The next push, from those kept or from the connection.
    pub async fn next_push(&mut self) -> Result<Value> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(push);
        }
        loop {
            match self.next_message().await? {
                Incoming::Json(v) if v.get("push").is_some() => return Ok(v),
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => return Err(Error::Closed { code, reason }),
            }
        }
    }

    /// The pushes kept so far, in order.
    pub fn take_pushes(&mut self) -> Vec<Value> {
        self.pushes.drain(..).collect()
    }

    /// Replies kept so far (read while waiting for another), in order.
    pub fn take_replies(&mut self) -> Vec<Value> {
        self.replies.drain(..).collect()
    }

    /// Waits for the server's close frame, keeping the messages that come first; its code
    /// and reason. The connection ending without one is [`Error::Ended`].
    pub async fn expect_close(&mut self) -> Result<(u16, String)> {
        loop {
            match self.next_message().await? {
                Incoming::Json(v) => self.keep(v),
                Incoming::Close(code, reason) => return Ok((code, reason)),
            }
        }
    }

    /// Keeps a message read by [`next_message`](Self::next_message) for the sorted reads.
    pub fn keep(&mut self, message: Value) {
        if message.get("push").is_some() {
            self.pushes.push_back(message);
        } else {
            self.replies.push_back(message);
        }
    }

    /// The next text frame as JSON, or the close frame; pings and pongs are skipped, not
    /// kept. Nothing is sorted or kept: this is the unsorted stream. A binary frame or
    /// text that is not JSON is [`Error::Unexpected`]; the end of the connection without
    /// a close frame is [`Error::Ended`]. Cancel-safe (in a `select!` or a timeout).
    pub async fn next_message(&mut self) -> Result<Incoming> {
        loop {
            match self.ws.recv().await? {
                Some(Message::Text(text)) => {
                    return serde_json::from_str(&text)
                        .map(Incoming::Json)
                        .map_err(|e| {
                            Error::Unexpected(format!(
                                "text that is not JSON ({e}): {}",
                                quote(text.as_bytes())
                            ))
                        });
                }
                Some(Message::Close(frame)) => {
                    let (code, reason) = close_parts(&frame);
                    return Ok(Incoming::Close(code, reason));
                }
                Some(Message::Binary(b)) => {
                    return Err(Error::Unexpected(format!(
                        "a binary message: {}",
                        quote(&b)
                    )));
                }
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                None => return Err(Error::Ended),
            }
        }
    }

    /// Receives the next raw message (pings are answered first). `Ok(None)` once the
    /// connection is closed cleanly.
    pub async fn recv(&mut self) -> Result<Option<Message>> {
        Ok(self.ws.recv().await?)
    }

    /// Buffers a raw message; it leaves with the next flush, send or read.
    pub async fn feed(&mut self, message: &Message) -> Result<()> {
        Ok(self.ws.feed(message).await?)
    }

    /// Sends a raw message now (a text frame that is not a command, a binary frame…).
    pub async fn send(&mut self, message: &Message) -> Result<()> {
        Ok(self.ws.send(message).await?)
    }

    /// Writes what was fed.
    pub async fn flush(&mut self) -> Result<()> {
        Ok(self.ws.flush().await?)
    }

    /// Whether the close handshake has started or ended.
    pub fn close_state(&self) -> CloseState {
        self.ws.close_state()
    }

    /// Closes with `code` and `reason`, completing the close handshake (bounded by the
    /// adapter's close timeout).
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        Ok(self.ws.close_with(code, reason).await?)
    }

    /// Closes without a status code (the client's usual close).
    pub async fn close_plain(&mut self) -> Result<()> {
        Ok(self.ws.close(None).await?)
    }

    /// The WebSocket underneath.
    pub fn websocket(&mut self) -> &mut WebSocket<Stream> {
        &mut self.ws
    }
}
