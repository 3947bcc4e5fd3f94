//! The SQLite store: history positions, recent publications and offline mailboxes in one
//! SQLite file (WAL mode), so they survive a restart or a `kill -9`.
//!
//! # One writer, group commit
//! A dedicated thread owns the only connection. [`Store`] methods send it a request over a
//! queue and await a oneshot answer, so no SQLite call ever runs on the async runtime. The
//! queue is unbounded so that `append` can queue synchronously, under the hub's channel
//! lock, which makes commits follow offsets; it is bounded in practice because every
//! caller waits for its answer. The writer takes every request waiting in the queue (up to [`BATCH`]), runs
//! them all in ONE transaction, commits, and only then answers them: durability costs one
//! commit (one fsync) per batch rather than per publication, and the busier the server,
//! the larger the batches. An `append` is answered only after its COMMIT returned, so a
//! publication is acknowledged only once it is on disk. Reads (`channel`, pending
//! messages) go through the same queue, so they always see every earlier write.
//!
//! # fsync policy: `synchronous = FULL`
//! In WAL mode, `FULL` fsyncs the log at every commit: an acknowledged publication
//! survives a power loss or a kernel crash, not only a crash of the process. `NORMAL`
//! would fsync only at checkpoints: it survives `kill -9` (the log is in the OS's page
//! cache) but may lose the last commits on power loss. Because commits are grouped, the
//! fsync is paid once per batch, and its cost fades as publishers get concurrent: measured
//! with the `throughput` test below (numbers in its doc), FULL acknowledges ~40% of
//! NORMAL's rate with only 8 publications in flight (batches of at most 8), but the same
//! rate (within 5–15%) with 256 in flight, where it still exceeds 50,000/s over 1000
//! channels. That is not a price worth a weaker promise, so the server uses FULL.
//!
//! # Schema (`user_version` 1)
//! - `channels(name PK, epoch, top)`: each stream's epoch and latest offset. Rows are
//!   kept after their publications expire, so offsets continue under the same epoch.
//! - `publications(channel, "offset", data, info, time, expires)`, primary key
//!   `(channel, "offset")`, `WITHOUT ROWID` so a channel's history is one contiguous range
//!   of the table. `info` is the publisher's [`ClientInfo`] as JSON.
//! - `mailbox(id AUTOINCREMENT, user, sender, data, time, expires)`: `AUTOINCREMENT` so ids
//!   never repeat, even after the newest message was acknowledged and the server restarted.
//!
//! Expiry times are absolute Unix milliseconds ([`now_ms`]): `Instant`s do not survive a
//! restart. Retention by size is enforced in the `append` transaction (one range delete on
//! the primary key); retention by time by [`Store::sweep`], in bounded batches
//! ([`SWEEP_BATCH`] rows per table per transaction) so it never holds the writer long.
//!
//! # Failures
//! Opening checks everything it can and names the file in its error: not a SQLite file,
//! a directory that cannot be written, a failed `PRAGMA quick_check`, a schema from a
//! newer version, another process holding the file (`locking_mode = EXCLUSIVE`: two
//! servers must never write one store). At run time, a failing batch is rolled back and
//! its requests are retried one by one, each in its own transaction, so one bad request
//! cannot fail its neighbours; whatever still fails is answered [`StoreError::Failed`],
//! nothing is acknowledged that was not committed, and the writer goes on serving.
//!
//! Namespaces without history are never written: the hub does not `append` their
//! publications, so the store cannot know their offsets, and [`Store::channel`] gives them
//! a fresh epoch each time, as the memory store does (clients learn that continuity was
//! not kept instead of seeing offsets start over under the same epoch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use super::{
    BoxFuture, ChannelSnapshot, HistoryQuery, MailboxLimits, MailboxPage, MailboxQuota, PageLimit,
    Retention, Store, StoreError, StoreUsage,
};
use crate::error::Error;
use crate::hub::random_id;
use crate::wire::{ClientInfo, PrivateMessage, Publication, now_ms};

/// Most requests run in one transaction. Bounds how long one batch holds the writer (and
/// the answers of its first request) while keeping the fsync cost per request small.
pub const BATCH: usize = 1024;

