//! The accept loop: HTTP/1.1 connections served by hyper with axum's router.
//!
//! Our own loop rather than `axum::serve`: a connection's I/O reaches an upgrade as
//! `TokioIo<WriteDeadline<TcpStream>>`, so the WebSocket transport can take the socket back
//! and split it to write pushes directly (see `outbox`). axum's server wraps it in a
//! private type. Every request carries its peer's address as `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

use super::write_deadline::WriteDeadline;
use crate::config::Limits;
use crate::metrics::Metrics;

/// The first wait after a failed `accept` (e.g. out of file descriptors); it doubles on
/// each failure in a row, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait after failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning about failed `accept`s per this interval; the others are counted
/// in it (and in the `accept_errors_total` metric).
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` resolves, then lets every HTTP connection
/// finish its request in flight and returns once they have. Upgraded (WebSocket)
/// connections have left hyper by then; the caller ends them.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    let (closing, closing_rx) = watch::channel(false);
    let connections = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF;
    let mut unreported = 0u64;
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF;
                    accepted
                }
                Err(err) => {
                    metrics.accept_errors.inc();
                    unreported += 1;
                    if last_warning.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
                        warn!(cause = %err, failures = unreported, retry_ms = backoff.as_millis() as u64,
                            "accept failed (out of file descriptors? see limits.max_connections)");
                        (unreported, last_warning) = (0, Some(Instant::now()));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut stop => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Replies and pushes are small writes that must leave at once: no Nagle delay.
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(cause = %err, "set_nodelay failed");
        }
        if limits.socket_send_buffer > 0 {
            if let Err(err) =
                socket2::SockRef::from(&tcp).set_send_buffer_size(limits.socket_send_buffer)
            {
                debug!(cause = %err, "SO_SNDBUF failed");
            }
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(request)
        });
        let io = TokioIo::new(WriteDeadline::new(
            tcp,
            limits.write_timeout,
            metrics.clone(),
        ));
        let mut closing = closing_rx.clone();
        let header_timeout = limits.header_timeout;
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            // The header timeout also bounds a kept-alive connection's idle time: hyper
            // starts it whenever it waits for a request head.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        debug!(cause = %err, "connection ended with an error");
                    }
                    return;
                }
                _ = closing.wait_for(|c| *c) => connection.as_mut().graceful_shutdown(),
            }
            if let Err(err) = connection.await {
                debug!(cause = %err, "connection ended with an error");
            }
        });
    }
    let _ = closing.send(true);
    connections.close();
    connections.wait().await;
}
