//! `switchboard bench vote`: the built-in voting app with a room full of watchers.
//!
//! One poll (made through `vote.create` by a bench user), W watchers subscribed to its
//! channel `poll:ID`, and V voters casting and changing votes through `vote.cast` at R
//! votes per second in all (each voter every V/R seconds, their turns spread evenly). The
//! server coalesces tally pushes (at most 4 per second per poll), so what a watcher sees
//! is a tally that includes a vote some time after it was cast: that delay is the
//! latency measured, for every (vote, watcher) pair.
//!
//! Every tally carries the poll's `seq`, which rises by one per vote. A voter keeps the
//! time it sent each vote and the `seq` its answer gives; a watcher keeps the `seq` and
//! arrival time of each push (read without parsing the JSON). After the window (and
//! [`GRACE`] for the last pushes), each vote's latency at each watcher is the arrival of
//! that watcher's first push with a `seq` at least the vote's, minus the vote's send
//! time; a vote no push ever covered is `missed`. With `--server-pid`, the server's CPU
//! time over the window gives its CPU per vote.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchboard_client::{Client, Incoming};
use switchboard_server::auth::{self, Claims};
use switchboard_ws::Message;
use tokio::sync::Semaphore;

use crate::args::BenchVoteArgs;
use crate::bench::connect::{Endpoint, open_ws};
use crate::bench::measure::{self, SECS_PER_TICK};
use crate::bench::stats::{Histogram, micros, number_after};
use crate::client::{Need, server_secret};

/// How long the last pushes may trail the window.
const GRACE: Duration = Duration::from_secs(3);
/// Votes one user may cast per second (the app's limit, `vote::VOTES_PER_SECOND`).
const PER_VOTER_MAX: f64 = switchboard_apps::vote::VOTES_PER_SECOND as f64;

/// Counters shared by the voters.
struct Counts {
    votes: AtomicU64,
    errors: AtomicU64,
    /// From sending a vote to its answer.
    answers: std::sync::Mutex<Histogram>,
    /// The first error reply, for the report.
    first_error: std::sync::Mutex<Option<String>>,
}

pub(crate) async fn vote(args: BenchVoteArgs) -> anyhow::Result<()> {
    if args.voters == 0 || !(args.rate > 0.0 && args.duration > 0.0) {
        bail!("--voters, --rate and --duration must be above 0");
    }
    if args.rate / args.voters as f64 > PER_VOTER_MAX {
        bail!(
            "--rate {} with {} voters is more than {PER_VOTER_MAX} votes a second per voter \
             (the app's limit): add voters",
            args.rate,
            args.voters
        );
    }
    if !(2..=20).contains(&args.options) {
        bail!("--options is 2 to 20");
    }
    let endpoint = Arc::new(Endpoint::parse(
        &args.client.url,
        args.client.ca.as_deref(),
    )?);
    let secret = server_secret(&args.client.source, Need::TokenSecret, "the token secret")?;
    let start = Instant::now();

    // The poll.
    let (mut owner, _) = open_ws(&endpoint, &mint(&secret, "bench-vote-owner")?, None, None)
        .await
        .context("the poll's owner could not connect")?;
    let options: Vec<String> = (1..=args.options).map(|i| format!("option {i}")).collect();
    let created = owner
        .result(json!({"cmd": "rpc", "method": "vote.create", "data": {
            "question": "switchboard bench vote", "options": options,
            "changeable": true, "results": "always"}}))
        .await
        .context("vote.create failed")?;
    let poll = created["poll"]
        .as_str()
        .context("vote.create answered no poll")?
        .to_owned();
    let channel = format!("{}:{poll}", switchboard_apps::POLL_NAMESPACE);

    // Watchers (subscribed) and voters, opened a few at a time.
    let opening = Arc::new(Semaphore::new(args.client.connect_concurrency.max(1)));
    let mut opened = Vec::with_capacity(args.watchers + args.voters);
    for i in 0..args.watchers + args.voters {
        let (endpoint, opening) = (endpoint.clone(), opening.clone());
        let watching = i < args.watchers;
        let token = if watching {
            mint(&secret, &format!("bench-vote-watcher-{i}"))?
        } else {
            mint(&secret, &format!("bench-vote-voter-{}", i - args.watchers))?
        };
        let channel = watching.then(|| channel.clone());
        opened.push(tokio::spawn(async move {
            let _permit = opening.acquire().await?;
            let (client, _) = open_ws(&endpoint, &token, channel.as_deref(), None).await?;
            anyhow::Ok(client)
        }));
    }
    let mut clients = Vec::with_capacity(opened.len());
    for task in opened {
        clients.push(task.await??);
    }
    let voters = clients.split_off(args.watchers);
    let watchers = clients;
    let ready = start.elapsed();

    let pid = args.client.server_pid;
    let cpu_before = pid.map(measure::cpu_ticks).transpose()?;
    let window = Duration::try_from_secs_f64(args.duration).context("invalid --duration")?;
    let interval =
        Duration::try_from_secs_f64(args.voters as f64 / args.rate).context("invalid --rate")?;
    let counts = Arc::new(Counts {
        votes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        answers: std::sync::Mutex::new(Histogram::new()),
        first_error: std::sync::Mutex::new(None),
    });
    let window_start = Instant::now();
    let ends = window_start + window;
    let drain_until = ends + GRACE;

    let watching: Vec<_> = watchers
        .into_iter()
        .map(|client| tokio::spawn(watch(client, start, drain_until)))
        .collect();
    let voting: Vec<_> = voters
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let voter = Voter {
                client,
                poll: poll.clone(),
                options: args.options as u32,
                first: window_start + interval.mul_f64(i as f64 / args.voters as f64),
                interval,
                ends,
                drain_until,
                start,
                counts: counts.clone(),
                turn: i,
            };
            tokio::spawn(voter.run())
        })
        .collect();

    let mut ended = 0;
    let mut first_end = None;
    let mut votes: Vec<(u64, u64)> = Vec::new();
    for task in voting {
        match task.await? {
            Ok(mine) => votes.extend(mine),
            Err(err) => {
                ended += 1;
                first_end.get_or_insert(err.to_string());
            }
        }
    }
    let cpu_after = pid.map(measure::cpu_ticks).transpose()?;
    let rss = pid.map(measure::rss_kib).transpose()?;
    votes.sort_unstable();
    let mut latency = Histogram::new();
    let (mut missed, mut pushes) = (0u64, 0u64);
    for task in watching {
        match task.await? {
            Ok(arrivals) => {
                pushes += arrivals.len() as u64;
                missed += cover(&votes, &arrivals, &mut latency);
            }
            Err(err) => {
                ended += 1;
                first_end.get_or_insert(err.to_string());
            }
        }
    }
    report(
        &args,
        &counts,
        &latency,
        Figures {
            ready,
            cpu: (cpu_before, cpu_after),
            rss,
            ended,
            first_end,
            missed,
            pushes,
        },
    )
}

