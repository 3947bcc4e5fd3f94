//! Server-Sent Events: a session over `GET /sse` with its commands through
//! `POST /sse/send`; resuming with `Last-Event-ID`; how a session ends on its stream.

use std::time::Duration;

use serde_json::json;

use crate::util::{SseClient, SseStream, WAIT, bounded, eventually, http_response, start};

#[tokio::test]
async fn a_full_session_over_sse() {
    let server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    assert_eq!(alice.stream.header("cache-control"), Some("no-cache"));
    assert_eq!(alice.stream.header("x-accel-buffering"), Some("no"));
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
        .await;
    let epoch = sub["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(alice.next_push().await["push"], "join");

    // A WebSocket client in the same channel: each sees the other.
    let mut bob = server.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
        .await;
    let join = alice.next_push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("bob"))
    );

    // Publications from the server API and from the WebSocket client, with offsets.
    assert_eq!(server.publish("chat:lobby", json!({"n": 1})).await, 1);
    let first = alice.next_publication().await;
    assert_eq!(
        (
            first["offset"].clone(),
            first["epoch"].clone(),
            first["data"].clone()
        ),
        (json!(1), json!(epoch), json!({"n": 1}))
    );
    bob.ok(json!({"cmd": "publish", "channel": "chat:lobby", "data": {"n": 2}}))
        .await;
    let second = alice.next_publication().await;
    assert_eq!(second["offset"], 2);
    assert_eq!(second["info"]["user"], "bob");

    // The SSE session publishes too, and bob sees it.
    let position = alice
        .ok(json!({"cmd": "publish", "channel": "chat:lobby", "data": "hi"}))
        .await;
    assert_eq!(position["offset"], 3);
    assert_eq!(bob.next_publication().await["offset"], 1);
    assert_eq!(bob.next_publication().await["offset"], 2);
    let third = bob.next_publication().await;
    assert_eq!(
        (third["data"].clone(), third["info"]["user"].clone()),
        (json!("hi"), json!("alice"))
    );

    // Several commands in one body: handled in order, replies on the stream.
    let response = alice
        .post(r#"[{"id":50,"cmd":"ping"},{"id":51,"cmd":"presence","channel":"chat:lobby"}]"#)
        .await;
    assert_eq!(response.status, 202);
    assert_eq!(alice.next_reply().await["id"], 50);
    let presence = alice.next_reply().await;
    assert_eq!(presence["id"], 51);
    let users = presence["result"]["presence"]
        .as_object()
        .expect("presence");
    assert!(
        users.contains_key("alice") && users.contains_key("bob"),
        "{presence}"
    );
    assert_eq!(server.metric("switchboard_connections").await, 2.0);
}

#[tokio::test]
async fn a_resumed_stream_replays_exactly_the_missed_messages() {
    let server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "feed:r"}))
        .await;
    for i in 1..=3 {
        server.publish("feed:r", json!(i)).await;
    }
    assert_eq!(alice.next_publication().await["data"], 1);
    let after_first = alice.last_id.clone();
    assert_eq!(alice.next_publication().await["data"], 2);
    assert_eq!(alice.next_publication().await["data"], 3);

    // Two more are written to the stream, and lost with it: the client never reads
    // them, and reconnects.
    for i in 4..=5 {
        server.publish("feed:r", json!(i)).await;
    }
    // It says it saw only the first: everything after it comes again, once, in order
    // (the client checks the seqs), then the live ones.
    alice.reconnect(&after_first).await;
    for i in 2..=5 {
        assert_eq!(alice.next_publication().await["data"], i);
    }
    server.publish("feed:r", json!(6)).await;
    assert_eq!(alice.next_publication().await["data"], 6);
    alice.ok(json!({"cmd": "ping"})).await;

    // A newer stream ends the older one, which is told so (issue 10, point 15: two
    // readers never share a session unnoticed); `last_event_id` in the query works like
    // the header, and what it acknowledges is not sent again.
    let latest = alice.last_id.clone();
    let mut newer =
        SseStream::open(server.addr, &format!("/sse?last_event_id={latest}"), &[]).await;
    let ending = alice.stream.until_end().await;
    assert_eq!(
        ending.len(),
        1,
        "the older stream ends with one close event"
    );
    assert_eq!(ending[0].event.as_deref(), Some("close"));
    assert_eq!(ending[0].json()["code"], 4009);
    assert_eq!(newer.next_block().await.and_then(|b| b.retry), Some(1000));
    alice.stream = newer;
    server.publish("feed:r", json!(7)).await;
    assert_eq!(alice.next_publication().await["data"], 7);
    assert_eq!(server.metric("switchboard_connections").await, 1.0);
}

