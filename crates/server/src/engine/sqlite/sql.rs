//! The statements: one function per store operation, run by the writer inside its
//! batch's transaction or by a reader inside its read transaction. Statements are cached:
//! each is prepared once per connection, not per call.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;

use super::super::{
    ChannelSnapshot, HistoryQuery, MailboxPage, MailboxQuota, PageLimit, Retention, StoreError,
};
use super::writer::Push;
use crate::protocol::{ClientInfo, PrivateMessage, Publication};
use crate::util::random_id;

/// SQLite integers are signed: clamp (offsets and ids never come near 2^63, but an `ack`
/// from a client may say anything).
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An INTEGER column that holds a `u64` (written through [`int`]).
pub(super) fn uint(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(column, value))
}

/// Unix milliseconds `ttl` after `now`.
pub(super) fn expiry(now: u64, ttl: Duration) -> i64 {
    int(now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
}

/// A TEXT column holding JSON, as a [`RawValue`].
pub(super) fn raw_json(text: String, column: usize) -> rusqlite::Result<Arc<RawValue>> {
    RawValue::from_string(text)
        .map(Arc::from)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// A nullable TEXT column holding a [`ClientInfo`] as JSON.
pub(super) fn client_info(
    text: Option<String>,
    column: usize,
) -> rusqlite::Result<Option<ClientInfo>> {
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
    })
    .transpose()
}

pub(super) fn client_info_json(info: Option<&ClientInfo>) -> rusqlite::Result<Option<String>> {
    info.map(|info| {
        serde_json::to_string(info)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    })
    .transpose()
}

/// A publication row (`"offset", data, info, time`) as a [`Publication`].
pub(super) fn publication_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Arc<Publication>> {
    Ok(Arc::new(Publication {
        offset: uint(row, 0)?,
        data: raw_json(row.get(1)?, 1)?,
        info: client_info(row.get(2)?, 2)?,
        time: uint(row, 3)?,
    }))
}

/// About how many bytes a publication holds in memory.
pub(super) fn publication_bytes(publication: &Publication) -> usize {
    let info = publication.info.as_ref().map_or(0, |i| {
        i.user.len() + i.client.len() + i.info.as_ref().map_or(0, |v| v.get().len())
    });
    publication.data.get().len() + info + 96
}

pub(super) fn channel(
    conn: &Connection,
    name: &str,
    retention: Retention,
    recent_bytes: usize,
    now: u64,
) -> rusqlite::Result<ChannelSnapshot> {
    let found: Option<(String, u64)> = conn
        .prepare_cached("SELECT epoch, top FROM channels WHERE name = ?1")?
        .query_row(params![name], |row| Ok((row.get(0)?, uint(row, 1)?)))
        .optional()?;
    // Never stored: a fresh epoch, written by the first append (a read creates nothing).
    let Some((epoch, top)) = found else {
        return Ok(ChannelSnapshot {
            epoch: random_id(8),
            top: 0,
            recent: Vec::new(),
            complete: true,
        });
    };
    // The newest `size`, read backwards along the primary key, then put oldest first.
    let mut statement = conn.prepare_cached(
        r#"SELECT "offset", data, info, time FROM publications
           WHERE channel = ?1 AND expires > ?2 ORDER BY "offset" DESC LIMIT ?3"#,
    )?;
    let rows = statement.query_map(
        params![name, int(now), int(retention.size as u64)],
        publication_row,
    )?;
    let (mut recent, mut bytes, mut complete) = (Vec::new(), 0usize, true);
    for publication in rows {
        let publication = publication?;
        bytes = bytes.saturating_add(publication_bytes(&publication));
        if bytes > recent_bytes {
            complete = false;
            break;
        }
        recent.push(publication);
    }
    recent.reverse();
    Ok(ChannelSnapshot {
        epoch,
        top,
        recent,
        complete,
    })
}

