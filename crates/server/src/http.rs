//! The HTTP front: routes, the Host check of every request, the WebSocket upgrade and the
//! HTTP transports with their Origin check, health and metrics.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper::upgrade::OnUpgrade;
use tracing::warn;

use crate::config::Config;
use crate::metrics::Readings;
use crate::state::AppState;
use crate::transport;
use crate::util::LogLimiter;

/// One warning per this interval at most for refused hosts and origins.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
static HOST_REFUSALS: LogLimiter = LogLimiter::new(REFUSAL_LOG_EVERY);
static ORIGIN_REFUSALS: LogLimiter = LogLimiter::new(REFUSAL_LOG_EVERY);

/// The router: `/ws`, `/sse`, `/sse/send`, `/poll`, `/api/{command}`, `/health`,
/// `/metrics`, the browser library; every route behind the Host check.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", any(ws_upgrade))
        // The server API and the HTTP transports read their bodies themselves, with
        // their size limit and `limits.body_timeout`.
        .route("/api/{command}", post(crate::api::handle))
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
        .merge(crate::assets::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .with_state(state)
}

/// `GET /health`: 200 `{"status":"ok"}`, or 503 with the reason while the store cannot
/// write (a full disk, a failing device), so a load balancer stops sending clients here.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.hub.store().health() {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "failing", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let hub = &state.hub;
    let usage = hub.store().usage();
    let readings = Readings {
        history_cache_bytes: hub.cached_bytes() as u64,
        channels_in_memory: hub.channels_in_memory() as u64,
        store_bytes: usage.bytes,
        store_refused: usage.refused,
        store_healthy: hub.store().health().is_ok(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hub.metrics().render(&readings),
    )
        .into_response()
}

/// Refuses a request whose `Host` is not one this server answers to (421), which defeats
/// DNS rebinding: a page on a hostile name that resolves to this server's address sends
/// its own name as Host (and as Origin, so the Origin check alone would pass it).
async fn check_host(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(host) = host {
        if !host_allowed(host, &state.config) {
            state.hub.metrics().refused_host.inc();
            if let Some(held_back) = HOST_REFUSALS.allow() {
                warn!(
                    host,
                    held_back,
                    "refused a request for a host this server does not \
                    answer to; if it is yours, add it to allowed_hosts"
                );
            }
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                format!("host {host:?} is not allowed; add it to allowed_hosts\n"),
            );
        }
    }
    next.run(request).await
}

/// Whether a request's `Host` is allowed: listed in `allowed_hosts` (by name, with or
/// without its port; `*` allows any), or with an empty list, any host unless the server
/// listens on a loopback address, where only loopback names and addresses are.
pub fn host_allowed(host: &str, config: &Config) -> bool {
    let (name, _) = split_port(host);
    if config.allowed_hosts.is_empty() {
        return !config.listen.ip().is_loopback() || is_loopback_name(name);
    }
    config.allowed_hosts.iter().any(|allowed| {
        allowed == "*"
            || allowed.eq_ignore_ascii_case(host)
            || ((!allowed.contains(':') || allowed.starts_with('['))
                && allowed.eq_ignore_ascii_case(name))
    })
}

/// `localhost`, a name under `.localhost` (RFC 6761), `127.0.0.0/8` or `[::1]`.
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    if name.eq_ignore_ascii_case("localhost")
        || name.len() > ".localhost".len()
            && name[name.len() - ".localhost".len()..].eq_ignore_ascii_case(".localhost")
    {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The client's address: its TCP peer, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not itself one.
pub(crate) fn client_ip(config: &Config, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !config.trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if config.trusted_proxies.contains(&ip) => continue,
            Ok(ip) => return ip,
            // Unreadable: stop at the last address we can trust.
            Err(_) => break,
        }
    }
    peer
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The answer of a transport switched off in `[transports]`: as if it did not exist.
pub(crate) fn disabled(transport: &str) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        format!("the {transport} transport is disabled on this server\n"),
    )
}

/// The Origin check of the HTTP transports (SSE, polling), with the same rule as the
/// WebSocket upgrade. Refused: the 403 to answer. Allowed: the origin to name in
/// `Access-Control-Allow-Origin`, when it is another site's (one in `allowed_origins`),
/// so that its pages may read the answers.
pub(crate) fn check_origin(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, Forbidden> {
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(origin)) => Some(origin),
        Some(Err(_)) => {
            return Err(Forbidden("the Origin header is not readable text\n".into()));
        }
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !origin_allowed(origin, host, &state.config.allowed_origins) {
        return Err(refuse_origin(state, origin.unwrap_or_default()));
    }
    Ok(origin
        .filter(|origin| !same_origin(origin, host))
        .and_then(|origin| HeaderValue::from_str(origin).ok()))
}

