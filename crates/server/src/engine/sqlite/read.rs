//! The readers: a few read-only connections that answer `channel`, `history` and
//! `mailbox_page` on blocking threads, beside the writer rather than in its queue.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::super::StoreError;
use super::schema::open_reader;

/// Read-only connections, opened as needed and kept for reuse, with at most
/// [`READERS`](super::READERS) reads running at once.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    /// Connections not in use. A `std` mutex: held only to push or pop.
    idle: Mutex<Vec<Connection>>,
    /// One permit per read running: bounds the blocking threads and connections that
    /// reads take, however many clients read at once.
    permits: Semaphore,
}

impl Readers {
    /// Readers of the database at `path`; `first` (already opened, so opening problems
    /// show at start-up) is the first idle connection.
    pub(super) fn new(path: PathBuf, first: Connection) -> Readers {
        Readers {
            path,
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(super::READERS),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A list of connections: a panic elsewhere while holding the lock leaves it usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the idle connections (closing the store: readers go before the writer, so
    /// that the writer's close is the last and checkpoints the log away).
    pub(super) fn close(&self) {
        self.idle().clear();
        self.permits.close();
    }

    /// Runs `read` on a reader connection, on a blocking thread. `read` should open a
    /// transaction if it makes more than one query, so they all see one snapshot. Every
    /// write the writer acknowledged before this call is visible: its answer was sent
    /// after its COMMIT, and the read transaction starts after this call.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Failed("the store is closed".into()))?;
        let taken = self.idle().pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(StoreError::Failed)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = read(&mut conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Failed(format!("a read failed: {e}")))?;
        // A connection whose read failed is kept too: a failed statement leaves no state
        // behind (its transaction, if any, was rolled back when dropped).
        if !self.permits.is_closed() {
            self.idle().push(conn);
        }
        result.map_err(|e| StoreError::Failed(format!("database error: {e}")))
    }
}
