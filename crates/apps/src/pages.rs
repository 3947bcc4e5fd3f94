//! The pages and their files, from the embedded table ([`crate::assets`]): each with its
//! type, an ETag computed once, the security headers, and compression by tower-http's
//! layer (in [`crate::mount`]).
//!
//! A revisit costs one round trip: the page itself is revalidated (`no-cache`, a 304),
//! and everything it loads comes from the browser's cache without asking. The pages name
//! their files under `/apps/v/VERSION/…`, VERSION being a hash of every file served
//! (computed once, at start), and those URLs are `immutable`: a new binary with other
//! files has another VERSION, so a page never mixes old and new files. The modules import
//! each other, and the browser library (served here too, as `/apps/v/VERSION/switchboard.js`,
//! the same bytes as `/switchboard.js`), by relative paths, which stay under the version.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
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

/// The console's (`/console`) Content-Security-Policy: [`CSP`] with `ws:` and `wss:` in
/// `connect-src`, so its raw and Switchboard modes may open a WebSocket to any URL the
/// person types (SSE and polling still reach this origin only). Only the console's page
/// gets it; its scripts are the same `'self'` files as everywhere.
pub(crate) const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

/// One file, ready to serve.
#[derive(Debug)]
struct Page {
    bytes: Bytes,
    content_type: HeaderValue,
    /// Weak: the same ETag names the gzip and the identity forms of the file.
    etag: HeaderValue,
}

/// The files by path under `web/`, and the version naming them all.
#[derive(Debug, Default)]
pub(crate) struct Pages {
    files: HashMap<&'static str, Page>,
    /// A hash of every file: the `VERSION` of `/apps/v/VERSION/…`.
    version: String,
}

/// Where the browser library is served beside the pages' files.
const LIBRARY: &str = "switchboard.js";

