//! The SQLite store: history positions, recent publications and offline mailboxes in one
//! SQLite file (WAL mode), so they survive a restart or a `kill -9`.
//!
//! # One writer, group commit
//! A dedicated thread owns the only connection that writes. [`Store`] methods that write
//! send it a request over a queue and await a oneshot answer, so no SQLite call ever runs
//! on the async runtime. The queue is unbounded so that `append` can queue synchronously,
//! under the hub's channel lock, which makes commits follow offsets; it is bounded in
//! practice because every caller waits for its answer. The writer takes every request
//! waiting in the queue (up to [`BATCH`]), runs them all in ONE transaction, commits, and
//! only then answers them: durability costs one commit (one fsync) per batch rather than
//! per publication, and the busier the server, the larger the batches. An `append` is
//! answered only after its COMMIT returned, so a publication is acknowledged only once it
//! is on disk.
//!
//! # Reads beside the writer
//! `channel`, `history` and `mailbox_page` never enter the writer's queue: they run on
//! a few read-only connections ([`READERS`] at most at once) on blocking threads, so a
//! large read (a connect that pages through a full mailbox) never delays a publication's
//! acknowledgement. WAL lets readers and the writer work at once, each reader on the
//! snapshot of the last commit when its read transaction began. Every write is answered
//! after its COMMIT and a read begins after its call, so a read sees every write
//! acknowledged before it was made. That needs the WAL index in shared memory (the
//! `-shm` file), so the file cannot be opened in `locking_mode = EXCLUSIVE`: a lock file
//! keeps a second server off instead (see `lock.rs`).
//!
//! # Storage budget
//! Appends and messages are refused as [`StoreError::Full`], with a message naming the
//! setting and the numbers, when the database (pages in use and log) would pass
//! `storage.max_bytes`, or while the filesystem has less than `storage.min_free_bytes`
//! free (read at most once a second; the database is measured at every batch past half
//! the budget, once a second below). Deletions (acks, the sweep) always proceed, and
//! free pages are reused, so room comes back as retention and acks delete. When the log
//! alone stands in the way, it is checkpointed and truncated first. `usage` reports the
//! bytes and the refusals. See `budget.rs`.
//!
//! # fsync policy: `synchronous = FULL`
//! In WAL mode, `FULL` fsyncs the log at every commit: an acknowledged publication
//! survives a power loss or a kernel crash, not only a crash of the process. `NORMAL`
//! would fsync only at checkpoints: it survives `kill -9` (the log is in the OS's page
//! cache) but may lose the last commits on power loss. Because commits are grouped, the
//! fsync is paid once per batch, and its cost fades as publishers get concurrent: measured
//! with the `throughput` test (numbers in its doc), FULL acknowledges ~40% of
//! NORMAL's rate with only 8 publications in flight (batches of at most 8), but the same
//! rate (within 5–15%) with 256 in flight, where it still exceeds 50,000/s over 1000
//! channels. That is not a price worth a weaker promise, so the server uses FULL.
//!
//! # Schema (`user_version` 2)
//! - `meta(key PK, value)`: the mailbox epoch (`mailbox_epoch`), kept across restarts so
//!   clients keep the ids they saw; it changes only when acknowledged writes may be lost.
//! - `channels(name PK, epoch, top)`: each stream's epoch and latest offset. A row stays
//!   while publications are left, so offsets continue under the same epoch across
//!   restarts; when the sweep deletes a channel's last publication it deletes the row too
//!   (names published once do not stay forever), and the next use of the name starts a
//!   new epoch. An append to a channel the
//!   hub still holds stores it again with the hub's epoch and offset. Reads never create
//!   a row.
//! - `publications(channel, "offset", data, info, time, expires)`, primary key
//!   `(channel, "offset")`, `WITHOUT ROWID` so a channel's history is one contiguous range
//!   of the table. `info` is the publisher's [`ClientInfo`] as JSON.
//! - `mailbox(id AUTOINCREMENT, user, sender, data, time, expires, sender_user)`:
//!   `AUTOINCREMENT` so ids never repeat, even after the newest message was acknowledged
//!   and the server restarted. `sender` is the sender's [`ClientInfo`] as JSON;
//!   `sender_user` its user (NULL: the server API), indexed with `(user, sender_user,
//!   expires)` so the mailbox quotas are counted on the index alone.
//!
//! Version 1 files are migrated in place, in one transaction, when opened.
//!
//! Expiry times are absolute Unix milliseconds (`now_ms`): `Instant`s do not survive a
//! restart. Retention by size is enforced in the `append` transaction (one range delete on
//! the primary key); retention by time by [`Store::sweep`], in bounded batches
//! ([`SWEEP_BATCH`] rows per table per transaction) so it never holds the writer long.
//!
//! # Failures
//! Opening checks everything it can and names the file in its error: another server
//! holding the store (its lock file, waited for up to `BUSY_TIMEOUT`), a log that
//! cannot be read, not a SQLite file, a directory that cannot be written, a failed
//! `PRAGMA quick_check`, a schema from a newer version. At run time, a
//! failing batch is rolled back and its requests are retried one by one, each in its own
//! transaction, so one bad request cannot fail its neighbours; whatever still fails is
//! answered [`StoreError::Failed`], nothing is acknowledged that was not committed, and
//! the writer goes on serving. A panic while serving a batch is caught: the requests not
//! yet answered are answered `Failed` (their transaction rolled back as it unwound) and
//! the thread serves the next batch. After a failed batch (a full disk, an I/O error, a
//! panic; not a request's own constraint error) [`Store::health`] reports the reason
//! until a later write succeeds; while unhealthy, each periodic [`Store::sweep`] first
//! writes a one-row probe, so health comes back by itself once the cause is gone, not
//! only at the next publication. Failed batches are logged once a second at most.
//!
//! # A damaged log never rewinds offsets silently
//! Before SQLite opens the file (and replays the log, dropping everything after the
//! first frame that fails its checksum), `wal.rs` reads `<database>-wal` by the
//! documented format. A crash leaves at most a torn last frame; frames of the log's
//! current generation (its salts) *after* an invalid frame mean the log was damaged and
//! commits that may have been acknowledged are about to be dropped. Then, in the first
//! transaction after SQLite replayed the log, every channel gets a new epoch (offsets
//! continue from its stored top) and so does the mailbox, so clients are told
//! `recovered: false` instead of seeing offsets and ids again under the epoch they knew;
//! the damage (byte offset, frames and commits after it) is logged at error level.
//!
//! Namespaces without history are never written: the hub does not `append` their
//! publications, so the store cannot know their offsets, and [`Store::channel`] gives them
//! a fresh epoch each time, as the memory store does (clients learn that continuity was
//! not kept instead of seeing offsets start over under the same epoch).
//!
//! # Layout
//! `mod.rs` the store and its [`Store`] methods; `writer.rs` the writer thread and its
//! requests; `read.rs` the readers; `sql.rs` the statements; `schema.rs` opening,
//! pragmas and the schema; `budget.rs` the storage budget; `lock.rs` the lock file;
//! `wal.rs` the log check.

