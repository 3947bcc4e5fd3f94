//! The in-memory store: channel positions, history and mailboxes in maps. Nothing
//! survives a restart; every channel then gets a fresh epoch, so clients are told they
//! cannot recover, and the mailbox gets a fresh epoch, so clients forget old ids.
//!
//! It holds what the SQLite store would hold on disk, under the same byte budget
//! (`storage.max_bytes`), so memory cannot grow without bound whatever clients do.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::value::RawValue;

use super::{
    BoxFuture, ChannelSnapshot, HistoryQuery, MailboxLimits, MailboxPage, MailboxQuota, PageLimit,
    Retention, Store, StoreError, StoreUsage,
};
use crate::protocol::{ClientInfo, PrivateMessage, Publication, now_ms};
use crate::util::random_id;

/// Bytes counted per stored item on top of its data: the record, its map entry, its
/// ids. An estimate, so that many tiny items are not free.
const OVERHEAD: u64 = 96;

/// A channel's stream.
#[derive(Debug)]
struct Stream {
    epoch: String,
    top: u64,
    /// Unexpired publications with their expiry (Unix ms), oldest first.
    publications: VecDeque<(Arc<Publication>, u64)>,
}

/// A stored message with its expiry (Unix ms).
#[derive(Debug)]
struct Stored {
    message: Arc<PrivateMessage>,
    expires: u64,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, Stream>,
    /// user → messages, oldest first.
    mailboxes: HashMap<String, VecDeque<Stored>>,
    /// Bytes held, as [`publication_bytes`] and [`message_bytes`] count them.
    bytes: u64,
}

/// Keeps channels and mailboxes in memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// One lock: each operation is short, and the hub's cache answers the hot reads.
    state: Mutex<State>,
    next_id: AtomicU64,
    max_bytes: u64,
    refused: AtomicU64,
    mailbox_epoch: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

fn publication_bytes(publication: &Publication) -> u64 {
    let info = publication.info.as_ref().map_or(0, info_bytes);
    publication.data.get().len() as u64 + info + OVERHEAD
}

fn message_bytes(message: &PrivateMessage) -> u64 {
    let from = message.from.as_ref().map_or(0, info_bytes);
    message.data.get().len() as u64 + from + OVERHEAD
}

fn info_bytes(info: &ClientInfo) -> u64 {
    (info.user.len() + info.client.len() + info.info.as_ref().map_or(0, |i| i.get().len())) as u64
}

fn expiry(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

impl MemoryStore {
    /// An empty store with the default budget (`storage.max_bytes`, 1 GiB).
    pub fn new() -> Self {
        MemoryStore::with_max_bytes(crate::config::StorageConfig::default().max_bytes)
    }

    /// An empty store that holds at most about `max_bytes`.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        MemoryStore {
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
            max_bytes,
            refused: AtomicU64::new(0),
            mailbox_epoch: random_id(8),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a write of `bytes` that would pass the budget.
    fn room(&self, state: &State, bytes: u64) -> Result<(), StoreError> {
        if state.bytes.saturating_add(bytes) > self.max_bytes {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Full(format!(
                "the memory store holds {} of its {} bytes (storage.max_bytes)",
                state.bytes, self.max_bytes
            )));
        }
        Ok(())
    }
}

impl State {
    /// Drops a stream's expired publications and those past the retention size.
    fn trim(&mut self, channel: &str, size: Option<usize>, now: u64) {
        let Some(stream) = self.streams.get_mut(channel) else {
            return;
        };
        let mut freed = 0;
        while let Some((publication, expires)) = stream.publications.front() {
            let over = size.is_some_and(|size| stream.publications.len() > size);
            if !over && *expires > now {
                break;
            }
            freed += publication_bytes(publication);
            stream.publications.pop_front();
        }
        self.bytes -= freed;
    }

    fn trim_mailbox(&mut self, user: &str, now: u64) {
        let Some(queue) = self.mailboxes.get_mut(user) else {
            return;
        };
        let mut freed = 0;
        queue.retain(|stored| {
            let keep = stored.expires > now;
            if !keep {
                freed += message_bytes(&stored.message);
            }
            keep
        });
        if queue.is_empty() {
            self.mailboxes.remove(user);
        }
        self.bytes -= freed;
    }
}

