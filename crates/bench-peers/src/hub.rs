//! The broadcast hub both fan-out peers share, and the subset of the Switchboard protocol
//! that `switchboard bench fanout` speaks (`connect`, `subscribe`, `publish`).
//!
//! # Design
//!
//! Each connection owns a bounded [`mpsc`] queue of [`QUEUE_CAPACITY`] outgoing messages,
//! drained by the connection's writer; a registry maps each channel to the queues of its
//! subscribers. A publication is encoded once into `M` (a refcounted buffer) and
//! `try_send`-ed to every subscriber's queue, on the publisher's task and under the registry
//! lock, so every subscriber sees a channel's offsets in order. A subscriber whose queue is
//! full is removed from the registry and its connection is closed with 4004: a hub must
//! never wait for its slowest reader.
//!
//! Why per-connection queues rather than a `tokio::sync::broadcast` channel per channel (as
//! in mini-redis or axum's chat example):
//! - a connection's replies and its pushes must reach the socket in one order, through one
//!   writer: a per-connection queue carries both, a broadcast channel only the pushes;
//! - a connection subscribed to many channels drains one queue, not one receiver per channel;
//! - a lagging broadcast receiver silently skips messages (`Lagged`), which a hub without
//!   history cannot repair; with a bounded queue the hub sees the overflow at push time and
//!   closes the slow consumer, which the client can detect;
//! - it is the design of tokio-tungstenite's own broadcast example (a per-peer channel in a
//!   shared map, there unbounded) and of Switchboard's outboxes, so the benchmark compares
//!   libraries and hubs doing the same work.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

/// Outgoing messages a connection may have queued; one more closes it as a slow consumer.
pub(crate) const QUEUE_CAPACITY: usize = 1024;

/// The close code for a slow consumer, as in Switchboard's protocol.
pub(crate) const SLOW_CONSUMER_CODE: u16 = 4004;
/// The close reason that goes with [`SLOW_CONSUMER_CODE`].
pub(crate) const SLOW_CONSUMER_REASON: &str = "slow consumer: outgoing queue full";

/// The `epoch` of every stream: the peers keep no history, so there is only one.
const EPOCH: &str = "peer";

/// Error code for a command that cannot be read (Switchboard's 107).
const UNREADABLE: u16 = 107;

/// The subscriber registry, generic over the outgoing message type `M`, which each peer
/// picks so that cloning it per subscriber shares the encoded bytes.
#[derive(Debug)]
pub(crate) struct Hub<M> {
    /// Connection ids, the keys of [`Channel::subscribers`].
    next_id: AtomicU64,
    /// `std::sync::Mutex`: it is held for one subscribe or one fan-out, which never waits
    /// (`try_send`), and never across an `.await`.
    channels: Mutex<HashMap<String, Channel<M>>>,
}

/// One channel: its last offset and its subscribers' queues.
#[derive(Debug)]
struct Channel<M> {
    /// The offset of the last publication (0: none yet).
    offset: u64,
    subscribers: HashMap<u64, Subscriber<M>>,
}

// Not derived: that would require `M: Default`.
impl<M> Default for Channel<M> {
    fn default() -> Self {
        Channel {
            offset: 0,
            subscribers: HashMap::new(),
        }
    }
}

/// What the hub holds of a subscribed connection.
#[derive(Debug)]
struct Subscriber<M> {
    queue: mpsc::Sender<M>,
    /// Tells the connection's writer to close it (its queue is full, so no message can).
    kill: Arc<Notify>,
}

