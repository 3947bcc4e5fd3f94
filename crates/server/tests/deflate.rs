//! permessage-deflate on `/ws` (RFC 7692): negotiated from the `[deflate]` settings, a
//! publication compressed once and the same frame written to every subscriber that
//! negotiated it, commands the client compressed understood, a decompression bomb closed
//! with 1009, the extension declined when switched off, and the server's own context kept
//! when configured so.

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use serde_json::{Value, json};
use switchboard_ws::frame::{OpCode, encode_frame_rsv1};
use switchboard_ws::{DeflateConfig, Message};
use tokio::net::TcpStream;

use crate::util::{RawFrame, RawPeer, Server, bounded, start, token, upgrade};

/// What browsers send (Chromium's offer).
const OFFER: (&str, &str) = (
    "Sec-WebSocket-Extensions",
    "permessage-deflate; client_max_window_bits",
);

/// A log-like publication of about 4 KB: the traffic deflate is for.
fn log_lines() -> Value {
    let lines: Vec<String> = (0..60)
        .map(|i| format!("10.0.0.{i} - - \"GET /static/app.js HTTP/1.1\" 200 5120 \"Mozilla/5.0\""))
        .collect();
    json!({ "lines": lines })
}

/// Inflates a message's payload with `inflater` (kept across messages when the sender
/// keeps its context), appending the tail that RFC 7692 §7.2.1 removes.
fn inflate_with(inflater: &mut Decompress, payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(input.len() * 20);
    let mut at = 0;
    loop {
        out.reserve(64 << 10);
        let before = inflater.total_in();
        let status = inflater
            .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .expect("valid deflate data");
        at += usize::try_from(inflater.total_in() - before).expect("fits");
        if at == input.len() || status == Status::StreamEnd {
            return out;
        }
    }
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    inflate_with(&mut Decompress::new(false), payload)
}

/// A raw connection and its inflater: one for the whole connection, which reads both a
/// sender that keeps its context and one that starts each message afresh.
struct Peer {
    raw: RawPeer,
    inflater: Decompress,
}

impl Peer {
    /// Opens `/ws` offering permessage-deflate (or not), sends `connect` for `user` and
    /// subscribes to `channel`; returns the peer and the 101 response head, lowercased.
    async fn subscribe(server: &Server, user: &str, channel: &str, offer: bool) -> (Peer, String) {
        let stream = bounded("TCP connect", TcpStream::connect(server.addr))
            .await
            .expect("connect");
        let headers: &[(&str, &str)] = if offer { &[OFFER] } else { &[] };
        let (status, head, raw) = upgrade(stream, &server.addr.to_string(), headers).await;
        assert_eq!(status, 101, "{head}");
        let mut peer = Peer {
            raw,
            inflater: Decompress::new(false),
        };
        let connect = json!({"id": 1, "cmd": "connect", "token": token(user, None, &[], 3600)});
        peer.raw.send_text(&connect.to_string()).await;
        assert!(peer.next().await.1.get("result").is_some());
        let subscribe = json!({"id": 2, "cmd": "subscribe", "channel": channel});
        peer.raw.send_text(&subscribe.to_string()).await;
        loop {
            let (_, reply) = peer.next().await;
            if reply["id"] == 2 {
                assert!(reply.get("result").is_some(), "{reply}");
                return (peer, head.to_ascii_lowercase());
            }
        }
    }

    /// The next text frame as it came, and its message (inflated when compressed).
    async fn next(&mut self) -> (RawFrame, Value) {
        loop {
            let frame = self.raw.read_frame().await;
            if frame.opcode != 0x1 {
                continue;
            }
            let text = if frame.rsv1 {
                inflate_with(&mut self.inflater, &frame.payload)
            } else {
                frame.payload.clone()
            };
            let message = serde_json::from_slice(&text).expect("JSON");
            return (frame, message);
        }
    }

    /// Reads until a publication; returns its frame as it came, and the message.
    async fn publication(&mut self) -> (RawFrame, Value) {
        loop {
            let (frame, message) = self.next().await;
            if message["push"] == "publication" {
                return (frame, message);
            }
        }
    }
}

#[tokio::test]
async fn a_publication_is_compressed_once_and_every_subscriber_gets_the_same_frame() {
    let server = start(|_| {}).await;
    let mut compressing = Vec::new();
    for user in ["ann", "bob"] {
        let (peer, head) = Peer::subscribe(&server, user, "chat:logs", true).await;
        // No context either way unless configured: one frame serves everyone, and an idle
        // connection holds no zlib state.
        assert!(
            head.contains(
                "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover"
            ),
            "{head}"
        );
        compressing.push(peer);
    }
    let (mut plain, head) = Peer::subscribe(&server, "cat", "chat:logs", false).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");

    let bytes_before = server.metric("switchboard_bytes_out_total").await;
    server.publish("chat:logs", log_lines()).await;
    let (sent_plain, message) = plain.publication().await;
    assert!(!sent_plain.rsv1);
    assert_eq!(message["data"], log_lines());
    let mut frames = Vec::new();
    for peer in &mut compressing {
        frames.push(peer.publication().await.0);
    }
    for frame in &frames {
        assert!(frame.rsv1, "compressed");
        assert_eq!(frame.payload, frames[0].payload, "the same bytes for both");
        assert_eq!(inflate(&frame.payload), sent_plain.payload);
        assert!(
            frame.payload.len() * 5 < sent_plain.payload.len(),
            "{} bytes compressed from {}",
            frame.payload.len(),
            sent_plain.payload.len()
        );
    }
    // The counter counts what was written: two compressed frames and one plain.
    let written = server.metric("switchboard_bytes_out_total").await - bytes_before;
    let plain_len = sent_plain.payload.len() as f64;
    assert!(
        written < plain_len * 1.5,
        "{written} bytes counted for one plain frame of {plain_len} and two compressed"
    );
}