pub(super) fn history(
    conn: &Connection,
    channel: &str,
    query: HistoryQuery,
    now: u64,
) -> rusqlite::Result<Vec<Arc<Publication>>> {
    let before = query.before.map_or(i64::MAX, int);
    let sql = if query.newest {
        r#"SELECT "offset", data, info, time FROM publications
           WHERE channel = ?1 AND "offset" > ?2 AND "offset" < ?3 AND expires > ?4
           ORDER BY "offset" DESC LIMIT ?5"#
    } else {
        r#"SELECT "offset", data, info, time FROM publications
           WHERE channel = ?1 AND "offset" > ?2 AND "offset" < ?3 AND expires > ?4
           ORDER BY "offset" LIMIT ?5"#
    };
    let mut found = conn
        .prepare_cached(sql)?
        .query_map(
            params![
                channel,
                int(query.after),
                before,
                int(now),
                int(query.limit as u64)
            ],
            publication_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if query.newest {
        found.reverse();
    }
    Ok(found)
}

pub(super) fn append(
    conn: &Connection,
    channel: &str,
    epoch: &str,
    publication: &Publication,
    retention: Retention,
    now: u64,
) -> rusqlite::Result<Result<(), StoreError>> {
    let offset = int(publication.offset);
    let expires = expiry(now, retention.ttl);
    // `top` is max(top, offset), never set blindly: appends of one channel can reach the
    // queue slightly out of order (offsets are reserved first, then written by separate
    // tasks). The WHERE refuses a publication of another epoch than the stored one. A
    // channel the sweep forgot comes back with the epoch and offset the hub gives. No
    // indexed column changes here: an index over a value every append moves (say, when
    // the newest publication expires) cost 11% of the publications/s over 1000 channels.
    let updated = conn
        .prepare_cached(
            "INSERT INTO channels (name, epoch, top) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET top = max(top, excluded.top)
             WHERE epoch = excluded.epoch",
        )?
        .execute(params![channel, epoch, offset])?;
    if updated == 0 {
        return Ok(Err(StoreError::Failed(format!(
            "channel {channel:?} is stored with another epoch than {epoch}"
        ))));
    }
    conn.prepare_cached(
        r#"INSERT INTO publications (channel, "offset", data, info, time, expires)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
    )?
    .execute(params![
        channel,
        offset,
        publication.data.get(),
        client_info_json(publication.info.as_ref())?,
        int(publication.time),
        expires,
    ])?;
    // Retention by size, in the same transaction: one range delete on the primary key,
    // usually of a single row.
    let size = int(retention.size as u64);
    if offset > size {
        conn.prepare_cached(r#"DELETE FROM publications WHERE channel = ?1 AND "offset" <= ?2"#)?
            .execute(params![channel, offset - size])?;
    }
    Ok(Ok(()))
}

/// Unexpired messages from the server API (`sender_user` NULL) in mailbox `?1` at `?2`.
/// The three counts are ranges of the covering index `mailbox_sender (user, sender_user,
/// expires)`: no table row is read, however large the mailbox.
pub(super) const COUNT_FROM_SERVER: &str = "SELECT count(*) FROM mailbox
    WHERE user = ?1 AND sender_user IS NULL AND expires > ?2";
/// Unexpired messages from user `?3`.
pub(super) const COUNT_FROM_SENDER: &str = "SELECT count(*) FROM mailbox
    WHERE user = ?1 AND sender_user = ?3 AND expires > ?2";
/// Unexpired messages from any user.
pub(super) const COUNT_FROM_USERS: &str = "SELECT count(*) FROM mailbox
    WHERE user = ?1 AND sender_user IS NOT NULL AND expires > ?2";

/// Stores a message; `room` is asked (the storage budget) only if it is to be kept.
pub(super) fn mailbox_push(
    conn: &Connection,
    push: &Push,
    now: u64,
    room: impl FnOnce() -> Result<(), StoreError>,
) -> rusqlite::Result<Result<Arc<PrivateMessage>, StoreError>> {
    let (user, from, data, limits) = (&push.user, push.from.as_ref(), &push.data, push.limits);
    // Expired messages do not count: they are gone as far as the user can tell, even if
    // the sweep has not deleted them yet.
    let count = |sql: &str, sender: Option<&str>| -> rusqlite::Result<u64> {
        let mut statement = conn.prepare_cached(sql)?;
        match sender {
            Some(sender) => {
                statement.query_row(params![user, int(now), sender], |row| uint(row, 0))
            }
            None => statement.query_row(params![user, int(now)], |row| uint(row, 0)),
        }
    };
    let full = match from {
        None => {
            let held = count(COUNT_FROM_SERVER, None)?;
            (held >= limits.server_size as u64)
                .then_some((MailboxQuota::Server, limits.server_size))
        }
        Some(sender) => {
            let from_sender = count(COUNT_FROM_SENDER, Some(&sender.user))?;
            let from_users = count(COUNT_FROM_USERS, None)?;
            if from_sender >= limits.per_sender as u64 {
                Some((MailboxQuota::Sender, limits.per_sender))
            } else {
                (from_users >= limits.size as u64).then_some((MailboxQuota::Users, limits.size))
            }
        }
    };
    if let (Some((quota, limit)), false) = (full, push.online) {
        return Ok(Err(StoreError::MailboxFull { quota, limit }));
    }
    let full = full.is_some();
    if !full {
        if let Err(refused) = room() {
            return Ok(Err(refused));
        }
    }

    conn.prepare_cached(
        "INSERT INTO mailbox (user, sender, sender_user, data, time, expires)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        user,
        client_info_json(from)?,
        from.map(|f| f.user.as_str()),
        data.get(),
        int(now),
        expiry(now, limits.ttl),
    ])?;
    let id = conn.last_insert_rowid();
    if full {
        // For an online user past the bound: the id is taken (AUTOINCREMENT never hands
        // it out again) but the message is not kept; the hub delivers it live.
        conn.prepare_cached("DELETE FROM mailbox WHERE id = ?1")?
            .execute(params![id])?;
    }
    Ok(Ok(Arc::new(PrivateMessage {
        id: id as u64,
        from: from.cloned(),
        data: data.clone(),
        time: now,
    })))
}

pub(super) fn mailbox_page(
    conn: &Connection,
    user: &str,
    after: u64,
    limit: PageLimit,
    now: u64,
) -> rusqlite::Result<MailboxPage> {
    // One more than asked, to tell whether more follow; rows are read only until the
    // page is full.
    let mut statement = conn.prepare_cached(
        "SELECT id, sender, data, time FROM mailbox
         WHERE user = ?1 AND id > ?2 AND expires > ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = statement.query_map(
        params![
            user,
            int(after),
            int(now),
            int(limit.messages as u64).saturating_add(1)
        ],
        |row| {
            Ok(Arc::new(PrivateMessage {
                id: uint(row, 0)?,
                from: client_info(row.get(1)?, 1)?,
                data: raw_json(row.get(2)?, 2)?,
                time: uint(row, 3)?,
            }))
        },
    )?;
    let (mut messages, mut bytes, mut more) = (Vec::new(), 0usize, false);
    for message in rows {
        let message = message?;
        let size = super::super::message_bytes(&message);
        let fits = messages.len() < limit.messages
            && (messages.is_empty() || bytes.saturating_add(size) <= limit.bytes);
        if !fits {
            more = true;
            break;
        }
        bytes += size;
        messages.push(message);
    }
    Ok(MailboxPage { messages, more })
}

/// Deletes up to [`SWEEP_BATCH`](super::SWEEP_BATCH) expired rows of each table (found
/// through their `expires` indexes); returns the largest count, so the caller knows
/// whether to go on. A channel is forgotten once its last publication expired and none
/// is left: names published once do not stay forever, and the next use of such a name
/// starts a new epoch, which tells clients that nothing can be recovered.
pub(super) fn sweep(conn: &Connection, now: u64) -> rusqlite::Result<usize> {
    let batch = int(super::SWEEP_BATCH as u64);
    // The channels that lost publications: those left with none are forgotten below.
    let mut emptied = std::collections::BTreeSet::new();
    let publications = {
        let mut statement = conn.prepare_cached(
            r#"DELETE FROM publications WHERE (channel, "offset") IN
               (SELECT channel, "offset" FROM publications WHERE expires <= ?1 LIMIT ?2)
               RETURNING channel"#,
        )?;
        let mut rows = statement.query(params![int(now), batch])?;
        let mut deleted = 0;
        while let Some(row) = rows.next()? {
            emptied.insert(row.get::<_, String>(0)?);
            deleted += 1;
        }
        deleted
    };
    let messages = conn
        .prepare_cached(
            "DELETE FROM mailbox WHERE id IN
             (SELECT id FROM mailbox WHERE expires <= ?1 LIMIT ?2)",
        )?
        .execute(params![int(now), batch])?;
    // Retention by size never deletes a channel's newest publication, so a channel
    // without publications lost its last one to expiry, here: its position can go (the
    // next use of the name starts a new epoch; an append while the hub still holds the
    // channel stores it again).
    let mut forget = conn.prepare_cached(
        "DELETE FROM channels WHERE name = ?1
         AND NOT EXISTS (SELECT 1 FROM publications WHERE channel = ?1)",
    )?;
    for channel in &emptied {
        forget.execute(params![channel])?;
    }
    Ok(publications.max(messages))
}
