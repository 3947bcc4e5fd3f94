//! The incremental frame decoder (RFC 6455 §5.2).
//!
//! [`Decoder::decode`] takes whatever bytes have arrived and returns a frame once it is
//! whole, resuming at any byte boundary: the parsed header is kept across calls, so a
//! frame split at every byte still decodes. Every rule that can be checked from the header
//! is checked before any payload is buffered, and the declared length is compared with the
//! limit before the buffer grows for it.

use bytes::{Buf, BytesMut};

use crate::Role;
use crate::error::ProtocolError;
use crate::frame::{Frame, FrameHeader, MAX_HEADER_LEN, OpCode};
use crate::mask::apply_mask;

/// Decodes frames from a byte buffer.
#[derive(Debug)]
pub struct Decoder {
    /// Our side: a server requires masked frames, a client refuses them.
    role: Role,
    max_frame_size: usize,
    /// Set only when an extension that defines RSV1 (permessage-deflate) was negotiated.
    rsv1_allowed: bool,
    /// The header of the frame whose payload is being received; its bytes are consumed.
    current: Option<FrameHeader>,
    /// How many payload bytes of `current` are already unmasked in the buffer.
    unmasked: usize,
}

impl Decoder {
    /// A decoder for `role` that refuses frames above `max_frame_size` bytes.
    pub fn new(role: Role, max_frame_size: usize) -> Self {
        Decoder {
            role,
            max_frame_size,
            rsv1_allowed: false,
            current: None,
            unmasked: 0,
        }
    }

    /// Allows RSV1 on the first frame of data messages, as permessage-deflate requires.
    pub fn allow_rsv1(&mut self, allowed: bool) {
        self.rsv1_allowed = allowed;
    }

    /// The header of the frame in progress, if its payload has not fully arrived.
    pub fn current(&self) -> Option<&FrameHeader> {
        self.current.as_ref()
    }

