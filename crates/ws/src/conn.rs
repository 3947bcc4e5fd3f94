//! The connection state machine: bytes in, messages out; messages in, bytes out.

use bytes::BytesMut;

use crate::close::{CloseCode, CloseFrame};
use crate::decode::Decoder;
use crate::error::{Error, ProtocolError};
use crate::frame::{OpCode, encode_frame, encode_header};
use crate::message::{Assembler, Message};
use crate::{Config, Role};

/// Where the close handshake stands (RFC 6455 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    /// Neither side has sent a close frame.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// The peer sent a close frame; we owe one back.
    CloseReceived,
    /// Both close frames are exchanged: the TCP connection may be closed.
    Closed,
}

/// One side of a WebSocket connection, without I/O.
///
/// [`Connection::read`] turns received bytes into [`Message`]s. It never writes: a
/// [`Message::Ping`] obliges the caller to send a pong, and a [`Message::Close`] received
/// while [`CloseState::CloseReceived`] obliges it to send a close back (see
/// [`Connection::close_reply`]). [`Connection::encode`] appends a message's frames to an
/// output buffer and tracks the close state on the sending side.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    decoder: Decoder,
    assembler: Assembler,
    state: CloseState,
}

impl Connection {
    /// A connection on `role`'s side with the given limits.
    pub fn new(role: Role, config: &Config) -> Self {
        Connection {
            role,
            decoder: Decoder::new(role, config.max_frame_size),
            assembler: Assembler::new(config.max_message_size),
            state: CloseState::Open,
        }
    }

    /// Our side of the connection.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether a frame's header has been read and its payload is still awaited (the read
    /// buffer was sized for it).
    pub fn frame_in_progress(&self) -> bool {
        self.decoder.current().is_some()
    }

    /// The close handshake's progress.
    pub fn state(&self) -> CloseState {
        self.state
    }

    /// Decodes the next message from `buf`, consuming the bytes it used. `Ok(None)` means
    /// more bytes are needed. After a protocol error the connection must be failed: send a
    /// close frame with [`ProtocolError::close_code`] and drop the TCP connection.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            if matches!(self.state, CloseState::CloseReceived | CloseState::Closed) {
                // §5.5.1: nothing may follow the peer's close frame; discard it.
                buf.clear();
                return Ok(None);
            }
            let Some(frame) = self.decoder.decode(buf)? else {
                self.check_partial(buf)?;
                // Only now, with every limit checked, make room for the rest of the frame.
                buf.reserve(self.decoder.missing(buf));
                return Ok(None);
            };
            let h = frame.header;
            let message = match h.opcode {
                OpCode::Text | OpCode::Binary => {
                    self.assembler
                        .start(h.opcode == OpCode::Text, h.fin, frame.payload)?
                }
                OpCode::Continuation => self.assembler.continue_with(h.fin, frame.payload)?,
                OpCode::Ping => Some(Message::Ping(frame.payload)),
                OpCode::Pong => Some(Message::Pong(frame.payload)),
                OpCode::Close => {
                    let close = CloseFrame::parse(&frame.payload)?;
                    self.state = match self.state {
                        CloseState::CloseSent => CloseState::Closed,
                        _ => CloseState::CloseReceived,
                    };
                    Some(Message::Close(close))
                }
            };
            if message.is_some() {
                return Ok(message);
            }
        }
    }

    /// Checks what can be checked of a frame whose payload is still arriving: the message
    /// size, and the UTF-8 of text received so far.
    fn check_partial(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        let Some(header) = self.decoder.current().copied() else {
            return Ok(());
        };
        let is_text = match header.opcode {
            OpCode::Text => true,
            OpCode::Binary => false,
            OpCode::Continuation => self.assembler.in_progress() == Some(true),
            OpCode::Close | OpCode::Ping | OpCode::Pong => return Ok(()),
        };
        // Ordering rules first, so a misplaced frame is reported as such.
        match (header.opcode, self.assembler.in_progress()) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => {}
        }
        self.assembler.check_frame(header.len)?;
        if is_text {
            if let Some((_, new)) = self.decoder.partial(buf) {
                self.assembler.validate_partial(new)?;
            }
        }
        Ok(())
    }

    /// The close frame owed to a peer that closed first: its code echoed, or 1000 when it
    /// sent none (RFC 6455 §5.5.1). `None` when nothing is owed.
    pub fn close_reply(&self, received: &Option<CloseFrame>) -> Option<Message> {
        (self.state == CloseState::CloseReceived).then(|| {
            let code = received.as_ref().map_or(CloseCode::NORMAL, |f| f.code);
            Message::Close(Some(CloseFrame::new(code, "")))
        })
    }

    /// Appends `message` as one frame to `out`, masked with a fresh key on the client side.
    /// Sending a close frame advances the close state; nothing may be sent after it.
    pub fn encode(&mut self, message: &Message, out: &mut BytesMut) -> Result<(), Error> {
        if matches!(self.state, CloseState::CloseSent | CloseState::Closed) {
            return Err(Error::AlreadyClosed);
        }
        let mask = self.mask();
        match message {
            Message::Text(text) => encode_frame(out, true, OpCode::Text, text.as_bytes(), mask),
            Message::Binary(data) => encode_frame(out, true, OpCode::Binary, data, mask),
            Message::Ping(data) => encode_control(out, OpCode::Ping, data, mask),
            Message::Pong(data) => encode_control(out, OpCode::Pong, data, mask),
            Message::Close(frame) => {
                let mut payload = BytesMut::new();
                if let Some(frame) = frame {
                    frame.encode_payload(&mut payload);
                }
                encode_frame(out, true, OpCode::Close, &payload, mask);
                self.state = match self.state {
                    CloseState::CloseReceived => CloseState::Closed,
                    _ => CloseState::CloseSent,
                };
            }
        }
        Ok(())
    }

    /// Appends the header of a data message's single frame; the caller sends the payload
    /// right after it. Used for large server payloads so they are written without a copy
    /// (client frames need masking, hence a copy, so this is server-only).
    pub fn encode_data_header(
        &mut self,
        text: bool,
        len: usize,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        if matches!(self.state, CloseState::CloseSent | CloseState::Closed) {
            return Err(Error::AlreadyClosed);
        }
        debug_assert_eq!(self.role, Role::Server, "client frames must be masked");
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        encode_header(out, true, false, opcode, len, None);
        Ok(())
    }

    /// Marks the connection closed without a handshake (the transport is gone).
    pub fn set_closed(&mut self) {
        self.state = CloseState::Closed;
    }

    fn mask(&self) -> Option<[u8; 4]> {
        // §5.3: the key must be unpredictable; `rand::random` draws from a CSPRNG.
        (self.role == Role::Client).then(rand::random::<[u8; 4]>)
    }
}

/// Control payloads are at most 125 bytes (§5.5); longer ones are cut rather than sent
/// as an invalid frame.
fn encode_control(out: &mut BytesMut, opcode: OpCode, data: &[u8], mask: Option<[u8; 4]>) {
    encode_frame(out, true, opcode, &data[..data.len().min(125)], mask);
}
