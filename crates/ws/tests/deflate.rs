//! permessage-deflate (RFC 7692) on the wire: negotiation as a raw client sees it, frames
//! with RSV1, fragmented compressed messages, the decompression bomb, RSV1 misuse, our
//! client against our server with and without context takeover, and a bad response
//! failing our client. The DEFLATE data on the test side comes from flate2 directly, not
//! from the crate's codec.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use switchboard_ws::frame::{OpCode, encode_frame_rsv1};
use switchboard_ws::handshake::HandshakeError;
use switchboard_ws::tokio::{WebSocket, accept, connect};
use switchboard_ws::{Config, DeflateConfig, Error, Message, PreparedMessage, ProtocolError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::util::{EchoServer, MASK, Raw, SAMPLE_REQUEST, frame, timed};

/// Raw DEFLATE of one message from an empty context, sync-flushed, tail removed (§7.2.1).
pub(crate) fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("compress");
    assert!(c.total_in() as usize == data.len() && out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates one message compressed from an empty context (§7.2.2).
pub(crate) fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let input = [data, &[0, 0, 0xff, 0xff]].concat();
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflate");
    assert_eq!(d.total_in() as usize, input.len(), "all input read");
    out
}

/// A masked client frame with RSV1 chosen.
fn frame_rsv1(fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    encode_frame_rsv1(&mut out, fin, rsv1, opcode, payload, Some(MASK));
    out.to_vec()
}

fn on() -> Config {
    Config {
        deflate: DeflateConfig::enabled(),
        ..Config::default()
    }
}

/// The sample request with a `Sec-WebSocket-Extensions` header.
fn offer_request(offer: &str) -> Vec<u8> {
    let head = &SAMPLE_REQUEST[..SAMPLE_REQUEST.len() - 2];
    [
        head,
        format!("Sec-WebSocket-Extensions: {offer}\r\n\r\n").as_bytes(),
    ]
    .concat()
}

/// Connects, offers `offer`, and returns the client with the server's
/// `Sec-WebSocket-Extensions` answer (`None` if it has none).
async fn raw_offer(server: &EchoServer, offer: &str) -> (Raw, Option<String>) {
    let mut raw = Raw::connect(server.addr).await;
    raw.write(&offer_request(offer)).await;
    let head = raw.read_head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let answer = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    });
    (raw, answer)
}

fn text(len: usize) -> String {
    (0..)
        .map(|i| format!("{{\"seq\":{i},\"text\":\"hello from the test\"}} "))
        .flat_map(|s| s.chars().collect::<Vec<_>>())
        .take(len)
        .collect()
}

#[tokio::test]
async fn rfc7692_7_server_answers_and_echoes_compressed() {
    timed(async {
        let mut server = EchoServer::with_config(on()).await;
        let (mut raw, answer) =
            raw_offer(&server, "permessage-deflate; client_max_window_bits").await;
        assert_eq!(
            answer.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        let message = text(2000);
        raw.write(&frame_rsv1(
            true,
            true,
            OpCode::Text,
            &deflate(message.as_bytes()),
        ))
        .await;
        assert_eq!(server.received().await, Message::text(message.as_str()));
        let echo = raw.read_frame().await;
        assert_eq!((echo.fin, echo.rsv, echo.opcode), (true, 0b100, 0x1));
        assert!(
            echo.payload.len() < message.len() / 4,
            "{}",
            echo.payload.len()
        );
        assert_eq!(inflate(&echo.payload), message.as_bytes());
        // Below the minimum size: sent plain (RSV1 decided per message, §6).
        raw.write(&frame(true, OpCode::Text, b"hi")).await;
        raw.expect_frame(0x1, b"hi").await;
        // A compressed binary message, and an uncompressed one of the same size.
        let data = vec![7u8; 5000];
        raw.write(&frame_rsv1(true, true, OpCode::Binary, &deflate(&data)))
            .await;
        let echo = raw.read_frame().await;
        assert_eq!((echo.rsv, echo.opcode), (0b100, 0x2));
        assert_eq!(inflate(&echo.payload), data);
        raw.write(&frame(true, OpCode::Binary, &data)).await;
        let echo = raw.read_frame().await;
        assert_eq!(inflate(&echo.payload), data);
    })
    .await;
}

#[tokio::test]
async fn rfc7692_5_1_bad_offer_declined_and_a_later_one_taken() {
    timed(async {
        let server = EchoServer::with_config(on()).await;
        let (_raw, answer) = raw_offer(
            &server,
            "permessage-deflate; server_max_window_bits=16, x-unknown, \
             permessage-deflate; server_max_window_bits=10; client_max_window_bits",
        )
        .await;
        assert_eq!(
            answer.as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10"
            )
        );
        for bad in [
            "permessage-deflate; client_max_window_bits=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_parameter",
        ] {
            let (_raw, answer) = raw_offer(&server, bad).await;
            assert_eq!(answer, None, "{bad}");
        }
        // Off: no answer to a good offer.
        let off = EchoServer::start().await;
        let (_raw, answer) = raw_offer(&off, "permessage-deflate").await;
        assert_eq!(answer, None);
    })
    .await;
}

