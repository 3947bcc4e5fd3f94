//! The HTTP front: the routes, what their handlers share, the Host check of every
//! request, health and metrics. Above the transports: nothing below imports it.
//!
//! Files: `host` (the Host check), `api` (the server API), `assets` (the browser library).

pub(crate) mod api;
mod assets;

pub(crate) use assets::SWITCHBOARD_JS;
mod host;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Readings;
use crate::transport::{self, Shared, origin::preflight};

/// What the routes' handlers share. The transports take their part, [`Shared`]; the
/// server API, health and metrics take [`ApiState`].
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The transports' state.
    pub(crate) transports: Arc<Shared>,
    /// The server API's state.
    pub(crate) api: Arc<ApiState>,
}

/// What the server API, health, metrics and the Host check need.
#[derive(Debug)]
pub(crate) struct ApiState {
    /// Channels, users and mailboxes.
    pub(crate) hub: Arc<Hub>,
    /// The server API key.
    pub(crate) api_key: String,
    /// The configuration in force.
    pub(crate) config: Arc<Config>,
    /// The extensions' metrics, rendered after the server's.
    pub(crate) extra_metrics: Vec<crate::metrics::Source>,
}

impl FromRef<AppState> for Arc<Shared> {
    fn from_ref(state: &AppState) -> Self {
        state.transports.clone()
    }
}

impl FromRef<AppState> for Arc<ApiState> {
    fn from_ref(state: &AppState) -> Self {
        state.api.clone()
    }
}

/// The router: `/ws`, `/sse`, `/sse/send`, `/poll`, `/api/{command}`, `/health`,
/// `/metrics`, the browser library, and the extensions' `routes`; every route behind the
/// Host check.
pub(crate) fn router(state: AppState, routes: Router) -> Router {
    Router::new()
        .route("/ws", any(transport::ws::upgrade))
        // The server API and the HTTP transports read their bodies themselves, with
        // their size limit and `limits.body_timeout`.
        .route("/api/{command}", post(api::handle))
        .route("/sse", get(transport::sse::stream))
        .route("/sse/send", post(transport::sse::send).options(preflight))
        .route(
            "/poll",
            get(transport::poll::poll)
                .post(transport::poll::poll)
                .options(preflight),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(assets::router())
        .with_state(state.clone())
        .merge(routes)
        .layer(axum::middleware::from_fn_with_state(
            state.api.clone(),
            host::check,
        ))
}

/// `GET /health`: 200 `{"status":"ok"}`, or 503 with the reason while the store cannot
/// write (a full disk, a failing device, Redis unreachable) or, in a group of nodes, while
/// the pub/sub connection to Redis is down, so a load balancer stops sending clients here.
async fn health(State(state): State<Arc<ApiState>>) -> Response {
    let cluster = state.hub.cluster().filter(|c| !c.connected());
    let health = match cluster {
        Some(_) => Err("the pub/sub connection to Redis is down; reconnecting".to_owned()),
        None => state.hub.store().health(),
    };
    match health {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "failing", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let hub = &state.hub;
    let usage = hub.store().usage();
    let readings = Readings {
        history_cache_bytes: hub.cached_bytes() as u64,
        channels_in_memory: hub.channels_in_memory() as u64,
        store_bytes: usage.bytes,
        store_refused: usage.refused,
        store_healthy: hub.store().health().is_ok(),
        redis_connected: hub.cluster().is_some_and(|c| c.connected()),
        cluster_topics: hub.cluster().map_or(0, |c| c.topics() as u64),
    };
    let mut text = hub.metrics().render(&readings);
    for source in &state.extra_metrics {
        text.push_str(&source.render());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