/// Records, for each vote `(seq, sent µs)` (sorted), the time until the first arrival
/// `(seq, µs)` (rising) that covers it; returns the votes none covered.
fn cover(votes: &[(u64, u64)], arrivals: &[(u64, u64)], latency: &mut Histogram) -> u64 {
    let mut next = arrivals.iter().peekable();
    let mut missed = 0;
    for &(seq, sent) in votes {
        while next.peek().is_some_and(|&&(s, _)| s < seq) {
            next.next();
        }
        match next.peek() {
            Some(&&(_, at)) => latency.record(at.saturating_sub(sent)),
            None => missed += 1,
        }
    }
    missed
}

/// A token for bench user `user`, with a display name as the apps' tokens carry.
fn mint(secret: &str, user: &str) -> anyhow::Result<String> {
    let info = serde_json::value::to_raw_value(&json!({"name": user, "guest": false}))?;
    Ok(auth::mint(
        secret,
        &Claims {
            sub: user.to_owned(),
            exp: auth::now_secs() + 24 * 3600,
            info: Some(info),
            channels: Vec::new(),
            roles: Vec::new(),
            publish: Vec::new(),
        },
    )?)
}

/// One watcher: the `seq` and arrival time (µs since the bench started) of every tally
/// push, until `until`.
async fn watch(
    mut client: Client,
    start: Instant,
    until: Instant,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut arrivals = Vec::new();
    let deadline = tokio::time::Instant::from_std(until);
    loop {
        let message = tokio::select! {
            message = client.recv() => message?,
            () = tokio::time::sleep_until(deadline) => break,
        };
        match message {
            Some(Message::Text(text)) => {
                let at = micros(start.elapsed());
                if let Some((_, seq)) = number_after(text.as_bytes(), br#""seq":"#) {
                    arrivals.push((seq, at));
                }
            }
            Some(Message::Close(frame)) => {
                bail!("closed: {}", crate::bench::connect::close_reason(&frame))
            }
            Some(_) => {}
            None => bail!("the connection ended"),
        }
    }
    Ok(arrivals)
}

/// One voter: votes on its turns (a different option each time, so every vote changes
/// the tally), and keeps each vote's `seq` and send time.
struct Voter {
    client: Client,
    poll: String,
    options: u32,
    first: Instant,
    interval: Duration,
    ends: Instant,
    drain_until: Instant,
    start: Instant,
    counts: Arc<Counts>,
    turn: usize,
}

