//! Integration tests of `switchboard-server` over real sockets on 127.0.0.1:0, one binary
//! (STYLE.md §3.12). Every module starts its own servers with `util::start`.
//!
//! - `connect`: the connect reply, tokens (bad, expired, expiring, refreshed), anonymous
//!   connections, the connect timeout, the Origin check.
//! - `pubsub`: subscribe/publish/unsubscribe and every error path of the commands.
//! - `history`: history, presence, join/leave.
//! - `recovery`: reconnecting with `{offset, epoch}`, also under concurrent publishing.
//! - `mailbox`: private messages, online and offline.
//! - `api`: the server API over HTTP, `/health`, `/metrics`.
//! - `slow`: slow-consumer disconnect.
//! - `shutdown`: graceful shutdown.
//! - `ping`: dead connections are closed.
//! - `sse`: sessions over Server-Sent Events, resuming with `Last-Event-ID`.
//! - `hardening`: issue 10, one test per point: connection slots, deadlines, budgets,
//!   quotas, the Host check, raw JSON, refresh, session take-over, `close`, join/leave.
//! - `extensions`: the extension points: `rpc` (handlers by prefix, the proxy to a
//!   backend), history paging backwards on every transport, ephemeral publications.
//! - `cluster`: several nodes as one hub over a real redis-server (skipped without one).
//! - `tls`: HTTPS and `wss://` on one port (a test CA made with rcgen), the direct-write
//!   fan-out over TLS, HSTS, the certificate reload, the start-up errors.
//! - `deflate`: permessage-deflate on `/ws`: negotiation from `[deflate]`, one compressed
//!   frame for every subscriber, compressed commands, the decompression bomb (1009).
//! - `poll`: long and short polling; what every HTTP transport shares (Origin, CORS, body
//!   size, transports switched off); recovery on a new session.

mod api;
mod cluster;
mod connect;
mod deflate;
mod extensions;
mod hardening;
mod history;
mod mailbox;
mod ping;
mod poll;
mod pubsub;
mod recovery;
mod shutdown;
mod slow;
mod sse;
mod tls;
mod util;
