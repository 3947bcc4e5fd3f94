//! The task that owns one HTTP session: its replay buffer, its open stream or poll, its
//! deadlines.

use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::{BufMut, Bytes};
use switchboard_ws::CloseCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::feed::{Feed, FeedState, SessionStream, StreamBody};
use super::registry::ToSession;
use super::replay::Bound;
use crate::admission::Refusal;
use crate::error::close;
use crate::outbox::{ClientHandle, Disconnect, outbox};
use crate::session::Session;
use crate::transport::Shared;
use crate::transport::sse::event::{self as sse, put_decimal};
use crate::util::random_id;

/// Requests waiting for one session's actor. Small: a client has one poll or one send in
/// flight at a time; more wait in their HTTP handlers.
const REQUESTS: usize = 16;

/// A new session: its id, the way to its actor, and its stream's body when it was opened
/// by one.
pub(crate) type Opened = (String, mpsc::Sender<ToSession>, Option<SessionStream>);

/// Opens a new session for a client at `peer`, with its SSE stream when it is opened by
/// one (`stream`); returns it, or why it was refused (no pending slot: see
/// [`crate::admission`]).
pub(crate) fn open(shared: &Arc<Shared>, stream: bool, peer: IpAddr) -> Result<Opened, Refusal> {
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
        metrics.clone(),
    );
    hub.register(&handle);
    if shared.shutdown.is_cancelled() {
        handle.disconnect(close::SHUTDOWN, "server shutting down");
    }
    let feed = Feed::new(
        sid.clone(),
        outbox,
        handle.clone(),
        limits.outbox_messages,
        limits.outbox_bytes,
        metrics,
    );
    let now = Instant::now();
    // The opening event goes first.
    let body = stream.then(|| feed.attach(&sse::opening(&sid), now));
    // Never the session id: it is a bearer credential.
    debug!(client = handle.id, sse = stream, "HTTP session opened");
    let actor = Actor {
        shared: shared.clone(),
        sid: sid.clone(),
        handle: handle.clone(),
        feed,
        idle_since: (!stream).then_some(now),
        stream: stream.then_some(StreamTimer {
            next_ping: now + limits.ping_interval,
        }),
        poll: None,
    };
    let session = Session::new(shared.session.clone(), handle, slot, peer);
    shared.tracker.spawn(actor.run(session, rx));
    Ok((sid, tx, body))
}

