//! Integration tests of the apps over real sockets on 127.0.0.1: a real server
//! (`Server::new` + `switchboard_apps::mount` + `run`) with a temporary data directory,
//! driven by `switchboard-client` (HTTP and WebSocket), one test binary (STYLE.md §3.12).
//!
//! - `accounts`: sign-up, sign-in, sessions, the token endpoint, guests, invites, admins
//!   made by the CLI's functions, rate limits, hostile requests, external tokens.
//! - `chat`: the `chat.` rpc methods end to end over WebSockets: posts, typing, rooms,
//!   read positions, direct messages to online and offline users.
//! - `monitor`: the host registry from an agent's publications, thresholds and silence
//!   as events and webhook calls, the hub as `@hub`, `POST /api/ingest`, the `monitor.`
//!   methods' refusals, the `/logs` and `/monitor` pages.
//! - `ops`: the `admin.` rpc methods and their refusals.
//! - `pages`: the pages and files: types, CSP and the other headers, ETag and 304, gzip.
//! - `vote`: the `vote.` rpc methods: a poll's life, hidden results, closing times,
//!   coalesced tally pushes, 1,000 concurrent voters against a recount, a restart.
//! - `util`: the server, HTTP helpers, signed-in users with a WebSocket.

mod accounts;
mod chat;
mod monitor;
mod ops;
mod pages;
mod util;
mod vote;
