//! Per-connection outgoing queues and the handle the hub holds for each connection.
//!
//! The hub never waits for a connection: it hands already-encoded messages to the
//! connection's [`ClientHandle::push`]. A WebSocket connection over plain TCP has its
//! socket's write half attached ([`Outbox::attach`]): while nothing is queued, a push
//! writes the frame straight to the socket with a non-blocking write, from the
//! publisher's task. Only what the kernel does not take at once is queued, and the
//! connection's task writes it when the socket is writable. In a fan-out to thousands
//! of subscribers this saves a task wake-up, a queue round trip and a poll of the
//! connection's `select!` per delivery: about a third of the server's CPU per delivery.
//!
//! Over TLS the same holds ([`Outbox::attach_tls`]): the connection's rustls session
//! lives here beside the socket, a push encrypts its frames into the session and writes
//! the records with the same non-blocking write, and what the kernel does not take waits
//! in the session's buffer for the connection's task. The session is one object for both
//! directions (rustls has no split), so the connection's reads decrypt under the same
//! lock ([`TlsReader`](socket::TlsReader)); the lock is only ever held for non-blocking
//! work.
//!
//! Other transports (and WebSocket over other streams) take messages from the queue with
//! [`Outbox::recv`]. When a connection's queue passes its bound (messages or bytes), the
//! connection is a slow consumer: it is disconnected with close code 4004 rather than
//! slowing the publishers or growing memory (centrifuge's policy).
//!
//! Files: this one (the queue, its bounds, the handle, a fan-out round's [`Batch`]) and
//! `socket` (an attached socket: the direct writes, TLS records, the connection's own
//! reads and writes beside the pushes).

mod socket;

use socket::Socket;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use switchboard_ws::{CloseCode, PreparedMessage, SharedCompression};

use crate::error::close;
use crate::metrics::Metrics;

/// Why and how a connection is being ended by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disconnect {
    /// The close code sent.
    pub code: CloseCode,
    /// The close reason sent.
    pub reason: String,
}

impl Disconnect {
    /// `{"code":…,"reason":"…"}`: how an HTTP session tells its client why it ended (an
    /// SSE `close` event, a poll answer's `closed`).
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({"code": self.code.0, "reason": self.reason}).to_string()
    }
}

/// The hub's side of a connection: push messages to it, or end it.
#[derive(Debug, Clone)]
pub(crate) struct ClientHandle {
    /// Process-unique connection number.
    pub id: u64,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Set to end the connection; `reason` says why. An atomic flag rather than a
    /// `CancellationToken`, whose checks take a mutex: it is read on every push.
    killed: AtomicBool,
    /// Wakes the connection's task: the connection is killed, the queue was empty and
    /// has a message, or the queue can be written again.
    waker: AtomicWaker,
    reason: Mutex<Option<Disconnect>>,
    /// Queued messages, and the socket's write half when attached. Held only for
    /// non-blocking work (a queue operation or a non-blocking write).
    out: Mutex<Out>,
    max_messages: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
    /// permessage-deflate without the server's context: pushed messages are queued and
    /// written compressed ([`Outbox::set_compression`]).
    compression: OnceLock<SharedCompression>,
}

#[derive(Debug)]
struct Out {
    queue: VecDeque<PreparedMessage>,
    /// Bytes of `queue`, counting its front whole.
    bytes: usize,
    /// Bytes of the front message already written (attached mode): the socket is in the
    /// middle of a frame until it is finished.
    head_written: usize,
    /// The socket's write half (and TLS session), for direct writes (see the module docs).
    socket: Option<Socket>,
    /// The connection's own writer (the WebSocket adapter's control frames) stopped in
    /// the middle of its buffer: nothing else may be written until it finishes.
    adapter_partial: bool,
    /// No more messages are accepted (the connection is closing).
    closed: bool,
}

/// The connection's side: receives (or writes) what the hub pushed.
#[derive(Debug)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

/// Creates the two ends for a new connection.
pub(crate) fn outbox(
    id: u64,
    max_messages: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
) -> (ClientHandle, Outbox) {
    let shared = Arc::new(Shared {
        killed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        reason: Mutex::new(None),
        out: Mutex::new(Out {
            queue: VecDeque::new(),
            bytes: 0,
            head_written: 0,
            socket: None,
            adapter_partial: false,
            closed: false,
        }),
        max_messages: max_messages.max(1),
        max_bytes,
        metrics,
        compression: OnceLock::new(),
    });
    (
        ClientHandle {
            id,
            shared: shared.clone(),
        },
        Outbox { shared },
    )
}

