//! Switchboard's host agent: it pushes a machine's vital signs, the lines of its log
//! files and the output of configured commands to a Switchboard hub, where the
//! monitoring pages read them.
//!
//! The agent connects over WebSocket with a token whose claims let it publish to its
//! host's channels only (`metrics:HOST`, `logs:HOST:*`; `switchboard token --agent
//! HOST`). It samples every `interval.watched` (1 s) while someone is subscribed to
//! `metrics:HOST` and every `interval.idle` (10 s) otherwise, and keeps what it produces
//! in a bounded buffer while the hub cannot be reached. The wire formats are those of the
//! issue 14 contract and `docs/agent.md`.
//!
//! # Layout
//! - [`config`]: `agent.toml` ([`Config`]), its defaults and checks; host and log names.
//! - [`sample`]: [`Sampler`], one sample (`{"type":"sample"}`) from `sysinfo`, refreshing
//!   only what it reports.
//! - [`lines`]: [`LineSplitter`], bytes to lines (long lines cut, invalid UTF-8
//!   replaced), sans-IO.
//! - [`tail`]: following files like `tail -F` (rename rotation, copy-truncate,
//!   truncation, globs with files that appear later), and the [`tail::Batcher`] that
//!   groups lines into publications.
//! - [`command`]: commands from the configuration as streams of lines, restarted with
//!   backoff.
//! - [`outbox`]: [`Outbox`], the bounded queue (in bytes) between all of those and the
//!   connection; drops the oldest when full and counts what it dropped.
//! - [`conn`]: the connection loop: sessions, watchers, `hello`, pipelined publications,
//!   reconnection with backoff and jitter.
//! - [`token`]: [`Token`], given or minted for each connection; never logged.
//! - [`error`]: [`Error`], the crate's one error type.
//!
//! Everything runs as tasks of the caller's Tokio runtime (one thread is plenty: the
//! `switchboard agent` command uses a current-thread runtime to keep its memory small).
//! File reads are plain blocking reads, bounded per poll, rather than `tokio::fs` (which
//! would hand each to a thread pool of its own).

pub mod command;
pub mod config;
pub mod conn;
pub mod error;
pub mod lines;
pub mod outbox;
pub mod sample;
pub mod tail;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use switchboard_client::Endpoint;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use error::{Error, Result};
pub use lines::LineSplitter;
pub use outbox::Outbox;
pub use sample::Sampler;
pub use token::Token;

/// What an agent needs to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server: `ws://HOST:PORT/ws`, or its base URL `http://HOST:PORT` (whose
    /// WebSocket is at `/ws`).
    pub server: String,
    /// The token to connect with.
    pub token: Token,
    /// The host name in the channels' names.
    pub host: String,
    /// What to sample, follow and run.
    pub config: Config,
}

/// The WebSocket URL of a server named by `server` (see [`Options::server`]).
pub fn websocket_url(server: &str) -> Result<String> {
    let endpoint = Endpoint::parse(server)?;
    let path = if endpoint.path == "/" {
        "/ws"
    } else {
        endpoint.path.as_str()
    };
    // A wss:// or https:// server stays TLS (trusting the system's roots).
    let scheme = if endpoint.tls { "wss" } else { "ws" };
    Ok(format!("{scheme}://{}{path}", endpoint.authority))
}

/// Runs an agent until `shutdown` resolves. Fails only at the start, for options that
/// cannot work (a bad URL, host or configuration); afterwards every failure is logged
/// and retried.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<()> {
    let Options {
        server,
        token,
        host,
        config,
    } = options;
    let url = websocket_url(&server)?;
    if !config::valid_name(&host) {
        return Err(Error::Host(host));
    }
    config.validate()?;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let outbox = Arc::new(Outbox::new(config.buffer_bytes));
    let (watched_tx, watched_rx) = watch::channel(false);
    let channel: Arc<str> = Arc::from(format!("metrics:{host}"));

    // Sampling starts first: its first reading is the base of the first sample's rates.
    let sampler = Sampler::new();
    let announce = conn::Announce {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        os: Sampler::os(),
        cores: sampler.cores(),
        intervals: config.interval,
    };
    tracker.spawn(sample_loop(
        sampler,
        channel.clone(),
        config.interval,
        outbox.clone(),
        watched_rx,
        cancel.clone(),
    ));

    let mut logs: Vec<tail::LogInfo> = tail::Tails::new(&config, &host).list();
    logs.extend(config.commands.iter().map(|c| tail::LogInfo {
        name: c.name.clone(),
        kind: "command",
    }));
    let (logs_tx, logs_rx) = watch::channel(logs);
    tracker.spawn(tail::run(
        config.clone(),
        host.clone(),
        outbox.clone(),
        logs_tx,
        cancel.clone(),
    ));
    for command in &config.commands {
        tracker.spawn(command::run(
            command.clone(),
            host.clone(),
            config.max_line_bytes,
            outbox.clone(),
            cancel.clone(),
        ));
    }

    let link = conn::Link {
        url,
        token,
        host,
        channel,
        outbox,
        watched: watched_tx,
        logs: logs_rx,
        announce,
        limits: config.send,
    };
    tracker.spawn(link.run(cancel.clone()));
    tracker.close();

    shutdown.await;
    cancel.cancel();
    tracker.wait().await;
    Ok(())
}

/// Takes a sample every interval: `watched` while someone watches, `idle` otherwise.
/// When watching starts, the next sample comes at most `watched` after the last one.
async fn sample_loop(
    mut sampler: Sampler,
    channel: Arc<str>,
    intervals: config::Intervals,
    outbox: Arc<Outbox>,
    mut watched: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    // The first sample comes one short interval after the start, not one long one.
    let mut last = Instant::now()
        .checked_sub(intervals.idle.saturating_sub(intervals.watched))
        .unwrap_or_else(Instant::now);
    let mut watch_open = true;
    loop {
        let every: Duration = if *watched.borrow() {
            intervals.watched
        } else {
            intervals.idle
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(last + every) => {
                last = Instant::now();
                let sample = sampler.sample();
                tracing::debug!(took = ?last.elapsed(), "sampled");
                match serde_json::to_string(&sample) {
                    Ok(json) => outbox.push(outbox::Item::sample(channel.clone(), json)),
                    Err(e) => tracing::warn!(cause = %e, "cannot serialise a sample"),
                }
            }
            changed = watched.changed(), if watch_open => {
                watch_open = changed.is_ok();
            }
        }
    }
}
