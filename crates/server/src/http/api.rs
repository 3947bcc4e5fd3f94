//! The server API: `POST /api/{command}` with a JSON body and the key in `X-API-Key`.
//! Documented in `docs/api.md` and `docs/openapi.yaml`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ApiState;
use crate::auth::api_key_matches;
use crate::config::Config;
use crate::error::{ClientError, close};
use crate::hub::Hub;
use crate::protocol::{Sent, StreamPosition};

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

/// A server API request, its body read into the command's fields. Unknown fields are
/// refused, so a typo does not pass silently.
#[derive(Debug)]
pub(crate) enum ApiCommand {
    Publish(PublishBody),
    Broadcast(BroadcastBody),
    Send(SendBody),
    Presence(ChannelBody),
    History(HistoryBody),
    Channels,
    Disconnect(DisconnectBody),
    Info,
}

/// `publish`: `data` to `channel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    channel: String,
    data: Box<RawValue>,
    /// To the subscribers of the moment only: not stored, no offset.
    #[serde(default)]
    ephemeral: bool,
}

/// `broadcast`: the same `data` to each of `channels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastBody {
    channels: Vec<String>,
    data: Box<RawValue>,
}

/// `send`: a private message to `user`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    user: String,
    data: Box<RawValue>,
}

/// `presence`: who is subscribed to `channel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelBody {
    channel: String,
}

/// `history`: the latest `limit` publications of `channel`, those after `since`, or the
/// newest `limit` below the offset `before`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryBody {
    channel: String,
    limit: Option<usize>,
    since: Option<StreamPosition>,
    before: Option<u64>,
}

/// `disconnect`: close every connection of `user`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectBody {
    user: String,
    /// Close with 4008 (come back) rather than 4003 (stay away).
    #[serde(default)]
    reconnect: bool,
}

impl ApiCommand {
    /// Every command's name (`POST /api/{name}`).
    pub(crate) const NAMES: &[&str] = &[
        "publish",
        "broadcast",
        "send",
        "presence",
        "history",
        "channels",
        "disconnect",
        "info",
    ];

    /// Reads `command`'s body (empty counts as `{}`): error 104 for an unknown command,
    /// 107 for a body it cannot take.
    pub(crate) fn parse(command: &str, body: &[u8]) -> Result<ApiCommand, ClientError> {
        Ok(match command {
            "publish" => ApiCommand::Publish(parse(body)?),
            "broadcast" => ApiCommand::Broadcast(parse(body)?),
            "send" => ApiCommand::Send(parse(body)?),
            "presence" => ApiCommand::Presence(parse(body)?),
            "history" => ApiCommand::History(parse(body)?),
            "channels" => {
                let _: serde::de::IgnoredAny = parse(body)?;
                ApiCommand::Channels
            }
            "disconnect" => ApiCommand::Disconnect(parse(body)?),
            "info" => ApiCommand::Info,
            other => {
                return Err(ClientError::unknown_command(format!(
                    "unknown API command {other:?}; the commands are {}",
                    ApiCommand::NAMES.join(", ")
                )));
            }
        })
    }
}

/// The result of `broadcast`: one outcome per channel, in the order asked.
#[derive(Debug, Serialize)]
pub(crate) struct Broadcasted {
    pub(crate) results: Vec<BroadcastOutcome>,
}

/// One channel's outcome in a `broadcast`: its position, or the error it got.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum BroadcastOutcome {
    Published {
        channel: String,
        #[serde(flatten)]
        position: StreamPosition,
    },
    Failed {
        channel: String,
        error: ClientError,
    },
}

/// The result of `channels`, sorted by name.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Channels {
    pub(crate) channels: Vec<ChannelCount>,
}

/// A channel and how many connections are subscribed to it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChannelCount {
    pub(crate) channel: String,
    pub(crate) subscribers: usize,
}

/// The result of `disconnect`: how many connections were closed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Disconnected {
    pub(crate) disconnected: usize,
}

/// The result of `info`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Info {
    pub(crate) nodes: Vec<Node>,
}

/// One node of the hub (several with the Redis engine, this one first).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Node {
    /// The node's id in its group (absent on a node alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    pub(crate) version: String,
    /// Seconds since the node started.
    pub(crate) uptime: u64,
    pub(crate) connections: i64,
    pub(crate) subscriptions: i64,
    pub(crate) channels: usize,
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
        dispatch(&state.hub, &state.config, &command, &body)
            .await
            .map_err(ApiError::from)
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

