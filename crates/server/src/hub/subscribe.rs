//! Subscribing, with recovery of what the client missed (from the history cache, or the
//! store for what the cache no longer holds), and unsubscribing.

use std::sync::Arc;
use std::time::Instant;

use switchboard_ws::PreparedMessage;

use super::channel::{Channel, PresenceKey, Since, keeps_history};
use super::{Fetched, Hub, READ_ATTEMPTS, store_failed};
use crate::engine::HistoryQuery;
use crate::error::ClientError;
use crate::outbox::ClientHandle;
use crate::protocol::{ClientInfo, PresenceEntry, Publication, Push, StreamPosition, Subscribed};

impl Hub {
    /// The publications after `after` (at most `want`), from the cache, or from the cache
    /// and what was `fetched` from the store.
    pub(super) fn since(ch: &Channel, after: u64, want: usize, fetched: Option<&Fetched>) -> Since {
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
        let clustered = self.cluster.get().is_some();
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
                    // In a group of nodes, the join comes back from Redis (see `remote`).
                    let start = !clustered
                        && entry.connections == 1
                        && opts.join_leave
                        && ch.announce(PreparedMessage::text(
                            &Push::Join { channel, info }.to_json(),
                        ));
                    if clustered && (opts.presence || opts.join_leave) {
                        ch.members.insert(handle.id, info.clone());
                    }
                    if start {
                        self.start_deliverer(channel);
                    }
                    Ok(None)
                })
                .await??;
            let Some(after) = step else {
                if let Some(cluster) = self.cluster.get() {
                    if opts.presence || opts.join_leave {
                        cluster.presence_add(channel, info, opts.join_leave);
                    }
                }
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
        let Some(opts) = self.config.channel_options(channel) else {
            return false;
        };
        let join_leave = opts.join_leave;
        let cluster = self.cluster.get();
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
            ch.members.remove(&client);
            let key = PresenceKey::of(info);
            let mut start = false;
            if let Some(entry) = ch.presence.get_mut(&key) {
                entry.connections -= 1;
                if entry.connections == 0 {
                    ch.presence.remove(&key);
                    // In a group of nodes, Redis counts and announces (see `remote`).
                    if join_leave && cluster.is_none() {
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
        if let Some(cluster) = cluster {
            if opts.presence || opts.join_leave {
                cluster.presence_remove(channel, info, join_leave);
            }
        }
        true
    }
}