impl<M> Default for Hub<M> {
    fn default() -> Self {
        Hub {
            next_id: AtomicU64::new(0),
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl<M> Hub<M> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel<M>>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<M: Clone + From<String>> Hub<M> {
    /// A new connection: its protocol state (for the reader) and its queue (for the writer).
    pub(crate) fn open(self: &Arc<Self>) -> (Session<M>, Outbox<M>) {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let kill = Arc::new(Notify::new());
        let session = Session {
            hub: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            queue,
            kill: kill.clone(),
            channels: Vec::new(),
        };
        (session, Outbox { rx, kill })
    }

    /// Registers a subscriber and returns the channel's last offset, read under the same
    /// lock so that the subscriber gets every publication after it.
    fn subscribe(&self, channel: &str, id: u64, subscriber: Subscriber<M>) -> u64 {
        let mut channels = self.lock();
        let channel = channels.entry(channel.to_owned()).or_default();
        channel.subscribers.insert(id, subscriber);
        channel.offset
    }

    /// Gives the publication the channel's next offset and queues it, encoded once, to
    /// every subscriber. Returns the offset.
    fn publish(&self, channel: &str, data: &RawValue) -> u64 {
        let time = unix_ms();
        let mut channels = self.lock();
        let entry = channels.entry(channel.to_owned()).or_default();
        entry.offset += 1;
        let offset = entry.offset;
        // `channel` came from serde_json, so it re-encodes without failing; `data` is the
        // publisher's JSON text, passed through byte for byte.
        let name = serde_json::to_string(channel).unwrap_or_default();
        let push = M::from(format!(
            r#"{{"push":"publication","channel":{name},"epoch":"{EPOCH}","offset":{offset},"data":{},"time":{time}}}"#,
            data.get()
        ));
        entry.subscribers.retain(
            |_, subscriber| match subscriber.queue.try_send(push.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    subscriber.kill.notify_one();
                    false
                }
                // The connection has ended and is about to unsubscribe.
                Err(TrySendError::Closed(_)) => false,
            },
        );
        offset
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// One connection's protocol state, owned by its reader. Dropping it unsubscribes the
/// connection from every channel, so that its writer sees the end of its queue.
#[derive(Debug)]
pub(crate) struct Session<M: Clone + From<String>> {
    hub: Arc<Hub<M>>,
    id: u64,
    queue: mpsc::Sender<M>,
    kill: Arc<Notify>,
    /// The channels to leave on drop.
    channels: Vec<String>,
}

/// A command as sent by `switchboard bench fanout`; other fields (`token`) are ignored.
#[derive(Debug, Deserialize)]
struct Command {
    id: Option<u64>,
    cmd: String,
    channel: Option<String>,
    /// Kept as JSON text: subscribers receive it exactly as published.
    data: Option<Box<RawValue>>,
}

impl<M: Clone + From<String>> Session<M> {
    /// Handles one text message and returns the reply to queue. Publishing fans out to the
    /// subscribers before the reply, as Switchboard does.
    pub(crate) fn handle(&mut self, text: &str) -> M {
        let command: Command = match serde_json::from_str(text) {
            Ok(command) => command,
            Err(err) => return M::from(error(None, &format!("unreadable command: {err}"))),
        };
        let id = command.id;
        let reply = match (command.cmd.as_str(), command.channel, command.data) {
            ("connect", _, _) => reply(id, "{}"),
            ("subscribe", Some(channel), _) => {
                let subscriber = Subscriber {
                    queue: self.queue.clone(),
                    kill: self.kill.clone(),
                };
                let offset = self.hub.subscribe(&channel, self.id, subscriber);
                if !self.channels.contains(&channel) {
                    self.channels.push(channel);
                }
                reply(id, &position(offset))
            }
            ("publish", Some(channel), Some(data)) => {
                let offset = self.hub.publish(&channel, &data);
                reply(id, &position(offset))
            }
            ("subscribe" | "publish", _, _) => error(id, "missing channel or data"),
            (other, _, _) => error(id, &format!("unknown command {other:?}")),
        };
        M::from(reply)
    }

    /// Queues a message behind everything already queued, waiting while the queue is full.
    /// Fails once the writer has gone.
    pub(crate) async fn send(&self, message: M) -> Result<(), mpsc::error::SendError<M>> {
        self.queue.send(message).await
    }
}

impl<M: Clone + From<String>> Drop for Session<M> {
    fn drop(&mut self) {
        let mut channels = self.hub.lock();
        for name in &self.channels {
            if let Some(channel) = channels.get_mut(name) {
                channel.subscribers.remove(&self.id);
            }
        }
    }
}

/// `{"offset":N,"epoch":"peer"}`.
fn position(offset: u64) -> String {
    format!(r#"{{"offset":{offset},"epoch":"{EPOCH}"}}"#)
}

/// `{"id":N,"result":RESULT}`, with `"id":null` for a command without one.
fn reply(id: Option<u64>, result: &str) -> String {
    let mut out = String::from(r#"{"id":"#);
    push_id(&mut out, id);
    let _ = write!(out, r#","result":{result}}}"#);
    out
}

/// `{"id":N,"error":{"code":107,"message":MESSAGE}}`.
fn error(id: Option<u64>, message: &str) -> String {
    let mut out = String::from(r#"{"id":"#);
    push_id(&mut out, id);
    let message = serde_json::to_string(message).unwrap_or_default();
    let _ = write!(
        out,
        r#","error":{{"code":{UNREADABLE},"message":{message}}}}}"#
    );
    out
}

fn push_id(out: &mut String, id: Option<u64>) {
    match id {
        Some(id) => {
            let _ = write!(out, "{id}");
        }
        None => out.push_str("null"),
    }
}

/// The writer's side of a connection's queue.
#[derive(Debug)]
pub(crate) struct Outbox<M> {
    rx: mpsc::Receiver<M>,
    kill: Arc<Notify>,
}

/// What the writer does next.
#[derive(Debug)]
pub(crate) enum Next<M> {
    /// Write this message.
    Send(M),
    /// The queue overflowed: close the connection with [`SLOW_CONSUMER_CODE`].
    Slow,
    /// The session has ended and everything queued has been taken: stop.
    Done,
}

impl<M> Outbox<M> {
    /// Waits for the next thing to do. A kill wins over queued messages: they can no
    /// longer all be delivered anyway.
    pub(crate) async fn next(&mut self) -> Next<M> {
        tokio::select! {
            biased;
            () = self.kill.notified() => Next::Slow,
            message = self.rx.recv() => message.map_or(Next::Done, Next::Send),
        }
    }

    /// A message that is already queued, if any: for writers that batch before flushing.
    pub(crate) fn ready(&mut self) -> Option<M> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &mut Outbox<String>) -> Vec<String> {
        std::iter::from_fn(|| outbox.ready()).collect()
    }

    #[tokio::test]
    async fn publications_reach_subscribers_with_data_as_sent() {
        let hub = Arc::new(Hub::<String>::default());
        let (mut sub, mut sub_out) = hub.open();
        let (mut publisher, mut pub_out) = hub.open();
        assert_eq!(
            sub.handle(r#"{"id":1,"cmd":"connect","token":"x"}"#),
            r#"{"id":1,"result":{}}"#
        );
        assert_eq!(
            sub.handle(r#"{"id":2,"cmd":"subscribe","channel":"vote:a"}"#),
            r#"{"id":2,"result":{"offset":0,"epoch":"peer"}}"#
        );
        let reply =
            publisher.handle(r#"{"id":7,"cmd":"publish","channel":"vote:a","data":{"t": 1.50}}"#);
        assert_eq!(reply, r#"{"id":7,"result":{"offset":1,"epoch":"peer"}}"#);
        let pushes = drain(&mut sub_out);
        assert_eq!(pushes.len(), 1);
        let (head, time) = pushes[0].rsplit_once(r#","time":"#).expect("a time");
        assert_eq!(
            head,
            r#"{"push":"publication","channel":"vote:a","epoch":"peer","offset":1,"data":{"t": 1.50}"#
        );
        assert!(time.trim_end_matches('}').parse::<u128>().is_ok());
        // The publisher is not subscribed: nothing was queued for it but its reply, which
        // the caller queues.
        assert!(drain(&mut pub_out).is_empty());
        // A later subscriber starts after the last offset.
        let (mut late, _late_out) = hub.open();
        assert_eq!(
            late.handle(r#"{"cmd":"subscribe","channel":"vote:a"}"#),
            r#"{"id":null,"result":{"offset":1,"epoch":"peer"}}"#
        );
    }

    #[tokio::test]
    async fn unreadable_commands_get_error_107() {
        let hub = Arc::new(Hub::<String>::default());
        let (mut session, _out) = hub.open();
        assert!(
            session
                .handle("{")
                .starts_with(r#"{"id":null,"error":{"code":107,"#)
        );
        assert!(
            session
                .handle(r#"{"id":3,"cmd":"history","channel":"a"}"#)
                .starts_with(r#"{"id":3,"error":{"code":107,"#)
        );
        assert!(
            session
                .handle(r#"{"id":4,"cmd":"publish","channel":"a"}"#)
                .starts_with(r#"{"id":4,"error":{"code":107,"#)
        );
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_subscriber() {
        let hub = Arc::new(Hub::<String>::default());
        let (mut sub, mut sub_out) = hub.open();
        let (mut publisher, _pub_out) = hub.open();
        sub.handle(r#"{"cmd":"subscribe","channel":"c"}"#);
        for _ in 0..=QUEUE_CAPACITY {
            publisher.handle(r#"{"cmd":"publish","channel":"c","data":1}"#);
        }
        assert!(matches!(sub_out.next().await, Next::Slow));
        assert!(hub.lock()["c"].subscribers.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_session_leaves_its_channels_and_ends_its_queue() {
        let hub = Arc::new(Hub::<String>::default());
        let (mut sub, mut sub_out) = hub.open();
        sub.handle(r#"{"cmd":"subscribe","channel":"c"}"#);
        sub.send("last".to_owned()).await.expect("queued");
        drop(sub);
        assert!(hub.lock()["c"].subscribers.is_empty());
        assert!(matches!(sub_out.next().await, Next::Send(m) if m == "last"));
        assert!(matches!(sub_out.next().await, Next::Done));
    }
}
