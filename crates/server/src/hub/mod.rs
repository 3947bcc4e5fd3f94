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

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use switchboard_ws::{CloseCode, PreparedMessage};

use crate::config::{Config, NamespaceOptions, channel_char};
use crate::engine::{HistoryQuery, MailboxQuota, Store, StoreError};
use crate::error::ClientError;
use crate::metrics::Metrics;
use crate::outbox::ClientHandle;
use crate::protocol::{
    ClientInfo, History, Presence, PresenceEntry, Publication, Push, StreamPosition, Subscribed,
    now_ms,
};

mod channel;
mod deliver;
mod shard;
mod users;

use channel::{Channel, PresenceKey, Since, keeps_history, retention};
use shard::Sharded;
use users::User;

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
        StoreError::Failed(why) => ClientError::internal(format!("storage failed: {why}")),
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
        }
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
    /// if it is not in memory.
    async fn with_channel<T>(
        &self,
        name: &str,
        opts: &NamespaceOptions,
        mut f: impl FnMut(&mut Channel) -> T,
    ) -> Result<T, ClientError> {
        let mut snapshot = None;
        loop {
            {
                let mut shard = self.channels.lock(name);
                match shard.entry(name.to_owned()) {
                    Entry::Occupied(mut e) => {
                        let ch = e.get_mut();
                        ch.last_used = Instant::now();
                        return Ok(f(ch));
                    }
                    Entry::Vacant(v) => {
                        if let Some(snapshot) = snapshot.take() {
                            let ch = Channel::new(snapshot, opts, self.cached.clone());
                            return Ok(f(v.insert(ch)));
                        }
                    }
                }
            }
            // A sixteenth of the budget at most per channel loaded: the cache fills from
            // live publications, and the store answers the rest.
            let recent_bytes = self.config.storage.history_cache_bytes / 16;
            snapshot = Some(
                self.store
                    .channel(name, retention(opts), recent_bytes)
                    .await
                    .map_err(store_failed)?,
            );
        }
    }

    /// Publishes to a channel. The publication is acknowledged (this returns) only after
    /// the store committed it; it reaches subscribers in offset order.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        channel: &str,
        data: Arc<RawValue>,
        info: Option<ClientInfo>,
    ) -> Result<StreamPosition, ClientError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.publish_then(channel, data, info, move |result| {
            let _ = tx.send(result);
        })
        .await?;
        rx.await
            .unwrap_or_else(|_| Err(ClientError::internal("publication lost")))
    }

    /// Reserves the publication's offset and queues its write to the store, then returns;
    /// `done` is called with the acknowledgement once the store committed it (or with the
    /// error). A connection can go on with its next commands meanwhile: its publications
    /// keep the order in which they were started. The store write and `done` run in one
    /// task of their own, so a publisher that goes away cannot leave an offset unreleased.
    /// When this returns an error, nothing was reserved and `done` is not called.
    pub(crate) async fn publish_then(
        self: &Arc<Self>,
        channel: &str,
        data: Arc<RawValue>,
        info: Option<ClientInfo>,
        done: impl FnOnce(Result<StreamPosition, ClientError>) + Send + 'static,
    ) -> Result<(), ClientError> {
        let opts = self.channel_options(channel)?;
        let mut payload = Some((data, info));
        let (epoch, publication, write) = self
            .with_channel(channel, opts, |ch| {
                let (data, info) = payload.take()?;
                ch.reserved += 1;
                let publication = Arc::new(Publication {
                    offset: ch.reserved,
                    data,
                    info,
                    time: now_ms(),
                });
                // Queued under the lock, so the store commits offsets in order.
                let write = keeps_history(opts).then(|| {
                    let retention = retention(opts);
                    self.store
                        .append(channel, &ch.epoch, publication.clone(), retention)
                });
                Some((ch.epoch.clone(), publication, write))
            })
            .await?
            .ok_or_else(|| ClientError::internal("publication lost"))?;
        let hub = self.clone();
        let name = channel.to_owned();
        tokio::spawn(async move {
            let result = hub.commit(&name, publication, write).await;
            done(match result {
                Some(Ok(offset)) => {
                    hub.metrics.publications.inc();
                    Ok(StreamPosition {
                        offset,
                        epoch: epoch.to_string(),
                    })
                }
                Some(Err(err)) => Err(store_failed(err)),
                None => Err(ClientError::internal("publication lost")),
            });
        });
        Ok(())
    }

    /// Waits for a publication's store write, then releases it (and whatever committed
    /// before it) to the history cache and the channel's deliverer. `None` if the channel
    /// or its namespace went away meanwhile.
    async fn commit(
        self: &Arc<Self>,
        name: &str,
        publication: Arc<Publication>,
        write: Option<impl Future<Output = Result<(), StoreError>>>,
    ) -> Option<Result<u64, StoreError>> {
        let opts = self.channel_options(name).ok()?;
        let stored = write.is_some();
        let result = match write {
            Some(write) => {
                let start = Instant::now();
                let result = write.await;
                self.metrics.store_writes.inc();
                self.metrics
                    .store_write_us
                    .add(start.elapsed().as_micros() as u64);
                result
            }
            None => Ok(()),
        };
        let offset = publication.offset;
        {
            let mut shard = self.channels.lock(name);
            // Present: a channel with an unreleased offset is never dropped.
            let ch = shard.get_mut(name)?;
            if result.is_ok() || !stored {
                ch.stored_top = ch.stored_top.max(offset);
            }
            ch.ready
                .insert(offset, result.is_ok().then_some(publication));
        }
        // Publications committed together (one group commit, or while a fan-out kept this
        // thread busy) are released together: let their tasks record them first, so that
        // one write per subscriber carries all of them.
        tokio::task::yield_now().await;
        let start_deliverer = {
            let mut shard = self.channels.lock(name);
            let ch = shard.get_mut(name)?;
            ch.top < offset && ch.release(name, opts, self.over_budget())
        };
        if start_deliverer {
            self.start_deliverer(name);
        }
        Some(result.map(|()| offset))
    }

    /// Starts the channel's deliverer task (the caller marked it running).
    fn start_deliverer(self: &Arc<Self>, name: &str) {
        let (hub, name) = (self.clone(), name.to_owned());
        tokio::spawn(async move { hub.deliver(&name).await });
    }

    /// The publications after `after` (at most `want`), from the cache, or from the cache
    /// and what was `fetched` from the store.
    fn since(ch: &Channel, after: u64, want: usize, fetched: Option<&Fetched>) -> Since {
        let found = |mut publications: Vec<Arc<Publication>>| {
            publications.truncate(want);
            Since::Found(publications)
        };
        match ch.cache.since(after, ch.top) {
            Since::Found(publications) => return found(publications),
            Since::Gone => return Since::Gone,
            Since::AskStore => {}
        }
        let Some(fetched) = fetched.filter(|f| f.after == after && !f.newest) else {
            return Since::AskStore;
        };
        // Later commits may be in the store before they are released: those reach the
        // subscriber live, so only what was released counts here.
        let stored: Vec<_> = fetched
            .publications
            .iter()
            .filter(|p| p.offset <= ch.top)
            .cloned()
            .collect();
        match stored.first() {
            Some(first) if first.offset == after + 1 => {}
            // The first ones after `after` expired (or were never stored).
            _ => return Since::Gone,
        }
        let last = stored.last().map_or(after, |p| p.offset);
        if stored.len() >= want || last == ch.top {
            return found(stored);
        }
        match ch.cache.since(last, ch.top) {
            Since::Found(rest) => found(stored.into_iter().chain(rest).collect()),
            other => other,
        }
    }

    /// Subscribes a connection. Under the channel's lock: recovers what the client missed,
    /// registers it, queues `reply` (built from the result) to it, then announces the join.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        handle: &ClientHandle,
        info: &ClientInfo,
        recover: Option<&StreamPosition>,
        reply: impl FnOnce(&Subscribed) -> String,
    ) -> Result<(), ClientError> {
        let opts = self.channel_options(channel)?;
        let mut reply = Some(reply);
        let mut fetched: Option<Fetched> = None;
        for attempt in 1..=READ_ATTEMPTS {
            let last_try = attempt == READ_ATTEMPTS;
            let step = self
                .with_channel(channel, opts, |ch| {
                    if ch.subscribers.contains_key(&handle.id) {
                        return Err(ClientError::already_subscribed(format!(
                            "already subscribed to {channel:?}"
                        )));
                    }
                    ch.cache.trim(opts, Instant::now());
                    let recovered = match recover {
                        None => None,
                        Some(pos) if *pos.epoch != *ch.epoch => Some(None),
                        Some(pos) => {
                            match Self::since(ch, pos.offset, usize::MAX, fetched.as_ref()) {
                                Since::Found(publications) => Some(Some(publications)),
                                Since::Gone => Some(None),
                                Since::AskStore if !last_try => return Ok(Some(pos.offset)),
                                Since::AskStore => Some(None),
                            }
                        }
                    };
                    let result = Subscribed {
                        epoch: ch.epoch.to_string(),
                        offset: ch.top,
                        recoverable: keeps_history(opts),
                        recovered: recovered.as_ref().map(Option::is_some),
                        publications: recovered.flatten().unwrap_or_default(),
                    };
                    if let Some(reply) = reply.take() {
                        handle.push(PreparedMessage::text(&reply(&result)));
                    }
                    ch.subscribers.insert(handle.id, handle.clone());
                    ch.snapshot = None;
                    self.metrics.subscriptions.add(1);
                    let entry =
                        ch.presence
                            .entry(PresenceKey::of(info))
                            .or_insert_with(|| PresenceEntry {
                                user: info.user.clone(),
                                info: info.info.clone(),
                                connections: 0,
                            });
                    entry.connections += 1;
                    let start = entry.connections == 1
                        && opts.join_leave
                        && ch.announce(PreparedMessage::text(
                            &Push::Join { channel, info }.to_json(),
                        ));
                    if start {
                        self.start_deliverer(channel);
                    }
                    Ok(None)
                })
                .await??;
            let Some(after) = step else {
                return Ok(());
            };
            let query = HistoryQuery {
                after,
                before: None,
                limit: opts.history_size,
                newest: false,
            };
            fetched = Some(Fetched {
                after,
                newest: false,
                publications: self
                    .store
                    .history(channel, query)
                    .await
                    .map_err(store_failed)?,
            });
        }
        Err(ClientError::internal("subscription lost"))
    }

    /// Unsubscribes a connection; announces the leave when it was the user's last one.
    /// Returns whether it was subscribed.
    pub(crate) fn unsubscribe(
        self: &Arc<Self>,
        channel: &str,
        client: u64,
        info: &ClientInfo,
    ) -> bool {
        let join_leave = self
            .config
            .channel_options(channel)
            .is_some_and(|o| o.join_leave);
        let start = {
            let mut shard = self.channels.lock(channel);
            let Some(ch) = shard.get_mut(channel) else {
                return false;
            };
            if ch.subscribers.remove(&client).is_none() {
                return false;
            }
            ch.snapshot = None;
            ch.last_used = Instant::now();
            self.metrics.subscriptions.add(-1);
            let key = PresenceKey::of(info);
            let mut start = false;
            if let Some(entry) = ch.presence.get_mut(&key) {
                entry.connections -= 1;
                if entry.connections == 0 {
                    ch.presence.remove(&key);
                    if join_leave {
                        let push = Push::Leave { channel, info };
                        start = ch.announce(PreparedMessage::text(&push.to_json()));
                    }
                }
            }
            start
        };
        if start {
            self.start_deliverer(channel);
        }
        true
    }

    /// A channel's history: the latest `limit`, or (with `since`) what followed a position.
    pub(crate) async fn history(
        &self,
        channel: &str,
        limit: Option<usize>,
        since: Option<&StreamPosition>,
    ) -> Result<History, ClientError> {
        let opts = self.channel_options(channel)?;
        if !keeps_history(opts) {
            return Err(ClientError::not_available(format!(
                "no history in {channel:?}"
            )));
        }
        let limit = limit.unwrap_or(usize::MAX).min(opts.history_size);
        let mut fetched: Option<Fetched> = None;
        for attempt in 1..=READ_ATTEMPTS {
            let last_try = attempt == READ_ATTEMPTS;
            let answer = self
                .with_channel(channel, opts, |ch| {
                    ch.cache.trim(opts, Instant::now());
                    let (publications, complete) = match since {
                        Some(pos) if *pos.epoch != *ch.epoch => (Vec::new(), Some(false)),
                        Some(pos) => match Self::since(ch, pos.offset, limit, fetched.as_ref()) {
                            Since::Found(publications) => (publications, Some(true)),
                            Since::Gone => (Vec::new(), Some(false)),
                            Since::AskStore if !last_try => {
                                return Err((pos.offset, false));
                            }
                            Since::AskStore => (Vec::new(), Some(false)),
                        },
                        None => match Self::newest(ch, limit, fetched.as_ref()) {
                            Some(publications) => (publications, None),
                            None if !last_try => return Err((0, true)),
                            None => (ch.cache.newest(limit), None),
                        },
                    };
                    Ok(History {
                        epoch: ch.epoch.to_string(),
                        offset: ch.top,
                        publications,
                        complete,
                    })
                })
                .await?;
            let (after, newest) = match answer {
                Ok(history) => return Ok(history),
                Err(read) => read,
            };
            let query = HistoryQuery {
                after,
                before: None,
                limit,
                newest,
            };
            fetched = Some(Fetched {
                after,
                newest,
                publications: self
                    .store
                    .history(channel, query)
                    .await
                    .map_err(store_failed)?,
            });
        }
        Err(ClientError::internal("history lost"))
    }

    /// The newest `limit` publications, from the cache, or from what was `fetched` (the
    /// store's newest) and the cache; `None` when the store must be read.
    fn newest(
        ch: &Channel,
        limit: usize,
        fetched: Option<&Fetched>,
    ) -> Option<Vec<Arc<Publication>>> {
        if ch.cache.is_complete() || ch.cache.len() >= limit {
            return Some(ch.cache.newest(limit));
        }
        let fetched = fetched.filter(|f| f.newest)?;
        let mut publications: Vec<_> = fetched
            .publications
            .iter()
            .filter(|p| p.offset <= ch.top)
            .cloned()
            .collect();
        let last = publications.last().map_or(0, |p| p.offset);
        if last < ch.top {
            // Released since the read: the cache must hold them.
            match ch.cache.since(last, ch.top) {
                Since::Found(rest) => publications.extend(rest),
                _ => return None,
            }
        }
        let skip = publications.len().saturating_sub(limit);
        publications.drain(..skip);
        Some(publications)
    }

    /// Who is subscribed to a channel.
    pub(crate) fn presence(&self, channel: &str) -> Result<Presence, ClientError> {
        let opts = self.channel_options(channel)?;
        if !opts.presence {
            return Err(ClientError::not_available(format!(
                "no presence in {channel:?}"
            )));
        }
        let mut presence = Presence {
            presence: BTreeMap::new(),
            anonymous: BTreeMap::new(),
        };
        let shard = self.channels.lock(channel);
        if let Some(ch) = shard.get(channel) {
            for (key, entry) in &ch.presence {
                match key {
                    PresenceKey::User(user) => {
                        presence.presence.insert(user.clone(), entry.clone())
                    }
                    PresenceKey::Anonymous(client) => {
                        presence.anonymous.insert(client.clone(), entry.clone())
                    }
                };
            }
        }
        Ok(presence)
    }

    /// Active channels (with at least one subscriber) and their subscriber counts.
    pub(crate) fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        self.channels.each(|map| {
            out.extend(
                map.iter()
                    .filter(|(_, ch)| !ch.subscribers.is_empty())
                    .map(|(name, ch)| (name.clone(), ch.subscribers.len())),
            );
        });
        out.sort();
        out
    }

    /// Drops expired history, channels left idle for [`IDLE_KEEP`] and users left
    /// without connections; past the cache budget, drops the caches of the channels used
    /// least recently. Run periodically, off the hot path.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let over_budget = self.over_budget();
        self.channels.each(|map| {
            map.retain(|name, ch| {
                if let Some(opts) = self.config.channel_options(name) {
                    ch.cache.trim(opts, now);
                }
                !(ch.is_idle() && now.duration_since(ch.last_used) >= IDLE_KEEP)
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
                    } else {
                        ch.cache.clear();
                    }
                }
            }
        }
        self.sweep_users();
    }

    /// Registers an open connection (see [`Hub::disconnect_all`]).
    pub(crate) fn register(&self, handle: &ClientHandle) {
        self.open_connections().insert(handle.id, handle.clone());
    }

    /// Forgets a closed connection.
    pub(crate) fn unregister(&self, id: u64) {
        self.open_connections().remove(&id);
    }

    fn open_connections(&self) -> MutexGuard<'_, HashMap<u64, ClientHandle>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every open connection (shutdown).
    pub(crate) fn disconnect_all(&self, code: CloseCode, reason: &str) {
        for handle in self.open_connections().values() {
            handle.disconnect(code, reason);
        }
    }
}
