//! Starts each fan-out peer in-process on `127.0.0.1:0` and checks, with a real client, that
//! publications reach every subscriber in order, with their data as sent.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
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

/// The next text message, as raw text.
async fn next_text(ws: &mut Client) -> String {
    match ws.next().await.expect("open").expect("a message") {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a command and returns the reply, parsed.
async fn command(ws: &mut Client, command: Value) -> Value {
    ws.send(Message::text(command.to_string()))
        .await
        .expect("send");
    serde_json::from_str(&next_text(ws).await).expect("a JSON reply")
}

/// Opens a connection and sends `connect` (with a token the peers ignore).
async fn connect(addr: SocketAddr) -> Client {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    let reply = command(&mut ws, json!({"id": 1, "cmd": "connect", "token": "x"})).await;
    assert_eq!(reply, json!({"id": 1, "result": {}}));
    ws
}

/// Two subscribers and a publisher: offsets 1 and 2 reach both, `data` byte for byte (the
/// spacing and the `1.50` survive), and the publisher gets its acks.
async fn check_fanout(addr: SocketAddr) {
    let mut subscribers = [connect(addr).await, connect(addr).await];
    for ws in &mut subscribers {
        let reply = command(
            ws,
            json!({"id": 2, "cmd": "subscribe", "channel": "vote:t"}),
        )
        .await;
        assert_eq!(
            reply,
            json!({"id": 2, "result": {"offset": 0, "epoch": "peer"}})
        );
    }
    let mut publisher = connect(addr).await;
    for (id, offset) in [(10, 1), (11, 2)] {
        let data = format!(r#"{{"t": {offset}, "pad":"x", "f":1.50}}"#);
        let publish = format!(r#"{{"id":{id},"cmd":"publish","channel":"vote:t","data":{data}}}"#);
        publisher
            .send(Message::text(publish))
            .await
            .expect("publish");
        let reply: Value = serde_json::from_str(&next_text(&mut publisher).await).expect("JSON");
        assert_eq!(
            reply,
            json!({"id": id, "result": {"offset": offset, "epoch": "peer"}})
        );
        for ws in &mut subscribers {
            let push = next_text(ws).await;
            assert!(
                push.starts_with(r#"{"push":"publication","#),
                "a push first: {push}"
            );
            assert!(
                push.contains(&format!(r#""data":{data}"#)),
                "raw data: {push}"
            );
            let push: Value = serde_json::from_str(&push).expect("JSON push");
            assert_eq!(push["channel"], "vote:t");
            assert_eq!(push["epoch"], "peer");
            assert_eq!(push["offset"], offset);
            assert!(push["time"].as_u64().is_some_and(|t| t > 0), "{push}");
        }
    }
    // A late subscriber starts after the last offset.
    let mut late = connect(addr).await;
    let reply = command(
        &mut late,
        json!({"id": 3, "cmd": "subscribe", "channel": "vote:t"}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"id": 3, "result": {"offset": 2, "epoch": "peer"}})
    );
    // A clean close is completed by the peer.
    late.close(None).await.expect("close");
    while let Some(msg) = late.next().await {
        assert!(
            matches!(msg, Ok(Message::Close(_))),
            "unexpected after close: {msg:?}"
        );
    }
}

#[tokio::test]
async fn fastws_fans_out() {
    let addr = start(switchboard_bench_peers::serve_fanout_fastws).await;
    timeout(DEADLINE, check_fanout(addr))
        .await
        .expect("deadline");
}

#[tokio::test]
async fn tungstenite_fans_out() {
    let addr = start(switchboard_bench_peers::serve_fanout_tungstenite).await;
    timeout(DEADLINE, check_fanout(addr))
        .await
        .expect("deadline");
}
