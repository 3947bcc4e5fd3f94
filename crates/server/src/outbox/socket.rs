//! An attached socket (see the parent module's doc): the publisher's direct writes, the
//! queue written when the socket takes more, TLS records made and sent beside the socket,
//! and the connection's own reads and writes through the same lock.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConnection;
use switchboard_ws::PreparedMessage;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Out, Outbox, Shared};

/// Frames handed to one vectored write when the queue is flushed.
const MAX_IOVECS: usize = 64;
/// Over TLS, queued frames are encrypted this many bytes at a time (at least one frame):
/// the ciphertext is a copy per connection, so only a bounded part of the queue is
/// encrypted ahead of the socket.
const TLS_CHUNK: usize = 64 << 10;

impl Outbox {
    /// Attaches the socket's write half: from now on pushes are written directly when
    /// possible, and [`Outbox::recv`] writes the queue to the socket instead of returning
    /// messages. Returns the writer the connection's own frames go through.
    pub(crate) fn attach(&self, socket: OwnedWriteHalf) -> SharedWriter {
        self.shared.out().socket = Some(Socket::Tcp(socket));
        SharedWriter {
            shared: self.shared.clone(),
        }
    }

    /// [`Outbox::attach`] for a TLS connection: the socket's two halves and the session
    /// the handshake made. Returns the reader that decrypts what arrives (under the
    /// outbox's lock, see the outbox's module doc) and the writer for the connection's own
    /// frames.
    pub(crate) fn attach_tls(
        &self,
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
        mut session: ServerConnection,
    ) -> (TlsReader, SharedWriter) {
        // Encrypting a whole frame (or batch) at once keeps the stream in whole frames
        // without tracking a partial one; what is buffered is bounded by the queue's rules
        // instead (a push encrypts only when nothing waits, the queue `TLS_CHUNK` at a time).
        session.set_buffer_limit(None);
        self.shared.out().socket = Some(Socket::Tls {
            tcp: write,
            session: Box::new(session),
        });
        let reader = TlsReader {
            tcp: read,
            shared: self.shared.clone(),
        };
        let writer = SharedWriter {
            shared: self.shared.clone(),
        };
        (reader, writer)
    }
}

impl Out {
    /// Writes queued frames until the queue is empty (`Ready(Ok)`) or the socket is full
    /// (`Pending`, with the task registered for writability).
    pub(super) fn poll_flush_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The adapter finishes its own partial buffer first (it is polled by the same
        // task and wakes it when done).
        if self.adapter_partial {
            return Poll::Pending;
        }
        match self.socket.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(Socket::Tcp(socket)) => poll_write_queue(
                socket,
                &mut self.queue,
                &mut self.bytes,
                &mut self.head_written,
                cx,
            ),
            Some(Socket::Tls { tcp, session }) => loop {
                // Records already made go first; then the next part of the queue.
                ready!(poll_send_tls(session, tcp, cx))?;
                if self.queue.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let (mut count, mut taken) = (0, 0);
                for message in self.queue.iter().take(MAX_IOVECS) {
                    let bytes = message.as_bytes();
                    if count > 0 && taken + bytes.len() > TLS_CHUNK {
                        break;
                    }
                    slices[count] = IoSlice::new(bytes);
                    (count, taken) = (count + 1, taken + bytes.len());
                }
                // One run of records for the lot (`encrypt_all`).
                encrypt_all(session, &slices[..count], taken)?;
                for message in self.queue.drain(..count) {
                    self.bytes -= message.as_bytes().len();
                }
            },
        }
    }
}

/// The plain-TCP part of [`Out::poll_flush_queue`]: vectored writes of the queue, the
/// front frame from `head_written` on.
fn poll_write_queue(
    socket: &mut OwnedWriteHalf,
    queue: &mut VecDeque<PreparedMessage>,
    bytes: &mut usize,
    head_written: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (i, message) in queue.iter().take(MAX_IOVECS).enumerate() {
            let frame = message.as_bytes();
            slices[i] = IoSlice::new(if i == 0 {
                &frame[*head_written..]
            } else {
                frame
            });
            count += 1;
        }
        let mut n = ready!(Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..count]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        while n > 0 {
            let Some(front) = queue.front() else {
                break;
            };
            let left = front.as_bytes().len() - *head_written;
            if n < left {
                *head_written += n;
                break;
            }
            n -= left;
            *head_written = 0;
            if let Some(done) = queue.pop_front() {
                *bytes -= done.as_bytes().len();
            }
        }
    }
    Poll::Ready(Ok(()))
}

/// Where an attached connection's bytes go.
#[derive(Debug)]
pub(super) enum Socket {
    /// Plain TCP: frames are written as they are.
    Tcp(OwnedWriteHalf),
    /// TLS: frames are encrypted into the session, whose records are written to `tcp`.
    /// Boxed: the session is large, and the plain case should not pay its size.
    Tls {
        tcp: OwnedWriteHalf,
        session: Box<ServerConnection>,
    },
}

impl Socket {
    /// A publisher's non-blocking write of `bytes`: how many of them are now part of the
    /// stream (written to the socket, or over TLS encrypted into the session); 0 when
    /// none. Any error but WouldBlock shows again in the connection's next write.
    pub(super) fn try_write(&mut self, bytes: &[u8]) -> usize {
        match self {
            Socket::Tcp(tcp) => tcp.try_write(bytes).unwrap_or(0),
            Socket::Tls { tcp, session } => {
                // Records still waiting for the socket: the frames wait in the queue, so
                // that the ciphertext buffered per connection stays one batch at most.
                if session.wants_write() || session.writer().write_all(bytes).is_err() {
                    return 0;
                }
                let _ = send_tls(session, &mut TryWrite(tcp));
                bytes.len()
            }
        }
    }

