//! What every `/auth/*` endpoint shares: JSON errors, reading a JSON body safely (type,
//! Origin, size, deadline), the session cookie.

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::store::{SecretHash, StoreError};

/// Largest body an `/auth/*` endpoint reads: a name, a password (256 characters of up to
/// 4 bytes) and an invite code fit many times over.
pub(crate) const MAX_BODY: usize = 8 << 10;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "sb_session";

/// An HTTP error: `{"error":{"code":"slug","message":"words"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds, for `Retry-After` (429, 503).
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn rate_limited(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts; try again in {retry_after} s"),
            )
        }
    }

    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %err, "apps request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; try again",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::internal(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, json_body(&body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn json_body(value: &serde_json::Value) -> Body {
    Body::from(value.to_string())
}

/// A JSON answer that no cache keeps.
pub(crate) fn json(status: StatusCode, value: serde_json::Value) -> Response {
    let mut response = (status, json_body(&value)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Checks a POST and reads its JSON body: `Content-Type: application/json` (which a
/// cross-site form cannot send without a preflight), an allowed `Origin` when there is
/// one, not a cross-site fetch, at most [`MAX_BODY`] bytes within the server's
/// `limits.body_timeout`. An empty body reads as `{}`.
pub(crate) async fn read_json<T: DeserializeOwned>(
    shared: &Shared,
    request: Request,
) -> Result<(Parts, T), ApiError> {
    let (parts, body) = request.into_parts();
    let refuse = |status, code, message: &str| {
        shared.metrics.bad_requests.inc();
        ApiError::new(status, code, message)
    };
    if !is_json(&parts.headers) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "json_required",
            "send the body as Content-Type: application/json",
        ));
    }
    if !same_origin(shared, &parts.headers) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "this request comes from another site's page",
        ));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the body is too large",
        ));
    }
    let deadline = shared.node.config().limits.body_timeout;
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the body did not arrive in time",
            ));
        }
        Ok(Err(_)) => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the body is too large or was cut off",
            ));
        }
        Ok(Ok(bytes)) => bytes,
    };
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    let value = serde_json::from_slice(bytes).map_err(|err| {
        shared.metrics.bad_requests.inc();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body: {err}"),
        )
    })?;
    Ok((parts, value))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The Origin rule of the server (its own host, or a listed origin), and a browser's
/// own word that the request is cross-site (`Sec-Fetch-Site`).
pub(crate) fn same_origin(shared: &Shared, headers: &HeaderMap) -> bool {
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    // With an Origin, the server's rule decides (a listed origin may be another site);
    // without one, a browser that calls the request cross-site is believed.
    shared.node.origin_allowed(headers) && !(cross_site && headers.get(header::ORIGIN).is_none())
}

/// A new session id: 32 random bytes, base64url in the cookie.
pub(crate) fn new_session_id() -> (String, SecretHash) {
    let id: [u8; 32] = rand::random();
    (URL_SAFE_NO_PAD.encode(id), hash_secret(&id))
}

/// SHA-256: how session ids and invite codes are stored.
pub(crate) fn hash_secret(secret: &[u8]) -> SecretHash {
    Sha256::digest(secret).into()
}

/// The hash of the session id in the request's cookie, when there is a well-formed one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<SecretHash> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name != COOKIE {
                continue;
            }
            let Ok(id) = URL_SAFE_NO_PAD.decode(value.trim()) else {
                continue;
            };
            if id.len() == 32 {
                return Some(hash_secret(&id));
            }
        }
    }
    None
}

/// `Set-Cookie` for a session (`max_age` seconds; 0 clears it). `Secure` when the
/// request came over the server's own TLS ([`over_tls`]; a proxy that terminates TLS in
/// front should add it).
pub(crate) fn set_cookie(value: &str, max_age: u64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    // Base64url and digits only: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether the request reached the server over TLS (`serve --tls-cert`): the server marks
/// such requests. A proxy's `X-Forwarded-Proto` is not taken: only a trusted proxy's word
/// could establish it, and a cookie marked `Secure` behind a TLS proxy is the proxy's job.
pub(crate) fn over_tls(parts: &Parts) -> bool {
    switchboard_server::over_tls(&parts.extensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cookies are `Secure` exactly when the server marked the request as over TLS.
    #[test]
    fn requests_over_tls_are_told_apart() {
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        assert!(!over_tls(&parts));
        parts.extensions.insert(switchboard_server::OverTls);
        assert!(over_tls(&parts));
    }

    #[test]
    fn cookies_round_trip_and_junk_is_ignored() {
        let (value, hash) = new_session_id();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE}={value}; x=1")).unwrap(),
        );
        assert_eq!(session_cookie(&headers), Some(hash));
        for junk in ["sb_session=", "sb_session=!!", "sb_session=YWJj", "other=1"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_static(junk));
            assert_eq!(session_cookie(&headers), None, "{junk}");
        }
        let cookie = set_cookie(&value, 60, false);
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("HttpOnly; SameSite=Strict; Path=/; Max-Age=60"));
        assert!(!cookie.contains("Secure"));
        assert!(
            set_cookie("", 0, true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }
}
