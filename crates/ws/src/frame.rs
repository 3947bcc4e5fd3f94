//! Frame types and the frame encoder (RFC 6455 §5.2).

use bytes::{BufMut, Bytes, BytesMut};

use crate::mask::apply_mask;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame opcode. Reserved values never get this far: the decoder rejects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Parses the low nibble of the first header byte; `None` for reserved opcodes.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xa => OpCode::Pong,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xa,
        }
    }

    /// Control frames (close, ping, pong) have the high bit of the opcode set (§5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of the message.
    pub fin: bool,
    /// RSV1: "compressed" under permessage-deflate (RFC 7692), otherwise must be 0.
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

/// One frame with its (unmasked) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header as received; `mask` says whether the payload was masked.
    pub header: FrameHeader,
    /// The payload, already unmasked.
    pub payload: Bytes,
}

/// Appends a frame header. `mask` is `Some` for client frames.
pub fn encode_header(
    out: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    let first = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.put_u8(first);
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.put_u8(mask_bit | 126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
    if let Some(key) = mask {
        out.put_slice(&key);
    }
}

/// Appends a whole frame, masking the payload copy when `mask` is given. The header and
/// payload are reserved at once so the buffer grows at most once.
pub fn encode_frame(
    out: &mut BytesMut,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    encode_frame_rsv1(out, fin, false, opcode, payload, mask);
}

/// [`encode_frame`] with RSV1 chosen: set on the first frame of a compressed message
/// (RFC 7692 §6).
pub fn encode_frame_rsv1(
    out: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    encode_header(out, fin, rsv1, opcode, payload.len(), mask);
    let start = out.len();
    out.put_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_5_7_examples() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, true, OpCode::Text, b"Hello", None);
        assert_eq!(&out[..], b"\x81\x05\x48\x65\x6c\x6c\x6f");

        out.clear();
        encode_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(&out[..], b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");

        out.clear();
        encode_frame(&mut out, false, OpCode::Text, b"Hel", None);
        encode_frame(&mut out, true, OpCode::Continuation, b"lo", None);
        assert_eq!(&out[..], b"\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f");

        out.clear();
        encode_header(&mut out, true, false, OpCode::Binary, 256, None);
        assert_eq!(&out[..], b"\x82\x7e\x01\x00");

        out.clear();
        encode_header(&mut out, true, false, OpCode::Binary, 65536, None);
        assert_eq!(&out[..], b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00");
    }
}
