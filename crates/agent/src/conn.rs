//! The connection loop: one WebSocket session after another, for as long as the agent
//! runs.
//!
//! A session connects with the agent's token, subscribes to `metrics:HOST` and asks
//! for its presence (so the agent knows whether anyone is watching: the users there other
//! than itself, kept up to date by the join and leave pushes), publishes `hello`, then a
//! `dropped` report if anything was lost, then empties the [`Outbox`] within the send
//! limits. Publications are pipelined (up to [`WINDOW`] unanswered) and kept until the
//! server's reply says they are stored; when a session ends, those without a reply go
//! back to the front of the queue, so nothing that was produced is lost to a broken
//! connection (a publication stored just before the break may come twice).
//!
//! Between sessions it waits 100 ms, doubling to 30 s, each wait drawn between half and
//! all of that (jitter, so that a hundred agents of a restarted server do not all come
//! back in the same millisecond). A session that lasted `STABLE` (30 s) starts the count
//! again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_client::{Client, Incoming};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Intervals, SendLimits};
use crate::error::{Error, Result};
use crate::outbox::{Item, Outbox};
use crate::sample::now_ms;
use crate::tail::LogInfo;
use crate::token::Token;

/// Publications sent and not yet answered, at most.
pub const WINDOW: usize = 64;
/// How long connecting, and each step of setting up a session, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long without hearing from the server, a `ping` command is sent.
const PING_AFTER: Duration = Duration::from_secs(15);
/// After this long without hearing from the server, it is taken for gone.
const DEAD_AFTER: Duration = Duration::from_secs(30);
/// The first wait between sessions.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between sessions.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// How long the server is asked to wait after it refused a publication for the rate
/// (111) or could not store it (100).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a stopping agent keeps sending what it still holds.
const DRAIN: Duration = Duration::from_secs(2);

/// What `hello` says besides the logs.
#[derive(Debug, Clone)]
pub struct Announce {
    /// The agent's version.
    pub version: String,
    /// The operating system.
    pub os: String,
    /// Logical cores.
    pub cores: usize,
    /// The sampling intervals.
    pub intervals: Intervals,
}

/// The connection loop's parts.
#[derive(Debug)]
pub struct Link {
    /// `ws://HOST:PORT/ws`.
    pub url: String,
    /// The token to connect with.
    pub token: Token,
    /// This host's name.
    pub host: String,
    /// `metrics:HOST`.
    pub channel: Arc<str>,
    /// What to publish.
    pub outbox: Arc<Outbox>,
    /// Told whether anyone is watching.
    pub watched: watch::Sender<bool>,
    /// The logs to announce (changes when a glob matches a new file).
    pub logs: watch::Receiver<Vec<LogInfo>>,
    /// The rest of `hello`.
    pub announce: Announce,
    /// The agent's own publishing limits.
    pub limits: SendLimits,
}

/// How a session ended.
enum End {
    /// The agent is stopping.
    Stopped,
    /// The connection broke.
    Broken(Error),
}

