//! `switchboard`: the command-line entry point. Glue only: parse the arguments, set up
//! logging and the runtime, and hand over to the libraries.
//!
//! # Layout
//! - `args`: the clap definitions.
//! - `serve`: `switchboard serve` and configuration loading.
//! - `client`: `switchboard token`, `sub`, `pub` and `config init`.
//! - `accounts`: `switchboard user` and `invite`, the built-in apps' accounts.
//! - `agent`: `switchboard agent`, the host agent (crates/agent) on a runtime of one
//!   thread.
//! - `echo`: `switchboard echo`, a WebSocket echo server for conformance suites and
//!   diagnostics.
//! - `bench/`: `switchboard bench echo`, `fanout`, `idle` and `flood`, load clients that
//!   end with one JSON line (its own Layout section lists the files).
//! - `logger`: log output through a bounded queue and a thread of its own, so that a
//!   full disk or an unread pipe on stderr never stops or kills the server.

mod accounts;
mod agent;
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
    if matches!(args.command, Command::Agent(_)) {
        agent_allocator();
    }
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
            BenchCommand::Chat(opts) => {
                runtime(opts.client.threads)?.block_on(bench::chat::chat(opts))
            }
            BenchCommand::Vote(opts) => {
                runtime(opts.client.threads)?.block_on(bench::vote::vote(opts))
            }
            BenchCommand::Agents(opts) => {
                runtime(opts.client.threads)?.block_on(bench::agents::agents(opts))
            }
        },
        Command::User(user) => accounts::user(user.command),
        Command::Invite(invite) => match invite.command {
            InviteCommand::Create { source, admin } => accounts::invite(&source, admin),
        },
        // One thread: the agent waits on timers and sockets almost all the time, and a
        // runtime of one thread keeps its memory small (the target is under 10 MB; see
        // also `agent_allocator`).
        Command::Agent(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(agent::run(args)),
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

/// Starts the agent again, once, with mimalloc's arenas committed as they are used rather
/// than at once (`MIMALLOC_ARENA_EAGER_COMMIT=0`). With the default, the agent's resident
/// memory was 17 MB, 10.6 MB of it anonymous for about 1.5 MB of data (the committed
/// arena's pages, some of them huge pages); with it, 8 MB in all, under the 10 MB target.
/// The server keeps the default, which suits its allocation rate. mimalloc reads the
/// variable when it starts, before `main`, hence a new image of the process (same pid)
/// rather than a setting here. Best effort: when it cannot, the agent runs as it is.
fn agent_allocator() {
    const VARIABLE: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    #[cfg(unix)]
    if let Ok(exe) = std::env::current_exe() {
        use std::os::unix::process::CommandExt;
        // Returns only if it failed.
        let _ = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(VARIABLE, "0")
            .exec();
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