#[tokio::test]
async fn rfc7692_window_bits_answered_from_9_to_15() {
    timed(async {
        let mut server = EchoServer::with_config(on()).await;
        // Kept open: a closed one would report its end among the next one's events.
        let mut open = Vec::new();
        for bits in 8..=15 {
            let (mut raw, answer) = raw_offer(
                &server,
                &format!("permessage-deflate; server_max_window_bits={bits}"),
            )
            .await;
            let answer = answer.expect("accepted");
            assert!(
                answer.ends_with(&format!("server_max_window_bits={bits}")),
                "{answer}"
            );
            let message = text(3000);
            raw.write(&frame(true, OpCode::Text, message.as_bytes()))
                .await;
            server.received().await;
            let echo = raw.read_frame().await;
            if bits == 8 {
                // zlib cannot deflate with a 256-byte window: sent plain.
                assert_eq!(echo.rsv, 0);
                assert_eq!(echo.payload, message.as_bytes());
            } else {
                assert_eq!(echo.rsv, 0b100, "{bits}");
                let mut d = Decompress::new_with_window_bits(false, bits);
                let input = [&echo.payload[..], &[0, 0, 0xff, 0xff]].concat();
                let mut out = Vec::with_capacity(8192);
                d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
                    .expect("inflates with the declared window");
                assert_eq!(out, message.as_bytes());
            }
            open.push(raw);
        }
    })
    .await;
}

#[tokio::test]
async fn rfc7692_6_1_fragmented_compressed_message_with_a_ping_inside() {
    timed(async {
        let mut server = EchoServer::with_config(on()).await;
        let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
        let message = text(20_000);
        let packed = deflate(message.as_bytes());
        let (a, rest) = packed.split_at(packed.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        raw.write(&frame_rsv1(false, true, OpCode::Text, a)).await;
        raw.write(&frame(false, OpCode::Continuation, b)).await;
        raw.write(&frame(true, OpCode::Ping, b"between")).await;
        raw.write(&frame(false, OpCode::Continuation, &[])).await;
        raw.write(&frame(true, OpCode::Continuation, c)).await;
        raw.expect_frame(0xa, b"between").await;
        assert!(matches!(server.received().await, Message::Ping(_)));
        assert_eq!(server.received().await, Message::text(message.as_str()));
        let echo = raw.read_frame().await;
        assert_eq!(echo.rsv, 0b100);
        assert_eq!(inflate(&echo.payload), message.as_bytes());
        // The next message inflates from an empty context again (no takeover asked).
        raw.write(&frame_rsv1(true, true, OpCode::Text, &packed))
            .await;
        assert_eq!(server.received().await, Message::text(message.as_str()));
    })
    .await;
}

#[tokio::test]
async fn rfc7692_text_is_validated_after_inflating() {
    timed(async {
        let mut server = EchoServer::with_config(on()).await;
        let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
        // The UTF-8 of a compressed text message is that of its inflated bytes: a
        // character cut between two compressed frames is fine, invalid UTF-8 inside the
        // compressed payload closes with 1007.
        let packed = deflate("ok κ".as_bytes());
        let (a, b) = packed.split_at(packed.len() - 2);
        raw.write(&frame_rsv1(false, true, OpCode::Text, a)).await;
        raw.write(&frame(true, OpCode::Continuation, b)).await;
        assert_eq!(server.received().await, Message::text("ok κ"));
        raw.expect_frame(0x1, "ok κ".as_bytes()).await;
        raw.write(&frame_rsv1(
            true,
            true,
            OpCode::Text,
            &deflate(b"bad \xff\xfe"),
        ))
        .await;
        server.expect_failure(raw, ProtocolError::InvalidUtf8).await;
    })
    .await;
}

#[tokio::test]
async fn rfc7692_decompression_bomb_closes_with_1009() {
    timed(async {
        let limit = 1 << 20;
        let config = Config {
            max_message_size: limit,
            ..on()
        };
        let mut server = EchoServer::with_config(config).await;
        // 16 MiB of zeros in about 16 KiB.
        let bomb = deflate(&vec![0u8; 16 << 20]);
        assert!(bomb.len() < 32 << 10, "{}", bomb.len());
        let expected = ProtocolError::MessageTooLarge {
            size: limit as u64 + 1,
            limit,
        };
        let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
        raw.write(&frame_rsv1(true, true, OpCode::Binary, &bomb))
            .await;
        server.expect_failure(raw, expected.clone()).await;
        // The same bomb in fragments: the bound counts what is already inflated.
        let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
        let (a, b) = bomb.split_at(bomb.len() / 2);
        raw.write(&frame_rsv1(false, true, OpCode::Binary, a)).await;
        raw.write(&frame(true, OpCode::Continuation, b)).await;
        server.expect_failure(raw, expected).await;
        // Just under the limit is accepted.
        let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
        raw.write(&frame_rsv1(
            true,
            true,
            OpCode::Binary,
            &deflate(&vec![0u8; limit]),
        ))
        .await;
        assert_eq!(server.received().await, Message::binary(vec![0u8; limit]));
    })
    .await;
}

#[tokio::test]
async fn rfc7692_6_rsv1_misuse_closes_with_1002() {
    timed(async {
        let mut server = EchoServer::with_config(on()).await;
        let packed = deflate(b"compressed but not negotiated");
        // Not negotiated (no offer made): RSV1 is a reserved bit (RFC 6455 §5.2).
        let mut raw = Raw::upgrade(server.addr).await;
        raw.write(&frame_rsv1(true, true, OpCode::Text, &packed))
            .await;
        server
            .expect_failure(raw, ProtocolError::ReservedBits)
            .await;
        // Negotiated, but on a continuation frame.
        let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
        let (a, b) = packed.split_at(4);
        raw.write(&frame_rsv1(false, true, OpCode::Text, a)).await;
        raw.write(&frame_rsv1(true, true, OpCode::Continuation, b))
            .await;
        server
            .expect_failure(raw, ProtocolError::ReservedBits)
            .await;
        // Negotiated, but on control frames.
        for opcode in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
            raw.write(&frame_rsv1(true, true, opcode, b"")).await;
            server
                .expect_failure(raw, ProtocolError::ReservedBits)
                .await;
        }
        // Data that is not DEFLATE.
        let (mut raw, _) = raw_offer(&server, "permessage-deflate").await;
        raw.write(&frame_rsv1(true, true, OpCode::Binary, &[0xff; 16]))
            .await;
        server
            .expect_failure(raw, ProtocolError::BadCompressedData)
            .await;
    })
    .await;
}

