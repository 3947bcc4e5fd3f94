//! The fan-out peers: the [`Hub`] behind a fastwebsockets server and behind a
//! tokio-tungstenite one.
//!
//! Both run one task per connection. In it, two futures run side by side on the two halves
//! of the socket (see [`run_connection`]): the reader handles commands and queues their
//! replies, the writer drains the connection's queue (replies and pushes, in order) to the
//! socket. When the reader ends, the writer gets [`DRAIN_TIMEOUT`] to send what is queued (a
//! close reply among it); when the writer ends (an error, or the hub closed a slow consumer),
//! the reader is dropped with it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, WebSocketWrite, upgrade,
};
use futures_util::future::Either;
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

use crate::hub::{Hub, Next, Outbox, SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON, Session};
use crate::{accept_loop, serve_fastws_with};

/// How long a connection's writer may take, once its reader has ended, to send what is
/// queued, and how long a slow consumer's close frame may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Which half of a connection finished, and how.
enum Half<E> {
    Read(Result<(), E>),
    Write(Result<(), E>),
}

/// Runs a connection's reader and writer side by side until the connection is over.
///
/// Not with `tokio::select!`: it polls every branch whenever the task wakes, so every push
/// would poll the reader too, and tungstenite zero-fills its read buffer (128 KiB by
/// default) before each read attempt, even one that finds nothing: that memset was half of
/// the tungstenite peer's CPU in a profile. A `FuturesUnordered` gives each half its own
/// waker, so a half is polled only when it can make progress, and both stay in one task.
async fn run_connection<E>(
    reading: impl Future<Output = Result<(), E>>,
    writing: impl Future<Output = Result<(), E>>,
) -> Result<(), E> {
    let mut halves = FuturesUnordered::new();
    halves.push(Either::Left(reading.map(Half::Read)));
    halves.push(Either::Right(writing.map(Half::Write)));
    match halves.next().await {
        Some(Half::Read(read)) => {
            // The reader took the session with it, so the writer will see the end of its
            // queue once it has sent what is there (a close reply, perhaps).
            let written = timeout(DRAIN_TIMEOUT, halves.next()).await;
            read?;
            match written {
                Ok(Some(Half::Write(written))) => written,
                _ => Ok(()),
            }
        }
        // Returning drops the reader, and with it the session.
        Some(Half::Write(written)) => written,
        None => Ok(()),
    }
}

/// Serves the broadcast hub on fastwebsockets until the task is dropped.
///
/// The upgrade is fastwebsockets' own (hyper HTTP/1.1, `upgrade::upgrade`, the connection
/// in `tokio::task::unconstrained`, as in the echo peer). The socket is split with
/// `WebSocket::split(tokio::io::split)`, as in upstream's `echo_server_split` example (the
/// `unstable-split` feature): the reader collects fragments with [`FragmentCollectorRead`]
/// and queues its obligations (pong, close reply) to the writer. A publication is encoded
/// once into [`Bytes`] and written to each subscriber from that shared buffer
/// ([`Payload::Borrowed`]). fastwebsockets has no write buffer, so each frame is one write.
pub async fn serve_fanout_fastws(listener: TcpListener) {
    let hub = Arc::new(Hub::<Outgoing>::default());
    serve_fastws_with(listener, move |fut| fanout_fastws(fut, hub.clone())).await;
}

/// The upgraded connection, split by `tokio::io::split`.
type FastRead = tokio::io::ReadHalf<TokioIo<Upgraded>>;
type FastWrite = tokio::io::WriteHalf<TokioIo<Upgraded>>;

/// A frame queued for a fastwebsockets writer: its opcode and its payload, which every
/// subscriber of a publication shares (cloning is a refcount increment).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    opcode: OpCode,
    payload: Bytes,
}

impl From<String> for Outgoing {
    fn from(text: String) -> Self {
        Outgoing {
            opcode: OpCode::Text,
            payload: Bytes::from(text),
        }
    }
}

async fn fanout_fastws(
    fut: upgrade::UpgradeFut,
    hub: Arc<Hub<Outgoing>>,
) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (read, write) = ws.split(tokio::io::split);
    let (session, outbox) = hub.open();
    run_connection(
        read_fastws(FragmentCollectorRead::new(read), session),
        write_fastws(write, outbox),
    )
    .await
}

