//! The subscribers of `bench fanout` and `bench idle`: opened over the bench's transport
//! (at most `--connect-concurrency` at once), then counting what they receive until they
//! end or are stopped.
//!
//! A subscriber does little per publication: a byte search for `"offset":` and
//! `"data":{"t":` instead of JSON parsing, and counts in a log-linear histogram shared by
//! the connections of one task (`--conns-per-task`), all of them polled by that task.
//! Publication k's data is `{"t":MICROS,…}`, `t` counted from [`Shared::base`], so a
//! subscriber in the same process measures end-to-end latency as now − t.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use switchboard_client::Client;
use switchboard_ws::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::args::{BenchConnArgs, Transport};
use crate::bench::connect::{Auth, Endpoint, OPEN_TIMEOUT, close_reason, open_ws_with};
use crate::bench::http::{self, Poster, Sink};
use crate::bench::stats::{Histogram, micros, parse_publication};

const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the subscribers of one task counted.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Bench publications received (duplicates excluded).
    pub(crate) delivered: u64,
    /// Of those, received before the publishing window ended.
    pub(crate) in_window: u64,
    /// Publications with an offset not above the last one seen.
    pub(crate) duplicates: u64,
    /// Offsets skipped (a publication the server failed to store also leaves one).
    pub(crate) gaps: u64,
    pub(crate) latency_us: Histogram,
    /// Connections that ended before the bench closed them.
    pub(crate) ended: u64,
    /// Why the first of them ended.
    pub(crate) first_end: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            delivered: 0,
            in_window: 0,
            duplicates: 0,
            gaps: 0,
            latency_us: Histogram::new(),
            ended: 0,
            first_end: None,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.in_window += other.in_window;
        self.duplicates += other.duplicates;
        self.gaps += other.gaps;
        self.latency_us.merge(&other.latency_us);
        self.ended += other.ended;
        if self.first_end.is_none() {
            self.first_end.clone_from(&other.first_end);
        }
    }
}

/// What every subscriber task shares.
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    /// Where subscribers connect: `endpoint`, then other nodes of its group (a task's
    /// connections on one of them, in turn).
    pub(crate) nodes: Vec<Endpoint>,
    pub(crate) auth: Auth,
    /// The subscribers' transport.
    pub(crate) transport: Transport,
    /// WebSocket subscribers offer permessage-deflate.
    pub(crate) deflate: bool,
    pub(crate) channel: String,
    /// The clock of every `t`.
    pub(crate) base: Instant,
    /// Bounds the connections being opened at once.
    pub(crate) opening: Semaphore,
    pub(crate) ready: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) first_error: Mutex<Option<String>>,
    /// End of the publishing window in µs since `base` (u64::MAX until known).
    pub(crate) window_end_us: AtomicU64,
    /// The last offset each subscriber received (or its subscribe offset), by user
    /// number: what it lacks of the acknowledged publications is lost.
    pub(crate) lasts: Vec<AtomicU64>,
}

impl Shared {
    pub(crate) fn new(
        args: &BenchConnArgs,
        nodes: &[String],
        channel: &str,
        subscribers: usize,
    ) -> anyhow::Result<Arc<Shared>> {
        Ok(Arc::new(Shared {
            endpoint: Endpoint::parse(&args.url, args.ca.as_deref())?,
            nodes: std::iter::once(&args.url)
                .chain(nodes)
                .map(|url| Endpoint::parse(url, args.ca.as_deref()))
                .collect::<anyhow::Result<_>>()?,
            auth: Auth::new(args)?,
            transport: args.transport,
            deflate: args.deflate,
            channel: channel.to_owned(),
            base: Instant::now(),
            opening: Semaphore::new(args.connect_concurrency.max(1)),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            window_end_us: AtomicU64::new(u64::MAX),
            lasts: (0..subscribers).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }))
    }
}

/// One subscriber's counting: what each transport hands every message it receives to.
pub(crate) struct Counter<'a> {
    shared: &'a Shared,
    tally: &'a Mutex<Tally>,
    /// Where the last offset is published for the bench's loss count.
    slot: Option<&'a AtomicU64>,
    /// The last offset received; `None` until the subscribe reply.
    last: Option<u64>,
}

