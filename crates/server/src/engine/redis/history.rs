//! Publishing and history: the publish and append scripts, and the reads of a channel's
//! position and history, in bounded chunks.

use std::future::Future;
use std::sync::Arc;

use super::super::{ChannelSnapshot, HistoryQuery, Retention, StoreError};
use super::{
    CHUNK, NO_HISTORY_TTL, Range, RedisEngine, entry_number, field, json_after, keeps_nothing,
    ttl_ms,
};
use crate::protocol::{Publication, now_ms};
use crate::util::random_id;

/// About how many bytes a publication holds in memory, as the other stores count it for
/// the snapshot's byte budget.
fn publication_bytes(publication: &Publication) -> usize {
    let info = publication.info.as_ref().map_or(0, |i| {
        i.user.len() + i.client.len() + i.info.as_ref().map_or(0, |v| v.get().len())
    });
    publication.data.get().len() + info + 96
}

/// A history entry's publication (its field `p`).
fn stored_publication(fields: &[String]) -> Result<Publication, StoreError> {
    let json = field(fields, "p")
        .ok_or_else(|| StoreError::Failed("redis: a history entry has no field p".into()))?;
    serde_json::from_str(json)
        .map_err(|e| StoreError::Failed(format!("redis: a stored publication does not parse: {e}")))
}

/// The two meta fields a read asked for.
fn two_fields(values: Vec<Option<String>>) -> Result<[Option<String>; 2], StoreError> {
    <[Option<String>; 2]>::try_from(values)
        .map_err(|v| StoreError::Failed(format!("redis: {} meta fields, not 2", v.len())))
}

/// Whether a publication is younger than the history's TTL (ms; `None`: not known, so
/// the stream's own expiry is all there is).
fn live(publication: &Publication, ttl: Option<u64>, now: u64) -> bool {
    ttl.is_none_or(|ttl| publication.time.saturating_add(ttl) > now)
}

impl RedisEngine {
    /// Publishes: ONE Lua script takes the channel's next offset, appends to history when
    /// `retention` is Some (size > 0), and PUBLISHes the payload below on the channel's
    /// topic; returns (epoch, offset). `publication` is the publication with offset 0 (its
    /// offset is replaced). Refused (never acknowledged) if Redis cannot run it.
    ///
    /// The payload is `P`, the epoch, a space, and the publication's JSON with its
    /// offset. A channel with history keeps it (and its meta) for the retention TTL after
    /// its last publication, one without for [`NO_HISTORY_TTL`].
    pub async fn publish(
        &self,
        channel: &str,
        publication: &Publication,
        retention: Option<Retention>,
    ) -> Result<(String, u64), StoreError> {
        let tail = json_after(publication, "offset", publication.offset)?;
        let (size, ttl) = match retention {
            Some(retention) if !keeps_nothing(retention) => (retention.size, ttl_ms(retention.ttl)),
            _ => (0, ttl_ms(NO_HISTORY_TTL)),
        };
        let mut conn = self.connection();
        self.status.check(
            self.scripts
                .publish
                .key(self.keys.meta(channel))
                .key(self.keys.history(channel))
                .arg(random_id(8))
                .arg(tail)
                .arg(size)
                .arg(ttl)
                .arg(self.keys.topic(channel))
                .invoke_async(&mut conn)
                .await,
        )
    }

    /// The write of [`crate::engine::Store::append`], owning all it needs, to run on a
    /// task.
    pub(super) fn append_write(
        &self,
        channel: &str,
        epoch: &str,
        publication: &Publication,
        retention: Retention,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let mut conn = self.connection();
        let scripts = self.scripts.clone();
        let status = self.status.clone();
        let (meta, history) = (self.keys.meta(channel), self.keys.history(channel));
        let (channel, epoch) = (channel.to_owned(), epoch.to_owned());
        let offset = publication.offset;
        let json = serde_json::to_string(publication);
        async move {
            let json =
                json.map_err(|e| StoreError::Failed(format!("redis: cannot serialise: {e}")))?;
            let (stored, current): (u8, String) = status.check(
                scripts
                    .append
                    .key(meta)
                    .key(history)
                    .arg(&epoch)
                    .arg(offset)
                    .arg(json)
                    .arg(retention.size)
                    .arg(ttl_ms(retention.ttl))
                    .invoke_async(&mut conn)
                    .await,
            )?;
            if stored == 0 {
                return Err(StoreError::Failed(format!(
                    "channel {channel:?} is stored with another epoch ({current}) than {epoch}"
                )));
            }
            Ok(())
        }
    }

