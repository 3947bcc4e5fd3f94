//! The hub: channels with their subscribers, presence and recent history; users with their
//! connections. Durable state (history, mailboxes) goes through the [`Store`].
//!
//! Channel state lives in shards of `std::sync::Mutex<HashMap>`, never held across an
//! `.await`. A publication takes an offset under the channel's lock, is written to the
//! store without the lock, and once committed is released under the lock again: added to
//! the channel's history cache and queued for the channel's deliverer, strictly in offset
//! order (publications that commit out of order wait in `ready`). Join and leave pushes go
//! through the same queue, so they are ordered with publications and never written under
//! the lock. A subscription reads history, registers and queues its reply in one step
//! under the same lock, so a recovering client gets each missed publication once and in
//! order, followed by the live ones. A publication is encoded once
//! ([`PreparedMessage`]) and the same bytes are queued to every subscriber.
//!
//! History lives in the store; the hub caches the newest of it within a byte budget
//! (`storage.history_cache_bytes`). A recovery or `history` the cache cannot answer reads
//! the store without the lock, then joins what it read to the cache under the lock.
//! Channels nobody uses are dropped from memory after [`IDLE_KEEP`].
//!
//! Private messages are serialised per user by an async lock, so a `send` racing with the
//! user's `connect` is delivered once and in order: either from the mailbox after the
//! connect reply, or live after it (see `users`).
//!
//! Files: `mod.rs` the hub, loading channels, the sweep; `shard` the sharded maps;
//! `channel` a channel's state and its history cache; `publish` publishing and the
//! release; `deliver` the channel's deliverer; `subscribe` subscriptions and recovery;
//! `history` the `history` command; `presence` presence and the channel list; `users`
//! users, mailboxes and quotas; `connections` the registry of open connections.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::config::{Config, NamespaceOptions, channel_char};
use crate::engine::{MailboxQuota, Store, StoreError};
use crate::error::ClientError;
use crate::metrics::Metrics;
use crate::outbox::ClientHandle;
use crate::protocol::Publication;
use crate::util::LogLimiter;

mod channel;
mod connections;
mod deliver;
mod group;
mod history;
mod presence;
mod publish;
mod remote;
mod shard;
mod subscribe;
#[cfg(test)]
mod tests;
mod users;

use channel::{Channel, retention};
use shard::Sharded;
use users::User;

pub(crate) use remote::Remote;

/// One warning per this interval at most for store failures answered to clients.
static STORE_FAILURES: LogLimiter = LogLimiter::new(Duration::from_secs(10));

/// Longest channel name accepted.
pub(crate) const MAX_CHANNEL_LEN: usize = 255;

/// How long a channel nobody subscribes to stays in memory after its last use, so that a
/// backend publishing to it now and then does not reload it from the store each time.
pub(crate) const IDLE_KEEP: Duration = Duration::from_secs(30);

/// Reads of the store one recovery or `history` makes at most when publications keep
/// evicting what it read from the cache meanwhile; then it answers with what it has.
const READ_ATTEMPTS: usize = 3;

/// Publications read from the store for a recovery or `history`: those after `after`.
#[derive(Debug)]
struct Fetched {
    after: u64,
    newest: bool,
    publications: Vec<Arc<Publication>>,
}

pub(crate) fn store_failed(err: StoreError) -> ClientError {
    match err {
        StoreError::MailboxFull {
            quota: MailboxQuota::Users,
            limit,
        } => {
            ClientError::mailbox_full(format!("the mailbox is full ({limit} messages from users)"))
        }
        StoreError::MailboxFull {
            quota: MailboxQuota::Sender,
            limit,
        } => ClientError::mailbox_full(format!(
            "the mailbox already holds {limit} unacknowledged messages from you"
        )),
        StoreError::MailboxFull {
            quota: MailboxQuota::Server,
            limit,
        } => ClientError::mailbox_full(format!(
            "the mailbox is full ({limit} messages from the server)"
        )),
        StoreError::Full(why) => ClientError::storage_full(why),
        // The detail (SQLite's words, a path) is for the operator's log, not the client.
        StoreError::Failed(why) => {
            if let Some(held_back) = STORE_FAILURES.allow() {
                warn!(cause = %why, held_back, "a store operation failed; the client was told to retry");
            }
            ClientError::internal("the server could not store or read this; try again")
        }
    }
}

