//! The Origin check: a browser's page may open a WebSocket or use the HTTP transports only
//! from the server's own origin or one in `allowed_origins` (cross-site WebSocket
//! hijacking), and the CORS headers that let an allowed site read the answers. One rule for
//! every transport.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::{Shared, disabled};
use crate::net::plain;
use crate::util::LogLimiter;

/// One warning per this interval at most for refused origins.
static REFUSALS: LogLimiter = LogLimiter::new(Duration::from_secs(10));

/// Checks a request's `Origin` against the server's own (its `Host`) and
/// `allowed_origins`. Refused: the 403 to answer (counted, and logged with the fix).
/// Allowed: the origin to name in `Access-Control-Allow-Origin` when it is another site's,
/// so that its pages may read the answers.
pub(crate) fn check(
    shared: &Shared,
    origin: Option<&str>,
    host: &str,
) -> Result<Option<HeaderValue>, Forbidden> {
    if !origin_allowed(origin, host, &shared.session.config.allowed_origins) {
        let origin = origin.unwrap_or_default();
        shared.session.hub.metrics().refused_origin.inc();
        if let Some(held_back) = REFUSALS.allow() {
            warn!(
                origin,
                held_back,
                "refused a page's connection from another origin; if the \
                page is yours, add its origin to allowed_origins (--allow-origin, SWITCHBOARD_ALLOWED_ORIGINS)"
            );
        }
        return Err(Forbidden(format!(
            "origin {origin:?} is not allowed; add it to allowed_origins (--allow-origin, \
             SWITCHBOARD_ALLOWED_ORIGINS)\n"
        )));
    }
    Ok(origin
        .filter(|origin| !same_origin(origin, host))
        .and_then(|origin| HeaderValue::from_str(origin).ok()))
}

/// [`check`] with the `Origin` and `Host` of a request's headers.
pub(crate) fn check_headers(
    shared: &Shared,
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
    check(shared, origin, host)
}

/// An origin refused by [`check`]: answered 403 with this text.
#[derive(Debug)]
pub(crate) struct Forbidden(String);

impl IntoResponse for Forbidden {
    fn into_response(self) -> Response {
        plain(StatusCode::FORBIDDEN, self.0)
    }
}

/// Adds the CORS headers for an allowed cross-site origin (see [`check`]).
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
pub(crate) async fn preflight(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let transports = &shared.session.config.transports;
    let polling = request.uri().path() == "/poll";
    if polling && !transports.polling {
        return disabled("polling");
    }
    if !polling && !transports.sse {
        return disabled("SSE");
    }
    let cors = match check_headers(&shared, request.headers()) {
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

/// Whether a WebSocket may be opened from `origin`. Requests without an Origin come from
/// non-browser clients, which cross-site hijacking does not concern. A browser's Origin
/// must be the server's own (same host as the request) or listed in `allowed`.
pub(crate) fn origin_allowed(origin: Option<&str>, host: &str, allowed: &[String]) -> bool {
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
pub(crate) fn split_port(authority: &str) -> (&str, Option<&str>) {
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
