//! Our client's permessage-deflate against a real server: Node's `ws` package (from
//! js/node_modules, installed by `npm ci` in js/), running tests/node/deflate_echo.cjs.
//! Skipped, with a message saying so, when `node` or js/node_modules/ws is missing, unless
//! `SWITCHBOARD_REQUIRE_NODE` is set (scripts/test sets it after `npm ci`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;

use switchboard_ws::tokio::WebSocket;
use switchboard_ws::{DeflateConfig, Message};
use tokio::net::TcpStream;

use crate::deflate::{Counted, our_client};
use crate::util::timed;

/// A running Node server, killed when dropped.
struct NodeServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tests/node/deflate_echo.cjs with ws's `perMessageDeflate` options, or returns
/// `None` (after saying why) when Node or the `ws` package is not there.
fn node_server(options: &str) -> Option<NodeServer> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("../../js/node_modules");
    let script = root.join("tests/node/deflate_echo.cjs");
    let required = std::env::var_os("SWITCHBOARD_REQUIRE_NODE").is_some();
    let missing = |why: String| {
        assert!(!required, "SWITCHBOARD_REQUIRE_NODE is set, but {why}");
        eprintln!("SKIPPED: the Node ws interop test: {why} (run `npm ci` in js/)");
    };
    if !modules.join("ws/package.json").exists() {
        missing(format!("{} has no ws package", modules.display()));
        return None;
    }
    let child = Command::new("node")
        .arg(&script)
        .arg(options)
        .env("NODE_PATH", &modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            missing(format!("node could not be started: {err}"));
            return None;
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the node server's port");
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the node server printed {line:?}, not its port"));
    Some(NodeServer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

async fn next(ws: &mut WebSocket<Counted<TcpStream>>) -> Message {
    ws.recv().await.expect("recv").expect("a message")
}

/// Sends similar messages (and one fragmented answer) and checks every echo and that the
/// bytes on the wire, both ways, are a fraction of the payloads.
async fn exchange(ws: &mut WebSocket<Counted<TcpStream>>) {
    let (read0, written0) = (
        ws.get_ref().read.load(Ordering::Relaxed),
        ws.get_ref().written.load(Ordering::Relaxed),
    );
    let mut plain = 0;
    for i in 0..50 {
        let message = if i % 2 == 0 {
            Message::text(
                format!("{{\"channel\":\"logs\",\"seq\":{i},\"line\":\"GET /index.html 200\"}}")
                    .repeat(10),
            )
        } else {
            Message::binary(vec![(i % 7) as u8; 2000 + i])
        };
        plain += match &message {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        ws.send(&message).await.expect("send");
        assert_eq!(next(ws).await, message, "echo of message {i}");
    }
    let (read, written) = (
        ws.get_ref().read.load(Ordering::Relaxed) - read0,
        ws.get_ref().written.load(Ordering::Relaxed) - written0,
    );
    assert!(
        read < plain / 4 && written < plain / 4,
        "{plain} bytes of payload, {read} read, {written} written"
    );
    // A compressed message in 5 fragments from node, inflated across them.
    let body = "fragmented and compressed by node ".repeat(200);
    ws.send(&Message::text(format!("!fragments 5 {body}")))
        .await
        .expect("send");
    assert_eq!(next(ws).await, Message::text(body));
}

#[tokio::test]
async fn our_client_negotiates_deflate_with_node_ws() {
    timed(async {
        // Node's defaults: it honours our request for server_no_context_takeover.
        let Some(node) = node_server("{}") else {
            return;
        };
        let (mut ws, response) = our_client(node.addr, DeflateConfig::enabled()).await;
        let params = response.deflate.expect("node accepted permessage-deflate");
        assert!(params.server_no_context_takeover, "{params:?}");
        let Message::Text(report) = next(&mut ws).await else {
            panic!("expected node's report");
        };
        assert!(report.contains("permessage-deflate"), "{report}");
        exchange(&mut ws).await;
        ws.close(None).await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn our_client_keeps_contexts_with_node_ws() {
    timed(async {
        let Some(node) = node_server("{}") else {
            return;
        };
        let keep = DeflateConfig {
            context_takeover: true,
            peer_context_takeover: true,
            ..DeflateConfig::enabled()
        };
        let (mut ws, response) = our_client(node.addr, keep).await;
        let params = response.deflate.expect("accepted");
        assert!(
            !params.server_no_context_takeover && !params.client_no_context_takeover,
            "{params:?}"
        );
        next(&mut ws).await;
        exchange(&mut ws).await;
        ws.close(None).await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn our_client_uses_the_windows_node_ws_sets() {
    timed(async {
        // Node limits both windows: ours to 9 bits, its own to 10. zlib on its side
        // rejects a stream that reaches further back than the window it set.
        let Some(node) = node_server(r#"{"serverMaxWindowBits":10,"clientMaxWindowBits":9}"#)
        else {
            return;
        };
        let (mut ws, response) = our_client(node.addr, DeflateConfig::enabled()).await;
        let params = response.deflate.expect("accepted");
        assert_eq!(
            (params.server_window_bits(), params.client_window_bits()),
            (10, 9),
            "{params:?}"
        );
        next(&mut ws).await;
        exchange(&mut ws).await;
        ws.close(None).await.expect("close");
    })
    .await;
}
