//! The channel's deliverer: one task per busy channel writes released publications and
//! join/leave announcements to its subscribers, in order, outside the channel's lock.

use std::sync::Arc;

use switchboard_ws::PreparedMessage;

use super::Hub;
use super::channel::Channel;
use crate::outbox::{Batch, ClientHandle};

/// Subscribers a deliverer writes to before it yields the thread (`Hub::delivery_chunk`).
pub(super) const DELIVERY_CHUNK: usize = 256;

/// Messages queued together, and the subscribers they go to: the first `until` of
/// `subscribers` (all of them, unless the rest already got these messages in a round
/// they joined, see [`Hub::deliver`]).
#[derive(Debug)]
pub(super) struct Delivery {
    pub(super) messages: Vec<PreparedMessage>,
    /// Publications go to the subscribers of the moment they were released. `None`
    /// (join and leave announcements): to whoever is subscribed when the deliverer
    /// reaches it, so that announcing costs no copy of the subscriber list each.
    pub(super) subscribers: Option<Arc<[ClientHandle]>>,
    pub(super) until: usize,
}

impl Delivery {
    /// Gives an announcement the channel's current subscribers.
    fn resolve(&mut self, ch: &mut Channel) {
        if self.subscribers.is_none() {
            let subscribers = ch.snapshot();
            self.until = subscribers.len();
            self.subscribers = Some(subscribers);
        }
    }

    /// The subscriber list of a resolved delivery (empty if unresolved).
    fn targets(&self) -> &[ClientHandle] {
        self.subscribers.as_deref().unwrap_or_default()
    }

    /// Whether `other` (resolved first, when `ch` is given) goes to the same subscribers
    /// (nobody joined or left between them).
    fn same_targets(&self, other: &mut Delivery, ch: &mut Channel) -> bool {
        other.resolve(ch);
        match (&self.subscribers, &other.subscribers) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) && self.until == other.until,
            _ => false,
        }
    }
}

impl Hub {
    /// The channel's deliverer: writes queued publications to the subscribers they were
    /// released to, in order, until the queue is empty. It runs outside the channel's
    /// lock and yields every [`DELIVERY_CHUNK`] subscribers, so a fan-out to thousands
    /// neither blocks the shard nor holds up the thread: the next publications are read,
    /// committed and queued meanwhile.
    ///
    /// Publications released while a round is under way, to the same subscribers, join
    /// the round: the subscribers it has not reached yet get them in the same write, and
    /// only those it already passed get them in a round of their own afterwards (queued
    /// first, before anything released later). Under load, a subscriber late in the
    /// order then waits for one round instead of two, and one write carries several
    /// publications, which costs the kernel far less than one write each.
    pub(super) async fn deliver(&self, name: &str) {
        loop {
            let Some(mut delivery) = self.next_delivery(name) else {
                return;
            };
            let mut batch = Batch::new(&delivery.messages);
            // Rounds of what joined this one, for the subscribers it had already passed.
            let mut passed: Vec<Delivery> = Vec::new();
            let mut at = 0;
            while at < delivery.until {
                let end = (at + self.delivery_chunk).min(delivery.until);
                for handle in &delivery.targets()[at..end] {
                    handle.push_batch(&batch);
                }
                at = end;
                tokio::task::yield_now().await;
                if at < delivery.until && self.join_round(name, &mut delivery, at, &mut passed) {
                    batch = Batch::new(&delivery.messages);
                }
            }
            if !passed.is_empty() {
                let mut shard = self.channels.lock(name);
                if let Some(ch) = shard.get_mut(name) {
                    // Ahead of anything released since, which comes after them.
                    for rest in passed.into_iter().rev() {
                        ch.outgoing.push_front(rest);
                    }
                }
            }
        }
    }

    /// The next delivery of the channel's queue, with the ones right behind it that go to
    /// the same subscribers merged in; `None` (and the deliverer stops) if there is none.
    fn next_delivery(&self, name: &str) -> Option<Delivery> {
        let mut shard = self.channels.lock(name);
        let ch = shard.get_mut(name)?;
        let Some(mut delivery) = ch.outgoing.pop_front() else {
            ch.delivering = false;
            return None;
        };
        delivery.resolve(ch);
        while let Some(mut next) = ch.outgoing.pop_front() {
            if !delivery.same_targets(&mut next, ch) {
                ch.outgoing.push_front(next);
                break;
            }
            delivery.messages.extend(next.messages);
        }
        Some(delivery)
    }

    /// Moves deliveries queued behind a round under way, to the same subscribers, into it:
    /// their publications go to the subscribers from `at` on with the round's, and a
    /// delivery to the first `at` is added to `passed`. Returns whether any joined.
    fn join_round(
        &self,
        name: &str,
        round: &mut Delivery,
        at: usize,
        passed: &mut Vec<Delivery>,
    ) -> bool {
        let mut shard = self.channels.lock(name);
        let Some(ch) = shard.get_mut(name) else {
            return false;
        };
        let mut joined = false;
        while let Some(mut next) = ch.outgoing.pop_front() {
            if !round.same_targets(&mut next, ch) {
                ch.outgoing.push_front(next);
                break;
            }
            round.messages.extend(next.messages.iter().cloned());
            passed.push(Delivery {
                messages: next.messages,
                subscribers: next.subscribers,
                until: at,
            });
            joined = true;
        }
        #[cfg(test)]
        if joined {
            self.rounds_joined
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        joined
    }
}
