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

use bytes::Bytes;

/// Messages by seq, with what was acknowledged, written and dropped.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// Unacknowledged messages, in seq order, contiguous up to `last_seq`.
    buffer: VecDeque<(u64, Bytes)>,
    /// Bytes of `buffer`.
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
    pub(super) fn push(&mut self, payload: Bytes) -> u64 {
        self.last_seq += 1;
        self.bytes += payload.len();
        self.buffer.push_back((self.last_seq, payload));
        self.last_seq
    }

    /// Drops messages already written to a stream from the front while over
    /// `max_messages` or `max_bytes`; [`Bound::Over`] if that is not enough.
    pub(super) fn bound(&mut self, max_messages: usize, max_bytes: usize) -> Bound {
        while self.buffer.len() > max_messages || self.bytes > max_bytes {
            match self.buffer.front() {
                Some(&(seq, _)) if seq <= self.written => {
                    self.pop_front();
                    self.dropped = seq;
                }
                _ => return Bound::Over,
            }
        }
        Bound::Kept
    }

    fn pop_front(&mut self) {
        if let Some((_, payload)) = self.buffer.pop_front() {
            self.bytes -= payload.len();
        }
    }

    /// Drops every message up to `seq` (at most the newest one). Acknowledged messages
    /// need no writing to a stream either.
    pub(super) fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.last_seq);
        while self.buffer.front().is_some_and(|&(front, _)| front <= seq) {
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

    /// The messages not yet written, in order; they count as written from now on.
    pub(super) fn take_unwritten(&mut self) -> impl Iterator<Item = &(u64, Bytes)> {
        let start = self.buffer.partition_point(|(seq, _)| *seq <= self.written);
        self.written = self.last_seq;
        self.buffer.range(start..)
    }

    /// Every unacknowledged message, in order (a poll's answer).
    pub(super) fn pending(&self) -> impl Iterator<Item = &(u64, Bytes)> {
        self.buffer.iter()
    }

    /// Whether there is nothing unacknowledged.
    pub(super) fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Bytes and count of the unacknowledged messages.
    pub(super) fn size(&self) -> (usize, usize) {
        (self.bytes, self.buffer.len())
    }

    /// The seq a poll answer names: the newest message's, or the newest acknowledged.
    pub(super) fn seq(&self) -> u64 {
        self.buffer.back().map_or(self.acked, |(seq, _)| *seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: u64) -> Replay {
        let mut replay = Replay::default();
        for i in 1..=n {
            assert_eq!(replay.push(Bytes::from(format!("m{i}"))), i);
        }
        replay
    }

    fn seqs<'a>(messages: impl Iterator<Item = &'a (u64, Bytes)>) -> Vec<u64> {
        messages.map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn acks_drop_the_front_and_never_go_back() {
        let mut replay = filled(5);
        replay.ack(2);
        assert_eq!(seqs(replay.pending()), [3, 4, 5]);
        assert_eq!(replay.seq(), 5);
        // An older ack (a poll answered twice) changes nothing; one past the end stops there.
        replay.ack(1);
        assert_eq!(seqs(replay.pending()), [3, 4, 5]);
        replay.ack(99);
        assert!(replay.is_empty());
        assert_eq!(replay.seq(), 5, "the acknowledged seq");
        assert_eq!(replay.push(Bytes::from_static(b"x")), 6);
    }

    #[test]
    fn a_stream_gets_what_was_not_written_once() {
        let mut replay = filled(3);
        assert!(replay.has_unwritten());
        assert_eq!(seqs(replay.take_unwritten()), [1, 2, 3]);
        assert!(!replay.has_unwritten());
        replay.push(Bytes::from_static(b"4"));
        assert_eq!(seqs(replay.take_unwritten()), [4]);
        // A reconnect that saw up to 2 gets 3 and 4 again.
        assert!(replay.resume(2));
        assert_eq!(seqs(replay.take_unwritten()), [3, 4]);
        assert_eq!(seqs(replay.pending()), [3, 4]);
    }

    #[test]
    fn the_bound_drops_written_messages_then_refuses() {
        let mut replay = filled(4);
        let _ = replay.take_unwritten().count();
        // Four written, two allowed: the oldest two go, and a reconnect needing them fails.
        assert_eq!(replay.bound(2, usize::MAX), Bound::Kept);
        assert_eq!(seqs(replay.pending()), [3, 4]);
        assert!(!replay.resume(1));
        assert!(replay.resume(2));
        // After that resume nothing counts as written: over the bound is now too slow.
        replay.push(Bytes::from_static(b"5"));
        assert_eq!(replay.bound(2, usize::MAX), Bound::Over);
        assert_eq!(replay.size().1, 3);
    }

    #[test]
    fn the_bound_counts_bytes_too() {
        let mut replay = filled(3);
        assert_eq!(replay.size(), (6, 3));
        let _ = replay.take_unwritten().count();
        assert_eq!(replay.bound(10, 4), Bound::Kept);
        assert_eq!(replay.size(), (4, 2));
        replay.skip_to_end();
        assert!(!replay.has_unwritten());
    }
}