/// Most expired rows deleted per table in one sweep transaction.
pub const SWEEP_BATCH: usize = 1000;

/// The page cache's bound, in KiB (`PRAGMA cache_size`).
const CACHE_KIB: i64 = 32 * 1024;

/// Log pages (4 KiB each) between automatic checkpoints (`PRAGMA wal_autocheckpoint`).
const CHECKPOINT_PAGES: i64 = 10_000;

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long opening waits for another connection to release the file (a previous server
/// process still shutting down) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// When commits reach the disk (`PRAGMA synchronous`); see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync at every commit: survives power loss.
    Full,
    /// fsync at checkpoints only: survives a process crash, not a power loss.
    Normal,
}

/// History and mailboxes in a SQLite file; see the module doc.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// `None` only while dropping: closing the queue tells the writer to finish.
    /// Unbounded so that `append` can queue synchronously, under the hub's channel lock
    /// (see [`Store::append`]); what waits is bounded anyway, since every request's
    /// caller waits for its answer.
    requests: Option<mpsc::UnboundedSender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Changes when the store may have lost acknowledged writes (see
    /// [`Store::mailbox_epoch`]).
    mailbox_epoch: String,
}

impl SqliteStore {
    /// Opens (creating if missing) the store at `path`, checks it, and starts its writer
    /// thread. The directory must exist. Errors name the file.
    pub fn open(path: &Path) -> Result<SqliteStore, Error> {
        Self::open_with(path, Synchronous::Full)
    }

    /// [`open`](Self::open) with another fsync policy (for measurements; the server uses
    /// [`Synchronous::Full`]).
    pub fn open_with(path: &Path, sync: Synchronous) -> Result<SqliteStore, Error> {
        let fail = |message: String| Error::Store {
            path: path.to_owned(),
            message,
        };
        let conn = open_connection(path, sync).map_err(fail)?;
        let (requests, queue) = mpsc::unbounded_channel();
        let writer = Writer {
            conn,
            queue,
            path: path.to_owned(),
        };
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        info!(path = %path.display(), ?sync, "sqlite store open");
        Ok(SqliteStore {
            path: path.to_owned(),
            requests: Some(requests),
            writer: Some(writer),
            mailbox_epoch: random_id(8),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `op` for the writer now; the returned future waits for its answer (given
    /// after the commit).
    fn enqueue(&self, op: Op) -> BoxFuture<'static, Result<Answer, StoreError>> {
        let stopped = || StoreError::Failed("the store's writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        let queued = self
            .requests
            .as_ref()
            .is_some_and(|queue| queue.send(Request { op, reply }).is_ok());
        Box::pin(async move {
            if !queued {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        })
    }

    /// Queues `op` and waits for its answer.
    async fn call(&self, op: Op) -> Result<Answer, StoreError> {
        self.enqueue(op).await
    }
}

impl Drop for SqliteStore {
    /// Closes the queue and waits for the writer: it answers (and commits) every request
    /// already queued before it returns, so nothing acknowledged is lost at shutdown.
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                error!(path = %self.path.display(), "the sqlite writer thread panicked");
            }
        }
    }
}

/// Opens and checks the connection, creating or checking the schema.
fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, String> {
    // The two failures an operator meets most get plain words, whatever the statement.
    let sql = |what: &str| {
        let what = what.to_owned();
        move |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => {
                format!("not a SQLite database ({e}); move it away or point to another file")
            }
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                format!("in use by another process, probably another server ({e})")
            }
            _ => format!("{what}: {e}"),
        }
    };
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        format!("cannot open: {e} (does the directory exist, and can this user write to it?)")
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("busy_timeout"))?;
    // EXCLUSIVE: the writer is the only connection there should ever be; holding the lock
    // makes a second server on the same file fail at start-up rather than interleave
    // writes, and lets WAL keep its index in memory (no -shm file).
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(sql("cannot lock"))?;
    // The first statement that reads the file: a file that is not a database fails here.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql("cannot enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("cannot enable WAL (journal_mode is {mode})"));
    }
    let level = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(sql("cannot set synchronous"))?;
    // A larger page cache than SQLite's 2 MiB default: with many channels, every append
    // lands on a different page of `publications`, and a miss costs a read. Allocated only
    // as pages are used.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(sql("cannot set cache_size"))?;
    // Checkpoint every ~40 MB of log instead of SQLite's ~4 MB: a page written by many
    // commits is copied into the file once per checkpoint, not once per 1000 frames
    // (measured: about +20% publications/s across 1000 channels).
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
        .map_err(sql("cannot set wal_autocheckpoint"))?;
    quick_check(&conn)?;
    migrate(&conn)?;
    // Take the write lock now (held from here on in EXCLUSIVE mode), so a file already in
    // use by another server is reported at start-up, not at the first publication.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(sql("cannot lock for writing (is another server using it?)"))?;
    Ok(conn)
}

