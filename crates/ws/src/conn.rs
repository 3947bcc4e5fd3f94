//! The connection state machine: bytes in, messages out; messages in, bytes out.

use bytes::{Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame};
use crate::decode::Decoder;
use crate::deflate::codec::Codec;
use crate::deflate::{DeflateConfig, Params, Setup, SharedCompression};
use crate::error::{Error, ProtocolError};
use crate::frame::{OpCode, encode_frame, encode_frame_rsv1, encode_header};
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
    /// permessage-deflate, once negotiated. Boxed: a connection without it pays a pointer.
    deflate: Option<Box<Codec>>,
    /// The message size limit, for the bound on inflated output.
    max_message_size: usize,
}

impl Connection {
    /// A connection on `role`'s side with the given limits.
    pub fn new(role: Role, config: &Config) -> Self {
        Connection {
            role,
            decoder: Decoder::new(role, config.max_frame_size),
            assembler: Assembler::new(config.max_message_size),
            state: CloseState::Open,
            deflate: None,
            max_message_size: config.max_message_size,
        }
    }

    /// Turns on permessage-deflate with the parameters of the server's response (as
    /// negotiated by [`crate::deflate::negotiate`] or checked by
    /// [`crate::deflate::negotiation::check_response`]) and this side's `config`. Call it
    /// before the first frame is read or sent.
    pub fn set_deflate(&mut self, params: &Params, config: &DeflateConfig) {
        self.decoder.allow_rsv1(true);
        self.deflate = Some(Box::new(Codec::new(Setup::new(self.role, params, config))));
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.deflate.is_some()
    }

    /// How this connection compresses when it keeps no context of its own (the server's
    /// default): then every connection with the same [`SharedCompression`] sends the same
    /// bytes for a message, and [`crate::PreparedMessage`] caches them. `None` without
    /// permessage-deflate, or when this side keeps its context (each message is then
    /// compressed by this connection alone).
    pub fn shared_compression(&self) -> Option<SharedCompression> {
        let s = self.deflate.as_ref()?.setup;
        s.send_no_context.then_some(SharedCompression {
            level: s.level,
            window_bits: s.send_window_bits,
            min_size: s.min_size,
        })
    }

    /// Whether a data message of `len` bytes is sent compressed.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        self.deflate
            .as_ref()
            .is_some_and(|d| d.setup.compresses(len))
    }

    /// Whether a message of `len` bytes would be compressed with this connection's own
    /// context (we keep ours).
    pub(crate) fn compresses_in_context(&self, len: usize) -> bool {
        self.deflate
            .as_ref()
            .is_some_and(|d| !d.setup.send_no_context && d.setup.compresses(len))
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
                OpCode::Text | OpCode::Binary if h.rsv1 => {
                    // The decoder lets RSV1 through only once deflate is negotiated.
                    if self.assembler.in_progress().is_some() {
                        return Err(ProtocolError::ExpectedContinuation);
                    }
                    let data = self.inflate(&frame.payload, true, h.fin)?;
                    self.assembler
                        .start(h.opcode == OpCode::Text, h.fin, data)?
                }
                OpCode::Text | OpCode::Binary => {
                    self.assembler
                        .start(h.opcode == OpCode::Text, h.fin, frame.payload)?
                }
                OpCode::Continuation if self.inflating() => {
                    let data = self.inflate(&frame.payload, false, h.fin)?;
                    self.assembler.continue_with(h.fin, data)?
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

    /// Whether the message being received is compressed.
    fn inflating(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.inflating)
    }

    /// Inflates a frame of a compressed message within the room the message size limit
    /// leaves.
    fn inflate(&mut self, payload: &[u8], first: bool, fin: bool) -> Result<Bytes, ProtocolError> {
        let room = self
            .max_message_size
            .saturating_sub(self.assembler.buffered());
        let Some(codec) = self.deflate.as_mut() else {
            return Err(ProtocolError::ReservedBits);
        };
        codec
            .inflate(payload, first, fin, room)
            .map(Bytes::from)
            .map_err(|err| err.into_protocol(self.max_message_size))
    }

    /// Checks what can be checked of a frame whose payload is still arriving: the message
    /// size, and the UTF-8 of text received so far. A compressed frame is neither: its
    /// bytes are checked once inflated, which is bounded by the message size limit.
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
        let compressed = header.rsv1 || (header.opcode == OpCode::Continuation && self.inflating());
        // Ordering rules first, so a misplaced frame is reported as such.
        match (header.opcode, self.assembler.in_progress()) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => {}
        }
        if compressed {
            return Ok(());
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
            Message::Text(text) => self.encode_data(out, OpCode::Text, text.as_bytes(), mask),
            Message::Binary(data) => self.encode_data(out, OpCode::Binary, data, mask),
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

    /// Appends a data message, compressed when deflate is on and it is worth it.
    fn encode_data(
        &mut self,
        out: &mut BytesMut,
        opcode: OpCode,
        data: &[u8],
        mask: Option<[u8; 4]>,
    ) {
        match self.deflate.as_mut().and_then(|d| d.compress(data)) {
            Some(packed) => encode_frame_rsv1(out, true, true, opcode, &packed, mask),
            None => encode_frame(out, true, opcode, data, mask),
        }
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
