//! Per-connection outgoing queues and the handle the hub holds for each connection.
//!
//! The hub never waits for a connection: it pushes already-encoded messages into the
//! connection's bounded [`Outbox`] with `try_send`. When a connection's queue passes its
//! bound (messages or bytes), the connection is a slow consumer: it is disconnected with
//! close code 4004 rather than slowing the publishers or growing memory (centrifuge's
//! policy). The connection's writer drains the queue in batches.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use switchboard_ws::{CloseCode, PreparedMessage};
use tokio::sync::mpsc;

use crate::error::close;
use crate::metrics::Metrics;

/// Why and how a connection is being ended by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The close code sent.
    pub code: CloseCode,
    /// The close reason sent.
    pub reason: String,
}

/// The hub's side of a connection: push messages to it, or end it.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    /// Process-unique connection number.
    pub id: u64,
    tx: mpsc::Sender<PreparedMessage>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Bytes queued and not yet taken by the writer.
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Set to end the connection; `reason` says why. An atomic flag and waker rather
    /// than a `CancellationToken`, whose checks take a mutex: they run on every push and
    /// every wake of the connection (11% of the server's CPU in a 100,000 deliveries/s
    /// fan-out profile).
    killed: AtomicBool,
    /// Wakes the connection's task when `killed` is set.
    waker: AtomicWaker,
    reason: Mutex<Option<Disconnect>>,
    metrics: Arc<Metrics>,
}

/// The connection's side: receives what the hub pushed.
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::Receiver<PreparedMessage>,
    shared: Arc<Shared>,
}

/// Creates the two ends for a new connection.
pub fn outbox(
    id: u64,
    max_messages: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
) -> (ClientHandle, Outbox) {
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        killed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        reason: Mutex::new(None),
        metrics,
    });
    (
        ClientHandle {
            id,
            tx,
            shared: shared.clone(),
        },
        Outbox { rx, shared },
    )
}

impl ClientHandle {
    /// Queues a message without waiting. A full queue disconnects the connection as a
    /// slow consumer; returns whether the message was queued.
    pub fn push(&self, message: PreparedMessage) -> bool {
        if self.shared.killed.load(Ordering::Relaxed) {
            return false;
        }
        let len = message.as_bytes().len();
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.shared.max_bytes || self.tx.try_send(message).is_err() {
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.shared.metrics.slow_consumers.inc();
            self.disconnect(close::SLOW_CONSUMER, "slow consumer: outgoing queue full");
            return false;
        }
        self.shared.metrics.messages_out.inc();
        self.shared.metrics.bytes_out.add(len as u64);
        true
    }

    /// Ends the connection with a close code and reason; the first reason wins.
    pub fn disconnect(&self, code: CloseCode, reason: &str) {
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
    pub fn is_disconnected(&self) -> bool {
        self.shared.killed.load(Ordering::Relaxed)
    }
}

impl Outbox {
    /// Waits for the next message. `None` only if every handle is gone.
    pub async fn recv(&mut self) -> Option<PreparedMessage> {
        let message = self.rx.recv().await?;
        self.taken(&message);
        Some(message)
    }

    /// The next message if one is queued, without waiting (for batching).
    pub fn try_recv(&mut self) -> Option<PreparedMessage> {
        let message = self.rx.try_recv().ok()?;
        self.taken(&message);
        Some(message)
    }

    fn taken(&self, message: &PreparedMessage) {
        let len = message.as_bytes().len();
        self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// A future that resolves when the hub asks to end the connection; cheap to poll
    /// on every wake. The reason is then in [`Outbox::reason`].
    pub fn killed(&self) -> Killed {
        Killed(self.shared.clone())
    }

    /// The reason the connection is ended (a generic one if none was given).
    pub fn reason(&self) -> Disconnect {
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

/// Resolves once the connection has been told to end (see [`Outbox::killed`]).
#[derive(Debug)]
pub struct Killed(Arc<Shared>);

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
