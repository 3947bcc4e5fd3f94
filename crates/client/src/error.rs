//! The crate's one error type.

/// Everything that can go wrong talking to a server. Causes are part of the message (not a
/// `source` too), so `{err}` says it once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL this client cannot use.
    #[error("unsupported URL {url:?}: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {cause}")]
    Connect {
        /// Where to.
        addr: String,
        /// Why not.
        cause: std::io::Error,
    },
    /// TLS failed: the roots or CA file could not be read, or the handshake failed (a
    /// certificate not trusted or not naming the host, no common protocol version).
    #[error("TLS: {0}")]
    Tls(String),
    /// A request that cannot be sent (a bad method, path or header).
    #[error("invalid request: {0}")]
    Request(String),
    /// The WebSocket failed: the handshake, the protocol, or the socket.
    #[error("WebSocket: {0}")]
    Ws(#[from] switchboard_ws::Error),
    /// The HTTP exchange failed (the connection broke, or the answer is not HTTP).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// An HTTP answer with a status the caller did not expect, and the start of its body.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The body (cut), which usually says why.
        body: String,
    },
    /// The server closed the WebSocket while something else was awaited.
    #[error("the server closed the connection: {code} {reason}")]
    Closed {
        /// The close code (1005 when the frame had none).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The connection ended without a close frame, or a response ended early.
    #[error("the connection ended")]
    Ended,
    /// The server answered a command with an error reply.
    #[error("error {code}: {message}")]
    Refused {
        /// The error code (see docs/protocol.md).
        code: u64,
        /// The error message.
        message: String,
    },
    /// The server sent something this client cannot read (not JSON, not the expected
    /// shape, too large).
    #[error("the server sent something unexpected: {0}")]
    Unexpected(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The start of a server's text, for an error message: at most `QUOTE` characters.
pub(crate) fn quote(text: &[u8]) -> String {
    const QUOTE: usize = 300;
    let text = String::from_utf8_lossy(text);
    match text.char_indices().nth(QUOTE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_cut_at_a_character() {
        assert_eq!(quote(b"short"), "short");
        let long = "é".repeat(400);
        let quoted = quote(long.as_bytes());
        assert_eq!(quoted.chars().count(), 301);
        assert!(quoted.ends_with('…'));
    }
}