mod budget;
mod lock;
mod read;
mod schema;
mod sql;
mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::{error, info};

use super::{
    BoxFuture, ChannelSnapshot, HistoryQuery, MailboxLimits, MailboxPage, PageLimit, Retention,
    Store, StoreError, StoreUsage,
};
use crate::config::StorageConfig;
use crate::error::Error;
use crate::protocol::{ClientInfo, PrivateMessage, Publication, now_ms};
use crate::util::random_id;
use read::Readers;
use writer::{Answer, Op, Push, Request, Shared, Writer, mismatched};

/// Most requests run in one transaction. Bounds how long one batch holds the writer (and
/// the answers of its first request) while keeping the fsync cost per request small.
pub const BATCH: usize = 1024;

/// Most expired rows deleted per table in one sweep transaction.
pub const SWEEP_BATCH: usize = 1000;

/// Most reads running at once, each on its own read-only connection and blocking
/// thread. Reads are bounded (pages, retention), so a few suffice; more would take
/// blocking threads and cores from the rest of the server.
pub const READERS: usize = 4;

/// The writer's page cache bound, in KiB (`PRAGMA cache_size`).
const CACHE_KIB: i64 = 32 * 1024;

/// Log pages (4 KiB each) between automatic checkpoints (`PRAGMA wal_autocheckpoint`).
const CHECKPOINT_PAGES: i64 = 10_000;

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// How long opening waits for another server to release the store (one still exiting),
/// and a connection for another to release the file (a reader rebuilding the WAL index),
/// before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// When commits reach the disk (`PRAGMA synchronous`); see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync at every commit: survives power loss.
    Full,
    /// fsync at checkpoints only: survives a process crash, not a power loss.
    Normal,
}

/// How a store is opened: its fsync policy and its storage budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// When commits reach the disk; the server uses [`Synchronous::Full`].
    pub sync: Synchronous,
    /// `storage.max_bytes`: appends and messages that would take the database (pages in
    /// use and log) past it are refused.
    pub max_bytes: u64,
    /// `storage.min_free_bytes`: appends and messages are refused while the filesystem
    /// has less free (0: not checked).
    pub min_free_bytes: u64,
}

impl Options {
    /// The server's options: [`Synchronous::Full`] and the budget of `storage`.
    pub fn new(storage: &StorageConfig) -> Options {
        Options {
            sync: Synchronous::Full,
            max_bytes: storage.max_bytes,
            min_free_bytes: storage.min_free_bytes,
        }
    }
}

