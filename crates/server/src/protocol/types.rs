//! What travels in pushes and replies: stream positions, publications, private messages
//! and who sent them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A position in a channel's stream: the offset of a publication within an epoch. A new
/// epoch means the stream was lost (offsets restarted), so positions from another epoch
/// cannot be recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Offset of the last publication seen (0: none).
    pub offset: u64,
    /// The epoch the offset belongs to.
    pub epoch: String,
}

/// Who published or sent something, as subscribers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The user id ("" for anonymous connections).
    pub user: String,
    /// The connection id.
    pub client: String,
    /// The `info` claim of the user's token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<RawValue>>,
}

/// A publication, as stored in history and pushed to subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// Position in the channel.
    pub offset: u64,
    /// The published JSON value.
    pub data: Arc<RawValue>,
    /// The publisher, absent when published through the server API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// Unix time in milliseconds when the server accepted it.
    pub time: u64,
}

/// A private message, as kept in a mailbox and pushed to its recipient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivateMessage {
    /// Increasing mailbox id; `ack` takes it. Named `mailbox` on the wire, so a push
    /// never carries an `id` (which marks replies).
    #[serde(rename = "mailbox")]
    pub id: u64,
    /// The sender, absent when sent through the server API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ClientInfo>,
    /// The JSON value sent.
    pub data: Arc<RawValue>,
    /// Unix time in milliseconds when the server accepted it.
    pub time: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
