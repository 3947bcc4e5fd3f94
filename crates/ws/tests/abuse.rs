//! Hostile input: it is refused with the right close code or HTTP status, at once, and
//! never makes the server panic or buffer without bound.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_ws::error::ProtocolError;
use switchboard_ws::frame::OpCode;
use switchboard_ws::handshake::HandshakeError;
use switchboard_ws::{Config, Connection, Error, Message, Role};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

use crate::util::{EchoServer, Event, MASK, Raw, frame, timed};

/// A 64-bit length header (with the test mask key) declaring `len` bytes.
fn header_64(first: u8, len: u64) -> Vec<u8> {
    let mut header = vec![first, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&MASK);
    header
}

/// Writes `batch` `times` times in one task, stopping quietly at the first error (the
/// server may close while we write).
fn write_repeatedly(mut wr: OwnedWriteHalf, batch: Vec<u8>, times: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..times {
            if wr.write_all(&batch).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test]
async fn frame_length_with_the_top_bit_set_closes_1002_at_once() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut raw = server.raw().await;
        // 2^63: only the header is sent.
        raw.write(&header_64(0x82, 1 << 63)).await;
        server
            .expect_failure(raw, ProtocolError::LengthTopBit)
            .await;
    })
    .await;
}

#[tokio::test]
async fn frame_length_of_2_pow_63_minus_1_closes_1009_at_once() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut raw = server.raw().await;
        raw.write(&header_64(0x82, (1 << 63) - 1)).await;
        server
            .expect_failure(
                raw,
                ProtocolError::FrameTooLarge {
                    size: (1 << 63) - 1,
                    limit: Config::default().max_frame_size,
                },
            )
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_million_one_byte_fragments_close_1009_once_the_limit_passes() {
    timed(async {
        const LIMIT: usize = 64 << 10;
        let config = Config {
            max_message_size: LIMIT,
            ..Config::default()
        };
        let mut server = EchoServer::with_config(config).await;
        let mut raw = server.raw().await;
        let one = frame(false, OpCode::Continuation, b"x");

        // Exactly the limit is fine: a ping sent after it is answered, nothing else comes.
        let mut bytes = frame(false, OpCode::Binary, b"");
        bytes.extend(one.repeat(LIMIT));
        bytes.extend(frame(true, OpCode::Ping, b"sync"));
        raw.write(&bytes).await;
        raw.expect_frame(0xa, b"sync").await;
        raw.expect_silence(Duration::from_millis(50)).await;
        assert_eq!(server.received().await, Message::Ping(Bytes::from("sync")));

        // The rest of the million in big batches: the first byte over the limit closes.
        let batch = one.repeat(8192);
        let writer = write_repeatedly(raw.take_writer(), batch, (1_000_000 - LIMIT) / 8192);
        let reason = raw.expect_close(1009).await;
        raw.expect_eof().await;
        writer.abort();
        let _ = writer.await;
        let expected = ProtocolError::MessageTooLarge {
            size: LIMIT as u64 + 1,
            limit: LIMIT,
        };
        assert_eq!(reason, expected.to_string());
        drop(raw);
        match server.failed().await {
            Error::Protocol(err) => assert_eq!(err, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_million_empty_continuations_then_fin_come_back_whole() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut raw = server.raw().await;
        raw.write(&frame(false, OpCode::Text, b"hello ")).await;
        // 6 bytes each: 6 MB of frames that add nothing to the message.
        let batch = frame(false, OpCode::Continuation, b"").repeat(10_000);
        for _ in 0..100 {
            raw.write(&batch).await;
        }
        raw.write(&frame(true, OpCode::Continuation, b"world"))
            .await;
        raw.expect_frame(0x1, b"hello world").await;
        assert_eq!(server.received().await, Message::text("hello world"));
    })
    .await;
}

#[tokio::test]
async fn endless_header_lines_get_400_at_max_handshake_size() {
    timed(async {
        let config = Config {
            max_handshake_size: 512,
            ..Config::default()
        };
        let mut server = EchoServer::with_config(config).await;
        let mut raw = Raw::connect(server.addr).await;
        let mut wr = raw.take_writer();
        // Slowly: one line per write, a millisecond apart, until the server hangs up.
        let writer = tokio::spawn(async move {
            if wr
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_err()
            {
                return;
            }
            for _ in 0..10_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if wr.write_all(b"X-a: b\r\n").await.is_err() {
                    return;
                }
            }
        });
        let response = String::from_utf8(raw.read_to_end().await).unwrap();
        writer.abort();
        expect_too_large(&response, &mut server, 512).await;
    })
    .await;
}

#[tokio::test]
async fn endless_header_value_gets_400_at_default_max_handshake_size() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut raw = Raw::connect(server.addr).await;
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        head.extend(vec![b'a'; 1000]);
        let mut wr = raw.take_writer();
        wr.write_all(&head).await.unwrap();
        let writer = write_repeatedly(wr, vec![b'a'; 1000], 1000);
        let response = String::from_utf8(raw.read_to_end().await).unwrap();
        writer.abort();
        expect_too_large(&response, &mut server, 8192).await;
    })
    .await;
}

#[tokio::test]
async fn more_than_64_header_lines_get_400() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut raw = Raw::connect(server.addr).await;
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        request.extend(b"X-a: b\r\n".repeat(100));
        raw.write(&request).await;
        let response = String::from_utf8(raw.read_to_end().await).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{response:?}"
        );
        assert!(
            response.ends_with("\r\n\r\nmore than 64 headers\n"),
            "{response:?}"
        );
        assert!(matches!(
            server.event().await,
            Event::HandshakeFailed(Error::Handshake(HandshakeError::TooManyHeaders))
        ));
    })
    .await;
}

