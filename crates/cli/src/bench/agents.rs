//! `switchboard bench agents`: live operations at the scale of a small fleet.
//!
//! A simulated agents (tokens minted from the server's token secret with the claims of a
//! real agent, `auth::agent_claims`, for hosts `bench-0`, `bench-1`…), each publishing
//! what `switchboard agent` publishes (docs/agent.md): a sample to `metrics:HOST` every
//! `--interval`, and `--lines` log lines a second to `logs:HOST:app`, batched every 100 ms
//! as the agent batches them. V viewers (administrators' tokens), each subscribed to every
//! host's metrics and log channels, as the dashboard and the log viewer subscribe. Each
//! line's text carries the time it was written, so every line a viewer reads gives the
//! latency from the write to the screen (the publish, the commit, the fan-out, the
//! socket). After the window, deliveries have [`GRACE`] to arrive, then one human line and
//! one JSON line on stdout.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchboard_client::{Client, Incoming};
use switchboard_server::auth::{self, Claims};
use tokio::sync::{Mutex, Semaphore};

use crate::args::BenchAgentsArgs;
use crate::bench::connect::{Endpoint, open_ws};
use crate::bench::measure::{self, SECS_PER_TICK};
use crate::bench::stats::{Histogram, micros};
use crate::client::{Need, server_secret};

/// How long deliveries may trail the window.
const GRACE: Duration = Duration::from_secs(3);
/// How often an agent flushes its log lines (the agent's batching).
const BATCH: Duration = Duration::from_millis(100);
/// Marks the write time in a line's text: `t=<µs since the bench started>;`.
const MARK: &str = "t=";

/// Counters shared by every task.
#[derive(Default)]
struct Tally {
    lines_written: AtomicU64,
    samples_written: AtomicU64,
    publish_errors: AtomicU64,
    lines_read: AtomicU64,
    batches_read: AtomicU64,
    samples_read: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

pub(crate) async fn agents(args: BenchAgentsArgs) -> anyhow::Result<()> {
    if args.agents == 0 || args.viewers == 0 {
        bail!("--agents and --viewers must be above 0");
    }
    if args.agents * 2 > 256 {
        bail!(
            "a viewer subscribes to 2 channels per agent, and a connection may hold 256 \
             subscriptions (limits.max_subscriptions): at most 128 agents"
        );
    }
    if !(args.interval > 0.0 && args.duration > 0.0 && args.lines >= 0.0) {
        bail!("--interval and --duration must be above 0, --lines at least 0");
    }
    let endpoint = Arc::new(Endpoint::parse(
        &args.client.url,
        args.client.ca.as_deref(),
    )?);
    let secret = server_secret(&args.client.source, Need::TokenSecret, "the token secret")?;
    let start = Instant::now();
    let exp = auth::now_secs() + 24 * 3600;
    let opening = Arc::new(Semaphore::new(args.client.connect_concurrency.max(1)));
    let open = |token: String| {
        let (endpoint, opening) = (endpoint.clone(), opening.clone());
        tokio::spawn(async move {
            let _permit = opening.acquire().await?;
            let (client, _) = open_ws(&endpoint, &token, None, None).await?;
            anyhow::Ok(client)
        })
    };
    let mut opened_agents = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let claims = auth::agent_claims(&host(i), exp)?;
        opened_agents.push(open(auth::mint(&secret, &claims)?));
    }
    let mut opened_viewers = Vec::with_capacity(args.viewers);
    for i in 0..args.viewers {
        opened_viewers.push(open(auth::mint(&secret, &viewer_claims(i, exp))?));
    }
    let mut agents = Vec::with_capacity(args.agents);
    for task in opened_agents {
        agents.push(task.await??);
    }
    let mut viewers = Vec::with_capacity(args.viewers);
    for task in opened_viewers {
        let mut viewer = task.await??;
        for i in 0..args.agents {
            for channel in [
                format!("metrics:{}", host(i)),
                format!("logs:{}:app", host(i)),
            ] {
                viewer
                    .result(json!({"cmd": "subscribe", "channel": channel}))
                    .await
                    .with_context(|| format!("subscribe to {channel} failed"))?;
            }
        }
        viewers.push(viewer);
    }
    let ready = start.elapsed();

