//! `switchboard`: the command-line entry point. Glue only: parse the arguments, set up
//! logging and the runtime, and hand over to the libraries.
//!
//! # Layout
//! - `args`: the clap definitions.
//! - `serve`: `switchboard serve` and configuration loading.
//! - `client`: `switchboard token`, `sub`, `pub` and `config init`.
//! - `accounts`: `switchboard user` and `invite`, the built-in apps' accounts.
//! - `echo`: `switchboard echo`, a WebSocket echo server for conformance suites and
//!   diagnostics.
//! - `bench/`: `switchboard bench echo`, `fanout`, `idle` and `flood`, load clients that
//!   end with one JSON line (its own Layout section lists the files).
//! - `logger`: log output through a bounded queue and a thread of its own, so that a
//!   full disk or an unread pipe on stderr never stops or kills the server.

mod accounts;
mod args;
mod bench;
mod client;
mod echo;
mod logger;
mod serve;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use args::{Args, BenchCommand, Command, ConfigCommand, InviteCommand};

/// mimalloc rather than glibc's malloc: a publication's path allocates small, short-lived
/// buffers (JSON, frames, SQLite's statement work), and glibc's free-list upkeep was about
/// 12% of the server's CPU in a publishing profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(args.log_level.as_str()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logger::Logger::stderr())
        // Colour codes only for a person at a terminal, not into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Its own failures would go to `eprintln!`, which panics when stderr fails.
        .log_internal_errors(false)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say!("switchboard: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A line for the person at the terminal, on stderr. Unlike `eprintln!`, it never
/// panics: a server whose stderr is a full disk or a closed pipe keeps serving.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(serve) => runtime(serve.threads)?.block_on(serve::run(serve)),
        Command::Config(config) => match config.command {
            ConfigCommand::Init { path, force } => client::config_init(&path, force),
        },
        Command::Token(token) => client::token(token),
        Command::Sub(sub) => runtime(1)?.block_on(client::sub(sub)),
        Command::Pub(args) => runtime(1)?.block_on(client::publish(args)),
        Command::Echo(echo) => runtime(echo.threads)?.block_on(echo::run(echo)),
        Command::Bench(bench) => match bench.command {
            BenchCommand::Echo(opts) => runtime(opts.threads)?.block_on(bench::echo::echo(opts)),
            BenchCommand::Fanout(opts) => {
                runtime(opts.conn.threads)?.block_on(bench::fanout::fanout(opts))
            }
            BenchCommand::Idle(opts) => {
                runtime(opts.conn.threads)?.block_on(bench::idle::idle(opts))
            }
            BenchCommand::Flood(opts) => runtime(opts.threads)?.block_on(bench::flood::flood(opts)),
            BenchCommand::Chat(opts) => runtime(opts.threads)?.block_on(bench::chat::chat(opts)),
            BenchCommand::Vote(opts) => runtime(opts.threads)?.block_on(bench::vote::vote(opts)),
            BenchCommand::Agents(opts) => {
                runtime(opts.threads)?.block_on(bench::agents::agents(opts))
            }
        },
        Command::User(user) => accounts::user(user.command),
        Command::Invite(invite) => match invite.command {
            InviteCommand::Create { source, admin } => accounts::invite(&source, admin),
        },
    }
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives during start-up
/// still means a graceful stop rather than the default action (death). Call it within
/// the runtime.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wait(interrupt.take()) => {}
            _ = wait(terminate.take()) => {}
        }
    }
}

/// A multi-thread runtime with `threads` workers (0: one per core).
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    Ok(builder.enable_all().build()?)
}
