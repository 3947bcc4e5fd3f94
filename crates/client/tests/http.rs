//! HTTP against the real server: requests, the API, an event stream, long polls.

use serde_json::json;
use switchboard_client::http::request;
use switchboard_client::{Api, Client, Error, EventStream, HttpConnection, LongPoll};

use crate::util::{API_KEY, Server, bounded, token};

#[tokio::test]
async fn one_shot_and_keep_alive_requests() {
    let server = Server::start().await;
    let health = bounded(
        "GET /health",
        request(&server.addr(), "GET", "/health", &[], ""),
    )
    .await
    .unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    let missing = request(&server.addr(), "GET", "/nope", &[], "")
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    assert!(matches!(
        missing.expect(200),
        Err(Error::Status { status: 404, .. })
    ));
    // Several requests, one connection.
    let mut conn = HttpConnection::connect(&server.addr()).await.unwrap();
    for _ in 0..3 {
        let metrics = bounded("GET /metrics", conn.request("GET", "/metrics", &[], ""))
            .await
            .unwrap();
        assert_eq!(metrics.status, 200);
        assert!(
            metrics.text().contains("switchboard_"),
            "{}",
            metrics.text()
        );
        assert!(metrics.header("content-type").is_some());
    }
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn the_server_api_with_its_key() {
    let server = Server::start().await;
    let api = Api::at(&server.addr(), API_KEY);
    let published = bounded(
        "publish",
        api.ok("publish", &json!({"channel": "chat:a", "data": {"x": 1}})),
    )
    .await
    .unwrap();
    assert!(published["offset"].is_u64(), "{published}");
    let (status, answer) = api.call("nope", &json!({})).await.unwrap();
    assert_eq!(status, 404, "{answer}");
    let wrong = Api::new(&format!("http://{}", server.addr), "wrong-key").unwrap();
    let refused = wrong
        .ok("publish", &json!({"channel": "chat:a", "data": 1}))
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Refused { .. }) | Err(Error::Status { status: 401, .. })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_event_stream_read_event_by_event() {
    let server = Server::start().await;
    let mut stream = bounded("GET /sse", EventStream::open(&server.addr(), "/sse", &[]))
        .await
        .unwrap();
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let first = bounded("session event", stream.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.kind(), Some("session"));
    let sid = first.json().unwrap()["session"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.id(), Some(format!("{sid}:0").as_str()));
    let commands = json!([{"id": 1, "cmd": "connect", "token": token("sam", 60)},
                          {"id": 2, "cmd": "subscribe", "channel": "chat:s"}]);
    let sent = request(
        &server.addr(),
        "POST",
        &format!("/sse/send?session={sid}"),
        &[("Content-Type", "application/json")],
        commands.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(sent.status, 202, "{}", sent.text());
    for id in [1, 2] {
        let reply = bounded("a reply", stream.next_event())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.json().unwrap()["id"], id, "{reply:?}");
    }
    Api::at(&server.addr(), API_KEY)
        .ok("publish", &json!({"channel": "chat:s", "data": "hi"}))
        .await
        .unwrap();
    loop {
        let event = bounded("the publication", stream.next_event())
            .await
            .unwrap()
            .unwrap();
        let message = event.json().unwrap();
        if message["push"] == "publication" {
            assert_eq!(message["data"], "hi");
            break;
        }
    }
}

#[tokio::test]
async fn a_refused_event_stream_says_why() {
    let server = Server::start().await;
    let refused =
        EventStream::open(&server.addr(), "/sse", &[("Origin", "http://evil.example")]).await;
    assert!(
        matches!(refused, Err(Error::Status { status: 403, .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_long_polling_session_acknowledges_what_it_received() {
    let server = Server::start().await;
    let mut poll = LongPoll::connect(&server.addr()).await.unwrap();
    let commands = json!([{"id": 1, "cmd": "connect", "token": token("pat", 60)},
                          {"id": 2, "cmd": "subscribe", "channel": "vote:p"}]);
    let mut replies = 0;
    let mut body = commands.to_string();
    while replies < 2 {
        let answer = bounded("a poll", poll.poll(&body, true)).await.unwrap();
        body.clear();
        replies += answer.messages().count();
        assert!(answer.closed().is_none());
    }
    let sid = poll.session().unwrap().to_owned();
    assert_eq!(poll.ack(), 2);
    // A publication over WebSocket reaches the poller.
    let mut ws = Client::open(&format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    ws.connect(Some(&token("wes", 60))).await.unwrap();
    ws.result(json!({"cmd": "publish", "channel": "vote:p", "data": 7}))
        .await
        .unwrap();
    let answer = bounded("the publication", poll.poll("", true))
        .await
        .unwrap();
    assert_eq!(answer.session(), sid);
    let message: serde_json::Value =
        serde_json::from_slice(answer.messages().next().expect("a message")).unwrap();
    assert_eq!(message["data"], 7, "{message}");
    assert_eq!(poll.ack(), 3);
    assert!(poll.path(true).contains(&format!("session={sid}&ack=3")));
    // The session ends with `close`.
    let answer = bounded("closing", poll.poll(r#"{"id":9,"cmd":"close"}"#, true)).await;
    let answer = answer.unwrap();
    assert!(answer.closed().is_some() || answer.messages().len() > 0);
}