    /// Whether encrypted records wait for the socket.
    pub(super) fn tls_pending(&self) -> bool {
        matches!(self, Socket::Tls { session, .. } if session.wants_write())
    }

    /// The connection's own write: over TLS, all of `bufs` is encrypted once the records
    /// before it have been sent, and sending starts at once.
    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Socket::Tls { tcp, session } => {
                ready!(poll_send_tls(session, tcp, cx))?;
                let total = bufs.iter().map(|b| b.len()).sum();
                encrypt_all(session, bufs, total)?;
                if let Poll::Ready(Err(err)) = poll_send_tls(session, tcp, cx) {
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(Ok(total))
            }
        }
    }

    /// Plain TCP has nothing buffered here; TLS sends the records that wait.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(_) => Poll::Ready(Ok(())),
            Socket::Tls { tcp, session } => poll_send_tls(session, tcp, cx),
        }
    }

    /// Over TLS, a close_notify alert before the socket's shutdown (once: rustls sends it
    /// once however often it is asked).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Socket::Tls { tcp, session } => {
                session.send_close_notify();
                ready!(poll_send_tls(session, tcp, cx))?;
                Pin::new(tcp).poll_shutdown(cx)
            }
        }
    }
}

/// Encrypts `bufs` (`total` bytes) into the session. Its buffer is unlimited (see
/// [`Outbox::attach_tls`]), so it takes them whole; anything less would cut a frame.
fn encrypt_all(
    session: &mut ServerConnection,
    bufs: &[IoSlice<'_>],
    total: usize,
) -> io::Result<()> {
    if session.writer().write_vectored(bufs)? != total {
        return Err(io::Error::other("the TLS session took part of a frame"));
    }
    Ok(())
}

/// Writes the session's records to `to` until none wait; a `WouldBlock` from `to` stops it.
fn send_tls(session: &mut ServerConnection, to: &mut dyn Write) -> io::Result<()> {
    while session.wants_write() {
        if session.write_tls(to)? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// [`send_tls`] as a poll: `Pending` (registered for writability) while the socket is full.
fn poll_send_tls(
    session: &mut ServerConnection,
    tcp: &mut OwnedWriteHalf,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match send_tls(session, &mut PollIo { io: tcp, cx }) {
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        done => Poll::Ready(done),
    }
}

/// A socket's write half as a blocking-style `Write` for rustls, writing only what the
/// kernel takes now (a publisher never waits).
struct TryWrite<'a>(&'a OwnedWriteHalf);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket half as `Read`/`Write` for rustls inside a poll: `Pending` becomes
/// `WouldBlock`, with the task registered for readiness.
struct PollIo<'a, 'b, T> {
    io: &'a mut T,
    cx: &'a mut Context<'b>,
}

impl<T: AsyncWrite + Unpin> Write for PollIo<'_, '_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(done) => done,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(done) => done,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> Read for PollIo<'_, '_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(err)) => Err(err),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// The read side of an attached TLS connection: reads records from the socket and
/// decrypts them in the session the outbox holds (see the module doc). A record the TLS
/// layer answers (an alert, a key update) is sent at once, or with the next flush.
#[derive(Debug)]
pub(crate) struct TlsReader {
    tcp: OwnedReadHalf,
    shared: Arc<Shared>,
}

impl AsyncRead for TlsReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = self.get_mut();
        let mut out = this.shared.out();
        let Some(Socket::Tls { tcp, session }) = out.socket.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        loop {
            // Plaintext first; `Ok(0)` is the peer's close_notify, an error its absence
            // at the end of the stream.
            match session.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
            match session.read_tls(&mut PollIo {
                io: &mut this.tcp,
                cx,
            }) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(err) => return Poll::Ready(Err(err)),
            }
            let processed = session.process_new_packets();
            if session.wants_write() {
                // Whatever the socket does not take now goes with the task's next flush.
                if let Poll::Ready(Err(err)) = poll_send_tls(session, tcp, cx) {
                    return Poll::Ready(Err(err));
                }
            }
            if let Err(err) = processed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
            }
        }
    }
}

/// The write side of an attached connection for the connection's own frames (the
/// WebSocket adapter's pongs, pings and close frames). It shares the socket with direct
/// pushes: a frame the adapter started is finished before anything else is written, and
/// queued frames are written before the adapter's.
#[derive(Debug)]
pub(crate) struct SharedWriter {
    shared: Arc<Shared>,
}

impl AsyncWrite for SharedWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let shared = &*self.shared;
        let mut out = shared.out();
        if !out.queue.is_empty() && !out.adapter_partial {
            // Queued frames go first: the socket may be in the middle of one, and a close
            // frame must follow every reply queued before it.
            ready!(out.poll_flush_queue(cx))?;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let Some(socket) = out.socket.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let n = ready!(socket.poll_write_vectored(cx, bufs))?;
        out.adapter_partial = n < total;
        if !out.adapter_partial && !out.queue.is_empty() {
            // Queued frames waited for this one: let the task's `recv` write them.
            shared.waker.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Over plain TCP every write went to the socket; over TLS the records wait in the
    /// session until sent.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.shared.out();
        match out.socket.as_mut() {
            Some(socket) => socket.poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.shared.out();
        match out.socket.as_mut() {
            Some(socket) => socket.poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
