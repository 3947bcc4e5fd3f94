//! The writer thread: the only connection that writes, serving queued requests in
//! batches, one transaction (one commit, one fsync) per batch.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::super::{MailboxLimits, Retention, StoreError};
use super::budget::{Budget, Room};
use super::sql;
use super::{BATCH, SqliteStore};
use crate::protocol::{ClientInfo, PrivateMessage, Publication, now_ms};

/// One request to the writer, with where to send its answer.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) op: Op,
    /// Taken when answered: a request is answered once, and a batch interrupted by a
    /// panic knows which requests still wait.
    reply: Option<oneshot::Sender<Result<Answer, StoreError>>>,
}

impl Request {
    /// Sends the answer unless one was sent.
    fn answer(&mut self, answer: Result<Answer, StoreError>) {
        if let Some(reply) = self.reply.take() {
            // The caller may have gone away; what it asked is done all the same.
            let _ = reply.send(answer);
        }
    }
}

/// What a request asks the writer to do. Only writes: reads run on the readers.
#[derive(Debug)]
pub(super) enum Op {
    Append {
        channel: String,
        epoch: String,
        publication: Arc<Publication>,
        retention: Retention,
    },
    Push(Push),
    Ack {
        user: String,
        upto: u64,
    },
    /// Deletes up to [`super::SWEEP_BATCH`] expired rows of each table.
    Sweep,
    /// A tiny write (one `meta` row), so an unhealthy store finds out by itself that it
    /// can write again.
    Probe,
    /// Runs SQL in the writer (tests: to make the disk "full").
    #[cfg(test)]
    Sql(String),
    /// Panics in the writer (tests: a bug, or a logger that panics).
    #[cfg(test)]
    Panic,
    /// Holds the writer inside its transaction until `release` says so (tests: a long
    /// write); `started` is told once it holds.
    #[cfg(test)]
    Hold {
        started: std::sync::mpsc::SyncSender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

/// A private message to store (see [`Store::mailbox_push`](super::super::Store::mailbox_push)).
#[derive(Debug)]
pub(super) struct Push {
    pub(super) user: String,
    pub(super) from: Option<ClientInfo>,
    pub(super) data: Arc<RawValue>,
    pub(super) limits: MailboxLimits,
    pub(super) online: bool,
}

impl Op {
    /// About how many bytes the request adds to the database if it is kept (0: it only
    /// deletes), for the storage budget: its data and names, and a row's overhead with
    /// its index entries.
    fn adds(&self) -> u64 {
        const ROW: u64 = 128;
        let bytes = match self {
            Op::Append {
                channel,
                publication,
                ..
            } => 2 * channel.len() + sql::publication_bytes(publication),
            Op::Push(Push {
                user, from, data, ..
            }) => {
                let from = from.as_ref().map_or(0, |f| {
                    2 * f.user.len() + f.client.len() + f.info.as_ref().map_or(0, |i| i.get().len())
                });
                3 * user.len() + data.get().len() + from
            }
            _ => return 0,
        };
        bytes as u64 + ROW
    }
}

/// What the store and its writer share: the writer updates, `usage` and `health` read.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Bytes the database occupied when the last batch began.
    pub(super) bytes: AtomicU64,
    /// Writes refused for the storage budget since the store opened.
    pub(super) refused: AtomicU64,
    /// Why the last write failed, until a later one succeeds. A `std` mutex: held only
    /// to read or replace it.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn failure(&self) -> MutexGuard<'_, Option<String>> {
        // A plain value: a panic elsewhere while holding the lock leaves it usable.
        self.failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, why: String) {
        *self.failure() = Some(why);
    }

    fn recovered(&self) {
        self.failure().take();
    }

    /// `Err` with the reason while writes fail (see [`Store::health`](super::super::Store::health)).
    pub(super) fn health(&self) -> Result<(), String> {
        match &*self.failure() {
            None => Ok(()),
            Some(why) => Err(format!("the store cannot write: {why}")),
        }
    }
}

/// The writer's answer to a request, matching its [`Op`].
#[derive(Debug)]
pub(super) enum Answer {
    Done,
    Message(Arc<PrivateMessage>),
    /// Rows deleted: the most of any table.
    Swept(usize),
}

