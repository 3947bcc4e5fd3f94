//! HTTP sessions: what SSE and polling keep on the server between requests.
//!
//! An HTTP session is the same [`Session`] as a WebSocket connection, with its own
//! [`ClientHandle`] and [`Outbox`], so presence, join/leave, the mailbox, the slow-consumer
//! bound, shutdown and the server API's disconnect treat both alike. One actor task owns
//! each session; the HTTP handlers talk to it through a channel (`ToSession`) and never
//! touch the session themselves, so commands run one at a time, in arrival order.
//!
//! Each message taken from the outbox gets the next sequence number (1, 2, 3…) and stays
//! in a replay buffer until the client acknowledges it: a poll with `ack`, or an SSE
//! reconnect with `Last-Event-ID`. A response lost in flight is therefore sent again, and
//! nothing is sent twice once acknowledged. The buffer is bounded like the outbox
//! (`limits.outbox_messages` / `limits.outbox_bytes`). Past the bound, messages already
//! written to an SSE stream are dropped from its front (an SSE stream has no ack of its
//! own); otherwise the session ends as a slow consumer (4004).
//!
//! A session ends like a WebSocket connection (shutdown, server API, slow consumer, rate
//! limit, token expiry, no `connect` in time), or when no SSE stream and no poll has been
//! open for `limits.session_idle`. The client is told why on its stream or in its poll;
//! if neither is open at that moment, the ended session waits (at most `session_idle`) for
//! the next request to tell it. It is then removed: later requests naming it get 404.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use switchboard_ws::{CloseCode, PreparedMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use crate::admission::Refusal;
use crate::auth::{expires_in, is_expired};
use crate::error::{ClientError, close};
use crate::outbox::{ClientHandle, Disconnect, Outbox, outbox};
use crate::session::Session;
use crate::state::AppState;
use crate::transport::sse;
use crate::util::random_id;

/// Requests waiting for one session's actor. Small: a client has one poll or one send in
/// flight at a time; more wait in their HTTP handlers.
const REQUESTS: usize = 16;

/// The open HTTP sessions by id. A session is in it from its creation until its client
/// was told it ended (or could not be).
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, mpsc::Sender<ToSession>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<ToSession>>> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel to a live session's actor.
    pub(crate) fn get(&self, sid: &str) -> Option<mpsc::Sender<ToSession>> {
        self.lock().get(sid).cloned()
    }
}

/// What an HTTP handler asks of a session.
#[derive(Debug)]
pub(crate) enum ToSession {
    /// `POST /sse/send`: handle the commands; `done` is answered once they were (their
    /// replies are then queued on the stream).
    Commands {
        commands: Vec<String>,
        done: oneshot::Sender<()>,
    },
    /// A poll: acknowledge `ack`, handle the commands, and answer `reply` with the body
    /// (at once, or when something arrives if `wait`).
    Poll {
        ack: u64,
        wait: bool,
        commands: Vec<String>,
        reply: oneshot::Sender<Bytes>,
    },
    /// An SSE stream reconnecting after the message `resume`; `attached` is answered once
    /// the session took it.
    Stream {
        resume: u64,
        tx: sse::StreamTx,
        attached: oneshot::Sender<()>,
    },
}

