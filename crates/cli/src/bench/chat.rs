//! `switchboard bench chat`: the built-in chat under a chat's load.
//!
//! U users (tokens minted from the server's token secret, each a user of its own) in R
//! rooms, user i in room `bench-(i mod R)`: each connects over WebSocket, subscribes to its
//! room's channel, and every `--interval` seconds says it is typing (`chat.typing`) and
//! then posts a message (`chat.post`), as people do, the users' turns spread evenly over the
//! interval. Every member of a room receives every message of that room; the message's
//! text carries the time it was sent, so each receipt gives an end-to-end latency (the
//! rpc, the commit, the fan-out, the socket). After the window, deliveries have [`GRACE`]
//! to arrive, then one human line and one JSON line on stdout.
//!
//! The rooms are created first through `chat.create` (a room that exists from an earlier
//! run is fine). With `--server-pid`, the server's CPU time over the window gives its CPU
//! per delivered message.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchboard_client::{Client, Incoming};
use switchboard_server::auth::{self, Claims};
use tokio::sync::{Mutex, Semaphore};

use switchboard_apps::ROOM_NAMESPACE as ROOMS;

use crate::args::BenchChatArgs;
use crate::bench::connect::{Endpoint, open_ws};
use crate::bench::measure::{self, SECS_PER_TICK};
use crate::bench::stats::{Histogram, micros};
use crate::client::{Need, server_secret};

/// How long deliveries may trail the window.
const GRACE: Duration = Duration::from_secs(3);
/// Marks the send time in a message's text: `t=<µs since the bench started>;`.
const MARK: &str = "t=";

/// Counters shared by every user task.
#[derive(Default)]
struct Tally {
    posted: AtomicU64,
    post_errors: AtomicU64,
    typing_errors: AtomicU64,
    /// Deliveries each post should make (its room's size).
    expected: AtomicU64,
    delivered: AtomicU64,
    typing_seen: AtomicU64,
    /// The first error reply, for the report.
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, counter: &AtomicU64, reply: &Value) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| reply["error"].to_string());
        }
    }
}

pub(crate) async fn chat(args: BenchChatArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.rooms == 0 || args.rooms > args.users {
        bail!("--users and --rooms must be above 0, with at least one user per room");
    }
    if !(args.interval > 0.0 && args.duration > 0.0) {
        bail!("--interval and --duration must be above 0");
    }
    let endpoint = Arc::new(Endpoint::parse(
        &args.client.url,
        args.client.ca.as_deref(),
    )?);
    let secret = server_secret(&args.client.source, Need::TokenSecret, "the token secret")?;
    let start = Instant::now();
    let tally = Arc::new(Tally::default());
    let room_of = |i: usize| format!("bench-{}", i % args.rooms);
    let members = |room: usize| (args.users - room).div_ceil(args.rooms) as u64;

    // Connect everyone, then create the rooms (user r creates room r), then subscribe.
    let opening = Arc::new(Semaphore::new(args.client.connect_concurrency.max(1)));
    let mut clients = Vec::with_capacity(args.users);
    let mut opened = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let (endpoint, opening) = (endpoint.clone(), opening.clone());
        let token = mint(&secret, i)?;
        opened.push(tokio::spawn(async move {
            let _permit = opening.acquire().await?;
            let (client, _) = open_ws(&endpoint, &token, None, None).await?;
            anyhow::Ok(client)
        }));
    }
    for task in opened {
        clients.push(task.await??);
    }
    for (r, client) in clients.iter_mut().enumerate().take(args.rooms) {
        let reply = client
            .call(json!({"cmd": "rpc", "method": "chat.create", "data": {"name": room_of(r)}}))
            .await?;
        // Already there from an earlier run: fine. Anything else stops the bench.
        if let Some(error) = reply.get("error") {
            let message = error["message"].as_str().unwrap_or_default();
            if !message.contains("exists") && !message.contains("taken") {
                bail!("chat.create {} failed: {error}", room_of(r));
            }
        }
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .result(json!({"cmd": "subscribe", "channel": format!("{ROOMS}:{}", room_of(i))}))
            .await
            .with_context(|| format!("subscribe to {ROOMS}:{} failed", room_of(i)))?;
    }
    // Everyone is in: the join pushes of the subscriptions are not part of the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = start.elapsed();

    let pid = args.client.server_pid;
    let cpu_before = pid.map(measure::cpu_ticks).transpose()?;
    let window = Duration::try_from_secs_f64(args.duration).context("invalid --duration")?;
    let interval = Duration::try_from_secs_f64(args.interval).context("invalid --interval")?;
    let latency = Arc::new(Mutex::new(Histogram::new()));
    let text_pad = "x".repeat(args.size);
    let mut tasks = Vec::with_capacity(args.users);
    let window_start = Instant::now();
    for (i, client) in clients.into_iter().enumerate() {
        let turn = interval.mul_f64(i as f64 / args.users as f64);
        let user = User {
            client,
            room: room_of(i),
            room_size: members(i % args.rooms),
            first_post: window_start + turn,
            interval,
            ends: window_start + window,
            drain_until: window_start + window + GRACE,
            typing: !args.no_typing,
            pad: text_pad.clone(),
            start,
            tally: tally.clone(),
            latency: latency.clone(),
            typing_ids: HashSet::new(),
        };
        tasks.push(tokio::spawn(user.run()));
    }
    let mut ended = 0;
    let mut first_end = None;
    for task in tasks {
        if let Err(err) = task.await? {
            ended += 1;
            first_end.get_or_insert(err.to_string());
        }
    }
    let cpu_after = pid.map(measure::cpu_ticks).transpose()?;
    let rss = pid.map(measure::rss_kib).transpose()?;
    report(
        &args,
        &tally,
        &*latency.lock().await,
        ready,
        (cpu_before, cpu_after),
        rss,
        ended,
        first_end,
    )
}

