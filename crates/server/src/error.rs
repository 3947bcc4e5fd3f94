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
    /// A name that cannot be an agent's host (see [`crate::auth::valid_host`]).
    #[error("invalid host {0:?}: 1 to 64 ASCII letters, digits, '.', '_' and '-'")]
    Host(String),
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

macro_rules! client_errors {
    ($($(#[$doc:meta])* $name:ident = $variant:ident = $code:literal, http $status:literal;)*) => {
        /// Every error code a client can get: the table `docs/protocol.md` is checked
        /// against. On the wire it is the number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant = $code,)*
        }

        impl ErrorCode {
            /// Every code, in order.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The number on the wire.
            pub fn number(self) -> u16 {
                self as u16
            }

            /// Its name in the docs' table (`snake_case`).
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => stringify!($name),)*
                }
            }

            /// The HTTP status the server API and the HTTP transports answer it with.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }
        }

        impl ClientError {
            $(
                $(#[$doc])*
                pub fn $name(message: impl Into<String>) -> ClientError {
                    ClientError { code: ErrorCode::$variant, message: message.into() }
                }
            )*
        }
    };
}

client_errors! {
    /// 100: the server failed; the command may be retried.
    internal = Internal = 100, http 500;
    /// 101: no valid token, or anonymous connections are not allowed.
    unauthorized = Unauthorized = 101, http 401;
    /// 102: the channel name is invalid or its namespace is not configured.
    unknown_channel = UnknownChannel = 102, http 400;
    /// 103: the namespace does not allow this (publishing, a private channel).
    permission_denied = PermissionDenied = 103, http 403;
    /// 104: the `cmd` is not one the server knows.
    unknown_command = UnknownCommand = 104, http 404;
    /// 105: the connection is already subscribed to the channel.
    already_subscribed = AlreadySubscribed = 105, http 400;
    /// 106: too many subscriptions on one connection.
    limit_exceeded = LimitExceeded = 106, http 400;
    /// 107: the command is not valid JSON or lacks a field.
    bad_request = BadRequest = 107, http 400;
    /// 108: the namespace has no history or presence.
    not_available = NotAvailable = 108, http 400;
    /// 109: the token has expired.
    token_expired = TokenExpired = 109, http 401;
    /// 110: `connect` must come first.
    not_connected = NotConnected = 110, http 400;
    /// 111: too many commands; slow down.
    too_many_requests = TooManyRequests = 111, http 429;
    /// 112: `connect` was already sent on this connection.
    already_connected = AlreadyConnected = 112, http 400;
    /// 113: the connection is not subscribed to the channel.
    not_subscribed = NotSubscribed = 113, http 400;
    /// 114: `data` exceeds the payload limit.
    payload_too_large = PayloadTooLarge = 114, http 413;
    /// 115: the user's offline mailbox is full.
    mailbox_full = MailboxFull = 115, http 507;
    /// 116: an SSE or polling request names a session that does not exist (never did,
    /// ended, or expired); the client opens a new one.
    session_not_found = SessionNotFound = 116, http 404;
    /// 117: the store's budget (`storage.max_bytes`, or the disk's free space) is used
    /// up; nothing was stored. The command may succeed later.
    storage_full = StorageFull = 117, http 507;
    /// 118: the server, or this user, has as many connections as allowed; the
    /// connection is closed (1013) and may retry later.
    connection_limit = ConnectionLimit = 118, http 503;
    /// 119: an `rpc` method's handler (an extension of the server, or the application's
    /// backend behind `rpc.proxy_url`) refused the call or failed; the message is its own.
    rpc_failed = RpcFailed = 119, http 400;
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.number())
    }
}

impl ErrorCode {
    /// The close code that follows this error when a `connect` fails with it: retrying
    /// the same token cannot help (101, 109), or the client must back off (118).
    pub fn closes_connect(self) -> Option<switchboard_ws::CloseCode> {
        match self {
            ErrorCode::Unauthorized => Some(close::UNAUTHORIZED),
            ErrorCode::TokenExpired => Some(close::TOKEN_EXPIRED),
            ErrorCode::ConnectionLimit => Some(close::TRY_AGAIN_LATER),
            _ => None,
        }
    }
}

/// So that a code compares with the number a client sees (`err.code == 101`).
impl PartialEq<u16> for ErrorCode {
    fn eq(&self, other: &u16) -> bool {
        self.number() == *other
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
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
