//! Storage engines: where history positions, publications and offline mailboxes live.
//!
//! The hub keeps each active channel's recent history in memory, because recovery and
//! fan-out must happen under the channel's lock, and asks the [`Store`] to make things
//! durable: a publication is acknowledged only once [`Store::append`] has returned. The
//! in-memory store ([`memory::MemoryStore`]) keeps nothing across restarts: a restarted
//! server gives every channel a new epoch, so clients learn that continuity was lost
//! (`recovered: false`). Durable stores (SQLite by default, Redis for several nodes) come
//! behind the same trait, and one test suite (`engine/suite.rs`) runs against each.
//! [`sqlite::SqliteStore`] keeps history positions, publications and mailboxes in one
//! SQLite file, written by one thread with group commit, so epochs and offsets continue
//! after a restart.

pub mod memory;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::wire::{ClientInfo, PrivateMessage, Publication};

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

/// Limits of a user's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Most messages kept.
    pub size: usize,
    /// How long each is kept.
    pub ttl: Duration,
}

/// What a store knows of a channel when the hub starts using it.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    /// The stream's epoch; a store that lost the stream returns a new one.
    pub epoch: String,
    /// The offset of the latest stored publication (0: none).
    pub top: u64,
    /// Unexpired publications, oldest first, at most the retention size.
    pub recent: Vec<Arc<Publication>>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The user's mailbox holds its maximum; nothing was stored.
    #[error("the mailbox is full ({0} messages)")]
    MailboxFull(usize),
    /// The store cannot do its job (I/O, corruption); the operation did not happen.
    #[error("store failure: {0}")]
    Failed(String),
}

/// Durable storage behind the hub.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The channel's position and recent history, creating its epoch on first use.
    fn channel<'a>(
        &'a self,
        channel: &'a str,
        retention: Retention,
    ) -> BoxFuture<'a, Result<ChannelSnapshot, StoreError>>;

    /// Makes a publication durable; the future resolves once it would survive a crash.
    /// The write is queued when `append` is called, not when the future is polled: the hub
    /// calls it under the channel's lock, in offset order, so writes commit in that order
    /// and a crash can never keep a later offset and lose an earlier one.
    fn append(
        &self,
        channel: &str,
        epoch: &str,
        publication: Arc<Publication>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Stores a private message for `user`, assigning its id (increasing per store). When
    /// the mailbox is full it refuses with [`StoreError::MailboxFull`], unless the user is
    /// `online`: then the message gets its id but is not kept, and the caller delivers it
    /// live (the bound is for messages waiting for an absent user).
    fn mailbox_push<'a>(
        &'a self,
        user: &'a str,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
    ) -> BoxFuture<'a, Result<Arc<PrivateMessage>, StoreError>>;

    /// The user's unexpired, unacknowledged messages, oldest first.
    fn mailbox_pending<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Arc<PrivateMessage>>, StoreError>>;

    /// Removes the user's messages up to and including id `upto`.
    fn mailbox_ack<'a>(&'a self, user: &'a str, upto: u64)
    -> BoxFuture<'a, Result<(), StoreError>>;

    /// Drops expired publications and messages. Called periodically, off the hot path.
    fn sweep(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
