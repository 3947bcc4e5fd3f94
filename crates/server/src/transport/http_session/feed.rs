//! What an HTTP session's actor shares with the body of its open SSE stream: the
//! outbox's receiving side and the replay buffer.
//!
//! While a stream is open, its body takes the session's messages itself whenever the
//! task writing the stream polls it (`sse::writer`, or hyper for a stream left to it): a
//! push wakes that task, which drains the outbox into the replay buffer and writes every
//! unwritten message as one chunk. The actor is not woken per delivery; it keeps the
//! requests, the deadlines and the end of the session, and hands the body what only it
//! knows (the opening event, keep-alives, the close event) through the shared state. Without a stream, the actor reads the outbox itself.
//!
//! The outbox has one waker slot, so only one task waits on it: the open stream's body
//! (through [`BodyWaker`], which also tells the actor when the session is ended), or the
//! actor when no stream is open.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::replay::{Bound, Replay};
use crate::error::close;
use crate::metrics::Metrics;
use crate::outbox::{ClientHandle, Disconnect, Outbox};
use crate::transport::sse::event::{self as sse, Encoder};

/// The state an HTTP session's actor shares with its stream's body.
#[derive(Debug)]
pub(super) struct Feed {
    pub(super) sid: String,
    /// The receiving side of the session's outbox; see the module doc for who waits on it.
    pub(super) outbox: Outbox,
    /// The session's handle, to end it as a slow consumer (first reason wins).
    pub(super) handle: ClientHandle,
    max_messages: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
    state: Mutex<FeedState>,
    /// Wakes the actor: the session was ended, the stream went away, or a poll waiting
    /// beside a stream has messages.
    pub(super) actor: Notify,
    /// The open stream's task, woken by pushes and by the actor.
    body: Arc<BodyWaker>,
    /// `body` as a waker, made once: registering the same waker again costs nothing.
    waker: Waker,
}

/// What the actor and the stream's body both change, under one lock held only for
/// bookkeeping.
#[derive(Debug, Default)]
pub(super) struct FeedState {
    pub(super) replay: Replay,
    /// The open stream, if any.
    pub(super) stream: Option<Slot>,
    /// Streams opened so far: a body whose number is older than the last was replaced.
    streams: u64,
    /// The close event, once the session ended: the stream writes it after its messages.
    pub(super) ended: Option<Bytes>,
    /// A poll waits beside an open stream: the body tells the actor about new messages.
    pub(super) poll_waiting: bool,
}

/// The open stream's part of the shared state.
#[derive(Debug)]
pub(super) struct Slot {
    id: u64,
    /// Written before the next messages (the opening event, a keep-alive).
    pub(super) extra: BytesMut,
    /// When the body last wrote something, for the keep-alive.
    pub(super) last_write: Instant,
}

/// Wakes the open stream's task; when the session was ended meanwhile, the actor too.
/// It holds the feed weakly: the outbox (inside the feed) keeps this waker.
#[derive(Debug)]
struct BodyWaker {
    task: AtomicWaker,
    feed: Weak<Feed>,
}

impl Wake for BodyWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.task.wake();
        // A disconnect wakes the outbox's waker: the actor must learn it even when the
        // body is not polled (its writer polls it only while the socket has room).
        if let Some(feed) = self.feed.upgrade() {
            if feed.handle.is_disconnected() {
                feed.actor.notify_one();
            }
        }
    }
}