/// Opens a new session for a client at `peer`, with its SSE stream when it is opened by
/// one; returns its id, or why it was refused (no pending slot: see
/// [`crate::admission`]).
pub(crate) fn open(
    state: &Arc<AppState>,
    stream: Option<sse::StreamTx>,
    peer: IpAddr,
) -> Result<(String, mpsc::Sender<ToSession>), Refusal> {
    let slot = state.admission.pending(peer)?;
    let (tx, rx) = mpsc::channel(REQUESTS);
    let sid = {
        let mut sessions = state.http_sessions.lock();
        // 128 random bits collide never in practice; checking costs nothing.
        let mut sid = random_id(16);
        while sessions.contains_key(&sid) {
            sid = random_id(16);
        }
        sessions.insert(sid.clone(), tx.clone());
        sid
    };
    let metrics = state.hub.metrics().clone();
    metrics.connections.add(1);
    metrics.connections_total.inc();
    let limits = &state.config.limits;
    let (handle, outbox) = outbox(
        state.hub.next_client_id(),
        limits.outbox_messages,
        limits.outbox_bytes,
        metrics,
    );
    state.hub.register(&handle);
    if state.shutdown.is_cancelled() {
        handle.disconnect(close::SHUTDOWN, "server shutting down");
    }
    let now = Instant::now();
    let stream = stream.map(|tx| {
        // A fresh channel has room: the opening event goes first.
        let _ = tx.try_send(sse::opening(&sid));
        Stream {
            tx,
            next_ping: now + limits.ping_interval,
        }
    });
    // Never the session id: it is a bearer credential.
    debug!(
        client = handle.id,
        sse = stream.is_some(),
        "HTTP session opened"
    );
    let actor = Actor {
        state: state.clone(),
        sid: sid.clone(),
        handle: handle.clone(),
        buffer: VecDeque::new(),
        buffered_bytes: 0,
        last_seq: 0,
        acked: 0,
        written: 0,
        dropped: 0,
        idle_since: stream.is_none().then_some(now),
        stream,
        poll: None,
    };
    let session = Session::new(state.clone(), handle, slot, peer);
    state.tracker.spawn(actor.run(session, outbox, rx));
    Ok((sid, tx))
}

/// An open SSE stream.
#[derive(Debug)]
struct Stream {
    tx: sse::StreamTx,
    /// When to send a keep-alive comment if nothing was written meanwhile.
    next_ping: Instant,
}

/// A long poll waiting for something to deliver.
#[derive(Debug)]
struct PendingPoll {
    reply: oneshot::Sender<Bytes>,
    deadline: Instant,
}

/// Why the session's loop stopped.
#[derive(Debug)]
enum End {
    /// Ended by the server; the client is to be told.
    Closed(Disconnect),
    /// No stream and no poll for `session_idle`: nobody is there to tell.
    Idle,
}

/// One session's task: owns the replay buffer and whatever stream or poll is open.
#[derive(Debug)]
struct Actor {
    state: Arc<AppState>,
    sid: String,
    /// The session's handle, to end it the way the hub would (first reason wins).
    handle: ClientHandle,
    /// Unacknowledged messages (seq, JSON text), in seq order, contiguous up to
    /// `last_seq`.
    buffer: VecDeque<(u64, Bytes)>,
    buffered_bytes: usize,
    /// The seq of the newest message.
    last_seq: u64,
    /// Everything up to this seq is acknowledged.
    acked: u64,
    /// SSE: everything up to this seq was written to a stream (this one or an earlier).
    written: u64,
    /// SSE: the newest seq dropped past the bound without an ack; a reconnect that needs
    /// it cannot be served.
    dropped: u64,
    stream: Option<Stream>,
    poll: Option<PendingPoll>,
    /// Since when neither a stream nor a poll has been open.
    idle_since: Option<Instant>,
}

impl Actor {
    async fn run(
        mut self,
        mut session: Session,
        mut outbox: Outbox,
        mut rx: mpsc::Receiver<ToSession>,
    ) {
        let end = self.drive(&mut session, &mut outbox, &mut rx).await;
        // Replies queued before the end (the error before a 4001) still go out.
        while let Some(message) = outbox.try_recv() {
            self.take(message);
        }
        // Leave channels (announcing leaves) and free the slot at once, as a closed
        // WebSocket does; telling the client may take a while.
        drop(session);
        self.state.hub.unregister(self.handle.id);
        self.state.hub.metrics().connections.add(-1);
        match end {
            End::Idle => debug!(client = self.handle.id, "HTTP session idle: ended"),
            End::Closed(reason) => {
                debug!(client = self.handle.id, code = reason.code.0, reason = %reason.reason, "HTTP session ended");
                if !self.tell(&reason) {
                    self.linger(&mut rx, &reason).await;
                }
            }
        }
        self.state.http_sessions.lock().remove(&self.sid);
        // Requests still queued are dropped with the receiver: their handlers answer 404.
    }

