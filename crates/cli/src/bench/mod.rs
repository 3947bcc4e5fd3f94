//! `switchboard bench`: load clients that end with one JSON line on stdout (the fields are
//! read by scripts/bench-fanout, scripts/bench-echo and the README's figures: keep them).
//!
//! The load client is often the bottleneck on a small machine, so the hot paths do little
//! per message: publications are found by a byte search, not parsed; counters are shared
//! by the connections of one task, all polled by that task. The clients themselves are
//! `switchboard-client`'s (WebSocket sessions, hyper's HTTP/1.1, the event stream and
//! poll answer readers).
//!
//! # Layout
//! Files depend on those listed before them, never after (no cycles):
//! - `measure`: the server's CPU time and RSS from /proc.
//! - `stats`: the latency histogram, and reading a publication without parsing it.
//! - `connect`: URLs, tokens, and opening a subscribed WebSocket.
//! - `echo`: `bench echo`, round trips against echo servers.
//! - `http`: the SSE and long-polling subscribers (`--transport`), handing each message to
//!   a [`http::Sink`].
//! - `sink`: the subscribers of `fanout` and `idle` over each transport, in tasks of
//!   `--conns-per-task`, counting deliveries, losses and latency.
//! - `publishers`: the publishing plan and the publisher connections that follow it.
//! - `report`: the human and JSON lines of `fanout`.
//! - `fanout`: `bench fanout`, the run: subscribers, slow consumers, publishers, the
//!   window, the report.
//! - `idle`: `bench idle`, subscribed connections held for the server's memory per
//!   connection.
//! - `flood`: `bench flood`, hostile load beside a legitimate client.
//! - `chat`: `bench chat`, the built-in chat app under a chat's load (rooms, typing,
//!   messages through `rpc`).
//! - `vote`: `bench vote`, the built-in voting app: watchers of one poll, voters through
//!   `rpc`, the delay from a vote to the watchers' tally that includes it.
//! - `agents`: `bench agents`, simulated hosts publishing samples and log lines, viewers
//!   reading them all, the delay from a line's write to a viewer.

pub(crate) mod agents;
pub(crate) mod chat;
pub(crate) mod connect;
pub(crate) mod echo;
pub(crate) mod fanout;
pub(crate) mod flood;
pub(crate) mod http;
pub(crate) mod idle;
pub(crate) mod measure;
pub(crate) mod publishers;
pub(crate) mod report;
pub(crate) mod sink;
pub(crate) mod stats;
pub(crate) mod vote;