/// An answer of the wrong kind: a bug in this module, reported rather than panicking.
pub(super) fn mismatched(answer: Answer) -> StoreError {
    StoreError::Failed(format!("internal error: unexpected answer {answer:?}"))
}

/// The thread that owns the writing connection.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) queue: mpsc::UnboundedReceiver<Request>,
    pub(super) path: PathBuf,
    pub(super) budget: Budget,
    pub(super) shared: Arc<Shared>,
    /// When a failed batch was last logged, and how many were not since: a broken disk
    /// fails every batch, and one line a second says it as well as thousands.
    pub(super) logged: Option<Instant>,
    pub(super) unlogged: u64,
}

/// At most one "batch failed" line per this long.
const LOG_EVERY: Duration = Duration::from_secs(1);

impl Writer {
    /// Serves batches until the queue is closed and empty (the store was dropped).
    ///
    /// A panic while serving a batch (a bug, or a logger that panics when its disk is
    /// full) does not end the thread, which would fail every later write for good: it
    /// is caught, the requests not yet answered are answered [`StoreError::Failed`] (the
    /// transaction was rolled back as it unwound, so none of them was committed), the
    /// store reports itself unhealthy, and the next batch is served as usual.
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = self.queue.blocking_recv() {
            batch.push(first);
            while batch.len() < BATCH {
                match self.queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let served = panic::catch_unwind(AssertUnwindSafe(|| self.serve(&mut batch)));
            if let Err(panic) = served {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                let reason = format!("the store's writer panicked: {why}");
                // Unhealthy before the answers go: a caller that reads `health` next
                // must see it.
                let unanswered = batch.iter().filter(|r| r.reply.is_some()).count();
                if unanswered > 0 {
                    self.shared.fail(reason.clone());
                }
                for request in &mut batch {
                    request.answer(Err(StoreError::Failed(reason.clone())));
                }
                // Logging may be what panicked: it must not take the thread down now.
                let _ = panic::catch_unwind(|| {
                    error!(reason, unanswered, "sqlite writer recovered from a panic");
                });
            }
            batch.clear();
        }
    }

    /// Runs `batch` in one transaction and answers every request after the commit. If
    /// anything fails, the transaction is rolled back and each request retried alone, so a
    /// bad request fails by itself while a broken disk fails them all.
    fn serve(&mut self, batch: &mut [Request]) {
        let err = match self.execute(batch) {
            Ok(answers) => {
                for (request, answer) in batch.iter_mut().zip(answers) {
                    request.answer(answer);
                }
                return;
            }
            Err(err) => err,
        };
        self.budget.forget_free_space();
        let requests = batch.len();
        let mut failed = 0;
        for request in batch.iter_mut() {
            // A batch of one already failed alone.
            let retried = if requests == 1 {
                Err(err.to_string())
            } else {
                self.execute(std::slice::from_ref(request))
                    .map_err(|e| e.to_string())
            };
            let answer = match retried {
                Ok(mut answers) => answers
                    .pop()
                    .unwrap_or_else(|| Err(StoreError::Failed("internal error: no answer".into()))),
                Err(why) => {
                    failed += 1;
                    Err(StoreError::Failed(format!("database error: {why}")))
                }
            };
            // Answered at once: a panic in a later retry must not fail what committed.
            request.answer(answer);
        }
        // One line per batch, not per request, and one a second at most.
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            error!(path = %self.path.display(), cause = %err, requests, failed,
                unlogged_batches = self.unlogged,
                "sqlite batch failed; its requests were retried one by one");
            self.logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }

    /// Runs `requests` in one transaction. `Err` means nothing was committed; an `Ok`
    /// answer may still be a refusal (`MailboxFull`, `Full`), which does not roll back
    /// the others. A commit that wrote something makes the store healthy again; a
    /// failure other than a request's own (a constraint) makes it unhealthy.
    fn execute(
        &mut self,
        requests: &[Request],
    ) -> rusqlite::Result<Vec<Result<Answer, StoreError>>> {
        let result = self.transaction(requests);
        match &result {
            Err(err) if !is_constraint(err) => self.shared.fail(format!("database error: {err}")),
            Err(_) => {}
            Ok((_, wrote)) => {
                if *wrote {
                    self.shared.recovered();
                }
            }
        }
        result.map(|(answers, _)| answers)
    }

