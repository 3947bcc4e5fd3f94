//! Storage engines: where history positions, publications and offline mailboxes live.
//!
//! The store holds each channel's position and history, and every mailbox; a publication
//! is acknowledged only once [`Store::append`] has returned. The hub keeps a bounded
//! cache of recent history in memory (`storage.history_cache_bytes`), because recovery
//! and fan-out happen under the channel's lock, and reads the store for what the cache
//! no longer holds. The in-memory store ([`memory::MemoryStore`]) keeps nothing across
//! restarts: a restarted server gives every channel a new epoch, so clients learn that
//! continuity was lost (`recovered: false`). Durable stores (SQLite by default, Redis for
//! several nodes) come behind the same trait, and one test suite (`engine/suite.rs`) runs
//! against each.
//! [`sqlite::SqliteStore`] keeps history positions, publications and mailboxes in one
//! SQLite file, written by one thread with group commit and read beside it on read-only
//! connections, so epochs and offsets continue after a restart.
//! [`redis::RedisEngine`] keeps them in Redis, shared by several nodes: one script per
//! publication allocates its offset, stores it and publishes it to every node.

pub mod memory;
pub mod redis;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::protocol::{ClientInfo, PrivateMessage, Publication};

/// A boxed future, so `Store` can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most publications kept.
    pub size: usize,
    /// How long each is kept.
    pub ttl: Duration,
}

/// Limits of a user's mailbox. Messages from users and from the server API (`from` is
/// `None`) are counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Most messages from users kept.
    pub size: usize,
    /// Most messages from one sending user kept.
    pub per_sender: usize,
    /// Most messages from the server API kept.
    pub server_size: usize,
    /// How long each is kept.
    pub ttl: Duration,
}

/// Bytes a private message counts for in a page: its data and its sender.
pub fn message_bytes(message: &PrivateMessage) -> usize {
    let from = message.from.as_ref().map_or(0, |f| {
        f.user.len() + f.client.len() + f.info.as_ref().map_or(0, |i| i.get().len())
    });
    message.data.get().len() + from
}

/// What a store knows of a channel when the hub starts using it.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    /// The stream's epoch; a store that lost the stream (or never had it) returns a new
    /// one.
    pub epoch: String,
    /// The offset of the latest stored publication (0: none).
    pub top: u64,
    /// The newest unexpired publications, oldest first, at most the retention size and
    /// about the byte budget the caller gave.
    pub recent: Vec<Arc<Publication>>,
    /// Whether `recent` holds every unexpired publication the store keeps for the
    /// channel (false when the byte budget cut it short).
    pub complete: bool,
}

/// Which stored publications [`Store::history`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only offsets above this one.
    pub after: u64,
    /// Only offsets below this one, if given.
    pub before: Option<u64>,
    /// Most publications returned.
    pub limit: usize,
    /// Whether to return the newest `limit` of the range rather than the oldest.
    /// Either way they come oldest first.
    pub newest: bool,
}

/// How much one mailbox page may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    /// Most messages.
    pub messages: usize,
    /// Most bytes of `data` (and sender) together; the first message is returned
    /// whatever its size, so a page always makes progress.
    pub bytes: usize,
}

impl PageLimit {
    /// No bound.
    pub const ALL: PageLimit = PageLimit {
        messages: usize::MAX,
        bytes: usize::MAX,
    };
}

/// One page of a user's mailbox.
#[derive(Debug, Clone, Default)]
pub struct MailboxPage {
    /// Unexpired, unacknowledged messages, oldest first.
    pub messages: Vec<Arc<PrivateMessage>>,
    /// Whether more messages follow the page.
    pub more: bool,
}

/// Which mailbox bound refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxQuota {
    /// `mailbox.size`: messages from all users.
    Users,
    /// `mailbox.per_sender`: messages from this sender.
    Sender,
    /// `mailbox.server_size`: messages from the server API.
    Server,
}

/// What the store holds, for metrics and `/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Bytes in use (the database's pages in use, or the memory store's estimate).
    pub bytes: u64,
    /// Writes refused for the storage budget since start.
    pub refused: u64,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The user's mailbox holds `limit` messages under `quota`; nothing was stored.
    #[error("the mailbox is full ({limit} messages)")]
    MailboxFull {
        /// The bound that was reached.
        quota: MailboxQuota,
        /// Its value.
        limit: usize,
    },
    /// The storage budget (`storage.max_bytes`, or the disk's free space) is used up;
    /// nothing was stored.
    #[error("storage full: {0}")]
    Full(String),
    /// The store cannot do its job (I/O, corruption); the operation did not happen.
    #[error("store failure: {0}")]
    Failed(String),
}

/// Durable storage behind the hub.
///
/// A read never creates anything: a channel that was never published to has no stored
/// state, so asking about names costs no disk.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The channel's position and newest history (at most the retention size, and about
    /// `recent_bytes` of it). A channel the store does not hold gets a fresh epoch, which
    /// is not stored until something is appended under it.
    fn channel<'a>(
        &'a self,
        channel: &'a str,
        retention: Retention,
        recent_bytes: usize,
    ) -> BoxFuture<'a, Result<ChannelSnapshot, StoreError>>;

    /// Makes a publication durable; the future resolves once it would survive a crash.
    /// The write is queued when `append` is called, not when the future is polled: the hub
    /// calls it under the channel's lock, in offset order, so writes commit in that order
    /// and a crash can never keep a later offset and lose an earlier one. Refused with
    /// [`StoreError::Full`] past the storage budget.
    fn append(
        &self,
        channel: &str,
        epoch: &str,
        publication: Arc<Publication>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Stored, unexpired publications of a channel (see [`HistoryQuery`]), oldest first.
    /// Every publication acknowledged before the call is visible to it.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<Vec<Arc<Publication>>, StoreError>>;

    /// Stores a private message for `user`, assigning its id (increasing per store). A
    /// mailbox bound reached refuses with [`StoreError::MailboxFull`], unless the user is
    /// `online`: then the message gets its id but is not kept, and the caller delivers it
    /// live (the bounds are for messages waiting for an absent user). Past the storage
    /// budget it refuses with [`StoreError::Full`].
    fn mailbox_push<'a>(
        &'a self,
        user: &'a str,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
    ) -> BoxFuture<'a, Result<Arc<PrivateMessage>, StoreError>>;

    /// The user's unexpired, unacknowledged messages with ids above `after`, oldest first,
    /// within `limit`. The read itself is bounded by it: a large mailbox is never read
    /// whole.
    fn mailbox_page<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: PageLimit,
    ) -> BoxFuture<'a, Result<MailboxPage, StoreError>>;

    /// Removes the user's messages up to and including id `upto`.
    fn mailbox_ack<'a>(&'a self, user: &'a str, upto: u64)
    -> BoxFuture<'a, Result<(), StoreError>>;

    /// Identifies the series mailbox ids belong to. It changes only when ids may have
    /// gone back (a new memory store, a store that lost acknowledged writes), so a client
    /// that remembers the last id it saw knows to forget it.
    fn mailbox_epoch(&self) -> String;

    /// Drops expired publications, messages and channels left without either. Called
    /// periodically, off the hot path.
    fn sweep(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// `Err` with the reason while the store cannot write (its last write failed and no
    /// later one succeeded), for `/health`.
    fn health(&self) -> Result<(), String>;

    /// What the store holds, for metrics.
    fn usage(&self) -> StoreUsage;
}
