//! What every handler shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::Hub;

/// Shared server state, behind an `Arc` in every handler.
#[derive(Debug)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Channels, users and mailboxes.
    pub hub: Arc<Hub>,
    /// Verifies connection tokens.
    pub verifier: Verifier,
    /// The server API key.
    pub api_key: String,
    /// Cancelled on shutdown. Open connections are told through the hub
    /// ([`Hub::disconnect_all`](crate::hub::Hub::disconnect_all)); one that opens after
    /// this is cancelled closes at once.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks, so shutdown can wait for their close handshakes.
    pub tracker: TaskTracker,
    /// Connection slots: pending and connected (see [`crate::admission`]).
    pub admission: Arc<Admission>,
    /// The open HTTP sessions (SSE and polling) by id.
    pub http_sessions: crate::transport::http_session::Registry,
}
