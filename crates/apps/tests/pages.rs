//! The pages and files: types, the security headers, ETag and 304, gzip.

use crate::util::start;

#[tokio::test]
async fn pages_have_csp_etags_and_compression() {
    let server = start(|_| {}).await;
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/signin", "text/html; charset=utf-8"),
        ("/chat", "text/html; charset=utf-8"),
        ("/apps/lib/dom.js", "text/javascript; charset=utf-8"),
        ("/apps/style.css", "text/css; charset=utf-8"),
    ] {
        let page = server.get(path, &[]).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.header("content-type"), Some(kind), "{path}");
        let csp = page.header("content-security-policy").expect("a CSP");
        for rule in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("referrer-policy"), Some("same-origin"));
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        // A revisit is one 304, with no body.
        let etag = page.header("etag").expect("an ETag").to_owned();
        let again = server.get(path, &[("If-None-Match", &etag)]).await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        assert!(again.header("content-security-policy").is_some());
    }
    let plain = server.get("/", &[]).await;
    let gzip = server.get("/", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(gzip.status, 200);
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert!(gzip.body.len() < plain.body.len(), "compressed");
    assert_eq!(&gzip.body[..2], b"\x1f\x8b", "a gzip stream");
    assert_eq!(gzip.header("etag"), plain.header("etag"), "one weak ETag");

    let missing = server.get("/apps/nothing.js", &[]).await;
    assert_eq!(missing.status, 404);
    assert!(missing.header("content-security-policy").is_some());
    let escape = server.get("/apps/../Cargo.toml", &[]).await;
    assert_ne!(escape.status, 200);
}

/// A page names its files under `/apps/v/VERSION/`, served `immutable` (a revisit asks
/// only for the page), the browser library among them with the bytes of `/switchboard.js`;
/// another version's URL is answered, but revalidated.
#[tokio::test]
async fn a_page_names_its_files_under_a_version_cached_for_good() {
    // The real pages of web/, as the binary serves them.
    let server = start(|o| o.assets = switchboard_apps::assets::FILES).await;
    let page = server.get("/chat", &[]).await;
    let html = String::from_utf8_lossy(&page.body).into_owned();
    let at = html.find("/apps/v/").expect("a versioned URL");
    let version: String = html[at + "/apps/v/".len()..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    assert_eq!(version.len(), 16, "{html}");
    assert!(
        !html.contains("\"/apps/style"),
        "every file URL is versioned: {html}"
    );
    assert!(!html.contains("\"/switchboard.js\""), "{html}");
    for file in ["style.css", "switchboard.js"] {
        let path = format!("/apps/v/{version}/{file}");
        assert!(html.contains(&format!("\"{path}\"")), "{path} in {html}");
        let got = server.get(&path, &[]).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(
            got.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{path}"
        );
    }
    let library = server
        .get(&format!("/apps/v/{version}/switchboard.js"), &[])
        .await;
    let served = server.get("/switchboard.js", &[]).await;
    assert_eq!(library.body, served.body, "the same library");
    let old = server.get("/apps/v/0123456789abcdef/style.css", &[]).await;
    assert_eq!(old.status, 200);
    assert_eq!(old.header("cache-control"), Some("no-cache"));
}