/// Messages pushed together to many connections (a fan-out round): their frames end to
/// end, for one write each, and the same compressed for permessage-deflate connections,
/// each built once for every connection of the round.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    messages: Cow<'a, [PreparedMessage]>,
    joined: Bytes,
    /// For the first compression asked for (nearly every connection's).
    compressed: OnceLock<(SharedCompression, Encoded)>,
}

/// Messages as a connection writes them, and their frames end to end.
#[derive(Debug, Clone)]
struct Encoded {
    messages: Vec<PreparedMessage>,
    joined: Bytes,
}

impl Batch<'_> {
    /// A batch of several messages.
    pub(crate) fn new(messages: &[PreparedMessage]) -> Batch<'static> {
        Batch {
            joined: join(messages),
            messages: Cow::Owned(messages.to_vec()),
            compressed: OnceLock::new(),
        }
    }

    /// A batch of messages the caller keeps.
    fn borrowed(messages: &[PreparedMessage]) -> Batch<'_> {
        Batch {
            joined: join(messages),
            messages: Cow::Borrowed(messages),
            compressed: OnceLock::new(),
        }
    }

    /// The batch as sent with `compression`: compressed once per batch for the first
    /// setting asked for (each message's compressed frame is itself cached in the
    /// message), built per connection for another.
    fn compressed(&self, compression: &SharedCompression) -> Cow<'_, Encoded> {
        let encode = || {
            let messages: Vec<_> = self
                .messages
                .iter()
                .map(|m| compression.encode(m))
                .collect();
            Encoded {
                joined: join(&messages),
                messages,
            }
        };
        let (first, encoded) = self.compressed.get_or_init(|| (*compression, encode()));
        if first == compression {
            Cow::Borrowed(encoded)
        } else {
            Cow::Owned(encode())
        }
    }
}

/// Frames end to end, for one write to each subscriber.
fn join(messages: &[PreparedMessage]) -> Bytes {
    match messages {
        [one] => one.as_bytes().clone(),
        several => {
            let mut joined =
                BytesMut::with_capacity(several.iter().map(|m| m.as_bytes().len()).sum());
            for message in several {
                joined.extend_from_slice(message.as_bytes());
            }
            joined.freeze()
        }
    }
}

impl Shared {
    fn out(&self) -> MutexGuard<'_, Out> {
        // A panic while holding it cannot leave `Out` inconsistent in a way that matters
        // more than losing the connection; keep serving.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientHandle {
    /// Hands a message to the connection without waiting: written now if the socket
    /// takes it, queued otherwise. A full queue disconnects the connection as a slow
    /// consumer; returns whether the message was accepted.
    pub(crate) fn push(&self, message: PreparedMessage) -> bool {
        self.push_batch(&Batch::borrowed(std::slice::from_ref(&message)))
    }

    /// Hands several messages to the connection at once. With the socket attached and
    /// nothing queued, their frames go out in one write, and only what the kernel did not
    /// take is queued, starting inside the frame it stopped in. If the rest would pass the
    /// queue's bound, the connection is disconnected as a slow consumer (a frame already
    /// started stays queued, so the stream stays whole).
    pub(crate) fn push_batch(&self, batch: &Batch<'_>) -> bool {
        let encoded;
        let (messages, joined) = match self.shared.compression.get() {
            None => (&batch.messages[..], &batch.joined),
            Some(compression) => {
                encoded = batch.compressed(compression);
                (&encoded.messages[..], &encoded.joined)
            }
        };
        let shared = &*self.shared;
        if shared.killed.load(Ordering::Relaxed) {
            return false;
        }
        let mut out = shared.out();
        if out.closed {
            return false;
        }
        let mut written = 0;
        let mut tls_pending = false;
        if out.queue.is_empty() && !out.adapter_partial {
            if let Some(socket) = &mut out.socket {
                written = socket.try_write(joined);
                // Encrypted but not all sent: the connection's task sends the rest.
                tls_pending = socket.tls_pending();
            }
        }
        // Skip the frames the socket took whole.
        let mut rest = messages;
        while let Some((first, more)) = rest.split_first() {
            let len = first.as_bytes().len();
            if written < len {
                break;
            }
            written -= len;
            rest = more;
        }
        let was_empty = out.queue.is_empty();
        if written > 0 {
            // The socket is in the middle of this frame: it must be queued whatever the bound.
            out.head_written = written;
        }
        let rest_bytes: usize = rest.iter().map(|m| m.as_bytes().len()).sum();
        let full = out.queue.len() + rest.len() > shared.max_messages
            || out.bytes + rest_bytes > shared.max_bytes;
        let queued = if full && written == 0 {
            &[][..]
        } else if full {
            &rest[..1]
        } else {
            rest
        };
        for message in queued {
            out.bytes += message.as_bytes().len();
            out.queue.push_back(message.clone());
        }
        drop(out);
        let accepted = if full {
            messages.len() - rest.len() + queued.len()
        } else {
            messages.len()
        };
        shared.metrics.messages_out.add(accepted as u64);
        shared.metrics.bytes_out.add(
            messages[..accepted]
                .iter()
                .map(|m| m.as_bytes().len() as u64)
                .sum(),
        );
        if (was_empty && !queued.is_empty()) || tls_pending {
            shared.waker.wake();
        }
        if full {
            shared.metrics.slow_consumers.inc();
            self.disconnect(close::SLOW_CONSUMER, "slow consumer: outgoing queue full");
            return false;
        }
        true
    }

