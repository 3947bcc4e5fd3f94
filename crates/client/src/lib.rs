//! A client of Switchboard: the client protocol over WebSocket, the HTTP transports (an
//! event stream, long polls) and the server API, over real sockets.
//!
//! One library for everything that talks to a Switchboard server from Rust: the
//! `switchboard` binary's `sub`, `pub` and `bench`, the integration tests of the server and
//! of the binary. WebSocket is `switchboard-ws`; HTTP is hyper's client, so no response is
//! parsed by hand here.
//!
//! # Layout
//! - [`url`]: [`Endpoint`], where a `ws://` or `http://` URL (or `wss://`, `https://`)
//!   points (the same server answers both), and how to connect to it.
//! - [`tls`]: [`Tls`], the roots a client trusts (the system's, or a CA file), and
//!   [`Stream`], plain TCP or TLS, which every client here runs over.
//! - [`ws`]: [`Client`], a WebSocket session of the client protocol: commands with ids,
//!   replies matched to them, pushes kept in order; raw frames and close codes for tests.
//! - [`http`]: [`HttpConnection`], one keep-alive HTTP/1.1 connection driven by its caller
//!   (no task of its own), whole responses ([`Response`]) or streamed ones
//!   ([`ResponseStream`]); [`http::request`] for one-shot requests.
//! - [`sse`]: the event stream format (a sans-IO [`sse::Parser`]) and [`EventStream`], a
//!   `GET /sse` read event by event.
//! - [`poll`]: long polling: [`poll::read_answer`] splits an answer into its messages
//!   without parsing them, and [`LongPoll`] is a session over one keep-alive connection.
//! - [`api`]: [`Api`], the server API (`POST /api/{command}` with `X-API-Key`).
//! - [`error`]: [`Error`], the crate's one error type.
//!
//! Nothing here imposes a timeout on a read: a long poll or an idle subscription may wait
//! for as long as its caller means to. Callers bound what they wait for
//! (`tokio::time::timeout`); every future here can be dropped at an `.await` without
//! leaving the connection in a broken state, except in the middle of a write.

pub mod api;
pub mod error;
pub mod http;
pub mod poll;
pub mod sse;
pub mod tls;
pub mod url;
pub mod ws;

pub use api::Api;
pub use error::{Error, Result};
pub use http::{HttpConnection, Response, ResponseStream};
pub use poll::LongPoll;
pub use sse::EventStream;
pub use tls::{Stream, Tls};
pub use url::Endpoint;
pub use ws::{Client, Incoming};
