//! tokio-tungstenite as a real peer: its client against our server, and our client against
//! its server.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use switchboard_ws::tokio::WebSocket;
use switchboard_ws::{CloseCode, CloseFrame, CloseState, Config, Message};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as TFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{
    CloseCode as TCloseCode, Data, OpCode as TOpCode,
};
use tokio_tungstenite::tungstenite::{Error as TError, Message as TMessage};

use crate::util::{EchoServer, Event, READ_TIMEOUT, timed};

/// The next message from a tungstenite stream; `None` once it ended cleanly.
async fn t_next<S>(ws: &mut S) -> Option<TMessage>
where
    S: Stream<Item = Result<TMessage, TError>> + Unpin,
{
    let next = tokio::time::timeout(READ_TIMEOUT, ws.next())
        .await
        .expect("tungstenite: no message within READ_TIMEOUT")?;
    Some(next.expect("tungstenite read failed"))
}

/// Like [`t_next`], but the stream must not have ended.
async fn t_expect<S>(ws: &mut S) -> TMessage
where
    S: Stream<Item = Result<TMessage, TError>> + Unpin,
{
    t_next(ws).await.expect("the tungstenite stream ended")
}

/// A raw tungstenite data frame (possibly a fragment).
fn t_fragment(opcode: Data, payload: &[u8], fin: bool) -> TMessage {
    TMessage::Frame(TFrame::message(
        Bytes::copy_from_slice(payload),
        TOpCode::Data(opcode),
        fin,
    ))
}

fn t_close(code: u16, reason: &str) -> TCloseFrame {
    TCloseFrame {
        code: TCloseCode::from(code),
        reason: reason.into(),
    }
}

/// Our message for a tungstenite data message.
fn ours(message: &TMessage) -> Message {
    match message {
        TMessage::Text(text) => Message::text(text.as_str()),
        TMessage::Binary(data) => Message::Binary(data.clone()),
        other => panic!("not a data message: {other:?}"),
    }
}

/// The tungstenite message for one of ours.
fn theirs(message: &Message) -> TMessage {
    match message {
        Message::Text(text) => TMessage::text(text.as_str()),
        Message::Binary(data) => TMessage::Binary(data.clone()),
        other => panic!("not a data message: {other:?}"),
    }
}

/// Text, binary, both empty, and large messages (over 64 KiB: 16- and 64-bit lengths,
/// and our vectored write path).
fn sample_messages() -> Vec<Message> {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    vec![
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::text("é".repeat(35_000)),
        Message::binary(big),
    ]
}

type TClient = WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn tungstenite_client(addr: SocketAddr) -> TClient {
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("tungstenite handshake with our server");
    assert_eq!(response.status(), 101);
    ws
}

// (a) tokio-tungstenite client, our server.

#[tokio::test]
async fn tungstenite_client_round_trips_data_messages() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut ws = tungstenite_client(server.addr).await;
        let messages = sample_messages();
        for message in &messages {
            ws.send(theirs(message)).await.unwrap();
        }
        for message in &messages {
            assert_eq!(ours(&t_expect(&mut ws).await), *message);
            assert_eq!(server.received().await, *message);
        }
        ws.close(None).await.unwrap();
        assert!(matches!(t_expect(&mut ws).await, TMessage::Close(_)));
        assert!(t_next(&mut ws).await.is_none());
    })
    .await;
}

#[tokio::test]
async fn tungstenite_client_fragments_are_reassembled() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut ws = tungstenite_client(server.addr).await;
        // "wörld" with its "ö" (c3 b6) split across two fragments, and a ping between.
        ws.send(t_fragment(Data::Text, b"Hel", false))
            .await
            .unwrap();
        ws.send(TMessage::Ping(Bytes::from_static(b"mid")))
            .await
            .unwrap();
        ws.send(t_fragment(Data::Continue, b"lo w\xc3", false))
            .await
            .unwrap();
        ws.send(t_fragment(Data::Continue, b"\xb6rld", true))
            .await
            .unwrap();
        assert_eq!(
            t_expect(&mut ws).await,
            TMessage::Pong(Bytes::from_static(b"mid"))
        );
        assert_eq!(t_expect(&mut ws).await, TMessage::text("Hello wörld"));
        assert_eq!(server.received().await, Message::Ping(Bytes::from("mid")));
        assert_eq!(server.received().await, Message::text("Hello wörld"));

        // A binary message in three fragments, larger than one read chunk.
        let parts: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 30_000]).collect();
        ws.send(t_fragment(Data::Binary, &parts[0], false))
            .await
            .unwrap();
        ws.send(t_fragment(Data::Continue, &parts[1], false))
            .await
            .unwrap();
        ws.send(t_fragment(Data::Continue, &parts[2], true))
            .await
            .unwrap();
        let whole = parts.concat();
        assert_eq!(t_expect(&mut ws).await, TMessage::binary(whole.clone()));
        assert_eq!(server.received().await, Message::binary(whole));
    })
    .await;
}