    /// Ends the connection with a close code and reason; the first reason wins.
    pub(crate) fn disconnect(&self, code: CloseCode, reason: &str) {
        if let Ok(mut slot) = self.shared.reason.lock() {
            slot.get_or_insert_with(|| Disconnect {
                code,
                reason: reason.to_owned(),
            });
        }
        self.shared.killed.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    /// Whether the connection is being ended.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.shared.killed.load(Ordering::Relaxed)
    }
}

impl Outbox {
    /// Writes every message from now on as `compression` encodes it (permessage-deflate
    /// without the server's context, negotiated in the handshake): before anything is
    /// pushed.
    pub(crate) fn set_compression(&self, compression: SharedCompression) {
        let _ = self.shared.compression.set(compression);
    }

    /// Waits for the next message. `None` once the outbox is closed.
    ///
    /// With a socket attached it never returns a message: it writes the queue to the
    /// socket whenever the socket takes more, and returns `None` if a write fails.
    pub(crate) async fn recv(&mut self) -> Option<PreparedMessage> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<PreparedMessage>> {
        let shared = &*self.shared;
        // Registered before looking, so a push after the look wakes this task.
        shared.waker.register(cx.waker());
        let mut out = shared.out();
        if out.socket.is_some() {
            return match out.poll_flush_queue(cx) {
                Poll::Ready(Err(_)) => Poll::Ready(None),
                _ => Poll::Pending,
            };
        }
        match out.pop() {
            Some(message) => Poll::Ready(Some(message)),
            None if out.closed => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// The next message if one is queued, without waiting (for batching). Always `None`
    /// with a socket attached.
    pub(crate) fn try_recv(&mut self) -> Option<PreparedMessage> {
        let mut out = self.shared.out();
        if out.socket.is_some() {
            return None;
        }
        out.pop()
    }

    /// Every queued message at once, in order, handed to `take`: one lock for the lot,
    /// where [`Outbox::try_recv`] takes one per message. `None` once the outbox is closed
    /// and empty. Never a message with a socket attached. For readers that wait with
    /// their own waker (see [`Outbox::register`]) rather than with [`Outbox::recv`].
    pub(crate) fn take_all(&self, mut take: impl FnMut(PreparedMessage)) -> Option<usize> {
        let mut out = self.shared.out();
        if out.socket.is_some() {
            return Some(0);
        }
        if out.queue.is_empty() && out.closed {
            return None;
        }
        let count = out.queue.len();
        out.bytes = 0;
        for message in out.queue.drain(..) {
            take(message);
        }
        Some(count)
    }

    /// Registers `waker` to be woken by the next push into an empty queue, by the end of
    /// the connection, or by a disconnect. There is one slot: this replaces whatever
    /// [`Outbox::recv`] or [`Outbox::killed`] registered, so only one task may wait on an
    /// outbox at a time. Register before [`Outbox::take_all`], so a push after the look
    /// still wakes.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.shared.waker.register(waker);
    }

    /// Stops accepting messages, so nothing is written after the close frame.
    pub(crate) fn close(&self) {
        self.shared.out().closed = true;
    }

    /// A future that resolves when the hub asks to end the connection; cheap to poll
    /// on every wake. The reason is then in [`Outbox::reason`].
    pub(crate) fn killed(&self) -> Killed {
        Killed(self.shared.clone())
    }

    /// The reason the connection is ended (a generic one if none was given).
    pub(crate) fn reason(&self) -> Disconnect {
        self.shared
            .reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or(Disconnect {
                code: close::SHUTDOWN,
                reason: "server shutting down".into(),
            })
    }
}

impl Out {
    fn pop(&mut self) -> Option<PreparedMessage> {
        let message = self.queue.pop_front()?;
        self.bytes -= message.as_bytes().len();
        Some(message)
    }
}

/// Resolves once the connection has been told to end (see [`Outbox::killed`]).
#[derive(Debug)]
pub(crate) struct Killed(Arc<Shared>);

impl Future for Killed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.killed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        // Set between the check and the registration: its wake may have been missed.
        if self.0.killed.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    use super::socket::SharedWriter;
    use super::*;

