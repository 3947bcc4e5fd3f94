//! The replay buffer of an HTTP session: every message it sent, by sequence number, until
//! the client acknowledges it.
//!
//! Each message gets the next seq (1, 2, 3…) and stays until acknowledged (a poll's `ack`,
//! an SSE reconnect's `Last-Event-ID`), so a response lost in flight is sent again and
//! nothing acknowledged is sent twice. An SSE stream has no acknowledgement of its own,
//! so the buffer also remembers how far it was written to a stream (`written`): past the
//! bound, messages already written may be dropped from the front (`dropped` then says a
//! reconnect needing them cannot be served), while messages never written mean the client
//! is too slow. Pure bookkeeping: no I/O, no clock.

use std::collections::VecDeque;

use switchboard_ws::PreparedMessage;

/// Messages by seq, with what was acknowledged, written and dropped.
///
/// A message is kept as the publication's shared frame (one pointer), not as its own
/// copy or slice: an SSE stream keeps what it wrote until the bound pushes it out, so
/// at thousands of subscribers the entry's size is most of a session's memory. The seq
/// is the position: the buffer is contiguous up to `last_seq`.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// Unacknowledged messages, in seq order: the last one is `last_seq`.
    buffer: VecDeque<PreparedMessage>,
    /// Bytes of `buffer`'s frames.
    bytes: usize,
    /// The seq of the newest message.
    last_seq: u64,
    /// Everything up to this seq is acknowledged.
    acked: u64,
    /// Everything up to this seq was written to a stream (this one or an earlier).
    written: u64,
    /// The newest seq dropped past the bound without an ack.
    dropped: u64,
}

/// What [`Replay::bound`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    /// Within the bound (possibly after dropping messages already written).
    Kept,
    /// Over the bound with messages never written: the client is too slow.
    Over,
}

impl Replay {
    /// Keeps a message; returns its seq.
    pub(super) fn push(&mut self, message: PreparedMessage) -> u64 {
        self.last_seq += 1;
        self.bytes += message.as_bytes().len();
        self.buffer.push_back(message);
        self.last_seq
    }

    /// The seq of the buffer's first message.
    fn front_seq(&self) -> u64 {
        self.last_seq + 1 - self.buffer.len() as u64
    }

    /// Drops messages already written to a stream from the front while over
    /// `max_messages` or `max_bytes`; [`Bound::Over`] if that is not enough.
    pub(super) fn bound(&mut self, max_messages: usize, max_bytes: usize) -> Bound {
        while self.buffer.len() > max_messages || self.bytes > max_bytes {
            let seq = self.front_seq();
            if self.buffer.is_empty() || seq > self.written {
                return Bound::Over;
            }
            self.pop_front();
            self.dropped = seq;
        }
        Bound::Kept
    }

    fn pop_front(&mut self) {
        if let Some(message) = self.buffer.pop_front() {
            self.bytes -= message.as_bytes().len();
        }
    }