    /// The session's loop, until it ends.
    async fn drive(
        &mut self,
        session: &mut Session,
        outbox: &mut Outbox,
        rx: &mut mpsc::Receiver<ToSession>,
    ) -> End {
        let killed = outbox.killed();
        tokio::pin!(killed);
        let connect_deadline = Instant::now() + self.state.config.limits.connect_timeout;
        // One timer for every deadline: connect, token expiry, the poll's timeout, the
        // stream's keep-alive, idle expiry.
        let timer = tokio::time::sleep_until(connect_deadline);
        tokio::pin!(timer);
        loop {
            timer
                .as_mut()
                .reset(self.next_deadline(session, connect_deadline));
            let stream = self.stream.as_ref().map(|s| s.tx.clone());
            let unwritten = self.last_seq > self.written;
            tokio::select! {
                biased;
                () = &mut killed => return End::Closed(outbox.reason()),
                message = outbox.recv() => {
                    let Some(message) = message else { return End::Closed(outbox.reason()) };
                    self.take(message);
                    if let Some(end) = self.queued(outbox) {
                        return end;
                    }
                }
                request = rx.recv() => {
                    // The registry keeps a sender while the session lives.
                    let Some(request) = request else { return End::Idle };
                    if let Some(end) = self.request(request, session, outbox).await {
                        return end;
                    }
                }
                ready = stream_ready(stream, unwritten) => match ready {
                    Some(permit) => self.write(permit),
                    None => {
                        debug!(client = self.handle.id, "SSE stream closed");
                        self.stream = None;
                        self.idle_since_now();
                    }
                },
                () = &mut timer => {
                    if let Some(end) = self.tick(session, outbox, connect_deadline) {
                        return end;
                    }
                }
            }
        }
    }

    /// The earliest deadline the timer must wake for.
    fn next_deadline(&self, session: &Session, connect_deadline: Instant) -> Instant {
        let limits = &self.state.config.limits;
        let now = Instant::now();
        let mut deadline = now + Duration::from_secs(365 * 24 * 3600);
        if !session.is_connected() {
            deadline = deadline.min(connect_deadline);
        } else if let Some(exp) = session.token_expiry() {
            deadline = deadline.min(now + expires_in(exp));
        }
        if let Some(poll) = &self.poll {
            deadline = deadline.min(poll.deadline);
        }
        if let Some(stream) = &self.stream {
            deadline = deadline.min(stream.next_ping);
        }
        if let Some(since) = self.idle_since {
            deadline = deadline.min(since + limits.session_idle);
        }
        deadline
    }

    /// The timer fired: whichever deadline passed.
    fn tick(
        &mut self,
        session: &Session,
        outbox: &Outbox,
        connect_deadline: Instant,
    ) -> Option<End> {
        let (ping_interval, session_idle) = {
            let limits = &self.state.config.limits;
            (limits.ping_interval, limits.session_idle)
        };
        let now = Instant::now();
        if !session.is_connected() && now >= connect_deadline {
            return Some(self.end(
                outbox,
                close::CONNECT_TIMEOUT,
                "connect was not sent in time",
            ));
        }
        if session.token_expiry().is_some_and(is_expired) {
            return Some(self.end(
                outbox,
                close::TOKEN_EXPIRED,
                "the token expired; refresh it",
            ));
        }
        if self.poll.as_ref().is_some_and(|p| now >= p.deadline) {
            self.answer_poll(None);
        }
        if let Some(stream) = &mut self.stream {
            if now >= stream.next_ping {
                // Only when there is room: a stream that is not read needs no keep-alive.
                let _ = stream.tx.try_send(Bytes::from_static(sse::PING));
                stream.next_ping = now + ping_interval;
            }
        }
        if self
            .idle_since
            .is_some_and(|since| now >= since + session_idle)
        {
            return Some(End::Idle);
        }
        None
    }

