//! `bench-peer`: runs one of the peer servers of `switchboard-bench-peers` (bench-only): an echo
//! (`tungstenite`, `fastws`, `tcp`), a broadcast hub (`fanout-fastws`, `fanout-tungstenite`), or
//! the sink of the kernel-floor measurement (`sink`).
//!
//! A server prints exactly one line, `listening on ADDR`, to stdout once bound, then serves until
//! killed. `send-floor` is the other end of `sink`: it prints one JSON line and exits.
//! Logs go to stderr, filtered by `RUST_LOG` (off unless set).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Command line of `bench-peer`.
#[derive(Debug, Parser)]
#[command(
    name = "bench-peer",
    about = "Peer echo and fan-out servers for Switchboard benchmarks"
)]
struct Args {
    /// Which server to run.
    #[command(subcommand)]
    peer: Peer,
    /// Address to bind; port 0 picks a free port (printed on stdout).
    #[arg(long, global = true, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads. Defaults to 1 because benchmarks pin the server to one core.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

/// The peer to run.
#[derive(Debug, Clone, Copy, Subcommand)]
enum Peer {
    /// WebSocket echo on tokio-tungstenite.
    Tungstenite,
    /// WebSocket echo on fastwebsockets (hyper upgrade).
    Fastws,
    /// Raw TCP echo, no WebSocket framing.
    Tcp,
    /// Broadcast hub (the `bench fanout` protocol subset) on fastwebsockets.
    FanoutFastws,
    /// Broadcast hub (the `bench fanout` protocol subset) on tokio-tungstenite.
    FanoutTungstenite,
    /// Reads and discards whatever its connections send (for `send-floor`).
    Sink,
    /// The floor of a fan-out: rounds of one non-blocking write to each of N connections
    /// to a `sink`, nothing else (see `src/floor.rs`). Prints one JSON line.
    SendFloor {
        /// The sink's address.
        #[arg(long)]
        to: SocketAddr,
        /// Connections written to in each round.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Rounds to run.
        #[arg(long, default_value_t = 160)]
        rounds: usize,
        /// Rounds per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Payload bytes of each frame.
        #[arg(long, default_value_t = 150)]
        size: usize,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::from_default_env())
        .init();
    if let Peer::SendFloor {
        to,
        conns,
        rounds,
        rate,
        size,
    } = args.peer
    {
        return match switchboard_bench_peers::send_floor(to, conns, rounds, rate, size)
            .and_then(|report| serde_json::to_string(&report).map_err(std::io::Error::other))
            .and_then(|line| writeln!(std::io::stdout().lock(), "{line}"))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bench-peer: {err}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bench-peer: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench-peer: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);
    // Spawned so the accept loop runs on a worker thread like every connection, not on the main thread.
    let server = match args.peer {
        Peer::Tungstenite => tokio::spawn(switchboard_bench_peers::serve_tungstenite(listener)),
        Peer::Fastws => tokio::spawn(switchboard_bench_peers::serve_fastws(listener)),
        Peer::Tcp => tokio::spawn(switchboard_bench_peers::serve_tcp(listener)),
        Peer::FanoutFastws => tokio::spawn(switchboard_bench_peers::serve_fanout_fastws(listener)),
        Peer::FanoutTungstenite => {
            tokio::spawn(switchboard_bench_peers::serve_fanout_tungstenite(listener))
        }
        Peer::Sink => tokio::spawn(switchboard_bench_peers::serve_sink(listener)),
        // A client, run by `main` without a runtime.
        Peer::SendFloor { .. } => return Ok(()),
    };
    server.await.map_err(std::io::Error::other)
}
