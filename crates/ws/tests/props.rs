//! Property tests of the sans-IO `Connection::read` (server side): any message, cut into
//! any fragments with pings between them, split into any chunks, decodes to the same
//! messages in order; text is accepted exactly when it is UTF-8; no input panics.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use switchboard_ws::frame::{OpCode, encode_frame, encode_header};
use switchboard_ws::{CloseCode, CloseFrame, Config, Connection, Message, ProtocolError, Role};

use crate::util::{close_payload, frame};

/// A data message, how it is cut into frames, and the pings sent between its frames.
#[derive(Debug, Clone)]
struct Plan {
    text: bool,
    data: Vec<u8>,
    /// Fragment boundaries, as indices into `data` (sorted when used; repeats make empty
    /// fragments).
    cuts: Vec<Index>,
    /// `pings[i]` is sent before frame `i`, when it is `Some`.
    pings: Vec<Option<Vec<u8>>>,
    mask: [u8; 4],
}

fn plan() -> impl Strategy<Value = Plan> {
    let data = prop_oneof![
        "(?s).{0,600}".prop_map(|s: String| (true, s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..3000).prop_map(|b| (false, b)),
    ];
    (
        data,
        prop::collection::vec(any::<Index>(), 0..8),
        prop::collection::vec(
            prop::option::weighted(0.3, prop::collection::vec(any::<u8>(), 0..=125)),
            9,
        ),
        any::<[u8; 4]>(),
    )
        .prop_map(|((text, data), cuts, pings, mask)| Plan {
            text,
            data,
            cuts,
            pings,
            mask,
        })
}

/// Chunk sizes for splitting the stream, used in turn; 1-byte chunks are common.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![Just(1usize), 1..16usize, 1..4096usize], 1..16)
}

