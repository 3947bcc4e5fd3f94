//! Transports: how sessions reach clients. WebSocket carries a session over one
//! connection; Server-Sent Events and polling carry it over HTTP requests, with the
//! session kept on the server between them (`http_session`). Every one checks the Origin
//! the same way (`origin`).
//!
//! What they share is [`Shared`]: the sessions' context, the open HTTP sessions, and the
//! server's lifetime. They depend on the session, the hub below it and `net`, never on the
//! HTTP routes above them.

pub(crate) mod http_session;
pub(crate) mod origin;
pub(crate) mod poll;
pub(crate) mod sse;
pub(crate) mod ws;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::net::plain;
use crate::session;

/// What every transport's handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What each session needs: the hub, the verifier, the slots, the configuration.
    pub(crate) session: Arc<session::Context>,
    /// The open HTTP sessions (SSE and polling) by id.
    pub(crate) http_sessions: http_session::Registry,
    /// Cancelled on shutdown. Open connections are told through the hub; one that opens
    /// after this is cancelled closes at once.
    pub(crate) shutdown: CancellationToken,
    /// Tracks connection tasks, so shutdown can wait for their close handshakes.
    pub(crate) tracker: TaskTracker,
}

/// The answer of a transport switched off in `[transports]`: as if it did not exist.
pub(crate) fn disabled(transport: &str) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        format!("the {transport} transport is disabled on this server\n"),
    )
}
