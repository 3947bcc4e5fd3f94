//! Integration tests for `switchboard-ws`: real sockets on 127.0.0.1, one binary
//! (STYLE.md §3.12).
//!
//! - `interop`: tokio-tungstenite as the peer, as client and as server.
//! - `rfc`: RFC 6455 rules checked with exact bytes on the wire, one test per section.
//! - `abuse`: hostile input is refused with the right code, without panics or unbounded
//!   memory.
//! - `props`: property tests of `Connection::read` at arbitrary fragmentation and chunking.
//! - `deflate`: permessage-deflate (RFC 7692) on the wire: negotiation, RSV1, fragments,
//!   the decompression bomb, our client with our server.
//! - `node`: our client's permessage-deflate against Node's `ws` server.

mod abuse;
mod deflate;
mod interop;
mod node;
mod props;
mod rfc;
mod util;