/// `PRAGMA quick_check`: a structural check of every page, much cheaper than
/// `integrity_check` (no index-content cross-check) but it finds torn or overwritten pages.
fn quick_check(conn: &Connection) -> Result<(), String> {
    let problems = (|| {
        let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })()
    .map_err(|e| format!("cannot check the file: {e}"))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(format!(
        "the file is corrupt (PRAGMA quick_check: {}); restore it from a backup or move it away",
        problems.join("; ").replace('\n', "; ")
    ))
}

/// Creates the schema in a new file, or checks the version of an existing one.
fn migrate(conn: &Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| format!("cannot create the schema: {e}");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    match version {
        SCHEMA_VERSION => Ok(()),
        0 => {
            // Version 0 is a new file, unless it holds someone else's tables.
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(sql)?;
            if tables > 0 {
                return Err("not a Switchboard store (it holds other tables)".into());
            }
            // One transaction: a crash leaves either no schema or all of it.
            conn.execute_batch(&format!(
                r#"
                BEGIN IMMEDIATE;
                CREATE TABLE channels (
                    name  TEXT PRIMARY KEY NOT NULL,
                    epoch TEXT NOT NULL,
                    top   INTEGER NOT NULL
                );
                CREATE TABLE publications (
                    channel  TEXT NOT NULL,
                    "offset" INTEGER NOT NULL,
                    data     TEXT NOT NULL,
                    info     TEXT,
                    time     INTEGER NOT NULL,
                    expires  INTEGER NOT NULL,
                    PRIMARY KEY (channel, "offset")
                ) WITHOUT ROWID;
                CREATE INDEX publications_expires ON publications (expires);
                CREATE TABLE mailbox (
                    id      INTEGER PRIMARY KEY AUTOINCREMENT,
                    user    TEXT NOT NULL,
                    sender  TEXT,
                    data    TEXT NOT NULL,
                    time    INTEGER NOT NULL,
                    expires INTEGER NOT NULL
                );
                CREATE INDEX mailbox_user ON mailbox (user, id);
                CREATE INDEX mailbox_expires ON mailbox (expires);
                PRAGMA user_version = {SCHEMA_VERSION};
                COMMIT;
                "#
            ))
            .map_err(sql)
        }
        newer => Err(format!(
            "written by a newer Switchboard (schema version {newer}; this one knows {SCHEMA_VERSION})"
        )),
    }
}

/// One request to the writer, with where to send its answer.
#[derive(Debug)]
struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// What a request asks the writer to do.
#[derive(Debug)]
enum Op {
    Channel {
        name: String,
        retention: Retention,
        recent_bytes: usize,
    },
    History {
        channel: String,
        query: HistoryQuery,
    },
    Append {
        channel: String,
        epoch: String,
        publication: Arc<Publication>,
        retention: Retention,
    },
    Push {
        user: String,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
    },
    Page {
        user: String,
        after: u64,
        limit: PageLimit,
    },
    Ack {
        user: String,
        upto: u64,
    },
    /// Deletes up to [`SWEEP_BATCH`] expired rows of each table.
    Sweep,
    /// Runs SQL in the writer (tests: to make the disk "full").
    #[cfg(test)]
    Sql(String),
}

