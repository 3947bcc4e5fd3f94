//! The client against a real server started in-process, over real sockets on 127.0.0.1
//! (one test binary, STYLE.md §3.12).
//!
//! - `ws`: a WebSocket session: commands, replies, pushes, close codes.
//! - `http`: one-shot and keep-alive requests, a streamed answer, the server API, an event
//!   stream and a long-polling session.

mod http;
mod util;
mod ws;
