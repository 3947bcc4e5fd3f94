//! Command-line arguments.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// Switchboard: a real-time communication server.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    pub(crate) log_level: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a WebSocket echo server (for conformance suites and diagnostics).
    Echo(EchoArgs),
    /// Load-test a server.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    /// Address to listen on. Loopback by default; say 0.0.0.0 to expose it.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub(crate) listen: SocketAddr,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Largest message accepted, in bytes (larger ones close with 1009).
    #[arg(long, default_value_t = 64 << 20)]
    pub(crate) max_message_size: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Echo round trips: C connections each keep K messages of N bytes in flight.
    Echo(BenchEchoArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchEchoArgs {
    /// Server URL, ws://127.0.0.1:PORT/PATH, or tcp://127.0.0.1:PORT for a raw TCP echo
    /// (the same bytes without WebSocket framing: the physical limit).
    #[arg(long)]
    pub(crate) url: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub(crate) conns: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Test duration in seconds (after a 1 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub(crate) pipeline: usize,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub(crate) binary: bool,
    /// Worker threads of the load client (0: one per core).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// PID of the server, to report its CPU time per message from /proc/PID/stat.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
}