impl Link {
    /// Runs sessions until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let mut session = Session::new();
            let end = self.session(&mut session, &cancel).await;
            self.outbox.set_connected(false);
            self.watched
                .send_if_modified(|w| std::mem::replace(w, false));
            // What was sent and not answered goes back, in order, as late.
            let unanswered: Vec<Item> = std::mem::take(&mut session.inflight)
                .into_values()
                .flatten()
                .map(|mut item| {
                    item.late = true;
                    item
                })
                .collect();
            self.outbox.requeue(unanswered);
            let err = match end {
                End::Stopped => return,
                End::Broken(err) => err,
            };
            if started.elapsed() >= STABLE {
                backoff = BACKOFF_MIN;
            }
            // Jitter: between half and all of the backoff.
            let half = backoff / 2;
            let wait = half + half.mul_f64(rand::random::<f64>());
            if session.connected {
                warn!(cause = %err, ?wait, "disconnected from the server; reconnecting");
            } else {
                warn!(cause = %err, ?wait, "cannot connect to the server; trying again");
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn session(&mut self, s: &mut Session, cancel: &CancellationToken) -> End {
        let mut opened = tokio::select! {
            _ = cancel.cancelled() => return End::Stopped,
            opened = self.open() => match opened {
                Ok(opened) => opened,
                Err(err) => return End::Broken(err),
            },
        };
        s.connected = true;
        match self.serve(&mut opened, s, cancel).await {
            Ok(()) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), opened.0.close_plain()).await;
                End::Stopped
            }
            Err(err) => End::Broken(err),
        }
    }

    /// Opens the WebSocket and connects with the token.
    async fn open(&self) -> Result<(Client, String, Value)> {
        // Offering permessage-deflate: log lines and samples shrink several times.
        let mut client = step(Client::open_compressed(&self.url)).await?;
        let token = self.token.get();
        let reply = step(client.connect(Some(&token))).await?;
        let me = reply["user"].as_str().unwrap_or_default().to_owned();
        step(client.result(json!({"cmd": "subscribe", "channel": &*self.channel}))).await?;
        let presence =
            step(client.result(json!({"cmd": "presence", "channel": &*self.channel}))).await?;
        // Joins and leaves read before the presence answer are older than it.
        client.take_pushes();
        Ok((client, me, presence))
    }

    /// Runs a session over an open connection until it breaks (`Err`) or the agent
    /// stops and what it held was sent (`Ok`).
    async fn serve(
        &mut self,
        opened: &mut (Client, String, Value),
        s: &mut Session,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let (client, me, presence) = opened;
        let mut watchers = Watchers::new(me.clone(), presence);
        info!(url = %self.url, host = %self.host, watchers = watchers.count(), "connected");
        self.set_watched(&watchers);
        let hello = self.hello();
        s.control(client, &self.channel, hello).await?;
        self.outbox.set_connected(true);
        let mut pacer = Pacer::new(self.limits);
        let mut last_heard = Instant::now();
        let mut ping_at = last_heard + PING_AFTER;
        let mut retry_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        // The log list's sender goes when the tails stop: not a change to announce.
        let mut logs_open = true;
        loop {
            let dropped = self.outbox.take_dropped();
            if dropped.samples + dropped.lines > 0 {
                warn!(
                    samples = dropped.samples,
                    lines = dropped.lines,
                    "dropped what the buffer could not hold"
                );
                let report = json!({"type": "dropped", "time": now_ms(),
                    "samples": dropped.samples, "lines": dropped.lines});
                s.control(client, &self.channel, report).await?;
            }
            let wake = self.pump(client, s, &mut pacer, &mut retry_at).await?;
            if let Some(until) = drain_until {
                let (queued, _) = self.outbox.queued();
                if Instant::now() >= until || (queued == 0 && s.inflight.is_empty()) {
                    return Ok(());
                }
            }
            let can_send = s.inflight.len() < WINDOW && wake.is_none();
            tokio::select! {
                _ = cancel.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + DRAIN);
                }
                message = client.next_message() => {
                    last_heard = Instant::now();
                    ping_at = last_heard + PING_AFTER;
                    match message? {
                        Incoming::Close(code, reason) => {
                            return Err(switchboard_client::Error::Closed { code, reason }.into());
                        }
                        Incoming::Json(message) => {
                            if message.get("push").is_some() {
                                if watchers.apply(&message, &self.channel) {
                                    self.set_watched(&watchers);
                                }
                            } else {
                                s.answer(&message, &self.outbox, &mut retry_at);
                            }
                        }
                    }
                }
                _ = self.outbox.ready(), if can_send => {}
                _ = sleep_until(wake) => {}
                changed = self.logs.changed(), if logs_open => {
                    if changed.is_ok() {
                        let hello = self.hello();
                        s.control(client, &self.channel, hello).await?;
                    } else {
                        logs_open = false;
                    }
                }
                _ = tokio::time::sleep_until(ping_at) => {
                    if last_heard.elapsed() >= DEAD_AFTER {
                        return Err(Error::Timeout(DEAD_AFTER));
                    }
                    let id = client.send_command(json!({"cmd": "ping"})).await?;
                    s.inflight.insert(id, None);
                    ping_at = Instant::now() + PING_AFTER;
                }
                // While stopping, wake often enough to see the drain's deadline.
                _ = tokio::time::sleep(Duration::from_millis(100)), if drain_until.is_some() => {}
            }
        }
    }

    /// Sends what the queue holds, as far as the window and the limits allow; returns
    /// when to try again if a limit (not the window or an empty queue) stopped it.
    async fn pump(
        &self,
        client: &mut Client,
        s: &mut Session,
        pacer: &mut Pacer,
        retry_at: &mut Option<Instant>,
    ) -> Result<Option<Instant>> {
        let mut fed = false;
        let mut wake = None;
        while s.inflight.len() < WINDOW {
            let now = Instant::now();
            if let Some(at) = *retry_at {
                if now < at {
                    wake = Some(at);
                    break;
                }
                *retry_at = None;
            }
            let Some(bytes) = self.outbox.front_bytes() else {
                break;
            };
            if let Some(wait) = pacer.take(bytes, now) {
                wake = Some(now + wait);
                break;
            }
            let Some(item) = self.outbox.pop() else {
                break;
            };
            let data: Value = match serde_json::from_str(&item.data()) {
                Ok(data) => data,
                Err(e) => {
                    // Built by this crate from serialised values: cannot happen.
                    warn!(cause = %e, "a publication that is not JSON was dropped");
                    continue;
                }
            };
            let id = client
                .feed_command(json!({"cmd": "publish", "channel": &*item.channel, "data": data}))
                .await?;
            s.inflight.insert(id, Some(item));
            fed = true;
        }
        if fed {
            client.flush().await?;
        }
        Ok(wake)
    }

    fn set_watched(&self, watchers: &Watchers) {
        let watched = watchers.count() > 0;
        if self
            .watched
            .send_if_modified(|w| std::mem::replace(w, watched) != watched)
        {
            debug!(watched, "watchers changed");
        }
    }

    /// `hello`, with the logs as they are now (marked seen, so that only a later change
    /// announces them again).
    fn hello(&mut self) -> Value {
        let logs: Vec<Value> = self
            .logs
            .borrow_and_update()
            .iter()
            .map(|l| json!({"name": l.name, "kind": l.kind}))
            .collect();
        let a = &self.announce;
        json!({
            "type": "hello",
            "time": now_ms(),
            "host": self.host,
            "version": a.version,
            "os": a.os,
            "cores": a.cores,
            "interval_ms": {
                "watched": a.intervals.watched.as_millis() as u64,
                "idle": a.intervals.idle.as_millis() as u64,
            },
            "logs": logs,
        })
    }
}

