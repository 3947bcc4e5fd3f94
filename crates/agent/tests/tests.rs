//! Integration tests of the agent against a real server in-process, over real sockets
//! on 127.0.0.1, one test binary (STYLE.md §3.12).
//!
//! - `tail`: a log written, rotated by rename, copy-truncated and truncated arrives
//!   line by line, once and in order; globs pick up new files; only the configured
//!   paths are ever opened.
//! - `samples`: samples arrive every interval with sane values, and every `watched`
//!   interval while an administrator is subscribed.
//! - `link`: the buffer through a server restart (late samples, every line once), a
//!   full buffer's drops reported, a token that cannot publish to another host.
//! - `commands`: a configured command's output lines, and its restart.
//! - `util`: the server, agents, an administrator's client, temporary files.

mod commands;
mod link;
mod samples;
mod tail;
mod util;
