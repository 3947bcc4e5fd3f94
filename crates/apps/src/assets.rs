//! The files of `crates/apps/web/`, embedded in the binary: one entry per file, by its
//! path under `web/`. Add a line here for every file you add there; the test below fails
//! when a file of `web/` is missing from the table.
//!
//! `/` serves `home/index.html`, `/signin` `signin/index.html`, `/chat`
//! `chat/index.html`, `/vote` `vote/index.html`, `/console` `console/index.html` (with its
//! own CSP), `/admin` `admin/index.html`, `/logs` `logs/index.html`, `/monitor`
//! `monitor/index.html`; every file is also at `/apps/PATH`.

/// An embedded file: its path under `web/` and its bytes.
pub type Asset = (&'static str, &'static [u8]);

/// Every file of `web/`. Keep it in the order of the paths.
pub const FILES: &[Asset] = &[
    ("admin/admin.css", include_bytes!("../web/admin/admin.css")),
    ("admin/admin.js", include_bytes!("../web/admin/admin.js")),
    (
        "admin/index.html",
        include_bytes!("../web/admin/index.html"),
    ),
    ("chat/chat.js", include_bytes!("../web/chat/chat.js")),
    ("chat/index.html", include_bytes!("../web/chat/index.html")),
    (
        "chat/timeline.js",
        include_bytes!("../web/chat/timeline.js"),
    ),
    (
        "console/console.css",
        include_bytes!("../web/console/console.css"),
    ),
    (
        "console/console.js",
        include_bytes!("../web/console/console.js"),
    ),
    (
        "console/frames.js",
        include_bytes!("../web/console/frames.js"),
    ),
    (
        "console/index.html",
        include_bytes!("../web/console/index.html"),
    ),
    ("home/home.js", include_bytes!("../web/home/home.js")),
    ("home/index.html", include_bytes!("../web/home/index.html")),
    ("icon.svg", include_bytes!("../web/icon.svg")),
    ("lib/ansi.js", include_bytes!("../web/lib/ansi.js")),
    ("lib/chart.js", include_bytes!("../web/lib/chart.js")),
    ("lib/dom.js", include_bytes!("../web/lib/dom.js")),
    ("lib/format.js", include_bytes!("../web/lib/format.js")),
    ("lib/i18n.js", include_bytes!("../web/lib/i18n.js")),
    ("lib/opsbar.js", include_bytes!("../web/lib/opsbar.js")),
    ("lib/qr.js", include_bytes!("../web/lib/qr.js")),
    ("lib/ring.js", include_bytes!("../web/lib/ring.js")),
    ("lib/session.js", include_bytes!("../web/lib/session.js")),
    ("lib/strings.js", include_bytes!("../web/lib/strings.js")),
    ("logs/index.html", include_bytes!("../web/logs/index.html")),
    ("logs/logs.css", include_bytes!("../web/logs/logs.css")),
    ("logs/logs.js", include_bytes!("../web/logs/logs.js")),
    (
        "monitor/index.html",
        include_bytes!("../web/monitor/index.html"),
    ),
    (
        "monitor/monitor.css",
        include_bytes!("../web/monitor/monitor.css"),
    ),
    (
        "monitor/monitor.js",
        include_bytes!("../web/monitor/monitor.js"),
    ),
    (
        "signin/index.html",
        include_bytes!("../web/signin/index.html"),
    ),
    (
        "signin/signin.js",
        include_bytes!("../web/signin/signin.js"),
    ),
    ("style.css", include_bytes!("../web/style.css")),
    ("vote/index.html", include_bytes!("../web/vote/index.html")),
    ("vote/vote.js", include_bytes!("../web/vote/vote.js")),
];

/// The `Content-Type` of a path, by its extension; `None` for an extension the apps do
/// not serve (the test below keeps the table to these).
pub fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.').map(|(_, ext)| ext)?;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// Every file under `web/` is served: none forgotten in the table.
    #[test]
    fn every_file_of_web_is_in_the_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files.sort();
        let table: Vec<&str> = FILES.iter().map(|(path, _)| *path).collect();
        let missing: Vec<&String> = files
            .iter()
            .filter(|f| !table.contains(&f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "add these files of crates/apps/web/ to FILES in crates/apps/src/assets.rs: {missing:?}"
        );
        for (path, _) in FILES {
            assert!(
                content_type(path).is_some(),
                "{path}: add its type to content_type"
            );
            assert!(!path.starts_with('/') && !path.contains(".."), "{path}");
        }
        let mut sorted = table.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            table, sorted,
            "FILES is in the order of the paths, each once"
        );
    }
}