/// A stream that counts the bytes through it, to see compression on the wire.
#[derive(Debug)]
pub(crate) struct Counted<S> {
    pub(crate) inner: S,
    pub(crate) read: Arc<AtomicUsize>,
    pub(crate) written: Arc<AtomicUsize>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S) -> Self {
        Counted {
            inner,
            read: Arc::default(),
            written: Arc::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n, Ordering::Relaxed);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.written.fetch_add(n, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Our client, counted, with `deflate` settings.
pub(crate) async fn our_client(
    addr: std::net::SocketAddr,
    deflate: DeflateConfig,
) -> (
    WebSocket<Counted<TcpStream>>,
    switchboard_ws::handshake::client::Response,
) {
    let stream = Counted::new(TcpStream::connect(addr).await.expect("connect"));
    let config = Config {
        deflate,
        ..Config::default()
    };
    connect(stream, &addr.to_string(), "/", &[], &[], config)
        .await
        .expect("handshake")
}

#[tokio::test]
async fn our_client_and_server_round_trip_with_and_without_context_takeover() {
    timed(async {
        let keep = DeflateConfig {
            context_takeover: true,
            peer_context_takeover: true,
            ..DeflateConfig::enabled()
        };
        let narrow = DeflateConfig {
            max_window_bits: 9,
            peer_max_window_bits: 10,
            ..DeflateConfig::enabled()
        };
        let cases = [
            (
                DeflateConfig::enabled(),
                DeflateConfig::enabled(),
                true,
                true,
            ),
            (keep.clone(), keep.clone(), false, false),
            // Our client keeps its context but the server asks it not to.
            (keep.clone(), DeflateConfig::enabled(), true, true),
            // The server would keep its context but the client asks it not to.
            (DeflateConfig::enabled(), keep.clone(), true, false),
            (narrow.clone(), narrow, true, true),
        ];
        for (client_config, server_config, server_nct, client_nct) in cases {
            let mut server = EchoServer::with_config(Config {
                deflate: server_config.clone(),
                ..Config::default()
            })
            .await;
            let (mut ws, response) = our_client(server.addr, client_config.clone()).await;
            let params = response.deflate.expect("deflate accepted");
            assert!(ws.deflate());
            assert_eq!(
                (
                    params.server_no_context_takeover,
                    params.client_no_context_takeover
                ),
                (server_nct, client_nct),
                "{client_config:?} / {server_config:?}"
            );
            let messages: Vec<Message> = (0..20)
                .map(|i| match i % 3 {
                    0 => Message::text(text(100 + i * 37)),
                    1 => Message::binary(vec![i as u8; 3000 + i]),
                    _ => Message::text(format!("short {i}")),
                })
                .collect();
            let plain: usize = messages
                .iter()
                .map(|m| match m {
                    Message::Text(t) => t.len(),
                    Message::Binary(b) => b.len(),
                    _ => 0,
                })
                .sum();
            for message in &messages {
                ws.send(message).await.expect("send");
                assert_eq!(&server.received().await, message);
                let back = ws.recv().await.expect("recv").expect("a message");
                assert_eq!(&back, message);
            }
            let (read, written) = (
                ws.get_ref().read.load(Ordering::Relaxed),
                ws.get_ref().written.load(Ordering::Relaxed),
            );
            assert!(
                written < plain / 3 && read < plain / 3,
                "{plain} bytes of payload, {written} written, {read} read"
            );
            ws.close(None).await.expect("close");
        }
    })
    .await;
}

#[tokio::test]
async fn without_an_offer_nothing_is_negotiated() {
    timed(async {
        let mut server = EchoServer::with_config(on()).await;
        let (mut ws, response) = our_client(server.addr, DeflateConfig::default()).await;
        assert_eq!(response.deflate, None);
        assert!(!ws.deflate());
        let message = Message::text(text(5000));
        ws.send(&message).await.expect("send");
        assert_eq!(server.received().await, message);
        assert_eq!(ws.recv().await.expect("recv"), Some(message));
        assert!(ws.get_ref().read.load(Ordering::Relaxed) > 5000);
    })
    .await;
}

/// A server that answers the upgrade with `extensions` as its `Sec-WebSocket-Extensions`.
async fn answering(extensions: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut raw = Raw::new(stream);
            let head = raw.read_head().await;
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("key")
                .to_owned();
            let accept = switchboard_ws::handshake::accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\
                 Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
            );
            raw.write(response.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn rfc7692_5_2_our_client_fails_on_a_bad_response() {
    timed(async {
        for (answer, offered) in [
            ("permessage-deflate; x=1", true),
            ("permessage-deflate; server_max_window_bits=7", true),
            ("permessage-deflate; client_max_window_bits", true),
            ("permessage-deflate; server_no_context_takeover=1", true),
            (
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                true,
            ),
            ("permessage-deflate, permessage-deflate", true),
            ("x-webkit-deflate-frame", true),
            ("permessage-deflate", false),
        ] {
            let addr = answering(answer).await;
            let deflate = DeflateConfig {
                enabled: offered,
                ..DeflateConfig::default()
            };
            let config = Config {
                deflate,
                ..Config::default()
            };
            let stream = TcpStream::connect(addr).await.expect("connect");
            let result = connect(stream, &addr.to_string(), "/", &[], &[], config).await;
            assert!(
                matches!(result, Err(Error::Handshake(HandshakeError::Extension(_)))),
                "{answer}: {:?}",
                result.map(|(_, r)| r)
            );
        }
        // A good answer is taken.
        let addr = answering("permessage-deflate; server_max_window_bits=12").await;
        let (_ws, response) = our_client(addr, DeflateConfig::enabled()).await;
        assert_eq!(response.deflate.map(|p| p.server_window_bits()), Some(12));
    })
    .await;
}

#[tokio::test]
async fn prepared_message_is_compressed_once_for_every_connection() {
    timed(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut sockets = Vec::new();
            for _ in 0..3 {
                let (stream, _) = listener.accept().await.expect("accept");
                sockets.push(accept(stream, on()).await.expect("upgrade"));
            }
            let message = PreparedMessage::text(&text(4000));
            for ws in &mut sockets {
                ws.feed_prepared(&message).await.expect("feed");
                ws.flush().await.expect("flush");
            }
            // The same compressed frame went to each: computed once, cached inside.
            message.compressed(6, 15).as_bytes().clone()
        });
        let mut frames = Vec::new();
        let mut raws = Vec::new();
        for _ in 0..3 {
            let mut raw = Raw::connect(addr).await;
            raw.write(&offer_request("permessage-deflate")).await;
            raw.read_head().await;
            raws.push(raw);
        }
        for raw in &mut raws {
            frames.push(raw.read_frame().await);
        }
        let cached = server.await.expect("server task");
        for frame in &frames {
            assert_eq!(frame.rsv, 0b100);
            assert_eq!(frame.payload, frames[0].payload);
            assert_eq!(inflate(&frame.payload), text(4000).as_bytes());
        }
        assert!(cached.ends_with(&frames[0].payload));
    })
    .await;
}
