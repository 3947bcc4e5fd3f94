//! `switchboard bench fanout`: a load client for pub/sub, the run.
//!
//! `fanout` opens N subscriber connections on one channel (`sink`, at most
//! `--connect-concurrency` opening at once), then publisher connections that publish R
//! publications per second for S seconds (`publishers`), end-to-end latency measured by
//! the subscribers in the same process. After the window, deliveries have [`GRACE`] to
//! arrive; then one human line and one JSON line on stdout (`report`).
//!
//! `--transport sse|longpoll` opens the subscribers over Server-Sent Events or long
//! polling instead (`http`); publishers stay WebSocket, and the counting, latency and
//! report are the same, so the transports compare.
//!
//! The server limits each connection to `limits.commands_per_second`, so the rate is
//! spread over enough publisher connections to stay at [`PUBLISHER_SHARE`] of it.
//!
//! The channels default to the `vote` namespace, which has no join/leave pushes: in `chat`
//! every subscriber is its own user, so N of them joining cost the server N²/2 pushes
//! (50 million for 10,000), queued in their outboxes while they subscribe.
//!
//! `--slow K` adds K subscribers that subscribe and then never read: the server should
//! disconnect them as slow consumers (4004). Their sockets have a small receive buffer, so
//! their server-side queue fills after hundreds of KiB rather than after the kernel's
//! autotuned megabytes. At the end, what they buffered is read to find the close.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchboard_client::Client;
use switchboard_ws::Message;
use tokio::task::JoinHandle;

use crate::args::BenchFanoutArgs;
use crate::bench::connect::open_ws;
use crate::bench::measure::{self, SECS_PER_TICK};
use crate::bench::publishers::{Plan, PubTally, publisher};
use crate::bench::report::FanoutReport;
use crate::bench::sink::{Shared, Subscribers};
use crate::bench::stats::micros;

/// How long deliveries (and acks) may trail the publishing window.
const GRACE: Duration = Duration::from_secs(3);
/// Share of the server's per-connection command rate one publisher uses.
const PUBLISHER_SHARE: f64 = 0.8;
/// Receive buffer of a slow subscriber's socket (the kernel doubles it).
const SLOW_RECV_BUFFER: u32 = 4096;
/// How long a slow subscriber may stay silent, once its backlog is read, to count as open.
const SLOW_IDLE: Duration = Duration::from_millis(500);

