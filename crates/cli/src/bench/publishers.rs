//! The publishers of `bench fanout`: the plan they follow, and the connections.
//!
//! Publisher connections publish R publications per second for S seconds without waiting
//! for each ack (up to [`MAX_IN_FLIGHT`] in flight in all, and at least [`MIN_WINDOW`] per
//! publisher). Each publication's `data` is `{"t":MICROS,"pad":"xxx…"}`, `t` counted from
//! the subscribers' clock. The plan is decided by `fanout` (how many publishers, when the
//! window starts and ends); it lives here, with what follows it, so that this file does
//! not depend on the run.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use switchboard_client::Client;
use switchboard_ws::Message;
use tokio::time::MissedTickBehavior;

use crate::args::{BenchFanoutArgs, Padding};
use crate::bench::connect::close_reason;
use crate::bench::stats::{find, micros};

/// Publications awaiting their ack, all publishers together (unless [`MIN_WINDOW`] for
/// each asks for more).
const MAX_IN_FLIGHT: usize = 1024;
/// Publications one publisher may have awaiting their ack, whatever their number. A
/// throughput run needs the server saturated: with 1,000 publishers (each held under the
/// server's per-connection command rate) and 8 each, the server idled 5-10% of the time
/// waiting for the next publications while the last ones were committed.
const MIN_WINDOW: usize = 32;

/// What every publisher shares.
pub(crate) struct Plan {
    base: Instant,
    /// Publication k is due at `start + k / rate`.
    start: Instant,
    rate: f64,
    /// Publications in the window, all publishers together.
    pub(crate) total: u64,
    /// Publisher j sends publications j, j + publishers, j + 2 publishers…
    publishers: u64,
    /// When publishers stop waiting for acks.
    deadline: Instant,
    /// How long after the window that is (for a message).
    grace: Duration,
    /// Publications in flight per publisher.
    cap: usize,
    /// The command up to the value of `t`, one per channel (publication k goes to
    /// channel k mod their number), and after it.
    prefixes: Vec<String>,
    suffix: String,
}

