//! `Decoder::decode` on arbitrary bytes, fed three ways: all at once, in chunks cut where
//! the input says, and one byte at a time, with `Decoder::partial` between chunks.
//!
//! Input: see `switchboard_fuzz::Input`; bit 0 of the flags picks the role (0 = server,
//! 1 = client).
//!
//! Checked:
//! - no panic;
//! - every frame: payload length = `header.len` <= the limit, RSV1 clear, masked iff we
//!   are the server, control frames final and at most 125 bytes;
//! - `Ok(None)` with no header in progress consumed nothing and leaves fewer than
//!   `MAX_HEADER_LEN` (14) bytes; `Ok(None)` with a header in progress leaves fewer bytes
//!   than its payload length;
//! - the bytes `partial` hands out for a frame are a prefix of its final payload;
//! - the three feeds give the same frames and the same end (error, or the same header in
//!   progress and byte count);
//! - the frames and whether it ends in an error agree with a naive reference decoder.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_fuzz::Input;
use switchboard_ws::decode::Decoder;
use switchboard_ws::frame::{Frame, FrameHeader, MAX_HEADER_LEN, OpCode};
use switchboard_ws::{ProtocolError, Role};

const MAX_FRAME: usize = 64 << 10;

#[derive(Debug, PartialEq)]
enum End {
    /// Ok(None): more bytes needed.
    NeedMore {
        buffered: usize,
        current: Option<FrameHeader>,
    },
    Error(ProtocolError),
}

fn check_frame(role: Role, f: &Frame) {
    let h = &f.header;
    assert_eq!(
        f.payload.len() as u64,
        h.len,
        "payload length != header.len"
    );
    assert!(h.len <= MAX_FRAME as u64, "frame above the limit");
    assert!(!h.rsv1, "RSV1 accepted without allow_rsv1");
    match role {
        Role::Server => assert!(h.mask.is_some(), "server accepted an unmasked frame"),
        Role::Client => assert!(h.mask.is_none(), "client accepted a masked frame"),
    }
    if h.opcode.is_control() {
        assert!(h.fin, "fragmented control frame accepted");
        assert!(h.len <= 125, "long control frame accepted");
    }
}

/// Feeds `chunks` to a fresh decoder, draining it after each chunk. With `partial`, calls
/// `Decoder::partial` whenever it waits for more, and checks what it returns.
fn run(role: Role, chunks: &[&[u8]], partial: bool) -> (Vec<Frame>, End) {
    let mut decoder = Decoder::new(role, MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    // What `partial` returned for the frame in progress, concatenated.
    let mut seen: Vec<u8> = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let had = decoder.current().copied();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    check_frame(role, &frame);
                    let consumed = before - buf.len();
                    match had {
                        // The header was consumed by an earlier call.
                        Some(h) => {
                            assert_eq!(h, frame.header, "header changed while waiting");
                            assert_eq!(consumed as u64, h.len);
                        }
                        None => {
                            let header_len = consumed as u64 - frame.header.len;
                            assert!((2..=MAX_HEADER_LEN as u64).contains(&header_len));
                        }
                    }
                    assert!(
                        frame.payload.starts_with(&seen),
                        "partial() handed out bytes that differ from the payload"
                    );
                    seen.clear();
                    frames.push(frame);
                }
                Ok(None) => {
                    match (had, decoder.current().copied()) {
                        (_, None) => {
                            assert!(had.is_none(), "header in progress vanished");
                            assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                            assert!(buf.len() < MAX_HEADER_LEN, "a whole header is waiting");
                        }
                        (Some(prev), Some(h)) => {
                            assert_eq!(prev, h, "header changed while waiting");
                            assert_eq!(buf.len(), before, "Ok(None) consumed payload bytes");
                            assert!((buf.len() as u64) < h.len);
                        }
                        (None, Some(h)) => {
                            let consumed = before - buf.len();
                            assert!((2..=MAX_HEADER_LEN).contains(&consumed));
                            assert!((buf.len() as u64) < h.len);
                        }
                    }
                    if partial {
                        let current = decoder.current().copied();
                        match decoder.partial(&mut buf) {
                            None => assert!(current.is_none()),
                            Some((h, new)) => {
                                assert_eq!(Some(h), current);
                                seen.extend_from_slice(new);
                                assert!(seen.len() as u64 <= h.len);
                                assert_eq!(seen.len(), buf.len().min(h.len as usize));
                            }
                        }
                    }
                    break;
                }
                Err(e) => return (frames, End::Error(e)),
            }
        }
    }
    let end = End::NeedMore {
        buffered: buf.len(),
        current: decoder.current().copied(),
    };
    (frames, end)
}

/// A frame as the reference decoder sees it: fin, opcode, mask, unmasked payload.
type RefFrame = (bool, u8, Option<[u8; 4]>, Vec<u8>);

/// A straightforward reading of RFC 6455 §5.2 over the whole input. Returns the frames and
/// whether the input ends in a violation (`true`) or merely incomplete (`false`). Rules
/// that the first two bytes decide are applied as soon as those two bytes are there.
fn reference(role: Role, wire: &[u8]) -> (Vec<RefFrame>, bool) {
    let mut frames = Vec::new();
    let mut rest = wire;
    loop {
        let &[b0, b1, ..] = rest else {
            return (frames, false);
        };
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        let control = opcode >= 8;
        if b0 & 0x70 != 0
            || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10)
            || masked != (role == Role::Server)
            || (control && (!fin || len7 > 125))
        {
            return (frames, true);
        }
        let mut pos = 2;
        let len: u64 = match len7 {
            126 | 127 => {
                let n = if len7 == 126 { 2 } else { 8 };
                let Some(b) = rest.get(2..2 + n) else {
                    return (frames, false);
                };
                pos += n;
                b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x))
            }
            n => u64::from(n),
        };
        if len >> 63 != 0 || len > MAX_FRAME as u64 {
            return (frames, true);
        }
        let mask = if masked {
            let Some(k) = rest.get(pos..pos + 4) else {
                return (frames, false);
            };
            pos += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        let Some(payload) = rest.get(pos..pos + len as usize) else {
            return (frames, false);
        };
        let payload: Vec<u8> = match mask {
            Some(k) => payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ k[i % 4])
                .collect(),
            None => payload.to_vec(),
        };
        frames.push((fin, opcode, mask, payload));
        rest = &rest[pos + len as usize..];
    }
}

fn opcode_u8(op: OpCode) -> u8 {
    op.as_u8()
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let role = if input.bit0() {
        Role::Client
    } else {
        Role::Server
    };

    let whole = run(role, &[input.wire], false);
    let chunked = run(role, &input.chunks(), true);
    assert_eq!(whole, chunked, "chunked feed differs from the whole feed");
    let bytewise = run(role, &input.bytes(), true);
    assert_eq!(
        whole, bytewise,
        "byte-at-a-time feed differs from the whole feed"
    );

    let (ref_frames, ref_invalid) = reference(role, input.wire);
    let got: Vec<RefFrame> = whole
        .0
        .iter()
        .map(|f| {
            let h = f.header;
            (h.fin, opcode_u8(h.opcode), h.mask, f.payload.to_vec())
        })
        .collect();
    assert_eq!(got, ref_frames, "frames differ from the reference decoder");
    assert_eq!(
        matches!(whole.1, End::Error(_)),
        ref_invalid,
        "error/no-error differs from the reference decoder: {:?}",
        whole.1
    );
});