/// The writer's answer to a request, matching its [`Op`].
#[derive(Debug)]
enum Answer {
    Snapshot(ChannelSnapshot),
    Publications(Vec<Arc<Publication>>),
    Done,
    Message(Arc<PrivateMessage>),
    Page(MailboxPage),
    /// Rows deleted: the most of either table.
    Swept(usize),
}

/// An answer of the wrong kind: a bug in this file, reported rather than panicking.
fn mismatched(answer: Answer) -> StoreError {
    StoreError::Failed(format!("internal error: unexpected answer {answer:?}"))
}

/// The thread that owns the connection.
struct Writer {
    conn: Connection,
    queue: mpsc::UnboundedReceiver<Request>,
    path: PathBuf,
}

impl Writer {
    /// Serves batches until the queue is closed and empty (the store was dropped).
    fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = self.queue.blocking_recv() {
            batch.push(first);
            while batch.len() < BATCH {
                match self.queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.serve(&mut batch);
        }
    }

    /// Runs `batch` in one transaction and answers every request after the commit. If
    /// anything fails, the transaction is rolled back and each request retried alone, so a
    /// bad request fails by itself while a broken disk fails them all.
    fn serve(&mut self, batch: &mut Vec<Request>) {
        match self.execute(batch) {
            Ok(answers) => {
                for (request, answer) in batch.drain(..).zip(answers) {
                    // The caller may have gone away; what it asked is done all the same.
                    let _ = request.reply.send(answer);
                }
            }
            Err(err) => {
                let requests = batch.len();
                let mut failed = 0;
                for request in batch.drain(..) {
                    // A batch of one already failed alone.
                    let retried = if requests == 1 {
                        Err(err.to_string())
                    } else {
                        self.execute(std::slice::from_ref(&request))
                            .map_err(|e| e.to_string())
                    };
                    let answer = match retried {
                        Ok(mut answers) => answers.pop().unwrap_or_else(|| {
                            Err(StoreError::Failed("internal error: no answer".into()))
                        }),
                        Err(why) => {
                            failed += 1;
                            Err(StoreError::Failed(format!("database error: {why}")))
                        }
                    };
                    let _ = request.reply.send(answer);
                }
                // One line per batch, not per request: a broken disk fails them all.
                error!(path = %self.path.display(), cause = %err, requests, failed,
                    "sqlite batch failed; its requests were retried one by one");
            }
        }
    }

    /// Runs `requests` in one transaction. `Err` means nothing was committed; an `Ok`
    /// answer may still be a refusal (`MailboxFull`), which does not roll back the others.
    fn execute(
        &mut self,
        requests: &[Request],
    ) -> rusqlite::Result<Vec<Result<Answer, StoreError>>> {
        // A failed ROLLBACK (I/O error) can leave the connection inside a transaction;
        // clear it, or every later batch would fail to BEGIN.
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let answers = requests
            .iter()
            .map(|request| execute(&tx, &request.op, now))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Dropping `tx` on an error above rolls back.
        tx.commit()?;
        Ok(answers)
    }
}

/// SQLite integers are signed: clamp (offsets and ids never come near 2^63, but an `ack`
/// from a client may say anything).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An INTEGER column that holds a `u64` (written through [`int`]).
fn uint(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(column, value))
}

/// Unix milliseconds `ttl` after `now`.
fn expiry(now: u64, ttl: Duration) -> i64 {
    int(now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
}

/// A TEXT column holding JSON, as a [`RawValue`].
fn raw_json(text: String, column: usize) -> rusqlite::Result<Arc<RawValue>> {
    RawValue::from_string(text)
        .map(Arc::from)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// A nullable TEXT column holding a [`ClientInfo`] as JSON.
fn client_info(text: Option<String>, column: usize) -> rusqlite::Result<Option<ClientInfo>> {
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
    })
    .transpose()
}

fn client_info_json(info: Option<&ClientInfo>) -> rusqlite::Result<Option<String>> {
    info.map(|info| {
        serde_json::to_string(info)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    })
    .transpose()
}