/// Cached for good, never asked again: the URL names the version.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Asked again on every load (a 304 when unchanged).
const REVALIDATE: &str = "no-cache";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Pages {
    pub(crate) fn new(files: &'static [Asset]) -> Pages {
        let library: Asset = (LIBRARY, switchboard_server::BROWSER_LIBRARY.as_bytes());
        let all: Vec<Asset> = files
            .iter()
            .copied()
            .chain(std::iter::once(library))
            .filter(|(path, _)| content_type(path).is_some())
            .collect();
        let mut hash = Sha256::new();
        for (path, bytes) in &all {
            hash.update((path.len() as u64).to_le_bytes());
            hash.update(path.as_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        let version = hex(&hash.finalize()[..8]);
        let files = all
            .into_iter()
            .filter_map(|(path, bytes)| {
                let content_type = HeaderValue::from_static(content_type(path)?);
                let bytes = if path.ends_with(".html") {
                    Bytes::from(versioned(bytes, &version))
                } else {
                    Bytes::from_static(bytes)
                };
                let etag = format!("W/\"{}\"", hex(&Sha256::digest(&bytes)[..12]));
                let etag = HeaderValue::from_str(&etag).ok()?;
                Some((
                    path,
                    Page {
                        bytes,
                        content_type,
                        etag,
                    },
                ))
            })
            .collect();
        Pages { files, version }
    }

    /// The version in the pages' file URLs.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    fn serve(&self, path: &str, request: &HeaderMap) -> Response {
        self.serve_with(path, request, REVALIDATE, CSP)
    }

    fn serve_with(
        &self,
        path: &str,
        request: &HeaderMap,
        cache: &'static str,
        csp: &'static str,
    ) -> Response {
        let Some(page) = self.files.get(path) else {
            let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
            secure(response.headers_mut(), CSP);
            return response;
        };
        let mut response = if not_modified(request, &page.etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = Response::new(Body::from(page.bytes.clone()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, page.content_type.clone());
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, page.etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        secure(headers, csp);
        response
    }
}

/// The headers every page and file gets (`csp`: [`CSP`], or the console's).
fn secure(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
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

/// `GET /vote`: the polls, a poll (`?p=ID`) and its presenter mode (`#present`).
pub(crate) async fn vote(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.pages.serve("vote/index.html", &headers)
}

/// `GET /apps/{*path}`: a file, revalidated on every load; under `v/VERSION/`, the same
/// file cached for good when VERSION is the one in force (an older page asking for its own
/// version gets today's file, revalidated).
pub(crate) async fn file(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let pages = &shared.pages;
    if let Some((version, rest)) = path.strip_prefix("v/").and_then(|p| p.split_once('/')) {
        let cache = if version == pages.version() {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        return pages.serve_with(rest, &headers, cache, CSP);
    }
    pages.serve(&path, &headers)
}

/// `GET /console`: with [`CONSOLE_CSP`].
pub(crate) async fn console(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared
        .pages
        .serve_with("console/index.html", &headers, REVALIDATE, CONSOLE_CSP)
}

/// `GET /admin` (the page itself asks `/auth/me` and shows a refusal to non-admins; the
/// figures come from the `admin.` rpc methods, which check the role).
pub(crate) async fn admin(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.pages.serve("admin/index.html", &headers)
}

/// `GET /logs`: the log viewer (as `/admin`, the page refuses non-admins itself, and
/// the `logs` namespace is the admins' only).
pub(crate) async fn logs(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.pages.serve("logs/index.html", &headers)
}

/// `GET /monitor`: the monitoring dashboard (admins only, as `/logs`).
pub(crate) async fn monitor(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.pages.serve("monitor/index.html", &headers)
}

/// A page with its file URLs under the version: `"/apps/…"` becomes `"/apps/v/VERSION/…"`
/// and `"/switchboard.js"` the library served beside them.
fn versioned(html: &[u8], version: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(html);
    text.replace("\"/apps/", &format!("\"/apps/v/{version}/"))
        .replace(
            &format!("\"/{LIBRARY}\""),
            &format!("\"/apps/v/{version}/{LIBRARY}\""),
        )
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_conditional_requests() {
        static FILES: &[Asset] = &[("a.html", b"<p>a</p>"), ("b.exe", b"MZ")];
        let pages = Pages::new(FILES);
        assert!(pages.files.contains_key("a.html"));
        assert!(
            pages.files.contains_key(LIBRARY),
            "the library is served too"
        );
        assert!(
            !pages.files.contains_key("b.exe"),
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
        assert_eq!(page.headers()[header::CACHE_CONTROL], REVALIDATE);
        let console = pages.serve_with("a.html", &HeaderMap::new(), REVALIDATE, CONSOLE_CSP);
        assert_eq!(
            console.headers()[header::CONTENT_SECURITY_POLICY],
            CONSOLE_CSP
        );
        assert!(CONSOLE_CSP.contains("connect-src 'self' ws: wss:;"));
        let missing = pages.serve("../secret", &HeaderMap::new());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(
            missing
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }

    #[test]
    fn pages_name_their_files_under_the_version() {
        static FILES: &[Asset] = &[
            (
                "p/index.html",
                br#"<link rel="stylesheet" href="/apps/style.css"><link rel="modulepreload" href="/switchboard.js"><script type="module" src="/apps/p/p.js"></script>"#,
            ),
            ("style.css", b"p{}"),
        ];
        let pages = Pages::new(FILES);
        let v = pages.version().to_owned();
        assert_eq!(v.len(), 16);
        let html = String::from_utf8_lossy(&pages.files["p/index.html"].bytes).into_owned();
        assert_eq!(
            html,
            format!(
                r#"<link rel="stylesheet" href="/apps/v/{v}/style.css"><link rel="modulepreload" href="/apps/v/{v}/switchboard.js"><script type="module" src="/apps/v/{v}/p/p.js"></script>"#
            )
        );
        // Another file, another version.
        static OTHER: &[Asset] = &[("style.css", b"p{color:red}")];
        assert_ne!(Pages::new(OTHER).version(), v);
    }
}
