//! The hub: channels with their subscribers, presence and recent history; users with their
//! connections. Durable state (history, mailboxes) goes through the [`Store`].
//!
//! Channel state lives in shards of `std::sync::Mutex<HashMap>`, never held across an
//! `.await`. A publication takes an offset under the channel's lock, is written to the
//! store without the lock, and once committed is released under the lock again: appended
//! to the in-memory history and queued to every subscriber, strictly in offset order
//! (publications that commit out of order wait in `ready`). A subscription reads history,
//! registers and queues its reply in one step under the same lock, so a recovering client
//! gets each missed publication once and in order, followed by the live ones. A
//! publication is encoded once ([`PreparedMessage`]) and the same bytes are queued to
//! every subscriber.
//!
//! Private messages are serialised per user by an async lock, so a `send` racing with the
//! user's `connect` is delivered once and in order: either from the mailbox after the
//! connect reply, or live after it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_ws::{CloseCode, PreparedMessage};

use crate::config::{Config, NamespaceOptions, channel_char};
use crate::engine::{ChannelSnapshot, MailboxLimits, Retention, Store, StoreError};
use crate::error::ClientError;
use crate::metrics::Metrics;
use crate::outbox::ClientHandle;
use crate::wire::{ClientInfo, Publication, Push, StreamPosition, now_ms};

mod deliver;

use deliver::Delivery;

const SHARDS: usize = 64;
/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 255;

