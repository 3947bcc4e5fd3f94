//! A socket whose writes may not stall for longer than a deadline.
//!
//! hyper has no write timeout: a client that stops reading a response (an SSE stream, a
//! large asset) leaves hyper's write pending forever, and the connection with it. Every
//! accepted socket is wrapped in [`WriteDeadline`]: a write that stays pending for
//! `limits.write_timeout` fails with `TimedOut`, and hyper closes the connection. Reads
//! pass through untouched (an idle keep-alive connection is hyper's header timeout's
//! business). WebSockets take the socket back out after the upgrade
//! ([`WriteDeadline::into_inner`]): their outbox bound cuts off a client that stops
//! reading, sooner.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// `S` with a deadline on stalled writes (see the module doc).
#[derive(Debug)]
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is pending; dropped once one makes progress. Boxed and made
    /// only on a stall: most writes never stall.
    stalled: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl<S> WriteDeadline<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
            metrics,
        }
    }

    /// The wrapped stream.
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }

    /// After the inner write returned `poll`: disarms on progress; on a stall, arms the
    /// deadline (once) and fails the write when it has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.metrics.write_timeouts.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading (limits.write_timeout)",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpSocket};

    use super::*;

    /// A peer that never reads: the writes fill both socket buffers, stall, and fail
    /// with `TimedOut` once the deadline passes; the metric counts it.
    #[tokio::test]
    async fn a_stalled_write_fails_after_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let _peer = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let mut io = WriteDeadline::new(server, Duration::from_millis(200), metrics.clone());
        let chunk = vec![0u8; 64 << 10];
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(err) = io.write_all(&chunk).await {
                    return err;
                }
            }
        })
        .await
        .expect("the write never failed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(metrics.write_timeouts.get(), 1);
    }
}