    /// Decodes the next frame from `buf`, consuming its bytes. `Ok(None)` means more bytes
    /// are needed; nothing is lost, call again when they arrive.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let header = match self.current {
            Some(header) => header,
            None => match self.parse_header(buf)? {
                Some(header) => {
                    self.current = Some(header);
                    header
                }
                None => return Ok(None),
            },
        };
        // Fits: the length was checked against `max_frame_size`, a `usize`.
        let len = header.len as usize;
        if buf.len() < len {
            // The caller reserves room for the rest once it has checked its own limits
            // (the message size), see `Decoder::missing`.
            return Ok(None);
        }
        let mut payload = buf.split_to(len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload[self.unmasked..], key, self.unmasked);
        }
        self.current = None;
        self.unmasked = 0;
        Ok(Some(Frame {
            header,
            payload: payload.freeze(),
        }))
    }

    /// How many more bytes the frame in progress needs beyond what `buf` holds, plus room
    /// for the next header, so a reader can reserve once and fill it in one go.
    pub fn missing(&self, buf: &BytesMut) -> usize {
        self.current.map_or(0, |h| {
            (h.len as usize).saturating_sub(buf.len()) + MAX_HEADER_LEN
        })
    }

    /// For a frame whose payload is still arriving: unmasks the bytes that arrived since the
    /// last call, in place, and returns them, so text can be validated before the frame
    /// ends. Returns `None` when no frame is in progress.
    pub fn partial<'b>(&mut self, buf: &'b mut BytesMut) -> Option<(FrameHeader, &'b [u8])> {
        let header = self.current?;
        let start = self.unmasked;
        let end = buf.len().min(header.len as usize);
        if let Some(key) = header.mask {
            apply_mask(&mut buf[start..end], key, start);
        }
        self.unmasked = end;
        Some((header, &buf[start..end]))
    }

    fn parse_header(&self, buf: &mut BytesMut) -> Result<Option<FrameHeader>, ProtocolError> {
        let &[b0, b1, ..] = &buf[..] else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        // RFC 7692 §6.1: RSV1 marks a whole message, so only its first data frame has it.
        if rsv1 && (!self.rsv1_allowed || opcode.is_control() || opcode == OpCode::Continuation) {
            return Err(ProtocolError::ReservedBits);
        }
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlTooLong(u64::from(len7)));
            }
        }
        let (len, len_bytes) = match len7 {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 2)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBit);
                }
                (len, 8)
            }
            n => (u64::from(n), 0),
        };
        if len > self.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: len,
                limit: self.max_frame_size,
            });
        }
        let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return Ok(None);
        }
        let mask = masked.then(|| {
            let k = &buf[2 + len_bytes..header_len];
            [k[0], k[1], k[2], k[3]]
        });
        buf.advance(header_len);
        Ok(Some(FrameHeader {
            fin,
            rsv1,
            opcode,
            mask,
            len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    fn server() -> Decoder {
        Decoder::new(Role::Server, 1 << 20)
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        decoder.decode(&mut buf)
    }

    #[test]
    fn rfc6455_5_7_single_frame_masked_text() {
        let frame = decode_all(
            &mut server(),
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        )
        .unwrap()
        .unwrap();
        assert_eq!(frame.header.opcode, OpCode::Text);
        assert!(frame.header.fin);
        assert_eq!(&frame.payload[..], b"Hello");
    }

    #[test]
    fn rfc6455_5_7_unmasked_on_the_client_side() {
        let mut client = Decoder::new(Role::Client, 1 << 20);
        let frame = decode_all(&mut client, b"\x81\x05Hello").unwrap().unwrap();
        assert_eq!(&frame.payload[..], b"Hello");
    }

    #[test]
    fn rfc6455_5_1_masking_rules() {
        assert_eq!(
            decode_all(&mut server(), b"\x81\x05Hello"),
            Err(ProtocolError::UnmaskedFrame)
        );
        let mut client = Decoder::new(Role::Client, 1 << 20);
        assert_eq!(
            decode_all(&mut client, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
            Err(ProtocolError::MaskedFrame)
        );
    }

    #[test]
    fn rfc6455_5_2_reserved_bits_and_opcodes() {
        for first in [0xc1u8, 0xa1, 0x91] {
            assert_eq!(
                decode_all(&mut server(), &[first, 0x80, 0, 0, 0, 0]),
                Err(ProtocolError::ReservedBits),
                "{first:#x}"
            );
        }
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                decode_all(&mut server(), &[0x80 | op, 0x80, 0, 0, 0, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn rfc7692_6_rsv1_only_on_first_data_frame_when_negotiated() {
        let mut d = server();
        d.allow_rsv1(true);
        assert!(
            decode_all(&mut d, &[0xc1, 0x80, 0, 0, 0, 0])
                .unwrap()
                .is_some()
        );
        assert_eq!(
            decode_all(&mut d, &[0xc0, 0x80, 0, 0, 0, 0]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            decode_all(&mut d, &[0xc9, 0x80, 0, 0, 0, 0]),
            Err(ProtocolError::ReservedBits)
        );
    }

    #[test]
    fn rfc6455_5_5_control_frame_rules() {
        assert_eq!(
            decode_all(&mut server(), &[0x09, 0x80, 0, 0, 0, 0]),
            Err(ProtocolError::FragmentedControl)
        );
        assert_eq!(
            decode_all(&mut server(), &[0x89, 0xfe, 0, 126]),
            Err(ProtocolError::ControlTooLong(126))
        );
    }

    #[test]
    fn rfc6455_5_2_length_with_top_bit_set() {
        let bytes = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            decode_all(&mut server(), &bytes),
            Err(ProtocolError::LengthTopBit)
        );
    }

    #[test]
    fn frame_over_the_limit_is_refused_before_buffering() {
        let mut d = Decoder::new(Role::Server, 1000);
        let mut buf = BytesMut::from(&[0x82u8, 0xfe, 0x03, 0xe9][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(ProtocolError::FrameTooLarge {
                size: 1001,
                limit: 1000
            })
        );
        assert!(buf.capacity() < 1000);
        // A 2^63-1 byte claim is refused from the header alone.
        let bytes = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_all(&mut d, &bytes),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn resumes_at_every_byte_boundary() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut wire = BytesMut::new();
            encode_frame(
                &mut wire,
                true,
                OpCode::Binary,
                &payload,
                Some([9, 8, 7, 6]),
            );
            encode_frame(&mut wire, true, OpCode::Ping, b"p", Some([1, 2, 3, 4]));
            let cuts: Vec<usize> = if len < 400 {
                (0..wire.len()).collect()
            } else {
                vec![1, 2, 3, 5, 9, 13, 14, 100, wire.len() - 3]
            };
            for cut in cuts {
                let mut d = server();
                let mut buf = BytesMut::from(&wire[..cut]);
                let mut frames = Vec::new();
                while let Some(f) = d.decode(&mut buf).unwrap() {
                    frames.push(f);
                }
                d.partial(&mut buf);
                buf.extend_from_slice(&wire[cut..]);
                while let Some(f) = d.decode(&mut buf).unwrap() {
                    frames.push(f);
                }
                assert_eq!(frames.len(), 2, "len {len} cut {cut}");
                assert_eq!(&frames[0].payload[..], &payload[..], "len {len} cut {cut}");
                assert_eq!(&frames[1].payload[..], b"p");
                assert!(buf.is_empty());
            }
        }
    }
}
