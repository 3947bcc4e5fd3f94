//! The browser library, served by the binary: `GET /switchboard.js` (an ES module) and
//! `GET /switchboard.d.ts` (its TypeScript declarations). Both are compiled in with
//! `include_str!`, so a page needs nothing but the server. See docs/client.md.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The library's source (`crates/server/assets/switchboard.js`).
pub(crate) const SWITCHBOARD_JS: &str = include_str!("../../assets/switchboard.js");
/// Its TypeScript declarations (`crates/server/assets/switchboard.d.ts`).
pub(crate) const SWITCHBOARD_DTS: &str = include_str!("../../assets/switchboard.d.ts");

/// The routes of the two files, for any router state.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/switchboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SWITCHBOARD_JS) }),
        )
        .route(
            "/switchboard.d.ts",
            get(|| async { asset("application/typescript; charset=utf-8", SWITCHBOARD_DTS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Pages on other origins import the module too (`<script type="module" src=…>` is a
    // CORS request); the file is public, so any origin may read it.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // Revalidate on every load, so a page never runs a library older than its server.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_is_an_es_module_exporting_the_client() {
        assert!(SWITCHBOARD_JS.contains("export class Switchboard"));
        assert!(SWITCHBOARD_DTS.contains("export class Switchboard"));
    }
}
