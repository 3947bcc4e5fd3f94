//! Messages encoded once and written to many connections.

use bytes::{Bytes, BytesMut};

use crate::frame::{MAX_HEADER_LEN, OpCode, encode_frame};

/// A server-to-client message already encoded as a frame. Cloning it clones a reference
/// count, so a publication fanned out to N subscribers is encoded once, not N times.
/// Only servers can use it: client frames need a fresh mask each (RFC 6455 §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMessage {
    frame: Bytes,
    /// Where the payload starts in `frame`.
    header_len: u8,
}

impl PreparedMessage {
    /// Encodes a text message.
    pub fn text(text: &str) -> Self {
        Self::encode(OpCode::Text, text.as_bytes())
    }

    /// Encodes a binary message.
    pub fn binary(data: &[u8]) -> Self {
        Self::encode(OpCode::Binary, data)
    }

    fn encode(opcode: OpCode, payload: &[u8]) -> Self {
        let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
        encode_frame(&mut out, true, opcode, payload, None);
        PreparedMessage {
            header_len: (out.len() - payload.len()) as u8,
            frame: out.freeze(),
        }
    }

    /// The payload alone, sharing the frame's buffer: transports without WebSocket
    /// framing (SSE, polling) send this, so one encoding serves every transport.
    pub fn payload(&self) -> Bytes {
        self.frame.slice(usize::from(self.header_len)..)
    }

    /// The encoded frame, header and payload.
    pub fn as_bytes(&self) -> &Bytes {
        &self.frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_an_unmasked_frame() {
        assert_eq!(
            &PreparedMessage::text("Hello").as_bytes()[..],
            b"\x81\x05Hello"
        );
        let p = PreparedMessage::binary(&[0; 300]);
        assert_eq!(&p.as_bytes()[..4], b"\x82\x7e\x01\x2c");
        assert_eq!(p.clone().as_bytes().as_ptr(), p.as_bytes().as_ptr());
        assert_eq!(&PreparedMessage::text("Hello").payload()[..], b"Hello");
        assert_eq!(p.payload().len(), 300);
    }
}