/// A server whose handshake times out after 300 ms.
async fn impatient_server() -> EchoServer {
    EchoServer::with_config(Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await
}

/// Waits for the server to drop a connection whose handshake never completed, and checks
/// it did so after the handshake timeout, without an answer.
async fn expect_dropped_after_timeout(server: &mut EchoServer, mut raw: Raw) {
    let started = tokio::time::Instant::now();
    let response = raw.read_to_end().await;
    let elapsed = started.elapsed();
    assert!(
        response.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "dropped after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "dropped after {elapsed:?}"
    );
    assert!(matches!(
        server.event().await,
        Event::HandshakeFailed(Error::Timeout)
    ));
}

#[tokio::test]
async fn stalled_handshake_is_dropped_after_handshake_timeout() {
    timed(async {
        let mut server = impatient_server().await;
        let mut raw = Raw::connect(server.addr).await;
        raw.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").await;
        expect_dropped_after_timeout(&mut server, raw).await;
    })
    .await;
}

#[tokio::test]
async fn trickling_handshake_is_dropped_after_handshake_timeout() {
    timed(async {
        let mut server = impatient_server().await;
        let mut raw = Raw::connect(server.addr).await;
        let mut wr = raw.take_writer();
        // Always sending, never finishing: the timeout bounds the whole handshake.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(b"GET / HTTP/1.1\r\n").await;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if wr.write_all(b"X-a: b\r\n").await.is_err() {
                    return;
                }
            }
        });
        expect_dropped_after_timeout(&mut server, raw).await;
        writer.abort();
    })
    .await;
}

// The sans-IO core: limits are compared with the declared length before the buffer grows.

/// The masked header of a data frame of `len` bytes, alone in a buffer.
fn lone_header(opcode: OpCode, len: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    switchboard_ws::frame::encode_header(&mut buf, true, false, opcode, len, Some(MASK));
    buf
}

#[test]
fn frame_over_max_frame_size_is_refused_before_the_buffer_grows() {
    let config = Config {
        max_frame_size: 1 << 20,
        ..Config::default()
    };
    for opcode in [OpCode::Text, OpCode::Binary, OpCode::Continuation] {
        for len in [(1 << 20) + 1, 100 << 20, (1 << 63) - 1] {
            let mut conn = Connection::new(Role::Server, &config);
            let mut buf = lone_header(opcode, len);
            assert_eq!(
                conn.read(&mut buf),
                Err(ProtocolError::FrameTooLarge {
                    size: len as u64,
                    limit: 1 << 20
                })
            );
            assert!(buf.capacity() < 1 << 16, "capacity {}", buf.capacity());
        }
    }
}

/// Regression: the decoder used to reserve room for the whole declared payload before the
/// connection compared it with `max_message_size`, so a frame over the message limit (but
/// under the frame limit) grew the buffer to its declared size before it was refused.
#[test]
fn message_size_is_checked_before_the_buffer_grows() {
    let config = Config {
        max_message_size: 1024,
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, &config);
    let mut buf = lone_header(OpCode::Text, 1_000_000);
    assert_eq!(
        conn.read(&mut buf),
        Err(ProtocolError::MessageTooLarge {
            size: 1_000_000,
            limit: 1024
        })
    );
    assert!(buf.capacity() < 1 << 16, "capacity {}", buf.capacity());
}

/// Regression: the partial-frame checks skipped binary frames, so a binary frame over
/// `max_message_size` (under `max_frame_size`) was buffered in full before 1009.
#[test]
fn binary_frame_over_max_message_size_is_refused_from_its_header() {
    let config = Config {
        max_message_size: 1024,
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, &config);
    let mut buf = lone_header(OpCode::Binary, 1_000_000);
    assert_eq!(
        conn.read(&mut buf),
        Err(ProtocolError::MessageTooLarge {
            size: 1_000_000,
            limit: 1024
        })
    );
}

/// Regression, same cause: a binary frame inside a fragmented message was only refused
/// once its whole payload had arrived.
#[test]
fn binary_frame_inside_a_fragmented_message_is_refused_from_its_header() {
    let mut conn = Connection::new(Role::Server, &Config::default());
    let mut buf = BytesMut::from(&frame(false, OpCode::Text, b"start")[..]);
    buf.extend_from_slice(&lone_header(OpCode::Binary, 1_000_000));
    assert_eq!(
        conn.read(&mut buf),
        Err(ProtocolError::ExpectedContinuation)
    );
}

#[test]
fn many_empty_fragments_keep_the_message_small() {
    // The sans-IO twin of the socket test: a million empty continuations.
    let mut conn = Connection::new(Role::Server, &Config::default());
    let mut buf = BytesMut::from(&frame(false, OpCode::Binary, b"ab")[..]);
    assert_eq!(conn.read(&mut buf), Ok(None));
    let empty = frame(false, OpCode::Continuation, b"");
    let batch = empty.repeat(10_000);
    for _ in 0..100 {
        buf.extend_from_slice(&batch);
        assert_eq!(conn.read(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }
    buf.extend_from_slice(&frame(true, OpCode::Continuation, b"cd"));
    assert_eq!(conn.read(&mut buf), Ok(Some(Message::binary(&b"abcd"[..]))));
}

/// The refusal of a handshake over `limit` bytes: a 400 naming the rule, seen as
/// `TooLarge(limit)` by the server.
async fn expect_too_large(response: &str, server: &mut EchoServer, limit: usize) {
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response:?}"
    );
    assert!(
        response.ends_with(&format!("\r\n\r\nhandshake larger than {limit} bytes\n")),
        "{response:?}"
    );
    match server.event().await {
        Event::HandshakeFailed(Error::Handshake(HandshakeError::TooLarge(n))) if n == limit => {}
        other => panic!("expected TooLarge({limit}), got {other:?}"),
    }
}
