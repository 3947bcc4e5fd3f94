//! The Host check of every request: a request must name a host this server answers to,
//! which defeats DNS rebinding (a page on a hostile name that resolves to this server's
//! address sends its own name as Host, and as Origin, so the Origin check alone would
//! pass it).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::warn;

use super::ApiState;
use crate::config::Config;
use crate::net::plain;
use crate::transport::origin::split_port;
use crate::util::LogLimiter;

/// One warning per this interval at most for refused hosts.
static REFUSALS: LogLimiter = LogLimiter::new(Duration::from_secs(10));

/// Refuses a request whose `Host` is not one this server answers to (421).
pub(crate) async fn check(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(host) = host {
        if !host_allowed(host, &state.config) {
            state.hub.metrics().refused_host.inc();
            if let Some(held_back) = REFUSALS.allow() {
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
pub(crate) fn host_allowed(host: &str, config: &Config) -> bool {
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