/// A map split into independently locked shards.
#[derive(Debug)]
struct Sharded<V> {
    shards: Vec<Mutex<HashMap<String, V>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn lock(&self, key: &str) -> MutexGuard<'_, HashMap<String, V>> {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        // A panic while holding a shard lock leaves plain data behind; keep serving.
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn each(&self, mut f: impl FnMut(&mut HashMap<String, V>)) {
        for shard in &self.shards {
            f(&mut shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

/// A channel's state.
#[derive(Debug)]
struct Channel {
    /// Identifies this incarnation of the channel's stream (from the store): offsets of
    /// another epoch mean nothing here.
    epoch: Arc<str>,
    /// The last offset handed to a publisher.
    reserved: u64,
    /// The last offset released (in history and queued to subscribers).
    top: u64,
    /// Publications committed before an earlier one: offset → publication, or `None` if
    /// its write failed (the offset is skipped).
    ready: BTreeMap<u64, Option<Arc<Publication>>>,
    /// Recent publications, oldest first, with their expiry.
    history: VecDeque<(Arc<Publication>, Instant)>,
    /// By connection number, so a broadcast walks connections in the order they were
    /// opened: their sockets, file table entries and outboxes were allocated in that order,
    /// and walking them in it rather than in hash order cut the server's CPU per delivery
    /// (cache and TLB misses in the kernel's send path) in a 10,000-subscriber fan-out.
    subscribers: BTreeMap<u64, ClientHandle>,
    /// `subscribers` as a list shared with deliveries; `None` after a change.
    snapshot: Option<Arc<[ClientHandle]>>,
    /// Released publications waiting for the channel's deliverer, in offset order.
    outgoing: VecDeque<Delivery>,
    /// Whether a deliverer task is running for this channel (at most one, so deliveries
    /// keep offset order).
    delivering: bool,
    /// Connections per presence key (user id, or client id for anonymous connections).
    presence: HashMap<String, PresenceEntry>,
}

/// One presence key's entry: the user, their public info, and how many of their
/// connections are subscribed.
#[derive(Debug, Clone, Serialize)]
struct PresenceEntry {
    user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<Arc<RawValue>>,
    connections: u32,
}

impl Channel {
    fn new(snapshot: ChannelSnapshot, opts: &NamespaceOptions) -> Self {
        // Stored publications keep the expiry they had: their age counts from `time`.
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut history: VecDeque<_> = snapshot
            .recent
            .into_iter()
            .filter_map(|p| {
                let age = Duration::from_millis(now_ms.saturating_sub(p.time));
                let left = opts.history_ttl.checked_sub(age)?;
                Some((p, now + left))
            })
            .collect();
        while history.len() > opts.history_size {
            history.pop_front();
        }
        Channel {
            epoch: snapshot.epoch.into(),
            reserved: snapshot.top,
            top: snapshot.top,
            ready: BTreeMap::new(),
            history,
            subscribers: BTreeMap::new(),
            snapshot: None,
            outgoing: VecDeque::new(),
            delivering: false,
            presence: HashMap::new(),
        }
    }

    /// Nothing references it: it can be dropped and loaded again from the store.
    fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.history.is_empty()
            && self.reserved == self.top
            && self.outgoing.is_empty()
            && !self.delivering
    }

    fn trim(&mut self, opts: &NamespaceOptions, now: Instant) {
        while self.history.len() > opts.history_size {
            self.history.pop_front();
        }
        while self.history.front().is_some_and(|(_, exp)| *exp <= now) {
            self.history.pop_front();
        }
    }

    /// Publications after `offset`, if all of them are still in history.
    fn since(&self, offset: u64) -> Option<Vec<Arc<Publication>>> {
        if offset > self.top {
            return None;
        }
        let first = self.history.front().map_or(self.top + 1, |(p, _)| p.offset);
        if offset + 1 < first {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|(p, _)| p.offset > offset)
                .map(|(p, _)| p.clone())
                .collect(),
        )
    }

    /// Releases committed publications in offset order: into history, and queued for the
    /// channel's deliverer with the current subscribers. Returns whether the caller must
    /// start the deliverer ([`Hub::deliver`]).
    #[must_use]
    fn release(&mut self, name: &str, opts: &NamespaceOptions) -> bool {
        let now = Instant::now();
        let mut messages = Vec::new();
        while let Some(entry) = self.ready.first_entry() {
            if *entry.key() != self.top + 1 {
                break;
            }
            self.top += 1;
            let Some(publication) = entry.remove() else {
                continue;
            };
            // Encoded only for someone: a channel published to without subscribers (a
            // backend filling history) skips the JSON and the frame.
            if !self.subscribers.is_empty() {
                let push = Push::Publication {
                    channel: name,
                    epoch: &self.epoch,
                    publication: &publication,
                };
                messages.push(PreparedMessage::text(&push.to_json()));
            }
            if keeps_history(opts) {
                self.history
                    .push_back((publication, now + opts.history_ttl));
            }
        }
        if !messages.is_empty() {
            let subscribers = self.snapshot();
            self.outgoing.push_back(Delivery {
                messages,
                until: subscribers.len(),
                subscribers,
            });
        }
        self.trim(opts, now);
        // The caller starts a deliverer if none is running.
        if !self.outgoing.is_empty() && !self.delivering {
            self.delivering = true;
            return true;
        }
        false
    }

    /// The subscribers as a shared list (rebuilt only after a change).
    fn snapshot(&mut self) -> Arc<[ClientHandle]> {
        self.snapshot
            .get_or_insert_with(|| self.subscribers.values().cloned().collect())
            .clone()
    }

    fn broadcast(&self, message: &PreparedMessage) {
        for handle in self.subscribers.values() {
            handle.push(message.clone());
        }
    }
}

fn keeps_history(opts: &NamespaceOptions) -> bool {
    opts.history_size > 0 && !opts.history_ttl.is_zero()
}

fn retention(opts: &NamespaceOptions) -> Retention {
    Retention {
        size: opts.history_size,
        ttl: opts.history_ttl,
    }
}

fn store_failed(err: StoreError) -> ClientError {
    match err {
        StoreError::MailboxFull(n) => {
            ClientError::mailbox_full(format!("the mailbox is full ({n} messages)"))
        }
        StoreError::Failed(why) => ClientError::internal(format!("storage failed: {why}")),
    }
}

/// The presence key of a connection: its user, or the connection itself if anonymous.
fn presence_key(info: &ClientInfo) -> &str {
    if info.user.is_empty() {
        &info.client
    } else {
        &info.user
    }
}

/// A user's connections.
#[derive(Debug, Default)]
struct User {
    connections: HashMap<u64, ClientHandle>,
    /// Connections still being sent their mailbox, a page per `ack`. New private
    /// messages are not pushed to them live (they are stored, and arrive in a later
    /// page), so every message arrives in order.
    catching_up: std::collections::HashSet<u64>,
    /// Serialises `connect` and `send` for this user (held across store calls).
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// The result of a subscription.
#[derive(Debug, Serialize)]
pub struct Subscribed {
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset.
    pub offset: u64,
    /// Whether the channel keeps history (so positions can be recovered).
    pub recoverable: bool,
    /// With `recover`: whether every missed publication is in `publications`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// With `recover` and `recovered: true`: the missed publications, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Arc<Publication>>,
}

/// A channel's history.
#[derive(Debug, Serialize)]
pub struct History {
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset.
    pub offset: u64,
    /// Publications, oldest first.
    pub publications: Vec<Arc<Publication>>,
    /// With `since`: false when publications after it are no longer all in history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// Where a private message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendStatus {
    /// Queued to the user's live connections (and kept until acknowledged).
    Delivered,
    /// The user is offline: kept in the mailbox until they connect.
    Stored,
}

/// The hub. One per server, shared as `Arc<Hub>`.
#[derive(Debug)]
pub struct Hub {
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
}

impl Hub {
    /// A hub over `store`.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, store: Arc<dyn Store>) -> Self {
        Hub {
            config,
            metrics,
            store,
            channels: Sharded::new(),
            users: Sharded::new(),
            open: Mutex::default(),
            next_client: AtomicU64::new(1),
            started: Instant::now(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Time since the hub started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A fresh connection number.
    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a channel name and returns its namespace options.
    pub fn channel_options(&self, channel: &str) -> Result<&NamespaceOptions, ClientError> {
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
                    Entry::Occupied(mut e) => return Ok(f(e.get_mut())),
                    Entry::Vacant(v) => {
                        if let Some(snapshot) = snapshot.take() {
                            return Ok(f(v.insert(Channel::new(snapshot, opts))));
                        }
                    }
                }
            }
            snapshot = Some(
                self.store
                    .channel(name, retention(opts))
                    .await
                    .map_err(store_failed)?,
            );
        }
    }

    /// Publishes to a channel. The publication is acknowledged (this returns) only after
    /// the store committed it; it reaches subscribers in offset order.
    pub async fn publish(
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
    pub async fn publish_then(
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
    /// before it) to history and the channel's deliverer. `None` if the channel or its
    /// namespace went away meanwhile.
    async fn commit(
        self: &Arc<Self>,
        name: &str,
        publication: Arc<Publication>,
        write: Option<impl Future<Output = Result<(), StoreError>>>,
    ) -> Option<Result<u64, StoreError>> {
        let opts = self.channel_options(name).ok()?;
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
            ch.top < offset && ch.release(name, opts)
        };
        if start_deliverer {
            let (hub, name) = (self.clone(), name.to_owned());
            tokio::spawn(async move { hub.deliver(&name).await });
        }
        Some(result.map(|()| offset))
    }

    /// Subscribes a connection. Under the channel's lock: recovers what the client missed,
    /// registers it, queues `reply` (built from the result) to it, then announces the join.
    pub async fn subscribe(
        &self,
        channel: &str,
        handle: &ClientHandle,
        info: &ClientInfo,
        recover: Option<&StreamPosition>,
        reply: impl FnOnce(&Subscribed) -> String,
    ) -> Result<(), ClientError> {
        let opts = self.channel_options(channel)?;
        let mut reply = Some(reply);
        self.with_channel(channel, opts, |ch| {
            if ch.subscribers.contains_key(&handle.id) {
                return Err(ClientError::already_subscribed(format!(
                    "already subscribed to {channel:?}"
                )));
            }
            ch.trim(opts, Instant::now());
            let recovered = recover.map(|pos| {
                if *pos.epoch == *ch.epoch {
                    ch.since(pos.offset)
                } else {
                    None
                }
            });
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
            let entry = ch
                .presence
                .entry(presence_key(info).to_owned())
                .or_insert_with(|| PresenceEntry {
                    user: info.user.clone(),
                    info: info.info.clone(),
                    connections: 0,
                });
            entry.connections += 1;
            if entry.connections == 1 && opts.join_leave {
                let push = Push::Join { channel, info };
                ch.broadcast(&PreparedMessage::text(&push.to_json()));
            }
            Ok(())
        })
        .await?
    }

    /// Unsubscribes a connection; announces the leave when it was the user's last one.
    /// Returns whether it was subscribed.
    pub fn unsubscribe(&self, channel: &str, client: u64, info: &ClientInfo) -> bool {
        let join_leave = self
            .config
            .channel_options(channel)
            .is_some_and(|o| o.join_leave);
        let mut shard = self.channels.lock(channel);
        let Some(ch) = shard.get_mut(channel) else {
            return false;
        };
        ch.snapshot = None;
        if ch.subscribers.remove(&client).is_none() {
            return false;
        }
        self.metrics.subscriptions.add(-1);
        let key = presence_key(info);
        if let Some(entry) = ch.presence.get_mut(key) {
            entry.connections -= 1;
            if entry.connections == 0 {
                ch.presence.remove(key);
                if join_leave {
                    let push = Push::Leave { channel, info };
                    ch.broadcast(&PreparedMessage::text(&push.to_json()));
                }
            }
        }
        if ch.is_idle() {
            shard.remove(channel);
        }
        true
    }

    /// A channel's history: the latest `limit`, or (with `since`) what followed a position.
    pub async fn history(
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
        let limit = limit.unwrap_or(usize::MAX);
        self.with_channel(channel, opts, |ch| {
            ch.trim(opts, Instant::now());
            let (publications, complete) = match since {
                Some(pos) => {
                    let found = (*pos.epoch == *ch.epoch)
                        .then(|| ch.since(pos.offset))
                        .flatten();
                    let complete = found.is_some();
                    let mut pubs = found.unwrap_or_default();
                    pubs.truncate(limit);
                    (pubs, Some(complete))
                }
                None => {
                    let skip = ch.history.len().saturating_sub(limit);
                    (
                        ch.history
                            .iter()
                            .skip(skip)
                            .map(|(p, _)| p.clone())
                            .collect(),
                        None,
                    )
                }
            };
            History {
                epoch: ch.epoch.to_string(),
                offset: ch.top,
                publications,
                complete,
            }
        })
        .await
    }

    /// Who is subscribed to a channel: presence key → user, info and connection count.
    pub fn presence(&self, channel: &str) -> Result<serde_json::Value, ClientError> {
        let opts = self.channel_options(channel)?;
        if !opts.presence {
            return Err(ClientError::not_available(format!(
                "no presence in {channel:?}"
            )));
        }
        let shard = self.channels.lock(channel);
        let presence = shard.get(channel).map(|ch| &ch.presence);
        Ok(serde_json::json!({ "presence": presence.cloned().unwrap_or_default() }))
    }

    /// Active channels (with at least one subscriber) and their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
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

    fn user_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.users
            .lock(user)
            .entry(user.to_owned())
            .or_default()
            .lock
            .clone()
    }

    /// Registers a user's connection, queues `reply`, then the first page of the user's
    /// pending mailbox, all under the user's lock. Returns the last mailbox id queued if
    /// more pages remain (the connection gets them one per `ack`, see
    /// [`Hub::mailbox_page`]).
    pub async fn connect_user(
        &self,
        user: &str,
        handle: &ClientHandle,
        reply: String,
    ) -> Result<Option<u64>, ClientError> {
        let lock = self.user_lock(user);
        let _serial = lock.lock().await;
        handle.push(PreparedMessage::text(&reply));
        self.users
            .lock(user)
            .entry(user.to_owned())
            .or_default()
            .connections
            .insert(handle.id, handle.clone());
        if user.is_empty() {
            return Ok(None);
        }
        self.push_page(user, handle, 0).await
    }

    /// Queues the next page of mailbox messages after id `after` to a connection that is
    /// catching up. Returns the last id queued if more remain.
    pub async fn mailbox_page(
        &self,
        user: &str,
        handle: &ClientHandle,
        after: u64,
    ) -> Result<Option<u64>, ClientError> {
        let lock = self.user_lock(user);
        let _serial = lock.lock().await;
        self.push_page(user, handle, after).await
    }

    /// Queues pending messages after `after` while they fit in half the connection's
    /// outbox (the other half stays for live traffic), and at least one. The caller holds
    /// the user's lock.
    async fn push_page(
        &self,
        user: &str,
        handle: &ClientHandle,
        after: u64,
    ) -> Result<Option<u64>, ClientError> {
        let pending = self
            .store
            .mailbox_pending(user)
            .await
            .map_err(store_failed)?;
        let pending: Vec<_> = pending.into_iter().filter(|m| m.id > after).collect();
        let limits = &self.config.limits;
        let (max_messages, max_bytes) = (limits.outbox_messages / 2, limits.outbox_bytes / 2);
        let (mut taken, mut bytes) = (0, 0);
        for message in &pending {
            let frame = PreparedMessage::text(&Push::Message { message }.to_json());
            let len = frame.as_bytes().len();
            if taken > 0 && (taken >= max_messages || bytes + len > max_bytes) {
                break;
            }
            handle.push(frame);
            (taken, bytes) = (taken + 1, bytes + len);
        }
        let more = taken < pending.len();
        if let Some(entry) = self.users.lock(user).get_mut(user) {
            if more {
                entry.catching_up.insert(handle.id);
            } else {
                entry.catching_up.remove(&handle.id);
            }
        }
        // `taken` is at least 1 when more remain.
        Ok(more.then(|| pending[taken.saturating_sub(1)].id))
    }

    /// Removes a user's connection.
    pub fn disconnect_user(&self, user: &str, client: u64) {
        let mut shard = self.users.lock(user);
        if let Some(entry) = shard.get_mut(user) {
            entry.connections.remove(&client);
            entry.catching_up.remove(&client);
            if entry.connections.is_empty() && Arc::strong_count(&entry.lock) == 1 {
                shard.remove(user);
            }
        }
    }

    /// Sends a private message: stored in the user's mailbox, then queued to every live
    /// connection of the user. It stays in the mailbox until the user acknowledges it, so
    /// a connection lost before reading it loses nothing. A full mailbox refuses messages
    /// for an offline user (error 115); an online user still gets them live, unkept.
    pub async fn send(
        &self,
        user: &str,
        data: Arc<RawValue>,
        from: Option<ClientInfo>,
    ) -> Result<(SendStatus, u64), ClientError> {
        if user.is_empty() {
            return Err(ClientError::bad_request("the recipient user id is empty"));
        }
        let limits = MailboxLimits {
            size: self.config.mailbox.size,
            ttl: self.config.mailbox.ttl,
        };
        let lock = self.user_lock(user);
        let _serial = lock.lock().await;
        let handles: Vec<ClientHandle> = self
            .users
            .lock(user)
            .get(user)
            .map(|u| {
                u.connections
                    .values()
                    .filter(|h| !u.catching_up.contains(&h.id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let online = !handles.is_empty();
        let message = self
            .store
            .mailbox_push(user, from, data, limits, online)
            .await
            .map_err(store_failed)?;
        if !handles.is_empty() {
            let frame = PreparedMessage::text(&Push::Message { message: &message }.to_json());
            for handle in &handles {
                handle.push(frame.clone());
            }
        }
        self.metrics.private_messages.inc();
        let status = if handles.is_empty() {
            SendStatus::Stored
        } else {
            SendStatus::Delivered
        };
        Ok((status, message.id))
    }

    /// Removes a user's mailbox messages up to and including `upto`.
    pub async fn ack(&self, user: &str, upto: u64) -> Result<(), ClientError> {
        self.store
            .mailbox_ack(user, upto)
            .await
            .map_err(store_failed)
    }

    /// Ends every connection of a user. Returns how many there were.
    pub fn disconnect(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        let shard = self.users.lock(user);
        let Some(entry) = shard.get(user) else {
            return 0;
        };
        for handle in entry.connections.values() {
            handle.disconnect(code, reason);
        }
        entry.connections.len()
    }

    /// Drops expired history, and channels and users left idle. Run periodically, off
    /// the hot path.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.channels.each(|map| {
            map.retain(|name, ch| {
                if let Some(opts) = self.config.channel_options(name) {
                    ch.trim(opts, now);
                }
                !ch.is_idle()
            })
        });
        self.users.each(|map| {
            map.retain(|_, user| !user.connections.is_empty() || Arc::strong_count(&user.lock) > 1)
        });
    }

    /// Registers an open connection (see [`Hub::disconnect_all`]).
    pub fn register(&self, handle: &ClientHandle) {
        self.open_connections().insert(handle.id, handle.clone());
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, id: u64) {
        self.open_connections().remove(&id);
    }

    fn open_connections(&self) -> MutexGuard<'_, HashMap<u64, ClientHandle>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every open connection (shutdown).
    pub fn disconnect_all(&self, code: CloseCode, reason: &str) {
        for handle in self.open_connections().values() {
            handle.disconnect(code, reason);
        }
    }
}

/// A random identifier of `bytes` bytes, hex-encoded.
pub fn random_id(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