/// Counts and logs (rate-limited, with the fix) a refused origin, and returns the 403.
fn refuse_origin(state: &AppState, origin: &str) -> Forbidden {
    state.hub.metrics().refused_origin.inc();
    if let Some(held_back) = ORIGIN_REFUSALS.allow() {
        warn!(
            origin,
            held_back,
            "refused a page's connection from another origin; if the \
            page is yours, add its origin to allowed_origins (--allow-origin)"
        );
    }
    Forbidden(format!(
        "origin {origin:?} is not allowed; add it to allowed_origins\n"
    ))
}

/// An origin refused by [`check_origin`]: answered 403 with this text.
#[derive(Debug)]
pub(crate) struct Forbidden(String);

impl IntoResponse for Forbidden {
    fn into_response(self) -> Response {
        plain(StatusCode::FORBIDDEN, self.0)
    }
}

/// Adds the CORS headers for an allowed cross-site origin (see [`check_origin`]).
pub(crate) fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        // The answer depends on the Origin: caches must not give it to another site.
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// `OPTIONS /sse/send` and `OPTIONS /poll`: the CORS preflight a browser sends before a
/// cross-site POST with a JSON content type.
async fn preflight(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let enabled = match request.uri().path() {
        "/poll" => state.config.transports.polling,
        _ => state.config.transports.sse,
    };
    if !enabled {
        return disabled(if request.uri().path() == "/poll" {
            "polling"
        } else {
            "SSE"
        });
    }
    let cors = match check_origin(&state, request.headers()) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    if cors.is_some() {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    with_cors(response, cors)
}

/// `GET /ws`: checks the upgrade with the protocol crate's rules (§4.2.1) and the Origin,
/// answers 101, and hands the upgraded connection to the WebSocket transport.
async fn ws_upgrade(State(state): State<Arc<AppState>>, mut request: Request) -> Response {
    if !state.config.transports.websocket {
        return disabled("WebSocket");
    }
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
        return refuse_origin(&state, upgrade.origin.as_deref().unwrap_or_default())
            .into_response();
    }
    let peer = crate::listen::peer(request.extensions()).ip();
    let ip = client_ip(&state.config, peer, request.headers());
    let slot = match state.admission.pending(ip) {
        Ok(slot) => slot,
        Err(refusal) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, refusal.message().into());
        }
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the connection cannot be upgraded\n".into(),
        );
    };
    let tracker = state.tracker.clone();
    tracker.spawn(transport::ws::serve(state, on_upgrade, slot, ip));
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
    same_origin(origin, host)
}

/// Whether `origin` is the server's own: `http://` or `https://` and the request's Host.
/// A port left out means the scheme's default on either side (RFC 6454 §4: a browser
/// omits it from Origin, while a client or a proxy may write it in Host).
fn same_origin(origin: &str, host: &str) -> bool {
    let (authority, default_port) = if let Some(a) = origin.strip_prefix("http://") {
        (a, "80")
    } else if let Some(a) = origin.strip_prefix("https://") {
        (a, "443")
    } else {
        return false;
    };
    let (origin_host, origin_port) = split_port(authority);
    let (host, port) = split_port(host);
    origin_host.eq_ignore_ascii_case(host)
        && origin_port.unwrap_or(default_port) == port.unwrap_or(default_port)
}

/// Splits `host[:port]` (the host possibly a bracketed IPv6 address) into its parts.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let port_at = match authority.rfind(':') {
        // A colon inside brackets belongs to an IPv6 address.
        Some(i) if !authority[i..].contains(']') => i,
        _ => return (authority, None),
    };
    let (host, port) = (&authority[..port_at], &authority[port_at + 1..]);
    if host.contains(':') && !host.starts_with('[') {
        // An unbracketed IPv6 address: no port can be told apart.
        return (authority, None);
    }
    (host, Some(port))
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

    #[test]
    fn default_ports_match_on_either_side() {
        let none: &[String] = &[];
        let same = |origin: &str, host: &str| origin_allowed(Some(origin), host, none);
        assert!(same("http://example.com", "example.com:80"));
        assert!(same("http://example.com:80", "example.com"));
        assert!(same("https://Example.com", "example.com:443"));
        assert!(same("http://[::1]:8000", "[::1]:8000"));
        assert!(same("http://[::1]", "[::1]:80"));
        // Another port, scheme or host is another origin.
        assert!(!same("https://example.com", "example.com:80"));
        assert!(!same("http://example.com", "example.com:8000"));
        assert!(!same("http://example.com:8000", "example.com"));
        assert!(!same("http://[::1]:8000", "[::1]:8001"));
        assert!(!same("http://example.com.evil:80", "example.com:80"));
        assert!(!same("ws://example.com", "example.com"));
    }
}
