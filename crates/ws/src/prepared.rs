//! Messages encoded once and written to many connections.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};

use crate::deflate::codec::compress_fresh;
use crate::frame::{MAX_HEADER_LEN, OpCode, encode_frame, encode_frame_rsv1};

/// A server-to-client message already encoded as a frame. Cloning it clones a reference
/// count, so a publication fanned out to N subscribers is encoded once, not N times.
/// Only servers can use it: client frames need a fresh mask each (RFC 6455 §5.3).
///
/// Its permessage-deflate frame is computed once too, on first demand, and cached inside
/// for every clone: without context takeover the same compressed frame is valid on every
/// connection with the same level and window (see [`PreparedMessage::compressed`]).
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    frame: Bytes,
    /// Where the payload starts in `frame`.
    header_len: u8,
    /// The compressed message for the first (level, window bits) asked for: lock-free once
    /// set. Nearly every server compresses with one setting.
    first: OnceLock<((u32, u8), PreparedMessage)>,
    /// Messages for any other settings, rare enough for a lock.
    others: Mutex<Vec<((u32, u8), PreparedMessage)>>,
}

impl PartialEq for PreparedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.inner.frame == other.inner.frame
    }
}

impl Eq for PreparedMessage {}

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
            inner: Arc::new(Inner {
                header_len: (out.len() - payload.len()) as u8,
                frame: out.freeze(),
                first: OnceLock::new(),
                others: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The payload alone, sharing the frame's buffer: transports without WebSocket
    /// framing (SSE, polling) send this, so one encoding serves every transport.
    pub fn payload(&self) -> Bytes {
        self.inner.frame.slice(usize::from(self.inner.header_len)..)
    }

    /// The payload's length.
    pub fn payload_len(&self) -> usize {
        self.inner.frame.len() - usize::from(self.inner.header_len)
    }

    /// The encoded frame, header and payload.
    pub fn as_bytes(&self) -> &Bytes {
        &self.inner.frame
    }

    /// Whether this is a compressed message (RSV1 set), as [`PreparedMessage::compressed`]
    /// makes them: its payload is deflate data, for permessage-deflate connections only.
    pub fn is_compressed(&self) -> bool {
        self.inner.frame[0] & 0x40 != 0
    }

    /// This message as sent on a permessage-deflate connection that compresses from an
    /// empty context at zlib `level` with `window_bits` (9..15, as
    /// [`crate::deflate::SharedCompression`] gives them): RSV1 set and the payload
    /// compressed (RFC 7692 §7.2.1). Computed on the first call for a setting and cached
    /// for every clone, so a fan-out compresses a publication once. The message itself
    /// when compression would not make it smaller.
    pub fn compressed(&self, level: u32, window_bits: u8) -> PreparedMessage {
        let key = (level, window_bits);
        // The first setting asked for takes the lock-free slot.
        let (first, message) = self.inner.first.get_or_init(|| (key, self.compress(key)));
        if *first == key {
            return message.clone();
        }
        // A poisoned lock only means a panic elsewhere mid-push; the list is still valid.
        let mut others = self
            .inner
            .others
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, message)) = others.iter().find(|(k, _)| *k == key) {
            return message.clone();
        }
        let message = self.compress(key);
        others.push((key, message.clone()));
        message
    }

    fn compress(&self, (level, window_bits): (u32, u8)) -> PreparedMessage {
        let payload = &self.inner.frame[usize::from(self.inner.header_len)..];
        let opcode = match self.inner.frame[0] & 0x0f {
            0x1 => OpCode::Text,
            _ => OpCode::Binary,
        };
        match compress_fresh(payload, level, window_bits) {
            Some(packed) => {
                let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + packed.len());
                encode_frame_rsv1(&mut out, true, true, opcode, &packed, None);
                PreparedMessage {
                    inner: Arc::new(Inner {
                        header_len: (out.len() - packed.len()) as u8,
                        frame: out.freeze(),
                        first: OnceLock::new(),
                        others: Mutex::new(Vec::new()),
                    }),
                }
            }
            None => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::codec::Codec;

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

    #[test]
    fn compressed_once_per_setting_and_shared_by_clones() {
        let text = "{\"channel\":\"logs\",\"line\":\"GET /index.html 200\"} ".repeat(20);
        let p = PreparedMessage::text(&text);
        let a = p.compressed(6, 15).as_bytes().clone();
        let b = p.clone().compressed(6, 15).as_bytes().clone();
        assert_eq!(a.as_ptr(), b.as_ptr(), "computed once, shared");
        assert_eq!(a[0], 0xc1, "FIN + RSV1 + text");
        assert!(a.len() < p.as_bytes().len() / 4);
        assert!(p.compressed(6, 15).is_compressed() && !p.is_compressed());
        let c = p.compressed(1, 12).as_bytes().clone();
        assert_eq!(p.clone().compressed(1, 12).as_bytes().as_ptr(), c.as_ptr());
        assert_eq!(p.compressed(6, 15).as_bytes().as_ptr(), a.as_ptr());
        // Each inflates back to the text.
        for frame in [&a, &c] {
            let header_len = if frame[1] & 0x7f == 126 { 4 } else { 2 };
            let mut codec = Codec::new(crate::deflate::Setup {
                level: 6,
                min_size: 0,
                send_window_bits: 15,
                send_no_context: true,
                recv_window_bits: 15,
                recv_no_context: true,
            });
            let got = codec
                .inflate(&frame[header_len..], true, true, 1 << 20)
                .unwrap();
            assert_eq!(got, text.as_bytes());
        }
        // Incompressible: the plain frame itself.
        let short = PreparedMessage::text("hi");
        let same = short.compressed(6, 15);
        assert_eq!(same.as_bytes().as_ptr(), short.as_bytes().as_ptr());
        assert!(!same.is_compressed());
    }
}
