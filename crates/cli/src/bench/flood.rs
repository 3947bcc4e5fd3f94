//! `switchboard bench flood`: hostile load beside legitimate clients, to show that the
//! second still get in (issue 10, point 1 and 2).
//!
//! Attackers connect from their own loopback addresses (127.0.0.2 and up, `--sources`),
//! as clients on other hosts would, and do one of:
//! - `slots`: open HTTP sessions that never authenticate (`GET /sse` without a token,
//!   each stream held), over keep-alive connections, as fast as answers come;
//! - `bodies`: send the server API a 1 MB body without a key, and start `/poll` requests
//!   whose body never comes (each held until the server gives up on it).
//!
//! Meanwhile a legitimate client from 127.0.0.1 opens a WebSocket, sends `connect` with a
//! valid token and waits for the reply, `--legit-rate` times a second. The report is one
//! JSON line: what the attackers got (answers by status), what the legitimate clients got
//! (successes, failures, connect latency), and with `--server-pid` the server's RSS and
//! CPU over the run.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use switchboard_client::{Client, HttpConnection, Stream};
use switchboard_server::auth::{self, Claims};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::args::{BenchFloodArgs, FloodKind};
use crate::bench::connect::{Endpoint, Target, parse_url};
use crate::bench::measure::{self, SECS_PER_TICK};
use crate::bench::stats::Histogram;
use crate::client::{Need, server_secret};

/// Bounds a legitimate connect, and an attacker's wait for an answer: longer than the
/// server's default `limits.body_timeout` (10 s), which ends a held body.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// The body the `bodies` attack sends the server API without a key.
const BIG_BODY: usize = 1 << 20;

/// What the attackers saw, by answer.
#[derive(Debug, Default)]
struct Attack {
    /// HTTP status (or "error: …") → count.
    answers: BTreeMap<String, u64>,
}

/// What the legitimate client saw.
#[derive(Debug)]
struct Legit {
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    latency_us: Histogram,
}

