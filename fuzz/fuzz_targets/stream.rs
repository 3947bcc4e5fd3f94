//! `Connection::read` (server side) on arbitrary bytes, fed three ways: all at once, in
//! chunks cut where the input says, and one byte at a time.
//!
//! Input: see `switchboard_fuzz::Input`; bit 0 of the flags makes us send a close frame
//! before reading (close state `CloseSent`), so the peer's close completes the handshake.
//!
//! Checked:
//! - no panic; after an `Err` no further call is made;
//! - text messages are valid UTF-8; data messages respect `max_message_size`; ping and
//!   pong payloads are at most 125 bytes; close frames carry a sendable code and a UTF-8
//!   reason of at most 123 bytes;
//! - a close moves the state to `CloseReceived` (or `Closed` after our own close), after
//!   which `read` yields nothing and empties the buffer;
//! - differential: the three feeds give the same messages and the same first error. The
//!   decoder resumes at any byte boundary and the fail-fast checks on partial frames
//!   (ordering, size, UTF-8) are the ones applied to whole frames, so any difference is
//!   a bug.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_fuzz::Input;
use switchboard_ws::{CloseState, Config, Connection, Message, ProtocolError, Role};

const MAX_MESSAGE: usize = 64 << 10;
const MAX_FRAME: usize = 16 << 10;

type Event = Result<Message, ProtocolError>;

fn check_message(m: &Message) {
    match m {
        Message::Text(t) => {
            assert!(
                std::str::from_utf8(t.as_bytes()).is_ok(),
                "invalid UTF-8 text"
            );
            assert!(t.len() <= MAX_MESSAGE, "text above max_message_size");
        }
        Message::Binary(b) => assert!(b.len() <= MAX_MESSAGE, "binary above max_message_size"),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125, "long control payload"),
        Message::Close(Some(f)) => {
            assert!(f.code.is_sendable(), "unsendable close code {}", f.code);
            assert!(f.reason.len() <= 123, "close reason too long");
            assert!(std::str::from_utf8(f.reason.as_bytes()).is_ok());
        }
        Message::Close(None) => {}
    }
}

fn run(chunks: &[&[u8]], close_first: bool) -> Vec<Event> {
    let config = Config {
        max_message_size: MAX_MESSAGE,
        max_frame_size: MAX_FRAME,
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, &config);
    if close_first {
        let mut out = BytesMut::new();
        conn.encode(&Message::Close(None), &mut out)
            .expect("first close must encode");
        assert_eq!(conn.state(), CloseState::CloseSent);
    }
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = conn.state();
            let closed = matches!(before, CloseState::CloseReceived | CloseState::Closed);
            match conn.read(&mut buf) {
                Ok(Some(m)) => {
                    assert!(!closed, "a message after the peer's close");
                    check_message(&m);
                    if let Message::Close(frame) = &m {
                        let expected = if close_first {
                            CloseState::Closed
                        } else {
                            CloseState::CloseReceived
                        };
                        assert_eq!(conn.state(), expected);
                        match conn.close_reply(frame) {
                            Some(Message::Close(Some(reply))) => {
                                assert!(!close_first, "close reply owed after our own close");
                                assert!(reply.code.is_sendable());
                            }
                            Some(other) => panic!("close reply is {other:?}"),
                            None => assert!(close_first, "no close reply owed"),
                        }
                    } else {
                        assert_eq!(conn.state(), before);
                    }
                    events.push(Ok(m));
                }
                Ok(None) => {
                    if matches!(conn.state(), CloseState::CloseReceived | CloseState::Closed) {
                        assert!(buf.is_empty(), "bytes kept after the peer's close");
                    }
                    break;
                }
                Err(e) => {
                    // The connection must be failed: no further call.
                    events.push(Err(e));
                    return events;
                }
            }
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let close_first = input.bit0();
    let whole = run(&[input.wire], close_first);
    let chunked = run(&input.chunks(), close_first);
    assert_eq!(whole, chunked, "chunked feed differs from the whole feed");
    let bytewise = run(&input.bytes(), close_first);
    assert_eq!(
        whole, bytewise,
        "byte-at-a-time feed differs from the whole feed"
    );
});
