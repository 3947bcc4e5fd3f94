//! `switchboard bench fanout` (and the subscriber machinery `bench idle` shares): a
//! load client for pub/sub.
//!
//! `fanout` opens N subscriber connections on one channel (at most `--connect-concurrency`
//! opening at once), then publisher connections that publish R publications per second for
//! S seconds without waiting for each ack (up to [`MAX_IN_FLIGHT`] in flight in all, and
//! at least [`MIN_WINDOW`] per publisher). Each
//! publication's `data` is `{"t":MICROS,"pad":"xxx…"}`, `t` counted from one `Instant`
//! taken when the bench starts, so a subscriber in the same process measures end-to-end
//! latency as now − t. After the window, deliveries have [`GRACE`] to arrive; then one
//! human line and one JSON line on stdout.
//!
//! The load client is often the bottleneck, so a subscriber does little per publication:
//! a byte search for `"offset":` and `"data":{"t":` instead of JSON parsing, and counts in
//! a log-linear histogram shared by the connections of one task (`--conns-per-task`), all
//! of them polled by that task.
//!
//! `--transport sse|longpoll` opens the subscribers over Server-Sent Events or long
//! polling instead (`bench_http`); publishers stay WebSocket, and the counting, latency
//! and report are the same, so the transports compare.
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
//!
//! `idle` opens N subscribed connections, prints `ready N`, and holds them (answering the
//! server's pings) until `--hold` passes or ctrl-c; with `--server-pid`, the server's RSS
//! before and after, and per connection, as one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use switchboard_server::auth::{self, Claims};
use switchboard_ws::tokio::{WebSocket, connect};
use switchboard_ws::{CloseFrame, Config, Message};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::bench_stats::{Histogram, find, parse_publication};

use crate::args::{BenchConnArgs, BenchFanoutArgs, Transport};
use crate::bench::{self, Target};
use crate::bench_http::{self, Poster};
use crate::client::{Need, server_secret};

type Ws = WebSocket<TcpStream>;

/// How long deliveries (and acks) may trail the publishing window.
const GRACE: Duration = Duration::from_secs(3);
/// Time to open one connection: TCP, handshake, connect and subscribe.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the minted tokens: longer than any hold.
const TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Publications awaiting their ack, all publishers together (unless [`MIN_WINDOW`] for
/// each asks for more).
const MAX_IN_FLIGHT: usize = 1024;
/// Publications one publisher may have awaiting their ack, whatever their number. A
/// throughput run needs the server saturated: with 1,000 publishers (each held under the
/// server's per-connection command rate) and 8 each, the server idled 5-10% of the time
/// waiting for the next publications while the last ones were committed.
const MIN_WINDOW: usize = 32;
/// Share of the server's per-connection command rate one publisher uses.
const PUBLISHER_SHARE: f64 = 0.8;
/// Receive buffer of a slow subscriber's socket (the kernel doubles it).
const SLOW_RECV_BUFFER: u32 = 4096;
/// How long a slow subscriber may stay silent, once its backlog is read, to count as open.
const SLOW_IDLE: Duration = Duration::from_millis(500);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

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
    let shared = Shared::new(&args.conn, &args.channel, args.subscribers)?;
    let subscribers =
        Subscribers::spawn(shared.clone(), args.subscribers, args.conn.conns_per_task);
    subscribers.wait_ready().await?;

    let mut slow = Vec::with_capacity(args.slow);
    for i in 0..args.slow {
        let token = shared
            .auth
            .token(&format!("bench-slow-{i}"), &args.channel)?;
        let endpoint = &shared.endpoint;
        let (ws, _) = open(
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
        let (ws, _) = open(&shared.endpoint, &token, None, None)
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
    let plan = Arc::new(Plan::new(&args, &shared, start, deadline, publishers)?);
    eprintln!(
        "switchboard: publishing {} publications at {}/s over {publishers} connection(s)",
        plan.total, args.rate
    );
    let publisher_tasks: Vec<JoinHandle<PubTally>> = publisher_conns
        .into_iter()
        .zip(0u64..)
        .map(|(ws, first)| tokio::spawn(publisher(ws, first, plan.clone())))
        .collect();

    let pid = args.conn.server_pid;
    tokio::time::sleep_until(start.into()).await;
    let cpu_start = pid.map(bench::cpu_ticks).transpose()?;
    tokio::time::sleep_until(end.into()).await;
    let cpu_end = pid.map(bench::cpu_ticks).transpose()?;
    let rss = pid.map(bench::rss_kib).transpose()?;

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

    let server_cpu_s = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 * bench::SECS_PER_TICK),
        _ => None,
    };
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

/// Microseconds in a duration, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn close_reason(frame: &Option<CloseFrame>) -> String {
    frame.as_ref().map_or_else(
        || "no status".to_owned(),
        |f| format!("{} {}", f.code.0, f.reason),
    )
}