    /// Splits a stream of unmasked server frames into (opcode, payload) pairs.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= 2, "a truncated frame header");
            let opcode = bytes[0] & 0x0f;
            let (len, header) = match bytes[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (usize::from(n), 2),
            };
            assert!(bytes.len() >= header + len, "a truncated frame");
            out.push((opcode, bytes[header..header + len].to_vec()));
            bytes = &bytes[header + len..];
        }
        out
    }

    /// A real socket pair whose server side is attached to a fresh outbox; the client's
    /// small receive buffer makes the server's writes stop early when it does not read.
    async fn attached() -> (
        tokio::net::TcpStream,
        tokio::net::tcp::OwnedReadHalf,
        ClientHandle,
        Outbox,
        SharedWriter,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = server.into_split();
        let (handle, outbox) = outbox(1, 100_000, 1 << 30, Arc::new(Metrics::default()));
        let writer = outbox.attach(write);
        (client, read, handle, outbox, writer)
    }

    /// A batch written in one go and stopped by a full socket inside one of its frames
    /// queues the rest from that point: every frame arrives whole and in order.
    #[tokio::test]
    async fn a_batch_cut_short_by_the_socket_queues_the_rest() {
        let (mut client, _read, handle, mut outbox, _writer) = attached().await;
        let text = |i: usize| format!("{i:06}{}", "b".repeat(10_000 + i % 7));
        let mut sent = 0;
        let mut batches = 0;
        while batches < 400 && handle.shared.out().queue.len() < 10 {
            let batch: Vec<_> = (sent..sent + 3)
                .map(|i| PreparedMessage::text(&text(i)))
                .collect();
            assert!(handle.push_batch(&Batch::new(&batch)));
            sent += 3;
            batches += 1;
        }
        assert!(
            !handle.shared.out().queue.is_empty(),
            "the socket never filled"
        );
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        while !handle.shared.out().queue.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(10), outbox.recv()).await;
        }
        drop(_writer);
        drop(outbox);
        drop(handle);
        let received = frames(&reader.await.unwrap());
        assert_eq!(received.len(), sent);
        for (i, (op, payload)) in received.iter().enumerate() {
            assert_eq!(
                (*op, payload.as_slice()),
                (1, text(i).as_bytes()),
                "frame {i}"
            );
        }
    }

    /// Direct pushes, queued frames and the connection's own frames share one socket.
    /// With the socket full and stopped in the middle of a queued frame, frames written
    /// through the shared writer wait for the queue, so nothing is ever split.
    #[tokio::test]
    async fn frames_never_interleave_on_a_full_socket() {
        let (mut client, _read, handle, mut outbox, mut writer) = attached().await;
        let text = |i: usize| format!("{i:06}{}", "p".repeat(30_000));
        // Nobody reads yet: the socket fills and a frame is left half written.
        let mut sent = 0;
        while sent < 2_000 && handle.shared.out().head_written == 0 {
            assert!(handle.push(PreparedMessage::text(&text(sent))));
            sent += 1;
        }
        assert!(
            handle.shared.out().head_written > 0,
            "the socket never filled"
        );

        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        // Now the socket drains: the connection's own frames go out between pushes.
        for i in 0..50u8 {
            assert!(handle.push(PreparedMessage::text(&text(sent))));
            sent += 1;
            writer
                .write_all(PreparedMessage::binary(&[i]).as_bytes())
                .await
                .unwrap();
        }
        // What is still queued goes out through the connection's `recv`.
        while !handle.shared.out().queue.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(10), outbox.recv()).await;
        }
        writer.shutdown().await.unwrap();
        drop(writer);
        drop(outbox);

        let received = frames(&reader.await.unwrap());
        let texts: Vec<_> = received.iter().filter(|(op, _)| *op == 1).collect();
        let binaries: Vec<_> = received.iter().filter(|(op, _)| *op == 2).collect();
        assert_eq!(texts.len(), sent);
        for (i, (_, payload)) in texts.iter().enumerate() {
            assert_eq!(payload, text(i).as_bytes(), "text frame {i}");
        }
        let own: Vec<u8> = binaries.iter().map(|(_, p)| p[0]).collect();
        assert_eq!(own, (0..50).collect::<Vec<u8>>());
    }
}