impl<'a> Counter<'a> {
    fn new(shared: &'a Shared, user: usize, tally: &'a Mutex<Tally>) -> Counter<'a> {
        Counter {
            shared,
            tally,
            slot: shared.lasts.get(user),
            last: None,
        }
    }

    fn remember(&self, last: u64) {
        if let Some(slot) = self.slot {
            slot.store(last, Ordering::Relaxed);
        }
    }

    /// The subscribe reply said the channel is at `offset`: the subscriber is ready.
    fn subscribed(&mut self, offset: u64) {
        self.last = Some(offset);
        self.remember(offset);
        self.shared.ready.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a publication (anything else is ignored).
    pub(crate) fn publication(&mut self, text: &[u8]) {
        let Some(last) = self.last else { return };
        let Some((offset, t)) = parse_publication(text) else {
            return;
        };
        let now = micros(self.shared.base.elapsed());
        let mut tally = lock(self.tally);
        if offset <= last {
            tally.duplicates += 1;
            return;
        }
        tally.gaps += offset - last - 1;
        self.last = Some(offset);
        self.remember(offset);
        if let Some(t) = t {
            tally.delivered += 1;
            if now <= self.shared.window_end_us.load(Ordering::Relaxed) {
                tally.in_window += 1;
            }
            tally.latency_us.record(now.saturating_sub(t));
        }
    }

    /// The subscriber ended before the bench stopped it, for `why`.
    fn end(self, why: String) {
        let mut tally = lock(self.tally);
        tally.ended += 1;
        tally.first_end.get_or_insert(why);
    }
}

impl Sink for Counter<'_> {
    /// A message of the HTTP transports, which carry the replies to `connect` (id 1) and
    /// `subscribe` (id 2) on the same stream as the pushes: before the subscribe reply,
    /// a reply is parsed (an error reply fails the opening); after it, only publications
    /// count.
    fn message(&mut self, text: &[u8]) -> anyhow::Result<()> {
        if self.last.is_none() && text.starts_with(br#"{"id":"#) {
            let mut reply: serde_json::Value = serde_json::from_slice(text).with_context(|| {
                format!(
                    "a reply that is not JSON: {}",
                    String::from_utf8_lossy(text)
                )
            })?;
            let what = if reply["id"] == 1 {
                "connect"
            } else {
                "subscribe"
            };
            if let Some(error) = reply.get("error") {
                let message = error["message"].as_str().unwrap_or_default();
                bail!("{what} failed: error {}: {message}", error["code"]);
            }
            if reply["id"] == 2 {
                let offset = reply["result"]["offset"]
                    .take()
                    .as_u64()
                    .context("a subscribe reply without offset")?;
                self.subscribed(offset);
            }
            return Ok(());
        }
        self.publication(text);
        Ok(())
    }

    fn is_subscribed(&self) -> bool {
        self.last.is_some()
    }
}

/// An open, subscribed subscriber.
enum Sub {
    Ws(Box<Client>),
    Sse(http::SseSub),
    Poll(http::PollSub),
}

/// One subscriber: opens over the bench's transport, then counts publications until it
/// ends or its task is stopped. `poster` is its task's connection for SSE commands.
async fn subscriber(
    shared: &Shared,
    endpoint: &Endpoint,
    user: usize,
    tally: &Mutex<Tally>,
    poster: Option<&Poster>,
) {
    let mut counter = Counter::new(shared, user, tally);
    let opened = async {
        let _permit = shared.opening.acquire().await?;
        let token = shared
            .auth
            .token(&format!("bench-sub-{user}"), &shared.channel)?;
        let opening = async {
            match (shared.transport, poster) {
                (Transport::Ws, _) => {
                    let channel = Some(shared.channel.as_str());
                    let (ws, offset) =
                        open_ws_with(endpoint, &token, channel, None, shared.deflate).await?;
                    counter.subscribed(offset);
                    Ok(Sub::Ws(Box::new(ws)))
                }
                (Transport::Sse, Some(poster)) => {
                    let channel = &shared.channel;
                    http::open_sse(endpoint, channel, &token, poster, &mut counter)
                        .await
                        .map(Sub::Sse)
                }
                (Transport::Sse, None) => bail!("an SSE subscriber without a command connection"),
                (Transport::Longpoll, _) => {
                    http::open_poll(endpoint, &shared.channel, &token, &mut counter)
                        .await
                        .map(Sub::Poll)
                }
            }
        };
        tokio::time::timeout(OPEN_TIMEOUT, opening)
            .await
            .map_err(|_| anyhow!("timed out opening a connection"))?
    }
    .await;
    if let Some(poster) = poster {
        poster.opened().await;
    }
    let sub = match opened {
        Ok(sub) => sub,
        Err(err) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            lock(&shared.first_error).get_or_insert_with(|| format!("{err:#}"));
            return;
        }
    };
    let why = match sub {
        Sub::Ws(ws) => read_ws(*ws, &mut counter).await,
        Sub::Sse(sse) => sse.run(&mut counter).await,
        Sub::Poll(poll) => poll.run(&mut counter).await,
    };
    counter.end(why);
}