/// How every connection gets its token.
enum Auth {
    /// The same given token for all.
    Token(String),
    /// Minted per connection from the server's token secret.
    Secret(String),
}

impl Auth {
    fn new(args: &BenchConnArgs) -> anyhow::Result<Auth> {
        Ok(match &args.token {
            Some(token) => Auth::Token(token.clone()),
            None => Auth::Secret(server_secret(&args.source, Need::TokenSecret, "--token")?),
        })
    }

    fn token(&self, user: &str, channel: &str) -> anyhow::Result<String> {
        match self {
            Auth::Token(token) => Ok(token.clone()),
            Auth::Secret(secret) => Ok(auth::mint(
                secret,
                &Claims {
                    sub: user.to_owned(),
                    exp: auth::now_secs() + TOKEN_TTL.as_secs(),
                    info: None,
                    // So that a private channel works too.
                    channels: vec![channel.to_owned()],
                },
            )?),
        }
    }
}

/// Where the WebSocket endpoint is (and the HTTP transports' endpoints, at the same host).
pub(crate) struct Endpoint {
    /// `host:port`, to connect to.
    pub(crate) addr: String,
    /// For the `Host` header.
    pub(crate) host: String,
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> anyhow::Result<Endpoint> {
        match bench::parse_url(url)? {
            Target::Ws { addr, host, path } => Ok(Endpoint { addr, host, path }),
            Target::Tcp { .. } => bail!("this bench needs a ws:// URL"),
        }
    }
}

/// Opens a connection and sends `connect`, then `subscribe` when a channel is given
/// (pipelined: commands are handled in order). Returns the subscribe reply's offset, the
/// channel's latest (0 without a channel). `recv_buffer` sets the socket's SO_RCVBUF.
async fn open(
    endpoint: &Endpoint,
    token: &str,
    channel: Option<&str>,
    recv_buffer: Option<u32>,
) -> anyhow::Result<(Ws, u64)> {
    let opening = async {
        let stream = match recv_buffer {
            None => TcpStream::connect(endpoint.addr.as_str()).await,
            Some(size) => {
                let addr = tokio::net::lookup_host(endpoint.addr.as_str())
                    .await?
                    .next()
                    .with_context(|| format!("{} has no address", endpoint.addr))?;
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.set_recv_buffer_size(size)?;
                socket.connect(addr).await
            }
        }
        .with_context(|| format!("cannot connect to {}", endpoint.addr))?;
        stream.set_nodelay(true)?;
        let (mut ws, _) = connect(
            stream,
            &endpoint.host,
            &endpoint.path,
            &[],
            &[],
            Config::default(),
        )
        .await
        .context("WebSocket handshake failed")?;
        let connect = json!({"id": 1, "cmd": "connect", "token": token});
        ws.feed(&Message::text(connect.to_string())).await?;
        if let Some(channel) = channel {
            let subscribe = json!({"id": 2, "cmd": "subscribe", "channel": channel});
            ws.feed(&Message::text(subscribe.to_string())).await?;
        }
        ws.flush().await?;
        reply(&mut ws, 1).await.context("connect failed")?;
        let offset = match channel {
            Some(channel) => reply(&mut ws, 2)
                .await
                .with_context(|| format!("subscribe to {channel} failed"))?["offset"]
                .as_u64()
                .context("a subscribe reply without offset")?,
            None => 0,
        };
        anyhow::Ok((ws, offset))
    };
    tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .map_err(|_| anyhow!("timed out opening a connection"))?
}

