//! The server API: `POST /api/{command}` with a JSON body and the key in `X-API-Key`.
//! Documented in `docs/api.md` and `docs/openapi.yaml`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::auth::api_key_matches;
use crate::error::{ClientError, close};
use crate::state::AppState;
use crate::wire::StreamPosition;

/// An API failure: an HTTP status and a [`ClientError`] body.
#[derive(Debug)]
struct ApiError(StatusCode, ClientError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1.code, "message": self.1.message}});
        (self.0, Json(body)).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        let status = match err.code {
            101 | 109 => StatusCode::UNAUTHORIZED,
            103 => StatusCode::FORBIDDEN,
            104 => StatusCode::NOT_FOUND,
            114 => StatusCode::PAYLOAD_TOO_LARGE,
            100 => StatusCode::INTERNAL_SERVER_ERROR,
            115 => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::BAD_REQUEST,
        };
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

/// Handles `POST /api/{command}`.
pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    Path(command): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.hub.metrics().api_requests.inc();
    match dispatch(&state, &command, &headers, &body).await {
        Ok(value) => Json(value).into_response(),
        Err(err) => err.into_response(),
    }
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

async fn dispatch(
    state: &AppState,
    command: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
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
    Ok(match command {
        "publish" => {
            let body: PublishBody = parse(body)?;
            let position = hub
                .publish(&body.channel, payload(body.data)?, None)
                .await?;
            json!(position)
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
                        json!({"channel": channel, "error": {"code": e.code, "message": e.message}})
                    }
                });
            }
            json!({ "results": results })
        }
        "send" => {
            let body: SendBody = parse(body)?;
            let (status, id) = hub.send(&body.user, payload(body.data)?, None).await?;
            json!({"status": status, "mailbox": id})
        }
        "presence" => {
            let body: ChannelBody = parse(body)?;
            hub.presence(&body.channel)?
        }
        "history" => {
            let body: HistoryBody = parse(body)?;
            json!(
                hub.history(&body.channel, body.limit, body.since.as_ref())
                    .await?
            )
        }
        "channels" => {
            let _: serde::de::IgnoredAny = parse(body)?;
            let channels: Vec<Value> = hub
                .channels()
                .into_iter()
                .map(|(channel, n)| json!({"channel": channel, "subscribers": n}))
                .collect();
            json!({ "channels": channels })
        }
        "disconnect" => {
            let body: DisconnectBody = parse(body)?;
            let (code, reason) = if body.reconnect {
                (close::RECONNECT, "disconnected by the server; reconnect")
            } else {
                (close::DISCONNECTED, "disconnected by the server")
            };
            let n = hub.disconnect(&body.user, code, reason);
            json!({ "disconnected": n })
        }
        "info" => {
            let metrics = hub.metrics();
            json!({
                "nodes": [{
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime": hub.uptime().as_secs(),
                    "connections": metrics.connections.get(),
                    "subscriptions": metrics.subscriptions.get(),
                    "channels": hub.channels().len(),
                }]
            })
        }
        other => {
            return Err(
                ClientError::unknown_command(format!("unknown API command {other:?}")).into(),
            );
        }
    })
}
