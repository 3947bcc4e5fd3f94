//! Writing an SSE stream on a connection taken out of hyper (see `net::takeover`).
//!
//! hyper wrote the head (`Transfer-Encoding: chunked`); from then on this task owns the
//! connection: whatever the body has ready goes out as one HTTP chunk in one vectored
//! write (its size line, the body's pieces as they are, the closing CRLF). A read that
//! ends, fails or brings anything at all ends the stream: the client went away, or sent
//! what an SSE client never sends. When the body ends, the last chunk is written and the
//! connection shut down: it does not go back to hyper for another request (a browser's
//! EventSource opens a new one to reconnect).

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::takeover::Taken;
use crate::transport::http_session::StreamBody;

/// The most pieces handed to one vectored write (a chunk is usually three: its size
/// line, the events, CRLF).
const MAX_SLICES: usize = 16;

/// Writes `body` (after `first`) to `io` as chunks until the body ends or the client
/// goes away (see the module doc).
pub(crate) fn write(io: Taken, first: Option<Bytes>, body: StreamBody) -> Writer {
    let read = Arc::new(ReadWake {
        // Look once at the start, which also registers for what comes next.
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let mut writer = Writer {
        io,
        body,
        pieces: VecDeque::new(),
        lines: BytesMut::new(),
        ended: false,
        read_waker: Waker::from(read.clone()),
        read,
    };
    if let Some(first) = first {
        let at = writer.pieces.len();
        writer.pieces.push_back(Bytes::new());
        let len = first.len();
        writer.pieces.push_back(first);
        writer.close_chunk(at, len);
    }
    writer
}

/// The future that writes one stream (see [`write`]).
#[derive(Debug)]
pub(crate) struct Writer {
    io: Taken,
    body: StreamBody,
    /// What is queued and not yet written, in order.
    pieces: VecDeque<Bytes>,
    /// Where size lines are made (its memory is reused once they are written).
    lines: BytesMut,
    /// The body ended: the last chunk is queued; shut down once it is written.
    ended: bool,
    /// Whether the connection's read side has news (see [`ReadWake`]).
    read: Arc<ReadWake>,
    /// `read` as a waker, for the reads.
    read_waker: Waker,
}

/// The waker reads register: it marks that the read side has something to say (data,
/// the end, an error) and wakes the task. A delivery wakes the task through the body, and
/// the task then looks at the read side only if this says so: no read attempt per
/// delivery.
#[derive(Debug)]
struct ReadWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Writer {
    /// Makes the pieces from `at` (a placeholder) onwards, `len` bytes, one HTTP chunk:
    /// the placeholder becomes the size line, and CRLF follows.
    fn close_chunk(&mut self, at: usize, len: usize) {
        if len == 0 {
            // Nothing but empty pieces (if any): drop the placeholder and them.
            self.pieces.truncate(at);
            return;
        }
        size_line(&mut self.lines, len);
        self.pieces[at] = self.lines.split().freeze();
        self.pieces.push_back(Bytes::from_static(b"\r\n"));
    }

    /// Whether the client closed its side, the connection failed, or the client sent
    /// something after its request: an SSE client has nothing more to say (a browser's
    /// EventSource never does), and reading and dropping whatever a client sends would let
    /// it keep this task busy for nothing. Such a client is cut off.
    fn client_gone(&mut self) -> bool {
        let mut cx = Context::from_waker(&self.read_waker);
        let mut scratch = [0u8; 64];
        let mut buf = ReadBuf::new(&mut scratch);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_ready()
    }

    /// Writes queued pieces until none is left (`Ready(true)`), the socket is full
    /// (`Pending`) or the write failed (`Ready(false)`).
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.pieces.is_empty() {
            return Poll::Ready(true);
        }
        while !self.pieces.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = self.pieces.len().min(MAX_SLICES);
            for (slice, piece) in slices.iter_mut().zip(&self.pieces) {
                *slice = IoSlice::new(piece);
            }
            let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(n)) => n,
                Poll::Pending => return Poll::Pending,
            };
            let mut left = written;
            while left > 0 {
                let Some(front) = self.pieces.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.pieces.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        // A TLS stream may hold records until flushed; a socket's flush costs nothing.
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(true),
            Poll::Ready(Err(_)) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes `len` in hex and CRLF into `out`: the line that opens a chunk.
fn size_line(out: &mut BytesMut, len: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    // Room for a few lines at once: a written line's memory is reused when this runs out.
    out.reserve(24);
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

impl Future for Writer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.read.task.register(cx.waker());
        if this.read.woken.swap(false, Ordering::AcqRel) && this.client_gone() {
            return Poll::Ready(());
        }
        let mut asked = false;
        loop {
            match this.poll_write_queued(cx) {
                Poll::Ready(true) => {}
                Poll::Ready(false) => return Poll::Ready(()),
                // The body is not polled while the socket is full: its messages wait in
                // the replay buffer, whose bound ends a client that stopped reading.
                Poll::Pending => return Poll::Pending,
            }
            if this.ended {
                return Pin::new(&mut this.io).poll_shutdown(cx).map(|_| ());
            }
            if asked {
                // Written; the body wakes the task when it has more.
                return Poll::Pending;
            }
            // Everything the body has ready goes out as one chunk.
            let at = this.pieces.len();
            this.pieces.push_back(Bytes::new());
            let mut len = 0;
            let pieces = &mut this.pieces;
            let batch = this.body.poll_batch(cx, &mut |chunk: Bytes| {
                len += chunk.len();
                pieces.push_back(chunk);
            });
            asked = true;
            match batch {
                Poll::Pending => {
                    this.pieces.truncate(at);
                    return Poll::Pending;
                }
                Poll::Ready(ended) => {
                    this.close_chunk(at, len);
                    if ended {
                        this.ended = true;
                        this.pieces.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_line;

    #[test]
    fn size_lines_are_hex() {
        let mut out = bytes::BytesMut::new();
        for (len, line) in [(1, "1\r\n"), (255, "ff\r\n"), (4096, "1000\r\n")] {
            size_line(&mut out, len);
            assert_eq!(&out.split()[..], line.as_bytes());
        }
    }
}
