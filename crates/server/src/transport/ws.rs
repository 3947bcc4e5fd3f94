//! The WebSocket transport: `GET /ws` (the upgrade, checked by the protocol crate's rules
//! and the Origin check), then one task per connection, reading commands and writing what
//! the hub queued, with the server's pings, timeouts and disconnects.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use switchboard_ws::deflate::{self, Params};
use switchboard_ws::tokio::WebSocket;
use switchboard_ws::{Message, Role};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::{Shared, disabled, origin};
use crate::admission::PendingSlot;
use crate::error::{ClientError, close};
use crate::net::takeover::Detachable;
use crate::net::write_deadline::WriteDeadline;
use crate::net::{client_ip, plain};
use crate::outbox::{ClientHandle, Disconnect, Outbox, outbox};
use crate::protocol::reply_err;
use crate::session::Session;

/// `GET /ws`: checks the upgrade with the protocol crate's rules (§4.2.1), the Origin and
/// the client's pending slot, answers 101, and hands the upgraded connection to [`serve`].
pub(crate) async fn upgrade(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    let config = &shared.session.config;
    if !config.transports.websocket {
        return disabled("WebSocket");
    }
    let headers = request.headers();
    let upgrade = switchboard_ws::handshake::server::check(
        request.method().as_str(),
        request.version() == Version::HTTP_11,
        headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    );
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(err) => {
            let mut response = plain(
                StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST),
                format!("{err}\n"),
            );
            if err.status() == 426 {
                response
                    .headers_mut()
                    .insert("sec-websocket-version", HeaderValue::from_static("13"));
            }
            return response;
        }
    };
    // A WebSocket response carries no CORS headers: the browser checks nothing there.
    if let Err(refused) = origin::check(&shared, upgrade.origin.as_deref(), &upgrade.host) {
        return refused.into_response();
    }
    let ip = client_ip(
        request.extensions(),
        request.headers(),
        &config.trusted_proxies,
    );
    let slot = match shared.session.admission.pending(ip) {
        Ok(slot) => slot,
        Err(refusal) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, refusal.message().into());
        }
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the connection cannot be upgraded\n".into(),
        );
    };
    // permessage-deflate: the first acceptable offer, answered as `[deflate]` says.
    let compression = deflate::negotiate(&upgrade.extensions, &config.deflate.to_ws());
    let extensions = compression
        .as_ref()
        .and_then(|params| HeaderValue::from_str(&params.to_header()).ok());
    let tracker = shared.tracker.clone();
    tracker.spawn(serve(shared, on_upgrade, slot, ip, compression));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&upgrade.accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(extensions) = extensions {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
    }
    response
}