    /// [`crate::engine::Store::channel`]: the position and the first chunk of history in
    /// one step (`read.lua`), so `top` is never behind the newest publication read; older
    /// chunks after it while the budget lasts.
    pub(super) async fn snapshot(
        &self,
        channel: &str,
        retention: Retention,
        recent_bytes: usize,
    ) -> Result<ChannelSnapshot, StoreError> {
        let history = self.keys.history(channel);
        let mut range = Range {
            newest_first: true,
            low: 0,
            high: u64::MAX,
            count: retention.size.clamp(1, CHUNK),
        };
        let (meta, mut batch) = self
            .read_with(&self.keys.meta(channel), &["epoch", "top"], &history, range)
            .await?;
        let [epoch, top] = two_fields(meta)?;
        // Never stored, or expired: a fresh epoch, stored by the first publication.
        let Some(epoch) = epoch else {
            return Ok(ChannelSnapshot {
                epoch: random_id(8),
                top: 0,
                recent: Vec::new(),
                complete: true,
            });
        };
        let top = top.and_then(|top| top.parse().ok()).unwrap_or(0);
        let (mut recent, mut bytes, mut complete) = (Vec::new(), 0usize, true);
        if keeps_nothing(retention) {
            batch.clear();
        }
        let (ttl, now) = (Some(ttl_ms(retention.ttl)), now_ms());
        'read: loop {
            let more = batch.len() == range.count;
            let mut oldest = None;
            for (id, fields) in &batch {
                oldest = Some(entry_number(id)?);
                let publication = stored_publication(fields)?;
                // Newest first: past the first expired one, all are older still.
                if !live(&publication, ttl, now) {
                    break 'read;
                }
                bytes = bytes.saturating_add(publication_bytes(&publication));
                if bytes > recent_bytes {
                    complete = false;
                    break 'read;
                }
                recent.push(Arc::new(publication));
                if recent.len() >= retention.size {
                    break 'read;
                }
            }
            let Some(below) = oldest.and_then(|o| o.checked_sub(1)).filter(|_| more) else {
                break;
            };
            range.high = below;
            range.count = (retention.size - recent.len()).min(CHUNK);
            let mut conn = self.connection();
            batch = self
                .status
                .check(range.cmd(&history).query_async(&mut conn).await)?;
        }
        recent.reverse();
        Ok(ChannelSnapshot {
            epoch,
            top,
            recent,
            complete,
        })
    }

    /// [`crate::engine::Store::history`]: the range in chunks of at most [`CHUNK`],
    /// skipping entries past the TTL the channel's meta holds.
    pub(super) async fn read_history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<Vec<Arc<Publication>>, StoreError> {
        // Both ends included: offsets above `after` and below `before`.
        let Some(low) = query.after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let high = match query.before {
            None => u64::MAX,
            Some(before) => match before.checked_sub(1) {
                Some(high) => high,
                None => return Ok(Vec::new()),
            },
        };
        if low > high || query.limit == 0 {
            return Ok(Vec::new());
        }
        let history = self.keys.history(channel);
        let mut range = Range {
            newest_first: query.newest,
            low,
            high,
            count: query.limit.min(CHUNK),
        };
        let (meta, mut batch) = self
            .read_with(&self.keys.meta(channel), &["epoch", "ttl"], &history, range)
            .await?;
        let [epoch, ttl] = two_fields(meta)?;
        let ttl = ttl.and_then(|ttl| ttl.parse().ok());
        // A history without its meta belongs to no epoch anyone can ask about.
        if epoch.is_none() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut found = Vec::new();
        'read: loop {
            let more = batch.len() == range.count;
            let mut last = None;
            for (id, fields) in &batch {
                last = Some(entry_number(id)?);
                let publication = stored_publication(fields)?;
                if live(&publication, ttl, now) {
                    found.push(Arc::new(publication));
                    if found.len() >= query.limit {
                        break 'read;
                    }
                }
            }
            let Some(last) = last.filter(|_| more) else {
                break;
            };
            if query.newest {
                match last.checked_sub(1) {
                    Some(below) if below >= range.low => range.high = below,
                    _ => break,
                }
            } else {
                match last.checked_add(1) {
                    Some(above) if above <= range.high => range.low = above,
                    _ => break,
                }
            }
            range.count = (query.limit - found.len()).min(CHUNK);
            let mut conn = self.connection();
            batch = self
                .status
                .check(range.cmd(&history).query_async(&mut conn).await)?;
        }
        if query.newest {
            found.reverse();
        }
        Ok(found)
    }
}
