//! Mailboxes: pushes and acknowledgements through their scripts, pages read in bounded
//! chunks.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::super::{MailboxLimits, MailboxPage, MailboxQuota, PageLimit, StoreError};
use super::{CHUNK, Entry, Keys, Range, RedisEngine, entry_number, field, json_after, ttl_ms};
use crate::protocol::{ClientInfo, PrivateMessage, now_ms};
use crate::util::random_id;

/// A mailbox entry's message, unless it expired (its fields `m` and `e`).
fn stored_message(fields: &[String], now: u64) -> Result<Option<PrivateMessage>, StoreError> {
    let expires = field(fields, "e").and_then(|e| e.parse::<u64>().ok());
    if expires.is_some_and(|expires| expires <= now) {
        return Ok(None);
    }
    let json = field(fields, "m")
        .ok_or_else(|| StoreError::Failed("redis: a mailbox entry has no field m".into()))?;
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| StoreError::Failed(format!("redis: a stored message does not parse: {e}")))
}

impl RedisEngine {
    /// [`crate::engine::Store::mailbox_push`]: `mailbox_push.lua` counts, decides and
    /// stores in one step, so two nodes cannot both take a mailbox's last place.
    pub(super) async fn push_message(
        &self,
        user: &str,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
    ) -> Result<Arc<PrivateMessage>, StoreError> {
        self.push_and_publish(user, from, data, limits, online, None)
            .await
            .map(|(message, _)| message)
    }

    /// In a group of nodes: stores a private message and publishes it on the user's topic
    /// in one step (the user counts as online if a node watches the topic). Returns it
    /// and whether a node had the user online.
    pub async fn mailbox_send(
        &self,
        user: &str,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
    ) -> Result<(Arc<PrivateMessage>, bool), StoreError> {
        let topic = self.keys.user_topic(user);
        self.push_and_publish(user, from, data, limits, false, Some(&topic))
            .await
    }

    async fn push_and_publish(
        &self,
        user: &str,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
        topic: Option<&str>,
    ) -> Result<(Arc<PrivateMessage>, bool), StoreError> {
        let tag = Keys::sender_tag(from.as_ref().map(|f| f.user.as_str()));
        let now = now_ms();
        let mut message = PrivateMessage {
            id: 0,
            from,
            data,
            time: now,
        };
        let tail = json_after(&message, "mailbox", 0)?;
        let mut conn = self.connection();
        let (epoch, id, quota, nodes): (String, u64, u8, u64) = self.status.check(
            self.scripts
                .mailbox_push
                .key(self.keys.mailbox_series())
                .key(self.keys.mailbox(user))
                .key(self.keys.mailbox_counts(user))
                .arg(random_id(8))
                .arg(now)
                .arg(ttl_ms(limits.ttl))
                .arg(tag)
                .arg(limits.size)
                .arg(limits.per_sender)
                .arg(limits.server_size)
                .arg(if online { "1" } else { "0" })
                .arg(tail)
                .arg(topic.unwrap_or(""))
                .invoke_async(&mut conn)
                .await,
        )?;
        self.status.note_mailbox_epoch(&epoch);
        if id == 0 {
            let (quota, limit) = match quota {
                2 => (MailboxQuota::Sender, limits.per_sender),
                3 => (MailboxQuota::Server, limits.server_size),
                _ => (MailboxQuota::Users, limits.size),
            };
            return Err(StoreError::MailboxFull { quota, limit });
        }
        message.id = id;
        Ok((Arc::new(message), nodes > 0))
    }

    /// [`crate::engine::Store::mailbox_page`]: at most `limit.messages + 1` entries are
    /// read (the one more tells whether more follow), in chunks of at most [`CHUNK`].
    pub(super) async fn read_page(
        &self,
        user: &str,
        after: u64,
        limit: PageLimit,
    ) -> Result<MailboxPage, StoreError> {
        let Some(low) = after.checked_add(1) else {
            return Ok(MailboxPage::default());
        };
        let mut conn = self.connection();
        let mailbox = self.keys.mailbox(user);
        let mut range = Range {
            newest_first: false,
            low,
            high: u64::MAX,
            count: limit.messages.saturating_add(1).min(CHUNK),
        };
        // Not a transaction: past maxmemory Redis refuses to queue commands in MULTI, and
        // a push between these reads changes nothing they decide.
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(self.keys.mailbox_series())
            .arg("epoch")
            .cmd("HGET")
            .arg(self.keys.mailbox_counts(user))
            .arg("@epoch");
        pipe.add_command(range.cmd(&mailbox));
        let (series, stored, mut batch): (Option<String>, Option<String>, Vec<Entry>) =
            self.status.check(pipe.query_async(&mut conn).await)?;
        if let Some(series) = &series {
            self.status.note_mailbox_epoch(series);
        }
        // Messages of another series (Redis lost the series but not this mailbox) have ids
        // that may come again: the next push drops them; until then they are not shown.
        if stored.is_some() && stored != series {
            return Ok(MailboxPage::default());
        }
        let now = now_ms();
        let (mut messages, mut bytes) = (Vec::new(), 0usize);
        loop {
            let full = batch.len() == range.count;
            let mut last = None;
            for (id, fields) in &batch {
                last = Some(entry_number(id)?);
                let Some(message) = stored_message(fields, now)? else {
                    continue;
                };
                let size = super::super::message_bytes(&message);
                let fits = messages.len() < limit.messages
                    && (messages.is_empty() || bytes.saturating_add(size) <= limit.bytes);
                if !fits {
                    return Ok(MailboxPage {
                        messages,
                        more: true,
                    });
                }
                bytes += size;
                messages.push(Arc::new(message));
            }
            let Some(next) = last.filter(|_| full).and_then(|l| l.checked_add(1)) else {
                return Ok(MailboxPage {
                    messages,
                    more: false,
                });
            };
            range.low = next;
            range.count = (limit.messages - messages.len())
                .saturating_add(1)
                .min(CHUNK);
            batch = self
                .status
                .check(range.cmd(&mailbox).query_async(&mut conn).await)?;
        }
    }

    /// [`crate::engine::Store::mailbox_ack`], through `mailbox_ack.lua`, which keeps the
    /// counts in step.
    pub(super) async fn ack_messages(&self, user: &str, upto: u64) -> Result<(), StoreError> {
        let mut conn = self.connection();
        let epoch: String = self.status.check(
            self.scripts
                .mailbox_ack
                .key(self.keys.mailbox_series())
                .key(self.keys.mailbox(user))
                .key(self.keys.mailbox_counts(user))
                .arg(format!("{upto}-0"))
                .invoke_async(&mut conn)
                .await,
        )?;
        self.status.note_mailbox_epoch(&epoch);
        Ok(())
    }
}
