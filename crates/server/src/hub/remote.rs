//! In a group of nodes (`engine = "redis"`): what the group sends this node. Publications
//! arrive in the order Redis took them and are released in offset order, a gap filled
//! from the history; joins, leaves and ephemeral publications are announced as they come.
//! A channel being loaded (watched, its snapshot not read yet) keeps what arrives for it
//! meanwhile, so nothing published between the two is missed.
//!
//! When continuity cannot hold (the history no longer has what a gap missed, or Redis lost
//! the stream and a new epoch began), the channel's subscribers are disconnected with 4008
//! ("reconnect"): they come back, subscribe with their position, and are told
//! `recovered: false`, as after any loss they could not recover from.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use switchboard_ws::PreparedMessage;

use super::Hub;
use super::channel::{Arrival, Channel, keeps_history};
use crate::cluster::{ChannelEvent, Events};
use crate::engine::HistoryQuery;
use crate::error::close;
use crate::protocol::{PrivateMessage, Publication, Push};
use crate::util::LogLimiter;

/// Reads of the store for a catch-up or a gap, at most, and the pause between them (grows).
const CATCH_UP_ATTEMPTS: u32 = 5;
const CATCH_UP_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// One warning per this interval at most for streams whose continuity broke.
static BROKEN: LogLimiter = LogLimiter::new(std::time::Duration::from_secs(10));

/// Publications kept at most for one channel while it loads; past it, the gap is read
/// from the history.
const EARLY_MAX: usize = 1024;

/// Channels being loaded, with what arrived for them meanwhile.
#[derive(Debug, Default)]
pub(super) struct Loading(HashMap<String, (usize, Vec<(String, Publication)>)>);

/// The hub as the group's events reach it.
#[derive(Debug)]
pub(crate) struct Remote(pub(crate) Weak<Hub>);

impl Events for Remote {
    fn channel_event(&self, channel: &str, event: ChannelEvent) {
        if let Some(hub) = self.0.upgrade() {
            hub.remote_event(channel, event);
        }
    }

    fn observed(
        &self,
        channel: &str,
        offset: u64,
        time: u64,
        data: &Arc<serde_json::value::RawValue>,
    ) {
        if let Some(hub) = self.0.upgrade() {
            if let Some(observers) = hub.observers.get().filter(|o| o.watch(channel)) {
                observers.tell(channel, offset, time, data);
            }
        }
    }

    fn answer(&self, ask: &crate::cluster::Ask) -> serde_json::Value {
        self.0
            .upgrade()
            .map_or(serde_json::Value::Null, |hub| hub.answer(ask))
    }

    fn user_message(&self, user: &str, message: Arc<PrivateMessage>) {
        if let Some(hub) = self.0.upgrade() {
            hub.deliver_message(user, message);
        }
    }

    fn resubscribed(&self) {
        if let Some(hub) = self.0.upgrade() {
            hub.catch_up();
        }
    }

    fn lost(&self) {
        if let Some(hub) = self.0.upgrade() {
            hub.metrics.redis_disconnects.inc();
        }
    }
}

impl Hub {
    fn loading(&self) -> std::sync::MutexGuard<'_, Loading> {
        self.loading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a channel as loading (before it is watched).
    pub(super) fn begin_load(&self, name: &str) {
        self.loading().0.entry(name.to_owned()).or_default().0 += 1;
    }

    /// Ends a load; returns what arrived meanwhile (when it was the last load).
    pub(super) fn end_load(&self, name: &str) -> Vec<(String, Publication)> {
        let mut loading = self.loading();
        let Some(entry) = loading.0.get_mut(name) else {
            return Vec::new();
        };
        entry.0 -= 1;
        if entry.0 > 0 {
            return std::mem::take(&mut entry.1);
        }
        loading.0.remove(name).map(|e| e.1).unwrap_or_default()
    }

    /// Hands what arrived while the channel loaded to the channel just loaded; returns
    /// whether to start the deliverer, and a gap to fill.
    pub(super) fn adopt_early(
        &self,
        ch: &mut Channel,
        name: &str,
        early: Vec<(String, Publication)>,
    ) -> (bool, Option<(u64, u64)>) {
        let Some(opts) = self.config.channel_options(name) else {
            return (false, None);
        };
        let (mut start, mut gap) = (false, None);
        for (epoch, publication) in early {
            match ch.arrive(name, opts, &epoch, publication, self.over_budget()) {
                Arrival::Nothing => {}
                Arrival::Deliver(s) => start |= s,
                Arrival::Gap { after, before } => gap = Some((after, before)),
            }
        }
        (start, gap)
    }