async fn read_fastws(
    mut ws: FragmentCollectorRead<FastRead>,
    mut session: Session<Outgoing>,
) -> Result<(), WebSocketError> {
    loop {
        // auto_pong and auto_close are on (the defaults): a ping or close comes back as a
        // frame to send, which must follow what is already queued.
        let frame = ws
            .read_frame(&mut |obligation: Frame<'_>| {
                session.send(Outgoing {
                    opcode: obligation.opcode,
                    payload: Bytes::copy_from_slice(&obligation.payload),
                })
            })
            .await?;
        match frame.opcode {
            OpCode::Text => {
                // fastwebsockets has checked the UTF-8 already; this cannot fail.
                let text =
                    std::str::from_utf8(&frame.payload).map_err(|_| WebSocketError::InvalidUTF8)?;
                let reply = session.handle(text);
                if session.send(reply).await.is_err() {
                    return Ok(()); // The writer has ended.
                }
            }
            OpCode::Close => return Ok(()),
            OpCode::Binary | OpCode::Continuation | OpCode::Ping | OpCode::Pong => {}
        }
    }
}

async fn write_fastws(
    mut ws: WebSocketWrite<FastWrite>,
    mut outbox: Outbox<Outgoing>,
) -> Result<(), WebSocketError> {
    loop {
        match outbox.next().await {
            Next::Send(out) => {
                let frame = Frame::new(true, out.opcode, None, Payload::Borrowed(&out.payload));
                ws.write_frame(frame).await?;
            }
            Next::Slow => {
                let close = Frame::close(SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON.as_bytes());
                // Best effort: the peer is not reading, so this may never fit.
                let _ = timeout(DRAIN_TIMEOUT, ws.write_frame(close)).await;
                return Ok(());
            }
            Next::Done => return Ok(()),
        }
    }
}

/// Serves the broadcast hub on tokio-tungstenite until the task is dropped.
///
/// The connection is `accept_async` then `StreamExt::split`, the shape of tokio-tungstenite's
/// own broadcast example; tungstenite answers pings and closes itself. A publication is
/// encoded once into a [`Message::Text`], whose `Utf8Bytes` every subscriber shares. The
/// writer `feed`s every message already queued and flushes once, so a burst leaves in one
/// write (tungstenite copies each frame into its write buffer).
pub async fn serve_fanout_tungstenite(listener: TcpListener) {
    let hub = Arc::new(Hub::<Message>::default());
    accept_loop(listener, move |stream| {
        let hub = hub.clone();
        async move {
            if let Err(err) = fanout_tungstenite(stream, hub).await {
                debug!(cause = %err, "tungstenite fan-out connection ended");
            }
        }
    })
    .await;
}

async fn fanout_tungstenite(stream: TcpStream, hub: Arc<Hub<Message>>) -> Result<(), WsError> {
    let ws = tokio_tungstenite::accept_async(stream).await?;
    let (write, read) = ws.split();
    let (session, outbox) = hub.open();
    run_connection(
        read_tungstenite(read, session),
        write_tungstenite(write, outbox),
    )
    .await
}

async fn read_tungstenite(
    mut ws: SplitStream<WebSocketStream<TcpStream>>,
    mut session: Session<Message>,
) -> Result<(), WsError> {
    // Until the stream ends rather than at the close frame: tungstenite sends its close
    // reply while reading on, and ends the stream after it.
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            let reply = session.handle(text.as_str());
            if session.send(reply).await.is_err() {
                break; // The writer has ended.
            }
        }
    }
    Ok(())
}

async fn write_tungstenite(
    mut ws: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut outbox: Outbox<Message>,
) -> Result<(), WsError> {
    loop {
        match outbox.next().await {
            Next::Send(message) => {
                ws.feed(message).await?;
                while let Some(message) = outbox.ready() {
                    ws.feed(message).await?;
                }
                ws.flush().await?;
            }
            Next::Slow => {
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::from(SLOW_CONSUMER_CODE),
                    reason: SLOW_CONSUMER_REASON.into(),
                }));
                // Best effort: the peer is not reading, so this may never fit.
                let _ = timeout(DRAIN_TIMEOUT, ws.send(close)).await;
                return Ok(());
            }
            Next::Done => return Ok(()),
        }
    }
}