#[tokio::test]
async fn tungstenite_client_ping_gets_pong_and_answers_ours() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut ws = tungstenite_client(server.addr).await;
        ws.send(TMessage::Ping(Bytes::from_static(b"abc")))
            .await
            .unwrap();
        assert_eq!(
            t_expect(&mut ws).await,
            TMessage::Pong(Bytes::from_static(b"abc"))
        );
        assert_eq!(server.received().await, Message::Ping(Bytes::from("abc")));

        // Our server pings; tungstenite queues the pong and writes it on flush.
        ws.send(TMessage::text("!ping xyz")).await.unwrap();
        assert_eq!(
            t_expect(&mut ws).await,
            TMessage::Ping(Bytes::from_static(b"xyz"))
        );
        ws.flush().await.unwrap();
        assert_eq!(server.received().await, Message::text("!ping xyz"));
        assert_eq!(server.received().await, Message::Pong(Bytes::from("xyz")));
    })
    .await;
}

#[tokio::test]
async fn tungstenite_client_closes_with_code_and_reason_seen_on_both_sides() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut ws = tungstenite_client(server.addr).await;
        ws.close(Some(t_close(1000, "bye"))).await.unwrap();
        match t_expect(&mut ws).await {
            TMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
            other => panic!("expected the close echo, got {other:?}"),
        }
        assert!(t_next(&mut ws).await.is_none());
        // Our server returns the close from `recv` once the client has closed TCP.
        drop(ws);
        assert_eq!(
            server.received().await,
            Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")))
        );
        assert!(matches!(server.event().await, Event::Closed));
    })
    .await;
}

#[tokio::test]
async fn our_server_closes_with_code_and_reason_seen_by_tungstenite() {
    timed(async {
        let mut server = EchoServer::start().await;
        let mut ws = tungstenite_client(server.addr).await;
        ws.send(TMessage::text("!close going away")).await.unwrap();
        match t_expect(&mut ws).await {
            TMessage::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4000);
                assert_eq!(frame.reason.as_str(), "going away");
            }
            other => panic!("expected our close frame, got {other:?}"),
        }
        // tungstenite echoes the close; our server completes the handshake and closes TCP.
        assert!(t_next(&mut ws).await.is_none());
        drop(ws);
        assert_eq!(server.received().await, Message::text("!close going away"));
        match server.event().await {
            Event::CloseDone(Ok(())) => {}
            other => panic!("expected a clean close, got {other:?}"),
        }
    })
    .await;
}

// (b) our client, tokio-tungstenite server.

/// A tokio-tungstenite server on 127.0.0.1:0 that accepts one connection and runs `script`.
async fn tungstenite_server<F, Fut, T>(script: F) -> (SocketAddr, JoinHandle<T>)
where
    F: FnOnce(WebSocketStream<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("tungstenite accepts our handshake");
        script(ws).await
    });
    (addr, task)
}

/// Echoes data until the client closes; returns the client's close frame.
async fn tungstenite_echo(mut ws: WebSocketStream<TcpStream>) -> Option<TCloseFrame> {
    while let Some(message) = t_next(&mut ws).await {
        match message {
            TMessage::Text(_) | TMessage::Binary(_) => {
                ws.send(message).await.expect("tungstenite echo");
            }
            TMessage::Close(frame) => {
                // Polling again writes tungstenite's close reply, then the stream ends.
                assert!(t_next(&mut ws).await.is_none());
                return frame;
            }
            _ => {}
        }
    }
    panic!("the client went away without a close frame");
}

async fn our_client(addr: SocketAddr) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (ws, response) =
        switchboard_ws::tokio::connect(stream, &addr.to_string(), "/", &[], &[], Config::default())
            .await
            .expect("our handshake with tungstenite");
    assert_eq!(response.protocol, None);
    ws
}

/// The next message from our client.
async fn recv(ws: &mut WebSocket<TcpStream>) -> Option<Message> {
    tokio::time::timeout(READ_TIMEOUT, ws.recv())
        .await
        .expect("our client: no message within READ_TIMEOUT")
        .expect("our client failed")
}

#[tokio::test]
async fn our_client_round_trips_data_messages_with_tungstenite() {
    timed(async {
        let (addr, server) = tungstenite_server(tungstenite_echo).await;
        let mut ws = our_client(addr).await;
        let messages = sample_messages();
        for message in &messages {
            ws.feed(message).await.unwrap();
        }
        ws.flush().await.unwrap();
        for message in &messages {
            assert_eq!(recv(&mut ws).await.as_ref(), Some(message));
        }
        ws.close_with(CloseCode::NORMAL, "done").await.unwrap();
        assert_eq!(ws.close_state(), CloseState::Closed);
        let seen = server.await.unwrap().expect("a close frame with a code");
        assert_eq!(u16::from(seen.code), 1000);
        assert_eq!(seen.reason.as_str(), "done");
    })
    .await;
}

