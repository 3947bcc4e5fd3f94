//! Commands: the JSON text frames a client sends.
//!
//! A command is one flat object, `{"id": 1, "cmd": "publish", "channel": "...", "data": ...}`.
//! It is parsed into [`Request`] with every field optional, then [`Request::command`] checks
//! the fields the command needs, so a missing field gets an error that names it. `data` stays
//! raw JSON ([`RawValue`]) from the socket to the subscribers: it is never re-parsed.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::StreamPosition;
use crate::error::ClientError;

/// A command as sent, every field optional.
#[derive(Debug, Deserialize)]
pub struct Request<'a> {
    /// Echoed in the reply, so a client can match replies to commands.
    pub id: Option<u64>,
    /// The command name.
    #[serde(borrow)]
    pub cmd: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    token: Option<String>,
    recover: Option<StreamPosition>,
    since: Option<StreamPosition>,
    before: Option<u64>,
    limit: Option<usize>,
    user: Option<String>,
    mailbox: Option<u64>,
    #[serde(default)]
    ephemeral: bool,
    #[serde(borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
}

/// A command with its required fields present.
#[derive(Debug)]
pub enum Command<'a> {
    /// Authenticate the connection; must come first.
    Connect {
        /// A JWT, or none for an anonymous connection where allowed.
        token: Option<String>,
    },
    /// Subscribe, optionally recovering from a position.
    Subscribe {
        /// Channel name.
        channel: &'a str,
        /// Last position seen, to receive what was missed.
        recover: Option<StreamPosition>,
    },
    /// Unsubscribe.
    Unsubscribe {
        /// Channel name.
        channel: &'a str,
    },
    /// Publish to a channel.
    Publish {
        /// Channel name.
        channel: &'a str,
        /// Any JSON value.
        data: &'a RawValue,
        /// Delivered to the subscribers of the moment only: not stored, no offset.
        ephemeral: bool,
    },
    /// Read a channel's history: the latest `limit`, everything after `since`, or the
    /// newest `limit` below the offset `before` (paging backwards).
    History {
        /// Channel name.
        channel: &'a str,
        /// Most publications returned.
        limit: Option<usize>,
        /// Return publications after this position.
        since: Option<StreamPosition>,
        /// Return publications below this offset.
        before: Option<u64>,
    },
    /// Call a method of the server's extensions or of the application's backend.
    Rpc {
        /// The method, e.g. `chat.post`; handlers are chosen by its prefix.
        method: &'a str,
        /// Any JSON value, handed to the handler as is.
        data: Option<&'a RawValue>,
    },
    /// Who is subscribed to a channel.
    Presence {
        /// Channel name.
        channel: &'a str,
    },
    /// A private message to a user.
    Send {
        /// The recipient's user id.
        user: String,
        /// Any JSON value.
        data: &'a RawValue,
    },
    /// Acknowledge private messages up to an id, so they leave the mailbox.
    Ack {
        /// The highest message id received.
        mailbox: u64,
    },
    /// Application-level ping (for clients that cannot send WebSocket pings).
    Ping,
    /// Replace the connection's token before it expires.
    Refresh {
        /// The new JWT.
        token: String,
    },
    /// End the session now (answered, then closed with 1000): an HTTP session's client
    /// leaving does not wait for `limits.session_idle`.
    Close,
}

impl<'a> Request<'a> {
    /// Parses a command frame. A frame that is not a JSON object, or has a field of the
    /// wrong type, is a [`ClientError`] (107), answered with the request id if one can
    /// still be read (see [`Request::id_of`]).
    pub fn parse(text: &'a str) -> Result<Request<'a>, ClientError> {
        // serde would also read a JSON array by field position; commands are objects.
        if !text.trim_start().starts_with('{') {
            return Err(ClientError::bad_request(
                "invalid JSON: a command is one JSON object",
            ));
        }
        serde_json::from_str(text)
            .map_err(|e| ClientError::bad_request(format!("invalid JSON: {e}")))
    }

    /// The `id` of a frame that did not parse as a command (say, `"limit": -1`), so the
    /// error reply can still carry it.
    pub fn id_of(text: &str) -> Option<u64> {
        #[derive(Deserialize)]
        struct IdOnly {
            id: Option<u64>,
        }
        serde_json::from_str::<IdOnly>(text).ok().and_then(|r| r.id)
    }

    /// The command, with its required fields checked.
    pub fn command(&'a self) -> Result<Command<'a>, ClientError> {
        let need = |field: &str| ClientError::bad_request(format!("missing field \"{field}\""));
        let channel = || self.channel.as_deref().ok_or_else(|| need("channel"));
        let data = || self.data.ok_or_else(|| need("data"));
        let cmd = self.cmd.as_deref().ok_or_else(|| need("cmd"))?;
        Ok(match cmd {
            "connect" => Command::Connect {
                token: self.token.clone(),
            },
            "subscribe" => Command::Subscribe {
                channel: channel()?,
                recover: self.recover.clone(),
            },
            "unsubscribe" => Command::Unsubscribe {
                channel: channel()?,
            },
            "publish" => Command::Publish {
                channel: channel()?,
                data: data()?,
                ephemeral: self.ephemeral,
            },
            "history" => {
                if self.since.is_some() && self.before.is_some() {
                    return Err(ClientError::bad_request(
                        "history takes since or before, not both",
                    ));
                }
                Command::History {
                    channel: channel()?,
                    limit: self.limit,
                    since: self.since.clone(),
                    before: self.before,
                }
            }
            "rpc" => Command::Rpc {
                method: self.method.as_deref().ok_or_else(|| need("method"))?,
                data: self.data,
            },
            "presence" => Command::Presence {
                channel: channel()?,
            },
            "send" => Command::Send {
                user: self.user.clone().ok_or_else(|| need("user"))?,
                data: data()?,
            },
            "ack" => Command::Ack {
                mailbox: self.mailbox.ok_or_else(|| need("mailbox"))?,
            },
            "ping" => Command::Ping,
            "refresh" => Command::Refresh {
                token: self.token.clone().ok_or_else(|| need("token"))?,
            },
            "close" => Command::Close,
            other => {
                return Err(ClientError::unknown_command(format!(
                    "unknown cmd {other:?}"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_are_named() {
        let req = Request::parse(r#"{"id":3,"cmd":"publish","channel":"a"}"#).unwrap();
        let err = req.command().unwrap_err();
        assert_eq!(
            (err.code.number(), err.message.as_str()),
            (107, "missing field \"data\"")
        );
        let req = Request::parse(r#"{"id":3,"cmd":"fly"}"#).unwrap();
        assert_eq!(req.command().unwrap_err().code, 104);
        assert_eq!(Request::parse("[1,2]").unwrap_err().code, 107);
        assert_eq!(Request::parse("{").unwrap_err().code, 107);
    }

    #[test]
    fn data_stays_raw() {
        let req =
            Request::parse(r#"{"cmd":"publish","channel":"c","data":{"b": [1, 2.50]}}"#).unwrap();
        match req.command().unwrap() {
            Command::Publish { data, .. } => assert_eq!(data.get(), r#"{"b": [1, 2.50]}"#),
            other => panic!("{other:?}"),
        }
    }
}