/// Waits for the reply to command `id`; its `result`, or its error as an error.
async fn reply(ws: &mut Ws, id: u64) -> anyhow::Result<serde_json::Value> {
    loop {
        match ws.recv().await? {
            Some(Message::Text(text)) => {
                let mut frame: serde_json::Value = serde_json::from_str(text.as_str())?;
                if frame.get("push").is_some() || frame["id"] != id {
                    continue;
                }
                if let Some(error) = frame.get("error") {
                    let message = error["message"].as_str().unwrap_or_default();
                    bail!("error {}: {message}", error["code"]);
                }
                return Ok(frame["result"].take());
            }
            Some(Message::Close(frame)) => {
                bail!("the server closed the connection: {}", close_reason(&frame))
            }
            Some(_) => {}
            None => bail!("the connection closed"),
        }
    }
}

/// What the subscribers of one task counted.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Bench publications received (duplicates excluded).
    delivered: u64,
    /// Of those, received before the publishing window ended.
    in_window: u64,
    /// Publications with an offset not above the last one seen.
    duplicates: u64,
    /// Offsets skipped (a publication the server failed to store also leaves one).
    gaps: u64,
    latency_us: Histogram,
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
    auth: Auth,
    /// The subscribers' transport.
    transport: Transport,
    pub(crate) channel: String,
    /// The clock of every `t`.
    base: Instant,
    /// Bounds the connections being opened at once.
    opening: Semaphore,
    ready: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// End of the publishing window in µs since `base` (u64::MAX until known).
    window_end_us: AtomicU64,
    /// The last offset each subscriber received (or its subscribe offset), by user
    /// number: what it lacks of the acknowledged publications is lost.
    lasts: Vec<AtomicU64>,
}

