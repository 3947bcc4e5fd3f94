//! Peer servers for side-by-side benchmarks. **Bench-only**: nothing in Switchboard depends on this
//! crate, and it is never published.
//!
//! `switchboard bench` runs the same load against our own server and against each peer here, so the
//! numbers it reports are ratios against well-known baselines rather than absolute figures.
//!
//! Echo (`switchboard bench echo`, scripts/bench-echo):
//!
//! - [`serve_tungstenite`]: tokio-tungstenite, the WebSocket stack most Tokio users reach for.
//! - [`serve_fastws`]: fastwebsockets behind a hyper upgrade, the fast one (as in its README).
//! - [`serve_tcp`]: raw TCP echo with no WebSocket framing at all, the physical limit of the machine.
//!
//! Fan-out (`switchboard bench fanout`, scripts/bench-fanout): bare broadcast servers speaking the
//! part of the Switchboard protocol the load client uses (`connect`, `subscribe`, `publish`, with
//! offsets), without persistence or authentication. Both share one hub design (a bounded queue per
//! connection, a slow consumer closed with 4004; see `src/hub.rs` for why):
//!
//! - [`serve_fanout_fastws`]: the hub on fastwebsockets.
//! - [`serve_fanout_tungstenite`]: the hub on tokio-tungstenite.
//!
//! Floor (`bench-peer sink` + `bench-peer send-floor`): [`send_floor`] writes one frame to
//! each of N connections per round in a tight loop of non-blocking writes, nothing else: the
//! least any server on this core can spend handing one publication to N subscribers.
//!
//! Each peer is written the way a careful user of that library would write it, using only its public
//! API. All of them set `TCP_NODELAY` on accepted sockets, so no peer is penalised by Nagle's algorithm.
//!
//! # Layout
//! - `src/lib.rs`: the accept loop, the echo `serve_*` and their per-connection handlers.
//! - `src/hub.rs`: the fan-out peers' subscriber registry, queues and protocol subset.
//! - `src/fanout.rs`: the two `serve_fanout_*` and their per-connection reader and writer.
//! - `src/floor.rs`: the sink and the send loop of the floor measurement.
//! - `src/main.rs`: the `bench-peer` binary (clap, runtime, `listening on ADDR` line).
//! - `tests/echo.rs`: starts each echo peer on `127.0.0.1:0` and checks the echo with a real client.
//! - `tests/fanout.rs`: starts each fan-out peer and checks a publication reaches two subscribers.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use futures_util::{FutureExt, SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

mod fanout;
mod floor;
mod hub;

pub use fanout::{serve_fanout_fastws, serve_fanout_tungstenite};
pub use floor::{FloorReport, send_floor, serve_sink};

/// Read buffer of the raw TCP echo: large enough that one read drains a typical socket buffer burst.
const TCP_BUF_SIZE: usize = 64 * 1024;

/// How long to wait after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections forever, spawning `handle` for each one. Errors are logged at debug level only.
pub(crate) async fn accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if let Err(err) = stream.set_nodelay(true) {
                    debug!(cause = %err, "set_nodelay failed");
                }
                tokio::spawn(handle(stream));
            }
            Err(err) => {
                debug!(cause = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves a WebSocket echo on tokio-tungstenite until the task is dropped.
///
/// Text comes back as text and binary as binary; pings are answered and closes completed by
/// tungstenite itself. Writes are batched the way a well-tuned user would with the public
/// `Stream`/`Sink` API: after one `next().await`, every further message that is *already* ready
/// (decoded from the read buffer, or readable without waiting) is `feed`-ed into tungstenite's
/// write buffer, and a single `flush` is issued once `next()` would block. A lone message is
/// therefore flushed at once, while a pipelined burst leaves in one write.
pub async fn serve_tungstenite(listener: TcpListener) {
    accept_loop(listener, |stream| async move {
        if let Err(err) = echo_tungstenite(stream).await {
            debug!(cause = %err, "tungstenite connection ended");
        }
    })
    .await;
}

async fn echo_tungstenite(stream: TcpStream) -> Result<(), WsError> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(first) = ws.next().await {
        feed_echo(&mut ws, first?).await?;
        // `now_or_never` polls once: `None` means nothing more is ready, so it is time to flush.
        while let Some(ready) = ws.next().now_or_never() {
            match ready {
                Some(msg) => feed_echo(&mut ws, msg?).await?,
                // Closed: tungstenite already flushed its close reply inside `next()`.
                None => return Ok(()),
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

/// Queues the echo of a data message without flushing; control messages are tungstenite's job.
async fn feed_echo(ws: &mut WebSocketStream<TcpStream>, msg: Message) -> Result<(), WsError> {
    match msg {
        Message::Text(_) | Message::Binary(_) => ws.feed(msg).await,
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => Ok(()),
    }
}

/// Serves a WebSocket echo on fastwebsockets until the task is dropped.
///
/// This is fastwebsockets' own echo example: hyper HTTP/1.1 with upgrades, `upgrade::upgrade`,
/// then a [`FragmentCollector`] so fragmented messages come back whole, with `auto_pong` and
/// `auto_close` on (the defaults, set explicitly here). Like upstream, the connection runs in
/// `tokio::task::unconstrained`. fastwebsockets has no write buffer: each echoed frame is one
/// `write` (or `writev` above 1 KiB) straight to the socket, which is how the library is meant to be used.
pub async fn serve_fastws(listener: TcpListener) {
    serve_fastws_with(listener, echo_fastws).await;
}

/// Serves hyper HTTP/1.1 with upgrades, running `handle` on each upgraded connection.
pub(crate) async fn serve_fastws_with<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(upgrade::UpgradeFut) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), WebSocketError>> + Send + 'static,
{
    accept_loop(listener, move |stream| {
        let handle = handle.clone();
        async move {
            let service = service_fn(move |mut req| {
                let response = fastws_upgrade(&mut req, &handle);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = conn.await {
                debug!(cause = %err, "fastws http connection ended");
            }
        }
    })
    .await;
}

/// Answers the upgrade request with 101 and spawns `handle` on the upgraded connection (in
/// `unconstrained`, as upstream does); anything else gets a 400.
fn fastws_upgrade<F, Fut>(req: &mut Request<Incoming>, handle: &F) -> Response<Empty<Bytes>>
where
    F: Fn(upgrade::UpgradeFut) -> Fut,
    Fut: Future<Output = Result<(), WebSocketError>> + Send + 'static,
{
    match upgrade::upgrade(req) {
        Ok((response, fut)) => {
            let conn = handle(fut);
            tokio::spawn(async move {
                if let Err(err) = tokio::task::unconstrained(conn).await {
                    debug!(cause = %err, "fastws connection ended");
                }
            });
            response
        }
        Err(err) => {
            debug!(cause = %err, "fastws upgrade refused");
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response
        }
    }
}

async fn echo_fastws(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            OpCode::Continuation | OpCode::Ping | OpCode::Pong => {}
        }
    }
}

/// Serves a raw TCP echo until the task is dropped: read into a buffer, write back what was read.
///
/// There is no framing, masking or UTF-8 check, so this is the ceiling any WebSocket server on the
/// same machine and runtime can approach.
pub async fn serve_tcp(listener: TcpListener) {
    accept_loop(listener, |stream| async move {
        if let Err(err) = echo_tcp(stream).await {
            debug!(cause = %err, "tcp connection ended");
        }
    })
    .await;
}

async fn echo_tcp(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0; TCP_BUF_SIZE];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}
