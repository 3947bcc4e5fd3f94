//! RFC 6455 WebSocket protocol for Switchboard.
//!
//! The core is sans-IO: it turns bytes into messages and messages into bytes, and never
//! touches a socket or a clock. The optional `tokio` feature adds [`tokio::WebSocket`],
//! the adapter the server and the command-line tools use.
//!
//! # Layout
//! - [`frame`]: opcodes, frame headers and the frame encoder (§5.2).
//! - [`decode`]: the incremental frame decoder; it resumes at any byte boundary and checks
//!   limits before buffering.
//! - [`mask`]: payload masking, word at a time (§5.3).
//! - [`utf8`]: [`Utf8Bytes`] and the incremental validator that fails fast (§8.1).
//! - [`message`]: [`Message`] and reassembly of fragments with control frames between them
//!   (§5.4).
//! - [`close`]: [`CloseCode`] and [`CloseFrame`] (§5.5.1, §7.4).
//! - [`conn`]: [`Connection`], the state machine tying these together, with the close
//!   handshake (§7).
//! - [`prepared`]: [`PreparedMessage`], encoded once for fan-out.
//! - [`handshake`]: the opening handshake, server and client (§4).
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation, and the codec that
//!   [`Connection`] uses once it is negotiated.
//! - [`error`]: [`Error`] and [`ProtocolError`] with its close code.
//! - `tokio` (feature): [`tokio::WebSocket`] over any `AsyncRead + AsyncWrite`.
//!
//! # Extensions
//! permessage-deflate (RFC 7692) is the one extension: configured by [`Config::deflate`],
//! negotiated by the tokio adapter's `accept_with` and `connect` (or by the caller with
//! [`deflate::negotiate`] and [`Connection::set_deflate`]). RSV1 is refused unless it was
//! negotiated, and then allowed only on the first frame of a data message; RSV2 and RSV3
//! are always refused.

pub mod close;
pub mod conn;
pub mod decode;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod prepared;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use conn::{CloseState, Connection};
pub use deflate::{DeflateConfig, SharedCompression};
pub use error::{Error, ProtocolError, Result};
pub use message::Message;
pub use prepared::PreparedMessage;
pub use utf8::Utf8Bytes;

use std::time::Duration;

/// Which end of the connection we are. It decides masking: clients mask, servers do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The accepting side.
    Server,
    /// The connecting side.
    Client,
}

/// Limits and timeouts. The defaults suit a public server; every field is documented with
/// its default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame payload accepted, in bytes; larger frames close with 1009.
    /// Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest message accepted (all fragments together), in bytes; larger ones close
    /// with 1009. Default 64 MiB.
    pub max_message_size: usize,
    /// Largest opening handshake accepted, in bytes; larger ones get a 400. Default 8 KiB.
    pub max_handshake_size: usize,
    /// How long the opening handshake may take before the connection is dropped.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close frame (client) or for the peer to close the
    /// TCP connection (after the handshake) before giving up. Default 5 s.
    pub close_timeout: Duration,
    /// Outgoing bytes buffered before a write is forced. Smaller batches mean more
    /// syscalls; larger ones more memory per connection. Default 64 KiB.
    pub write_buffer_size: usize,
    /// Payloads at least this large are written straight from the caller's buffer
    /// (vectored with their header) instead of being copied. Default 16 KiB.
    pub vectored_write_threshold: usize,
    /// permessage-deflate (RFC 7692). Default: off; see [`DeflateConfig`] for each
    /// setting's default once on.
    pub deflate: DeflateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_handshake_size: 8 << 10,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            write_buffer_size: 64 << 10,
            vectored_write_threshold: 16 << 10,
            deflate: DeflateConfig::default(),
        }
    }
}