impl Shared {
    pub(crate) fn new(
        args: &BenchConnArgs,
        channel: &str,
        subscribers: usize,
    ) -> anyhow::Result<Arc<Shared>> {
        Ok(Arc::new(Shared {
            endpoint: Endpoint::parse(&args.url)?,
            auth: Auth::new(args)?,
            transport: args.transport,
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

    pub(crate) fn is_subscribed(&self) -> bool {
        self.last.is_some()
    }

    /// The subscribe reply said the channel is at `offset`: the subscriber is ready.
    fn subscribed(&mut self, offset: u64) {
        self.last = Some(offset);
        self.remember(offset);
        self.shared.ready.fetch_add(1, Ordering::Relaxed);
    }

    /// A message of the HTTP transports, which carry the replies to `connect` (id 1) and
    /// `subscribe` (id 2) on the same stream as the pushes: before the subscribe reply,
    /// a reply is parsed (an error reply fails the opening); after it, only publications
    /// count.
    pub(crate) fn message(&mut self, text: &[u8]) -> anyhow::Result<()> {
        if self.last.is_none() && text.starts_with(br#"{"id":"#) {
            let mut reply: serde_json::Value = serde_json::from_slice(text)
                .with_context(|| format!("a reply that is not JSON: {}", lossy(text)))?;
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

/// Text from the server, for a message.
pub(crate) fn lossy(text: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(text)
}

/// An open, subscribed subscriber.
enum Sub {
    Ws(Box<Ws>),
    Sse(bench_http::SseSub),
    Poll(bench_http::PollSub),
}

/// One subscriber: opens over the bench's transport, then counts publications until it
/// ends or its task is stopped. `poster` is its task's connection for SSE commands.
async fn subscriber(shared: &Shared, user: usize, tally: &Mutex<Tally>, poster: Option<&Poster>) {
    let mut counter = Counter::new(shared, user, tally);
    let opened = async {
        let _permit = shared.opening.acquire().await?;
        let token = shared
            .auth
            .token(&format!("bench-sub-{user}"), &shared.channel)?;
        let opening = async {
            match (shared.transport, poster) {
                (Transport::Ws, _) => {
                    let (ws, offset) =
                        open(&shared.endpoint, &token, Some(&shared.channel), None).await?;
                    counter.subscribed(offset);
                    Ok(Sub::Ws(Box::new(ws)))
                }
                (Transport::Sse, Some(poster)) => {
                    bench_http::open_sse(shared, &token, poster, &mut counter)
                        .await
                        .map(Sub::Sse)
                }
                (Transport::Sse, None) => bail!("an SSE subscriber without a command connection"),
                (Transport::Longpoll, _) => bench_http::open_poll(shared, &token, &mut counter)
                    .await
                    .map(Sub::Poll),
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
        Sub::Poll(poll) => poll.run(shared, &mut counter).await,
    };
    counter.end(why);
}

/// Counts what a WebSocket subscriber receives; returns why it ended.
async fn read_ws(mut ws: Ws, counter: &mut Counter<'_>) -> String {
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

/// Polls every future in turn until all are done: one task drives many connections.
async fn join_all<F: Future<Output = ()>>(futures: Vec<F>) {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
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
        for first in (0..count).step_by(per_task) {
            let users: Range<usize> = first..(first + per_task).min(count);
            let tally = Arc::new(Mutex::new(Tally::new()));
            let (shared, task_tally, stop) = (shared.clone(), tally.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let poster = (shared.transport == Transport::Sse).then(|| Poster::new(users.len()));
                let conns =
                    users.map(|user| subscriber(&shared, user, &task_tally, poster.as_ref()));
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = join_all(conns.collect()) => {}
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

/// What every publisher shares.
struct Plan {
    base: Instant,
    /// Publication k is due at `start + k / rate`.
    start: Instant,
    rate: f64,
    /// Publications in the window, all publishers together.
    total: u64,
    /// Publisher j sends publications j, j + publishers, j + 2 publishers…
    publishers: u64,
    /// When publishers stop waiting for acks.
    deadline: Instant,
    /// Publications in flight per publisher.
    cap: usize,
    /// The command up to the value of `t`, one per channel (publication k goes to
    /// channel k mod their number), and after it.
    prefixes: Vec<String>,
    suffix: String,
}

impl Plan {
    fn new(
        args: &BenchFanoutArgs,
        shared: &Shared,
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
            base: shared.base,
            start,
            rate: args.rate,
            total: (args.rate * args.duration).round() as u64,
            publishers: publishers as u64,
            deadline,
            cap: (MAX_IN_FLIGHT / publishers.max(1)).max(MIN_WINDOW),
            prefixes,
            suffix: format!(r#","pad":"{}"}}}}"#, "x".repeat(args.size)),
        })
    }

    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Publication k's command up to the value of `t`.
    fn prefix(&self, k: u64) -> &str {
        &self.prefixes[(k % self.prefixes.len() as u64) as usize]
    }
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
struct PubTally {
    sent: u64,
    acked: u64,
    /// The highest offset acknowledged.
    top: u64,
    errors: u64,
    first_error: Option<String>,
    /// Publishers whose connection ended early, and why.
    lost: Vec<String>,
}

impl PubTally {
    fn merge(&mut self, other: PubTally) {
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
async fn publisher(mut ws: Ws, first: u64, plan: Arc<Plan>) -> PubTally {
    let mut tally = PubTally::default();
    if let Err(err) = publish(&mut ws, first, &plan, &mut tally).await {
        tally.lost.push(format!("{err:#}"));
    }
    tally
}

async fn publish(ws: &mut Ws, first: u64, plan: &Plan, tally: &mut PubTally) -> anyhow::Result<()> {
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
                    bail!("{in_flight} publications still unacknowledged {} s after the window", GRACE.as_secs());
                }
                break;
            }
        }
    }
    Ok(())
}

/// How each slow subscriber ended: its close code, `eof`, or `open`.
async fn slow_closes(slow: Vec<Ws>) -> BTreeMap<String, u64> {
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
async fn slow_end(mut ws: Ws) -> String {
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

struct FanoutReport<'a> {
    args: &'a BenchFanoutArgs,
    publishers: usize,
    planned: u64,
    published: PubTally,
    expected: u64,
    /// Acknowledged publications that subscribers did not receive.
    lost: u64,
    received: Tally,
    slow_closes: BTreeMap<String, u64>,
    server_cpu_s: Option<f64>,
    server_rss_kib: Option<u64>,
}

impl FanoutReport<'_> {
    fn print(&self) {
        let (args, published, received) = (self.args, &self.published, &self.received);
        let lost = self.lost;
        let per_s = received.in_window as f64 / args.duration;
        let ms = |q: f64| received.latency_us.quantile(q) as f64 / 1000.0;
        let (p50, p99, max) = (ms(0.5), ms(0.99), received.latency_us.max as f64 / 1000.0);
        let slow_disconnected: u64 = self
            .slow_closes
            .iter()
            .filter(|(end, _)| end.as_str() != "open")
            .map(|(_, n)| n)
            .sum();
        if let Some(error) = &published.first_error {
            eprintln!("switchboard: first publish error: {error}");
        }
        for why in &published.lost {
            eprintln!("switchboard: {why}");
        }
        if let Some(why) = &received.first_end {
            eprintln!(
                "switchboard: {} subscribers ended early; the first: {why}",
                received.ended
            );
        }
        let mut human = format!(
            "{} {}: {} {} subscribers, {}/s for {} s ({} publishers, {} B pad): {} acked, {} errors; \
             delivered {} (acked x subscribers: {}), lost {lost}, duplicates {}; {per_s:.0} deliveries/s in the window; \
             latency p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
            args.conn.url,
            args.channel,
            args.subscribers,
            args.conn.transport.name(),
            args.rate,
            args.duration,
            self.publishers,
            args.size,
            published.acked,
            published.errors,
            received.delivered,
            self.expected,
            received.duplicates,
        );
        if args.slow > 0 {
            let _ = write!(
                human,
                "; slow disconnected {slow_disconnected}/{} {:?}",
                args.slow, self.slow_closes
            );
        }
        if let (Some(cpu), Some(rss)) = (self.server_cpu_s, self.server_rss_kib) {
            let _ = write!(
                human,
                "; server CPU {cpu:.2} s, RSS {:.1} MiB",
                rss as f64 / 1024.0
            );
        }
        let json = json!({
            "url": args.conn.url, "transport": args.conn.transport.name(),
            "channel": args.channel, "channels": args.channels.max(1),
            "subscribers": args.subscribers,
            "publishers": self.publishers, "rate": args.rate, "duration_s": args.duration,
            "size": args.size, "planned": self.planned, "published": published.sent,
            "acked": published.acked, "publish_errors": published.errors,
            "acked_per_s": (published.acked as f64 / args.duration).round(),
            "expected": self.expected, "delivered": received.delivered, "lost": lost,
            "duplicates": received.duplicates, "gaps": received.gaps,
            "delivered_per_s": per_s.round(),
            "p50_ms": p50, "p99_ms": p99, "max_ms": max,
            "subscribers_ended": received.ended,
            "slow": args.slow, "slow_disconnected": slow_disconnected,
            "slow_ends": self.slow_closes,
            "server_cpu_s": self.server_cpu_s, "server_rss_kib": self.server_rss_kib,
        });
        // A closed stdout (`| head`) is not an error worth a panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{human}\n{json}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_command_is_json_the_subscribers_can_read() {
        let args = BenchFanoutArgs {
            conn: BenchConnArgs {
                source: crate::args::ConfigSource {
                    config: None,
                    data_dir: None,
                },
                url: "ws://127.0.0.1:1/ws".into(),
                transport: Transport::Ws,
                token: Some("t".into()),
                server_pid: None,
                conns_per_task: 1,
                connect_concurrency: 1,
                threads: 1,
            },
            subscribers: 1,
            rate: 10.0,
            duration: 1.5,
            channel: "chat:bench".into(),
            channels: 1,
            size: 5,
            slow: 0,
            publishers: 0,
        };
        let shared = Shared::new(&args.conn, &args.channel, 0).unwrap();
        let now = Instant::now();
        let plan = Plan::new(&args, &shared, now, now, 2).unwrap();
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
    fn publishers_stay_under_the_command_rate() {
        assert_eq!(publishers_for(20.0, 100.0), 1);
        assert_eq!(publishers_for(80.0, 100.0), 1);
        assert_eq!(publishers_for(81.0, 100.0), 2);
        assert_eq!(publishers_for(200.0, 100.0), 3);
        assert_eq!(publishers_for(50_000.0, 100.0), 625);
        assert_eq!(publishers_for(1.0, 0.0), 1);
    }
}
