//! Network plumbing under the HTTP routes and the transports: the accept loop, the
//! stalled-write deadline, request bodies with a size limit and a deadline, who the client
//! is, and the shapes of refusals.
//!
//! Files: `listen` (the accept loop), `takeover` (a response taking its connection out of
//! hyper), `tls` (the certificate, its reload, the acceptor), `write_deadline`, `body`.

pub(crate) mod body;
pub(crate) mod listen;
pub(crate) mod takeover;
pub(crate) mod tls;
pub(crate) mod write_deadline;

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ClientError;

/// The TCP peer of a request, as the accept loop recorded it in its extensions (a
/// loopback address for a request that did not come through it).
pub(crate) fn peer(extensions: &axum::http::Extensions) -> SocketAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0)
}

/// The client's address: its TCP peer, or, when the peer is one of `trusted_proxies`, the
/// nearest address in `X-Forwarded-For` that is not itself one.
pub(crate) fn client_ip(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    trusted_proxies: &[IpAddr],
) -> IpAddr {
    let peer = peer(extensions).ip();
    if !trusted_proxies.contains(&peer) {
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
            Ok(ip) if trusted_proxies.contains(&ip) => continue,
            Ok(ip) => return ip,
            // Unreadable: stop at the last address we can trust.
            Err(_) => break,
        }
    }
    peer
}

/// A plain-text answer (refusals a person reads: a disabled transport, a refused origin
/// or host, an invalid upgrade).
pub(crate) fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A JSON error answer, `{"error":{"code","message"}}` (the server API, the HTTP
/// transports).
pub(crate) fn error_response(status: StatusCode, error: &ClientError) -> Response {
    let mut response = (status, crate::protocol::error_body(error)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