pub(crate) async fn flood(args: BenchFloodArgs) -> anyhow::Result<()> {
    let endpoint = match parse_url(&args.url, args.ca.as_deref())? {
        Target::Ws(endpoint) => Arc::new(endpoint),
        Target::Tcp { .. } => bail!("bench flood needs a ws:// or wss:// URL"),
    };
    let server: SocketAddr = tokio::net::lookup_host(endpoint.addr.as_str())
        .await?
        .next()
        .with_context(|| format!("{} has no address", endpoint.addr))?;
    if !server.ip().is_loopback() {
        bail!("bench flood attacks only a server on a loopback address");
    }
    let secret = server_secret(&args.source, Need::TokenSecret, "the server's --data-dir")?;
    let pid = args.server_pid;
    let rss_before = pid.map(measure::rss_kib).transpose()?;
    let cpu_before = pid.map(measure::cpu_ticks).transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let mut attackers = Vec::new();
    for i in 0..args.attackers {
        let source = IpAddr::from([127, 0, 0, 2 + (i % args.sources.max(1)) as u8]);
        let (stop, endpoint) = (stop.clone(), endpoint.clone());
        let kind = args.kind;
        attackers.push(tokio::spawn(async move {
            let mut attack = Attack::default();
            while !stop.load(Ordering::Relaxed) {
                let result = match kind {
                    FloodKind::Slots => {
                        open_sessions(server, source, &endpoint, &stop, &mut attack).await
                    }
                    FloodKind::Bodies => bodies(server, source, &endpoint, &mut attack).await,
                };
                if let Err(err) = result {
                    *attack.answers.entry(format!("error: {err}")).or_default() += 1;
                    // A refused connection (the listen backlog is full): try again soon.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            attack
        }));
    }

    // The legitimate client, at a steady rate.
    let mut legit = Legit {
        ok: 0,
        failed: 0,
        first_failure: None,
        latency_us: Histogram::new(),
    };
    let mut rss_max = rss_before.unwrap_or(0);
    let interval = Duration::from_secs_f64(1.0 / args.legit_rate.max(0.1));
    let end = started + Duration::from_secs_f64(args.duration);
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    let mut n = 0u64;
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        n += 1;
        let token = auth::mint(
            &secret,
            &Claims {
                sub: format!("legit-{n}"),
                exp: auth::now_secs() + 3600,
                info: None,
                channels: vec![],
                roles: Vec::new(),
                publish: Vec::new(),
            },
        )?;
        let endpoint = endpoint.clone();
        attempts.spawn(async move {
            let begin = Instant::now();
            let result = legit_connect(&endpoint, &token).await;
            (result, begin.elapsed())
        });
        while let Some(done) = attempts.try_join_next() {
            record(&mut legit, done?);
        }
        if let Some(pid) = pid {
            rss_max = rss_max.max(measure::rss_kib(pid)?);
        }
    }
    while let Some(done) = attempts.join_next().await {
        record(&mut legit, done?);
    }
    stop.store(true, Ordering::Relaxed);
    let cpu_after = pid.map(measure::cpu_ticks).transpose()?;
    let rss_after = pid.map(measure::rss_kib).transpose()?;
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for attacker in attackers {
        // An attacker may be inside a held request; its tally so far is what counts.
        let attack = match tokio::time::timeout(ANSWER_TIMEOUT, attacker).await {
            Ok(attack) => attack?,
            Err(_) => continue,
        };
        for (answer, count) in attack.answers {
            *answers.entry(answer).or_default() += count;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_s = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some((b - a) as f64 * SECS_PER_TICK),
        _ => None,
    };
    let report = json!({
        "url": args.url, "kind": args.kind.name(), "attackers": args.attackers,
        "sources": args.sources, "duration_s": secs,
        "attack_answers": answers,
        "legit_attempts": legit.ok + legit.failed, "legit_ok": legit.ok,
        "legit_failed": legit.failed, "legit_first_failure": legit.first_failure,
        "legit_connect_p50_ms": legit.latency_us.quantile(0.5) as f64 / 1000.0,
        "legit_connect_p99_ms": legit.latency_us.quantile(0.99) as f64 / 1000.0,
        "legit_connect_max_ms": legit.latency_us.max as f64 / 1000.0,
        "server_rss_before_kib": rss_before, "server_rss_max_kib": pid.map(|_| rss_max),
        "server_rss_after_kib": rss_after,
        "server_cpu_busy": cpu_s.map(|c| c / secs),
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{report}");
    Ok(())
}

fn record(legit: &mut Legit, (result, took): (anyhow::Result<()>, Duration)) {
    match result {
        Ok(()) => {
            legit.ok += 1;
            legit
                .latency_us
                .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
        Err(err) => {
            legit.failed += 1;
            legit
                .first_failure
                .get_or_insert_with(|| format!("{err:#}"));
        }
    }
}

/// A WebSocket, `connect`, the reply: what a real page does first.
async fn legit_connect(endpoint: &Endpoint, token: &str) -> anyhow::Result<()> {
    let attempt = async {
        let stream = endpoint.connect(None).await?;
        let mut client = Client::handshake(stream, &endpoint.host, &endpoint.path, &[])
            .await
            .context("handshake")?;
        client
            .connect(Some(token))
            .await
            .context("connect refused")?;
        anyhow::Ok(())
    };
    tokio::time::timeout(ANSWER_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("no connect reply within {ANSWER_TIMEOUT:?}"))?
}

/// A connection from `source` (with a `wss://` URL, TLS after the handshake: an attacker
/// that cannot do one gets no further than the handshake's deadline).
async fn connect_from(
    server: SocketAddr,
    source: IpAddr,
    endpoint: &Endpoint,
) -> anyhow::Result<Stream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    endpoint.secure(socket.connect(server).await?).await
}

/// Reads the head of the HTTP answer to a request whose body the server may never get
/// whole (so no HTTP client would finish sending it): its status. httparse reads the head;
/// the rest of the connection is not needed.
async fn read_status(stream: &mut Stream) -> anyhow::Result<u16> {
    let mut buf = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        if answer
            .parse(&buf)
            .context("an invalid HTTP answer")?
            .is_complete()
        {
            return answer.code.context("no status");
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(ANSWER_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| anyhow!("no answer"))??;
        if n == 0 {
            bail!("closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `slots`: sessions that never authenticate, as many as the server gives, on keep-alive
/// connections: an event stream opened without a token is held (never read) until the
/// run ends, and the next one asked for on a new connection; a refusal's connection asks
/// again at once. (A `POST /poll` without `connect` opens no session: the server answers
/// 400 at once.)
async fn open_sessions(
    server: SocketAddr,
    source: IpAddr,
    endpoint: &Endpoint,
    stop: &AtomicBool,
    attack: &mut Attack,
) -> anyhow::Result<()> {
    let host = endpoint.host.as_str();
    let mut held = Vec::new();
    let mut conn =
        HttpConnection::open(connect_from(server, source, endpoint).await?, host).await?;
    while !stop.load(Ordering::Relaxed) {
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, conn.stream("GET", "/sse", &[], ""))
            .await
            .map_err(|_| anyhow!("no answer"))??;
        *attack.answers.entry(answer.status.to_string()).or_default() += 1;
        let next = if answer.status == 200 {
            held.push(answer);
            None
        } else {
            let (_, conn) = tokio::time::timeout(ANSWER_TIMEOUT, answer.finish())
                .await
                .map_err(|_| anyhow!("no answer"))??;
            Some(conn).filter(|conn| !conn.is_closed())
        };
        conn = match next {
            Some(conn) => conn,
            None => {
                HttpConnection::open(connect_from(server, source, endpoint).await?, host).await?
            }
        };
    }
    Ok(())
}

/// `bodies`: a keyless 1 MB body to the server API, then a `/poll` whose body never
/// comes (held until the server answers or closes).
async fn bodies(
    server: SocketAddr,
    source: IpAddr,
    endpoint: &Endpoint,
    attack: &mut Attack,
) -> anyhow::Result<()> {
    let host = endpoint.host.as_str();
    let mut stream = connect_from(server, source, endpoint).await?;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {BIG_BODY}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    // The body as fast as the server takes it; it may answer (and close) first.
    let body = vec![b' '; BIG_BODY];
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, stream.write_all(&body)).await;
    let status = read_status(&mut stream).await?;
    *attack.answers.entry(format!("api {status}")).or_default() += 1;

    let mut stream = connect_from(server, source, endpoint).await?;
    let head = format!(
        "POST /poll HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n["
    );
    stream.write_all(head.as_bytes()).await?;
    let answer = match read_status(&mut stream).await {
        Ok(status) => format!("poll {status}"),
        Err(err) => format!("poll {err}"),
    };
    *attack.answers.entry(answer).or_default() += 1;
    Ok(())
}
