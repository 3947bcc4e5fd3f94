//! The writer thread: the only connection that writes, serving queued requests in
//! batches, one transaction (one commit, one fsync) per batch.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior, params};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::super::{MailboxLimits, Retention, StoreError};
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
    Push {
        user: String,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
    },
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

/// Runs one request inside the batch's transaction.
fn execute(conn: &Connection, op: &Op, now: u64) -> rusqlite::Result<Result<Answer, StoreError>> {
    Ok(match op {
        Op::Append {
            channel,
            epoch,
            publication,
            retention,
        } => {
            sql::append(conn, channel, epoch, publication, *retention, now)?.map(|()| Answer::Done)
        }
        Op::Push {
            user,
            from,
            data,
            limits,
            online,
        } => sql::mailbox_push(conn, user, from.as_ref(), data, *limits, *online, now)?
            .map(Answer::Message),
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
