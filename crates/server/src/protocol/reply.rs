//! Replies: the one answer each command gets, and the shapes of their results.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Publication;
use crate::error::ClientError;

/// A reply to a command: `{"id": N, "result": ...}`.
pub fn reply_ok<T: Serialize>(id: Option<u64>, result: &T) -> String {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        id: Option<u64>,
        result: &'a T,
    }
    serde_json::to_string(&Ok { id, result }).unwrap_or_default()
}

/// An error reply: `{"id": N, "error": {"code", "message"}}`.
pub fn reply_err(id: Option<u64>, error: &ClientError) -> String {
    #[derive(Serialize)]
    struct Err<'a> {
        id: Option<u64>,
        error: &'a ClientError,
    }
    serde_json::to_string(&Err { id, error }).unwrap_or_default()
}

/// The body of an HTTP answer that refuses a request (the server API, the HTTP
/// transports): `{"error": {"code", "message"}}`, the `error` of an error reply.
pub fn error_body(error: &ClientError) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a ClientError,
    }
    serde_json::to_string(&Body { error }).unwrap_or_default()
}

/// The result of a subscription.
#[derive(Debug, Serialize)]
pub struct Subscribed {
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset.
    pub offset: u64,
    /// Whether the channel keeps history (so positions can be recovered).
    pub recoverable: bool,
    /// With `recover`: whether every missed publication is in `publications`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// With `recover` and `recovered: true`: the missed publications, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Arc<Publication>>,
}

/// A channel's history.
#[derive(Debug, Serialize)]
pub struct History {
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset.
    pub offset: u64,
    /// Publications, oldest first.
    pub publications: Vec<Arc<Publication>>,
    /// With `since`: false when publications after it are no longer all in history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// Who is subscribed to a channel.
#[derive(Debug, Serialize)]
pub struct Presence {
    /// Users with a token, by user id.
    pub presence: BTreeMap<String, PresenceEntry>,
    /// Anonymous connections, by client id (absent when there are none). Kept apart
    /// from users, so no user id can be mistaken for a connection.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub anonymous: BTreeMap<String, PresenceEntry>,
}

/// One presence entry: the user, their public info, and how many of their connections
/// are subscribed.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceEntry {
    /// The user id (`""` for an anonymous connection).
    pub user: String,
    /// The `info` claim of the user's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<RawValue>>,
    /// How many of the user's connections are subscribed.
    pub connections: u32,
}

/// The result of `send` (and of the server API's `send`): where the message went, and
/// its id in the recipient's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Where it went.
    pub status: SendStatus,
    /// Its mailbox id, which the recipient acknowledges.
    pub mailbox: u64,
}

/// Where a private message went (`send`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendStatus {
    /// Queued to the user's live connections (and kept until acknowledged).
    Delivered,
    /// The user is offline: kept in the mailbox until they connect.
    Stored,
}
