//! The accept loop: HTTP/1.1 connections served by hyper with axum's router.
//!
//! Our own loop rather than `axum::serve`: a connection's I/O reaches an upgrade as
//! `TokioIo<TcpStream>`, so the WebSocket transport can split the socket and write
//! pushes to it directly (see `outbox`). axum's server wraps it in a private type.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

/// How long a client may take to send a request's head (slow-loris defence).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `stop` resolves, then lets every HTTP connection
/// finish its request in flight and returns once they have. Upgraded (WebSocket)
/// connections have left hyper by then; the caller ends them.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    send_buffer: usize,
    stop: impl Future<Output = ()>,
) {
    let (closing, closing_rx) = watch::channel(false);
    let connections = TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    warn!(cause = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Replies and pushes are small writes that must leave at once: no Nagle delay.
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(cause = %err, "set_nodelay failed");
        }
        if send_buffer > 0 {
            if let Err(err) = socket2::SockRef::from(&tcp).set_send_buffer_size(send_buffer) {
                debug!(cause = %err, "SO_SNDBUF failed");
            }
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            router.clone().call(request.map(Body::new))
        });
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
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
