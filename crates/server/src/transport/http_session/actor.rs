//! The task that owns one HTTP session: its replay buffer, its open stream or poll, its
//! deadlines.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use switchboard_ws::{CloseCode, PreparedMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::registry::ToSession;
use super::replay::{Bound, Replay};
use crate::admission::Refusal;
use crate::error::close;
use crate::outbox::{ClientHandle, Disconnect, Outbox, outbox};
use crate::session::Session;
use crate::transport::Shared;
use crate::transport::sse::event::{self as sse, StreamTx};
use crate::util::random_id;

/// Requests waiting for one session's actor. Small: a client has one poll or one send in
/// flight at a time; more wait in their HTTP handlers.
const REQUESTS: usize = 16;

/// Opens a new session for a client at `peer`, with its SSE stream when it is opened by
/// one; returns its id, or why it was refused (no pending slot: see
/// [`crate::admission`]).
pub(crate) fn open(
    shared: &Arc<Shared>,
    stream: Option<StreamTx>,
    peer: IpAddr,
) -> Result<(String, mpsc::Sender<ToSession>), Refusal> {
    let slot = shared.session.admission.pending(peer)?;
    let (tx, rx) = mpsc::channel(REQUESTS);
    let sid = {
        let mut sessions = shared.http_sessions.lock();
        // 128 random bits collide never in practice; checking costs nothing.
        // In a group, the id names this node, so other nodes forward its requests here.
        let cluster = shared.session.hub.cluster();
        let fresh = || match cluster {
            Some(cluster) => cluster.session_id(&random_id(16)),
            None => random_id(16),
        };
        let mut sid = fresh();
        while sessions.contains_key(&sid) {
            sid = fresh();
        }
        sessions.insert(sid.clone(), tx.clone());
        sid
    };
    let hub = &shared.session.hub;
    let metrics = hub.metrics().clone();
    metrics.connections.add(1);
    metrics.http_sessions.add(1);
    metrics.connections_total.inc();
    let limits = &shared.session.config.limits;
    let (handle, outbox) = outbox(
        hub.next_client_id(),
        limits.outbox_messages,
        limits.outbox_bytes,
        metrics,
    );
    hub.register(&handle);
    if shared.shutdown.is_cancelled() {
        handle.disconnect(close::SHUTDOWN, "server shutting down");
    }
    let now = Instant::now();
    let stream = stream.map(|tx| {
        // A fresh channel has room: the opening event goes first.
        let _ = tx.try_send(sse::opening(&sid));
        Stream::new(tx, now + limits.ping_interval, shared)
    });
    // Never the session id: it is a bearer credential.
    debug!(
        client = handle.id,
        sse = stream.is_some(),
        "HTTP session opened"
    );
    let actor = Actor {
        shared: shared.clone(),
        sid: sid.clone(),
        handle: handle.clone(),
        replay: Replay::default(),
        idle_since: stream.is_none().then_some(now),
        stream,
        poll: None,
    };
    let session = Session::new(shared.session.clone(), handle, slot, peer);
    shared.tracker.spawn(actor.run(session, outbox, rx));
    Ok((sid, tx))
}

/// An open SSE stream.
#[derive(Debug)]
struct Stream {
    tx: StreamTx,
    /// When to send a keep-alive comment if nothing was written meanwhile.
    next_ping: Instant,
    /// Counts it in `switchboard_sse_streams` while it exists.
    _open: OpenStream,
}

impl Stream {
    fn new(tx: StreamTx, next_ping: Instant, shared: &Shared) -> Self {
        let metrics = shared.session.hub.metrics().clone();
        metrics.sse_streams.add(1);
        Stream {
            tx,
            next_ping,
            _open: OpenStream(metrics),
        }
    }
}

/// One open stream in `switchboard_sse_streams`, for as long as it lives.
#[derive(Debug)]
struct OpenStream(Arc<crate::metrics::Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.sse_streams.add(-1);
    }
}

/// A long poll waiting for something to deliver.
#[derive(Debug)]
struct PendingPoll {
    reply: oneshot::Sender<Bytes>,
    deadline: Instant,
    /// Counts it in `switchboard_polls_waiting` while it exists.
    _waiting: Waiting,
}

impl PendingPoll {
    fn new(reply: oneshot::Sender<Bytes>, deadline: Instant, shared: &Shared) -> Self {
        let metrics = shared.session.hub.metrics().clone();
        metrics.polls_waiting.add(1);
        PendingPoll {
            reply,
            deadline,
            _waiting: Waiting(metrics),
        }
    }
}