/// Serves one upgraded connection of a client at `peer`, holding `slot`, until it closes;
/// `compression` is the permessage-deflate the handshake agreed on.
async fn serve(
    shared: Arc<Shared>,
    on_upgrade: OnUpgrade,
    slot: PendingSlot,
    peer: IpAddr,
    compression: Option<Params>,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            debug!(cause = %err, "upgrade failed");
            return;
        }
    };
    let config = &shared.session.config;
    let ws_config = switchboard_ws::Config {
        max_message_size: config.limits.max_message_size,
        max_frame_size: config.limits.max_message_size,
        deflate: config.deflate.to_ws(),
        ..switchboard_ws::Config::default()
    };
    let socket = Socket {
        config: ws_config,
        compression,
    };
    let (handle, outbox) = new_outbox(&shared);
    let client = Client { slot, peer };
    // Over plain TCP and over TLS, pushes are written straight to the socket (see
    // `outbox`); the WebSocket adapter reads the read half (through the TLS session) and
    // writes its control frames through the outbox's shared writer. The outbox bound, not
    // the write deadline, cuts off a WebSocket client that stops reading. A connection
    // that compresses with a context of its own cannot be written to from outside.
    let upgraded = if socket.keeps_context() {
        upgraded
    } else {
        match upgraded.downcast::<TokioIo<Detachable<WriteDeadline<TcpStream>>>>() {
            Ok(parts) => {
                let Some(io) = parts.io.into_inner().into_inner() else {
                    return;
                };
                let (read, write) = io.into_inner().into_split();
                let writer = outbox.attach(write);
                // Copied and dropped now: it can hold hyper's whole read buffer.
                let leftover = BytesMut::from(&parts.read_buf[..]);
                drop(parts.read_buf);
                let ws = socket.open(tokio::io::join(read, writer), leftover, &outbox);
                return run_with(shared, ws, client, handle, outbox).await;
            }
            Err(upgraded) => upgraded,
        }
    };
    let upgraded = if socket.keeps_context() {
        upgraded
    } else {
        match upgraded.downcast::<TokioIo<Detachable<WriteDeadline<TlsStream<TcpStream>>>>>() {
            Ok(parts) => {
                let Some(io) = parts.io.into_inner().into_inner() else {
                    return;
                };
                let (tcp, session) = io.into_inner().into_inner();
                let (read, write) = tcp.into_split();
                let (reader, writer) = outbox.attach_tls(read, write, session);
                // Plaintext hyper read past the request (already decrypted).
                let leftover = BytesMut::from(&parts.read_buf[..]);
                drop(parts.read_buf);
                let ws = socket.open(tokio::io::join(reader, writer), leftover, &outbox);
                // Boxed: inline, its future would add its size to every plain connection's
                // task.
                return Box::pin(run_with(shared, ws, client, handle, outbox)).await;
            }
            Err(upgraded) => upgraded,
        }
    };
    let ws = socket.open(TokioIo::new(upgraded), BytesMut::new(), &outbox);
    // Boxed: not the usual path, and inline its future would add its size to every
    // connection's task.
    Box::pin(run_with(shared, ws, client, handle, outbox)).await;
}

/// How to open the WebSocket over an upgraded connection.
struct Socket {
    config: switchboard_ws::Config,
    /// The permessage-deflate parameters agreed on, if any.
    compression: Option<Params>,
}

impl Socket {
    /// Whether the server compresses with a context of its own on this connection
    /// (`deflate.server_context_takeover`, and the client did not refuse it): each message
    /// is then compressed by the connection's task, never by a publisher.
    fn keeps_context(&self) -> bool {
        self.compression
            .as_ref()
            .is_some_and(|p| !p.server_no_context_takeover && self.config.deflate.context_takeover)
    }

    /// The WebSocket over `stream`, with its compression, which the outbox's pushes use too.
    fn open<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        stream: S,
        leftover: BytesMut,
        outbox: &Outbox,
    ) -> WebSocket<S> {
        let mut ws = WebSocket::from_raw(stream, Role::Server, self.config, leftover);
        if let Some(params) = &self.compression {
            ws.set_deflate(params);
        }
        if let Some(shared) = ws.shared_compression() {
            outbox.set_compression(shared);
        }
        ws
    }
}

fn new_outbox(shared: &Shared) -> (ClientHandle, Outbox) {
    let (limits, hub) = (&shared.session.config.limits, &shared.session.hub);
    outbox(
        hub.next_client_id(),
        limits.outbox_messages,
        limits.outbox_bytes,
        hub.metrics().clone(),
    )
}

/// Who is connecting: the slot they hold and their address.
#[derive(Debug)]
struct Client {
    slot: PendingSlot,
    peer: IpAddr,
}

/// Runs a session over a WebSocket stream until it closes.
async fn run_with<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut ws: WebSocket<S>,
    client: Client,
    handle: ClientHandle,
    mut outbox: Outbox,
) {
    // Made here, not by the caller: a session held across the caller's await too would
    // take its room twice in every connection's task.
    let ctx = shared.session.clone();
    let mut session = Session::new(ctx.clone(), handle.clone(), client.slot, client.peer);
    let metrics = ctx.hub.metrics().clone();
    metrics.connections.add(1);
    metrics.websocket_connections.add(1);
    metrics.connections_total.inc();
    ctx.hub.register(&handle);
    if shared.shutdown.is_cancelled() {
        handle.disconnect(close::SHUTDOWN, "server shutting down");
    }
    let id = handle.id;
    let ending = drive(&ctx, &mut ws, &mut session, &mut outbox).await;
    // Leave channels (announcing leaves) before the close handshake's wait.
    drop(session);
    // Nothing may follow the close frame.
    outbox.close();
    if let Some(end) = ending {
        debug!(code = end.code.0, reason = %end.reason, "closing connection");
        let _ = ws.close_with(end.code, &end.reason).await;
    }
    ctx.hub.unregister(id);
    metrics.connections.add(-1);
    metrics.websocket_connections.add(-1);
}

