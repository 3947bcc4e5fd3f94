//! The opening handshake (RFC 6455 §4): the server's checks and the client's request.
//!
//! Both sides parse with `httparse` over a bounded buffer: a request or response larger
//! than [`crate::Config::max_handshake_size`] or with more than [`MAX_HEADERS`] headers
//! is refused rather than buffered. Timing out a slow peer is the I/O layer's job.

pub mod client;
pub mod server;

use base64::Engine;
use sha1::{Digest, Sha1};

/// The most headers a handshake may carry.
pub const MAX_HEADERS: usize = 64;

/// The GUID of RFC 6455 §1.3, appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Why a handshake failed. On the server side each variant maps to an HTTP status
/// ([`HandshakeError::status`]) and the message names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The bytes are not an HTTP/1.1 message.
    #[error("malformed HTTP: {0}")]
    Malformed(&'static str),
    /// The message exceeds the size limit before its end.
    #[error("handshake larger than {0} bytes")]
    TooLarge(usize),
    /// More headers than [`MAX_HEADERS`].
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// §4.2.1 (1): the method must be GET.
    #[error("the method must be GET")]
    Method,
    /// §4.2.1 (1): HTTP/1.1 or higher.
    #[error("the HTTP version must be 1.1")]
    HttpVersion,
    /// §4.2.1 (2): a Host header is required.
    #[error("the Host header is missing")]
    MissingHost,
    /// §4.2.1 (3): `Upgrade` must contain `websocket`.
    #[error("the Upgrade header must contain \"websocket\"")]
    Upgrade,
    /// §4.2.1 (4): `Connection` must contain the `Upgrade` token.
    #[error("the Connection header must contain \"Upgrade\"")]
    Connection,
    /// §4.2.1 (5): `Sec-WebSocket-Key` must be the base64 of 16 bytes.
    #[error("Sec-WebSocket-Key must be the base64 encoding of 16 bytes")]
    Key,
    /// §4.2.1 (6): `Sec-WebSocket-Version` is missing.
    #[error("the Sec-WebSocket-Version header is missing")]
    MissingVersion,
    /// §4.4: a version this server does not speak (answered with 426).
    #[error("unsupported Sec-WebSocket-Version; this server speaks 13")]
    UnsupportedVersion,
    /// Client side: the server did not answer 101.
    #[error("the server answered {0} instead of 101")]
    Status(u16),
    /// Client side: `Sec-WebSocket-Accept` does not match the key (§4.1).
    #[error("Sec-WebSocket-Accept does not match the key")]
    Accept,
    /// Client side: the server chose a subprotocol that was not offered (§4.1).
    #[error("the server chose a subprotocol that was not offered")]
    Protocol,
    /// Client side: the server's `Sec-WebSocket-Extensions` names an extension that was
    /// not offered, or answers permessage-deflate with a parameter the client cannot
    /// accept (RFC 6455 §4.1, RFC 7692 §5.2, §7.1).
    #[error("unacceptable Sec-WebSocket-Extensions: {0}")]
    Extension(String),
}

impl HandshakeError {
    /// The HTTP status a server answers with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

/// Case-insensitive search for `token` in a comma-separated header value (RFC 7230 §7).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Splits a comma-separated header value into trimmed, non-empty tokens.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == b',')
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
        .filter(|t| !t.is_empty())
}

/// Maps httparse's errors to ours.
fn malformed(err: httparse::Error) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders,
        httparse::Error::Version => HandshakeError::HttpVersion,
        _ => HandshakeError::Malformed("invalid request or status line, or header"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_1_3_accept_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tokens_are_case_insensitive() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"UPGRADE", "upgrade"));
        assert!(!has_token(b"upgrader", "upgrade"));
    }
}