/// One held poll in `switchboard_polls_waiting`, for as long as it lives.
#[derive(Debug)]
struct Waiting(Arc<crate::metrics::Metrics>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.polls_waiting.add(-1);
    }
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
    shared: Arc<Shared>,
    sid: String,
    /// The session's handle, to end it the way the hub would (first reason wins).
    handle: ClientHandle,
    /// What was sent and not yet acknowledged (see `replay`).
    replay: Replay,
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
        self.shared.session.hub.unregister(self.handle.id);
        let metrics = self.shared.session.hub.metrics();
        metrics.connections.add(-1);
        metrics.http_sessions.add(-1);
        match end {
            End::Idle => debug!(client = self.handle.id, "HTTP session idle: ended"),
            End::Closed(reason) => {
                debug!(client = self.handle.id, code = reason.code.0, reason = %reason.reason, "HTTP session ended");
                if !self.tell(&reason) {
                    self.linger(&mut rx, &reason).await;
                }
            }
        }
        self.shared.http_sessions.lock().remove(&self.sid);
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
        let connect_deadline = Instant::now() + self.shared.session.config.limits.connect_timeout;
        // One timer for every deadline: connect, token expiry, the poll's timeout, the
        // stream's keep-alive, idle expiry.
        let timer = tokio::time::sleep_until(connect_deadline);
        tokio::pin!(timer);
        loop {
            timer
                .as_mut()
                .reset(self.next_deadline(session, connect_deadline));
            let stream = self.stream.as_ref().map(|s| s.tx.clone());
            let unwritten = self.replay.has_unwritten();
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
        let limits = &self.shared.session.config.limits;
        let now = Instant::now();
        // The token's expiry, or a year from now without one.
        let mut deadline = now + session.expires_in();
        if !session.is_connected() {
            deadline = deadline.min(connect_deadline);
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
            let limits = &self.shared.session.config.limits;
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
        if session.token_expired() {
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
        self.replay.push(payload);
    }

    /// After messages were queued: take whatever else is waiting, check the bound, and
    /// answer a waiting poll.
    fn queued(&mut self, outbox: &mut Outbox) -> Option<End> {
        while let Some(message) = outbox.try_recv() {
            self.take(message);
        }
        let (max_messages, max_bytes) = {
            let limits = &self.shared.session.config.limits;
            (limits.outbox_messages, limits.outbox_bytes)
        };
        // Past the bound, messages already written to an SSE stream go first: the client
        // most likely has them, and only a reconnect could ask for them again.
        if self.replay.bound(max_messages, max_bytes) == Bound::Over {
            self.shared.session.hub.metrics().slow_consumers.inc();
            return Some(self.end(
                outbox,
                close::SLOW_CONSUMER,
                "slow consumer: too many unacknowledged messages",
            ));
        }
        if self.poll.is_some() && !self.replay.is_empty() {
            self.answer_poll(None);
        }
        None
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
                self.replay.ack(ack);
                self.idle_since = None;
                // Handled before the poll waits, so their replies are in this answer.
                let end = self.commands(session, outbox, &commands).await;
                // If the commands ended the session, the end answers this poll.
                let deadline = Instant::now() + self.shared.session.config.limits.poll_timeout;
                self.poll = Some(PendingPoll::new(reply, deadline, &self.shared));
                if end.is_none() && (!wait || !self.replay.is_empty()) {
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
                let next_ping = Instant::now() + self.shared.session.config.limits.ping_interval;
                self.stream = Some(Stream::new(tx, next_ping, &self.shared));
                self.idle_since = None;
                // What follows `resume` is written again, to the new stream.
                if !self.replay.resume(resume) {
                    return Some(self.end(outbox, close::SLOW_CONSUMER, "replay window passed"));
                }
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
        if let Some(stream) = &mut self.stream {
            stream.next_ping = Instant::now() + self.shared.session.config.limits.ping_interval;
        }
    }

    /// The SSE events of the messages not yet written (which count as written from now
    /// on), then the close event if given.
    fn unwritten(&mut self, closed: Option<&Disconnect>) -> Bytes {
        let mut chunk = BytesMut::new();
        for (seq, payload) in self.replay.take_unwritten() {
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
        let seq = self.replay.seq();
        let (bytes, count) = self.replay.size();
        let size = bytes + count + 128;
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(b"{\"session\":\"");
        body.extend_from_slice(self.sid.as_bytes());
        body.extend_from_slice(format!("\",\"seq\":{seq},\"messages\":[").as_bytes());
        // The messages are JSON already: joined as they are, never re-parsed.
        for (i, (_, payload)) in self.replay.pending().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(payload);
        }
        body.push(b']');
        if let Some(closed) = closed {
            body.extend_from_slice(b",\"closed\":");
            body.extend_from_slice(closed.to_json().as_bytes());
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
        let deadline = Instant::now() + self.shared.session.config.limits.session_idle;
        loop {
            let request = tokio::select! {
                request = rx.recv() => request,
                () = tokio::time::sleep_until(deadline) => return,
                () = self.shared.shutdown.cancelled() => return,
            };
            match request {
                None => return,
                Some(ToSession::Poll { ack, reply, .. }) => {
                    self.replay.ack(ack);
                    self.poll = Some(PendingPoll::new(reply, Instant::now(), &self.shared));
                    self.answer_poll(Some(reason));
                    return;
                }
                Some(ToSession::Stream {
                    resume,
                    tx,
                    attached,
                }) => {
                    let _ = attached.send(());
                    if !self.replay.resume(resume) {
                        // The messages it misses are gone: only the end is told.
                        self.replay.skip_to_end();
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
