//! The pages and their files, from the embedded table ([`crate::assets`]): each with its
//! type, an ETag computed once (so a revisit is one 304), the security headers, and
//! compression by tower-http's layer (in [`crate::mount`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::assets::{Asset, content_type};

/// The Content-Security-Policy of every page: nothing inline, nothing from elsewhere.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; \
    form-action 'self'";

/// One file, ready to serve.
#[derive(Debug)]
struct Page {
    bytes: &'static [u8],
    content_type: HeaderValue,
    /// Weak: the same ETag names the gzip and the identity forms of the file.
    etag: HeaderValue,
}

/// The files by path under `web/`.
#[derive(Debug, Default)]
pub(crate) struct Pages(HashMap<&'static str, Page>);

impl Pages {
    pub(crate) fn new(files: &'static [Asset]) -> Pages {
        Pages(
            files
                .iter()
                .filter_map(|&(path, bytes)| {
                    let content_type = HeaderValue::from_static(content_type(path)?);
                    let digest = Sha256::digest(bytes);
                    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                    let etag = HeaderValue::from_str(&format!("W/\"{hex}\"")).ok()?;
                    Some((
                        path,
                        Page {
                            bytes,
                            content_type,
                            etag,
                        },
                    ))
                })
                .collect(),
        )
    }

    fn serve(&self, path: &str, request: &HeaderMap) -> Response {
        let Some(page) = self.0.get(path) else {
            let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
            secure(response.headers_mut());
            return response;
        };
        let mut response = if not_modified(request, &page.etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = Response::new(Body::from(page.bytes));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, page.content_type.clone());
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, page.etag.clone());
        // Always revalidate: a changed binary shows at once, an unchanged one costs a 304.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        secure(headers);
        response
    }
}

/// The headers every page and file gets.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2).
fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let strip = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let Ok(ours) = etag.to_str() else {
        return false;
    };
    let ours = strip(ours);
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || strip(tag) == ours)
}

/// `GET /`.
pub(crate) async fn home(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.pages.serve("home/index.html", &headers)
}

/// `GET /signin`.
pub(crate) async fn signin(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.pages.serve("signin/index.html", &headers)
}

/// `GET /chat`.
pub(crate) async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.pages.serve("chat/index.html", &headers)
}

/// `GET /apps/{*path}`.
pub(crate) async fn file(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared.pages.serve(&path, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_conditional_requests() {
        static FILES: &[Asset] = &[("a.html", b"<p>a</p>"), ("b.exe", b"MZ")];
        let pages = Pages::new(FILES);
        assert!(pages.0.contains_key("a.html"));
        assert!(
            !pages.0.contains_key("b.exe"),
            "unknown types are not served"
        );
        let page = pages.serve("a.html", &HeaderMap::new());
        assert_eq!(page.status(), StatusCode::OK);
        let etag = page.headers()[header::ETAG].clone();
        assert!(etag.to_str().unwrap().starts_with("W/\""));
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let mut conditional = HeaderMap::new();
        conditional.insert(header::IF_NONE_MATCH, etag.clone());
        assert_eq!(
            pages.serve("a.html", &conditional).status(),
            StatusCode::NOT_MODIFIED
        );
        // The strong form and a list match too; another tag does not.
        let strong = etag.to_str().unwrap().trim_start_matches("W/").to_owned();
        conditional.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", {strong}")).unwrap(),
        );
        assert_eq!(
            pages.serve("a.html", &conditional).status(),
            StatusCode::NOT_MODIFIED
        );
        conditional.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert_eq!(pages.serve("a.html", &conditional).status(), StatusCode::OK);
        let missing = pages.serve("../secret", &HeaderMap::new());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(
            missing
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }
}
