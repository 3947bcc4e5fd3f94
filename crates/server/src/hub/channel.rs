//! One channel's state: its stream position, the cache of its recent history, its
//! subscribers, presence, and the publications and announcements waiting for its
//! deliverer. Everything here runs under the channel's shard lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchboard_ws::PreparedMessage;

use super::deliver::Delivery;
use crate::config::NamespaceOptions;
use crate::engine::{ChannelSnapshot, Retention};
use crate::outbox::ClientHandle;
use crate::protocol::{ClientInfo, PresenceEntry, Publication, Push, now_ms};

/// Bytes a cached publication is counted for on top of its data (its record, the queue
/// slot, the publisher's ids): an estimate, so that many tiny publications are not free.
const ENTRY_OVERHEAD: usize = 96;

/// Whether a namespace keeps history at all.
pub(super) fn keeps_history(opts: &NamespaceOptions) -> bool {
    opts.history_size > 0 && !opts.history_ttl.is_zero()
}

/// The store's view of a namespace's retention.
pub(super) fn retention(opts: &NamespaceOptions) -> Retention {
    Retention {
        size: opts.history_size,
        ttl: opts.history_ttl,
    }
}

/// Bytes a publication is counted for in the cache.
fn cost(publication: &Publication) -> usize {
    let info = publication.info.as_ref().map_or(0, |i| {
        i.user.len() + i.client.len() + i.info.as_ref().map_or(0, |v| v.get().len())
    });
    publication.data.get().len() + info + ENTRY_OVERHEAD
}

/// The newest publications of a channel, kept in memory so that recovery and `history`
/// rarely read the store. The store holds the whole retained history; the cache holds a
/// suffix of it, within the hub's byte budget (`storage.history_cache_bytes`).
#[derive(Debug)]
pub(super) struct HistoryCache {
    /// Oldest first, with their expiry.
    entries: VecDeque<(Arc<Publication>, Instant)>,
    /// Bytes of `entries`, as [`cost`] counts them.
    bytes: usize,
    /// Whether `entries` holds every publication the store retains: nothing older than
    /// its front is left in the store. False once the budget evicted some.
    complete: bool,
    /// Every channel's cached bytes together (the hub's), kept current by this cache.
    total: Arc<AtomicUsize>,
}

/// What the cache can tell of the publications after an offset.
#[derive(Debug)]
pub(super) enum Since {
    /// All of them (possibly none), oldest first.
    Found(Vec<Arc<Publication>>),
    /// Some are no longer retained anywhere: recovery is impossible.
    Gone,
    /// The cache does not reach back far enough: the store may have them.
    AskStore,
}

