//! The server API: `POST /api/{command}` with a JSON body and the key in `X-API-Key`.
//! Documented in `docs/api.md` and `docs/openapi.yaml`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::ApiState;
use crate::auth::api_key_matches;
use crate::error::{ClientError, close};
use crate::protocol::StreamPosition;

/// An API failure: an HTTP status and a [`ClientError`] body.
#[derive(Debug)]
struct ApiError(StatusCode, ClientError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::net::error_response(self.0, &self.1)
    }
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        let status = StatusCode::from_u16(err.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError(status, err)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    user: String,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    channel: String,
    limit: Option<usize>,
    since: Option<StreamPosition>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
    /// Close with 4008 (reconnect) instead of 4003 (stay away).
    #[serde(default)]
    reconnect: bool,
}

/// Largest server API request body: a `broadcast` to many channels carries a list of
/// names besides its data.
const MAX_BODY: usize = 1 << 20;

/// Handles `POST /api/{command}`. The key is checked from the headers before the body is
/// read, so a client without it cannot make the server buffer anything.
pub(crate) async fn handle(
    State(state): State<Arc<ApiState>>,
    Path(command): Path<String>,
    request: Request,
) -> Response {
    state.hub.metrics().api_requests.inc();
    let (parts, body) = request.into_parts();
    if let Err(err) = authorize(&state, &parts.headers) {
        return err.into_response();
    }
    let answer = async {
        let body = read_body(&state, &parts.headers, body).await?;
        dispatch(&state, &command, &body).await
    };
    match answer.await {
        Ok(json) => {
            let mut response = json.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => err.into_response(),
    }
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !api_key_matches(&state.api_key, key) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            ClientError::unauthorized("missing or wrong X-API-Key"),
        ));
    }
    Ok(())
}

async fn read_body(state: &ApiState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limits = &state.config.limits;
    let limit = limits.max_message_size.max(MAX_BODY);
    crate::net::body::read(
        headers,
        body,
        limit,
        limits.body_timeout,
        state.hub.metrics(),
    )
    .await
    .map(|bytes| bytes.to_vec())
    .map_err(|err| {
        let (status, error) = err.answer();
        ApiError(status, error)
    })
}

/// A result as JSON text, written straight from the types: published data stays raw
/// JSON, passed through as it was accepted (never rebuilt as a `serde_json::Value`,
/// which cannot hold every valid JSON number or string).
fn to_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value)
        .map_err(|e| ClientError::internal(format!("cannot encode the answer: {e}")).into())
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ClientError::bad_request(format!("invalid request body: {e}")).into())
}

async fn dispatch(state: &ApiState, command: &str, body: &[u8]) -> Result<String, ApiError> {
    let hub = &state.hub;
    let limit = state.config.limits.max_payload_size;
    let payload = |data: Box<RawValue>| -> Result<Arc<RawValue>, ApiError> {
        if data.get().len() > limit {
            return Err(ClientError::payload_too_large(format!(
                "data is {} bytes; the limit is {limit}",
                data.get().len()
            ))
            .into());
        }
        Ok(Arc::from(data))
    };
    match command {
        "publish" => {
            let body: PublishBody = parse(body)?;
            let position = hub
                .publish(&body.channel, payload(body.data)?, None)
                .await?;
            to_json(&position)
        }
        "broadcast" => {
            let body: BroadcastBody = parse(body)?;
            let data = payload(body.data)?;
            let mut results = Vec::with_capacity(body.channels.len());
            for channel in &body.channels {
                results.push(match hub.publish(channel, data.clone(), None).await {
                    Ok(pos) => {
                        json!({"channel": channel, "offset": pos.offset, "epoch": pos.epoch})
                    }
                    Err(e) => {
                        json!({"channel": channel, "error": e})
                    }
                });
            }
            to_json(&json!({ "results": results }))
        }
        "send" => {
            let body: SendBody = parse(body)?;
            let (status, id) = hub.send(&body.user, payload(body.data)?, None).await?;
            to_json(&json!({"status": status, "mailbox": id}))
        }
        "presence" => {
            let body: ChannelBody = parse(body)?;
            to_json(&hub.presence(&body.channel)?)
        }
        "history" => {
            let body: HistoryBody = parse(body)?;
            to_json(
                &hub.history(&body.channel, body.limit, body.since.as_ref())
                    .await?,
            )
        }
        "channels" => {
            let _: serde::de::IgnoredAny = parse(body)?;
            let channels: Vec<_> = hub
                .channels()
                .into_iter()
                .map(|(channel, n)| json!({"channel": channel, "subscribers": n}))
                .collect();
            to_json(&json!({ "channels": channels }))
        }
        "disconnect" => {
            let body: DisconnectBody = parse(body)?;
            let (code, reason) = if body.reconnect {
                (close::RECONNECT, "disconnected by the server; reconnect")
            } else {
                (close::DISCONNECTED, "disconnected by the server")
            };
            let n = hub.disconnect(&body.user, code, reason);
            to_json(&json!({ "disconnected": n }))
        }
        "info" => {
            let metrics = hub.metrics();
            to_json(&json!({
                "nodes": [{
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime": hub.uptime().as_secs(),
                    "connections": metrics.connections.get(),
                    "subscriptions": metrics.subscriptions.get(),
                    "channels": hub.channels().len(),
                }]
            }))
        }
        other => Err(ClientError::unknown_command(format!("unknown API command {other:?}")).into()),
    }
}