    /// Ends the session through its handle, so the hub stops queueing to it and an
    /// earlier reason (shutdown, the server API) wins.
    fn end(&self, outbox: &Outbox, code: CloseCode, reason: &str) -> End {
        self.handle.disconnect(code, reason);
        End::Closed(outbox.reason())
    }

    /// Gives a message taken from the outbox its seq and keeps it until acknowledged.
    fn take(&mut self, message: PreparedMessage) {
        let payload = message.payload();
        self.last_seq += 1;
        self.buffered_bytes += payload.len();
        self.buffer.push_back((self.last_seq, payload));
    }

    /// After messages were queued: take whatever else is waiting, check the bound, and
    /// answer a waiting poll.
    fn queued(&mut self, outbox: &mut Outbox) -> Option<End> {
        while let Some(message) = outbox.try_recv() {
            self.take(message);
        }
        let (max_messages, max_bytes) = {
            let limits = &self.state.config.limits;
            (limits.outbox_messages, limits.outbox_bytes)
        };
        let over = |a: &Actor| a.buffer.len() > max_messages || a.buffered_bytes > max_bytes;
        while over(self) {
            match self.buffer.front() {
                // Already written to an SSE stream: the client most likely has it, and only
                // a reconnect could ask for it again.
                Some(&(seq, _)) if seq <= self.written => {
                    if let Some((_, payload)) = self.buffer.pop_front() {
                        self.buffered_bytes -= payload.len();
                    }
                    self.dropped = seq;
                }
                _ => {
                    self.state.hub.metrics().slow_consumers.inc();
                    return Some(self.end(
                        outbox,
                        close::SLOW_CONSUMER,
                        "slow consumer: too many unacknowledged messages",
                    ));
                }
            }
        }
        if self.poll.is_some() && !self.buffer.is_empty() {
            self.answer_poll(None);
        }
        None
    }

