//! Starts each peer in-process on `127.0.0.1:0` and checks that it echoes with a real client.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every exchange must finish well within this, so a hung peer fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(5);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn start<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(serve(listener));
    addr
}

/// Feeds `sent` in one flush and expects exactly `expected` back, in order.
async fn exchange(ws: &mut Client, sent: Vec<Message>, expected: &[Message]) {
    for msg in sent {
        ws.feed(msg).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    for want in expected {
        assert_eq!(&ws.next().await.expect("open").expect("echo"), want);
    }
}

/// A raw frame, so the client can fragment a message (tungstenite masks it as a client must).
fn frame(data: &[u8], opcode: Data, fin: bool) -> Message {
    Message::Frame(Frame::message(data.to_vec(), OpCode::Data(opcode), fin))
}

/// Text, binary, a pipelined burst and a fragmented text message, then a clean close.
async fn check_ws_echo(addr: SocketAddr) {
    let url = format!("ws://{addr}/");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");

    let text = Message::text("héllo");
    exchange(&mut ws, vec![text.clone()], &[text]).await;
    let blob = Message::binary((0..=255).cycle().take(70_000).collect::<Vec<u8>>());
    exchange(&mut ws, vec![blob.clone()], &[blob]).await;
    let burst: Vec<_> = (0..100)
        .map(|i| Message::text(format!("burst {i}")))
        .collect();
    exchange(&mut ws, burst.clone(), &burst).await;

    // Three fragments, the last split inside the multi-byte check mark.
    let whole = "fragmented ✓".as_bytes();
    let (a, rest) = whole.split_at(4);
    let (b, c) = rest.split_at(rest.len() - 2);
    let frags = vec![
        frame(a, Data::Text, false),
        frame(b, Data::Continue, false),
        frame(c, Data::Continue, true),
    ];
    exchange(&mut ws, frags, &[Message::text("fragmented ✓")]).await;

    ws.close(None).await.expect("close");
    while let Some(msg) = ws.next().await {
        assert!(
            matches!(msg, Ok(Message::Close(_))),
            "unexpected after close: {msg:?}"
        );
    }
}

#[tokio::test]
async fn tungstenite_echoes() {
    let addr = start(switchboard_bench_peers::serve_tungstenite).await;
    timeout(DEADLINE, check_ws_echo(addr))
        .await
        .expect("deadline");
}

#[tokio::test]
async fn fastws_echoes() {
    let addr = start(switchboard_bench_peers::serve_fastws).await;
    timeout(DEADLINE, check_ws_echo(addr))
        .await
        .expect("deadline");
}

#[tokio::test]
async fn tcp_echoes() {
    let addr = start(switchboard_bench_peers::serve_tcp).await;
    timeout(DEADLINE, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let sent: Vec<u8> = (0..=255).cycle().take(200_000).collect();
        let (mut rd, mut wr) = stream.split();
        let (written, received) = tokio::join!(async { wr.write_all(&sent).await }, async {
            let mut got = vec![0; sent.len()];
            rd.read_exact(&mut got).await.map(|_| got)
        });
        written.expect("write");
        assert_eq!(received.expect("read"), sent);
    })
    .await
    .expect("deadline");
}