    let pid = args.client.server_pid;
    let cpu_before = pid.map(measure::cpu_ticks).transpose()?;
    let window = Duration::try_from_secs_f64(args.duration).context("invalid --duration")?;
    let interval = Duration::try_from_secs_f64(args.interval).context("invalid --interval")?;
    let tally = Arc::new(Tally::default());
    let latency = Arc::new(Mutex::new(Histogram::new()));
    let window_start = Instant::now();
    let ends = window_start + window;
    let drain_until = ends + GRACE;
    let pad = "x".repeat(args.line_size);
    let mut writers = Vec::with_capacity(args.agents);
    for (i, client) in agents.into_iter().enumerate() {
        // Spread the agents' batches over the 100 ms, as independent hosts would.
        let offset = BATCH.mul_f64(i as f64 / args.agents as f64);
        let agent = Agent {
            client,
            host: host(i),
            lines_per_s: args.lines,
            interval,
            first: window_start + offset,
            ends,
            drain_until,
            pad: pad.clone(),
            start,
            tally: tally.clone(),
        };
        writers.push(tokio::spawn(agent.run()));
    }
    let mut readers = Vec::with_capacity(args.viewers);
    for client in viewers {
        let (tally, latency) = (tally.clone(), latency.clone());
        readers.push(tokio::spawn(view(
            client,
            drain_until,
            start,
            tally,
            latency,
        )));
    }
    let mut ended = 0;
    let mut first_end = None;
    for task in writers.into_iter().chain(readers) {
        if let Err(err) = task.await? {
            ended += 1;
            first_end.get_or_insert(err.to_string());
        }
    }
    let cpu_after = pid.map(measure::cpu_ticks).transpose()?;
    let rss = pid.map(measure::rss_kib).transpose()?;
    let cpu_s = cpu_before
        .zip(cpu_after)
        .map(|(b, a)| (a - b) as f64 * SECS_PER_TICK);
    report(
        &args,
        &tally,
        &*latency.lock().await,
        ready,
        cpu_s,
        rss,
        ended,
        first_end,
    )
}

fn host(i: usize) -> String {
    format!("bench-{i}")
}

/// An administrator's token: what the log viewer and the dashboard connect with.
fn viewer_claims(i: usize, exp: u64) -> Claims {
    Claims {
        sub: format!("bench-viewer-{i}"),
        exp,
        info: None,
        channels: Vec::new(),
        roles: vec!["admin".into()],
        publish: Vec::new(),
    }
}

/// One simulated host: log batches every 100 ms, a sample every interval.
struct Agent {
    client: Client,
    host: String,
    lines_per_s: f64,
    interval: Duration,
    first: Instant,
    ends: Instant,
    drain_until: Instant,
    pad: String,
    start: Instant,
    tally: Arc<Tally>,
}

impl Agent {
    async fn run(mut self) -> anyhow::Result<()> {
        let logs = format!("logs:{}:app", self.host);
        let metrics = format!("metrics:{}", self.host);
        let mut next_batch = self.first;
        let mut next_sample = self.first;
        // Lines owed: a fractional rate adds up over batches.
        let mut owed = 0.0;
        loop {
            let writing = next_batch < self.ends;
            let wake = if writing {
                next_batch.min(next_sample)
            } else {
                self.drain_until
            };
            tokio::select! {
                incoming = self.client.next_message() => match incoming? {
                    Incoming::Json(message) => {
                        if let Some(error) = message.get("error") {
                            self.tally.publish_errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = self.tally.first_error.lock() {
                                first.get_or_insert_with(|| error.to_string());
                            }
                        }
                    }
                    Incoming::Close(code, reason) => bail!("agent closed {code} {reason}"),
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if !writing {
                        break;
                    }
                    let now = Instant::now();
                    if now >= next_sample {
                        let data = sample(now.duration_since(self.start));
                        self.client
                            .feed_command(json!({"cmd": "publish", "channel": metrics, "data": data}))
                            .await?;
                        self.tally.samples_written.fetch_add(1, Ordering::Relaxed);
                        next_sample += self.interval;
                    }
                    if now >= next_batch {
                        owed += self.lines_per_s * BATCH.as_secs_f64();
                        let count = owed.floor();
                        owed -= count;
                        if count > 0.0 {
                            let data = self.batch(count as usize);
                            self.client
                                .feed_command(json!({"cmd": "publish", "channel": logs, "data": data}))
                                .await?;
                            self.tally
                                .lines_written
                                .fetch_add(count as u64, Ordering::Relaxed);
                        }
                        next_batch += BATCH;
                    }
                    self.client.flush().await?;
                }
            }
        }
        Ok(())
    }

    /// A batch as the agent sends it: `{"lines":[{"time","text"}…]}`.
    fn batch(&self, count: usize) -> Value {
        let written = micros(self.start.elapsed());
        let time = now_ms();
        let lines: Vec<Value> = (0..count)
            .map(|n| {
                json!({"time": time, "text": format!("{MARK}{written}; INFO request {n} served {}", self.pad)})
            })
            .collect();
        json!({ "lines": lines })
    }
}