    /// Drops every message up to `seq` (at most the newest one).
    fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.last_seq);
        while let Some(&(front, _)) = self.buffer.front() {
            if front > seq {
                break;
            }
            if let Some((_, payload)) = self.buffer.pop_front() {
                self.buffered_bytes -= payload.len();
            }
        }
        self.acked = self.acked.max(seq);
        // Acknowledged messages need no writing to a stream either.
        self.written = self.written.max(self.acked);
    }

    fn idle_since_now(&mut self) {
        if self.stream.is_none() && self.poll.is_none() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Handles commands one at a time, as a WebSocket connection handles frames.
    async fn commands(
        &mut self,
        session: &mut Session,
        outbox: &mut Outbox,
        commands: &[String],
    ) -> Option<End> {
        for text in commands {
            if self.handle.is_disconnected() {
                return Some(End::Closed(outbox.reason()));
            }
            if let Err(end) = session.handle(text).await {
                return Some(self.end(outbox, end.code, &end.reason));
            }
            // Taken after each command, so a batch cannot overflow the outbox by itself.
            if let Some(end) = self.queued(outbox) {
                return Some(end);
            }
        }
        None
    }

    async fn request(
        &mut self,
        request: ToSession,
        session: &mut Session,
        outbox: &mut Outbox,
    ) -> Option<End> {
        match request {
            ToSession::Commands { commands, done } => {
                let end = self.commands(session, outbox, &commands).await;
                let _ = done.send(());
                end
            }
            ToSession::Poll {
                ack,
                wait,
                commands,
                reply,
            } => {
                // A newer poll answers the older one at once, with what it has.
                if self.poll.is_some() {
                    self.answer_poll(None);
                }
                self.ack(ack);
                self.idle_since = None;
                // Handled before the poll waits, so their replies are in this answer.
                let end = self.commands(session, outbox, &commands).await;
                // If the commands ended the session, the end answers this poll.
                self.poll = Some(PendingPoll {
                    reply,
                    deadline: Instant::now() + self.state.config.limits.poll_timeout,
                });
                if end.is_none() && (!wait || !self.buffer.is_empty()) {
                    self.answer_poll(None);
                }
                end
            }
            ToSession::Stream {
                resume,
                tx,
                attached,
            } => {
                let _ = attached.send(());
                // Someone resumed this session by its id: the older stream is told it is
                // over (if its reader is still there), so two readers never share one
                // session unnoticed.
                if let Some(older) = self.stream.take() {
                    let mut chunk = BytesMut::new();
                    sse::close(
                        &mut chunk,
                        &Disconnect {
                            code: close::SESSION_TAKEN,
                            reason: "another stream resumed this session".into(),
                        },
                    );
                    let _ = older.tx.try_send(chunk.freeze());
                }
                self.stream = Some(Stream {
                    tx,
                    next_ping: Instant::now() + self.state.config.limits.ping_interval,
                });
                self.idle_since = None;
                if resume < self.dropped {
                    return Some(self.end(outbox, close::SLOW_CONSUMER, "replay window passed"));
                }
                self.ack(resume);
                // What follows is written again, to the new stream.
                self.written = self.acked;
                None
            }
        }
    }

    /// Writes every message not yet written to the stream, as one chunk.
    fn write(&mut self, permit: mpsc::OwnedPermit<Bytes>) {
        let chunk = self.unwritten(None);
        // An empty chunk would mean nothing to the body; skip it.
        if !chunk.is_empty() {
            permit.send(chunk);
        }
        self.written = self.last_seq;
        if let Some(stream) = &mut self.stream {
            stream.next_ping = Instant::now() + self.state.config.limits.ping_interval;
        }
    }

    /// The SSE events of the messages not yet written, then the close event if given.
    fn unwritten(&self, closed: Option<&Disconnect>) -> Bytes {
        let start = self.buffer.partition_point(|(seq, _)| *seq <= self.written);
        let mut chunk = BytesMut::new();
        for (seq, payload) in self.buffer.range(start..) {
            sse::message(&mut chunk, &self.sid, *seq, payload);
        }
        if let Some(closed) = closed {
            sse::close(&mut chunk, closed);
        }
        chunk.freeze()
    }

    /// Answers the waiting poll with every unacknowledged message (and the end, if given).
    fn answer_poll(&mut self, closed: Option<&Disconnect>) {
        let Some(poll) = self.poll.take() else {
            return;
        };
        let seq = self.buffer.back().map_or(self.acked, |(seq, _)| *seq);
        let size = self.buffered_bytes + self.buffer.len() + 128;
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(b"{\"session\":\"");
        body.extend_from_slice(self.sid.as_bytes());
        body.extend_from_slice(format!("\",\"seq\":{seq},\"messages\":[").as_bytes());
        // The messages are JSON already: joined as they are, never re-parsed.
        for (i, (_, payload)) in self.buffer.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(payload);
        }
        body.push(b']');
        if let Some(closed) = closed {
            body.extend_from_slice(b",\"closed\":");
            body.extend_from_slice(close_json(closed).as_bytes());
        }
        body.push(b'}');
        // A client that went away loses nothing: its ack did not advance.
        let _ = poll.reply.send(Bytes::from(body));
        self.idle_since_now();
    }

    /// Tells the open stream and the waiting poll why the session ended; returns whether
    /// anyone was told.
    fn tell(&mut self, reason: &Disconnect) -> bool {
        let mut told = false;
        if let Some(poll) = &self.poll {
            // A client that gave up on its poll cannot be told through it.
            told = !poll.reply.is_closed();
            self.answer_poll(Some(reason));
        }
        if let Some(stream) = self.stream.take() {
            told |= stream.tx.try_send(self.unwritten(Some(reason))).is_ok();
        }
        told
    }

    /// After the end, when no client was there to be told: waits (at most
    /// `session_idle`) for the next poll or stream, and tells it.
    async fn linger(&mut self, rx: &mut mpsc::Receiver<ToSession>, reason: &Disconnect) {
        let deadline = Instant::now() + self.state.config.limits.session_idle;
        loop {
            let request = tokio::select! {
                request = rx.recv() => request,
                () = tokio::time::sleep_until(deadline) => return,
                () = self.state.shutdown.cancelled() => return,
            };
            match request {
                None => return,
                Some(ToSession::Poll { ack, reply, .. }) => {
                    self.ack(ack);
                    self.poll = Some(PendingPoll {
                        reply,
                        deadline: Instant::now(),
                    });
                    self.answer_poll(Some(reason));
                    return;
                }
                Some(ToSession::Stream {
                    resume,
                    tx,
                    attached,
                }) => {
                    let _ = attached.send(());
                    if resume >= self.dropped {
                        self.ack(resume);
                        self.written = self.acked;
                    } else {
                        // The messages it misses are gone: only the end is told.
                        self.written = self.last_seq;
                    }
                    if tx.try_send(self.unwritten(Some(reason))).is_ok() {
                        return;
                    }
                }
                // The session can no longer handle commands: dropping `done` answers 404.
                Some(ToSession::Commands { .. }) => {}
            }
        }
    }
}

