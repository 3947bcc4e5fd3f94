//! `switchboard bench echo`: a load client for echo servers.
//!
//! C connections each keep K messages in flight; every echo is timed against the send it
//! answers (echo servers preserve order). After a 1 s warm-up, messages are counted for
//! the given duration. With `--server-pid`, the server's CPU time over the same window is
//! read from `/proc/PID/stat` and reported per message: the load client is often the
//! bottleneck on a small machine, and CPU per message is what separates servers then.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use switchboard_client::Stream;
use switchboard_ws::tokio::connect;
use switchboard_ws::{Config, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::BenchEchoArgs;
use crate::bench::connect::{Target, parse_url};
use crate::bench::measure::{SECS_PER_TICK, cpu_ticks};

const WARMUP: Duration = Duration::from_secs(1);

/// What one connection measured inside the window.
#[derive(Default)]
struct Tally {
    messages: u64,
    latencies_us: Vec<u32>,
}

/// The measurement window, shared by all connections.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn record(&self, tally: &mut Tally, sent: Instant, now: Instant) {
        if now >= self.start && now < self.end {
            tally.messages += 1;
            let us = now.duration_since(sent).as_micros();
            tally
                .latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
}

pub(crate) async fn echo(args: BenchEchoArgs) -> anyhow::Result<()> {
    let target = Arc::new(parse_url(&args.url, args.ca.as_deref())?);
    let payload: Arc<[u8]> = vec![b'x'; args.size].into();
    // Connect everything first (with wss://, the TLS handshakes too), so the window
    // measures traffic only.
    let mut streams = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let stream = match &*target {
            Target::Ws(endpoint) => {
                let tcp = endpoint.tcp(None).await?;
                // Before the handshake: its flights are small writes too.
                tcp.set_nodelay(true)?;
                endpoint.secure(tcp).await?
            }
            Target::Tcp { addr } => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("cannot connect to {addr}"))?;
                tcp.set_nodelay(true)?;
                Stream::Plain(tcp)
            }
        };
        streams.push(stream);
    }
    let begin = Instant::now();
    let window = Window {
        start: begin + WARMUP,
        end: begin + WARMUP + Duration::from_secs_f64(args.duration),
    };
    let mut tasks = Vec::new();
    for stream in streams {
        let target = target.clone();
        let payload = payload.clone();
        let (pipeline, binary) = (args.pipeline.max(1), args.binary);
        tasks.push(tokio::spawn(async move {
            match &*target {
                Target::Ws(endpoint) => {
                    let (host, path) = (&endpoint.host, &endpoint.path);
                    ws_conn(stream, host, path, &payload, pipeline, binary, window).await
                }
                Target::Tcp { .. } => tcp_conn(stream, &payload, pipeline, window).await,
            }
        }));
    }
    tokio::time::sleep_until(window.start.into()).await;
    let cpu_start = args.server_pid.map(cpu_ticks).transpose()?;
    tokio::time::sleep_until(window.end.into()).await;
    let cpu_end = args.server_pid.map(cpu_ticks).transpose()?;

    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await??;
        total.messages += tally.messages;
        total.latencies_us.extend(tally.latencies_us);
    }
    total.latencies_us.sort_unstable();
    let secs = args.duration;
    let rate = total.messages as f64 / secs;
    let mbps = rate * args.size as f64 / 1e6;
    let pct = |p: f64| {
        let v = &total.latencies_us;
        if v.is_empty() {
            0
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize]
        }
    };
    let cpu_us_per_msg = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if total.messages > 0 => {
            Some((b - a) as f64 * SECS_PER_TICK * 1e6 / total.messages as f64)
        }
        _ => None,
    };
    report(&args, rate, mbps, pct(0.5), pct(0.99), cpu_us_per_msg);
    Ok(())
}

fn report(args: &BenchEchoArgs, rate: f64, mbps: f64, p50: u32, p99: u32, cpu: Option<f64>) {
    let human = format!(
        "{}: {} conns x {} in flight, {} B: {:.0} msg/s, {:.2} MB/s, p50 {} us, p99 {} us{}",
        args.url,
        args.conns,
        args.pipeline,
        args.size,
        rate,
        mbps,
        p50,
        p99,
        cpu.map(|c| format!(", server CPU {c:.3} us/msg"))
            .unwrap_or_default()
    );
    let json = serde_json::json!({
        "url": args.url, "conns": args.conns, "pipeline": args.pipeline, "size": args.size,
        "duration_s": args.duration, "msgs_per_s": rate.round(), "mb_per_s": mbps,
        "p50_us": p50, "p99_us": p99, "server_cpu_us_per_msg": cpu,
    });
    // A closed stdout (`| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{human}\n{json}");
}

async fn ws_conn(
    stream: Stream,
    host: &str,
    path: &str,
    payload: &[u8],
    pipeline: usize,
    binary: bool,
    window: Window,
) -> anyhow::Result<Tally> {
    let (mut ws, _) = connect(stream, host, path, &[], &[], Config::default()).await?;
    let message = if binary {
        Message::binary(payload.to_vec())
    } else {
        Message::text(String::from_utf8_lossy(payload).into_owned())
    };
    let mut tally = Tally::default();
    let mut in_flight = VecDeque::with_capacity(pipeline);
    for _ in 0..pipeline {
        in_flight.push_back(Instant::now());
        ws.feed(&message).await?;
    }
    ws.flush().await?;
    loop {
        let Some(reply) = ws.recv().await? else { break };
        if !reply.is_data() {
            continue;
        }
        let now = Instant::now();
        let sent = in_flight.pop_front().context("echo without a request")?;
        window.record(&mut tally, sent, now);
        if now >= window.end {
            break;
        }
        in_flight.push_back(now);
        // Sent by the next recv() before it waits, batched with other replies.
        ws.feed(&message).await?;
    }
    let _ = ws.close(None).await;
    Ok(tally)
}

async fn tcp_conn(
    mut stream: Stream,
    payload: &[u8],
    pipeline: usize,
    window: Window,
) -> anyhow::Result<Tally> {
    // The same bytes a masked client frame would take: 2-byte header + 4-byte mask key
    // for payloads under 126 bytes (more for larger ones).
    let header = match payload.len() {
        0..=125 => 6,
        126..=65535 => 8,
        _ => 14,
    };
    let chunk = vec![b'x'; header + payload.len()];
    let mut tally = Tally::default();
    let mut in_flight = VecDeque::with_capacity(pipeline);
    let mut out = Vec::with_capacity(chunk.len() * pipeline);
    for _ in 0..pipeline {
        in_flight.push_back(Instant::now());
        out.extend_from_slice(&chunk);
    }
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut pending = 0usize;
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            break;
        }
        pending += buf.len();
        buf.clear();
        out.clear();
        let now = Instant::now();
        while pending >= chunk.len() {
            pending -= chunk.len();
            let sent = in_flight.pop_front().context("echo without a request")?;
            window.record(&mut tally, sent, now);
            in_flight.push_back(now);
            out.extend_from_slice(&chunk);
        }
        if now >= window.end {
            break;
        }
        stream.write_all(&out).await?;
        if buf.capacity() < 16 << 10 {
            buf.reserve(64 << 10);
        }
    }
    Ok(tally)
}
