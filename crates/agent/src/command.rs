//! Commands as streams (as websocketd does): a program from `[[commands]]` runs with
//! its output lines published as the log `logs:HOST:NAME`, and is started again, after a
//! backoff of 1 s doubling to 60 s, whenever it exits.
//!
//! The argv comes from the configuration only and is run without a shell, so nothing a
//! client sends can add to it or expand inside it. stdout and stderr both become lines
//! of the log (each split on its own: a line is never made of both). Its standard input
//! is closed. The child is killed when the agent stops.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::CommandSource;
use crate::lines::LineSplitter;
use crate::outbox::Outbox;
use crate::tail::{Batcher, log_channel};

/// The first wait before a restart.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long counts as a success: the next restart waits [`BACKOFF_MIN`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long output lines wait to be published together.
const BATCH_DELAY: Duration = Duration::from_millis(100);

/// Runs `command` until `cancel`, restarting it when it exits.
pub async fn run(
    command: CommandSource,
    host: String,
    max_line: usize,
    outbox: Arc<Outbox>,
    cancel: CancellationToken,
) {
    let channel = log_channel(&host, &command.name);
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        once(&command, &channel, max_line, &outbox, &cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        info!(command = %command.name, wait = ?backoff, "restarting the command");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One run: spawns the program and publishes its lines until it exits.
async fn once(
    command: &CommandSource,
    channel: &Arc<str>,
    max_line: usize,
    outbox: &Outbox,
    cancel: &CancellationToken,
) {
    let Some((program, args)) = command.run.split_first() else {
        return;
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            warn!(command = %command.name, program = %program, cause = %e, "cannot start the command");
            return;
        }
    };
    let mut batch = Batcher::new(channel.clone());
    batch.event("started", outbox);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_lines = LineSplitter::new(max_line);
    let mut err_lines = LineSplitter::new(max_line);
    let mut out_buf = vec![0u8; 8 << 10];
    let mut err_buf = vec![0u8; 8 << 10];
    let mut flush_at = Some(Instant::now() + BATCH_DELAY);
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = child.kill().await;
                batch.flush(outbox);
                return;
            }
            read = read_some(&mut stdout, &mut out_buf) => {
                take(read, &mut stdout, &out_buf, &mut out_lines, &mut batch, outbox);
            }
            read = read_some(&mut stderr, &mut err_buf) => {
                take(read, &mut stderr, &err_buf, &mut err_lines, &mut batch, outbox);
            }
            _ = sleep_until(flush_at) => {
                batch.flush(outbox);
                flush_at = None;
            }
        }
        if flush_at.is_none() && !batch.is_empty() {
            flush_at = Some(Instant::now() + BATCH_DELAY);
        }
    }
    for rest in [out_lines.finish(), err_lines.finish()]
        .into_iter()
        .flatten()
    {
        batch.line(&rest, outbox);
    }
    batch.flush(outbox);
    match child.wait().await {
        Ok(status) => info!(command = %command.name, %status, "the command exited"),
        Err(e) => warn!(command = %command.name, cause = %e, "cannot wait for the command"),
    }
}

/// Reads from a pipe still open; pending forever once it is closed.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; pending forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Splits what a read brought into lines; closes the pipe at its end.
fn take<R>(
    read: std::io::Result<usize>,
    pipe: &mut Option<R>,
    buf: &[u8],
    lines: &mut LineSplitter,
    batch: &mut Batcher,
    outbox: &Outbox,
) {
    match read {
        Ok(0) | Err(_) => *pipe = None,
        Ok(n) => lines.push(&buf[..n], &mut |line| batch.line(&line, outbox)),
    }
}
