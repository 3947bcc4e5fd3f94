//! The in-memory store: mailboxes in a map, history only in the hub. Nothing survives a
//! restart; every channel gets a fresh epoch, so clients are told they cannot recover.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::value::RawValue;

use super::{BoxFuture, ChannelSnapshot, MailboxLimits, Retention, Store, StoreError};
use crate::hub::random_id;
use crate::wire::{ClientInfo, PrivateMessage, Publication, now_ms};

/// user → messages with their expiry, oldest first.
type Mailboxes = HashMap<String, VecDeque<(Arc<PrivateMessage>, Instant)>>;

/// Keeps mailboxes in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// One lock: mailboxes are not a hot path, and each operation is short.
    mailboxes: Mutex<Mailboxes>,
    next_id: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            mailboxes: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    fn boxes(&self) -> std::sync::MutexGuard<'_, Mailboxes> {
        self.mailboxes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn channel<'a>(
        &'a self,
        _channel: &'a str,
        _retention: Retention,
    ) -> BoxFuture<'a, Result<ChannelSnapshot, StoreError>> {
        Box::pin(async {
            Ok(ChannelSnapshot {
                epoch: random_id(8),
                top: 0,
                recent: Vec::new(),
            })
        })
    }

    fn append(
        &self,
        _channel: &str,
        _epoch: &str,
        _publication: Arc<Publication>,
        _retention: Retention,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        // The hub's in-memory history is all there is.
        Box::pin(async { Ok(()) })
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
            let now = Instant::now();
            let mut boxes = self.boxes();
            let queue = boxes.entry(user.to_owned()).or_default();
            queue.retain(|(_, exp)| *exp > now);
            let full = queue.len() >= limits.size;
            if full && !online {
                return Err(StoreError::MailboxFull(limits.size));
            }
            let message = Arc::new(PrivateMessage {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                from,
                data,
                time: now_ms(),
            });
            if !full {
                queue.push_back((message.clone(), now + limits.ttl));
            }
            Ok(message)
        })
    }

    fn mailbox_pending<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Arc<PrivateMessage>>, StoreError>> {
        Box::pin(async move {
            let now = Instant::now();
            let boxes = self.boxes();
            Ok(boxes.get(user).map_or_else(Vec::new, |queue| {
                queue
                    .iter()
                    .filter(|(_, exp)| *exp > now)
                    .map(|(m, _)| m.clone())
                    .collect()
            }))
        })
    }

    fn mailbox_ack<'a>(
        &'a self,
        user: &'a str,
        upto: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut boxes = self.boxes();
            if let Some(queue) = boxes.get_mut(user) {
                queue.retain(|(m, _)| m.id > upto);
                if queue.is_empty() {
                    boxes.remove(user);
                }
            }
            Ok(())
        })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let now = Instant::now();
            self.boxes().retain(|_, queue| {
                queue.retain(|(_, exp)| *exp > now);
                !queue.is_empty()
            });
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn store_suite() {
        super::super::suite::run_all(&super::MemoryStore::new()).await;
    }
}