impl Voter {
    async fn run(mut self) -> anyhow::Result<Vec<(u64, u64)>> {
        let mut next = self.first;
        let mut sent: HashMap<u64, u64> = HashMap::new();
        let mut votes = Vec::new();
        let mut answers = Histogram::new();
        let deadline = tokio::time::Instant::from_std(self.drain_until);
        loop {
            let voting = next < self.ends;
            if !voting && sent.is_empty() {
                break;
            }
            let wake = if voting { next } else { self.drain_until };
            tokio::select! {
                incoming = self.client.next_message() => match incoming? {
                    Incoming::Json(message) => {
                        self.read(&message, &mut sent, &mut votes, &mut answers);
                    }
                    Incoming::Close(code, reason) => bail!("closed {code} {reason}"),
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if !voting || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    let choice = (self.turn % self.options as usize) as u32;
                    self.turn += 1;
                    let at = micros(self.start.elapsed());
                    let id = self.client.send_command(json!({"cmd": "rpc", "method": "vote.cast",
                        "data": {"poll": self.poll, "choices": [choice]}})).await?;
                    sent.insert(id, at);
                    next += self.interval;
                }
            }
        }
        if let Ok(mut all) = self.counts.answers.lock() {
            all.merge(&answers);
        }
        Ok(votes)
    }

    fn read(
        &self,
        message: &Value,
        sent: &mut HashMap<u64, u64>,
        votes: &mut Vec<(u64, u64)>,
        answers: &mut Histogram,
    ) {
        let Some(at) = message["id"].as_u64().and_then(|id| sent.remove(&id)) else {
            return;
        };
        answers.record(micros(self.start.elapsed()).saturating_sub(at));
        let counts = &self.counts;
        match (message.get("error"), message["result"]["seq"].as_u64()) {
            (None, Some(seq)) => {
                counts.votes.fetch_add(1, Ordering::Relaxed);
                votes.push((seq, at));
            }
            _ => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = counts.first_error.lock() {
                    first.get_or_insert_with(|| message.to_string());
                }
            }
        }
    }
}

/// What the run measured besides the counters.
struct Figures {
    ready: Duration,
    cpu: (Option<u64>, Option<u64>),
    rss: Option<u64>,
    ended: usize,
    first_end: Option<String>,
    missed: u64,
    pushes: u64,
}

fn report(
    args: &BenchVoteArgs,
    counts: &Counts,
    latency: &Histogram,
    f: Figures,
) -> anyhow::Result<()> {
    let votes = counts.votes.load(Ordering::Relaxed);
    let window = args.duration;
    let cpu_s = f
        .cpu
        .0
        .zip(f.cpu.1)
        .map(|(b, a)| (a - b) as f64 * SECS_PER_TICK);
    let ms = |q: f64| latency.quantile(q) as f64 / 1000.0;
    let answers = counts
        .answers
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| Histogram::new());
    let answer_ms = |q: f64| answers.quantile(q) as f64 / 1000.0;
    let per_watcher =
        f.pushes as f64 / args.watchers.max(1) as f64 / (window + GRACE.as_secs_f64());
    let json = json!({
        "bench": "vote", "url": args.client.url, "watchers": args.watchers, "voters": args.voters,
        "rate": args.rate, "duration_s": window, "options": args.options,
        "ready_s": f.ready.as_secs_f64(),
        "votes": votes, "vote_errors": counts.errors.load(Ordering::Relaxed),
        "votes_per_s": votes as f64 / window,
        "pushes": f.pushes, "pushes_per_s_per_watcher": per_watcher,
        "samples": latency.count(), "missed": f.missed,
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": latency.max as f64 / 1000.0,
        "answer_p50_ms": answer_ms(0.5), "answer_p99_ms": answer_ms(0.99),
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_vote": cpu_s.map(|s| s * 1e6 / votes.max(1) as f64),
        "server_rss_kib": f.rss,
        "connections_ended": f.ended,
        "first_error": counts.first_error.lock().ok().and_then(|e| e.clone()),
        "first_end": f.first_end,
    });
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "vote: {} watchers, {} voters, {:.0} votes/s ({} votes, {} refused), {:.1} pushes/s per watcher, vote to watchers p50 {:.1} ms, p99 {:.1} ms ({} missed), vote answered p99 {:.1} ms{}",
        args.watchers,
        args.voters,
        votes as f64 / window,
        votes,
        counts.errors.load(Ordering::Relaxed),
        per_watcher,
        ms(0.5),
        ms(0.99),
        f.missed,
        answer_ms(0.99),
        cpu_s.map_or(String::new(), |s| format!(
            ", server CPU {:.2} s ({:.0} µs per vote)",
            s,
            s * 1e6 / votes.max(1) as f64
        )),
    )?;
    writeln!(out, "{json}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vote_is_covered_by_the_first_push_at_or_past_its_seq() {
        let votes = [(1, 100), (2, 150), (3, 200), (9, 300)];
        let arrivals = [(2, 400), (3, 500), (5, 900)];
        let mut latency = Histogram::new();
        assert_eq!(
            cover(&votes, &arrivals, &mut latency),
            1,
            "seq 9: never pushed"
        );
        assert_eq!(latency.count(), 3);
        assert_eq!(latency.max, 300, "seq 1 waited for the push of seq 2");
    }
}
