//! Compressing and inflating messages (RFC 7692 §7.2).
//!
//! A message is compressed whole with a sync flush, and the flush's `00 00 ff ff` tail is
//! removed (§7.2.1); the receiver inflates each frame as it arrives and the tail is added
//! back after the last one (§7.2.2). Inflated output is bounded: it never grows past the
//! room left under the message size limit, so a small "bomb" that would expand to
//! gigabytes fails with 1009 having allocated at most that room.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Setup;
use crate::error::ProtocolError;

/// The tail a sync flush ends with, removed by the sender and restored by the receiver.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// First output reservation for inflating a frame: enough for most messages in one go.
const INFLATE_START: usize = 4 << 10;

thread_local! {
    /// Compressors shared by every connection of a thread that keeps no context, keyed by
    /// (level, window bits): reset before each message, so they hold nothing from one
    /// message to the next and a connection owns none (uWebSockets' shared compressor).
    static COMPRESSORS: RefCell<Vec<(u32, u8, Compress)>> = const { RefCell::new(Vec::new()) };
    /// Inflaters shared the same way, by window bits, for single-frame messages from peers
    /// that keep no context.
    static INFLATERS: RefCell<Vec<(u8, Decompress)>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `payload` as one message with a fresh context at `level` and `window_bits`
/// (9..15) and returns the bytes to send, tail removed. `None` if the result would not be
/// smaller than the payload (or zlib failed): send it uncompressed then.
pub(crate) fn compress_fresh(payload: &[u8], level: u32, window_bits: u8) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut shared = cell.borrow_mut();
        let at = match shared
            .iter()
            .position(|(l, b, _)| *l == level && *b == window_bits)
        {
            Some(at) => at,
            None => {
                shared.push((level, window_bits, new_compressor(level, window_bits)));
                shared.len() - 1
            }
        };
        let compressor = &mut shared[at].2;
        compressor.reset();
        compress(compressor, payload, true)
    })
}

fn new_compressor(level: u32, window_bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::new(level), false, window_bits.clamp(9, 15))
}

/// Compresses one message with `compressor` (sync flush, tail removed); `None` when zlib
/// failed, or when `smaller_only` and the result is not smaller than the payload.
fn compress(compressor: &mut Compress, payload: &[u8], smaller_only: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        let before = compressor.total_in();
        let status = compressor
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .ok()?;
        input = &input[(compressor.total_in() - before) as usize..];
        // Done once the input is taken and the flush ended with room to spare; a
        // `BufError` means zlib had nothing more to do.
        if (input.is_empty() && out.len() < out.capacity()) || status == Status::BufError {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    (!smaller_only || out.len() < payload.len()).then_some(out)
}

/// A connection's permessage-deflate state. zlib state is allocated only when it must
/// outlive a call (see the module docs of `deflate`).
#[derive(Debug)]
pub(crate) struct Codec {
    pub(crate) setup: Setup,
    /// Our compressor, kept only when we keep our context.
    compressor: Option<Box<Compress>>,
    /// The peer's context, kept across messages when the peer keeps its context, or
    /// across the frames of one fragmented message.
    inflater: Option<Box<Decompress>>,
    /// Whether the message being received is compressed (its first frame had RSV1).
    pub(crate) inflating: bool,
    /// Whether the current message's deflate stream ended with a final block (BFINAL);
    /// only the tail may follow, and the inflater starts over with the next message.
    ended: bool,
}

impl Codec {
    pub(crate) fn new(setup: Setup) -> Codec {
        Codec {
            setup,
            compressor: None,
            inflater: None,
            inflating: false,
            ended: false,
        }
    }

    /// Compresses a data message if it should be: `None` means send it uncompressed.
    pub(crate) fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let s = self.setup;
        if !s.compresses(payload.len()) {
            return None;
        }
        if s.send_no_context {
            return compress_fresh(payload, s.level, s.send_window_bits);
        }
        let compressor = self
            .compressor
            .get_or_insert_with(|| Box::new(new_compressor(s.level, s.send_window_bits)));
        // With a kept context the message is in our window now, so it must reach the
        // peer's too: sent compressed even when that is no smaller.
        let out = compress(compressor, payload, false);
        if out.is_none() {
            // zlib failed and our context is unknown. A message compressed from an empty
            // context reads correctly whatever the peer's window holds, so carry on that
            // way, never reusing a context again.
            self.compressor = None;
            self.setup.send_no_context = true;
        }
        out
    }

    /// Inflates one frame of a compressed message into at most `room` bytes. `first`
    /// marks the message's first frame, `fin` its last.
    pub(crate) fn inflate(
        &mut self,
        payload: &[u8],
        first: bool,
        fin: bool,
        room: usize,
    ) -> Result<Vec<u8>, InflateError> {
        if first {
            self.inflating = true;
            self.ended = false;
        }
        let window = self.setup.recv_window_bits.clamp(9, 15);
        let mut out = Vec::new();
        if first && fin && self.setup.recv_no_context {
            // The whole message in one call: no state needs to outlive it.
            self.inflating = false;
            return INFLATERS.with(|cell| {
                let mut shared = cell.borrow_mut();
                let at = match shared.iter().position(|(b, _)| *b == window) {
                    Some(at) => at,
                    None => {
                        shared.push((window, Decompress::new_with_window_bits(false, window)));
                        shared.len() - 1
                    }
                };
                let inflater = &mut shared[at].1;
                inflater.reset(false);
                let mut ended = false;
                inflate_into(inflater, payload, &mut ended, &mut out, room)?;
                inflate_into(inflater, &TAIL, &mut ended, &mut out, room)?;
                Ok(out)
            });
        }
        let inflater = self
            .inflater
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, window)));
        let result = inflate_into(inflater, payload, &mut self.ended, &mut out, room).and_then(
            |()| match fin {
                true => inflate_into(inflater, &TAIL, &mut self.ended, &mut out, room),
                false => Ok(()),
            },
        );
        if fin || result.is_err() {
            self.inflating = false;
            if self.setup.recv_no_context || self.ended || result.is_err() {
                // Nothing to keep: free it (an idle connection holds no inflater).
                self.inflater = None;
            }
        }
        result.map(|()| out)
    }
}