impl Feed {
    pub(super) fn new(
        sid: String,
        outbox: Outbox,
        handle: ClientHandle,
        max_messages: usize,
        max_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Feed> {
        Arc::new_cyclic(|feed| {
            let body = Arc::new(BodyWaker {
                task: AtomicWaker::new(),
                feed: feed.clone(),
            });
            Feed {
                sid,
                outbox,
                handle,
                max_messages,
                max_bytes,
                metrics,
                state: Mutex::default(),
                actor: Notify::new(),
                waker: Waker::from(body.clone()),
                body,
            }
        })
    }

    pub(super) fn state(&self) -> MutexGuard<'_, FeedState> {
        // Plain bookkeeping: a panic elsewhere while holding it leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves what the outbox holds into the replay buffer and checks the bound; past it
    /// the session is ended as a slow consumer (`Over`). `None` if the outbox is closed.
    pub(super) fn take_queued(&self, state: &mut FeedState) -> Option<Bound> {
        self.outbox.take_all(|message| {
            state.replay.push(message);
        })?;
        // Past the bound, messages already written to a stream go first: the client most
        // likely has them, and only a reconnect could ask for them again.
        let bound = state.replay.bound(self.max_messages, self.max_bytes);
        if bound == Bound::Over {
            self.metrics.slow_consumers.inc();
            self.handle.disconnect(
                close::SLOW_CONSUMER,
                "slow consumer: too many unacknowledged messages",
            );
        }
        Some(bound)
    }

    /// Wakes the open stream's body (it has something new to write).
    pub(super) fn wake_body(&self) {
        self.body.task.wake();
    }

    /// Opens a new stream whose body writes `first`, then every unwritten message; an
    /// older stream is told it was replaced.
    pub(super) fn attach(self: &Arc<Self>, first: &[u8], now: Instant) -> SessionStream {
        let mut state = self.state();
        state.streams += 1;
        let id = state.streams;
        state.stream = Some(Slot {
            id,
            extra: BytesMut::from(first),
            last_write: now,
        });
        drop(state);
        // The older body (if any) finds itself replaced; the new one registers when
        // first polled.
        self.wake_body();
        self.metrics.sse_streams.add(1);
        SessionStream {
            feed: self.clone(),
            id,
            frames: VecDeque::new(),
            encoder: Encoder::default(),
            done: false,
        }
    }

    /// The session ended: the open stream (or the next one) writes what is unwritten,
    /// then the close event, and ends. Returns whether a stream is open to do so.
    pub(super) fn end(&self, reason: &Disconnect) -> bool {
        let mut event = BytesMut::new();
        sse::close(&mut event, reason);
        let mut state = self.state();
        state.ended = Some(event.freeze());
        let open = state.stream.is_some();
        drop(state);
        self.wake_body();
        open
    }
}

/// The body of an SSE stream served from this node's session (see the module doc).
#[derive(Debug)]
pub(crate) struct SessionStream {
    feed: Arc<Feed>,
    /// This stream's number (see [`FeedState::streams`]).
    id: u64,
    /// Chunks made and not yet handed out (as a `Stream`, one per poll).
    frames: VecDeque<Bytes>,
    encoder: Encoder,
    /// No more chunks after `frames`.
    done: bool,
}

impl SessionStream {
    /// Hands `emit` the chunks of one write: the actor's extra bytes, then every unwritten
    /// message, then the close event if the session ended (and `done` is set). The task
    /// is registered to be woken before anything is taken, so nothing pushed afterwards
    /// goes unnoticed. Returns whether `emit` was handed anything.
    fn fill(&mut self, cx: &mut Context<'_>, emit: &mut impl FnMut(Bytes)) -> bool {
        let feed = &*self.feed;
        let mut state = feed.state();
        let state = &mut *state;
        let current = state.stream.as_ref().is_some_and(|slot| slot.id == self.id);
        if !current {
            // Someone resumed this session by its id: this stream is told it is over (if
            // its reader is still there), so two readers never share one session unnoticed.
            let mut event = BytesMut::new();
            sse::close(
                &mut event,
                &Disconnect {
                    code: close::SESSION_TAKEN,
                    reason: "another stream resumed this session".into(),
                },
            );
            emit(event.freeze());
            self.done = true;
            return true;
        }
        // Registered before looking, under the lock: a replaced body never registers.
        feed.body.task.register(cx.waker());
        feed.outbox.register(&feed.waker);
        let before = state.replay.size().1;
        // A closed outbox means nothing more will come; the actor ends the session.
        let _ = feed.take_queued(state);
        if state.poll_waiting && state.replay.size().1 > before {
            feed.actor.notify_one();
        }
        let Some(slot) = state.stream.as_mut() else {
            return false;
        };
        let mut wrote = false;
        let mut emit = |chunk: Bytes| {
            wrote = true;
            emit(chunk);
        };
        if !slot.extra.is_empty() {
            self.encoder.raw(&slot.extra);
            slot.extra = BytesMut::new();
        }
        for (seq, message) in state.replay.take_unwritten() {
            self.encoder.message(&feed.sid, seq, message, &mut emit);
        }
        if let Some(event) = &state.ended {
            self.encoder.raw(event);
            // Told: the actor's `end` found this stream open.
            state.stream = None;
            self.done = true;
        }
        self.encoder.finish(&mut emit);
        if wrote {
            if let Some(slot) = state.stream.as_mut() {
                slot.last_write = Instant::now();
            }
        }
        wrote
    }

    /// Hands `emit` everything ready to write, as [`StreamBody::poll_batch`] says.
    fn poll_batch(&mut self, cx: &mut Context<'_>, emit: &mut impl FnMut(Bytes)) -> Poll<bool> {
        if self.done {
            return Poll::Ready(true);
        }
        if self.fill(cx, emit) || self.done {
            Poll::Ready(self.done)
        } else {
            Poll::Pending
        }
    }
}

impl Stream for SessionStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if this.frames.is_empty() && !this.done {
            let mut frames = std::mem::take(&mut this.frames);
            this.fill(cx, &mut |chunk| frames.push_back(chunk));
            this.frames = frames;
        }
        match this.frames.pop_front() {
            Some(chunk) => Poll::Ready(Some(chunk)),
            None if this.done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        self.feed.metrics.sse_streams.add(-1);
        let mut state = self.feed.state();
        if state.stream.as_ref().is_some_and(|slot| slot.id == self.id) {
            // The reader went away: the actor reads the outbox again and starts the
            // idle clock.
            state.stream = None;
            drop(state);
            self.feed.actor.notify_one();
        }
    }
}

