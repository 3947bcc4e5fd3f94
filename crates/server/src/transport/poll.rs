//! Long and short polling: `/poll` carries an HTTP session's commands in its body and
//! answers with its messages.
//!
//! `POST /poll?session=<sid>&ack=<seq>&wait=<0|1>` (or `GET` without a body) acknowledges
//! every message up to `ack`, handles the commands, and answers
//! `{"session","seq","messages":[…]}` with every message not yet acknowledged. With
//! `wait=1` (the default) and nothing to deliver, the request is held until something
//! arrives or `limits.poll_timeout` passes (long polling); `wait=0` answers at once (short
//! polling). Without `session`, a new session is opened.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::ClientError;
use crate::http::{check_origin, disabled, with_cors};
use crate::state::AppState;
use crate::transport::http_session::{ToSession, error_response, not_found, open, read_commands};

/// `/poll` query.
#[derive(Debug, Deserialize)]
struct PollQuery {
    /// The session; none opens a new one.
    session: Option<String>,
    /// Every message up to this seq was received.
    #[serde(default)]
    ack: u64,
    /// 1 (default): hold the request while there is nothing to deliver; 0: answer at once.
    wait: Option<u8>,
}

/// `GET /poll` and `POST /poll`.
pub(crate) async fn poll(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if !state.config.transports.polling {
        return disabled("polling");
    }
    let cors = match check_origin(&state, request.headers()) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let answer = async {
        let bad = |message: String| {
            error_response(StatusCode::BAD_REQUEST, &ClientError::bad_request(message))
        };
        let query = Query::<PollQuery>::try_from_uri(request.uri())
            .map_err(|err| bad(format!("bad query: {err}")))?
            .0;
        let wait = match query.wait {
            None | Some(1) => true,
            Some(0) => false,
            Some(other) => return Err(bad(format!("wait is 0 or 1, not {other}"))),
        };
        let (parts, body) = request.into_parts();
        let commands = read_commands(&state, &parts.headers, body)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = match &query.session {
            Some(sid) => state.http_sessions.get(sid).ok_or_else(not_found)?,
            None => {
                let peer = crate::listen::peer(&parts.extensions).ip();
                let ip = crate::http::client_ip(&state.config, peer, &parts.headers);
                match open(&state, None, ip) {
                    Ok((_, session)) => session,
                    Err(refusal) => {
                        return Err(
                            (StatusCode::SERVICE_UNAVAILABLE, refusal.message()).into_response()
                        );
                    }
                }
            }
        };
        let (reply, answered) = oneshot::channel();
        let request = ToSession::Poll {
            ack: query.ack,
            wait,
            commands,
            reply,
        };
        session.send(request).await.map_err(|_| not_found())?;
        let body = answered.await.map_err(|_| not_found())?;
        let mut response = body.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Every answer is different: no cache between the client and the server may keep it.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    };
    let response = answer.await.unwrap_or_else(|refused| refused);
    with_cors(response, cors)
}
