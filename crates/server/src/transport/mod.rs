//! Transports: how sessions reach clients. WebSocket carries a session over one
//! connection; Server-Sent Events and polling carry it over HTTP requests, with the
//! session kept on the server between them ([`http_session`]).

pub mod http_session;
pub(crate) mod poll;
pub(crate) mod sse;
pub mod ws;
