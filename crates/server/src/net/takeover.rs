//! Taking a connection out of hyper once a response's head is written.
//!
//! An SSE stream is a response that never ends. Left inside hyper, every delivery goes
//! through hyper's connection task (its dispatcher, its chunk encoder, its buffers: an
//! 8 KiB read buffer and an 8 KiB write buffer kept for the stream's whole life). A
//! WebSocket leaves hyper through the upgrade; an SSE response cannot (an upgrade needs a
//! 101), so the accept loop wraps each connection's I/O in [`Detachable`] and gives each
//! request a [`Takeover`]: a handler answers with [`Takeover::body`] and gets the
//! connection back once hyper has written the response's head. The connection then
//! belongs to the handler: hyper's task sees an error on its next write and ends, freeing
//! its buffers, and the handler writes the body itself (chunked, as the head announced).
//!
//! The order is hyper's: it queues the head, polls the body once (the body arms the
//! takeover and stays pending), writes every queued byte, then flushes the I/O. That flush
//! is the moment the head has left and nothing of hyper's is buffered: the I/O hands
//! itself over there.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// A connection's I/O, as a handler gets it back.
pub(crate) trait Io:
    AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static
{
}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static> Io for T {}

/// A connection taken out of hyper.
pub(crate) type Taken = Box<dyn Io>;

/// What a connection's I/O and the handlers of its requests share.
#[derive(Debug, Default)]
struct Slot {
    /// Set by the body's first poll: hand the I/O over at the next flush.
    armed: AtomicBool,
    /// Where to hand it (set together with `armed`).
    to: Mutex<Option<oneshot::Sender<Taken>>>,
}

/// A request's way to take its connection out of hyper (in the request's extensions,
/// put there by the accept loop).
#[derive(Clone, Debug)]
pub(crate) struct Takeover(Arc<Slot>);

impl Takeover {
    /// A new connection's takeover, for [`Detachable::new`] and its requests.
    pub(crate) fn new() -> Self {
        Takeover(Arc::default())
    }

    /// The body of a response whose connection the handler takes over, and where the
    /// connection arrives once the head is written. The receiver fails if hyper never
    /// writes the head (the client went away, or the response has no body).
    pub(crate) fn body(self) -> (TakeoverBody, oneshot::Receiver<Taken>) {
        let (to, taken) = oneshot::channel();
        let body = TakeoverBody {
            slot: self.0,
            to: Some(to),
        };
        (body, taken)
    }
}

/// A response body that is never written by hyper: its first poll arms the takeover.
#[derive(Debug)]
pub(crate) struct TakeoverBody {
    slot: Arc<Slot>,
    to: Option<oneshot::Sender<Taken>>,
}

impl hyper::body::Body for TakeoverBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(to) = this.to.take() {
            *this.slot.to.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
            this.slot.armed.store(true, Ordering::Release);
        }
        // No waker kept: hyper flushes next, in this same poll, and the I/O goes.
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A connection's I/O that a request can take out of hyper (see the module doc).
#[derive(Debug)]
pub(crate) struct Detachable<S> {
    /// `None` once taken.
    inner: Option<S>,
    slot: Arc<Slot>,
}

impl<S> Detachable<S> {
    /// Wraps `inner`, the connection that `takeover` (in its requests' extensions) takes.
    pub(crate) fn new(inner: S, takeover: &Takeover) -> Self {
        Detachable {
            inner: Some(inner),
            slot: takeover.0.clone(),
        }
    }

    /// The wrapped I/O (`None` if a request took it).
    pub(crate) fn into_inner(self) -> Option<S> {
        self.inner
    }

    fn inner(&mut self) -> io::Result<Pin<&mut S>>
    where
        S: Unpin,
    {
        match self.inner.as_mut() {
            Some(inner) => Ok(Pin::new(inner)),
            None => Err(taken()),
        }
    }
}

/// What hyper sees once the connection is gone: an error that ends its task.
fn taken() -> io::Error {
    io::Error::other("the connection was taken over by its response")
}

impl<S: AsyncRead + Unpin> AsyncRead for Detachable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_read(cx, buf)
    }
}

impl<S: Io> AsyncWrite for Detachable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.inner()?.poll_flush(cx))?;
        // hyper flushes only once everything it queued is written: with the takeover
        // armed, the response's head has left, and the connection is the handler's.
        if this.slot.armed.load(Ordering::Acquire) {
            let to = this
                .slot
                .to
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let (Some(to), Some(inner)) = (to, this.inner.take()) {
                // The handler may be gone already; the connection closes with it.
                let _ = to.send(Box::new(inner));
            }
            return Poll::Ready(Err(taken()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner()?.poll_shutdown(cx)
    }
}
