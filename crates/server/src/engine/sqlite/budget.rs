//! The storage budget (`storage.max_bytes`, `storage.min_free_bytes`): the writer refuses,
//! as [`StoreError::Full`], the appends and messages that would pass it. Deletions are
//! never refused: they are how room comes back.
//!
//! What counts is what the store occupies and can grow: the database's pages in use
//! (free pages are reused before the file grows) plus the write-ahead log, whose file
//! keeps its largest size between checkpoints. When the log alone stands between a write
//! and the budget, the writer checkpoints it and truncates it to zero first, so the log
//! never refuses a write that the data would leave room for. Free space is read with
//! `statvfs` at most every [`FREE_SPACE_EVERY`], not per write.
//!
//! Measuring (three pragmas and a `stat` of the log) is cheap but not free: done at every
//! batch, it cost 10–25% of the acknowledgements per second with 8 publishers in flight
//! (batches of a few). So below half the budget the writer measures once per
//! [`MEASURE_EVERY`] and estimates in between (the last measure plus what batches took
//! since); past half, where a second of writes could matter, it measures every batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::{info, warn};

use super::super::StoreError;

/// How long a reading of the filesystem's free space is trusted.
pub(super) const FREE_SPACE_EVERY: Duration = Duration::from_secs(1);

/// How long an exact measure of the database stands, below half the budget.
pub(super) const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// After a checkpoint that readers kept from finishing, how long before another is tried
/// (a blocked `TRUNCATE` checkpoint waits for them, holding the writer).
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// The budget's bounds, and what the writer last read of the disk.
#[derive(Debug)]
pub(super) struct Budget {
    max_bytes: u64,
    /// 0: free space is not checked.
    min_free_bytes: u64,
    database: PathBuf,
    /// The database file, for messages.
    name: Arc<str>,
    wal: PathBuf,
    /// Free bytes and when they were read.
    free: Option<(Instant, u64)>,
    /// No checkpoint for the budget before this (the last one was blocked).
    next_checkpoint: Option<Instant>,
    /// The last exact measure and when it was taken…
    measured: Option<(Instant, Measure)>,
    /// …and the bytes batches took since (deletions are not subtracted: an estimate
    /// that errs towards refusing).
    taken: u64,
}

/// What one batch may still write. Refusals name the bound and the numbers.
#[derive(Debug)]
pub(super) struct Room {
    max_bytes: u64,
    min_free_bytes: u64,
    /// Bytes in use (pages and log) when the batch began…
    start: u64,
    /// …plus what it took so far.
    used: u64,
    /// Free bytes on the filesystem, less what this batch took (`None`: not checked).
    free: Option<u64>,
    /// For messages: the database file.
    database: Arc<str>,
}

/// What the database occupies: its pages in use and its log.
#[derive(Debug, Clone, Copy)]
pub(super) struct Measure {
    pages: u64,
    wal: u64,
}

impl Measure {
    fn total(&self) -> u64 {
        self.pages.saturating_add(self.wal)
    }
}

impl Budget {
    pub(super) fn new(database: &Path, max_bytes: u64, min_free_bytes: u64) -> Budget {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Budget {
            max_bytes,
            min_free_bytes,
            database: database.to_owned(),
            name: Arc::from(database.display().to_string()),
            wal: PathBuf::from(wal),
            free: None,
            next_checkpoint: None,
            measured: None,
            taken: 0,
        }
    }

    /// What the database occupies, for a batch that adds about `needed` bytes: measured
    /// (see [`measure`](Self::measure)) unless the last measure is recent and the
    /// estimate is below half the budget (see the module doc).
    pub(super) fn size(&mut self, conn: &Connection, needed: u64) -> rusqlite::Result<Measure> {
        let now = Instant::now();
        if let Some((at, last)) = self.measured {
            let estimate = Measure {
                pages: last.pages.saturating_add(self.taken),
                wal: last.wal,
            };
            if now.duration_since(at) < MEASURE_EVERY
                && estimate.total().saturating_add(needed) <= self.max_bytes / 2
            {
                return Ok(estimate);
            }
        }
        let exact = self.measure(conn)?;
        self.measured = Some((now, exact));
        self.taken = 0;
        Ok(exact)
    }

    /// Measures the database, best inside the batch's write transaction: the pragmas
    /// then read the pager's state without taking locks of their own.
    pub(super) fn measure(&self, conn: &Connection) -> rusqlite::Result<Measure> {
        let pragma = |sql: &str| -> rusqlite::Result<u64> {
            let value: i64 = conn.prepare_cached(sql)?.query_row([], |row| row.get(0))?;
            Ok(u64::try_from(value).unwrap_or(0))
        };
        let in_use = pragma("PRAGMA page_count")?.saturating_sub(pragma("PRAGMA freelist_count")?);
        let pages = in_use.saturating_mul(pragma("PRAGMA page_size")?);
        // No log file (yet, or after a clean close) is an empty log.
        let wal = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        Ok(Measure { pages, wal })
    }

