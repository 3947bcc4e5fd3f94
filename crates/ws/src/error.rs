//! The crate's one error type.

use crate::close::CloseCode;

/// A violation of RFC 6455 by the peer. Each variant names the rule that was broken; the
/// close code to send back comes from [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RFC 6455 §5.2: RSV1-3 must be 0 unless an extension defines them.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// RFC 6455 §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RFC 6455 §5.5: control frames must not be fragmented.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// RFC 6455 §5.5: control frame payloads are at most 125 bytes.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    /// RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0.
    #[error("64-bit payload length has its most significant bit set")]
    LengthTopBit,
    /// RFC 6455 §5.1: a client must mask every frame it sends.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// RFC 6455 §5.1: a server must not mask any frame it sends.
    #[error("server frame is masked")]
    MaskedFrame,
    /// RFC 6455 §5.4: a continuation frame arrived with no message to continue.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// RFC 6455 §5.4: a new data frame arrived while a fragmented message was in progress.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// RFC 6455 §8.1: text messages must be valid UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// RFC 6455 §5.5.1: a close payload is empty or holds a 2-byte code.
    #[error("close frame payload of 1 byte")]
    CloseLength,
    /// RFC 6455 §7.4: the close code is not one an endpoint may send.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// RFC 6455 §5.5.1: the close reason must be valid UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// RFC 7692 §7.2.2: a compressed message must inflate as a DEFLATE stream.
    #[error("compressed message is not valid DEFLATE data")]
    BadCompressedData,
    /// A frame is larger than the configured maximum.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Declared payload length.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Size the message would reach.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
}

impl ProtocolError {
    /// The close code to send to the peer for this error (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            // Data that does not match what the message claims to be, like bad UTF-8.
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer broke the protocol; the connection must be closed with
    /// [`ProtocolError::close_code`].
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] crate::handshake::HandshakeError),
    /// The caller tried to send after the connection was closed (a caller bug, unlike
    /// [`Error::ConnectionClosed`]).
    #[error("the connection is already closed")]
    AlreadyClosed,
    /// The connection ended normally: the close handshake completed or the peer went away.
    #[error("the connection is closed")]
    ConnectionClosed,
    /// The message to send exceeds the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Size of the message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The peer did not complete a handshake in time.
    #[error("timed out")]
    Timeout,
    /// An I/O error from the underlying stream.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