/// One session's state.
#[derive(Debug, Default)]
struct Session {
    /// Whether the connection was opened (for what the log says when it ends).
    connected: bool,
    /// Commands sent and not answered, by id: publications from the queue (`Some`, to
    /// put back if the session ends) and control messages (`None`).
    inflight: BTreeMap<u64, Option<Item>>,
    /// The last refusal code logged, so a refusal repeated for every publication is said
    /// once.
    last_refusal: Option<u64>,
}

impl Session {
    fn new() -> Session {
        Session::default()
    }

    /// Publishes a message of the agent's own (`hello`, `dropped`) before the queue.
    async fn control(&mut self, client: &mut Client, channel: &str, data: Value) -> Result<()> {
        let id = client
            .send_command(json!({"cmd": "publish", "channel": channel, "data": data}))
            .await?;
        self.inflight.insert(id, None);
        Ok(())
    }

    /// Handles a reply.
    fn answer(&mut self, reply: &Value, outbox: &Outbox, retry_at: &mut Option<Instant>) {
        let Some(id) = reply["id"].as_u64() else {
            return;
        };
        let Some(item) = self.inflight.remove(&id) else {
            return;
        };
        let Some(error) = reply.get("error") else {
            self.last_refusal = None;
            return;
        };
        let code = error["code"].as_u64().unwrap_or(0);
        let message = error["message"].as_str().unwrap_or_default();
        match (code, item) {
            // Too fast (111) or not stored (100): sent again after a pause.
            (111 | 100, Some(item)) => {
                debug!(code, message, "the server asked to wait; sending again");
                outbox.requeue(vec![item]);
                *retry_at = Some(Instant::now() + RETRY_AFTER);
            }
            (_, item) => {
                if self.last_refusal != Some(code) {
                    let channel = item.as_ref().map(|i| i.channel.to_string());
                    warn!(
                        code,
                        message,
                        ?channel,
                        "the server refused a publication; it is dropped"
                    );
                    self.last_refusal = Some(code);
                }
            }
        }
    }
}

/// Who is watching `metrics:HOST`: users other than the agent itself (an anonymous
/// connection counts on its own).
#[derive(Debug)]
struct Watchers {
    me: String,
    users: HashSet<String>,
}