    /// [`execute`](Self::execute)'s transaction; also says whether it changed a row.
    fn transaction(
        &mut self,
        requests: &[Request],
    ) -> rusqlite::Result<(Vec<Result<Answer, StoreError>>, bool)> {
        // A failed ROLLBACK (I/O error) can leave the connection inside a transaction;
        // clear it, or every later batch would fail to BEGIN.
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let adds = requests.iter().map(|request| request.op.adds()).sum();
        let changes = self.conn.total_changes();
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut measure = self.budget.size(&tx, adds)?;
        if self.budget.wants_checkpoint(&measure, adds) {
            // Rare (the log is most of a nearly used budget): nothing is written yet.
            tx.rollback()?;
            self.budget.checkpoint(&self.conn)?;
            tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            measure = self.budget.size(&tx, adds)?;
        }
        let mut room = self.budget.room(measure);
        self.shared.bytes.store(room.used(), Ordering::Relaxed);
        let now = now_ms();
        let answers = requests
            .iter()
            .map(|request| execute(&tx, &request.op, now, &mut room))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Dropping `tx` on an error above (or a panic) rolls back.
        tx.commit()?;
        self.budget.settle(&room);
        let refused = answers
            .iter()
            .filter(|answer| matches!(answer, Err(StoreError::Full(_))))
            .count();
        self.shared
            .refused
            .fetch_add(refused as u64, Ordering::Relaxed);
        Ok((answers, self.conn.total_changes() > changes))
    }
}

/// A request's own fault (a duplicate offset): it says nothing of the store's health.
fn is_constraint(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

/// Runs one request inside the batch's transaction; what it keeps comes out of `room`.
fn execute(
    conn: &Connection,
    op: &Op,
    now: u64,
    room: &mut Room,
) -> rusqlite::Result<Result<Answer, StoreError>> {
    Ok(match op {
        Op::Append {
            channel,
            epoch,
            publication,
            retention,
        } => match room.take(op.adds()) {
            Ok(()) => sql::append(conn, channel, epoch, publication, *retention, now)?
                .map(|()| Answer::Done),
            Err(full) => Err(full),
        },
        Op::Push(push) => {
            sql::mailbox_push(conn, push, now, || room.take(op.adds()))?.map(Answer::Message)
        }
        Op::Ack { user, upto } => {
            conn.prepare_cached("DELETE FROM mailbox WHERE user = ?1 AND id <= ?2")?
                .execute(params![user, sql::int(*upto)])?;
            Ok(Answer::Done)
        }
        Op::Sweep => Ok(Answer::Swept(sql::sweep(conn, now)?)),
        Op::Probe => {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('probe', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![now.to_string()])?;
            Ok(Answer::Done)
        }
        #[cfg(test)]
        Op::Sql(sql) => {
            conn.execute_batch(sql)?;
            Ok(Answer::Done)
        }
        #[cfg(test)]
        Op::Panic => panic!("a test panic in the writer"),
        #[cfg(test)]
        Op::Hold { started, release } => {
            let _ = started.send(());
            let _ = release.recv();
            Ok(Answer::Done)
        }
    })
}

impl SqliteStore {
    /// Queues `op` for the writer now; the returned future waits for its answer (given
    /// after the commit).
    pub(super) fn enqueue(
        &self,
        op: Op,
    ) -> super::super::BoxFuture<'static, Result<Answer, StoreError>> {
        let stopped = || StoreError::Failed("the store's writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        let queued = self.requests.as_ref().is_some_and(|queue| {
            let request = Request {
                op,
                reply: Some(reply),
            };
            queue.send(request).is_ok()
        });
        Box::pin(async move {
            if !queued {
                return Err(stopped());
            }
            answer.await.map_err(|_| stopped())?
        })
    }

    /// Queues `op` and waits for its answer.
    pub(super) async fn call(&self, op: Op) -> Result<Answer, StoreError> {
        self.enqueue(op).await
    }
}