/// The hub. One per server, shared as `Arc<Hub>`.
#[derive(Debug)]
pub(crate) struct Hub {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    channels: Sharded<Channel>,
    users: Sharded<User>,
    /// Every open connection, connected or not, so shutdown reaches them all. Locked
    /// twice per connection lifetime only.
    open: Mutex<HashMap<u64, ClientHandle>>,
    next_client: AtomicU64,
    started: Instant,
    /// Bytes of history cached over all channels (each channel's cache keeps it current).
    cached: Arc<AtomicUsize>,
    /// Subscribers a deliverer writes to before it yields ([`deliver::DELIVERY_CHUNK`];
    /// smaller in unit tests, so that a few subscribers reach the paths of thousands).
    delivery_chunk: usize,
    /// Extensions told of committed publications; set once, when the server starts.
    observers: std::sync::OnceLock<crate::observe::Observers>,
    /// The group of nodes this one belongs to (`engine = "redis"`); unset on one node.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// In a group: channels being loaded, with what arrived for them meanwhile.
    loading: Mutex<remote::Loading>,
    /// Rounds that publications joined while under way (unit tests assert the path ran).
    #[cfg(test)]
    rounds_joined: AtomicUsize,
}

impl Hub {
    /// A hub over `store`.
    pub(crate) fn new(config: Arc<Config>, metrics: Arc<Metrics>, store: Arc<dyn Store>) -> Self {
        Hub {
            config,
            metrics,
            store,
            channels: Sharded::new(),
            users: Sharded::new(),
            open: Mutex::default(),
            next_client: AtomicU64::new(1),
            started: Instant::now(),
            cached: Arc::default(),
            delivery_chunk: deliver::DELIVERY_CHUNK,
            observers: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            loading: Mutex::default(),
            #[cfg(test)]
            rounds_joined: AtomicUsize::new(0),
        }
    }

    /// Installs the extensions' observers (the first call wins: the server starts once).
    pub(crate) fn set_observers(&self, observers: crate::observe::Observers) {
        let _ = self.observers.set(observers);
    }

    /// Makes this hub a node of a group (the first call wins: the server starts once).
    pub(crate) fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The group this node belongs to, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Time since the hub started.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Bytes of history cached in memory, over all channels.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// Channels held in memory.
    pub(crate) fn channels_in_memory(&self) -> usize {
        let mut n = 0;
        self.channels.each(|map| n += map.len());
        n
    }

