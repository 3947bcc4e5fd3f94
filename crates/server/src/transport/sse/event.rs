//! The event stream's format: how a session's messages are written as Server-Sent Events.
//!
//! A message's event is `id: <session>:<seq>` followed by its `data:` lines. Only the id
//! line differs between subscribers: the `data:` part of a publication ([`data_block`])
//! is encoded once per worker thread and shared by every stream that writes it
//! ([`Encoder`]), so a delivery costs its id line and a copy (or, for a large payload, a
//! reference) of the shared block.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_ws::PreparedMessage;

use crate::outbox::Disconnect;

/// How long the browser waits before reconnecting a cut stream, in milliseconds.
pub(crate) const RETRY_MS: u32 = 1000;

/// The keep-alive comment, sent after `limits.ping_interval` without a write.
pub(crate) const PING: &[u8] = b": ping\n\n";

/// The start of a new session's stream: the reconnect delay and the `session` event.
pub(crate) fn opening(sid: &str) -> Bytes {
    Bytes::from(format!(
        "retry: {RETRY_MS}\nid: {sid}:0\nevent: session\ndata: {{\"session\":\"{sid}\"}}\n\n"
    ))
}

/// Appends one message as an event: `id: <sid>:<seq>` and its JSON as data.
#[cfg(test)]
pub(crate) fn message(out: &mut BytesMut, sid: &str, seq: u64, payload: &[u8]) {
    id_line(out, sid, seq);
    let mut block = BytesMut::new();
    data(&mut block, payload);
    block.put_u8(b'\n');
    out.put_slice(&block);
}

/// Appends `id: <sid>:<seq>\n`, the only per-subscriber part of an event.
pub(crate) fn id_line(out: &mut BytesMut, sid: &str, seq: u64) {
    out.reserve(sid.len() + 26);
    out.put_slice(b"id: ");
    out.put_slice(sid.as_bytes());
    out.put_u8(b':');
    put_decimal(out, seq);
    out.put_u8(b'\n');
}

/// Appends `n` in decimal, without the allocation `format!` would make.
pub(crate) fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// The part of a message's event after its id line: its `data:` lines and the blank
/// line that ends the event. The same for every subscriber.
pub(crate) fn data_block(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    data(&mut out, payload);
    out.put_u8(b'\n');
    out.freeze()
}

/// Publications whose data block a worker thread keeps. A fan-out hands one
/// publication to every subscriber's stream within a short time, and those streams are
/// polled one after the other, so the last few publications are nearly every hit.
const CACHED: usize = 8;

thread_local! {
    /// This thread's recent data blocks, by publication (see [`Encoder`]).
    static BLOCKS: RefCell<Blocks> = RefCell::new(Blocks::default());
}

/// A small ring of (publication, its data block). The publication is held, so its frame
/// stays allocated while cached: the same address then always means the same bytes.
#[derive(Default)]
struct Blocks {
    entries: Vec<(PreparedMessage, Bytes)>,
    next: usize,
}

impl Blocks {
    fn get(&mut self, message: &PreparedMessage) -> Bytes {
        let frame = message.as_bytes();
        let same = |cached: &PreparedMessage| {
            let bytes = cached.as_bytes();
            bytes.as_ptr() == frame.as_ptr() && bytes.len() == frame.len()
        };
        if let Some((_, block)) = self.entries.iter().find(|(cached, _)| same(cached)) {
            return block.clone();
        }
        let block = data_block(&message.payload());
        if self.entries.len() < CACHED {
            self.entries.push((message.clone(), block.clone()));
        } else {
            self.entries[self.next] = (message.clone(), block.clone());
        }
        self.next = (self.next + 1) % CACHED;
        block
    }
}

/// Payloads at least this long are written as their shared block itself (one more
/// chunk of the body, no copy); shorter ones are copied next to their id line, which
/// costs less than a chunk of their own.
const SHARE_FROM: usize = 2048;

/// Writes messages as events into the chunks of one stream's write: one buffer for all
/// the events of a write, except shared blocks of large payloads, which go as they are.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    /// The chunk being built.
    chunk: BytesMut,
}

impl Encoder {
    /// Appends one message's event, with its data block shared with every other stream
    /// that writes the same publication on this thread. Chunks that are complete are
    /// handed to `emit`.
    pub(crate) fn message(
        &mut self,
        sid: &str,
        seq: u64,
        message: &PreparedMessage,
        emit: &mut impl FnMut(Bytes),
    ) {
        let block = BLOCKS.with(|blocks| blocks.borrow_mut().get(message));
        if block.len() >= SHARE_FROM {
            id_line(&mut self.chunk, sid, seq);
            emit(std::mem::take(&mut self.chunk).freeze());
            emit(block);
        } else {
            // Room for the whole event at once: one allocation, no growing.
            self.chunk.reserve(sid.len() + 26 + block.len());
            id_line(&mut self.chunk, sid, seq);
            self.chunk.put_slice(&block);
        }
    }