/// The refusal of a request without the right `X-API-Key`.
pub(crate) fn wrong_key() -> ClientError {
    ClientError::unauthorized("missing or wrong X-API-Key")
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !api_key_matches(&state.api_key, key) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, wrong_key()));
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
fn to_json<T: Serialize>(value: &T) -> Result<String, ClientError> {
    serde_json::to_string(value)
        .map_err(|e| ClientError::internal(format!("cannot encode the answer: {e}")))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ClientError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ClientError::bad_request(format!("invalid request body: {e}")))
}

/// Runs one command (its body read): what `POST /api/{command}` answers, as JSON text.
/// [`crate::Node::api`] runs it in process.
pub(crate) async fn dispatch(
    hub: &Arc<Hub>,
    config: &Config,
    command: &str,
    body: &[u8],
) -> Result<String, ClientError> {
    let limit = config.limits.max_payload_size;
    let payload = |data: Box<RawValue>| -> Result<Arc<RawValue>, ClientError> {
        if data.get().len() > limit {
            return Err(ClientError::payload_too_large(format!(
                "data is {} bytes; the limit is {limit}",
                data.get().len()
            )));
        }
        Ok(Arc::from(data))
    };
    match ApiCommand::parse(command, body)? {
        ApiCommand::Publish(PublishBody {
            channel,
            data,
            ephemeral,
        }) => {
            let data = payload(data)?;
            if ephemeral {
                to_json(&hub.publish_ephemeral(&channel, data, None)?)
            } else {
                to_json(&hub.publish(&channel, data, None).await?)
            }
        }
        ApiCommand::Broadcast(BroadcastBody { channels, data }) => {
            let data = payload(data)?;
            let mut results = Vec::with_capacity(channels.len());
            for channel in channels {
                results.push(match hub.publish(&channel, data.clone(), None).await {
                    Ok(position) => BroadcastOutcome::Published { channel, position },
                    Err(error) => BroadcastOutcome::Failed { channel, error },
                });
            }
            to_json(&Broadcasted { results })
        }
        ApiCommand::Send(SendBody { user, data }) => {
            let (status, mailbox) = hub.send(&user, payload(data)?, None).await?;
            to_json(&Sent { status, mailbox })
        }
        ApiCommand::Presence(ChannelBody { channel }) => to_json(&hub.presence(&channel).await?),
        ApiCommand::History(HistoryBody {
            channel,
            limit,
            since,
            before,
        }) => {
            if since.is_some() && before.is_some() {
                return Err(ClientError::bad_request(
                    "history takes since or before, not both",
                ));
            }
            to_json(&hub.history(&channel, limit, since.as_ref(), before).await?)
        }
        ApiCommand::Channels => {
            let channels = hub
                .channels_in_group()
                .await
                .into_iter()
                .map(|(channel, subscribers)| ChannelCount {
                    channel,
                    subscribers,
                })
                .collect();
            to_json(&Channels { channels })
        }
        ApiCommand::Disconnect(DisconnectBody { user, reconnect }) => {
            let (code, reason) = if reconnect {
                (close::RECONNECT, "disconnected by the server; reconnect")
            } else {
                (close::DISCONNECTED, "disconnected by the server")
            };
            let disconnected = hub.disconnect_in_group(&user, code, reason).await;
            to_json(&Disconnected { disconnected })
        }
        ApiCommand::Info => {
            let nodes = hub
                .nodes_in_group()
                .await
                .into_iter()
                .filter_map(|node| serde_json::from_value(node).ok())
                .collect();
            to_json(&Info { nodes })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_name_is_one_parse_knows() {
        for name in ApiCommand::NAMES {
            let parsed = ApiCommand::parse(name, b"{}");
            assert!(
                !matches!(&parsed, Err(e) if e.code == crate::error::ErrorCode::UnknownCommand),
                "{name}: {parsed:?}"
            );
        }
        let unknown = ApiCommand::parse("nope", b"{}").unwrap_err();
        assert_eq!(unknown.code, crate::error::ErrorCode::UnknownCommand);
    }
}
