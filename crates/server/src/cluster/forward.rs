//! HTTP sessions across the group: a session lives on the node that opened it (its id
//! starts with that node's id), and a request for it that a load balancer sent to another
//! node is forwarded to that node through Redis, its answer sent back the same way. A poll,
//! the commands of `/sse/send` and an SSE stream's resumption all work so, so a plain
//! round-robin balancer serves SSE and polling without sticky sessions. The session's
//! queue stays in its node's memory: if that node dies, so does the session, and the
//! client opens a new one and recovers its channels by offsets, as a WebSocket client
//! whose node died does.
//!
//! On the wire: both directions go to the receiving node's inbox topic (`P:reply:NODE`,
//! which also carries the answers of `control`), one JSON object each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a node asks of a session another node owns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Forwarded {
    /// A poll: acknowledge `ack`, run the commands, answer (at once, or when something
    /// arrives if `wait`).
    Poll {
        /// The session.
        sid: String,
        /// Every message up to this seq was received.
        ack: u64,
        /// Whether to hold the poll while there is nothing to deliver.
        wait: bool,
        /// Commands to run first.
        commands: Vec<String>,
    },
    /// `/sse/send`: run the commands.
    Commands {
        /// The session.
        sid: String,
        /// The commands.
        commands: Vec<String>,
    },
    /// An SSE stream resuming after `resume`, read on the asking node.
    Stream {
        /// The session.
        sid: String,
        /// The last seq the client has.
        resume: u64,
    },
    /// The asking node's stream reader went away: stop sending (the id is the stream's).
    StreamClosed,
}

/// What the session's node sends back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Returned {
    /// No such session (any more).
    Gone,
    /// A poll's answer (JSON).
    Body(String),
    /// The commands ran.
    Done,
    /// The stream was taken.
    Attached,
    /// Stream data (SSE text).
    Chunk(String),
    /// The stream is over.
    End,
}

/// One message of a node's inbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Inbox {
    /// An answer to a request of `control`.
    Answer {
        /// The request.
        id: u64,
        /// The answer.
        answer: serde_json::Value,
    },
    /// A request for a session this node owns.
    Forward {
        /// The asking node.
        from: String,
        /// The asking node's id for the exchange.
        id: u64,
        /// What is asked.
        request: Forwarded,
    },
    /// What came back for an exchange this node started.
    Returned {
        /// The exchange.
        id: u64,
        /// What came back.
        returned: Returned,
    },
}

impl Inbox {
    /// As sent on the inbox topic.
    pub(crate) fn to_json(&self) -> String {
        // Plain data: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Who receives forwarded requests on the session's node: the HTTP transport.
pub(crate) trait SessionHost: Send + Sync + std::fmt::Debug + 'static {
    /// A request from node `from` for one of this node's sessions; whatever comes back
    /// goes through [`crate::cluster::Cluster::send_back`] with `from` and `id`.
    fn forwarded(&self, from: String, id: u64, request: Forwarded);
}

/// The exchanges this node started, by id.
#[derive(Debug, Default)]
pub(crate) struct Exchanges {
    next: AtomicU64,
    open: Mutex<HashMap<u64, mpsc::UnboundedSender<Returned>>>,
}

impl Exchanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Returned>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new exchange: its id, and what comes back for it (until the receiver is dropped
    /// and [`Exchanges::close`] is called).
    pub(crate) fn open(&self) -> (u64, mpsc::UnboundedReceiver<Returned>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    /// Forgets an exchange.
    pub(crate) fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Hands what came back to its exchange (dropped if it was closed).
    pub(crate) fn returned(&self, id: u64, returned: Returned) {
        if let Some(tx) = self.lock().get(&id) {
            let _ = tx.send(returned);
        }
    }
}
