//! Requests to every node of the group, and their answers: how the server API called on
//! one node acts on the whole group (`channels`, `info`, `disconnect`). A request goes out
//! on the group's control topic (`P:control`); each other node answers on the asker's
//! reply topic (`P:reply:NODE`), and the asker waits for as many answers as there are
//! live nodes, or a second at most (a node that died without withdrawing is listed until
//! its announcement expires).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long an asker waits for the other nodes' answers.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// What a node is asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ask {
    /// Its channels with subscribers, and how many each.
    Channels,
    /// Its description (the API's `info`).
    Info,
    /// To end a user's connections (with this close code and reason); answers how many.
    Disconnect {
        /// The user.
        user: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    from: String,
    id: u64,
    ask: Ask,
}

/// The asking side's bookkeeping, and the names of the topics.
#[derive(Debug)]
pub(crate) struct Control {
    node: String,
    prefix: String,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>,
}

impl Control {
    pub(crate) fn new(prefix: &str, node: &str) -> Self {
        Control {
            node: node.to_owned(),
            prefix: prefix.to_owned(),
            next: AtomicU64::new(1),
            waiting: Mutex::default(),
        }
    }

    /// The topic every node listens to for requests.
    pub(crate) fn request_topic(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// The topic a node listens to for answers (its inbox, see `forward`).
    pub(crate) fn reply_topic(&self, node: &str) -> String {
        format!("{}:reply:{node}", self.prefix)
    }

    /// A request to send, and where its answers will arrive (drop it to stop waiting).
    pub(crate) fn request(&self, ask: Ask) -> (String, Waiting<'_>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        let request = Request {
            from: self.node.clone(),
            id,
            ask,
        };
        let payload = serde_json::to_string(&request).unwrap_or_default();
        (
            payload,
            Waiting {
                control: self,
                id,
                answers: rx,
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Value>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request from another node: what it asks, and where to send the answer (`None`
    /// for this node's own requests and anything malformed).
    pub(crate) fn incoming(
        &self,
        payload: &[u8],
    ) -> Option<(Ask, impl FnOnce(Value) -> (String, String) + use<>)> {
        let request: Request = serde_json::from_slice(payload).ok()?;
        if request.from == self.node {
            return None;
        }
        let topic = self.reply_topic(&request.from);
        let id = request.id;
        Some((request.ask, move |answer| {
            (
                topic,
                super::forward::Inbox::Answer { id, answer }.to_json(),
            )
        }))
    }

    /// An answer to one of this node's requests.
    pub(crate) fn answered(&self, id: u64, answer: Value) {
        if let Some(tx) = self.lock().get(&id) {
            let _ = tx.send(answer);
        }
    }
}

/// Answers to one request, as they arrive.
#[derive(Debug)]
pub(crate) struct Waiting<'a> {
    control: &'a Control,
    id: u64,
    answers: mpsc::UnboundedReceiver<Value>,
}

impl Waiting<'_> {
    /// Up to `expected` answers, waiting [`ANSWER_TIMEOUT`] at most.
    pub(crate) async fn collect(mut self, expected: usize) -> Vec<Value> {
        let mut answers = Vec::with_capacity(expected);
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        while answers.len() < expected {
            match tokio::time::timeout_at(deadline, self.answers.recv()).await {
                Ok(Some(answer)) => answers.push(answer),
                _ => break,
            }
        }
        answers
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.control.lock().remove(&self.id);
    }
}