impl Watchers {
    fn new(me: String, presence: &Value) -> Watchers {
        let mut users = HashSet::new();
        if let Some(present) = presence["presence"].as_object() {
            users.extend(present.keys().filter(|u| **u != me).cloned());
        }
        if let Some(anonymous) = presence["anonymous"].as_object() {
            users.extend(anonymous.keys().map(|c| format!("anonymous {c}")));
        }
        Watchers { me, users }
    }

    fn count(&self) -> usize {
        self.users.len()
    }

    /// Applies a push; whether it was a join or leave of the channel.
    fn apply(&mut self, push: &Value, channel: &str) -> bool {
        if push["channel"] != channel {
            return false;
        }
        let info = &push["info"];
        let user = match info["user"].as_str() {
            Some("") => format!("anonymous {}", info["client"].as_str().unwrap_or_default()),
            Some(user) if user == self.me => return false,
            Some(user) => user.to_owned(),
            None => return false,
        };
        match push["push"].as_str() {
            Some("join") => self.users.insert(user),
            Some("leave") => self.users.remove(&user),
            _ => false,
        }
    }
}

/// A token bucket over publications and bytes, one second of each deep.
#[derive(Debug)]
struct Pacer {
    limits: SendLimits,
    commands: f64,
    bytes: f64,
    last: Instant,
}

impl Pacer {
    fn new(limits: SendLimits) -> Pacer {
        Pacer {
            limits,
            commands: f64::from(limits.commands_per_second),
            bytes: limits.bytes_per_second as f64,
            last: Instant::now(),
        }
    }

    /// Takes one publication of `bytes`, or says how long to wait for it.
    fn take(&mut self, bytes: usize, now: Instant) -> Option<Duration> {
        let rate_c = f64::from(self.limits.commands_per_second);
        let rate_b = self.limits.bytes_per_second as f64;
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.commands = (self.commands + dt * rate_c).min(rate_c);
        self.bytes = (self.bytes + dt * rate_b).min(rate_b);
        // A publication larger than the whole bucket goes when the bucket is full.
        let need = (bytes as f64).min(rate_b);
        if self.commands >= 1.0 && self.bytes >= need {
            self.commands -= 1.0;
            self.bytes -= need;
            return None;
        }
        let wait_c = (1.0 - self.commands).max(0.0) / rate_c;
        let wait_b = (need - self.bytes).max(0.0) / rate_b;
        Some(Duration::from_secs_f64(wait_c.max(wait_b)).max(Duration::from_millis(1)))
    }
}

/// One step of setting up a session, bounded by [`STEP_TIMEOUT`].
async fn step<T>(
    future: impl std::future::Future<Output = switchboard_client::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Timeout(STEP_TIMEOUT)),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_others_by_user_and_anonymous_connections_one_by_one() {
        let presence = json!({
            "presence": {"agent:h": {"user": "agent:h"}, "alice": {"user": "alice"}},
            "anonymous": {"c1": {"user": ""}},
        });
        let mut w = Watchers::new("agent:h".into(), &presence);
        assert_eq!(w.count(), 2);
        let push = |kind: &str, user: &str, client: &str| json!({"push": kind, "channel": "metrics:h", "info": {"user": user, "client": client}});
        assert!(!w.apply(&push("join", "agent:h", "c0"), "metrics:h"));
        assert!(w.apply(&push("join", "bob", "c2"), "metrics:h"));
        assert!(!w.apply(&push("join", "bob", "c3"), "metrics:other"));
        assert!(w.apply(&push("leave", "alice", "c4"), "metrics:h"));
        assert!(w.apply(&push("leave", "", "c1"), "metrics:h"));
        assert_eq!(w.count(), 1);
        assert!(w.apply(&push("leave", "bob", "c2"), "metrics:h"));
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn the_pacer_keeps_to_its_rates() {
        let mut p = Pacer::new(SendLimits {
            commands_per_second: 10,
            bytes_per_second: 1000,
        });
        let t0 = Instant::now();
        // A full bucket: ten at once, then one every 100 ms.
        for _ in 0..10 {
            assert_eq!(p.take(10, t0), None);
        }
        let wait = p.take(10, t0).unwrap();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert_eq!(p.take(10, t0 + Duration::from_millis(100)), None);
        // Bytes: the bucket is nearly empty of commands but full enough of bytes later.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(p.take(900, t1), None);
        let wait = p.take(900, t1).unwrap();
        assert!(wait >= Duration::from_millis(790), "{wait:?}");
        // Larger than the bucket: waits for a full one, then goes.
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(p.take(5000, t2), None);
    }
}
