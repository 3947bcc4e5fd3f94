//! Server-Sent Events: `GET /sse` streams an HTTP session's messages, `POST /sse/send`
//! carries its commands.
//!
//! Each message is an event whose id is `<session>:<seq>`, so the browser's own
//! EventSource reconnect sends `Last-Event-ID` and resumes the session where it left off:
//! what followed is sent again, what preceded is acknowledged. A new session's stream
//! starts with a `session` event carrying its id; an ended session's stream ends with a
//! `close` event carrying the code and reason a WebSocket close frame would.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;
use crate::http::{check_origin, disabled, with_cors};
use crate::outbox::Disconnect;
use crate::state::AppState;
use crate::transport::http_session::{
    ToSession, close_json, error_response, not_found, open, read_commands,
};

/// The sending end of a stream's body: chunks of encoded events.
pub(crate) type StreamTx = mpsc::Sender<Bytes>;

/// Chunks waiting to be written to a stream's connection. The session writes everything
/// unwritten as one chunk whenever there is room, so a few are enough; a client that
/// stops reading leaves its messages unwritten, where the session's bound catches them.
const CHUNKS: usize = 4;

/// How long the browser waits before reconnecting a cut stream, in milliseconds.
const RETRY_MS: u32 = 1000;

/// The keep-alive comment, sent after `limits.ping_interval` without a write.
pub(crate) const PING: &[u8] = b": ping\n\n";

/// The start of a new session's stream: the reconnect delay and the `session` event.
pub(crate) fn opening(sid: &str) -> Bytes {
    Bytes::from(format!(
        "retry: {RETRY_MS}\nid: {sid}:0\nevent: session\ndata: {{\"session\":\"{sid}\"}}\n\n"
    ))
}

/// Appends one message as an event: `id: <sid>:<seq>` and its JSON as data.
pub(crate) fn message(out: &mut BytesMut, sid: &str, seq: u64, payload: &[u8]) {
    out.reserve(payload.len() + sid.len() + 32);
    out.put_slice(b"id: ");
    out.put_slice(sid.as_bytes());
    out.put_slice(format!(":{seq}\n").as_bytes());
    data(out, payload);
    out.put_u8(b'\n');
}

/// Appends the `close` event that ends a stream.
pub(crate) fn close(out: &mut BytesMut, reason: &Disconnect) {
    out.put_slice(b"event: close\n");
    data(out, close_json(reason).as_bytes());
    out.put_u8(b'\n');
}

/// Appends `data:` lines. Published data is passed through as sent, so a message may
/// hold line breaks (JSON whitespace, never inside a string); each line then gets its own
/// `data:` field, which the client joins with `\n` into the same JSON.
fn data(out: &mut BytesMut, payload: &[u8]) {
    if !payload.iter().any(|&b| b == b'\n' || b == b'\r') {
        out.put_slice(b"data: ");
        out.put_slice(payload);
        out.put_u8(b'\n');
        return;
    }
    let mut rest = payload;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            return;
        }
        // A CR LF pair is one line break.
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

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

/// Asks a live session to take a new stream resuming after `seq`; `None` if the session
/// is unknown or ended meanwhile.
async fn resume(state: &AppState, sid: &str, seq: u64) -> Option<mpsc::Receiver<Bytes>> {
    let session = state.http_sessions.get(sid)?;
    let (tx, rx) = mpsc::channel(CHUNKS);
    let _ = tx.try_send(Bytes::from(format!("retry: {RETRY_MS}\n\n")));
    let (attached, was_attached) = oneshot::channel();
    let request = ToSession::Stream {
        resume: seq,
        tx,
        attached,
    };
    session.send(request).await.ok()?;
    was_attached.await.ok()?;
    Some(rx)
}

/// `GET /sse`: resumes the session named by `Last-Event-ID`, or opens a new one.
pub(crate) async fn stream(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if !state.config.transports.sse {
        return disabled("SSE");
    }
    let cors = match check_origin(&state, request.headers()) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let resumed = match last_event_id(&request) {
        Some((sid, seq)) => resume(&state, &sid, seq).await,
        None => None,
    };
    let rx = match resumed {
        Some(rx) => rx,
        // Unknown or expired: a new session, whose `session` event tells the client
        // to subscribe again (recovering by offsets).
        None => {
            let (tx, rx) = mpsc::channel(CHUNKS);
            let peer = crate::listen::peer(request.extensions()).ip();
            let ip = crate::http::client_ip(&state.config, peer, request.headers());
            if let Err(refusal) = open(&state, Some(tx), ip) {
                return with_cors(
                    (StatusCode::SERVICE_UNAVAILABLE, refusal.message()).into_response(),
                    cors,
                );
            }
            rx
        }
    };
    let mut rx = rx;
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, Infallible>))
    }));
    let mut response = Response::new(body);
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

/// `POST /sse/send?session=<sid>`: hands the body's commands to the session; 202 once
/// they were handled (their replies are on the stream).
pub(crate) async fn send(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if !state.config.transports.sse {
        return disabled("SSE");
    }
    let cors = match check_origin(&state, request.headers()) {
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
        let commands = read_commands(&state, &parts.headers, body)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = state.http_sessions.get(&sid).ok_or_else(not_found)?;
        let (done, handled) = oneshot::channel();
        let request = ToSession::Commands { commands, done };
        session.send(request).await.map_err(|_| not_found())?;
        handled.await.map_err(|_| not_found())?;
        Ok(StatusCode::ACCEPTED.into_response())
    };
    let response = answer.await.unwrap_or_else(|refused| refused);
    with_cors(response, cors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::close as codes;

    fn event(sid: &str, seq: u64, payload: &str) -> String {
        let mut out = BytesMut::new();
        message(&mut out, sid, seq, payload.as_bytes());
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    #[test]
    fn events() {
        assert_eq!(
            &opening("ab")[..],
            b"retry: 1000\nid: ab:0\nevent: session\ndata: {\"session\":\"ab\"}\n\n"
        );
        assert_eq!(
            event("ab", 7, r#"{"a":1}"#),
            "id: ab:7\ndata: {\"a\":1}\n\n"
        );
        // Line breaks in published data: one data line each, CR LF counted once.
        assert_eq!(
            event("ab", 8, "{\"a\":\r\n1,\n\"b\":\r2}"),
            "id: ab:8\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n"
        );
        assert_eq!(event("ab", 9, "1\n"), "id: ab:9\ndata: 1\ndata: \n\n");
        let mut out = BytesMut::new();
        close(
            &mut out,
            &Disconnect {
                code: codes::DISCONNECTED,
                reason: "bye \"now\"".into(),
            },
        );
        assert_eq!(
            &out[..],
            b"event: close\ndata: {\"code\":4003,\"reason\":\"bye \\\"now\\\"\"}\n\n"
        );
    }
}
