//! Server-Sent Events: `GET /sse` streams an HTTP session's messages, `POST /sse/send`
//! carries its commands.
//!
//! Each message is an event whose id is `<session>:<seq>`, so the browser's own
//! EventSource reconnect sends `Last-Event-ID` and resumes the session where it left off:
//! what followed is sent again, what preceded is acknowledged. A new session's stream
//! starts with a `session` event carrying its id; an ended session's stream ends with a
//! `close` event carrying the code and reason a WebSocket close frame would. The format
//! itself is in `event`.

pub(crate) mod event;
mod writer;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::ClientError;
use crate::net::takeover::Takeover;
use crate::net::{client_ip, error_response};
use crate::transport::http_session::{
    StreamBody, ToSession, not_found, open, read_commands, route,
};
use crate::transport::origin::{self, with_cors};
use crate::transport::{Shared, disabled};
use event::RETRY_MS;
/// `GET /sse` query.
#[derive(Debug, Deserialize)]
struct StreamQuery {
    /// The same as the `Last-Event-ID` header, for clients that cannot set it.
    last_event_id: Option<String>,
}

/// `POST /sse/send` query.
#[derive(Debug, Deserialize)]
struct SendQuery {
    session: Option<String>,
}

/// `<session>:<seq>` from `Last-Event-ID` (or `last_event_id` in the query).
fn last_event_id(request: &Request) -> Option<(String, u64)> {
    let from_header = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let id = from_header.or_else(|| {
        Query::<StreamQuery>::try_from_uri(request.uri())
            .ok()
            .and_then(|q| q.0.last_event_id)
    })?;
    let (sid, seq) = id.trim().rsplit_once(':')?;
    Some((sid.to_owned(), seq.parse().ok()?))
}

/// Asks a live session to take a new stream resuming after `seq`: its body, or `None`
/// if the session is unknown or ended meanwhile.
async fn resume(shared: &Arc<Shared>, sid: &str, seq: u64) -> Option<StreamBody> {
    let session = route(shared, sid)?;
    let (attached, was_attached) = oneshot::channel();
    let request = ToSession::Stream {
        resume: seq,
        attached,
    };
    session.send(request).await.ok()?;
    was_attached.await.ok()
}

/// `GET /sse`: resumes the session named by `Last-Event-ID`, or opens a new one.
pub(crate) async fn stream(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if !shared.session.config.transports.sse {
        return disabled("SSE");
    }
    let cors = match origin::check_headers(&shared, request.headers()) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let resumed = match last_event_id(&request) {
        Some((sid, seq)) => resume(&shared, &sid, seq).await,
        None => None,
    };
    let (first, body) = match resumed {
        // The reconnect delay goes first again: a proxy may have cut the first stream.
        Some(body) => (Some(Bytes::from(format!("retry: {RETRY_MS}\n\n"))), body),
        // Unknown or expired: a new session, whose `session` event tells the client
        // to subscribe again (recovering by offsets).
        None => {
            let ip = client_ip(
                request.extensions(),
                request.headers(),
                &shared.session.config.trusted_proxies,
            );
            match open(&shared, true, ip) {
                Ok((_, _, Some(body))) => (None, StreamBody::Session(body)),
                Ok(_) => return with_cors(not_found(), cors),
                Err(refusal) => {
                    return with_cors(
                        (StatusCode::SERVICE_UNAVAILABLE, refusal.message()).into_response(),
                        cors,
                    );
                }
            }
        }
    };
    let mut response = Response::new(respond(&shared, &request, first, body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to; events must leave at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_cors(response, cors)
}

/// The response body that writes `first`, then `body`: on HTTP/1.1 through our accept
/// loop, the connection is taken out of hyper after the head and a task of ours writes
/// the stream (see `writer`); otherwise (HTTP/1.0, a HEAD request) hyper writes it.
fn respond(shared: &Shared, request: &Request, first: Option<Bytes>, body: StreamBody) -> Body {
    let takeover = request.extensions().get::<Takeover>();
    match takeover {
        Some(takeover)
            if request.method() == Method::GET && request.version() == Version::HTTP_11 =>
        {
            let (response, taken) = takeover.clone().body();
            shared.tracker.spawn(async move {
                // Fails if hyper never wrote the head (the client went away first).
                if let Ok(io) = taken.await {
                    writer::write(io, first, body).await;
                }
            });
            Body::new(response)
        }
        _ => {
            let first = futures_util::stream::iter(first.map(Ok::<_, Infallible>));
            Body::from_stream(first.chain(body))
        }
    }
}

/// `POST /sse/send?session=<sid>`: hands the body's commands to the session; 202 once
/// they were handled (their replies are on the stream).
pub(crate) async fn send(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if !shared.session.config.transports.sse {
        return disabled("SSE");
    }
    let cors = match origin::check_headers(&shared, request.headers()) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let answer = async {
        let query = Query::<SendQuery>::try_from_uri(request.uri()).map_err(|err| {
            error_response(
                StatusCode::BAD_REQUEST,
                &ClientError::bad_request(format!("bad query: {err}")),
            )
        })?;
        let Some(sid) = query.0.session else {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                &ClientError::bad_request("the session query parameter is required"),
            ));
        };
        let (parts, body) = request.into_parts();
        let commands = read_commands(&shared, &parts.headers, body)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = route(&shared, &sid).ok_or_else(not_found)?;
        let (done, handled) = oneshot::channel();
        let request = ToSession::Commands { commands, done };
        session.send(request).await.map_err(|_| not_found())?;
        handled.await.map_err(|_| not_found())?;
        Ok(StatusCode::ACCEPTED.into_response())
    };
    let response = answer.await.unwrap_or_else(|refused| refused);
    with_cors(response, cors)
}
