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
use crate::net::{client_ip, error_response};
use crate::protocol::Request as Command;
use crate::transport::http_session::{ToSession, not_found, open, read_commands, route};
use crate::transport::origin::{self, with_cors};
use crate::transport::{Shared, disabled};

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
pub(crate) async fn poll(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if !shared.session.config.transports.polling {
        return disabled("polling");
    }
    let cors = match origin::check_headers(&shared, request.headers()) {
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
        let commands = read_commands(&shared, &parts.headers, body)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = match &query.session {
            Some(sid) => route(&shared, sid).ok_or_else(not_found)?,
            None => {
                // A session that could only time out (4007) is not opened at all.
                if !starts_with_connect(&commands) {
                    return Err(bad(
                        "a poll without a session opens one, so its body must start with \
                         the connect command"
                            .into(),
                    ));
                }
                let ip = client_ip(
                    &parts.extensions,
                    &parts.headers,
                    &shared.session.config.trusted_proxies,
                );
                match open(&shared, false, ip) {
                    Ok((_, session, _)) => session,
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

/// Whether the first command is `connect` (the session's first command must be).
fn starts_with_connect(commands: &[String]) -> bool {
    commands.first().is_some_and(|first| {
        Command::parse(first).is_ok_and(|request| request.cmd.as_deref() == Some("connect"))
    })
}
