//! Integration tests of the `switchboard` binary: the real executable as a child process,
//! over real sockets on 127.0.0.1, one test binary (STYLE.md §3.12).
//!
//! - `agent`: `switchboard agent` against `serve`, and `serve --local-agent`.
//! - `apps`: the built-in apps from the binary: the first admin's one-time link, and
//!   `switchboard user` accounts signing in over HTTP.
//! - `bench`: `bench fanout` and `bench idle` over WebSocket, SSE and long polling;
//!   `bench flood`; `bench chat` against the built-in chat.
//! - `cluster`: `serve --engine redis` nodes as processes over a real redis-server (a
//!   node killed with SIGKILL).
//! - `cli`: `echo`, `bench echo`, `sub`, `pub`, `token`, `config init`, and what `serve`
//!   says and generates at start-up.
//! - `durability`: what the SQLite store keeps across `kill -9` and restarts (issue 4),
//!   a damaged write-ahead log (issue 10), start-up errors of the store, and the memory
//!   store.
//! - `nginx`: docs/nginx/switchboard.conf run by Debian's nginx in front of two
//!   `serve --engine redis` nodes: WebSocket, SSE and long polling through it, round-robin.
//! - `hardening`: issue 10 at the binary's level: a failing or unread stderr, empty
//!   secrets, running out of file descriptors, what never reaches the log.
//! - `tls`: `serve --tls-cert/--tls-key` with a test CA (rcgen): `sub`/`pub` over wss://
//!   and https:// with `--ca`, SIGHUP reloading the certificate under an open connection,
//!   start-up errors; Python's `ssl` as another client when python3 is there.
//! - `util`: child processes, temporary data directories, a WebSocket client and an HTTP
//!   client of the server API.

mod agent;
mod apps;
mod bench;
mod cli;
mod cluster;
mod durability;
mod hardening;
mod nginx;
mod tls;
mod util;