    /// Bytes the database occupies now (for `usage`).
    pub(super) fn used(&self, conn: &Connection) -> rusqlite::Result<u64> {
        let measure = self.measure(conn)?;
        Ok(measure.pages + measure.wal)
    }

    /// Whether the log alone stands between a batch that adds about `needed` bytes and
    /// the budget (its data fits, but not with the log): then the writer checkpoints
    /// first. Not again for a while after a checkpoint that readers kept from finishing.
    pub(super) fn wants_checkpoint(&self, measure: &Measure, needed: u64) -> bool {
        let blocked = self.next_checkpoint.is_some_and(|at| Instant::now() < at);
        needed > 0
            && measure.wal > 0
            && !blocked
            && measure.pages.saturating_add(needed) <= self.max_bytes
            && (measure.pages + measure.wal).saturating_add(needed) > self.max_bytes
    }

    /// Copies the log into the database and truncates it to zero bytes. Outside any
    /// transaction (a checkpoint cannot run inside one).
    pub(super) fn checkpoint(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        // (busy, log frames, frames checkpointed); busy = 1: a reader kept it from
        // finishing, and the log was not truncated.
        let (busy, frames, _): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
        if busy != 0 {
            self.next_checkpoint = Some(Instant::now() + CHECKPOINT_RETRY);
        }
        // The log shrank: the next batch measures again.
        self.measured = None;
        info!(
            frames,
            busy, "sqlite log checkpointed and truncated to stay within storage.max_bytes"
        );
        Ok(())
    }

    /// The room left for a batch, from the database's `measure` and the filesystem's
    /// free space.
    pub(super) fn room(&mut self, measure: Measure) -> Room {
        Room {
            max_bytes: self.max_bytes,
            min_free_bytes: self.min_free_bytes,
            start: measure.total(),
            used: measure.total(),
            free: self.free_bytes(),
            database: self.name.clone(),
        }
    }

    /// The filesystem's free bytes, read again if the last reading is older than
    /// [`FREE_SPACE_EVERY`]; `None` if not checked (or unreadable: the check then stands
    /// aside rather than refusing everything).
    fn free_bytes(&mut self) -> Option<u64> {
        if self.min_free_bytes == 0 {
            return None;
        }
        let now = Instant::now();
        match self.free {
            Some((at, free)) if now.duration_since(at) < FREE_SPACE_EVERY => Some(free),
            _ => match free_bytes(&self.database) {
                Ok(free) => {
                    self.free = Some((now, free));
                    Some(free)
                }
                Err(err) => {
                    warn!(path = %self.database.display(), cause = %err,
                        "cannot read the free space of the store's filesystem");
                    self.free = None;
                    None
                }
            },
        }
    }

    /// Counts what a committed batch took, in the estimate of the database's size and
    /// off the free-space reading, so that writes between two readings count.
    pub(super) fn settle(&mut self, room: &Room) {
        self.taken = self.taken.saturating_add(room.used - room.start);
        if let (Some((at, _)), Some(free)) = (self.free, room.free) {
            self.free = Some((at, free));
        }
    }

    /// Forgets the free-space reading, so the next batch reads it again (a batch that
    /// failed may have failed for want of space).
    pub(super) fn forget_free_space(&mut self) {
        self.free = None;
    }
}

/// Bytes that an unprivileged process can still write on the filesystem holding `path`.
pub(super) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

impl Room {
    /// Bytes in use when the batch began, plus what it took.
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    /// Takes `bytes` for one write, or refuses it naming the bound it would pass.
    pub(super) fn take(&mut self, bytes: u64) -> Result<(), StoreError> {
        let used = self.used.saturating_add(bytes);
        if used > self.max_bytes {
            return Err(StoreError::Full(format!(
                "the store holds {} bytes (database pages in use and log, {}); {bytes} more \
                 would pass storage.max_bytes = {}",
                self.used, self.database, self.max_bytes
            )));
        }
        if let Some(free) = self.free {
            if free < self.min_free_bytes.saturating_add(bytes) {
                return Err(StoreError::Full(format!(
                    "the filesystem of {} has {free} bytes free; {bytes} more would leave \
                     less than storage.min_free_bytes = {}",
                    self.database, self.min_free_bytes
                )));
            }
            self.free = Some(free - bytes);
        }
        self.used = used;
        Ok(())
    }
}