/// Resolves when the stream can take a chunk (`Some`, if there is something to write) or
/// has been closed by its reader (`None`); never without a stream.
async fn stream_ready(
    stream: Option<sse::StreamTx>,
    unwritten: bool,
) -> Option<mpsc::OwnedPermit<Bytes>> {
    let Some(tx) = stream else {
        return std::future::pending().await;
    };
    if unwritten {
        tx.reserve_owned().await.ok()
    } else {
        tx.closed().await;
        None
    }
}

/// `{"code":…,"reason":"…"}`: how an ended session tells its client why.
pub(crate) fn close_json(reason: &Disconnect) -> String {
    serde_json::json!({"code": reason.code.0, "reason": reason.reason}).to_string()
}

/// An error answer with the usual body, `{"error":{"code","message"}}`.
pub(crate) fn error_response(status: StatusCode, error: &ClientError) -> Response {
    let mut response = (status, crate::protocol::error_body(error)).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A request refused before it reached its session: a status and an error body.
#[derive(Debug)]
pub(crate) struct Refused(StatusCode, ClientError);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error_response(self.0, &self.1)
    }
}

/// The 404 for a session that does not exist (any more).
pub(crate) fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &ClientError::session_not_found("unknown or expired session; open a new one"),
    )
}

/// Reads a command body (at most `limits.max_message_size` bytes, within
/// `limits.body_timeout`) and splits it into commands: a JSON array gives one command per
/// element; anything else is one command (bad JSON included: the session answers it with
/// the usual error). An empty body has none.
pub(crate) async fn read_commands(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<String>, Refused> {
    let limits = &state.config.limits;
    let bytes = crate::body::read(
        headers,
        body,
        limits.max_message_size,
        limits.body_timeout,
        state.hub.metrics(),
    )
    .await
    .map_err(|err| {
        let (status, error) = err.answer();
        Refused(status, error)
    })?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        Refused(
            StatusCode::BAD_REQUEST,
            ClientError::bad_request("the body is not UTF-8"),
        )
    })?;
    Ok(split_commands(text))
}

/// One command, or the elements of a JSON array of commands.
fn split_commands(text: String) -> Vec<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if trimmed.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(trimmed) {
            return items.iter().map(|item| item.get().to_owned()).collect();
        }
    }
    vec![text]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_commands() {
        assert!(split_commands(" \n".into()).is_empty());
        assert!(split_commands("[]".into()).is_empty());
        assert_eq!(
            split_commands(r#"{"cmd":"ping"}"#.into()),
            [r#"{"cmd":"ping"}"#]
        );
        assert_eq!(
            split_commands(r#"[{"id":1,"cmd":"ping"}, {"id":2,"cmd":"ping"}]"#.into()),
            [r#"{"id":1,"cmd":"ping"}"#, r#"{"id":2,"cmd":"ping"}"#]
        );
        // Not JSON, or an array that does not parse: one command, refused by the session.
        assert_eq!(split_commands("[{".into()), ["[{"]);
        assert_eq!(split_commands("nope".into()), ["nope"]);
    }
}