/// When the session's token expires (or is checked again, far in the future).
fn expiry(session: &Session) -> Instant {
    Instant::now() + session.expires_in()
}

/// The connection loop. Returns how to close, or `None` when the connection already ended.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &crate::session::Context,
    ws: &mut WebSocket<S>,
    session: &mut Session,
    outbox: &mut Outbox,
) -> Option<Disconnect> {
    let limits = &ctx.config.limits;
    // Created once, not per message. Shutdown arrives through it too (the hub tells
    // every open connection), so no shared token is polled on every wake.
    let killed = outbox.killed();
    tokio::pin!(killed);
    // One timer for every deadline: connect, ping, pong and token expiry.
    let connect_deadline = Instant::now() + limits.connect_timeout;
    let timer = tokio::time::sleep_until(connect_deadline);
    tokio::pin!(timer);
    // Whether any frame arrived since the last check, and whether a ping awaits its pong.
    let mut active = false;
    let mut ping_sent = false;
    let mut next_check = connect_deadline;
    loop {
        tokio::select! {
            biased;
            _ = &mut killed => return Some(outbox.reason()),
            message = outbox.recv() => {
                let message = message?;
                // Batch whatever else is queued into the same write.
                let write = async {
                    ws.feed_prepared(&message).await?;
                    while let Some(more) = outbox.try_recv() {
                        ws.feed_prepared(&more).await?;
                    }
                    ws.flush().await
                };
                // A client that stops reading blocks this write; its outbox then fills and
                // the hub disconnects it, which must interrupt the write.
                tokio::select! {
                    biased;
                    _ = &mut killed => return Some(outbox.reason()),
                    written = write => if written.is_err() { return None },
                }
            }
            received = ws.recv() => {
                active = true;
                match received {
                    Ok(Some(Message::Text(text))) => {
                        let was_connected = session.is_connected();
                        let handled = session.handle(&text).await;
                        if !was_connected && session.is_connected() {
                            // From now on the timer watches pings and the token's expiry.
                            next_check = Instant::now() + limits.ping_interval;
                            timer.as_mut().reset(next_check.min(expiry(session)));
                        }
                        if let Err(end) = handled {
                            // Let the error reply go out before the close frame.
                            while let Some(m) = outbox.try_recv() {
                                let _ = ws.feed_prepared(&m).await;
                            }
                            return Some(end);
                        }
                    }
                    Ok(Some(Message::Binary(_))) => {
                        ctx.hub.metrics().client_errors.inc();
                        let err = ClientError::bad_request("commands are JSON text frames, not binary");
                        let frame = switchboard_ws::PreparedMessage::text(&reply_err(None, &err));
                        if ws.feed_prepared(&frame).await.is_err() {
                            return None;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                }
            }
            _ = &mut timer => {
                let now = Instant::now();
                if !session.is_connected() {
                    return Some(Disconnect {
                        code: close::CONNECT_TIMEOUT,
                        reason: "connect was not sent in time".into(),
                    });
                }
                if session.token_expired() {
                    return Some(Disconnect {
                        code: close::TOKEN_EXPIRED,
                        reason: "the token expired; refresh it".into(),
                    });
                }
                if now >= next_check {
                    if ping_sent && !active {
                        return Some(Disconnect { code: close::NO_PONG, reason: "no pong".into() });
                    }
                    if active {
                        ping_sent = false;
                        next_check = now + limits.ping_interval;
                    } else {
                        // Buffered only: `recv` sends it, where a disconnect can interrupt
                        // a client that stopped reading.
                        if ws.feed(&Message::Ping(bytes::Bytes::new())).await.is_err() {
                            return None;
                        }
                        ping_sent = true;
                        next_check = now + limits.pong_timeout;
                    }
                    active = false;
                }
                // Wake for the next check or the token's expiry, whichever comes first.
                timer.as_mut().reset(next_check.min(expiry(session)));
            }
        }
    }
}
