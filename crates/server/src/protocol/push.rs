//! Pushes: what the server sends on its own, not in answer to a command.

use serde::Serialize;

use super::{ClientInfo, PrivateMessage, Publication};

/// Server-to-client pushes, not answers to a command.
#[derive(Debug, Serialize)]
#[serde(tag = "push", rename_all = "snake_case")]
pub enum Push<'a> {
    /// A publication on a subscribed channel.
    Publication {
        /// The channel.
        channel: &'a str,
        /// The channel's epoch.
        epoch: &'a str,
        /// The publication.
        #[serde(flatten)]
        publication: &'a Publication,
        /// Not stored and without an offset (`"offset": 0`): a client keeps no position
        /// for it. Absent on the wire when false.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
    },
    /// A user's first connection subscribed.
    Join {
        /// The channel.
        channel: &'a str,
        /// Who joined.
        info: &'a ClientInfo,
    },
    /// A user's last connection left.
    Leave {
        /// The channel.
        channel: &'a str,
        /// Who left.
        info: &'a ClientInfo,
    },
    /// A private message.
    Message {
        /// The message.
        #[serde(flatten)]
        message: &'a PrivateMessage,
    },
    /// The server ended a subscription (the refreshed token no longer allows the
    /// private channel).
    Unsubscribe {
        /// The channel.
        channel: &'a str,
        /// Why, for people.
        reason: &'a str,
    },
}

impl Push<'_> {
    /// The push as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no I/O.
        serde_json::to_string(self).unwrap_or_default()
    }
}