/// The body of a `GET /sse` response: this node's session, or chunks relayed from the
/// node that owns it (see `remote`).
#[derive(Debug)]
pub(crate) enum StreamBody {
    Session(SessionStream),
    Relayed(mpsc::Receiver<Bytes>),
}

impl StreamBody {
    /// Hands `emit` every chunk ready now, in order. `Ready(false)`: some were handed and
    /// more may follow; `Ready(true)`: the stream has ended (after what was handed);
    /// `Pending`: none ready. Either way but the end, the task is woken when more is:
    /// after `Ready(false)` there is no need to ask again before that.
    pub(crate) fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        emit: &mut impl FnMut(Bytes),
    ) -> Poll<bool> {
        match self {
            StreamBody::Session(stream) => stream.poll_batch(cx, emit),
            StreamBody::Relayed(rx) => {
                let mut any = false;
                loop {
                    match rx.poll_recv(cx) {
                        Poll::Ready(Some(chunk)) => {
                            any = true;
                            emit(chunk);
                        }
                        Poll::Ready(None) => return Poll::Ready(true),
                        // Registered by this `Pending`.
                        Poll::Pending if any => return Poll::Ready(false),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }
}

impl Stream for StreamBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let chunk = match self.get_mut() {
            StreamBody::Session(stream) => Pin::new(stream).poll_next(cx),
            StreamBody::Relayed(rx) => rx.poll_recv(cx),
        };
        chunk.map(|chunk| chunk.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use switchboard_ws::PreparedMessage;

    use super::*;
    use crate::outbox::outbox;

    fn feed() -> (Arc<Feed>, ClientHandle) {
        let metrics = Arc::new(Metrics::default());
        let (handle, outbox) = outbox(1, 100, 1 << 20, metrics.clone());
        let feed = Feed::new("s1".into(), outbox, handle.clone(), 100, 1 << 20, metrics);
        (feed, handle)
    }

    /// One poll of the body, as hyper makes it: the chunk it gets, if any.
    fn poll(stream: &mut SessionStream) -> Poll<Option<Bytes>> {
        Pin::new(stream).poll_next(&mut Context::from_waker(Waker::noop()))
    }

    /// Messages queued between two polls of the body go out as one chunk, after what the
    /// actor asked written first, each with the next seq.
    #[test]
    fn a_batch_of_events_is_one_chunk() {
        let (feed, handle) = feed();
        let mut stream = feed.attach(b"retry: 1000\n\n", Instant::now());
        for i in 1..=3 {
            assert!(handle.push(PreparedMessage::text(&format!("{{\"n\":{i}}}"))));
        }
        let Poll::Ready(Some(chunk)) = poll(&mut stream) else {
            panic!("a chunk")
        };
        assert_eq!(
            std::str::from_utf8(&chunk).unwrap(),
            "retry: 1000\n\nid: s1:1\ndata: {\"n\":1}\n\nid: s1:2\ndata: {\"n\":2}\n\n\
             id: s1:3\ndata: {\"n\":3}\n\n"
        );
        assert!(poll(&mut stream).is_pending());
        // Written, and kept until acknowledged.
        assert!(!feed.state().replay.has_unwritten());
        assert_eq!(feed.state().replay.size().1, 3);
    }

    /// A newer stream takes the session: the older one is told and ends; the newer one
    /// gets what follows the resume point.
    #[test]
    fn a_replaced_stream_is_told_and_ends() {
        let (feed, handle) = feed();
        let mut older = feed.attach(b"", Instant::now());
        assert!(handle.push(PreparedMessage::text("1")));
        assert!(matches!(poll(&mut older), Poll::Ready(Some(_))));
        assert!(feed.state().replay.resume(0));
        let mut newer = feed.attach(b"", Instant::now());
        let Poll::Ready(Some(close)) = poll(&mut older) else {
            panic!("the close event")
        };
        assert!(close.starts_with(b"event: close\ndata: {\"code\":4009"));
        assert!(matches!(poll(&mut older), Poll::Ready(None)));
        let Poll::Ready(Some(again)) = poll(&mut newer) else {
            panic!("the message again")
        };
        assert_eq!(&again[..], b"id: s1:1\ndata: 1\n\n");
    }
}