/// Counts what a WebSocket subscriber receives; returns why it ended.
async fn read_ws(mut ws: Client, counter: &mut Counter<'_>) -> String {
    loop {
        match ws.recv().await {
            Ok(Some(Message::Text(text))) => counter.publication(text.as_bytes()),
            Ok(Some(Message::Close(frame))) => {
                break format!("closed by the server: {}", close_reason(&frame));
            }
            Ok(Some(_)) => {}
            Ok(None) => break "the connection closed".to_owned(),
            Err(err) => break format!("connection lost: {err}"),
        }
    }
}

/// Runs the futures until all are done: one task drives many connections. Only those
/// woken are polled (`FuturesUnordered`), not all of the task's on every wake-up: an HTTP
/// subscriber is woken twice per chunk (hyper's connection reads it, then hands it to the
/// body), so each wake-up polling all 64 doubled what hyper costs the load client.
async fn join_all<F: Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: FuturesUnordered<F> = futures.collect();
    while pending.next().await.is_some() {}
}

/// The subscriber connections, in tasks of `--conns-per-task`.
pub(crate) struct Subscribers {
    shared: Arc<Shared>,
    count: usize,
    tallies: Vec<Arc<Mutex<Tally>>>,
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Subscribers {
    pub(crate) fn spawn(shared: Arc<Shared>, count: usize, per_task: usize) -> Subscribers {
        let per_task = per_task.max(1);
        let stop = CancellationToken::new();
        let (mut tallies, mut tasks) = (Vec::new(), Vec::new());
        for (task, first) in (0..count).step_by(per_task).enumerate() {
            let users: Range<usize> = first..(first + per_task).min(count);
            let tally = Arc::new(Mutex::new(Tally::new()));
            let (shared, task_tally, stop) = (shared.clone(), tally.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let endpoint = &shared.nodes[task % shared.nodes.len()];
                let poster = (shared.transport == Transport::Sse).then(|| Poster::new(users.len()));
                let conns = users
                    .map(|user| subscriber(&shared, endpoint, user, &task_tally, poster.as_ref()));
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = join_all(conns) => {}
                }
            }));
            tallies.push(tally);
        }
        Subscribers {
            shared,
            count,
            tallies,
            tasks,
            stop,
        }
    }

    /// Waits until every connection is open and subscribed, printing progress on stderr.
    pub(crate) async fn wait_ready(&self) -> anyhow::Result<()> {
        let began = Instant::now();
        let mut next_progress = began + PROGRESS_EVERY;
        loop {
            let ready = self.shared.ready.load(Ordering::Relaxed);
            let failed = self.shared.failed.load(Ordering::Relaxed);
            if ready + failed >= self.count {
                if failed > 0 {
                    let first = lock(&self.shared.first_error).clone().unwrap_or_default();
                    bail!(
                        "{failed} of {} connections could not be opened; the first: {first}",
                        self.count
                    );
                }
                eprintln!(
                    "switchboard: {ready} connections subscribed to {} in {:.1} s",
                    self.shared.channel,
                    began.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if Instant::now() >= next_progress {
                eprintln!("switchboard: subscribed {ready}/{}", self.count);
                next_progress += PROGRESS_EVERY;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops reading, drops the connections, and returns what they counted.
    pub(crate) async fn stop(self) -> Tally {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let mut total = Tally::new();
        for tally in &self.tallies {
            total.merge(&lock(tally));
        }
        total
    }
}