#[tokio::test]
async fn a_resume_naming_an_unknown_session_opens_a_new_one() {
    let server = start(|_| {}).await;
    let unknown = "0123456789abcdef0123456789abcdef:5";
    let mut stream = SseStream::open(server.addr, "/sse", &[("Last-Event-ID", unknown)]).await;
    let first = stream.next_event().await;
    assert_eq!(first.event.as_deref(), Some("session"));
    let sid = first.json()["session"].as_str().expect("sid").to_owned();
    assert_eq!(sid.len(), 32, "128 bits, hex");
    assert_ne!(sid, unknown[..32]);
    assert_eq!(first.id, Some(format!("{sid}:0")));
}

#[tokio::test]
async fn a_server_api_disconnect_sends_close_4003_and_forgets_the_session() {
    let server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    let mut bob = server.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:d"}))
        .await;
    assert_eq!(bob.next_push().await["info"]["user"], "bob");
    alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:d"}))
        .await;
    assert_eq!(bob.next_push().await["info"]["user"], "alice");

    let reply = server.api_ok("disconnect", json!({"user": "alice"})).await;
    assert_eq!(reply["disconnected"], 1);
    let (code, reason) = alice.expect_close().await;
    assert_eq!(code, 4003, "{reason}");
    // Gone from the channel, as a closed WebSocket would be.
    let leave = bob.next_push().await;
    assert_eq!(
        (leave["push"].clone(), leave["info"]["user"].clone()),
        (json!("leave"), json!("alice"))
    );

    let response = alice.post(r#"{"id":9,"cmd":"ping"}"#).await;
    assert_eq!(response.status, 404);
    let body: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(body["error"]["code"], 116, "{body}");
    assert_eq!(server.metric("switchboard_connections").await, 1.0);
}

#[tokio::test]
async fn a_post_to_an_unknown_session_is_404_with_code_116() {
    let server = start(|_| {}).await;
    for path in [
        "/sse/send?session=0123456789abcdef0123456789abcdef",
        "/sse/send?session=",
    ] {
        let response = http_response(server.addr, "POST", path, &[], br#"{"cmd":"ping"}"#).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
        assert_eq!(
            body,
            json!({"error": {"code": 116, "message": "unknown or expired session; open a new one"}})
        );
    }
    let response = http_response(server.addr, "POST", "/sse/send", &[], b"{}").await;
    assert_eq!(response.status, 400, "no session parameter");
}

#[tokio::test]
async fn bad_json_gets_the_error_reply_on_the_stream() {
    let server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    let response = alice.post(r#"{"id":5,"cmd":"publish""#).await;
    assert_eq!(response.status, 202);
    let reply = alice.next_reply().await;
    assert_eq!(reply["id"], serde_json::Value::Null);
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    // An array that is not one of commands is a single (bad) command too.
    assert_eq!(alice.post("[1, 2").await.status, 202);
    assert_eq!(alice.next_reply().await["error"]["code"], 107);
    // Each element of an array is a command of its own, refused or not.
    assert_eq!(alice.post(r#"[{"id":6,"cmd":"fly"}, 7]"#).await.status, 202);
    assert_eq!(alice.next_reply().await["error"]["code"], 104);
    assert_eq!(alice.next_reply().await["error"]["code"], 107);
    // A body that is not UTF-8 is refused before the session sees it.
    let response = alice.post_bytes(b"{\"cmd\":\"ping\xff\"}").await;
    assert_eq!(response.status, 400);
    alice.ok(json!({"cmd": "ping"})).await;
}

#[tokio::test]
async fn no_connect_in_time_closes_4007() {
    let server = start(|c| c.limits.connect_timeout = Duration::from_millis(200)).await;
    let mut client = SseClient::open(server.addr).await;
    assert_eq!(client.expect_close().await.0, 4007);
    assert_eq!(client.post(r#"{"cmd":"ping"}"#).await.status, 404);
}

#[tokio::test]
async fn a_bad_token_closes_4001_after_the_error_reply() {
    let server = start(|_| {}).await;
    let mut client = SseClient::open(server.addr).await;
    client
        .send_cmd(json!({"id": 1, "cmd": "connect", "token": "nope"}))
        .await;
    let reply = client.next_reply().await;
    assert_eq!(reply["error"]["code"], 101);
    assert_eq!(client.expect_close().await.0, 4001);
}

#[tokio::test]
async fn a_resume_past_the_replay_window_ends_the_session_4004() {
    let server = start(|c| c.limits.outbox_messages = 4).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "feed:w"}))
        .await;
    let early = alice.last_id.clone();
    // Read as they come: written messages past the bound are dropped from the replay
    // buffer, and the session lives on.
    for i in 1..=10 {
        server.publish("feed:w", json!(i)).await;
        assert_eq!(alice.next_publication().await["data"], i);
    }
    alice.ok(json!({"cmd": "ping"})).await;
    // A resume that needs a dropped message cannot be served.
    alice.reconnect(&early).await;
    let (code, reason) = alice.expect_close().await;
    assert_eq!((code, reason.as_str()), (4004, "replay window passed"));
}

#[tokio::test]
async fn line_breaks_in_published_data_survive_the_stream() {
    let server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:nl"}))
        .await;
    assert_eq!(alice.next_push().await["push"], "join");
    // Pretty-printed data is passed through as sent, line breaks included.
    let command =
        "{\"id\":70,\"cmd\":\"publish\",\"channel\":\"chat:nl\",\"data\":{\n  \"a\": [1,\n 2]\n}}";
    assert_eq!(alice.post(command).await.status, 202);
    let publication = alice.next_publication().await;
    assert_eq!(publication["data"], json!({"a": [1, 2]}));
    assert_eq!(alice.reply(70).await["result"]["offset"], 1);
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let server = start(|c| c.limits.ping_interval = Duration::from_millis(200)).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    let started = tokio::time::Instant::now();
    let block = alice.stream.next_block().await.expect("a block");
    assert_eq!(block.comment.as_deref(), Some("ping"), "{block:?}");
    assert!(started.elapsed() < WAIT);
}

#[tokio::test]
async fn shutdown_closes_streams_with_1001() {
    let mut server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    let task = server.shutdown();
    assert_eq!(alice.expect_close().await.0, 1001);
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("the server stops in time");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}

#[tokio::test]
async fn an_expired_token_closes_4002() {
    let server = start(|_| {}).await;
    let mut client = SseClient::open(server.addr).await;
    let hello = client
        .ok(json!({"cmd": "connect", "token": crate::util::token("alice", None, &[], 1)}))
        .await;
    assert!(hello["expires"].is_u64());
    assert_eq!(client.expect_close().await.0, 4002);
}

#[tokio::test]
async fn a_session_that_ends_between_streams_tells_the_next_one() {
    let server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    let last = alice.last_id.clone();
    // The client hangs up (the stream of a new, unconnected session stands in for it),
    // and the session ends before the client comes back.
    alice.stream = SseStream::open(server.addr, "/sse", &[]).await;
    // Whether or not the server noticed the hang-up yet, the end finds no stream to tell.
    let reply = server.api_ok("disconnect", json!({"user": "alice"})).await;
    assert_eq!(reply["disconnected"], 1);
    // The ended session waits for its client, and tells the resumed stream why.
    alice.reconnect(&last).await;
    assert_eq!(alice.expect_close().await.0, 4003);
}

#[tokio::test]
async fn two_streams_get_one_publication_with_line_breaks_each_with_its_own_id() {
    let server = start(|_| {}).await;
    let mut alice = SseClient::connect(server.addr, "alice").await;
    let mut bob = SseClient::connect(server.addr, "bob").await;
    for client in [&mut alice, &mut bob] {
        client
            .ok(json!({"cmd": "subscribe", "channel": "chat:nl2"}))
            .await;
    }
    // Published with line breaks (CR LF among them): the event's data lines are made
    // once for both streams, the id lines are each stream's own.
    let command =
        "{\"id\":71,\"cmd\":\"publish\",\"channel\":\"chat:nl2\",\"data\":{\r\n\"a\":\n[1,\n2]}}";
    assert_eq!(alice.post(command).await.status, 202);
    for client in [&mut alice, &mut bob] {
        let publication = client.next_publication().await;
        assert_eq!(publication["data"], json!({"a": [1, 2]}));
        // `next_publication` checked the id names this stream's session, seq after seq.
        assert!(client.last_id.starts_with(&format!("{}:", client.sid)));
    }
    assert_ne!(alice.last_id, bob.last_id);
    // Many at once (a batch of commands): every event arrives whole and in order.
    let batch: Vec<_> = (0..20)
        .map(|i| json!({"id": 100 + i, "cmd": "publish", "channel": "chat:nl2", "data": {"i": i}}))
        .collect();
    assert_eq!(
        alice
            .post(&serde_json::to_string(&batch).unwrap())
            .await
            .status,
        202
    );
    for i in 0..20 {
        assert_eq!(bob.next_publication().await["data"]["i"], i);
    }
}

/// A `GET /sse` over HTTP/`version` on a socket of the test's own.
async fn raw_stream(addr: std::net::SocketAddr, version: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /sse HTTP/{version}\r\nHost: 127.0.0.1\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("send the request");
    tcp
}

/// Reads `tcp` until the server closes it (or [`WAIT`] passes): everything it sent.
async fn read_to_close(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    bounded(
        "the server closes the connection",
        tcp.read_to_end(&mut all),
    )
    .await
    .expect("read the stream");
    String::from_utf8(all).expect("UTF-8")
}

/// A stream's connection leaves hyper once the head is written (`net::takeover`): the
/// body arrives as HTTP/1.1 chunks, and when the session ends, the close event, the last
/// chunk, and the server closing the connection (hyper would have kept it for another
/// request).
#[tokio::test]
async fn an_ended_stream_writes_the_last_chunk_and_closes_its_connection() {
    let server = start(|c| c.limits.connect_timeout = Duration::from_millis(200)).await;
    let mut tcp = raw_stream(server.addr, "1.1").await;
    let text = read_to_close(&mut tcp).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // The chunks, decoded by hand: each size line matches what follows it.
    let mut rest = body;
    let mut events = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a size line");
        let size = usize::from_str_radix(size, 16).expect("a hex size");
        if size == 0 {
            assert_eq!(after, "\r\n", "nothing after the last chunk");
            break;
        }
        events.push_str(&after[..size]);
        assert_eq!(&after[size..size + 2], "\r\n", "a chunk ends with CRLF");
        rest = &after[size + 2..];
    }
    assert!(events.contains("event: session\n"), "{events}");
    assert!(
        events.contains("event: close\ndata: {\"code\":4007,") && events.ends_with("\n\n"),
        "{events}"
    );
    eventually("the stream is counted closed", || async {
        server.metric("switchboard_sse_streams").await == 0.0
    })
    .await;
}

/// A client that hangs up is noticed at once by the task writing its stream (it reads
/// the connection), not at the next write: the stream is counted closed, and after
/// `limits.session_idle` the session ends.
#[tokio::test]
async fn a_client_hanging_up_is_noticed_without_a_write() {
    let server = start(|c| {
        c.limits.poll_timeout = Duration::from_millis(100);
        c.limits.session_idle = Duration::from_millis(300);
    })
    .await;
    let alice = SseClient::connect(server.addr, "alice").await;
    eventually("the stream is counted open", || async {
        server.metric("switchboard_sse_streams").await == 1.0
    })
    .await;
    drop(alice);
    eventually("the stream is counted closed", || async {
        server.metric("switchboard_sse_streams").await == 0.0
    })
    .await;
    eventually("the idle session ends", || async {
        server.metric("switchboard_connections").await == 0.0
    })
    .await;
}

/// An HTTP/1.0 client (no chunked encoding) gets its stream from hyper, the events as they
/// are until the connection closes.
#[tokio::test]
async fn an_http_1_0_stream_is_written_by_hyper_without_chunks() {
    let server = start(|c| c.limits.connect_timeout = Duration::from_millis(200)).await;
    let mut tcp = raw_stream(server.addr, "1.0").await;
    let text = read_to_close(&mut tcp).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(body.starts_with("retry: "), "{body}");
    assert!(body.contains("event: session\n"), "{body}");
    assert!(
        body.contains("event: close\ndata: {\"code\":4007,"),
        "{body}"
    );
}

/// A client that sends anything after its request (an SSE client has nothing more to
/// say) is cut off: the connection closes and the stream is counted closed.
#[tokio::test]
async fn a_client_that_sends_after_its_request_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(|_| {}).await;
    let mut tcp = raw_stream(server.addr, "1.1").await;
    let mut head = [0u8; 1024];
    let n = bounded("the head", tcp.read(&mut head)).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    eventually("the stream is counted open", || async {
        server.metric("switchboard_sse_streams").await == 1.0
    })
    .await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    read_to_close(&mut tcp).await;
    eventually("the stream is counted closed", || async {
        server.metric("switchboard_sse_streams").await == 0.0
    })
    .await;
}