impl Default for Options {
    /// [`Options::new`] with the default budget.
    fn default() -> Self {
        Options::new(&StorageConfig::default())
    }
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
    readers: Readers,
    /// Usage counters, updated by the writer.
    shared: Arc<Shared>,
    /// Changes when the store may have lost acknowledged writes (see
    /// [`Store::mailbox_epoch`]).
    mailbox_epoch: String,
    /// Held while the store is open, released last (fields drop after `drop` joined the
    /// writer): a second server on the same file is refused at start-up.
    _lock: lock::LockFile,
}

impl SqliteStore {
    /// Opens (creating if missing) the store at `path` with the default [`Options`],
    /// checks it, and starts its writer thread. The directory must exist. Errors name the
    /// file.
    pub fn open(path: &Path) -> Result<SqliteStore, Error> {
        Self::open_with(path, Options::default())
    }

    /// [`open`](Self::open) with `options`: the server passes its storage budget, and
    /// measurements another fsync policy.
    pub fn open_with(path: &Path, options: Options) -> Result<SqliteStore, Error> {
        let fail = |message: String| Error::Store {
            path: path.to_owned(),
            message,
        };
        // First: nothing else may touch the files while another server owns them.
        let lock = lock::lock(path).map_err(fail)?;
        // Before SQLite replays the log (and drops what follows damage in it).
        let damage = match wal::check_file(path).map_err(fail)? {
            wal::Verdict::Damaged(damage) => Some(damage),
            wal::Verdict::Empty | wal::Verdict::Intact { .. } => None,
        };
        let opened = schema::open_connection(path, options.sync, damage.is_some()).map_err(fail)?;
        if let Some(damage) = &damage {
            error!(path = %path.display(), damage_offset = damage.offset,
                frames_before = damage.frames_before, commits_before = damage.commits_before,
                frames_lost = damage.frames_after, commits_lost = damage.commits_after,
                channels = opened.renewed,
                "the store's write-ahead log is damaged: SQLite dropped the commits written \
                 after the damage, and some may have been acknowledged; every channel and the \
                 mailbox start a new epoch, so clients are told they cannot recover instead \
                 of seeing offsets again");
        }
        let reader = schema::open_reader(path).map_err(fail)?;
        let budget = budget::Budget::new(path, options.max_bytes, options.min_free_bytes);
        let shared = Arc::new(Shared::default());
        let used = budget
            .used(&opened.conn)
            .map_err(|e| fail(format!("cannot measure the database: {e}")))?;
        shared.bytes.store(used, Ordering::Relaxed);
        let (requests, queue) = mpsc::unbounded_channel();
        let writer = Writer {
            conn: opened.conn,
            queue,
            path: path.to_owned(),
            budget,
            shared: shared.clone(),
            logged: None,
            unlogged: 0,
        };
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        info!(path = %path.display(), ?options, used, "sqlite store open");
        Ok(SqliteStore {
            path: path.to_owned(),
            requests: Some(requests),
            writer: Some(writer),
            readers: Readers::new(path.to_owned(), reader),
            shared,
            mailbox_epoch: opened.mailbox_epoch,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SqliteStore {
    /// Closes the readers, then the queue, and waits for the writer: it answers (and
    /// commits) every request already queued before it returns, so nothing acknowledged
    /// is lost at shutdown.
    fn drop(&mut self) {
        self.readers.close();
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                error!(path = %self.path.display(), "the sqlite writer thread panicked");
            }
        }
    }
}

/// A namespace that keeps no history: nothing of it is stored (see the module doc).
fn keeps_nothing(retention: Retention) -> bool {
    retention.size == 0 || retention.ttl.is_zero()
}

/// What a channel that the store cannot know gets: a fresh epoch, stored by nothing.
fn unknown_channel() -> ChannelSnapshot {
    ChannelSnapshot {
        epoch: random_id(8),
        top: 0,
        recent: Vec::new(),
        complete: true,
    }
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
                return Ok(unknown_channel());
            }
            let name = channel.to_owned();
            self.readers
                .read(move |conn| {
                    // One read transaction: the position and the history are of one
                    // snapshot, so `top` is never behind the newest publication read.
                    let tx = conn.transaction()?;
                    sql::channel(&tx, &name, retention, recent_bytes, now_ms())
                })
                .await
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
            let op = Op::Push(Push {
                user: user.to_owned(),
                from,
                data,
                limits,
                online,
            });
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
        let channel = channel.to_owned();
        Box::pin(
            self.readers
                .read(move |conn| sql::history(conn, &channel, query, now_ms())),
        )
    }

    fn mailbox_page<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: PageLimit,
    ) -> BoxFuture<'a, Result<MailboxPage, StoreError>> {
        let user = user.to_owned();
        Box::pin(
            self.readers
                .read(move |conn| sql::mailbox_page(conn, &user, after, limit, now_ms())),
        )
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
        self.shared.health()
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage {
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
        }
    }

    fn sweep(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // An unhealthy store writes a probe: once the cause is gone (a disk with room
            // again), health comes back by itself, not only at the next publication.
            if self.shared.health().is_err() {
                self.call(Op::Probe).await?;
            }
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
