//! The HTTP front: routes, the WebSocket upgrade with its Origin check, health and
//! metrics.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper::upgrade::OnUpgrade;

use crate::state::AppState;
use crate::transport;

/// The router: `/ws`, `/api/{command}`, `/health`, `/metrics`.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.limits.max_message_size.max(1 << 20);
    Router::new()
        .route("/ws", any(ws_upgrade))
        .route("/api/{command}", post(crate::api::handle))
        .layer(DefaultBodyLimit::max(body_limit))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.hub.metrics().render(),
    )
        .into_response()
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /ws`: checks the upgrade with the protocol crate's rules (§4.2.1) and the Origin,
/// answers 101, and hands the upgraded connection to the WebSocket transport.
async fn ws_upgrade(State(state): State<Arc<AppState>>, mut request: Request) -> Response {
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
    if !origin_allowed(
        upgrade.origin.as_deref(),
        &upgrade.host,
        &state.config.allowed_origins,
    ) {
        return plain(
            StatusCode::FORBIDDEN,
            format!(
                "origin {:?} is not allowed; add it to allowed_origins\n",
                upgrade.origin.unwrap_or_default()
            ),
        );
    }
    let Ok(permit) = state.permits.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections\n".into(),
        );
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the connection cannot be upgraded\n".into(),
        );
    };
    let tracker = state.tracker.clone();
    tracker.spawn(transport::ws::serve(state, on_upgrade, permit));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h: &mut HeaderMap = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&upgrade.accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Whether a WebSocket may be opened from `origin`. Requests without an Origin come from
/// non-browser clients, which cross-site hijacking does not concern. A browser's Origin
/// must be the server's own (same host as the request) or listed in `allowed`.
pub fn origin_allowed(origin: Option<&str>, host: &str, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none: &[String] = &[];
        assert!(origin_allowed(None, "127.0.0.1:8000", none));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8000"),
            "127.0.0.1:8000",
            none
        ));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            "127.0.0.1:8000",
            none
        ));
        assert!(!origin_allowed(Some("null"), "127.0.0.1:8000", none));
        let list = ["https://app.example.com".to_string()];
        assert!(origin_allowed(Some("https://app.example.com"), "x", &list));
        assert!(!origin_allowed(
            Some("https://app.example.com.evil"),
            "x",
            &list
        ));
        assert!(origin_allowed(Some("http://any"), "x", &["*".to_string()]));
    }
}