/// A sample shaped as the agent's (docs/agent.md), with plausible values.
fn sample(since_start: Duration) -> Value {
    let wave = (since_start.as_secs_f64() / 10.0).sin().abs();
    json!({
        "type": "sample", "time": now_ms(),
        "cpu": {"total": 20.0 + 30.0 * wave, "cores": [25.0, 15.0]},
        "load": [0.4, 0.3, 0.2],
        "mem": {"total": 8u64 << 30, "used": 3u64 << 30, "available": 5u64 << 30},
        "swap": {"total": 2u64 << 30, "used": 0},
        "disks": [{"mount": "/", "total": 100u64 << 30, "used": 40u64 << 30}],
        "io": {"read": 1000, "write": 20000},
        "net": [{"iface": "eth0", "rx": 50000, "tx": 30000}],
        "procs": 180, "uptime": 86400,
        "agent": {"rss": 6u64 << 20, "cpu": 0.3},
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One viewer: reads every host's samples and lines until `drain_until`.
async fn view(
    mut client: Client,
    drain_until: Instant,
    start: Instant,
    tally: Arc<Tally>,
    latency: Arc<Mutex<Histogram>>,
) -> anyhow::Result<()> {
    let mut local = Histogram::new();
    let deadline = tokio::time::Instant::from_std(drain_until);
    loop {
        let message = tokio::select! {
            incoming = client.next_message() => match incoming? {
                Incoming::Json(message) => message,
                Incoming::Close(code, reason) => bail!("viewer closed {code} {reason}"),
            },
            () = tokio::time::sleep_until(deadline) => break,
        };
        if message["push"] != "publication" {
            continue;
        }
        if let Some(lines) = message["data"]["lines"].as_array() {
            let now = micros(start.elapsed());
            tally.batches_read.fetch_add(1, Ordering::Relaxed);
            for line in lines {
                tally.lines_read.fetch_add(1, Ordering::Relaxed);
                let written = line["text"]
                    .as_str()
                    .and_then(|t| t.strip_prefix(MARK))
                    .and_then(|t| t.split(';').next())
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(written) = written {
                    local.record(now.saturating_sub(written));
                }
            }
        } else if message["data"]["type"] == "sample" {
            tally.samples_read.fetch_add(1, Ordering::Relaxed);
        }
    }
    latency.lock().await.merge(&local);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &BenchAgentsArgs,
    tally: &Tally,
    latency: &Histogram,
    ready: Duration,
    cpu_s: Option<f64>,
    rss_kib: Option<u64>,
    ended: usize,
    first_end: Option<String>,
) -> anyhow::Result<()> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let viewers = args.viewers as u64;
    let (lines_written, samples_written) =
        (load(&tally.lines_written), load(&tally.samples_written));
    let (lines_read, samples_read) = (load(&tally.lines_read), load(&tally.samples_read));
    let lost = (lines_written * viewers).saturating_sub(lines_read);
    // Publications delivered, samples and batches (the grace's few included).
    let deliveries = (samples_read + load(&tally.batches_read)) as f64;
    let ms = |q: f64| latency.quantile(q) as f64 / 1000.0;
    let json = json!({
        "bench": "agents", "url": args.client.url, "agents": args.agents, "viewers": args.viewers,
        "lines_per_s_per_agent": args.lines, "interval_s": args.interval,
        "duration_s": args.duration, "line_size": args.line_size,
        "ready_s": ready.as_secs_f64(),
        "lines_written": lines_written, "samples_written": samples_written,
        "publish_errors": load(&tally.publish_errors),
        "lines_read": lines_read, "lines_lost": lost, "samples_read": samples_read,
        "deliveries_per_s": deliveries / args.duration,
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": latency.max as f64 / 1000.0,
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_delivery": cpu_s.map(|s| s * 1e6 / deliveries.max(1.0)),
        "server_rss_kib": rss_kib,
        "connections_ended": ended,
        "first_error": tally.first_error.lock().ok().and_then(|e| e.clone()),
        "first_end": first_end,
    });
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "agents: {} hosts at {:.0} lines/s and a sample per {} s, {} viewers: {} of {} lines read, write to viewer p50 {:.1} ms, p99 {:.1} ms{}",
        args.agents,
        args.lines,
        args.interval,
        args.viewers,
        lines_read,
        lines_written * viewers,
        ms(0.5),
        ms(0.99),
        cpu_s.map_or(String::new(), |s| format!(
            ", server CPU {:.2} s in {} s ({:.1} µs per delivered publication)",
            s,
            args.duration,
            s * 1e6 / deliveries.max(1.0)
        )),
    )?;
    writeln!(out, "{json}")?;
    Ok(())
}
