//! Users: their connections, their offline mailboxes, and their publishing quota.
//!
//! Private messages are serialised per user by an async lock, so a `send` racing with the
//! user's `connect` is delivered once and in order: either from the mailbox after the
//! connect reply, or live after it. A user's mailbox is sent a page at a time (a page
//! per `ack`), each page read with a bound, so a large mailbox never becomes one large
//! read or one large burst.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::value::RawValue;
use switchboard_ws::{CloseCode, PreparedMessage};

use super::{Hub, store_failed};
use crate::engine::{MailboxLimits, MailboxPage, PageLimit};
use crate::error::ClientError;
use crate::outbox::ClientHandle;
use crate::protocol::{ClientInfo, PrivateMessage, Push, SendStatus};
use crate::rate::TokenBucket;

/// A user's connections.
#[derive(Debug)]
pub(super) struct User {
    connections: HashMap<u64, ClientHandle>,
    /// Connections still being sent their mailbox, a page per `ack`. New private
    /// messages are not pushed to them live (they are stored, and arrive in a later
    /// page), so every message arrives in order.
    catching_up: HashSet<u64>,
    /// Serialises `connect` and `send` for this user (held across store calls).
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Bytes of `data` the user may still publish and send (`limits.publish_bytes_*`).
    /// Kept while it refills, so reconnecting does not reset it.
    quota: TokenBucket,
    /// In a group of nodes, private messages that arrived live for connections still
    /// catching up, sent after their last page (see [`Hub::connect_user`]).
    pub(super) held: HashMap<u64, Held>,
}

/// Live private messages kept for a connection catching up (in a group of nodes).
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) messages: Vec<Arc<PrivateMessage>>,
    /// More arrived than a page holds: dropped, and read from the mailbox instead.
    pub(super) overflowed: bool,
}

impl User {
    fn new(hub: &Hub) -> Self {
        let limits = &hub.config.limits;
        User {
            connections: HashMap::new(),
            catching_up: HashSet::new(),
            lock: Arc::default(),
            held: HashMap::new(),
            quota: TokenBucket::new(
                limits.publish_bytes_per_second as f64,
                limits.publish_bytes_burst as f64,
            ),
        }
    }

    /// Nothing refers to it and its quota is whole again: forgetting it changes nothing.
    fn is_idle(&mut self) -> bool {
        self.connections.is_empty() && Arc::strong_count(&self.lock) == 1 && self.quota.is_full()
    }
}