/// The actor's side of an open SSE stream (its body writes the messages: see `feed`).
#[derive(Debug)]
struct StreamTimer {
    /// When to look whether a keep-alive comment is due (nothing written for
    /// `limits.ping_interval`).
    next_ping: Instant,
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

/// One session's task: owns whatever poll is open, and the session's deadlines; shares
/// the replay buffer and the outbox with its stream's body (`feed`).
#[derive(Debug)]
struct Actor {
    shared: Arc<Shared>,
    sid: String,
    /// The session's handle, to end it the way the hub would (first reason wins).
    handle: ClientHandle,
    /// The outbox, the replay buffer and the open stream (see `feed`).
    feed: Arc<Feed>,
    /// A stream is open (as far as the actor knows: its body tells it when it goes).
    stream: Option<StreamTimer>,
    poll: Option<PendingPoll>,
    /// Since when neither a stream nor a poll has been open.
    idle_since: Option<Instant>,
}

impl Actor {
    async fn run(mut self, mut session: Session, mut rx: mpsc::Receiver<ToSession>) {
        let end = self.drive(&mut session, &mut rx).await;
        // Replies queued before the end (the error before a 4001) still go out.
        let _ = self.feed.take_queued(&mut self.feed.state());
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
    async fn drive(&mut self, session: &mut Session, rx: &mut mpsc::Receiver<ToSession>) -> End {
        let feed = self.feed.clone();
        let killed = feed.outbox.killed();
        tokio::pin!(killed);
        let connect_deadline = Instant::now() + self.shared.session.config.limits.connect_timeout;
        // One timer for every deadline: connect, token expiry, the poll's timeout, the
        // stream's keep-alive, idle expiry.
        let timer = tokio::time::sleep_until(connect_deadline);
        tokio::pin!(timer);
        let mut deadline = connect_deadline;
        loop {
            // Any wake-up may follow a disconnect the actor did not wait for itself (a
            // stream's body was waiting on the outbox).
            if self.handle.is_disconnected() {
                return End::Closed(feed.outbox.reason());
            }
            let next = self.next_deadline(session, connect_deadline);
            if next != deadline {
                // Resetting re-registers the timer: only when it moved.
                deadline = next;
                timer.as_mut().reset(deadline);
            }
            // With a stream open, its body waits on the outbox (see `feed`).
            let reading = self.stream.is_none();
            tokio::select! {
                biased;
                () = &mut killed, if reading => return End::Closed(feed.outbox.reason()),
                more = poll_fn(|cx| self.poll_outbox(cx)), if reading => {
                    if !more {
                        return End::Closed(feed.outbox.reason());
                    }
                    if let Some(end) = self.queued() {
                        return end;
                    }
                }
                () = feed.actor.notified() => self.notified(),
                request = rx.recv() => {
                    // The registry keeps a sender while the session lives.
                    let Some(request) = request else { return End::Idle };
                    if let Some(end) = self.request(request, session).await {
                        return end;
                    }
                }
                () = &mut timer => {
                    if let Some(end) = self.tick(session, connect_deadline) {
                        return end;
                    }
                }
            }
        }
    }

    /// Waits until the outbox holds messages (`true`) or is closed (`false`); they are
    /// then taken by [`Actor::queued`].
    fn poll_outbox(&self, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        self.feed.outbox.register(cx.waker());
        let mut state = self.feed.state();
        let before = state.replay.size().1;
        match self.feed.outbox.take_all(|message| {
            state.replay.push(message);
        }) {
            None => Poll::Ready(false),
            Some(0) if state.replay.size().1 == before => Poll::Pending,
            Some(_) => Poll::Ready(true),
        }
    }

    /// The stream's body woke the actor: its reader went away, the session was ended
    /// (the loop checks that), or a poll waiting beside the stream has messages.
    fn notified(&mut self) {
        let mut state = self.feed.state();
        if self.stream.is_some() && state.stream.is_none() {
            debug!(client = self.handle.id, "SSE stream closed");
            self.stream = None;
            state.poll_waiting = false;
            drop(state);
            self.idle_since_now();
            return;
        }
        let answer = self.poll.is_some() && !state.replay.is_empty();
        drop(state);
        if answer {
            self.answer_poll(None);
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
    fn tick(&mut self, session: &Session, connect_deadline: Instant) -> Option<End> {
        let (ping_interval, session_idle) = {
            let limits = &self.shared.session.config.limits;
            (limits.ping_interval, limits.session_idle)
        };
        let now = Instant::now();
        if !session.is_connected() && now >= connect_deadline {
            return Some(self.end(close::CONNECT_TIMEOUT, "connect was not sent in time"));
        }
        if session.token_expired() {
            return Some(self.end(close::TOKEN_EXPIRED, "the token expired; refresh it"));
        }
        if self.poll.as_ref().is_some_and(|p| now >= p.deadline) {
            self.answer_poll(None);
        }
        if let Some(stream) = &mut self.stream {
            if now >= stream.next_ping {
                let mut state = self.feed.state();
                if let Some(slot) = state.stream.as_mut() {
                    if now >= slot.last_write + ping_interval {
                        // At most one waiting: a stream that is not read needs no more.
                        if slot.extra.is_empty() {
                            slot.extra.put_slice(sse::PING);
                        }
                        slot.last_write = now;
                        self.feed.wake_body();
                    }
                    stream.next_ping = slot.last_write + ping_interval;
                } else {
                    // The body went away; its notification is on the way. Until then the
                    // timer must not fire again at once.
                    stream.next_ping = now + ping_interval;
                }
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
    fn end(&self, code: CloseCode, reason: &str) -> End {
        self.handle.disconnect(code, reason);
        End::Closed(self.feed.outbox.reason())
    }

    /// After messages were queued: take whatever else is waiting into the replay buffer
    /// (each gets its seq), check the bound, and answer a waiting poll; an open stream's
    /// body is woken to write them.
    fn queued(&mut self) -> Option<End> {
        let mut state = self.feed.state();
        let bound = self.feed.take_queued(&mut state);
        let unwritten = state.replay.has_unwritten();
        let answer = self.poll.is_some() && !state.replay.is_empty();
        drop(state);
        if bound == Some(Bound::Over) {
            return Some(End::Closed(self.feed.outbox.reason()));
        }
        if self.stream.is_some() && unwritten {
            self.feed.wake_body();
        }
        if answer {
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
    async fn commands(&mut self, session: &mut Session, commands: &[String]) -> Option<End> {
        for text in commands {
            if self.handle.is_disconnected() {
                return Some(End::Closed(self.feed.outbox.reason()));
            }
            if let Err(end) = session.handle(text).await {
                return Some(self.end(end.code, &end.reason));
            }
            // Taken after each command, so a batch cannot overflow the outbox by itself.
            if let Some(end) = self.queued() {
                return Some(end);
            }
        }
        None
    }

    async fn request(&mut self, request: ToSession, session: &mut Session) -> Option<End> {
        match request {
            ToSession::Commands { commands, done } => {
                let end = self.commands(session, &commands).await;
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
                self.feed.state().replay.ack(ack);
                self.idle_since = None;
                // Handled before the poll waits, so their replies are in this answer.
                let end = self.commands(session, &commands).await;
                // If the commands ended the session, the end answers this poll.
                let deadline = Instant::now() + self.shared.session.config.limits.poll_timeout;
                self.poll = Some(PendingPoll::new(reply, deadline, &self.shared));
                let mut state = self.feed.state();
                if end.is_none() && (!wait || !state.replay.is_empty()) {
                    drop(state);
                    self.answer_poll(None);
                } else {
                    // Beside an open stream, its body tells the actor when messages come.
                    state.poll_waiting = self.stream.is_some();
                }
                end
            }
            ToSession::Stream { resume, attached } => {
                // An older stream finds itself replaced and tells its reader.
                let now = Instant::now();
                let body = self.feed.attach(&[], now);
                let _ = attached.send(StreamBody::Session(body));
                self.stream = Some(StreamTimer {
                    next_ping: now + self.shared.session.config.limits.ping_interval,
                });
                self.idle_since = None;
                // What follows `resume` is written again, to the new stream; if it cannot
                // be, the new stream is where the client learns why.
                if !self.feed.state().replay.resume(resume) {
                    return Some(self.end(close::SLOW_CONSUMER, "replay window passed"));
                }
                None
            }
        }
    }

    /// Answers the waiting poll with every unacknowledged message (and the end, if given).
    fn answer_poll(&mut self, closed: Option<&Disconnect>) {
        let Some(poll) = self.poll.take() else {
            return;
        };
        let mut state = self.feed.state();
        state.poll_waiting = false;
        let closed = closed.map(Disconnect::to_json);
        let body = poll_answer(&self.sid, &state, closed.as_deref());
        drop(state);
        // A client that went away loses nothing: its ack did not advance.
        let _ = poll.reply.send(body);
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
        // The open stream (or the next one, while the session lingers) writes what is
        // unwritten and then the close event.
        told |= self.feed.end(reason);
        self.stream = None;
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
                    self.feed.state().replay.ack(ack);
                    self.poll = Some(PendingPoll::new(reply, Instant::now(), &self.shared));
                    self.answer_poll(Some(reason));
                    return;
                }
                Some(ToSession::Stream { resume, attached }) => {
                    {
                        let mut state = self.feed.state();
                        if !state.replay.resume(resume) {
                            // The messages it misses are gone: only the end is told.
                            state.replay.skip_to_end();
                        }
                    }
                    // The session ended: the new stream writes what is unwritten, the
                    // close event (`tell` left it), and ends.
                    let body = self.feed.attach(&[], Instant::now());
                    if attached.send(StreamBody::Session(body)).is_ok() {
                        return;
                    }
                }
                // The session can no longer handle commands: dropping `done` answers 404.
                Some(ToSession::Commands { .. }) => {}
            }
        }
    }
}

/// A poll's answer, `{"session","seq","messages":[…]}` (and `closed` once the session
/// ended), in one allocation: the messages are the publications' shared payloads, JSON
/// already, joined as they are and never re-parsed.
fn poll_answer(sid: &str, state: &FeedState, closed: Option<&str>) -> Bytes {
    let replay = &state.replay;
    let (frames, count) = replay.size();
    // Frame bytes bound the payloads'; 64 covers the rest but `sid` and `closed`.
    let size = frames + count + sid.len() + closed.map_or(0, str::len) + 64;
    let mut body = bytes::BytesMut::with_capacity(size);
    body.put_slice(b"{\"session\":\"");
    body.put_slice(sid.as_bytes());
    body.put_slice(b"\",\"seq\":");
    put_decimal(&mut body, replay.seq());
    body.put_slice(b",\"messages\":[");
    for (i, message) in replay.pending().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&message.payload());
    }
    body.put_u8(b']');
    if let Some(closed) = closed {
        body.put_slice(b",\"closed\":");
        body.put_slice(closed.as_bytes());
    }
    body.put_u8(b'}');
    body.freeze()
}

#[cfg(test)]
mod tests {
    use switchboard_ws::PreparedMessage;

    use super::*;

    /// A poll answer joins many messages as they are, in one buffer sized up front.
    #[test]
    fn a_poll_answer_carries_many_messages() {
        let mut state = FeedState::default();
        let mut expected = Vec::new();
        for i in 1..=200 {
            let text = format!("{{\"n\":{i},\"text\":\"{}\"}}", "m".repeat(i % 17));
            state.replay.push(PreparedMessage::text(&text));
            expected.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
        }
        state.replay.ack(50);
        let closed = r#"{"code":4003,"reason":"bye"}"#;
        let body = poll_answer("s1", &state, Some(closed));
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["session"], "s1");
        assert_eq!(answer["seq"], 200);
        assert_eq!(answer["messages"].as_array().unwrap(), &expected[50..]);
        assert_eq!(answer["closed"]["code"], 4003);
        // The size reserved up front covers the answer: its one buffer never grows.
        let (frames, count) = state.replay.size();
        assert!(body.len() <= frames + count + "s1".len() + closed.len() + 64);

        state.replay.ack(200);
        let empty = poll_answer("s1", &state, None);
        assert_eq!(&empty[..], br#"{"session":"s1","seq":200,"messages":[]}"#);
    }
}