    fn remote_event(self: &Arc<Self>, channel: &str, event: ChannelEvent) {
        let Some(opts) = self.config.channel_options(channel) else {
            return;
        };
        let mut gap = None;
        let mut broken = false;
        let start = {
            let mut shard = self.channels.lock(channel);
            let Some(ch) = shard.get_mut(channel) else {
                drop(shard);
                if let ChannelEvent::Publication { epoch, publication } = event {
                    if let Some(entry) = self.loading().0.get_mut(channel) {
                        if entry.1.len() < EARLY_MAX {
                            entry.1.push((epoch, publication));
                        }
                    }
                }
                return;
            };
            match event {
                ChannelEvent::Publication { epoch, publication } => {
                    // A new epoch after this node saw the old one: the stream was lost.
                    broken = *epoch != *ch.epoch && ch.top != 0 && keeps_history(opts);
                    if broken {
                        Self::break_continuity(ch, channel, "a new epoch began");
                    }
                    match ch.arrive(channel, opts, &epoch, publication, self.over_budget()) {
                        Arrival::Nothing => false,
                        Arrival::Deliver(start) => start,
                        Arrival::Gap { after, before } => {
                            gap = Some((ch.epoch.to_string(), after, before));
                            false
                        }
                    }
                }
                ChannelEvent::Join(info) => {
                    opts.join_leave
                        && ch.announce(PreparedMessage::text(
                            &Push::Join {
                                channel,
                                info: &info,
                            }
                            .to_json(),
                        ))
                }
                ChannelEvent::Leave(info) => {
                    opts.join_leave
                        && ch.announce(PreparedMessage::text(
                            &Push::Leave {
                                channel,
                                info: &info,
                            }
                            .to_json(),
                        ))
                }
                ChannelEvent::Ephemeral(publication) => {
                    let push = Push::Publication {
                        channel,
                        epoch: &ch.epoch,
                        publication: &publication,
                        ephemeral: true,
                    };
                    !ch.subscribers.is_empty()
                        && ch.announce(PreparedMessage::text(&push.to_json()))
                }
            }
        };
        if broken {
            self.metrics.cluster_broken.inc();
        }
        if start {
            self.start_deliverer(channel);
        }
        if let Some((epoch, after, before)) = gap {
            self.fill_gap(channel, epoch, after, before);
        }
    }

    /// Tells a channel's subscribers that its continuity broke: they are disconnected with
    /// 4008, reconnect, and learn `recovered: false` when they subscribe with their
    /// position. The caller holds the channel's lock.
    fn break_continuity(ch: &Channel, channel: &str, why: &str) {
        if let Some(held_back) = BROKEN.allow() {
            tracing::warn!(
                channel,
                why,
                subscribers = ch.subscribers.len(),
                held_back,
                "a channel's stream lost continuity on this node; its subscribers reconnect to be told"
            );
        }
        for handle in ch.subscribers.values() {
            handle.disconnect(
                close::RECONNECT,
                "the channel's stream was interrupted; reconnect and recover",
            );
        }
    }