    /// Appends raw bytes (a comment, a close event).
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.chunk.put_slice(bytes);
    }

    /// Hands what is left to `emit`, if anything. The chunk takes its buffer along: an
    /// idle stream keeps none.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(Bytes)) {
        if !self.chunk.is_empty() {
            emit(std::mem::take(&mut self.chunk).freeze());
        }
    }
}

/// Appends the `close` event that ends a stream.
pub(crate) fn close(out: &mut BytesMut, reason: &Disconnect) {
    out.put_slice(b"event: close\n");
    data(out, reason.to_json().as_bytes());
    out.put_u8(b'\n');
}

/// Appends `data:` lines. Published data is passed through as sent, so a message may
/// hold line breaks (JSON whitespace, never inside a string); each line then gets its own
/// `data:` field, which the client joins with `\n` into the same JSON.
fn data(out: &mut BytesMut, payload: &[u8]) {
    if !payload.iter().any(|&b| b == b'\n' || b == b'\r') {
        out.put_slice(b"data: ");
        out.put_slice(payload);
        out.put_u8(b'\n');
        return;
    }
    let mut rest = payload;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            return;
        }
        // A CR LF pair is one line break.
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::close as codes;

    fn event(sid: &str, seq: u64, payload: &str) -> String {
        let mut out = BytesMut::new();
        message(&mut out, sid, seq, payload.as_bytes());
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    #[test]
    fn events() {
        assert_eq!(
            &opening("ab")[..],
            b"retry: 1000\nid: ab:0\nevent: session\ndata: {\"session\":\"ab\"}\n\n"
        );
        assert_eq!(
            event("ab", 7, r#"{"a":1}"#),
            "id: ab:7\ndata: {\"a\":1}\n\n"
        );
        // Line breaks in published data: one data line each, CR LF counted once.
        assert_eq!(
            event("ab", 8, "{\"a\":\r\n1,\n\"b\":\r2}"),
            "id: ab:8\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n"
        );
        assert_eq!(event("ab", 9, "1\n"), "id: ab:9\ndata: 1\ndata: \n\n");
        let mut out = BytesMut::new();
        put_decimal(&mut out, 0);
        put_decimal(&mut out, u64::MAX);
        assert_eq!(&out[..], b"018446744073709551615");
        let mut out = BytesMut::new();
        close(
            &mut out,
            &Disconnect {
                code: codes::DISCONNECTED,
                reason: "bye \"now\"".into(),
            },
        );
        assert_eq!(
            &out[..],
            b"event: close\ndata: {\"code\":4003,\"reason\":\"bye \\\"now\\\"\"}\n\n"
        );
    }

    /// Two streams writing the same publication share its data block (line breaks
    /// split once, for both); only the id lines differ. A large payload's block goes as
    /// a chunk of its own, not copied.
    #[test]
    fn streams_share_a_publication_s_data_block() {
        let message = PreparedMessage::text("{\"a\":\r\n1,\n\"b\":2}");
        let other = PreparedMessage::text("{\"a\":\r\n1,\n\"b\":2}");
        let block = |m: &PreparedMessage| BLOCKS.with(|b| b.borrow_mut().get(m));
        let (first, second) = (block(&message), block(&message.clone()));
        assert_eq!(&first[..], b"data: {\"a\":\ndata: 1,\ndata: \"b\":2}\n\n");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "one block for the publication"
        );
        // Equal bytes in another publication are another entry (the frame's address
        // identifies a publication).
        assert_ne!(block(&other).as_ptr(), first.as_ptr());

        let mut chunks = Vec::new();
        for sid in ["alice", "bob"] {
            let mut encoder = Encoder::default();
            let mut emit = |chunk: Bytes| chunks.push(chunk);
            encoder.message(sid, 7, &message, &mut emit);
            encoder.message(sid, 8, &PreparedMessage::text("2"), &mut emit);
            encoder.finish(&mut emit);
        }
        let text: Vec<_> = chunks.iter().map(|c| String::from_utf8_lossy(c)).collect();
        assert_eq!(
            text,
            [
                "id: alice:7\ndata: {\"a\":\ndata: 1,\ndata: \"b\":2}\n\nid: alice:8\ndata: 2\n\n",
                "id: bob:7\ndata: {\"a\":\ndata: 1,\ndata: \"b\":2}\n\nid: bob:8\ndata: 2\n\n",
            ]
        );

        let large = PreparedMessage::text(&"x".repeat(SHARE_FROM));
        let mut chunks = Vec::new();
        let mut encoder = Encoder::default();
        let mut emit = |chunk: Bytes| chunks.push(chunk);
        encoder.message("bob", 9, &large, &mut emit);
        encoder.finish(&mut emit);
        assert_eq!(chunks.len(), 2);
        assert_eq!(&chunks[0][..], b"id: bob:9\n");
        assert_eq!(
            chunks[1].as_ptr(),
            block(&large).as_ptr(),
            "the shared block itself"
        );
    }
}
