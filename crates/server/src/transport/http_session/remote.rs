//! HTTP sessions in a group of nodes (see `cluster::forward`): a request for a session
//! another node owns goes there through a proxy task ([`route`]), and requests forwarded
//! here reach this node's sessions through the [`Host`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::{StreamBody, ToSession};
use crate::cluster::{Cluster, Forwarded, Returned, SessionHost};
use crate::transport::Shared;

/// How long a forwarded request waits for its node beyond the request's own time (a
/// node that died answers never: the client then gets 404 and opens a new session).
const SLACK: Duration = Duration::from_secs(5);
/// Chunks relayed from a stream's node that wait for the reader here.
const CHUNKS: usize = 4;

/// The way to a session for an HTTP handler: this node's own, or, in a group, a proxy to
/// the node that owns it. `None`: no such session.
pub(crate) fn route(shared: &Arc<Shared>, sid: &str) -> Option<mpsc::Sender<ToSession>> {
    if let Some(local) = shared.http_sessions.get(sid) {
        return Some(local);
    }
    let cluster = shared.session.hub.cluster()?.clone();
    let owner = cluster.owner_of(sid)?.to_owned();
    let (tx, rx) = mpsc::channel(1);
    let poll_timeout = shared.session.config.limits.poll_timeout;
    tokio::spawn(proxy(cluster, owner, sid.to_owned(), rx, poll_timeout));
    Some(tx)
}

/// Forwards one request to the session's node and completes it with what comes back.
async fn proxy(
    cluster: Arc<Cluster>,
    owner: String,
    sid: String,
    mut rx: mpsc::Receiver<ToSession>,
    poll_timeout: Duration,
) {
    let Some(request) = rx.recv().await else {
        return;
    };
    // A node that is gone answers never: dropping the request answers 404 at once.
    if !cluster.is_live(&owner).await {
        return;
    }
    match request {
        ToSession::Poll {
            ack,
            wait,
            commands,
            reply,
        } => {
            let request = Forwarded::Poll {
                sid,
                ack,
                wait,
                commands,
            };
            let (id, mut back) = cluster.forward(&owner, request);
            let answer = tokio::time::timeout(poll_timeout + SLACK, back.recv()).await;
            cluster.end_exchange(id);
            // Anything else drops `reply`: the handler answers 404.
            if let Ok(Some(Returned::Body(body))) = answer {
                let _ = reply.send(Bytes::from(body));
            }
        }
        ToSession::Commands { commands, done } => {
            let (id, mut back) = cluster.forward(&owner, Forwarded::Commands { sid, commands });
            let answer = tokio::time::timeout(SLACK * 2, back.recv()).await;
            cluster.end_exchange(id);
            if let Ok(Some(Returned::Done)) = answer {
                let _ = done.send(());
            }
        }
        ToSession::Stream { resume, attached } => {
            let (id, mut back) = cluster.forward(&owner, Forwarded::Stream { sid, resume });
            let answer = tokio::time::timeout(SLACK, back.recv()).await;
            if !matches!(answer, Ok(Some(Returned::Attached))) {
                cluster.end_exchange(id);
                return;
            }
            // Chunks from the other node cross a channel here: its own wake is the least
            // of their cost.
            let (tx, rx) = mpsc::channel(CHUNKS);
            let _ = attached.send(StreamBody::Relayed(rx));
            loop {
                tokio::select! {
                    returned = back.recv() => match returned {
                        // A reader stalled this long ends its stream: the browser resumes
                        // with Last-Event-ID, and the session sends what followed again.
                        Some(Returned::Chunk(chunk)) => {
                            let sent = tokio::time::timeout(SLACK, tx.send(Bytes::from(chunk))).await;
                            if !matches!(sent, Ok(Ok(()))) {
                                break;
                            }
                        }
                        _ => break,
                    },
                    () = tx.closed() => break,
                }
            }
            cluster.forward_more(&owner, id, Forwarded::StreamClosed);
            cluster.end_exchange(id);
        }
    }
}

/// Runs forwarded requests on this node's sessions.
#[derive(Debug)]
pub(crate) struct Host {
    shared: Weak<Shared>,
    /// Streams read on other nodes, by (node, exchange).
    streams: Arc<Mutex<HashMap<(String, u64), AbortHandle>>>,
}

impl Host {
    /// The host of `shared`'s sessions.
    pub(crate) fn new(shared: Weak<Shared>) -> Self {
        Host {
            shared,
            streams: Arc::default(),
        }
    }
}

impl SessionHost for Host {
    fn forwarded(&self, from: String, id: u64, request: Forwarded) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(cluster) = shared.session.hub.cluster().cloned() else {
            return;
        };
        if let Forwarded::StreamClosed = request {
            let stream = self
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(from, id));
            if let Some(stream) = stream {
                // Dropping its channel tells the session the reader is gone.
                stream.abort();
            }
            return;
        }
        let streams = self.streams.clone();
        let key = (from.clone(), id);
        let task = tokio::spawn(async move {
            let returned = host(&shared, &cluster, &from, id, request).await;
            cluster.send_back(&from, id, returned);
        });
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), task.abort_handle());
        // Forget it when it ends by itself (the map only serves `StreamClosed`).
        tokio::spawn(async move {
            let _ = task.await;
            streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
    }
}

/// Runs one forwarded request; what to send back last (a stream sends its chunks on the
/// way).
async fn host(
    shared: &Arc<Shared>,
    cluster: &Cluster,
    from: &str,
    id: u64,
    request: Forwarded,
) -> Returned {
    let sid = match &request {
        Forwarded::Poll { sid, .. }
        | Forwarded::Commands { sid, .. }
        | Forwarded::Stream { sid, .. } => sid.clone(),
        Forwarded::StreamClosed => return Returned::End,
    };
    let Some(session) = shared.http_sessions.get(&sid) else {
        return Returned::Gone;
    };
    match request {
        Forwarded::Poll {
            ack,
            wait,
            commands,
            ..
        } => {
            let (reply, answered) = oneshot::channel();
            let request = ToSession::Poll {
                ack,
                wait,
                commands,
                reply,
            };
            if session.send(request).await.is_err() {
                return Returned::Gone;
            }
            match answered.await {
                Ok(body) => Returned::Body(String::from_utf8_lossy(&body).into_owned()),
                Err(_) => Returned::Gone,
            }
        }
        Forwarded::Commands { commands, .. } => {
            let (done, handled) = oneshot::channel();
            if session
                .send(ToSession::Commands { commands, done })
                .await
                .is_err()
            {
                return Returned::Gone;
            }
            match handled.await {
                Ok(()) => Returned::Done,
                Err(_) => Returned::Gone,
            }
        }
        Forwarded::Stream { resume, .. } => {
            let (attached, was_attached) = oneshot::channel();
            let request = ToSession::Stream { resume, attached };
            if session.send(request).await.is_err() {
                return Returned::Gone;
            }
            let Ok(mut body) = was_attached.await else {
                return Returned::Gone;
            };
            cluster.send_back(from, id, Returned::Attached);
            // Aborting this task (the reader went away) drops the body, which tells the
            // session.
            while let Some(Ok(chunk)) = body.next().await {
                let text = String::from_utf8_lossy(&chunk).into_owned();
                cluster.send_back(from, id, Returned::Chunk(text));
            }
            Returned::End
        }
        Forwarded::StreamClosed => Returned::End,
    }
}
