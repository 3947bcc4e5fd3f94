//! In a group of nodes (`engine = "redis"`): what the group sends this node. Publications
//! arrive in the order Redis took them and are released in offset order, a gap filled
//! from the history; joins, leaves and ephemeral publications are announced as they come.
//! A channel being loaded (watched, its snapshot not read yet) keeps what arrives for it
//! meanwhile, so nothing published between the two is missed.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use switchboard_ws::PreparedMessage;

use super::Hub;
use super::channel::{Arrival, Channel, keeps_history};
use crate::cluster::{ChannelEvent, Events};
use crate::engine::HistoryQuery;
use crate::protocol::{PrivateMessage, Publication, Push};

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
        if start {
            self.start_deliverer(channel);
        }
        if let Some((epoch, after, before)) = gap {
            self.fill_gap(channel, epoch, after, before);
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
            let fetched = if keeps_history(opts) {
                let query = HistoryQuery {
                    after,
                    before: Some(before),
                    limit: usize::try_from(before - after - 1).unwrap_or(usize::MAX),
                    newest: false,
                };
                hub.store.history(&name, query).await.unwrap_or_default()
            } else {
                Vec::new()
            };
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
                        // Gone from the history too: skipped, as a recovery would.
                        hub.metrics.cluster_skipped.add(first - ch.top - 1);
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
    /// order, or learn from the epoch that the stream was lost.
    fn catch_up(self: &Arc<Self>) {
        let mut names = Vec::new();
        self.channels.each(|map| names.extend(map.keys().cloned()));
        let hub = self.clone();
        tokio::spawn(async move {
            for name in names {
                let Some(opts) = hub.config.channel_options(&name) else {
                    continue;
                };
                let snapshot = match hub
                    .store
                    .channel(&name, super::channel::retention(opts), 0)
                    .await
                {
                    Ok(snapshot) => snapshot,
                    Err(_) => continue,
                };
                let gap = {
                    let mut shard = hub.channels.lock(&name);
                    let Some(ch) = shard.get_mut(&name) else {
                        continue;
                    };
                    if *ch.epoch != *snapshot.epoch && snapshot.top > 0 {
                        // The stream was lost or replaced: start over from its start.
                        ch.ready.clear();
                        ch.cache.clear();
                        ch.epoch = snapshot.epoch.as_str().into();
                        (ch.top, ch.reserved, ch.stored_top) = (0, 0, 0);
                        ch.filling = true;
                        Some((ch.epoch.to_string(), 0, snapshot.top + 1))
                    } else if snapshot.top > ch.top && !ch.filling {
                        ch.filling = true;
                        Some((ch.epoch.to_string(), ch.top, snapshot.top + 1))
                    } else {
                        None
                    }
                };
                if let Some((epoch, after, before)) = gap {
                    hub.fill_gap(&name, epoch, after, before);
                }
            }
        });
    }
}