    /// Drops every message up to `seq` (at most the newest one). Acknowledged messages
    /// need no writing to a stream either.
    pub(super) fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.last_seq);
        while !self.buffer.is_empty() && self.front_seq() <= seq {
            self.pop_front();
        }
        self.acked = self.acked.max(seq);
        self.written = self.written.max(self.acked);
    }

    /// A new stream resumes after `seq`: acknowledges it, and everything after it is
    /// written again. `false` (and nothing changes) when messages it needs were dropped.
    pub(super) fn resume(&mut self, seq: u64) -> bool {
        if seq < self.dropped {
            return false;
        }
        self.ack(seq);
        self.written = self.acked;
        true
    }

    /// Marks everything as written (nothing of the past is sent to a new stream: used
    /// when a stream can only be told the end).
    pub(super) fn skip_to_end(&mut self) {
        self.written = self.last_seq;
    }

    /// Whether messages wait to be written to a stream.
    pub(super) fn has_unwritten(&self) -> bool {
        self.last_seq > self.written
    }

    /// The messages not yet written with their seqs, in order; they count as written
    /// from now on.
    pub(super) fn take_unwritten(&mut self) -> impl Iterator<Item = (u64, &PreparedMessage)> {
        let front = self.front_seq();
        // Everything before `front` is acknowledged, hence written.
        let start = usize::try_from(self.written.saturating_sub(front - 1)).unwrap_or(usize::MAX);
        let start = start.min(self.buffer.len());
        self.written = self.last_seq;
        self.buffer
            .range(start..)
            .zip(front + start as u64..)
            .map(|(message, seq)| (seq, message))
    }

    /// Every unacknowledged message, in order (a poll's answer).
    pub(super) fn pending(&self) -> impl Iterator<Item = &PreparedMessage> {
        self.buffer.iter()
    }

    /// Whether there is nothing unacknowledged.
    pub(super) fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Frame bytes and count of the unacknowledged messages.
    pub(super) fn size(&self) -> (usize, usize) {
        (self.bytes, self.buffer.len())
    }

    /// The seq a poll answer names: the newest message's, or the newest acknowledged.
    pub(super) fn seq(&self) -> u64 {
        if self.buffer.is_empty() {
            self.acked
        } else {
            self.last_seq
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: u64) -> Replay {
        let mut replay = Replay::default();
        for i in 1..=n {
            assert_eq!(replay.push(text(&format!("m{i}"))), i);
        }
        replay
    }

    fn text(payload: &str) -> PreparedMessage {
        PreparedMessage::text(payload)
    }

    /// The seqs of `take_unwritten`, checked against the payloads `filled` gave them.
    fn seqs<'a>(messages: impl Iterator<Item = (u64, &'a PreparedMessage)>) -> Vec<u64> {
        messages
            .map(|(seq, message)| {
                let payload = message.payload();
                if payload.starts_with(b"m") {
                    assert_eq!(&payload[..], format!("m{seq}").as_bytes());
                }
                seq
            })
            .collect()
    }

    fn pending(replay: &Replay) -> Vec<String> {
        replay
            .pending()
            .map(|m| String::from_utf8_lossy(&m.payload()).into_owned())
            .collect()
    }

    #[test]
    fn acks_drop_the_front_and_never_go_back() {
        let mut replay = filled(5);
        replay.ack(2);
        assert_eq!(pending(&replay), ["m3", "m4", "m5"]);
        assert_eq!(replay.seq(), 5);
        // An older ack (a poll answered twice) changes nothing; one past the end stops there.
        replay.ack(1);
        assert_eq!(pending(&replay), ["m3", "m4", "m5"]);
        replay.ack(99);
        assert!(replay.is_empty());
        assert_eq!(replay.seq(), 5, "the acknowledged seq");
        assert_eq!(replay.push(text("x")), 6);
    }

    #[test]
    fn a_stream_gets_what_was_not_written_once() {
        let mut replay = filled(3);
        assert!(replay.has_unwritten());
        assert_eq!(seqs(replay.take_unwritten()), [1, 2, 3]);
        assert!(!replay.has_unwritten());
        replay.push(text("m4"));
        assert_eq!(seqs(replay.take_unwritten()), [4]);
        // A reconnect that saw up to 2 gets 3 and 4 again.
        assert!(replay.resume(2));
        assert_eq!(seqs(replay.take_unwritten()), [3, 4]);
        assert_eq!(pending(&replay), ["m3", "m4"]);
    }

    #[test]
    fn the_bound_drops_written_messages_then_refuses() {
        let mut replay = filled(4);
        let _ = replay.take_unwritten().count();
        // Four written, two allowed: the oldest two go, and a reconnect needing them fails.
        assert_eq!(replay.bound(2, usize::MAX), Bound::Kept);
        assert_eq!(pending(&replay), ["m3", "m4"]);
        assert!(!replay.resume(1));
        assert!(replay.resume(2));
        // After that resume nothing counts as written: over the bound is now too slow.
        replay.push(text("m5"));
        assert_eq!(replay.bound(2, usize::MAX), Bound::Over);
        assert_eq!(replay.size().1, 3);
    }

    #[test]
    fn the_bound_counts_bytes_too() {
        // Frames of 2 + 2 bytes each.
        let mut replay = filled(3);
        assert_eq!(replay.size(), (12, 3));
        let _ = replay.take_unwritten().count();
        assert_eq!(replay.bound(10, 8), Bound::Kept);
        assert_eq!(replay.size(), (8, 2));
        assert_eq!(pending(&replay), ["m2", "m3"]);
        replay.skip_to_end();
        assert!(!replay.has_unwritten());
    }
}
