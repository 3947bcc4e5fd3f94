//! The crate's one error type, and the client-facing error and close codes.

use std::path::PathBuf;

/// Errors of the server as a whole (start-up, configuration, I/O). Errors answered to a
/// client are [`ClientError`]s instead.
///
/// Each message carries its cause once: the I/O errors are part of the text, not a
/// `source()` as well, so that printing the chain (`{:#}`) does not say it twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The configuration file cannot be read.
    #[error("cannot read configuration file {path}: {cause}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A file in the data directory cannot be read or written.
    #[error("data directory: {path}: {cause}")]
    DataDir {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The SQLite store cannot be opened or used (not a database, corrupt, unwritable).
    #[error("store {path}: {message}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A token key cannot be used.
    #[error("token key: {0}")]
    Key(String),
    /// The token key file (`auth.token_public_key_file`) cannot be read.
    #[error("cannot read the token key file {path} (auth.token_public_key_file): {cause}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A secret (API key, token secret) is empty or too short; the message names where it
    /// came from.
    #[error("{0}")]
    Secret(String),
    /// Other I/O.
    #[error("I/O: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(err)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error answered to a client command (`{"error": {"code", "message"}}`). The codes are
/// documented in `docs/protocol.md`; they never change meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// The stable numeric code.
    pub code: u16,
    /// A human-readable explanation.
    pub message: String,
}

macro_rules! client_errors {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)*) => {
        impl ClientError {
            $(
                $(#[$doc])*
                pub fn $name(message: impl Into<String>) -> ClientError {
                    ClientError { code: $code, message: message.into() }
                }
            )*
        }
        /// Every client error code with its constructor's name, for the docs test.
        pub const CLIENT_ERROR_CODES: &[(u16, &str)] = &[$(($code, stringify!($name))),*];
    };
}

client_errors! {
    /// 100: the server failed; the command may be retried.
    internal = 100;
    /// 101: no valid token, or anonymous connections are not allowed.
    unauthorized = 101;
    /// 102: the channel name is invalid or its namespace is not configured.
    unknown_channel = 102;
    /// 103: the namespace does not allow this (publishing, a private channel).
    permission_denied = 103;
    /// 104: the `cmd` is not one the server knows.
    unknown_command = 104;
    /// 105: the connection is already subscribed to the channel.
    already_subscribed = 105;
    /// 106: too many subscriptions on one connection.
    limit_exceeded = 106;
    /// 107: the command is not valid JSON or lacks a field.
    bad_request = 107;
    /// 108: the namespace has no history or presence.
    not_available = 108;
    /// 109: the token has expired.
    token_expired = 109;
    /// 110: `connect` must come first.
    not_connected = 110;
    /// 111: too many commands; slow down.
    too_many_requests = 111;
    /// 112: `connect` was already sent on this connection.
    already_connected = 112;
    /// 113: the connection is not subscribed to the channel.
    not_subscribed = 113;
    /// 114: `data` exceeds the payload limit.
    payload_too_large = 114;
    /// 115: the user's offline mailbox is full.
    mailbox_full = 115;
    /// 116: an SSE or polling request names a session that does not exist (never did,
    /// ended, or expired); the client opens a new one.
    session_not_found = 116;
    /// 117: the store's budget (`storage.max_bytes`, or the disk's free space) is used
    /// up; nothing was stored. The command may succeed later.
    storage_full = 117;
    /// 118: the server, or this user, has as many connections as allowed; the
    /// connection is closed (1013) and may retry later.
    connection_limit = 118;
}

/// WebSocket close codes the server sends (RFC 6455 codes, then ours in the 4000-4999
/// private range). Documented in `docs/protocol.md`.
pub mod close {
    use switchboard_ws::CloseCode;

    /// The client asked to end the session (`close` command).
    pub const NORMAL: CloseCode = CloseCode::NORMAL;
    /// The server is shutting down or restarting; reconnect.
    pub const SHUTDOWN: CloseCode = CloseCode::GOING_AWAY;
    /// A frame or message exceeded the size limit (RFC 6455).
    pub const TOO_BIG: CloseCode = CloseCode::TOO_BIG;
    /// The token is invalid or missing where required; do not reconnect with it.
    pub const UNAUTHORIZED: CloseCode = CloseCode(4001);
    /// The token expired; get a new one, then reconnect.
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4002);
    /// Disconnected through the server API (`POST /api/disconnect`); do not reconnect
    /// automatically.
    pub const DISCONNECTED: CloseCode = CloseCode(4003);
    /// The client did not read its messages fast enough (outbox full).
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4004);
    /// Too many commands refused for the rate limit.
    pub const RATE_LIMIT: CloseCode = CloseCode(4005);
    /// No pong to the server's ping in time.
    pub const NO_PONG: CloseCode = CloseCode(4006);
    /// `connect` was not sent in time.
    pub const CONNECT_TIMEOUT: CloseCode = CloseCode(4007);
    /// Disconnected through the server API with `"reconnect": true`: reconnect (with
    /// backoff) and recover, for example to pick up a new token or to move to another node.
    pub const RECONNECT: CloseCode = CloseCode(4008);
    /// The server or the user has as many connections as allowed (`connect` got error
    /// 118): reconnect later, with backoff (RFC 6455's "Try Again Later").
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode::TRY_AGAIN_LATER;
    /// SSE: another stream resumed this session with its id; this one ends. Do not
    /// reconnect with the same session: someone else holds its id.
    pub const SESSION_TAKEN: CloseCode = CloseCode(4009);

    /// Every code above. The docs test checks that `docs/protocol.md` documents each one,
    /// so a new code goes here too.
    pub const ALL: &[CloseCode] = &[
        NORMAL,
        SHUTDOWN,
        TOO_BIG,
        UNAUTHORIZED,
        TOKEN_EXPIRED,
        DISCONNECTED,
        SLOW_CONSUMER,
        RATE_LIMIT,
        NO_PONG,
        CONNECT_TIMEOUT,
        RECONNECT,
        TRY_AGAIN_LATER,
        SESSION_TAKEN,
    ];
}
