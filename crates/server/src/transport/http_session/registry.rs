//! The open HTTP sessions by id, and what an HTTP handler asks of one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::feed::StreamBody;

/// The open HTTP sessions by id. A session is in it from its creation until its client
/// was told it ended (or could not be).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<String, mpsc::Sender<ToSession>>>,
}

impl Registry {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<ToSession>>> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel to a live session's actor.
    pub(crate) fn get(&self, sid: &str) -> Option<mpsc::Sender<ToSession>> {
        self.lock().get(sid).cloned()
    }
}

/// What an HTTP handler asks of a session.
#[derive(Debug)]
pub(crate) enum ToSession {
    /// `POST /sse/send`: handle the commands; `done` is answered once they were (their
    /// replies are then queued on the stream).
    Commands {
        commands: Vec<String>,
        done: oneshot::Sender<()>,
    },
    /// A poll: acknowledge `ack`, handle the commands, and answer `reply` with the body
    /// (at once, or when something arrives if `wait`).
    Poll {
        ack: u64,
        wait: bool,
        commands: Vec<String>,
        reply: oneshot::Sender<Bytes>,
    },
    /// An SSE stream reconnecting after the message `resume`; `attached` is answered
    /// with the stream's body once the session took it.
    Stream {
        resume: u64,
        attached: oneshot::Sender<StreamBody>,
    },
}
