//! Messages, and the reassembly of fragmented ones (RFC 6455 §5.4).

use bytes::{Bytes, BytesMut};

use crate::close::CloseFrame;
use crate::error::ProtocolError;
use crate::utf8::{Utf8Bytes, Utf8Validator};

/// A message as the application sees it: data messages are whole (fragments reassembled),
/// control frames are surfaced so the caller can honour its obligations (pong, close echo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the caller owes a pong with the same payload (RFC 6455 §5.5.2).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, with its code and reason if it carried one.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<Utf8Bytes>) -> Message {
        Message::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Message {
        Message::Binary(b.into())
    }

    /// Whether this is a text or binary message.
    pub fn is_data(&self) -> bool {
        matches!(self, Message::Text(_) | Message::Binary(_))
    }
}

/// A fragmented message being reassembled.
#[derive(Debug)]
pub(crate) struct Fragments {
    /// Text messages are validated as their bytes arrive.
    pub(crate) text: bool,
    pub(crate) buf: BytesMut,
}

/// Reassembles messages from data frames and validates text incrementally.
#[derive(Debug)]
pub(crate) struct Assembler {
    max_message_size: usize,
    fragments: Option<Fragments>,
    utf8: Utf8Validator,
    /// Bytes of the current text frame that were validated before the frame was whole.
    validated: usize,
}

impl Assembler {
    pub(crate) fn new(max_message_size: usize) -> Self {
        Assembler {
            max_message_size,
            fragments: None,
            utf8: Utf8Validator::new(),
            validated: 0,
        }
    }

    /// Whether a fragmented message is in progress, and whether it is text.
    pub(crate) fn in_progress(&self) -> Option<bool> {
        self.fragments.as_ref().map(|f| f.text)
    }

    /// How many bytes of a fragmented message are buffered (0 between messages).
    pub(crate) fn buffered(&self) -> usize {
        self.fragments.as_ref().map_or(0, |f| f.buf.len())
    }

    /// Checks that a message that already holds `buffered` bytes may grow by `len`.
    fn check_size(&self, buffered: usize, len: u64) -> Result<(), ProtocolError> {
        let size = buffered as u64 + len;
        if size > self.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                size,
                limit: self.max_message_size,
            });
        }
        Ok(())
    }

    /// Checks the size of a frame whose header just arrived, before its payload is buffered.
    pub(crate) fn check_frame(&self, len: u64) -> Result<(), ProtocolError> {
        self.check_size(self.fragments.as_ref().map_or(0, |f| f.buf.len()), len)
    }

    /// Validates text bytes of a frame that has not fully arrived (fail fast, §8.1).
    pub(crate) fn validate_partial(&mut self, new: &[u8]) -> Result<(), ProtocolError> {
        self.utf8
            .feed(new)
            .map_err(|_| ProtocolError::InvalidUtf8)?;
        self.validated += new.len();
        Ok(())
    }

    /// A whole text or binary frame that starts a message.
    pub(crate) fn start(
        &mut self,
        text: bool,
        fin: bool,
        payload: Bytes,
    ) -> Result<Option<Message>, ProtocolError> {
        if self.fragments.is_some() {
            return Err(ProtocolError::ExpectedContinuation);
        }
        self.check_size(0, payload.len() as u64)?;
        if text {
            self.feed_text(&payload)?;
        }
        if fin {
            return self.finish(text, payload).map(Some);
        }
        self.fragments = Some(Fragments {
            text,
            buf: BytesMut::from(&payload[..]),
        });
        Ok(None)
    }

    /// A whole continuation frame.
    pub(crate) fn continue_with(
        &mut self,
        fin: bool,
        payload: Bytes,
    ) -> Result<Option<Message>, ProtocolError> {
        let Some(fragments) = self.fragments.as_ref() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        let text = fragments.text;
        self.check_size(fragments.buf.len(), payload.len() as u64)?;
        if text {
            self.feed_text(&payload)?;
        }
        let Some(fragments) = self.fragments.as_mut() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        fragments.buf.extend_from_slice(&payload);
        if !fin {
            return Ok(None);
        }
        let whole = std::mem::take(&mut fragments.buf).freeze();
        self.fragments = None;
        self.finish(text, whole).map(Some)
    }

    /// Feeds the part of a whole text frame that `validate_partial` has not seen.
    fn feed_text(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let seen = std::mem::take(&mut self.validated);
        self.utf8
            .feed(&payload[seen..])
            .map_err(|_| ProtocolError::InvalidUtf8)
    }

    fn finish(&mut self, text: bool, payload: Bytes) -> Result<Message, ProtocolError> {
        if !text {
            return Ok(Message::Binary(payload));
        }
        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        Ok(Message::Text(Utf8Bytes::from_validated(payload)))
    }
}