/// Appends `plan` as masked client frames to `wire` and the messages it must decode to
/// (its pings, then the data message) to `expected`.
fn encode_plan(plan: &Plan, wire: &mut BytesMut, expected: &mut Vec<Message>) {
    let mut cuts: Vec<usize> = plan
        .cuts
        .iter()
        .map(|i| i.index(plan.data.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(plan.data.len());
    let mut start = 0;
    for (i, &end) in cuts.iter().enumerate() {
        if let Some(ping) = &plan.pings[i] {
            encode_frame(wire, true, OpCode::Ping, ping, Some(plan.mask));
            expected.push(Message::Ping(Bytes::copy_from_slice(ping)));
        }
        let opcode = match (i, plan.text) {
            (0, true) => OpCode::Text,
            (0, false) => OpCode::Binary,
            _ => OpCode::Continuation,
        };
        let fin = i + 1 == cuts.len();
        encode_frame(wire, fin, opcode, &plan.data[start..end], Some(plan.mask));
        start = end;
    }
    let data = Bytes::copy_from_slice(&plan.data);
    expected.push(if plan.text {
        Message::Text(data.try_into().expect("text plans are UTF-8"))
    } else {
        Message::Binary(data)
    });
}

/// Feeds `wire` to a server `Connection` in chunks of the given sizes (used in turn),
/// calling `read` until it needs more after each chunk. Stops at the first error.
fn feed(
    config: &Config,
    wire: &[u8],
    chunks: &[usize],
) -> (Vec<Message>, Result<(), ProtocolError>) {
    let mut conn = Connection::new(Role::Server, config);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match conn.read(&mut buf) {
                Ok(Some(message)) => out.push(message),
                Ok(None) => break,
                Err(err) => return (out, Err(err)),
            }
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    (out, Ok(()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fragmented_messages_with_pings_decode_in_order_at_any_chunking(
        plans in prop::collection::vec(plan(), 1..4),
        chunks in chunking(),
    ) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for plan in &plans {
            encode_plan(plan, &mut wire, &mut expected);
        }
        let (out, result) = feed(&Config::default(), &wire, &chunks);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn text_is_accepted_exactly_when_it_is_utf8(
        text in "(?s).{0,200}",
        corruption in prop::collection::vec((any::<Index>(), any::<u8>()), 0..3),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
        chunks in chunking(),
    ) {
        let mut data = text.into_bytes();
        for (at, byte) in corruption {
            let at = at.index(data.len() + 1);
            data.insert(at, byte);
        }
        let plan = Plan { text: false, data, cuts, pings: vec![None; 9], mask: [1, 2, 3, 4] };
        let mut wire = BytesMut::new();
        let mut ignored = Vec::new();
        encode_plan(&plan, &mut wire, &mut ignored);
        // Turn the binary message into a text one: the first frame's opcode.
        wire[0] = (wire[0] & 0xf0) | OpCode::Text.as_u8();
        let (out, result) = feed(&Config::default(), &wire, &chunks);
        match std::str::from_utf8(&plan.data) {
            Ok(valid) => {
                prop_assert_eq!(result, Ok(()));
                prop_assert_eq!(out, vec![Message::text(valid)]);
            }
            Err(_) => {
                prop_assert_eq!(result, Err(ProtocolError::InvalidUtf8));
                prop_assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        chunks in chunking(),
        client in any::<bool>(),
        small in any::<bool>(),
    ) {
        read_never_panics(&bytes, &chunks, client, small);
    }

    #[test]
    fn arbitrary_frame_like_input_never_panics(
        pieces in prop::collection::vec(
            (any::<u8>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)),
            0..24,
        ),
        chunks in chunking(),
        client in any::<bool>(),
        small in any::<bool>(),
    ) {
        // Plausible frames with arbitrary first bytes (FIN, RSV, opcode), masked or not,
        // so decoding gets past the first header and into every state.
        let mut wire = BytesMut::new();
        for (first, masked, payload) in &pieces {
            let start = wire.len();
            let mask = masked.then_some([9, 8, 7, 6]);
            encode_header(&mut wire, true, false, OpCode::Binary, payload.len(), mask);
            wire[start] = *first;
            wire.extend_from_slice(payload);
        }
        read_never_panics(&wire, &chunks, client, small);
    }
}

/// Feeds `bytes` to a connection until it errors or runs out; it must not panic, and an
/// error must map to a close code that may be sent.
fn read_never_panics(bytes: &[u8], chunks: &[usize], client: bool, small: bool) {
    let role = if client { Role::Client } else { Role::Server };
    let config = if small {
        Config {
            max_frame_size: 200,
            max_message_size: 500,
            ..Config::default()
        }
    } else {
        Config::default()
    };
    let mut conn = Connection::new(role, &config);
    let mut buf = BytesMut::new();
    let mut rest = bytes;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            return;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match conn.read(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(err) => {
                    // Every error maps to a code a server may send.
                    assert!(err.close_code().is_sendable(), "{err:?}");
                    return;
                }
            }
        }
    }
}

/// STYLE.md §3.12: split a fixed stream at every byte, and feed it a byte at a time.
#[test]
fn every_split_point_decodes_the_same() {
    let binary: Vec<u8> = (0..300u32).map(|i| (i % 256) as u8).collect();
    let wire = [
        frame(false, OpCode::Text, "héllo".as_bytes()),
        frame(true, OpCode::Ping, b"p"),
        frame(false, OpCode::Continuation, b" w\xc3"),
        frame(true, OpCode::Continuation, b"\xb6rld \xe2\x82\xac"),
        frame(true, OpCode::Binary, &binary),
        frame(true, OpCode::Pong, b""),
        frame(true, OpCode::Close, &close_payload(1000, "bye")),
    ]
    .concat();
    let expected = vec![
        Message::Ping(Bytes::from_static(b"p")),
        Message::text("héllo wörld €"),
        Message::binary(binary),
        Message::Pong(Bytes::new()),
        Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))),
    ];
    for cut in 0..=wire.len() {
        let (out, result) = feed(&Config::default(), &wire, &[cut.max(1), wire.len()]);
        assert_eq!(result, Ok(()), "cut {cut}");
        assert_eq!(out, expected, "cut {cut}");
    }
    let (out, result) = feed(&Config::default(), &wire, &[1]);
    assert_eq!(result, Ok(()));
    assert_eq!(out, expected);
}
