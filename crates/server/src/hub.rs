//! The hub: channels with their subscribers, presence and recent history; users with their
//! connections and offline mailboxes.
//!
//! State lives in shards of `std::sync::Mutex<HashMap>` (no lock is held across an
//! `.await`). Every operation on a channel happens under its shard's lock, which is what
//! makes recovery exact: a publication is appended to history and queued to subscribers in
//! one step, and a subscription reads history, registers, and queues its reply in one
//! step, so a recovering client gets each missed publication once and in order, followed
//! by the live ones. Messages are encoded once per publication ([`PreparedMessage`]) and
//! the same bytes are queued to every subscriber.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use switchboard_ws::{CloseCode, PreparedMessage};

use crate::config::{Config, NamespaceOptions, channel_char};
use crate::error::ClientError;
use crate::metrics::Metrics;
use crate::outbox::ClientHandle;
use crate::wire::{ClientInfo, PrivateMessage, Publication, Push, StreamPosition, now_ms};

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
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % SHARDS];
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
    /// Identifies this incarnation of the channel's stream: a channel created again
    /// (after it emptied) gets a new epoch, so old offsets are never mistaken for new ones.
    epoch: Arc<str>,
    /// Offset of the latest publication (0: none yet).
    top: u64,
    /// Recent publications, oldest first, with their expiry.
    history: VecDeque<(Arc<Publication>, Instant)>,
    subscribers: HashMap<u64, Subscriber>,
    /// Connections per presence key (user id, or client id for anonymous connections).
    presence: HashMap<String, PresenceEntry>,
}

