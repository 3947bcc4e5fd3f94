//! A WebSocket session against the real server.

use serde_json::json;
use switchboard_client::{Client, Error, Incoming};
use switchboard_ws::{CloseCode, Message};

use crate::util::{Server, bounded, token};

#[tokio::test]
async fn replies_are_matched_to_their_commands_and_pushes_kept() {
    let server = Server::start().await;
    let mut alice = bounded("open", Client::open(&server.ws_url()))
        .await
        .unwrap();
    let hello = bounded("connect", alice.connect(Some(&token("alice", 60))))
        .await
        .unwrap();
    assert_eq!(hello["user"], "alice");
    alice
        .result(json!({"cmd": "subscribe", "channel": "chat:room"}))
        .await
        .unwrap();
    let mut bob = Client::open(&server.ws_url()).await.unwrap();
    bob.connect(Some(&token("bob", 60))).await.unwrap();
    // Two commands in flight: the later reply is awaited first, the earlier one is kept.
    let first = alice.send_command(json!({"cmd": "ping"})).await.unwrap();
    let second = alice
        .send_command(json!({"cmd": "publish", "channel": "chat:room", "data": {"n": 1}}))
        .await
        .unwrap();
    let published = bounded("reply", alice.reply(second)).await.unwrap();
    assert!(published["result"]["offset"].is_u64(), "{published}");
    assert_eq!(
        bounded("reply", alice.reply(first)).await.unwrap()["id"],
        first
    );
    // The publication (and bob's join) came meanwhile, kept in order.
    bob.result(json!({"cmd": "subscribe", "channel": "chat:room"}))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    loop {
        let push = bounded("push", alice.next_push()).await.unwrap();
        kinds.push(push["push"].as_str().unwrap_or_default().to_owned());
        if push["push"] == "join" && push["info"]["user"] == "bob" {
            break;
        }
    }
    // Alice's own join, the publication, Bob's join.
    assert_eq!(kinds, ["join", "publication", "join"]);
    // An error reply is a refusal with its code.
    let refused = alice
        .result(json!({"cmd": "subscribe", "channel": "nope:x"}))
        .await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    alice.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn raw_frames_and_close_codes_are_there_for_tests() {
    let server = Server::start().await;
    let mut client = Client::open(&server.ws_url()).await.unwrap();
    // A binary frame is not part of the protocol: an error reply without an id.
    client.send(&Message::binary(vec![1, 2, 3])).await.unwrap();
    let reply = bounded("reply", client.next_reply()).await.unwrap();
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    // The `close` command ends the session with 1000.
    client.send_command(json!({"cmd": "close"})).await.unwrap();
    let (code, reason) = bounded("close", client.expect_close()).await.unwrap();
    assert_eq!(code, 1000, "{reason}");
    let after = client.next_message().await;
    assert!(
        matches!(after, Err(Error::Ended) | Err(Error::Ws(_))),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_refused_connect_and_the_close_that_follows() {
    let server = Server::start().await;
    let mut client = Client::open(&server.ws_url()).await.unwrap();
    let refused = client.connect(Some("not-a-token")).await;
    assert!(
        matches!(
            refused,
            Err(Error::Refused { .. }) | Err(Error::Closed { .. })
        ),
        "{refused:?}"
    );
    // Whatever followed is either a close frame or the end.
    match bounded("the end", client.next_message()).await {
        Ok(Incoming::Close(code, _)) => assert!(code >= 4000, "{code}"),
        Ok(Incoming::Json(v)) => panic!("unexpected {v}"),
        Err(_) => {}
    }
}

#[tokio::test]
async fn a_server_that_is_not_there_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let opened = Client::open(&format!("ws://{addr}/ws")).await;
    assert!(matches!(opened, Err(Error::Connect { .. })), "{opened:?}");
    // wss:// to the same absent server: the TCP connection fails before any TLS.
    let opened = Client::open(&format!("wss://{addr}/ws")).await;
    assert!(matches!(opened, Err(Error::Connect { .. })), "{opened:?}");
    let opened = Client::open("tcp://127.0.0.1:1/ws").await;
    assert!(matches!(opened, Err(Error::Url { .. })), "{opened:?}");
}

#[tokio::test]
async fn open_compressed_negotiates_deflate_and_round_trips_large_messages() {
    let server = Server::start().await;
    let mut plain = Client::open(&server.ws_url()).await.unwrap();
    assert!(!plain.is_compressed());
    plain.connect(Some(&token("plain", 60))).await.unwrap();
    let mut client = bounded("open", Client::open_compressed(&server.ws_url()))
        .await
        .unwrap();
    assert!(client.is_compressed(), "the server takes the offer");
    client.connect(Some(&token("packed", 60))).await.unwrap();
    for c in [&mut plain, &mut client] {
        c.result(json!({"cmd": "subscribe", "channel": "chat:logs"}))
            .await
            .unwrap();
    }
    // Sent compressed, inflated by the server, sent to both: compressed to one, plain to
    // the other, the same data either way.
    let lines: Vec<String> = (0..50)
        .map(|i| format!("GET /static/app.js?v={i} HTTP/1.1 200 5120"))
        .collect();
    let data = json!({ "lines": lines });
    client
        .result(json!({"cmd": "publish", "channel": "chat:logs", "data": data}))
        .await
        .unwrap();
    for c in [&mut plain, &mut client] {
        let push = loop {
            let push = bounded("publication", c.next_push()).await.unwrap();
            if push["push"] == "publication" {
                break push;
            }
        };
        assert_eq!(push["data"], data);
    }
}