/// Why a compressed frame could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The output would pass the room left under the message size limit.
    TooLarge,
    /// Not a valid DEFLATE stream.
    Corrupt,
}

impl InflateError {
    /// The protocol error, for a message size limit of `limit` bytes.
    pub(crate) fn into_protocol(self, limit: usize) -> ProtocolError {
        match self {
            // The real size is unknown: inflating stopped one byte past the limit.
            InflateError::TooLarge => ProtocolError::MessageTooLarge {
                size: limit as u64 + 1,
                limit,
            },
            InflateError::Corrupt => ProtocolError::BadCompressedData,
        }
    }
}

/// Inflates `input` into `out`, which never grows past `room + 1` bytes: one byte more
/// than allowed is how an overflow is seen.
fn inflate_into(
    inflater: &mut Decompress,
    mut input: &[u8],
    ended: &mut bool,
    out: &mut Vec<u8>,
    room: usize,
) -> Result<(), InflateError> {
    if *ended {
        // After a final block only the tail we add may follow.
        return match input {
            [] | [0x00, 0x00, 0xff, 0xff] => Ok(()),
            _ => Err(InflateError::Corrupt),
        };
    }
    loop {
        if out.len() == out.capacity() {
            let cap = room.saturating_add(1);
            let grow = out
                .len()
                .max(INFLATE_START)
                .max(input.len().saturating_mul(2))
                .min(cap - out.len().min(cap));
            if grow == 0 {
                return Err(InflateError::TooLarge);
            }
            out.reserve_exact(grow);
        }
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > room {
            return Err(InflateError::TooLarge);
        }
        input = &input[(inflater.total_in() - in_before) as usize..];
        if status == Status::StreamEnd {
            *ended = true;
            return match input {
                [] | [0x00, 0x00, 0xff, 0xff] => Ok(()),
                _ => Err(InflateError::Corrupt),
            };
        }
        let progressed = inflater.total_in() != in_before || inflater.total_out() != out_before;
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if !progressed && out.len() < out.capacity() {
            // Input left, room left, and zlib did nothing: it cannot make sense of it.
            return Err(InflateError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(no_context: bool) -> Setup {
        Setup {
            level: 6,
            min_size: 0,
            send_window_bits: 15,
            send_no_context: no_context,
            recv_window_bits: 15,
            recv_no_context: no_context,
        }
    }

    #[test]
    fn rfc7692_7_2_3_1_hello_example() {
        // §7.2.3.1: "Hello" compressed without context is c8 48 cd c9 c9 07 00 (with the
        // tail removed); any valid encoding would do, but zlib produces this one.
        let out = compress_fresh(b"Hello, Hello, Hello, Hello", 6, 15).unwrap();
        let mut codec = Codec::new(setup(true));
        assert_eq!(
            codec.inflate(&out, true, true, 1000).unwrap(),
            b"Hello, Hello, Hello, Hello"
        );
        let mut codec = Codec::new(setup(true));
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(codec.inflate(&hello, true, true, 1000).unwrap(), b"Hello");
        // §7.2.3.3: "Hello" in a stored (uncompressed) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(codec.inflate(&stored, true, true, 1000).unwrap(), b"Hello");
        // §7.2.3.4: with BFINAL set.
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(codec.inflate(&last, true, true, 1000).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_2_context_takeover_shrinks_a_repeat() {
        let mut sender = Codec::new(setup(false));
        let mut receiver = Codec::new(setup(false));
        let text = b"{\"channel\":\"chat\",\"data\":{\"text\":\"Hello\"}}";
        let first = sender.compress(text).unwrap();
        let second = sender.compress(text).unwrap();
        assert!(second.len() < first.len() / 2, "{first:?} {second:?}");
        assert_eq!(receiver.inflate(&first, true, true, 1 << 20).unwrap(), text);
        assert_eq!(
            receiver.inflate(&second, true, true, 1 << 20).unwrap(),
            text
        );
        // Without the first message's context the second cannot be read.
        let mut fresh = Codec::new(setup(false));
        assert_ne!(
            fresh.inflate(&second, true, true, 1 << 20).ok(),
            Some(text.to_vec())
        );
    }

    #[test]
    fn frames_split_anywhere_inflate_to_the_message() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {} ", i % 97).into_bytes())
            .collect();
        let packed = compress_fresh(&text, 6, 15).unwrap();
        for cut in [1, 2, 7, packed.len() / 2, packed.len() - 1] {
            let mut codec = Codec::new(setup(true));
            let mut got = codec.inflate(&packed[..cut], true, false, 1 << 20).unwrap();
            assert!(codec.inflater.is_some());
            got.extend(codec.inflate(&packed[cut..], false, true, 1 << 20).unwrap());
            assert_eq!(got, text, "cut {cut}");
            // No context kept: the inflater is gone once the message ends.
            assert!(codec.inflater.is_none());
        }
    }

    #[test]
    fn bomb_stops_at_the_room_without_allocating_past_it() {
        // 10 MB of zeros compresses to about 10 KB.
        let bomb = compress_fresh(&vec![0u8; 10 << 20], 9, 15).unwrap();
        assert!(bomb.len() < 20 << 10, "{}", bomb.len());
        let mut inflater = Decompress::new_with_window_bits(false, 15);
        let mut out = Vec::new();
        let mut ended = false;
        let room = 100_000;
        assert_eq!(
            inflate_into(&mut inflater, &bomb, &mut ended, &mut out, room),
            Err(InflateError::TooLarge)
        );
        assert!(out.capacity() <= room + 1, "{}", out.capacity());
        let mut codec = Codec::new(setup(true));
        assert_eq!(
            codec.inflate(&bomb, true, true, room),
            Err(InflateError::TooLarge)
        );
        // Exactly at the limit is fine.
        let exact = compress_fresh(&vec![0u8; room], 9, 15).unwrap();
        assert_eq!(codec.inflate(&exact, true, true, room).unwrap().len(), room);
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut codec = Codec::new(setup(true));
        assert_eq!(
            codec.inflate(&[0xff, 0xff, 0xff, 0xff], true, true, 1000),
            Err(InflateError::Corrupt)
        );
        // Data after a final block.
        let mut codec = Codec::new(setup(false));
        let last_then_more = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x01];
        assert_eq!(
            codec.inflate(&last_then_more, true, true, 1000),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn small_or_incompressible_messages_go_plain() {
        let mut codec = Codec::new(Setup {
            min_size: 64,
            ..setup(true)
        });
        assert_eq!(codec.compress(&[b'a'; 63]), None);
        assert!(codec.compress(&[b'a'; 64]).is_some());
        let random: Vec<u8> = (0..1000).map(|_| rand::random::<u8>()).collect();
        assert_eq!(codec.compress(&random), None);
        // A window of 8 bits: zlib cannot, so never compressed.
        let mut narrow = Codec::new(Setup {
            send_window_bits: 8,
            ..setup(true)
        });
        assert_eq!(narrow.compress(&[b'a'; 1000]), None);
    }

    #[test]
    fn each_window_size_round_trips() {
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{} ", i * 7919 % 1000).into_bytes())
            .collect();
        for bits in 9..=15u8 {
            let packed = compress_fresh(&text, 6, bits).unwrap();
            let mut codec = Codec::new(Setup {
                recv_window_bits: bits,
                ..setup(true)
            });
            assert_eq!(codec.inflate(&packed, true, true, 1 << 20).unwrap(), text);
        }
    }
}