/// Runs one request inside the batch's transaction. Statements are cached: they are
/// prepared once per connection, not per request.
fn execute(conn: &Connection, op: &Op, now: u64) -> rusqlite::Result<Result<Answer, StoreError>> {
    Ok(match op {
        Op::Channel {
            name,
            retention,
            recent_bytes,
        } => Ok(Answer::Snapshot(channel(
            conn,
            name,
            *retention,
            *recent_bytes,
            now,
        )?)),
        Op::History { channel, query } => {
            Ok(Answer::Publications(history(conn, channel, *query, now)?))
        }
        Op::Append {
            channel,
            epoch,
            publication,
            retention,
        } => append(conn, channel, epoch, publication, *retention, now)?.map(|()| Answer::Done),
        Op::Push {
            user,
            from,
            data,
            limits,
            online,
        } => mailbox_push(conn, user, from.as_ref(), data, *limits, *online, now)?
            .map(Answer::Message),
        Op::Page { user, after, limit } => {
            Ok(Answer::Page(mailbox_page(conn, user, *after, *limit, now)?))
        }
        Op::Ack { user, upto } => {
            conn.prepare_cached("DELETE FROM mailbox WHERE user = ?1 AND id <= ?2")?
                .execute(params![user, int(*upto)])?;
            Ok(Answer::Done)
        }
        Op::Sweep => Ok(Answer::Swept(sweep(conn, now)?)),
        #[cfg(test)]
        Op::Sql(sql) => {
            conn.execute_batch(sql)?;
            Ok(Answer::Done)
        }
    })
}

/// A publication row (`"offset", data, info, time`) as a [`Publication`].
fn publication_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Arc<Publication>> {
    Ok(Arc::new(Publication {
        offset: uint(row, 0)?,
        data: raw_json(row.get(1)?, 1)?,
        info: client_info(row.get(2)?, 2)?,
        time: uint(row, 3)?,
    }))
}

/// About how many bytes a publication holds in memory.
fn publication_bytes(publication: &Publication) -> usize {
    let info = publication.info.as_ref().map_or(0, |i| {
        i.user.len() + i.client.len() + i.info.as_ref().map_or(0, |v| v.get().len())
    });
    publication.data.get().len() + info + 96
}

