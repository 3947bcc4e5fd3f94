//! `bench-peer`: runs one of the peer servers of `switchboard-bench-peers` (bench-only): an echo
//! (`tungstenite`, `fastws`, `tcp`) or a broadcast hub (`fanout-fastws`, `fanout-tungstenite`).
//!
//! Prints exactly one line, `listening on ADDR`, to stdout once bound, then serves until killed.
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::from_default_env())
        .init();
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
    };
    server.await.map_err(std::io::Error::other)
}
