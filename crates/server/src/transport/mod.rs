//! Transports: how sessions reach clients. WebSocket first; SSE and polling follow.

pub mod ws;