#[tokio::test]
async fn compressed_commands_are_understood_and_a_decompression_bomb_closes_with_1009() {
    let server = start(|_| {}).await;
    // Our own client, offering deflate: its connect and publish (over 64 bytes) go
    // compressed, the server inflates them, and the publication comes back compressed.
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let config = switchboard_ws::Config {
        deflate: DeflateConfig::enabled(),
        ..switchboard_ws::Config::default()
    };
    let host = server.addr.to_string();
    let (mut ws, response) = bounded(
        "handshake",
        switchboard_ws::tokio::connect(stream, &host, "/ws", &[], &[], config),
    )
    .await
    .expect("handshake");
    assert!(response.deflate.is_some(), "the server took the offer");
    let next = async |ws: &mut switchboard_ws::tokio::WebSocket<TcpStream>| loop {
        match bounded("a message", ws.recv()).await.expect("recv") {
            Some(Message::Text(text)) => {
                break serde_json::from_str::<Value>(&text).expect("JSON");
            }
            Some(_) => {}
            None => panic!("closed"),
        }
    };
    let commands = [
        json!({"id": 1, "cmd": "connect", "token": token("dan", None, &[], 3600)}),
        json!({"id": 2, "cmd": "subscribe", "channel": "chat:logs"}),
        json!({"id": 3, "cmd": "publish", "channel": "chat:logs", "data": log_lines()}),
    ];
    for command in commands {
        ws.send(&Message::text(command.to_string()))
            .await
            .expect("send");
        let id = command["id"].clone();
        loop {
            let message = next(&mut ws).await;
            if message["push"] == "publication" {
                assert_eq!(message["data"], log_lines());
            }
            if message["id"] == id {
                assert!(message.get("result").is_some(), "{message}");
                break;
            }
        }
    }

    // 1 MiB of zeros deflates to about a kilobyte: far past the 64 KiB message limit once
    // inflated. The server must stop inflating at the limit and close with 1009.
    let (mut peer, _) = Peer::subscribe(&server, "eve", "chat:logs", true).await;
    let zeros = vec![0u8; 1 << 20];
    let mut packed = Vec::with_capacity(4096);
    let mut deflater = Compress::new(Compression::best(), false);
    deflater
        .compress_vec(&zeros, &mut packed, FlushCompress::Sync)
        .expect("deflate");
    assert!(packed.ends_with(&[0, 0, 0xff, 0xff]) && packed.len() < 8192);
    packed.truncate(packed.len() - 4);
    let mut frame = BytesMut::new();
    encode_frame_rsv1(
        &mut frame,
        true,
        true,
        OpCode::Text,
        &packed,
        Some([9, 8, 7, 6]),
    );
    peer.raw.send_raw(&frame).await;
    loop {
        let frame = peer.raw.read_frame().await;
        if frame.opcode == 0x8 {
            assert_eq!(frame.close_code(), Some(1009));
            break;
        }
    }
    // Still serving everyone else.
    let mut other = server.client("fay").await;
    other.barrier().await;
}

#[tokio::test]
async fn switched_off_the_offer_is_declined_and_frames_go_plain() {
    let server = start(|c| c.deflate.enabled = false).await;
    let (mut peer, head) = Peer::subscribe(&server, "gus", "chat:logs", true).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    server.publish("chat:logs", log_lines()).await;
    let (frame, message) = peer.publication().await;
    assert!(!frame.rsv1);
    assert_eq!(message["data"], log_lines());
}

#[tokio::test]
async fn with_server_context_takeover_each_connection_compresses_in_its_own_context() {
    let server = start(|c| c.deflate.server_context_takeover = true).await;
    // An offer that lets the server keep its context.
    let (mut peer, head) = Peer::subscribe(&server, "hal", "chat:logs", true).await;
    assert!(
        head.contains("permessage-deflate; client_no_context_takeover")
            && !head.contains("server_no_context_takeover"),
        "{head}"
    );
    // Every compressed message went through the peer's one inflater, in order (replies
    // and pushes too): the server's context is one stream for the connection.
    let mut sizes = Vec::new();
    for _ in 0..3 {
        server.publish("chat:logs", log_lines()).await;
        let (frame, message) = peer.publication().await;
        assert!(frame.rsv1);
        assert_eq!(message["data"], log_lines());
        sizes.push(frame.payload.len());
    }
    // The same text again costs a few bytes of back-references with the context kept.
    assert!(sizes[1] * 4 < sizes[0], "{sizes:?}");
    assert!(sizes[2] * 4 < sizes[0], "{sizes:?}");
}