impl Store for MemoryStore {
    fn channel<'a>(
        &'a self,
        channel: &'a str,
        retention: Retention,
        recent_bytes: usize,
    ) -> BoxFuture<'a, Result<ChannelSnapshot, StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut state = self.state();
            state.trim(channel, None, now);
            let Some(stream) = state.streams.get(channel) else {
                return Ok(ChannelSnapshot {
                    epoch: random_id(8),
                    top: 0,
                    recent: Vec::new(),
                    complete: true,
                });
            };
            let mut recent = Vec::new();
            let mut bytes = 0;
            let mut complete = true;
            for (publication, _) in stream.publications.iter().rev().take(retention.size) {
                bytes += publication_bytes(publication);
                if bytes > recent_bytes as u64 {
                    complete = false;
                    break;
                }
                recent.push(publication.clone());
            }
            recent.reverse();
            Ok(ChannelSnapshot {
                epoch: stream.epoch.clone(),
                top: stream.top,
                recent,
                complete,
            })
        })
    }

    fn append(
        &self,
        channel: &str,
        epoch: &str,
        publication: Arc<Publication>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let result = (|| {
            let now = now_ms();
            let bytes = publication_bytes(&publication);
            let mut state = self.state();
            state.trim(channel, Some(retention.size), now);
            self.room(&state, bytes)?;
            let stream = state
                .streams
                .entry(channel.to_owned())
                .or_insert_with(|| Stream {
                    epoch: epoch.to_owned(),
                    top: 0,
                    publications: VecDeque::new(),
                });
            if stream.epoch != epoch {
                return Err(StoreError::Failed(format!(
                    "channel {channel:?} is stored with another epoch than {epoch}"
                )));
            }
            stream.top = stream.top.max(publication.offset);
            stream
                .publications
                .push_back((publication, expiry(now, retention.ttl)));
            state.bytes += bytes;
            state.trim(channel, Some(retention.size), now);
            Ok(())
        })();
        Box::pin(async move { result })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<Vec<Arc<Publication>>, StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let state = self.state();
            let Some(stream) = state.streams.get(channel) else {
                return Ok(Vec::new());
            };
            let range = stream.publications.iter().filter(|(p, expires)| {
                *expires > now
                    && p.offset > query.after
                    && query.before.is_none_or(|before| p.offset < before)
            });
            let mut found: Vec<Arc<Publication>> = if query.newest {
                let mut newest: Vec<_> = range
                    .rev()
                    .take(query.limit)
                    .map(|(p, _)| p.clone())
                    .collect();
                newest.reverse();
                newest
            } else {
                range.take(query.limit).map(|(p, _)| p.clone()).collect()
            };
            found.shrink_to_fit();
            Ok(found)
        })
    }

    fn mailbox_push<'a>(
        &'a self,
        user: &'a str,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
    ) -> BoxFuture<'a, Result<Arc<PrivateMessage>, StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut state = self.state();
            state.trim_mailbox(user, now);
            let queue = state.mailboxes.get(user);
            let count = |keep: &dyn Fn(&Stored) -> bool| {
                queue.map_or(0, |q| q.iter().filter(|s| keep(s)).count())
            };
            let full = match &from {
                None => {
                    let held = count(&|s| s.message.from.is_none());
                    (held >= limits.server_size)
                        .then_some((MailboxQuota::Server, limits.server_size))
                }
                Some(sender) => {
                    let from_users = count(&|s| s.message.from.is_some());
                    let from_sender = count(&|s| {
                        s.message
                            .from
                            .as_ref()
                            .is_some_and(|f| f.user == sender.user)
                    });
                    if from_sender >= limits.per_sender {
                        Some((MailboxQuota::Sender, limits.per_sender))
                    } else {
                        (from_users >= limits.size).then_some((MailboxQuota::Users, limits.size))
                    }
                }
            };
            if let (Some((quota, limit)), false) = (full, online) {
                return Err(StoreError::MailboxFull { quota, limit });
            }
            let message = Arc::new(PrivateMessage {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                from,
                data,
                time: now,
            });
            if full.is_none() {
                let bytes = message_bytes(&message);
                self.room(&state, bytes)?;
                state.bytes += bytes;
                state
                    .mailboxes
                    .entry(user.to_owned())
                    .or_default()
                    .push_back(Stored {
                        message: message.clone(),
                        expires: expiry(now, limits.ttl),
                    });
            }
            Ok(message)
        })
    }

    fn mailbox_page<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: PageLimit,
    ) -> BoxFuture<'a, Result<MailboxPage, StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let state = self.state();
            let Some(queue) = state.mailboxes.get(user) else {
                return Ok(MailboxPage::default());
            };
            let mut pending = queue
                .iter()
                .filter(|s| s.expires > now && s.message.id > after)
                .map(|s| s.message.clone())
                .peekable();
            let (mut messages, mut bytes) = (Vec::new(), 0usize);
            while let Some(next) = pending.peek() {
                let size = super::message_bytes(next);
                let fits = messages.len() < limit.messages
                    && (messages.is_empty() || bytes.saturating_add(size) <= limit.bytes);
                if !fits {
                    break;
                }
                bytes += size;
                messages.extend(pending.next());
            }
            let more = pending.peek().is_some();
            Ok(MailboxPage { messages, more })
        })
    }

    fn mailbox_ack<'a>(
        &'a self,
        user: &'a str,
        upto: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut state = self.state();
            let Some(queue) = state.mailboxes.get_mut(user) else {
                return Ok(());
            };
            let mut freed = 0;
            queue.retain(|s| {
                let keep = s.message.id > upto;
                if !keep {
                    freed += message_bytes(&s.message);
                }
                keep
            });
            if queue.is_empty() {
                state.mailboxes.remove(user);
            }
            state.bytes -= freed;
            Ok(())
        })
    }

    fn mailbox_epoch(&self) -> String {
        self.mailbox_epoch.clone()
    }

    fn sweep(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut state = self.state();
            let channels: Vec<String> = state.streams.keys().cloned().collect();
            for channel in channels {
                state.trim(&channel, None, now);
            }
            // A stream whose history all expired is forgotten: the next use starts a new
            // epoch, which tells a client that nothing can be recovered.
            state.streams.retain(|_, s| !s.publications.is_empty());
            let users: Vec<String> = state.mailboxes.keys().cloned().collect();
            for user in users {
                state.trim_mailbox(&user, now);
            }
            Ok(())
        })
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage {
            bytes: self.state().bytes,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn store_suite() {
        super::super::suite::run_all(&super::MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn budget_refuses_then_frees() {
        super::super::suite::budget_refuses_then_frees(&super::MemoryStore::with_max_bytes(10_000))
            .await;
    }
}
