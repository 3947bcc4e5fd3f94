//! The writer thread: the only connection that writes, serving queued requests in
//! batches, one transaction (one commit, one fsync) per batch.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, TransactionBehavior, params};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::super::{MailboxLimits, Retention, StoreError};
use super::budget::{Budget, Room};
use super::sql;
use super::{BATCH, SqliteStore};
use crate::wire::{ClientInfo, PrivateMessage, Publication, now_ms};

/// One request to the writer, with where to send its answer.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Answer, StoreError>>,
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
    /// Runs SQL in the writer (tests: to make the disk "full").
    #[cfg(test)]
    Sql(String),
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
}

impl Writer {
    /// Serves batches until the queue is closed and empty (the store was dropped).
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
        let adds = requests.iter().map(|request| request.op.adds()).sum();
        let mut room = self.budget.room(&self.conn, adds)?;
        self.shared.bytes.store(room.used(), Ordering::Relaxed);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let answers = requests
            .iter()
            .map(|request| execute(&tx, &request.op, now, &mut room))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Dropping `tx` on an error above rolls back.
        if let Err(err) = tx.commit() {
            self.budget.forget_free_space();
            return Err(err);
        }
        self.budget.settle(&room);
        let refused = answers
            .iter()
            .filter(|answer| matches!(answer, Err(StoreError::Full(_))))
            .count();
        self.shared
            .refused
            .fetch_add(refused as u64, Ordering::Relaxed);
        Ok(answers)
    }
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
        #[cfg(test)]
        Op::Sql(sql) => {
            conn.execute_batch(sql)?;
            Ok(Answer::Done)
        }
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
    pub(super) async fn call(&self, op: Op) -> Result<Answer, StoreError> {
        self.enqueue(op).await
    }
}