fn channel(
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

fn history(
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

fn append(
    conn: &Connection,
    channel: &str,
    epoch: &str,
    publication: &Publication,
    retention: Retention,
    now: u64,
) -> rusqlite::Result<Result<(), StoreError>> {
    let offset = int(publication.offset);
    // `top` is max(top, offset), never set blindly: appends of one channel can reach the
    // queue slightly out of order (offsets are reserved first, then written by separate
    // tasks). The WHERE refuses a publication of another epoch than the stored one.
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
        expiry(now, retention.ttl),
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

fn mailbox_push(
    conn: &Connection,
    user: &str,
    from: Option<&ClientInfo>,
    data: &Arc<RawValue>,
    limits: MailboxLimits,
    online: bool,
    now: u64,
) -> rusqlite::Result<Result<Arc<PrivateMessage>, StoreError>> {
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
            let held = count(
                "SELECT count(*) FROM mailbox WHERE user = ?1 AND expires > ?2 AND sender IS NULL",
                None,
            )?;
            (held >= limits.server_size as u64)
                .then_some((MailboxQuota::Server, limits.server_size))
        }
        Some(sender) => {
            let from_sender = count(
                "SELECT count(*) FROM mailbox WHERE user = ?1 AND expires > ?2
                 AND sender IS NOT NULL AND json_extract(sender, '$.user') = ?3",
                Some(&sender.user),
            )?;
            let from_users = count(
                "SELECT count(*) FROM mailbox WHERE user = ?1 AND expires > ?2 AND sender IS NOT NULL",
                None,
            )?;
            if from_sender >= limits.per_sender as u64 {
                Some((MailboxQuota::Sender, limits.per_sender))
            } else {
                (from_users >= limits.size as u64).then_some((MailboxQuota::Users, limits.size))
            }
        }
    };
    if let (Some((quota, limit)), false) = (full, online) {
        return Ok(Err(StoreError::MailboxFull { quota, limit }));
    }
    let full = full.is_some();

    conn.prepare_cached(
        "INSERT INTO mailbox (user, sender, data, time, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        user,
        client_info_json(from)?,
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

fn mailbox_page(
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
        let size = super::message_bytes(&message);
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

/// Deletes up to [`SWEEP_BATCH`] expired rows of each table (found through their
/// `expires` indexes); returns the larger count, so the caller knows whether to go on.
fn sweep(conn: &Connection, now: u64) -> rusqlite::Result<usize> {
    let batch = int(SWEEP_BATCH as u64);
    let publications = conn
        .prepare_cached(
            r#"DELETE FROM publications WHERE (channel, "offset") IN
               (SELECT channel, "offset" FROM publications WHERE expires <= ?1 LIMIT ?2)"#,
        )?
        .execute(params![int(now), batch])?;
    let messages = conn
        .prepare_cached(
            "DELETE FROM mailbox WHERE id IN
             (SELECT id FROM mailbox WHERE expires <= ?1 LIMIT ?2)",
        )?
        .execute(params![int(now), batch])?;
    Ok(publications.max(messages))
}

/// A namespace that keeps no history: nothing of it is stored (see the module doc).
fn keeps_nothing(retention: Retention) -> bool {
    retention.size == 0 || retention.ttl.is_zero()
}

impl Store for SqliteStore {
    fn channel<'a>(
        &'a self,
        channel: &'a str,
        retention: Retention,
        recent_bytes: usize,
    ) -> BoxFuture<'a, Result<ChannelSnapshot, StoreError>> {
        Box::pin(async move {
            if keeps_nothing(retention) {
                return Ok(ChannelSnapshot {
                    epoch: random_id(8),
                    top: 0,
                    recent: Vec::new(),
                    complete: true,
                });
            }
            let op = Op::Channel {
                name: channel.to_owned(),
                retention,
                recent_bytes,
            };
            match self.call(op).await? {
                Answer::Snapshot(snapshot) => Ok(snapshot),
                other => Err(mismatched(other)),
            }
        })
    }

    fn append(
        &self,
        channel: &str,
        epoch: &str,
        publication: Arc<Publication>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        if keeps_nothing(retention) {
            return Box::pin(async { Ok(()) });
        }
        // Queued now, so appends commit in the order the hub made them.
        let answer = self.enqueue(Op::Append {
            channel: channel.to_owned(),
            epoch: epoch.to_owned(),
            publication,
            retention,
        });
        Box::pin(async move {
            match answer.await? {
                Answer::Done => Ok(()),
                other => Err(mismatched(other)),
            }
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
            let op = Op::Push {
                user: user.to_owned(),
                from,
                data,
                limits,
                online,
            };
            match self.call(op).await? {
                Answer::Message(message) => Ok(message),
                other => Err(mismatched(other)),
            }
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<Vec<Arc<Publication>>, StoreError>> {
        Box::pin(async move {
            let op = Op::History {
                channel: channel.to_owned(),
                query,
            };
            match self.call(op).await? {
                Answer::Publications(found) => Ok(found),
                other => Err(mismatched(other)),
            }
        })
    }

    fn mailbox_page<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: PageLimit,
    ) -> BoxFuture<'a, Result<MailboxPage, StoreError>> {
        Box::pin(async move {
            let op = Op::Page {
                user: user.to_owned(),
                after,
                limit,
            };
            match self.call(op).await? {
                Answer::Page(page) => Ok(page),
                other => Err(mismatched(other)),
            }
        })
    }

    fn mailbox_ack<'a>(
        &'a self,
        user: &'a str,
        upto: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let op = Op::Ack {
                user: user.to_owned(),
                upto,
            };
            match self.call(op).await? {
                Answer::Done => Ok(()),
                other => Err(mismatched(other)),
            }
        })
    }

    fn mailbox_epoch(&self) -> String {
        self.mailbox_epoch.clone()
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage::default()
    }

    fn sweep(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // One bounded batch per request: other requests queue in between, so a large
            // backlog of expired rows never stalls publications for long.
            loop {
                match self.call(Op::Sweep).await? {
                    Answer::Swept(n) if n < SWEEP_BATCH => return Ok(()),
                    Answer::Swept(_) => {}
                    other => return Err(mismatched(other)),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