    /// Reads offsets `after + 1 .. before` of a channel from the history, then releases
    /// them with what arrived since; what the history no longer has is skipped.
    pub(super) fn fill_gap(
        self: &Arc<Self>,
        channel: &str,
        epoch: String,
        after: u64,
        before: u64,
    ) {
        let (hub, name) = (self.clone(), channel.to_owned());
        tokio::spawn(async move {
            let Some(opts) = hub.config.channel_options(&name) else {
                return;
            };
            let mut fetched = Vec::new();
            if keeps_history(opts) {
                let query = HistoryQuery {
                    after,
                    before: Some(before),
                    limit: usize::try_from(before - after - 1).unwrap_or(usize::MAX),
                    newest: false,
                };
                // A read that fails is tried again: skipping is for what the history
                // no longer holds, not for a moment Redis did not answer.
                for attempt in 0..CATCH_UP_ATTEMPTS {
                    match hub.store.history(&name, query).await {
                        Ok(read) => {
                            fetched = read;
                            break;
                        }
                        Err(_) => tokio::time::sleep(CATCH_UP_PAUSE * (attempt + 1)).await,
                    }
                }
            }
            let mut next_gap = None;
            let start = {
                let mut shard = hub.channels.lock(&name);
                let Some(ch) = shard.get_mut(&name) else {
                    return;
                };
                if *ch.epoch != *epoch {
                    return;
                }
                ch.filling = false;
                for publication in fetched {
                    if publication.offset > ch.top && publication.offset < before {
                        ch.ready
                            .entry(publication.offset)
                            .or_insert(Some(publication));
                    }
                }
                let mut start = ch.release_arrived(&name, opts, hub.over_budget());
                let first = ch.ready.first_key_value().map(|(offset, _)| *offset);
                if let Some(first) = first.filter(|first| *first > ch.top + 1) {
                    if first <= before {
                        // Gone from the history too: skipped, and the subscribers told.
                        hub.metrics.cluster_skipped.add(first - ch.top - 1);
                        if keeps_history(opts) {
                            hub.metrics.cluster_broken.inc();
                            Self::break_continuity(ch, &name, "the history no longer holds a gap");
                        }
                        ch.top = first - 1;
                        start |= ch.release_arrived(&name, opts, hub.over_budget());
                    }
                    let first = ch.ready.first_key_value().map(|(offset, _)| *offset);
                    if let Some(first) = first.filter(|first| *first > ch.top + 1) {
                        ch.filling = true;
                        next_gap = Some((ch.top, first));
                    }
                }
                start
            };
            if start {
                hub.start_deliverer(&name);
            }
            if let Some((after, before)) = next_gap {
                hub.fill_gap(&name, epoch, after, before);
            }
        });
    }

    /// After the pub/sub connection came back: every channel in memory reads what it
    /// missed from the store (its stream position there tells), so subscribers get it in
    /// order, or are told the stream was lost; this node's subscribers are added to the
    /// presence again (Redis may have lost it, or changes made during the outage).
    fn catch_up(self: &Arc<Self>) {
        let mut names = Vec::new();
        self.channels.each(|map| names.extend(map.keys().cloned()));
        let hub = self.clone();
        tokio::spawn(async move {
            for name in names {
                let Some(opts) = hub.config.channel_options(&name) else {
                    continue;
                };
                // The command connection may come back a little after the pub/sub one.
                let mut snapshot = None;
                for attempt in 0..CATCH_UP_ATTEMPTS {
                    let read = hub.store.channel(&name, super::channel::retention(opts), 0);
                    match read.await {
                        Ok(read) => {
                            snapshot = Some(read);
                            break;
                        }
                        Err(_) => tokio::time::sleep(CATCH_UP_PAUSE * (attempt + 1)).await,
                    }
                }
                let Some(snapshot) = snapshot else {
                    tracing::warn!(channel = %name, "could not read a channel's position after Redis came back");
                    continue;
                };
                let mut members = Vec::new();
                let mut broken = false;
                let gap = {
                    let mut shard = hub.channels.lock(&name);
                    let Some(ch) = shard.get_mut(&name) else {
                        continue;
                    };
                    members.extend(ch.members.values().cloned());
                    if *ch.epoch != *snapshot.epoch && ch.top > 0 {
                        // The stream this node knew is gone: its subscribers are told, and
                        // the channel starts over from what Redis holds.
                        broken = keeps_history(opts);
                        if broken {
                            Self::break_continuity(ch, &name, "Redis lost the stream");
                        }
                        ch.ready.clear();
                        ch.cache.clear();
                        ch.epoch = snapshot.epoch.as_str().into();
                        (ch.top, ch.reserved, ch.stored_top) = (0, 0, 0);
                        ch.filling = snapshot.top > 0;
                        ch.filling
                            .then(|| (ch.epoch.to_string(), 0, snapshot.top + 1))
                    } else if snapshot.top > ch.top && !ch.filling {
                        ch.filling = true;
                        Some((ch.epoch.to_string(), ch.top, snapshot.top + 1))
                    } else {
                        None
                    }
                };
                if broken {
                    hub.metrics.cluster_broken.inc();
                }
                if let Some((epoch, after, before)) = gap {
                    hub.fill_gap(&name, epoch, after, before);
                }
                if let Some(cluster) = hub.cluster() {
                    for info in members {
                        cluster.presence_add(&name, &info, opts.join_leave);
                    }
                }
            }
        });
    }
}