pub(crate) async fn fanout(args: BenchFanoutArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be above 0");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be above 0");
    }
    if args.channels > 1 && (args.subscribers > 0 || args.slow > 0) {
        bail!("--channels above 1 measures publishing alone: use --subscribers 0");
    }
    let publishers = match args.publishers {
        0 => {
            let limits = crate::serve::load_config(&args.conn.source)?.limits;
            publishers_for(args.rate, f64::from(limits.commands_per_second))
        }
        n => n,
    };
    let shared = Shared::new(&args.conn, &args.node_urls, &args.channel, args.subscribers)?;
    let subscribers =
        Subscribers::spawn(shared.clone(), args.subscribers, args.conn.conns_per_task);
    subscribers.wait_ready().await?;

    let mut slow = Vec::with_capacity(args.slow);
    for i in 0..args.slow {
        let token = shared
            .auth
            .token(&format!("bench-slow-{i}"), &args.channel)?;
        let endpoint = &shared.endpoint;
        let (ws, _) = open_ws(
            endpoint,
            &token,
            Some(&args.channel),
            Some(SLOW_RECV_BUFFER),
        )
        .await
        .context("cannot open a slow subscriber")?;
        slow.push(ws);
    }
    let mut publisher_conns = Vec::with_capacity(publishers);
    for j in 0..publishers {
        let token = shared
            .auth
            .token(&format!("bench-pub-{j}"), &args.channel)?;
        let (ws, _) = open_ws(&shared.endpoint, &token, None, None)
            .await
            .context("cannot open a publisher")?;
        publisher_conns.push(ws);
    }

    let window = Duration::from_secs_f64(args.duration);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + window;
    let deadline = end + GRACE;
    shared
        .window_end_us
        .store(micros(end - shared.base), Ordering::Relaxed);
    let plan = Arc::new(Plan::new(&args, shared.base, start, deadline, publishers)?);
    eprintln!(
        "switchboard: publishing {} publications at {}/s over {publishers} connection(s)",
        plan.total, args.rate
    );
    let publisher_tasks: Vec<JoinHandle<PubTally>> = publisher_conns
        .into_iter()
        .zip(0u64..)
        .map(|(ws, first)| tokio::spawn(publisher(ws, first, plan.clone())))
        .collect();

    // Every node's process counts: CPU time and RSS added up.
    let pids: Vec<u32> = args
        .conn
        .server_pid
        .into_iter()
        .chain(args.node_pids.iter().copied())
        .collect();
    let sum = |read: fn(u32) -> anyhow::Result<u64>| -> anyhow::Result<Option<u64>> {
        if pids.is_empty() {
            return Ok(None);
        }
        pids.iter()
            .map(|pid| read(*pid))
            .sum::<anyhow::Result<u64>>()
            .map(Some)
    };
    tokio::time::sleep_until(start.into()).await;
    let (cpu_start, sys_start) = (sum(measure::cpu_ticks)?, sum(measure::system_ticks)?);
    tokio::time::sleep_until(end.into()).await;
    let (cpu_end, sys_end) = (sum(measure::cpu_ticks)?, sum(measure::system_ticks)?);
    let rss = sum(measure::rss_kib)?;

    let mut published = PubTally::default();
    for task in publisher_tasks {
        published.merge(task.await?);
    }
    let expected = published.acked * args.subscribers as u64;
    while missing(&shared, published.top) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let received = subscribers.stop().await;
    let lost = received.gaps + missing(&shared, published.top);
    let slow_closes = slow_closes(slow).await;

    let seconds = |start: Option<u64>, end: Option<u64>| match (start, end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 * SECS_PER_TICK),
        _ => None,
    };
    let (server_cpu_s, server_sys_s) = (seconds(cpu_start, cpu_end), seconds(sys_start, sys_end));
    let report = FanoutReport {
        args: &args,
        publishers,
        planned: plan.total,
        published,
        expected,
        lost,
        received,
        slow_closes,
        server_cpu_s,
        server_sys_s,
        server_rss_kib: rss,
    };
    report.print();
    Ok(())
}

/// Acknowledged publications (offsets up to `top`) that subscribers have not received
/// past their last one. Subscribers that never opened count for nothing here: the bench
/// fails before publishing if any is missing.
fn missing(shared: &Shared, top: u64) -> u64 {
    shared
        .lasts
        .iter()
        .map(|last| match last.load(Ordering::Relaxed) {
            u64::MAX => 0,
            last => top.saturating_sub(last),
        })
        .sum()
}

/// Publisher connections needed for `rate` when each may send `per_conn` commands/s.
fn publishers_for(rate: f64, per_conn: f64) -> usize {
    let each = (per_conn * PUBLISHER_SHARE).max(1.0);
    ((rate / each).ceil() as usize).max(1)
}

/// How each slow subscriber ended: its close code, `eof`, or `open`.
async fn slow_closes(slow: Vec<Client>) -> BTreeMap<String, u64> {
    let checks: Vec<JoinHandle<String>> = slow
        .into_iter()
        .map(|ws| tokio::spawn(slow_end(ws)))
        .collect();
    let mut ends = BTreeMap::new();
    for check in checks {
        let end = check.await.unwrap_or_else(|err| err.to_string());
        *ends.entry(end).or_default() += 1;
    }
    ends
}

/// Reads what a slow subscriber left unread, until the server's close frame, the end of
/// the stream, or silence (still open).
async fn slow_end(mut ws: Client) -> String {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(SLOW_IDLE, ws.recv()).await {
            Err(_) => return "open".to_owned(),
            Ok(Ok(Some(Message::Close(frame)))) => {
                return frame.map_or_else(|| "no status".to_owned(), |f| f.code.0.to_string());
            }
            Ok(Ok(None) | Err(_)) => return "eof".to_owned(),
            Ok(Ok(Some(_))) if Instant::now() > give_up => return "open".to_owned(),
            Ok(Ok(Some(_))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_stay_under_the_command_rate() {
        assert_eq!(publishers_for(20.0, 100.0), 1);
        assert_eq!(publishers_for(80.0, 100.0), 1);
        assert_eq!(publishers_for(81.0, 100.0), 2);
        assert_eq!(publishers_for(200.0, 100.0), 3);
        assert_eq!(publishers_for(50_000.0, 100.0), 625);
        assert_eq!(publishers_for(1.0, 0.0), 1);
    }
}