    /// A fresh connection number.
    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the history cache is over its budget.
    fn over_budget(&self) -> impl Fn() -> bool + '_ {
        let budget = self.config.storage.history_cache_bytes;
        move || self.cached.load(Ordering::Relaxed) > budget
    }

    /// Checks a channel name and returns its namespace options.
    pub(crate) fn channel_options(&self, channel: &str) -> Result<&NamespaceOptions, ClientError> {
        if channel.is_empty()
            || channel.len() > MAX_CHANNEL_LEN
            || !channel.chars().all(channel_char)
        {
            return Err(ClientError::unknown_channel(format!(
                "invalid channel name {channel:?}: use up to {MAX_CHANNEL_LEN} letters, digits and _-.:@/="
            )));
        }
        self.config.channel_options(channel).ok_or_else(|| {
            ClientError::unknown_channel(format!(
                "channel {channel:?} is in no configured namespace"
            ))
        })
    }

    /// Runs `f` on the channel under its lock, loading the channel from the store first
    /// if it is not in memory. In a group of nodes, a channel in memory is one this node
    /// watches (receives the events of): it starts watching before it reads the store, so
    /// nothing published in between is missed.
    async fn with_channel<T>(
        self: &Arc<Self>,
        name: &str,
        opts: &NamespaceOptions,
        mut f: impl FnMut(&mut Channel) -> T,
    ) -> Result<T, ClientError> {
        let mut snapshot = None;
        let cluster = self.cluster.get();
        let mut watching = false;
        loop {
            let mut gap = None;
            let (result, start) = {
                let mut shard = self.channels.lock(name);
                match shard.entry(name.to_owned()) {
                    Entry::Occupied(mut e) => {
                        let ch = e.get_mut();
                        ch.last_used = Instant::now();
                        let result = f(ch);
                        drop(shard);
                        if let (true, Some(cluster)) = (watching, cluster) {
                            // Another task loaded it meanwhile, with a watch of its own.
                            self.end_load(name);
                            cluster.unwatch(name);
                        }
                        return Ok(result);
                    }
                    Entry::Vacant(v) => match snapshot.take() {
                        Some(snapshot) => {
                            let mut ch = Channel::new(snapshot, opts, self.cached.clone());
                            let mut start = false;
                            if watching {
                                let early = self.end_load(name);
                                let (s, g) = self.adopt_early(&mut ch, name, early);
                                start = s;
                                gap =
                                    g.map(|(after, before)| (ch.epoch.to_string(), after, before));
                            }
                            (Some(f(v.insert(ch))), start)
                        }
                        None => (None, false),
                    },
                }
            };
            if let Some(result) = result {
                if start {
                    self.start_deliverer(name);
                }
                if let Some((epoch, after, before)) = gap {
                    self.fill_gap(name, epoch, after, before);
                }
                return Ok(result);
            }
            if let (false, Some(cluster)) = (watching, cluster) {
                self.begin_load(name);
                if let Err(err) = cluster.watch(name).await {
                    self.end_load(name);
                    return Err(store_failed(err));
                }
                watching = true;
            }
            // A sixteenth of the budget at most per channel loaded: the cache fills from
            // live publications, and the store answers the rest.
            let recent_bytes = self.config.storage.history_cache_bytes / 16;
            match self
                .store
                .channel(name, retention(opts), recent_bytes)
                .await
            {
                Ok(loaded) => snapshot = Some(loaded),
                Err(err) => {
                    if let (true, Some(cluster)) = (watching, cluster) {
                        self.end_load(name);
                        cluster.unwatch(name);
                    }
                    return Err(store_failed(err));
                }
            }
        }
    }

    /// Drops expired history, channels left idle for [`IDLE_KEEP`] and users left
    /// without connections; past the cache budget, drops the caches of the channels used
    /// least recently. Run periodically, off the hot path.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let over_budget = self.over_budget();
        let mut dropped = Vec::new();
        self.channels.each(|map| {
            map.retain(|name, ch| {
                if let Some(opts) = self.config.channel_options(name) {
                    ch.cache.trim(opts, now);
                }
                let keep = !(ch.is_idle() && now.duration_since(ch.last_used) >= IDLE_KEEP);
                if !keep {
                    dropped.push(name.clone());
                }
                keep
            })
        });
        if over_budget() {
            // Least recently used first; idle channels go altogether.
            let mut used: Vec<(Instant, String)> = Vec::new();
            self.channels.each(|map| {
                used.extend(
                    map.iter()
                        .filter(|(_, ch)| ch.cache.bytes() > 0)
                        .map(|(name, ch)| (ch.last_used, name.clone())),
                );
            });
            used.sort();
            for (_, name) in used {
                if !over_budget() {
                    break;
                }
                let mut shard = self.channels.lock(&name);
                if let Some(ch) = shard.get_mut(&name) {
                    if ch.is_idle() {
                        shard.remove(&name);
                        dropped.push(name.clone());
                    } else {
                        ch.cache.clear();
                    }
                }
            }
        }
        if let Some(cluster) = self.cluster.get() {
            for name in dropped {
                cluster.unwatch(&name);
            }
        }
        self.sweep_users();
    }
}
