//! The accept loop: HTTP/1.1 connections served by hyper with axum's router.
//!
//! Our own loop rather than `axum::serve`: a connection's I/O reaches an upgrade as
//! `TokioIo<Detachable<WriteDeadline<TcpStream>>>`, so the WebSocket transport can take
//! the socket back and split it to write pushes directly (see `outbox`). axum's server
//! wraps it in a private type. Every request carries its peer's address as
//! `ConnectInfo<SocketAddr>`, and a [`Takeover`] of its connection (see `takeover`: an
//! SSE stream leaves hyper after its head). With TLS (see `tls`), the handshake comes
//! first and the I/O is `TokioIo<Detachable<WriteDeadline<TlsStream<TcpStream>>>>`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::routing::future::RouteFuture;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

use super::takeover::{Detachable, Takeover};
use super::tls::{OverTls, Tls};
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
    tls: Option<Tls>,
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
        let takeover = Takeover::new();
        let service = ConnService {
            router: router.clone(),
            peer,
            hsts: tls.as_ref().and_then(|tls| tls.hsts().cloned()),
            over_tls: tls.is_some(),
            takeover: takeover.clone(),
        };
        let closing = closing_rx.clone();
        let (header_timeout, write_timeout) = (limits.header_timeout, limits.write_timeout);
        match &tls {
            None => {
                let io = WriteDeadline::new(tcp, write_timeout, metrics.clone());
                let io = Detachable::new(io, &takeover);
                connections.spawn(serve_http(
                    TokioIo::new(io),
                    service,
                    header_timeout,
                    closing,
                ));
            }
            Some(tls) => {
                let acceptor = tls.acceptor().clone();
                let metrics = metrics.clone();
                connections.spawn(async move {
                    // The handshake shares the head's deadline: a client that connects and
                    // says nothing holds a task no longer than one that sends no request.
                    let mut stop = closing.clone();
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(header_timeout, acceptor.accept(tcp)) => done,
                        _ = stop.wait_for(|c| *c) => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            // Around the TLS stream, as around a socket: the WebSocket
                            // transport takes it back out after an upgrade.
                            let io = WriteDeadline::new(stream, write_timeout, metrics);
                            let io = Detachable::new(io, &takeover);
                            serve_http(TokioIo::new(io), service, header_timeout, closing).await;
                        }
                        // Counted, but logged at debug only: anyone can make a
                        // handshake fail, and the log must not be theirs to fill.
                        Ok(Err(err)) => {
                            metrics.tls_handshake_failures.inc();
                            debug!(cause = %err, %peer, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.tls_handshake_failures.inc();
                            debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
    let _ = closing.send(true);
    connections.close();
    connections.wait().await;
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends, or, once `closing`
/// turns true, until its request in flight is answered.
async fn serve_http<I>(
    io: I,
    service: ConnService,
    header_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
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
}

/// The router as hyper calls it for one connection: each request gets the peer's address
/// (and, over TLS, the [`OverTls`] marker) in its extensions; over TLS, each response gets
/// the HSTS header when configured.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    /// `Strict-Transport-Security` for every response (TLS connections only).
    hsts: Option<HeaderValue>,
    over_tls: bool,
    /// The connection's way out of hyper, for each request.
    takeover: Takeover,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = Infallible;
    /// The router's own future when there is no header to add (plain HTTP pays nothing
    /// more than before), a boxed one that adds HSTS otherwise.
    type Future = Either<
        RouteFuture<Infallible>,
        Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>,
    >;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.takeover.clone());
        if self.over_tls {
            request.extensions_mut().insert(OverTls);
        }
        let response = self.router.clone().call(request);
        let Some(hsts) = self.hsts.clone() else {
            return Either::Left(response);
        };
        Either::Right(Box::pin(async move {
            let mut response = response.await?;
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
            Ok(response)
        }))
    }
}