impl HistoryCache {
    fn new(total: Arc<AtomicUsize>) -> Self {
        HistoryCache {
            entries: VecDeque::new(),
            bytes: 0,
            complete: true,
            total,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn is_complete(&self) -> bool {
        self.complete
    }

    fn push(&mut self, publication: Arc<Publication>, expires: Instant) {
        let bytes = cost(&publication);
        self.bytes += bytes;
        self.total.fetch_add(bytes, Ordering::Relaxed);
        self.entries.push_back((publication, expires));
    }

    fn pop_front(&mut self) -> Option<Arc<Publication>> {
        let (publication, _) = self.entries.pop_front()?;
        let bytes = cost(&publication);
        self.bytes -= bytes;
        self.total.fetch_sub(bytes, Ordering::Relaxed);
        Some(publication)
    }

    /// Drops what the store drops too: past the retention size, or expired.
    pub(super) fn trim(&mut self, opts: &NamespaceOptions, now: Instant) {
        while self.entries.len() > opts.history_size {
            self.pop_front();
        }
        while self.entries.front().is_some_and(|(_, exp)| *exp <= now) {
            self.pop_front();
        }
    }

    /// Drops the oldest entries while `over` says the budget is exceeded; the store
    /// still has them.
    pub(super) fn evict_while(&mut self, over: impl Fn() -> bool) {
        while over() && self.pop_front().is_some() {
            self.complete = false;
        }
    }

    /// Drops every entry (the store still has them).
    pub(super) fn clear(&mut self) {
        self.evict_while(|| true);
    }

    /// The cached publications after `after`, up to `top`. `Gone` when some of them are
    /// no longer retained; `AskStore` when they may be in the store only.
    pub(super) fn since(&self, after: u64, top: u64) -> Since {
        if after > top {
            return Since::Gone;
        }
        if after == top {
            return Since::Found(Vec::new());
        }
        let first = self.entries.front().map(|(p, _)| p.offset);
        match first {
            Some(first) if first <= after + 1 => Since::Found(
                self.entries
                    .iter()
                    .filter(|(p, _)| p.offset > after)
                    .map(|(p, _)| p.clone())
                    .collect(),
            ),
            _ if self.complete => Since::Gone,
            _ => Since::AskStore,
        }
    }

    /// The newest `limit` cached publications below offset `before`, oldest first, when
    /// the cache can tell: it holds `limit` of them, or everything the store keeps.
    /// `None`: the store must be read.
    pub(super) fn before(&self, before: u64, limit: usize) -> Option<Vec<Arc<Publication>>> {
        let below = self.entries.partition_point(|(p, _)| p.offset < before);
        if below < limit && !self.complete {
            return None;
        }
        Some(
            self.entries
                .range(below.saturating_sub(limit)..below)
                .map(|(p, _)| p.clone())
                .collect(),
        )
    }

    /// The newest `limit` cached publications, oldest first.
    pub(super) fn newest(&self, limit: usize) -> Vec<Arc<Publication>> {
        let skip = self.entries.len().saturating_sub(limit);
        self.entries
            .iter()
            .skip(skip)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

impl Drop for HistoryCache {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Who a presence entry stands for. Users and anonymous connections are kept apart, so a
/// token whose `sub` equals an anonymous connection's id never merges with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum PresenceKey {
    /// A user's connections (by user id).
    User(String),
    /// One anonymous connection (by client id).
    Anonymous(String),
}

impl PresenceKey {
    pub(super) fn of(info: &ClientInfo) -> PresenceKey {
        if info.user.is_empty() {
            PresenceKey::Anonymous(info.client.clone())
        } else {
            PresenceKey::User(info.user.clone())
        }
    }
}

/// What [`Channel::arrive`] asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Nothing (a duplicate, or waiting for a gap being filled).
    Nothing,
    /// Released: start the deliverer if true.
    Deliver(bool),
    /// Offsets `after + 1 .. before` are missing: read them from the history.
    Gap {
        /// The last offset released.
        after: u64,
        /// The first offset received past the gap.
        before: u64,
    },
}

/// A channel's state.
#[derive(Debug)]
pub(super) struct Channel {
    /// Identifies this incarnation of the channel's stream (from the store): offsets of
    /// another epoch mean nothing here.
    pub(super) epoch: Arc<str>,
    /// The last offset handed to a publisher.
    pub(super) reserved: u64,
    /// The last offset released (in history and queued to subscribers).
    pub(super) top: u64,
    /// The highest offset the store acknowledged (or the store's top when loaded). While
    /// it is below `top` (the newest publications failed to store), the channel stays in
    /// memory, so that reloading it cannot hand out an offset a subscriber was told of.
    pub(super) stored_top: u64,
    /// Publications committed before an earlier one: offset → publication, or `None` if
    /// its write failed (the offset is skipped).
    pub(super) ready: BTreeMap<u64, Option<Arc<Publication>>>,
    /// Recent publications (see [`HistoryCache`]).
    pub(super) cache: HistoryCache,
    /// By connection number, so a broadcast walks connections in the order they were
    /// opened: their sockets, file table entries and outboxes were allocated in that order,
    /// and walking them in it rather than in hash order cut the server's CPU per delivery
    /// (cache and TLB misses in the kernel's send path) in a 10,000-subscriber fan-out.
    pub(super) subscribers: BTreeMap<u64, ClientHandle>,
    /// `subscribers` as a list shared with deliveries; `None` after a change.
    pub(super) snapshot: Option<Arc<[ClientHandle]>>,
    /// Released publications and join/leave announcements waiting for the channel's
    /// deliverer, in order.
    pub(super) outgoing: VecDeque<Delivery>,
    /// Whether a deliverer task is running for this channel (at most one, so deliveries
    /// keep their order).
    pub(super) delivering: bool,
    /// Connections per presence key.
    pub(super) presence: HashMap<PresenceKey, PresenceEntry>,
    /// In a group of nodes, the subscribers of a channel with presence by connection
    /// number, so that this node refreshes their entries in Redis (empty on one node).
    pub(super) members: HashMap<u64, ClientInfo>,
    /// In a group of nodes, whether a gap in the offsets this node received is being
    /// filled from the history.
    pub(super) filling: bool,
    /// When it was last used: idle channels are dropped from memory after a while, the
    /// least recently used caches first when the budget is exceeded.
    pub(super) last_used: Instant,
}

impl Channel {
    /// A channel loaded from the store. The snapshot's publications keep the expiry they
    /// have in the store: their age counts from `time`.
    pub(super) fn new(
        snapshot: ChannelSnapshot,
        opts: &NamespaceOptions,
        total: Arc<AtomicUsize>,
    ) -> Self {
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut cache = HistoryCache::new(total);
        cache.complete = snapshot.complete;
        for publication in snapshot.recent {
            let age = Duration::from_millis(now_ms.saturating_sub(publication.time));
            if let Some(left) = opts.history_ttl.checked_sub(age) {
                cache.push(publication, now + left);
            }
        }
        cache.trim(opts, now);
        Channel {
            epoch: snapshot.epoch.into(),
            reserved: snapshot.top,
            top: snapshot.top,
            stored_top: snapshot.top,
            ready: BTreeMap::new(),
            cache,
            subscribers: BTreeMap::new(),
            snapshot: None,
            outgoing: VecDeque::new(),
            delivering: false,
            presence: HashMap::new(),
            members: HashMap::new(),
            filling: false,
            last_used: now,
        }
    }

    /// Nothing but the store needs it: it can be dropped and loaded again later.
    pub(super) fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.reserved == self.top
            && self.stored_top >= self.top
            && self.outgoing.is_empty()
            && !self.delivering
    }

    /// Releases committed publications in offset order: into the cache (within the
    /// budget: the over-budget check evicts this channel's oldest first), and queued for
    /// the channel's deliverer with the current subscribers. Returns whether the caller
    /// must start the deliverer.
    #[must_use]
    pub(super) fn release(
        &mut self,
        name: &str,
        opts: &NamespaceOptions,
        over_budget: impl Fn() -> bool,
    ) -> bool {
        let now = Instant::now();
        self.last_used = now;
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
                    ephemeral: false,
                };
                messages.push(PreparedMessage::text(&push.to_json()));
            }
            if keeps_history(opts) {
                self.cache.push(publication, now + opts.history_ttl);
            }
        }
        self.cache.trim(opts, now);
        self.cache.evict_while(over_budget);
        if !messages.is_empty() {
            let subscribers = self.snapshot();
            self.outgoing.push_back(Delivery {
                messages,
                until: subscribers.len(),
                subscribers: Some(subscribers),
            });
        }
        self.start_deliverer()
    }

    /// Takes a publication another node (or this one) published, as Redis sent it to
    /// this node: what comes in offset order is released, what is already here is
    /// ignored, and a gap asks the caller to fill it from the history. A new epoch
    /// replaces the stream (Redis lost it, or it expired): adopted silently while this
    /// node has seen nothing of the old one.
    pub(super) fn arrive(
        &mut self,
        name: &str,
        opts: &NamespaceOptions,
        epoch: &str,
        publication: Publication,
        over_budget: impl Fn() -> bool,
    ) -> Arrival {
        if *epoch != *self.epoch {
            if self.top != 0 || !self.ready.is_empty() || self.cache.len() != 0 {
                self.ready.clear();
                self.cache.clear();
                self.filling = false;
            }
            self.epoch = epoch.into();
            (self.top, self.reserved, self.stored_top) = (0, 0, 0);
        }
        let offset = publication.offset;
        if offset <= self.top || self.ready.contains_key(&offset) {
            return Arrival::Nothing;
        }
        self.ready.insert(offset, Some(Arc::new(publication)));
        if offset == self.top + 1 {
            return Arrival::Deliver(self.release_arrived(name, opts, over_budget));
        }
        if self.filling {
            return Arrival::Nothing;
        }
        self.filling = true;
        Arrival::Gap {
            after: self.top,
            before: offset,
        }
    }

    /// [`Channel::release`] in a group of nodes, where what is released is stored.
    pub(super) fn release_arrived(
        &mut self,
        name: &str,
        opts: &NamespaceOptions,
        over_budget: impl Fn() -> bool,
    ) -> bool {
        let start = self.release(name, opts, over_budget);
        (self.reserved, self.stored_top) = (self.top, self.top);
        start
    }

    /// Queues a join or leave push for whoever is subscribed when the deliverer reaches
    /// it, behind the publications released before it. Announcements queued back to back
    /// go out together (a mass disconnect costs one round, not one per leave). Returns
    /// whether the caller must start the deliverer.
    #[must_use]
    pub(super) fn announce(&mut self, message: PreparedMessage) -> bool {
        match self.outgoing.back_mut() {
            Some(last) if last.subscribers.is_none() => last.messages.push(message),
            _ => self.outgoing.push_back(Delivery {
                messages: vec![message],
                subscribers: None,
                until: 0,
            }),
        }
        self.start_deliverer()
    }

    /// Whether a deliverer must be started for what is queued (marking it started).
    fn start_deliverer(&mut self) -> bool {
        if !self.outgoing.is_empty() && !self.delivering {
            self.delivering = true;
            return true;
        }
        false
    }

    /// The subscribers as a shared list (rebuilt only after a change).
    pub(super) fn snapshot(&mut self) -> Arc<[ClientHandle]> {
        self.snapshot
            .get_or_insert_with(|| self.subscribers.values().cloned().collect())
            .clone()
    }
}
