//! `POST /api/ingest`: custom metric samples from any script, with the server API's key
//! (`X-API-Key`, or `Authorization: Bearer KEY`):
//! `{"host": H, "metrics": {NAME: NUMBER, …}, "time"?: MS}` becomes
//! `{"type": "custom", "time", "metrics"}` on `metrics:H`, beside the agent's samples.
//! Errors are the server API's: a status and `{"error": {"code", "message"}}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use switchboard_server::PublishOptions;
use switchboard_server::auth::valid_host;
use switchboard_server::error::ClientError;

use crate::Shared;

/// Most metrics in one request.
pub(crate) const MAX_METRICS: usize = 64;
/// Largest body read: 64 metrics with long names and numbers fit many times over.
const MAX_BODY: usize = 16 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ingest {
    host: String,
    metrics: BTreeMap<String, f64>,
    #[serde(default)]
    time: Option<u64>,
}

/// An answer as the server API gives it.
fn answer(err: ClientError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, switchboard_server::protocol::error_body(&err))
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The key a request presents: `X-API-Key`, else `Authorization: Bearer KEY`.
fn presented(headers: &HeaderMap) -> &str {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return key;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map_or("", str::trim)
}

/// `POST /api/ingest`. The key is checked before the body is read, as the server API
/// does, so a client without it cannot make the hub buffer anything.
pub(crate) async fn ingest(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let metrics = &shared.metrics;
    let (parts, body) = request.into_parts();
    if !shared.node.api_key_matches(presented(&parts.headers)) {
        metrics.monitor_ingest_refused.inc();
        return answer(ClientError::unauthorized("missing or wrong X-API-Key"));
    }
    let refuse = |err: ClientError| {
        metrics.monitor_ingest_refused.inc();
        answer(err)
    };
    let deadline = shared.node.config().limits.body_timeout;
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => return refuse(ClientError::bad_request("the body did not arrive in time")),
        Ok(Err(_)) => {
            return refuse(ClientError::payload_too_large(format!(
                "the body is larger than {MAX_BODY} bytes"
            )));
        }
        Ok(Ok(bytes)) => bytes,
    };
    let ingest: Ingest = match serde_json::from_slice(&bytes) {
        Ok(ingest) => ingest,
        Err(e) => {
            return refuse(ClientError::bad_request(format!(
                "invalid request body: {e}"
            )));
        }
    };
    if !valid_host(&ingest.host) {
        return refuse(ClientError::bad_request(
            "host must be 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    if ingest.metrics.is_empty() || ingest.metrics.len() > MAX_METRICS {
        return refuse(ClientError::bad_request(format!(
            "metrics must hold 1 to {MAX_METRICS} numbers"
        )));
    }
    if let Some(name) = ingest.metrics.keys().find(|n| !valid_host(n)) {
        return refuse(ClientError::bad_request(format!(
            "metric {name:?}: a name is 1-64 letters, digits, '.', '_' or '-'"
        )));
    }
    let channel = format!("metrics:{}", ingest.host);
    let data = json!({
        "type": "custom",
        "time": ingest.time.unwrap_or(crate::now_ms() as u64),
        "metrics": ingest.metrics,
    });
    let Ok(data) = serde_json::value::to_raw_value(&data) else {
        return answer(ClientError::internal("cannot encode the sample"));
    };
    match shared
        .node
        .publish(&channel, data, PublishOptions::default())
        .await
    {
        Ok(position) => {
            metrics.monitor_ingested.inc();
            let body =
                json!({"channel": channel, "offset": position.offset, "epoch": position.epoch});
            json_response(StatusCode::OK, body.to_string())
        }
        Err(err) => answer(err),
    }
}