impl Hub {
    fn user_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.users
            .lock(user)
            .entry(user.to_owned())
            .or_insert_with(|| User::new(self))
            .lock
            .clone()
    }

    /// Takes `bytes` from a user's publishing quota (`limits.publish_bytes_per_second`,
    /// shared by all the user's connections). Error 111 when the quota is spent; nothing
    /// is taken then.
    pub(crate) fn charge(&self, user: &str, bytes: usize) -> Result<(), ClientError> {
        let mut shard = self.users.lock(user);
        let entry = shard
            .entry(user.to_owned())
            .or_insert_with(|| User::new(self));
        if entry.quota.take(bytes as f64) {
            return Ok(());
        }
        self.metrics.quota_refusals.inc();
        Err(ClientError::too_many_requests(format!(
            "publishing quota spent ({} bytes/s); slow down",
            self.config.limits.publish_bytes_per_second
        )))
    }

    /// Registers a user's connection, then queues `reply` (given the store's mailbox
    /// epoch) and the first page of the user's pending mailbox, all under the user's
    /// lock. The page is read first: if it cannot be, nothing is queued or registered
    /// and the error is the command's one reply. Returns the last mailbox id queued if
    /// more pages remain (the connection gets them one per `ack`, see
    /// [`Hub::mailbox_page`]).
    pub(crate) async fn connect_user(
        &self,
        user: &str,
        handle: &ClientHandle,
        reply: impl FnOnce(&str) -> String,
    ) -> Result<Option<u64>, ClientError> {
        if let (Some(cluster), false) = (self.cluster.get(), user.is_empty()) {
            return self.connect_in_group(cluster, user, handle, reply).await;
        }
        let lock = self.user_lock(user);
        let _serial = lock.lock().await;
        let page = if user.is_empty() {
            None
        } else {
            Some(self.read_page(user, 0).await?)
        };
        handle.push(PreparedMessage::text(&reply(&self.store.mailbox_epoch())));
        self.users
            .lock(user)
            .entry(user.to_owned())
            .or_insert_with(|| User::new(self))
            .connections
            .insert(handle.id, handle.clone());
        Ok(match page {
            Some(page) => self.push_page(user, handle, page),
            None => None,
        })
    }

    /// Queues the next page of mailbox messages after id `after` to a connection that is
    /// catching up. Returns the last id queued if more remain.
    pub(crate) async fn mailbox_page(
        &self,
        user: &str,
        handle: &ClientHandle,
        after: u64,
    ) -> Result<Option<u64>, ClientError> {
        let lock = self.user_lock(user);
        let _serial = lock.lock().await;
        let page = self.read_page(user, after).await?;
        if self.cluster.get().is_some() {
            return Ok(self.push_page_held(user, handle, page, after));
        }
        Ok(self.push_page(user, handle, page))
    }

    /// [`Hub::connect_user`] in a group of nodes, where a private message may be sent
    /// from any node and arrives through Redis, at any moment. The node watches the
    /// user's topic and registers the connection as catching up before it reads the
    /// mailbox: a message stored before the read is in a page, one stored after it
    /// arrives live and is held until the last page went out (by id, never twice).
    async fn connect_in_group(
        &self,
        cluster: &crate::cluster::Cluster,
        user: &str,
        handle: &ClientHandle,
        reply: impl FnOnce(&str) -> String,
    ) -> Result<Option<u64>, ClientError> {
        cluster.watch_user(user).await.map_err(store_failed)?;
        let lock = self.user_lock(user);
        let _serial = lock.lock().await;
        {
            let mut shard = self.users.lock(user);
            let entry = shard
                .entry(user.to_owned())
                .or_insert_with(|| User::new(self));
            entry.connections.insert(handle.id, handle.clone());
            entry.catching_up.insert(handle.id);
            entry.held.insert(handle.id, Held::default());
        }
        let page = match self.read_page(user, 0).await {
            Ok(page) => page,
            Err(err) => {
                self.disconnect_user(user, handle.id);
                return Err(err);
            }
        };
        handle.push(PreparedMessage::text(&reply(&self.store.mailbox_epoch())));
        Ok(self.push_page_held(user, handle, page, 0))
    }

    /// [`Hub::push_page`] in a group of nodes: after the last page, the messages held
    /// meanwhile that it did not hold, and the connection goes live.
    fn push_page_held(
        &self,
        user: &str,
        handle: &ClientHandle,
        page: MailboxPage,
        after: u64,
    ) -> Option<u64> {
        for message in &page.messages {
            handle.push(PreparedMessage::text(&Push::Message { message }.to_json()));
        }
        let last = page.messages.last().map_or(after, |m| m.id);
        let mut shard = self.users.lock(user);
        let entry = shard.get_mut(user)?;
        let held = entry.held.entry(handle.id).or_default();
        if page.more || (held.overflowed && !page.messages.is_empty()) {
            // The next page (after the client's `ack`) reads what was dropped.
            held.messages.clear();
            held.overflowed = false;
            return Some(last);
        }
        let mut held = entry.held.remove(&handle.id).unwrap_or_default();
        held.messages.sort_by_key(|m| m.id);
        for message in held.messages.iter().filter(|m| m.id > last) {
            handle.push(PreparedMessage::text(&Push::Message { message }.to_json()));
        }
        entry.catching_up.remove(&handle.id);
        None
    }

    /// In a group of nodes: a private message sent from any node, to this node's
    /// connections of the user (held for those still catching up).
    pub(super) fn deliver_message(&self, user: &str, message: Arc<PrivateMessage>) {
        let max_held = (self.config.limits.outbox_messages / 2).max(1);
        let mut shard = self.users.lock(user);
        let Some(entry) = shard.get_mut(user) else {
            return;
        };
        let mut frame = None;
        for (id, handle) in &entry.connections {
            if entry.catching_up.contains(id) {
                let held = entry.held.entry(*id).or_default();
                if held.messages.len() < max_held {
                    held.messages.push(message.clone());
                } else {
                    held.messages.clear();
                    held.overflowed = true;
                }
                continue;
            }
            let frame = frame.get_or_insert_with(|| {
                PreparedMessage::text(&Push::Message { message: &message }.to_json())
            });
            handle.push(frame.clone());
        }
    }

    /// Reads the pending messages after `after` that fit in half a connection's outbox
    /// (the other half stays for live traffic), by count and by bytes.
    async fn read_page(&self, user: &str, after: u64) -> Result<MailboxPage, ClientError> {
        let limits = &self.config.limits;
        let limit = PageLimit {
            messages: (limits.outbox_messages / 2).max(1),
            bytes: limits.outbox_bytes / 2,
        };
        self.store
            .mailbox_page(user, after, limit)
            .await
            .map_err(store_failed)
    }

    /// Queues a page's messages. The caller holds the user's lock. Returns the last id
    /// queued if more remain.
    fn push_page(&self, user: &str, handle: &ClientHandle, page: MailboxPage) -> Option<u64> {
        for message in &page.messages {
            handle.push(PreparedMessage::text(&Push::Message { message }.to_json()));
        }
        let more = page.more;
        if let Some(entry) = self.users.lock(user).get_mut(user) {
            if more {
                entry.catching_up.insert(handle.id);
            } else {
                entry.catching_up.remove(&handle.id);
            }
        }
        // A page holds at least one message when more remain.
        more.then(|| page.messages.last().map(|m| m.id)).flatten()
    }

    /// Removes a user's connection.
    pub(crate) fn disconnect_user(&self, user: &str, client: u64) {
        let mut shard = self.users.lock(user);
        if let Some(entry) = shard.get_mut(user) {
            let was = entry.connections.remove(&client).is_some();
            entry.catching_up.remove(&client);
            entry.held.remove(&client);
            if entry.is_idle() {
                shard.remove(user);
            }
            drop(shard);
            // One hold of the user's topic per connection (see `connect_in_group`).
            if let (true, Some(cluster), false) = (was, self.cluster.get(), user.is_empty()) {
                cluster.unwatch_user(user);
            }
        }
    }

    /// Sends a private message: stored in the user's mailbox, then queued to every live
    /// connection of the user. It stays in the mailbox until the user acknowledges it, so
    /// a connection lost before reading it loses nothing. A full mailbox refuses messages
    /// for an offline user (error 115); an online user still gets them live, unkept.
    /// Messages from users (`from`) and from the server API count against separate
    /// bounds (`mailbox.*`).
    pub(crate) async fn send(
        &self,
        user: &str,
        data: Arc<RawValue>,
        from: Option<ClientInfo>,
    ) -> Result<(SendStatus, u64), ClientError> {
        if user.is_empty() {
            return Err(ClientError::bad_request("the recipient user id is empty"));
        }
        let mailbox = &self.config.mailbox;
        let limits = MailboxLimits {
            size: mailbox.size,
            per_sender: mailbox.per_sender,
            server_size: mailbox.server_size,
            ttl: mailbox.ttl,
        };
        if let Some(cluster) = self.cluster.get() {
            // Redis stores it and sends it to the nodes watching the user in one step,
            // so live messages arrive in id order; they deliver it (this one included).
            let (message, delivered) = cluster
                .send(user, from, data, limits)
                .await
                .map_err(store_failed)?;
            self.metrics.private_messages.inc();
            let status = if delivered {
                SendStatus::Delivered
            } else {
                SendStatus::Stored
            };
            return Ok((status, message.id));
        }
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
    pub(crate) async fn ack(&self, user: &str, upto: u64) -> Result<(), ClientError> {
        self.store
            .mailbox_ack(user, upto)
            .await
            .map_err(store_failed)
    }

    /// Ends every connection of a user. Returns how many there were.
    pub(crate) fn disconnect(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        let shard = self.users.lock(user);
        let Some(entry) = shard.get(user) else {
            return 0;
        };
        for handle in entry.connections.values() {
            handle.disconnect(code, reason);
        }
        entry.connections.len()
    }

    /// Whether the user has a connected connection.
    pub(crate) fn is_online(&self, user: &str) -> bool {
        self.users
            .lock(user)
            .get(user)
            .is_some_and(|u| !u.connections.is_empty())
    }

    /// Users with at least one connected connection (anonymous ones not counted).
    pub(crate) fn users_online(&self) -> usize {
        let mut n = 0;
        self.users.each(|map| {
            n += map
                .iter()
                .filter(|(name, u)| !name.is_empty() && !u.connections.is_empty())
                .count();
        });
        n
    }

    /// Users with connected connections and how many each has, sorted by id (anonymous
    /// ones not counted).
    pub(crate) fn users_connections(&self) -> Vec<(String, usize)> {
        let mut list = Vec::new();
        self.users.each(|map| {
            list.extend(
                map.iter()
                    .filter(|(name, u)| !name.is_empty() && !u.connections.is_empty())
                    .map(|(name, u)| (name.clone(), u.connections.len())),
            );
        });
        list.sort();
        list
    }

    /// Forgets users left without connections whose quota refilled.
    pub(super) fn sweep_users(&self) {
        self.users.each(|map| map.retain(|_, user| !user.is_idle()));
    }
}
