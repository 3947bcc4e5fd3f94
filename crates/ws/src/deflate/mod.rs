//! permessage-deflate (RFC 7692): negotiation and the per-connection codec.
//!
//! - [`negotiation`]: the `Sec-WebSocket-Extensions` grammar, the server's choice among the
//!   client's offers, the client's offer and its check of the server's response.
//! - `codec`: compressing a whole message and inflating one frame at a time within the
//!   message size limit, with state allocated only while it is needed.
//!
//! # Memory
//! Without context takeover (the default, in both directions) a connection holds no zlib
//! state between messages: messages are compressed with a compressor shared by the thread
//! and reset for each message, and a single-frame message is inflated the same way. Only a
//! fragmented compressed message gets an inflater of its own, dropped when it ends. A
//! connection that keeps a context (either side asked for it) keeps that state from its
//! first compressed message on.
//!
//! # Window bits
//! zlib (and zlib-rs, its port) cannot compress with a 256-byte window: a raw deflate stream
//! with 8 window bits is refused. A peer that limits us to 8 bits is therefore accepted and
//! sent every message uncompressed, which RFC 7692 allows (RSV1 is decided per message).
//! Inflating always uses at least 9 bits: a larger window reads any stream a smaller one
//! wrote.

pub(crate) mod codec;
pub mod negotiation;

pub use negotiation::{Params, check_response, negotiate, offer};

use crate::PreparedMessage;

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// Settings for permessage-deflate, on either side. Field names are from this endpoint's
/// point of view: "peer" is the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Whether to negotiate the extension: a server accepts an offer, a client makes one.
    /// Default: off in the library (it costs CPU and, with context takeover, memory);
    /// `switchboard echo` turns it on.
    pub enabled: bool,
    /// zlib compression level, 0 (none) to 9 (smallest). Default 6, zlib's own default.
    pub level: u32,
    /// Data messages shorter than this many bytes are sent uncompressed: deflate's block
    /// header and the lost byte alignment make tiny messages larger, not smaller.
    /// Default 64.
    pub min_size: usize,
    /// Whether this endpoint keeps its compression context from one message to the next.
    /// It compresses similar messages better, but costs a compressor per connection and
    /// stops a server from compressing a publication once for all its subscribers.
    /// Default false: a server answers `server_no_context_takeover` (RFC 7692 §7.1.1.1
    /// allows it unasked), a client offers `client_no_context_takeover`.
    pub context_takeover: bool,
    /// Whether the peer may keep its context, which makes this endpoint keep an inflater
    /// (about 40 KiB) per connection between messages. Default false: a server answers
    /// `client_no_context_takeover` (§7.1.1.2), a client asks for
    /// `server_no_context_takeover` (and offers a plain fallback a server may prefer).
    pub peer_context_takeover: bool,
    /// The largest LZ77 window this endpoint compresses with, as a power of two: 9 to 15.
    /// Default 15 (32 KiB). A server declares a smaller value in `server_max_window_bits`.
    pub max_window_bits: u8,
    /// The largest window the peer may compress with, 8 to 15: a server answers
    /// `client_max_window_bits` when the client offered it, a client asks with
    /// `server_max_window_bits`. Default 15 (no limit).
    pub peer_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: false,
            level: 6,
            min_size: 64,
            context_takeover: false,
            peer_context_takeover: false,
            max_window_bits: 15,
            peer_max_window_bits: 15,
        }
    }
}

impl DeflateConfig {
    /// The defaults with the extension turned on.
    pub fn enabled() -> Self {
        DeflateConfig {
            enabled: true,
            ..DeflateConfig::default()
        }
    }
}

/// How a connection that keeps no compression context of its own sends a message: every
/// connection with equal values sends the same bytes, so a server fanning a publication out
/// compresses it once (see [`crate::Connection::shared_compression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCompression {
    /// zlib level.
    pub level: u32,
    /// The window compressed with; below 9 nothing is compressed (see the module docs).
    pub window_bits: u8,
    /// Data messages with a shorter payload go uncompressed.
    pub min_size: usize,
}

impl SharedCompression {
    /// `message` as sent with this compression: compressed (computed once and cached in
    /// the message for every clone), or itself when it is too short to compress or
    /// compressing would not make it smaller.
    pub fn encode(&self, message: &PreparedMessage) -> PreparedMessage {
        if message.payload_len() >= self.min_size.max(1) && self.window_bits >= 9 {
            message.compressed(self.level, self.window_bits)
        } else {
            message.clone()
        }
    }
}

/// What one side of a connection does with the negotiated extension: the wire parameters
/// turned into "what I send" and "what I receive", with the local settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setup {
    /// zlib level for what we send.
    pub(crate) level: u32,
    /// Messages shorter than this go uncompressed.
    pub(crate) min_size: usize,
    /// The window we compress with; below 9 we never compress (see the module docs).
    pub(crate) send_window_bits: u8,
    /// Whether we reset our compressor after each message.
    pub(crate) send_no_context: bool,
    /// The window the peer compresses with, at most.
    pub(crate) recv_window_bits: u8,
    /// Whether the peer resets its compressor after each message.
    pub(crate) recv_no_context: bool,
}

impl Setup {
    /// The setup of the side `role` for `params` (as sent in the server's response).
    pub(crate) fn new(role: crate::Role, params: &Params, config: &DeflateConfig) -> Setup {
        let (send_window, send_nct, recv_window, recv_nct) = match role {
            crate::Role::Server => (
                params.server_window_bits(),
                params.server_no_context_takeover,
                params.client_window_bits(),
                params.client_no_context_takeover,
            ),
            crate::Role::Client => (
                params.client_window_bits(),
                params.client_no_context_takeover,
                params.server_window_bits(),
                params.server_no_context_takeover,
            ),
        };
        Setup {
            level: config.level.min(9),
            min_size: config.min_size,
            // Compressing with a smaller window than allowed is always valid.
            send_window_bits: send_window.min(config.max_window_bits.clamp(9, 15)),
            // Dropping our own context is always allowed (the peer cannot tell).
            send_no_context: send_nct || !config.context_takeover,
            recv_window_bits: recv_window,
            recv_no_context: recv_nct,
        }
    }

    /// Whether a data message of `len` bytes is sent compressed.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        // An empty message stays plain: with a kept context a second sync flush in a row
        // produces nothing at all.
        len >= self.min_size.max(1) && self.send_window_bits >= 9
    }
}