/// A token for bench user `i`, with a display name as the apps' tokens carry.
fn mint(secret: &str, i: usize) -> anyhow::Result<String> {
    let info =
        serde_json::value::to_raw_value(&json!({"name": format!("Bench {i}"), "guest": false}))?;
    Ok(auth::mint(
        secret,
        &Claims {
            sub: format!("bench-chat-{i}"),
            exp: auth::now_secs() + 24 * 3600,
            info: Some(info),
            channels: Vec::new(),
            roles: Vec::new(),
            publish: Vec::new(),
        },
    )?)
}

/// One user: posts on its turns, reads everything its room delivers.
struct User {
    client: Client,
    room: String,
    room_size: u64,
    first_post: Instant,
    interval: Duration,
    ends: Instant,
    drain_until: Instant,
    typing: bool,
    pad: String,
    start: Instant,
    tally: Arc<Tally>,
    latency: Arc<Mutex<Histogram>>,
    /// Ids of the `chat.typing` calls not answered yet (to count their errors apart).
    typing_ids: HashSet<u64>,
}

impl User {
    async fn run(mut self) -> anyhow::Result<()> {
        let mut next_post = self.first_post;
        let mut local = Histogram::new();
        let deadline = tokio::time::Instant::from_std(self.drain_until);
        loop {
            let posting = next_post < self.ends;
            let wake = if posting { next_post } else { self.drain_until };
            tokio::select! {
                incoming = self.client.next_message() => match incoming? {
                    Incoming::Json(message) => self.read(&message, &mut local),
                    Incoming::Close(code, reason) => bail!("closed {code} {reason}"),
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if !posting || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    self.post().await?;
                    next_post += self.interval;
                }
            }
        }
        self.latency.lock().await.merge(&local);
        Ok(())
    }

    async fn post(&mut self) -> anyhow::Result<()> {
        if self.typing {
            let id = self
                .client
                .feed_command(
                    json!({"cmd": "rpc", "method": "chat.typing", "data": {"room": self.room}}),
                )
                .await?;
            self.typing_ids.insert(id);
        }
        let sent = micros(self.start.elapsed());
        let text = format!("{MARK}{sent}; {}", self.pad);
        self.client
            .feed_command(json!({"cmd": "rpc", "method": "chat.post", "data": {"room": self.room, "text": text}}))
            .await?;
        self.client.flush().await?;
        self.tally
            .expected
            .fetch_add(self.room_size, Ordering::Relaxed);
        Ok(())
    }

    fn read(&mut self, message: &Value, latency: &mut Histogram) {
        if let Some(kind) = message["push"].as_str() {
            if kind != "publication" {
                return;
            }
            match message["data"]["type"].as_str() {
                Some("message") => {
                    self.tally.delivered.fetch_add(1, Ordering::Relaxed);
                    let sent = message["data"]["text"]
                        .as_str()
                        .and_then(|t| t.strip_prefix(MARK))
                        .and_then(|t| t.split(';').next())
                        .and_then(|t| t.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        latency.record(micros(self.start.elapsed()).saturating_sub(sent));
                    }
                }
                Some("typing") => {
                    self.tally.typing_seen.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            return;
        }
        // A reply: to chat.typing (result {}) or to chat.post (result with offset).
        let tally = &self.tally;
        let typing = message["id"]
            .as_u64()
            .is_some_and(|id| self.typing_ids.remove(&id));
        match (message.get("error"), typing) {
            (Some(_), true) => tally.error(&tally.typing_errors, message),
            (Some(_), false) => tally.error(&tally.post_errors, message),
            (None, true) => {}
            (None, false) => {
                tally.posted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &BenchChatArgs,
    tally: &Tally,
    latency: &Histogram,
    ready: Duration,
    (cpu_before, cpu_after): (Option<u64>, Option<u64>),
    rss_kib: Option<u64>,
    ended: usize,
    first_end: Option<String>,
) -> anyhow::Result<()> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let delivered = load(&tally.delivered);
    let window = args.duration;
    let cpu_s = cpu_before
        .zip(cpu_after)
        .map(|(b, a)| (a - b) as f64 * SECS_PER_TICK);
    let ms = |q: f64| latency.quantile(q) as f64 / 1000.0;
    let json = json!({
        "bench": "chat", "url": args.client.url, "users": args.users, "rooms": args.rooms,
        "interval_s": args.interval, "duration_s": window, "typing": !args.no_typing,
        "ready_s": ready.as_secs_f64(),
        "posted": load(&tally.posted), "post_errors": load(&tally.post_errors),
        "typing_errors": load(&tally.typing_errors),
        "expected": load(&tally.expected), "delivered": delivered,
        "delivered_per_s": delivered as f64 / window,
        "typing_delivered": load(&tally.typing_seen),
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": latency.max as f64 / 1000.0,
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_delivery": cpu_s.map(|s| s * 1e6 / delivered.max(1) as f64),
        "server_rss_kib": rss_kib,
        "connections_ended": ended,
        "first_error": tally.first_error.lock().ok().and_then(|e| e.clone()),
        "first_end": first_end,
    });
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "chat: {} users in {} rooms, {:.0} messages/s delivered ({} of {} expected), p50 {:.1} ms, p99 {:.1} ms{}",
        args.users,
        args.rooms,
        delivered as f64 / window,
        delivered,
        load(&tally.expected),
        ms(0.5),
        ms(0.99),
        cpu_s.map_or(String::new(), |s| format!(
            ", server CPU {:.2} s ({:.1} µs per delivery)",
            s,
            s * 1e6 / delivered.max(1) as f64
        )),
    )?;
    writeln!(out, "{json}")?;
    Ok(())
}