#[derive(Debug)]
struct Subscriber {
    handle: ClientHandle,
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
    fn new() -> Self {
        Channel {
            epoch: random_id(8).into(),
            top: 0,
            history: VecDeque::new(),
            subscribers: HashMap::new(),
            presence: HashMap::new(),
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.to_string(),
        }
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

    fn broadcast(&self, message: &PreparedMessage, metrics: &Metrics) {
        for sub in self.subscribers.values() {
            if sub.handle.push(message.clone()) {
                metrics.messages_out.inc();
                metrics.bytes_out.add(message.as_bytes().len() as u64);
            }
        }
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

/// An offline mailbox.
#[derive(Debug, Default)]
struct Mailbox {
    messages: VecDeque<(Arc<PrivateMessage>, Instant)>,
}

/// A user's live connections and mailbox.
#[derive(Debug, Default)]
struct User {
    connections: HashMap<u64, ClientHandle>,
    mailbox: Mailbox,
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

/// The hub. One per server; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Hub {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    channels: Sharded<Channel>,
    users: Sharded<User>,
    next_client: AtomicU64,
    next_message: AtomicU64,
    started: Instant,
}

impl Hub {
    /// A hub with the given configuration.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        Hub {
            config,
            metrics,
            channels: Sharded::new(),
            users: Sharded::new(),
            next_client: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
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
        if channel.is_empty() || channel.len() > MAX_CHANNEL_LEN || !channel.chars().all(channel_char)
        {
            return Err(ClientError::unknown_channel(format!(
                "invalid channel name {channel:?}: use up to {MAX_CHANNEL_LEN} letters, digits and _-.:@/="
            )));
        }
        self.config.channel_options(channel).ok_or_else(|| {
            ClientError::unknown_channel(format!("channel {channel:?} is in no configured namespace"))
        })
    }

    /// Publishes to a channel: appends to history and queues the publication to every
    /// subscriber, encoded once. Returns its position.
    pub fn publish(
        &self,
        channel: &str,
        data: Arc<RawValue>,
        info: Option<ClientInfo>,
    ) -> Result<StreamPosition, ClientError> {
        let opts = self.channel_options(channel)?;
        let now = Instant::now();
        let mut shard = self.channels.lock(channel);
        let ch = shard.entry(channel.to_owned()).or_insert_with(Channel::new);
        ch.top += 1;
        let publication = Arc::new(Publication {
            offset: ch.top,
            data,
            info,
            time: now_ms(),
        });
        let message = PreparedMessage::text(
            &Push::Publication {
                channel,
                epoch: &ch.epoch,
                publication: &publication,
            }
            .to_json(),
        );
        if opts.history_size > 0 && !opts.history_ttl.is_zero() {
            ch.history.push_back((publication, now + opts.history_ttl));
            ch.trim(opts, now);
        }
        ch.broadcast(&message, &self.metrics);
        self.metrics.publications.inc();
        Ok(ch.position())
    }

    /// Subscribes a connection. Under the channel's lock: recovers what the client missed,
    /// registers it, queues `reply` (built from the result) to it, then announces the join.
    pub fn subscribe(
        &self,
        channel: &str,
        handle: &ClientHandle,
        info: &ClientInfo,
        recover: Option<&StreamPosition>,
        reply: impl FnOnce(&Subscribed) -> String,
    ) -> Result<(), ClientError> {
        let opts = self.channel_options(channel)?;
        let now = Instant::now();
        let mut shard = self.channels.lock(channel);
        let ch = shard.entry(channel.to_owned()).or_insert_with(Channel::new);
        if ch.subscribers.contains_key(&handle.id) {
            return Err(ClientError::already_subscribed(format!("already subscribed to {channel:?}")));
        }
        ch.trim(opts, now);
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
            recoverable: opts.history_size > 0 && !opts.history_ttl.is_zero(),
            recovered: recovered.as_ref().map(Option::is_some),
            publications: recovered.flatten().unwrap_or_default(),
        };
        handle.push(PreparedMessage::text(&reply(&result)));
        ch.subscribers.insert(
            handle.id,
            Subscriber {
                handle: handle.clone(),
            },
        );
        self.metrics.subscriptions.add(1);
        let key = presence_key(info).to_owned();
        let entry = ch.presence.entry(key).or_insert_with(|| PresenceEntry {
            user: info.user.clone(),
            info: info.info.clone(),
            connections: 0,
        });
        entry.connections += 1;
        if entry.connections == 1 && opts.join_leave {
            let push = Push::Join { channel, info };
            ch.broadcast(&PreparedMessage::text(&push.to_json()), &self.metrics);
        }
        Ok(())
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
                    ch.broadcast(&PreparedMessage::text(&push.to_json()), &self.metrics);
                }
            }
        }
        if ch.subscribers.is_empty() && ch.history.is_empty() {
            shard.remove(channel);
        }
        true
    }

    /// A channel's history: the latest `limit`, or (with `since`) what followed a position.
    pub fn history(
        &self,
        channel: &str,
        limit: Option<usize>,
        since: Option<&StreamPosition>,
    ) -> Result<History, ClientError> {
        let opts = self.channel_options(channel)?;
        if opts.history_size == 0 || opts.history_ttl.is_zero() {
            return Err(ClientError::not_available(format!("no history in {channel:?}")));
        }
        let mut shard = self.channels.lock(channel);
        let Some(ch) = shard.get_mut(channel) else {
            return Ok(History {
                epoch: String::new(),
                offset: 0,
                publications: Vec::new(),
                complete: since.map(|s| s.offset == 0),
            });
        };
        ch.trim(opts, Instant::now());
        let limit = limit.unwrap_or(usize::MAX);
        let (publications, complete) = match since {
            Some(pos) => {
                let found = (*pos.epoch == *ch.epoch).then(|| ch.since(pos.offset)).flatten();
                let complete = found.is_some();
                let mut pubs = found.unwrap_or_default();
                pubs.truncate(limit);
                (pubs, Some(complete))
            }
            None => {
                let skip = ch.history.len().saturating_sub(limit);
                (ch.history.iter().skip(skip).map(|(p, _)| p.clone()).collect(), None)
            }
        };
        Ok(History {
            epoch: ch.epoch.to_string(),
            offset: ch.top,
            publications,
            complete,
        })
    }

    /// Who is subscribed to a channel: presence key → info and connection count.
    pub fn presence(&self, channel: &str) -> Result<serde_json::Value, ClientError> {
        let opts = self.channel_options(channel)?;
        if !opts.presence {
            return Err(ClientError::not_available(format!("no presence in {channel:?}")));
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

    /// Registers a user's connection and queues its pending mailbox messages after
    /// `reply`, all under the user's lock so a concurrent `send` is neither lost nor
    /// duplicated nor reordered.
    pub fn connect_user(&self, user: &str, handle: &ClientHandle, reply: String) {
        let mut shard = self.users.lock(user);
        let entry = shard.entry(user.to_owned()).or_default();
        handle.push(PreparedMessage::text(&reply));
        let now = Instant::now();
        entry.mailbox.messages.retain(|(_, exp)| *exp > now);
        for (message, _) in &entry.mailbox.messages {
            handle.push(PreparedMessage::text(&Push::Message { message }.to_json()));
        }
        entry.connections.insert(handle.id, handle.clone());
    }

    /// Removes a user's connection.
    pub fn disconnect_user(&self, user: &str, client: u64) {
        let mut shard = self.users.lock(user);
        if let Some(entry) = shard.get_mut(user) {
            entry.connections.remove(&client);
            if entry.connections.is_empty() && entry.mailbox.messages.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Sends a private message: queued to every live connection of the user and kept in
    /// the mailbox until acknowledged, or only kept when the user is offline.
    pub fn send(
        &self,
        user: &str,
        data: Arc<RawValue>,
        from: Option<ClientInfo>,
    ) -> Result<(SendStatus, u64), ClientError> {
        if user.is_empty() {
            return Err(ClientError::bad_request("the recipient user id is empty"));
        }
        let limits = &self.config.mailbox;
        let now = Instant::now();
        let mut shard = self.users.lock(user);
        let entry = shard.entry(user.to_owned()).or_default();
        entry.mailbox.messages.retain(|(_, exp)| *exp > now);
        let online = !entry.connections.is_empty();
        let full = entry.mailbox.messages.len() >= limits.size;
        if full && !online {
            return Err(ClientError::mailbox_full(format!(
                "the mailbox of {user:?} is full ({} messages)",
                limits.size
            )));
        }
        let message = Arc::new(PrivateMessage {
            id: self.next_message.fetch_add(1, Ordering::Relaxed),
            from,
            data,
            time: now_ms(),
        });
        let id = message.id;
        if online {
            let frame = PreparedMessage::text(&Push::Message { message: &message }.to_json());
            for handle in entry.connections.values() {
                handle.push(frame.clone());
            }
        }
        if !full {
            entry.mailbox.messages.push_back((message, now + limits.ttl));
        }
        self.metrics.private_messages.inc();
        Ok((if online { SendStatus::Delivered } else { SendStatus::Stored }, id))
    }

    /// Removes a user's mailbox messages up to and including `upto`.
    pub fn ack(&self, user: &str, upto: u64) {
        let mut shard = self.users.lock(user);
        if let Some(entry) = shard.get_mut(user) {
            entry.mailbox.messages.retain(|(m, _)| m.id > upto);
        }
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

    /// Drops expired history and mailbox messages, and channels and users left empty.
    /// Run periodically, off the hot path.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.channels.each(|map| {
            map.retain(|name, ch| {
                if let Some(opts) = self.config.channel_options(name) {
                    ch.trim(opts, now);
                }
                !(ch.subscribers.is_empty() && ch.history.is_empty())
            })
        });
        self.users.each(|map| {
            map.retain(|_, user| {
                user.mailbox.messages.retain(|(_, exp)| *exp > now);
                !(user.connections.is_empty() && user.mailbox.messages.is_empty())
            })
        });
    }

    /// Ends every connection (shutdown).
    pub fn disconnect_all(&self, code: CloseCode, reason: &str) {
        self.users.each(|map| {
            for user in map.values() {
                for handle in user.connections.values() {
                    handle.disconnect(code, reason);
                }
            }
        });
    }
}

/// A random identifier of `bytes` bytes, hex-encoded.
pub fn random_id(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}