impl Plan {
    pub(crate) fn new(
        args: &BenchFanoutArgs,
        base: Instant,
        start: Instant,
        deadline: Instant,
        publishers: usize,
    ) -> anyhow::Result<Plan> {
        let prefixes = channel_names(args)
            .iter()
            .map(|name| {
                let channel = serde_json::to_string(name)?;
                Ok(format!(
                    r#""cmd":"publish","channel":{channel},"data":{{"t":"#
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Plan {
            base,
            start,
            rate: args.rate,
            total: (args.rate * args.duration).round() as u64,
            publishers: publishers as u64,
            deadline,
            grace: deadline
                .saturating_duration_since(start + Duration::from_secs_f64(args.duration)),
            cap: (MAX_IN_FLIGHT / publishers.max(1)).max(MIN_WINDOW),
            prefixes,
            suffix: format!(r#","pad":"{}"}}}}"#, padding(args.conn.pad, args.size)),
        })
    }

    pub(crate) fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Publication k's command up to the value of `t`.
    fn prefix(&self, k: u64) -> &str {
        &self.prefixes[(k % self.prefixes.len() as u64) as usize]
    }
}

/// `size` bytes of padding: `x` repeated, or access-log lines (JSON-safe: no quotes or
/// backslashes), which compress as real log traffic does.
fn padding(kind: Padding, size: usize) -> String {
    let mut pad = String::with_capacity(size + 128);
    match kind {
        Padding::X => pad.extend(std::iter::repeat_n('x', size)),
        Padding::Log => {
            for i in 0.. {
                if pad.len() >= size {
                    break;
                }
                pad.push_str(&format!(
                    "10.1.{}.{} - - [06/Dec/2026:12:{:02}:{:02} +0000] GET /api/items/{} HTTP/1.1 {} {} Mozilla/5.0 (X11; Linux x86_64) ",
                    i % 7,
                    (i * 37) % 251,
                    (i / 60) % 60,
                    i % 60,
                    (i * 7919) % 100_000,
                    [200, 200, 200, 304, 404][i % 5],
                    (i * 131) % 20_000
                ));
            }
            pad.truncate(size);
        }
    }
    pad
}

/// The channels published to: `--channel` alone, or `--channels` of them named
/// `CHANNEL-0`, `CHANNEL-1`…
fn channel_names(args: &BenchFanoutArgs) -> Vec<String> {
    match args.channels {
        0 | 1 => vec![args.channel.clone()],
        n => (0..n).map(|i| format!("{}-{i}", args.channel)).collect(),
    }
}

/// What the publishers counted.
#[derive(Debug, Default)]
pub(crate) struct PubTally {
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    /// The highest offset acknowledged.
    pub(crate) top: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Publishers whose connection ended early, and why.
    pub(crate) lost: Vec<String>,
}

impl PubTally {
    pub(crate) fn merge(&mut self, other: PubTally) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.top = self.top.max(other.top);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.lost.extend(other.lost);
    }
}

/// One publisher connection: publishes its share of the plan, then waits for the acks.
pub(crate) async fn publisher(mut ws: Client, first: u64, plan: Arc<Plan>) -> PubTally {
    let mut tally = PubTally::default();
    if let Err(err) = publish(&mut ws, first, &plan, &mut tally).await {
        tally.lost.push(format!("{err:#}"));
    }
    tally
}

async fn publish(
    ws: &mut Client,
    first: u64,
    plan: &Plan,
    tally: &mut PubTally,
) -> anyhow::Result<()> {
    // One tick per publication of this publisher, at most one per millisecond.
    let period =
        Duration::from_secs_f64(plan.publishers as f64 / plan.rate).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(plan.due(first).into(), period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep_until(plan.deadline.into());
    tokio::pin!(deadline);
    let (mut next, mut in_flight, mut id) = (first, 0usize, 0u64);
    let mut command = String::new();
    while next < plan.total || in_flight > 0 {
        tokio::select! {
            _ = ticks.tick(), if next < plan.total => {
                let now = Instant::now();
                while next < plan.total && plan.due(next) <= now && in_flight < plan.cap {
                    id += 1;
                    command.clear();
                    let t = micros(plan.base.elapsed());
                    write!(command, r#"{{"id":{id},{}{t}{}"#, plan.prefix(next), plan.suffix)?;
                    ws.feed(&Message::text(command.as_str())).await?;
                    next += plan.publishers;
                    in_flight += 1;
                    tally.sent += 1;
                }
                ws.flush().await?;
            }
            received = ws.recv() => match received? {
                Some(Message::Text(text)) => {
                    let text = text.as_bytes();
                    if text.starts_with(br#"{"push""#) {
                        continue;
                    }
                    in_flight = in_flight.saturating_sub(1);
                    if find(text, br#""error":"#).is_some() {
                        tally.errors += 1;
                        if tally.first_error.is_none() {
                            tally.first_error = Some(String::from_utf8_lossy(text).into_owned());
                        }
                    } else if let Some(at) = find(text, br#""offset":"#) {
                        tally.acked += 1;
                        let digits = &text[at + 9..];
                        let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
                        let offset = std::str::from_utf8(&digits[..end]).ok().and_then(|d| d.parse().ok());
                        tally.top = tally.top.max(offset.unwrap_or(0));
                    }
                }
                Some(Message::Close(frame)) => {
                    bail!("the server closed a publisher: {}", close_reason(&frame))
                }
                Some(_) => {}
                None => bail!("a publisher's connection closed"),
            },
            () = &mut deadline => {
                if in_flight > 0 {
                    bail!("{in_flight} publications still unacknowledged {} s after the window", plan.grace.as_secs_f64());
                }
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{BenchConnArgs, Transport};
    use crate::bench::stats::parse_publication;
    use serde_json::json;

    #[test]
    fn the_published_command_is_json_the_subscribers_can_read() {
        let args = BenchFanoutArgs {
            conn: BenchConnArgs {
                source: crate::args::ConfigSource {
                    config: None,
                    data_dir: None,
                },
                url: "ws://127.0.0.1:1/ws".into(),
                ca: None,
                transport: Transport::Ws,
                token: Some("t".into()),
                server_pid: None,
                conns_per_task: 1,
                connect_concurrency: 1,
                threads: 1,
                deflate: false,
                pad: Padding::X,
            },
            subscribers: 1,
            rate: 10.0,
            duration: 1.5,
            channel: "chat:bench".into(),
            channels: 1,
            size: 5,
            slow: 0,
            publishers: 0,
            node_urls: Vec::new(),
            node_pids: Vec::new(),
        };
        let now = Instant::now();
        let plan = Plan::new(&args, now, now, now, 2).unwrap();
        assert_eq!(plan.total, 15);
        assert_eq!(plan.due(10), now + Duration::from_secs(1));
        let command = format!(r#"{{"id":7,{}42{}"#, plan.prefix(0), plan.suffix);
        let value: serde_json::Value = serde_json::from_str(&command).unwrap();
        assert_eq!(
            value,
            json!({"id": 7, "cmd": "publish", "channel": "chat:bench",
                   "data": {"t": 42, "pad": "xxxxx"}})
        );
        // What a subscriber gets: the data as sent, after the offset.
        let data = &command[command.find(r#"{"t""#).unwrap()..command.len() - 1];
        let push = format!(
            r#"{{"push":"publication","channel":"chat:bench","epoch":"e","offset":3,"data":{data},"time":1}}"#
        );
        assert_eq!(parse_publication(push.as_bytes()), Some((3, Some(42))));
    }

    #[test]
    fn log_padding_is_json_safe_text_of_the_size_asked_for() {
        for size in [0, 1, 100, 5000] {
            let pad = padding(Padding::Log, size);
            assert_eq!(pad.len(), size);
            let value: serde_json::Value =
                serde_json::from_str(&format!(r#"{{"pad":"{pad}"}}"#)).unwrap();
            assert_eq!(value["pad"], pad.as_str());
        }
        assert!(padding(Padding::Log, 400).contains("GET /api/items/"));
    }
}
