//! Integration tests of the `switchboard` binary: the real executable as a child process,
//! over real sockets on 127.0.0.1, one test binary (STYLE.md §3.12).
//!
//! - `bench`: `bench fanout` and `bench idle` over WebSocket, SSE and long polling.
//! - `cli`: `echo`, `bench echo`, `sub`, `pub`, `token`, `config init`, and what `serve`
//!   says and generates at start-up.
//! - `durability`: what the SQLite store keeps across `kill -9` and restarts (issue 4),
//!   a damaged write-ahead log (issue 10), start-up errors of the store, and the memory
//!   store.
//! - `util`: child processes, temporary data directories, a WebSocket client and an HTTP
//!   client of the server API.

mod bench;
mod cli;
mod durability;
mod util;