#[tokio::test]
async fn our_client_reassembles_tungstenite_fragments() {
    timed(async {
        let big: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i; 40_000]).collect();
        let parts = big.clone();
        let (addr, server) = tungstenite_server(|mut ws| async move {
            ws.feed(t_fragment(Data::Text, b"Hel", false))
                .await
                .unwrap();
            ws.feed(TMessage::Ping(Bytes::from_static(b"mid")))
                .await
                .unwrap();
            ws.feed(t_fragment(Data::Continue, b"lo w\xc3", false))
                .await
                .unwrap();
            ws.feed(t_fragment(Data::Continue, b"\xb6rld", true))
                .await
                .unwrap();
            ws.feed(t_fragment(Data::Binary, &parts[0], false))
                .await
                .unwrap();
            ws.send(t_fragment(Data::Continue, &parts[1], true))
                .await
                .unwrap();
            let pong = t_expect(&mut ws).await;
            (pong, tungstenite_echo(ws).await)
        })
        .await;
        let mut ws = our_client(addr).await;
        assert_eq!(recv(&mut ws).await, Some(Message::Ping(Bytes::from("mid"))));
        assert_eq!(recv(&mut ws).await, Some(Message::text("Hello wörld")));
        assert_eq!(recv(&mut ws).await, Some(Message::binary(big.concat())));
        ws.close(None).await.unwrap();
        let (pong, close) = server.await.unwrap();
        assert_eq!(pong, TMessage::Pong(Bytes::from_static(b"mid")));
        assert_eq!(close, None, "close(None) sends no status");
    })
    .await;
}

#[tokio::test]
async fn our_client_answers_tungstenite_ping() {
    timed(async {
        let (addr, server) = tungstenite_server(|mut ws| async move {
            ws.send(TMessage::Ping(Bytes::from_static(b"srv")))
                .await
                .unwrap();
            let pong = t_expect(&mut ws).await;
            ws.send(TMessage::text("got it")).await.unwrap();
            (pong, tungstenite_echo(ws).await)
        })
        .await;
        let mut ws = our_client(addr).await;
        assert_eq!(recv(&mut ws).await, Some(Message::Ping(Bytes::from("srv"))));
        // The pong is flushed by the next recv, before it waits.
        assert_eq!(recv(&mut ws).await, Some(Message::text("got it")));
        ws.close_with(CloseCode::GOING_AWAY, "").await.unwrap();
        let (pong, close) = server.await.unwrap();
        assert_eq!(pong, TMessage::Pong(Bytes::from_static(b"srv")));
        assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    })
    .await;
}

#[tokio::test]
async fn our_client_initiates_the_close_handshake_with_tungstenite() {
    timed(async {
        let (addr, server) = tungstenite_server(tungstenite_echo).await;
        let mut ws = our_client(addr).await;
        ws.send(&Message::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "bye",
        ))))
        .await
        .unwrap();
        assert_eq!(ws.close_state(), CloseState::CloseSent);
        // tungstenite echoes code and reason.
        assert_eq!(
            recv(&mut ws).await,
            Some(Message::Close(Some(CloseFrame::new(
                CloseCode::NORMAL,
                "bye"
            ))))
        );
        assert_eq!(ws.close_state(), CloseState::Closed);
        assert_eq!(recv(&mut ws).await, None);
        let seen = server.await.unwrap().expect("a close frame with a code");
        assert_eq!(u16::from(seen.code), 1000);
        assert_eq!(seen.reason.as_str(), "bye");
    })
    .await;
}

#[tokio::test]
async fn tungstenite_server_initiates_the_close_handshake_with_our_client() {
    timed(async {
        let (addr, server) = tungstenite_server(|mut ws| async move {
            ws.close(Some(t_close(1001, "shutting down")))
                .await
                .unwrap();
            let reply = t_expect(&mut ws).await;
            assert!(t_next(&mut ws).await.is_none());
            reply
        })
        .await;
        let mut ws = our_client(addr).await;
        assert_eq!(
            recv(&mut ws).await,
            Some(Message::Close(Some(CloseFrame::new(
                CloseCode::GOING_AWAY,
                "shutting down"
            ))))
        );
        assert_eq!(ws.close_state(), CloseState::Closed);
        assert_eq!(recv(&mut ws).await, None);
        // Our reply echoes the code (§5.5.1).
        match server.await.unwrap() {
            TMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected our close reply, got {other:?}"),
        }
    })
    .await;
}
