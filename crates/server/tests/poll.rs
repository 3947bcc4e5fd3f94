//! Long and short polling: sessions over `/poll`, what an answer holds and when it is
//! sent, acknowledgements, session lifetime; and the rules every HTTP transport shares
//! (Origin, CORS, body size, transports switched off).

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::Config;
use tokio::time::Instant;

use crate::util::{
    Poller, Server, SseStream, WAIT, bounded, eventually, http_response, start, token, upgrade,
};

/// A server whose long polls are held 1 s, so a test can wait for them.
async fn server(tweak: impl FnOnce(&mut Config)) -> Server {
    start(|c| {
        c.limits.poll_timeout = Duration::from_secs(1);
        tweak(c);
    })
    .await
}

/// A connected poller subscribed to `channel`, with everything so far acknowledged.
async fn subscribed(server: &Server, user: &str, channel: &str) -> Poller {
    let mut poller = Poller::connect(server.addr, user).await;
    poller
        .ok(json!({"cmd": "subscribe", "channel": channel}))
        .await;
    poller
}

#[tokio::test]
async fn a_long_poll_is_held_until_a_publication_arrives() {
    let server = start(|c| c.limits.poll_timeout = Duration::from_secs(3)).await;
    let poller = subscribed(&server, "alice", "feed:lp").await;
    let ack = poller.ack;
    let held = {
        let poller_path = poller.path(ack, true);
        let addr = server.addr;
        tokio::spawn(async move { http_response(addr, "GET", &poller_path, &[], b"").await })
    };
    eventually("the poll to be held", || async {
        server.metric("switchboard_polls_waiting").await == 1.0
    })
    .await;
    assert!(!held.is_finished(), "answered with nothing to deliver");
    server.publish("feed:lp", json!("news")).await;
    let response = bounded("the held poll", held).await.expect("poll task");
    assert_eq!(response.status, 200);
    let answer: Value = serde_json::from_str(&response.body).expect("JSON");
    let messages = answer["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{answer}");
    assert_eq!(messages[0]["data"], "news");
    assert_eq!(messages[0]["offset"], 1);
    assert_eq!(answer["seq"], ack + 1);
}

#[tokio::test]
async fn a_long_poll_with_nothing_to_deliver_ends_at_poll_timeout() {
    let server = server(|_| {}).await;
    let mut poller = subscribed(&server, "alice", "feed:t").await;
    let started = Instant::now();
    let answer = poller.poll(&[], true).await;
    let waited = started.elapsed();
    assert_eq!(answer["messages"], json!([]));
    assert!(
        waited >= Duration::from_millis(900) && waited < WAIT,
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_short_poll_answers_at_once() {
    let server = start(|c| c.limits.poll_timeout = Duration::from_secs(20)).await;
    let mut poller = subscribed(&server, "alice", "feed:s").await;
    let seq = poller.ack;
    let started = Instant::now();
    let answer = poller.poll(&[], false).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        answer,
        json!({"session": poller.session, "seq": seq, "messages": []})
    );
    // With something queued, it is in the answer.
    server.publish("feed:s", json!(1)).await;
    let answer = poller.poll(&[], false).await;
    assert_eq!(answer["messages"][0]["data"], 1);
}

#[tokio::test]
async fn the_first_poll_opens_a_session_and_runs_its_commands_in_order() {
    let server = server(|_| {}).await;
    let mut poller = Poller::new(server.addr);
    let commands = [
        json!({"id": 1, "cmd": "connect", "token": token("alice", None, &[], 3600)}),
        json!({"id": 2, "cmd": "subscribe", "channel": "chat:first"}),
        json!({"id": 3, "cmd": "ping"}),
    ];
    let answer = poller.poll(&commands, true).await;
    let sid = answer["session"].as_str().expect("sid");
    assert_eq!(sid.len(), 32, "128 bits, hex");
    let messages = answer["messages"].as_array().expect("messages");
    let ids: Vec<&Value> = messages
        .iter()
        .filter(|m| m.get("push").is_none())
        .map(|m| &m["id"])
        .collect();
    // The replies in order; the join push (from the channel's deliverer) after the
    // subscribe reply, in this answer or the next.
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3)], "{answer}");
    let mut pushes: Vec<Value> = messages
        .iter()
        .filter(|m| m.get("push").is_some())
        .cloned()
        .collect();
    if pushes.is_empty() {
        let next = poller.poll(&[], true).await;
        pushes.extend(
            next["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .cloned(),
        );
    }
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0]["push"], "join");
}

#[tokio::test]
async fn a_lost_answer_is_sent_again_until_acknowledged() {
    let server = server(|_| {}).await;
    let poller = subscribed(&server, "alice", "feed:lost").await;
    let acked = poller.ack;
    server.publish("feed:lost", json!("a")).await;
    server.publish("feed:lost", json!("b")).await;
    let (status, first) = poller.raw(acked, false, "").await;
    assert_eq!(status, 200);
    assert_eq!(first["seq"], acked + 2, "{first}");
    // The answer is "lost": the next poll still acknowledges only the old seq, and gets
    // the same messages with the same seq.
    let (_, again) = poller.raw(acked, false, "").await;
    assert_eq!(again, first);
    // Acknowledged, they are gone.
    let (_, after) = poller.raw(acked + 2, false, "").await;
    assert_eq!(after["messages"], json!([]));
    assert_eq!(after["seq"], acked + 2);
    // An ack past the newest message acknowledges what exists, no more.
    server.publish("feed:lost", json!("c")).await;
    let (_, beyond) = poller.raw(acked + 100, false, "").await;
    assert_eq!(beyond["messages"], json!([]));
    server.publish("feed:lost", json!("d")).await;
    let (_, next) = poller.raw(acked + 3, false, "").await;
    assert_eq!(next["messages"][0]["data"], "d");
    assert_eq!(next["seq"], acked + 4);
}

#[tokio::test]
async fn a_newer_poll_answers_the_older_one() {
    let server = start(|c| c.limits.poll_timeout = Duration::from_secs(4)).await;
    let poller = subscribed(&server, "alice", "feed:two").await;
    let path = poller.path(poller.ack, true);
    let addr = server.addr;
    let older = tokio::spawn(async move { http_response(addr, "GET", &path, &[], b"").await });
    eventually("the poll to be held", || async {
        server.metric("switchboard_polls_waiting").await == 1.0
    })
    .await;
    assert!(!older.is_finished());
    let started = Instant::now();
    let (status, _) = poller.raw(poller.ack, false, "").await;
    assert_eq!(status, 200);
    let older = bounded("the older poll", older).await.expect("task");
    assert_eq!(older.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_http_session_is_in_presence_and_join_leave_like_a_websocket() {
    let server = server(|_| {}).await;
    let mut bob = server.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:p"}))
        .await;
    assert_eq!(bob.next_push().await["push"], "join");
    let mut alice = subscribed(&server, "alice", "chat:p").await;
    let join = bob.next_push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("alice"))
    );
    let presence = server
        .api_ok("presence", json!({"channel": "chat:p"}))
        .await;
    let users = presence["presence"].as_object().expect("presence");
    assert!(
        users.contains_key("alice") && users.contains_key("bob"),
        "{presence}"
    );
    let own = alice
        .ok(json!({"cmd": "presence", "channel": "chat:p"}))
        .await;
    assert_eq!(own["presence"], presence["presence"]);
    assert_eq!(server.subscribers("chat:p").await, 2);

    alice
        .ok(json!({"cmd": "unsubscribe", "channel": "chat:p"}))
        .await;
    let leave = bob.next_push().await;
    assert_eq!(
        (leave["push"].clone(), leave["info"]["user"].clone()),
        (json!("leave"), json!("alice"))
    );
    // Private messages reach the HTTP session too.
    bob.ok(json!({"cmd": "send", "user": "alice", "data": "psst"}))
        .await;
    let message = loop {
        let push = alice.next_push().await;
        if push["push"] != "join" {
            break push;
        }
    };
    assert_eq!(
        (message["push"].clone(), message["data"].clone()),
        (json!("message"), json!("psst"))
    );
}

#[tokio::test]
async fn an_idle_session_ends_and_its_leave_is_announced() {
    let server = start(|c| {
        c.limits.poll_timeout = Duration::from_millis(300);
        c.limits.session_idle = Duration::from_secs(1);
    })
    .await;
    let mut bob = server.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:idle"}))
        .await;
    assert_eq!(bob.next_push().await["push"], "join");
    let alice = subscribed(&server, "alice", "chat:idle").await;
    assert_eq!(bob.next_push().await["info"]["user"], "alice");
    assert_eq!(server.metric("switchboard_connections").await, 2.0);

    // Alice stops polling.
    let started = Instant::now();
    let leave = bob.next_push().await;
    assert_eq!(
        (leave["push"].clone(), leave["info"]["user"].clone()),
        (json!("leave"), json!("alice"))
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(server.metric("switchboard_connections").await, 1.0);
    let (status, answer) = alice.raw(alice.ack, false, "").await;
    assert_eq!((status, answer["error"]["code"].clone()), (404, json!(116)));
}

#[tokio::test]
async fn a_session_that_is_not_polled_is_a_slow_consumer() {
    let server = server(|c| c.limits.outbox_messages = 8).await;
    let mut alice = subscribed(&server, "alice", "feed:slow").await;
    for i in 1..=20 {
        server.publish("feed:slow", json!(i)).await;
    }
    eventually("the session to end as a slow consumer", || async {
        server.metric("switchboard_slow_consumers_total").await > 0.0
    })
    .await;
    assert_eq!(server.metric("switchboard_connections").await, 0.0);
    // The next poll gets what was kept, then the end.
    let answer = alice.poll(&[], true).await;
    let messages = answer["messages"].as_array().expect("messages");
    assert!(!messages.is_empty() && messages.len() <= 8, "{answer}");
    assert_eq!(messages[0]["data"], 1, "from the oldest, in order");
    assert_eq!(answer["closed"]["code"], 4004, "{answer}");
    // Then the session is gone.
    let (status, answer) = alice.raw(alice.ack, false, "").await;
    assert_eq!((status, answer["error"]["code"].clone()), (404, json!(116)));
}

#[tokio::test]
async fn a_server_api_disconnect_ends_a_waiting_poll_with_4003() {
    let server = server(|c| c.limits.poll_timeout = Duration::from_secs(4)).await;
    let alice = subscribed(&server, "alice", "feed:dc").await;
    let path = alice.path(alice.ack, true);
    let addr = server.addr;
    let held = tokio::spawn(async move { http_response(addr, "GET", &path, &[], b"").await });
    eventually("the poll to be held", || async {
        server.metric("switchboard_polls_waiting").await == 1.0
    })
    .await;
    server.api_ok("disconnect", json!({"user": "alice"})).await;
    let response = bounded("the held poll", held).await.expect("task");
    let answer: Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(answer["closed"]["code"], 4003, "{answer}");
    assert_eq!(answer["messages"], json!([]));
    let (status, _) = alice.raw(alice.ack, false, "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_sessions_and_bad_queries() {
    let server = server(|_| {}).await;
    let response = http_response(
        server.addr,
        "GET",
        "/poll?session=0123456789abcdef0123456789abcdef",
        &[],
        b"",
    )
    .await;
    assert_eq!(response.status, 404);
    let body: Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(
        body,
        json!({"error": {"code": 116, "message": "unknown or expired session; open a new one"}})
    );
    for path in ["/poll?ack=-1", "/poll?wait=2", "/poll?ack=x"] {
        let response = http_response(server.addr, "GET", path, &[], b"").await;
        assert_eq!(response.status, 400, "{path}");
        let body: Value = serde_json::from_str(&response.body).expect("JSON");
        assert_eq!(body["error"]["code"], 107, "{path}");
    }
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let server = server(|c| {
        c.limits.max_message_size = 1000;
        c.limits.max_payload_size = 500;
    })
    .await;
    let mut alice = Poller::connect(server.addr, "alice").await;
    let big = json!({"cmd": "publish", "channel": "chat:x", "data": "y".repeat(1200)}).to_string();
    let (status, answer) = alice.raw(alice.ack, false, &big).await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], 114, "{answer}");
    let response = http_response(
        server.addr,
        "POST",
        "/sse/send?session=whatever",
        &[],
        big.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 413);
    // The session lives on.
    alice.ok(json!({"cmd": "ping"})).await;
}

#[tokio::test]
async fn a_disallowed_origin_is_403_and_an_allowed_one_gets_cors_headers() {
    let server = server(|c| c.allowed_origins = vec!["http://app.example".into()]).await;
    let evil = [("Origin", "http://evil.example")];
    for (method, path) in [
        ("GET", "/poll?wait=0"),
        ("POST", "/poll?wait=0"),
        ("GET", "/sse"),
        ("POST", "/sse/send?session=x"),
        ("OPTIONS", "/poll"),
    ] {
        let response = http_response(server.addr, method, path, &evil, b"").await;
        assert_eq!(response.status, 403, "{method} {path}");
        assert!(response.body.contains("not allowed"), "{}", response.body);
    }
    assert_eq!(server.metric("switchboard_connections").await, 0.0);

    // The server's own origin: no CORS headers needed.
    let own = format!("http://{}", server.addr);
    let connect = json!({"cmd": "connect", "token": token("origin", None, &[], 3600)}).to_string();
    let response = http_response(
        server.addr,
        "POST",
        "/poll?wait=0",
        &[("Origin", &own)],
        connect.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), None);

    // A listed origin: allowed, and told so.
    let app = [("Origin", "http://app.example")];
    let response = http_response(
        server.addr,
        "POST",
        "/poll?wait=0",
        &app,
        connect.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(response.header("vary"), Some("Origin"));
    for path in ["/poll", "/sse/send"] {
        let preflight = http_response(
            server.addr,
            "OPTIONS",
            path,
            &[
                ("Origin", "http://app.example"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
        .await;
        assert_eq!(preflight.status, 204, "{path}");
        assert_eq!(
            preflight.header("access-control-allow-origin"),
            Some("http://app.example")
        );
        assert_eq!(
            preflight.header("access-control-allow-methods"),
            Some("GET, POST")
        );
        assert_eq!(
            preflight.header("access-control-allow-headers"),
            Some("content-type")
        );
    }
    let stream = SseStream::open(server.addr, "/sse", &app).await;
    assert_eq!(
        stream.header("access-control-allow-origin"),
        Some("http://app.example")
    );
}

#[tokio::test]
async fn transports_can_be_switched_off() {
    let ws_off = server(|c| c.transports.websocket = false).await;
    let stream = tokio::net::TcpStream::connect(ws_off.addr)
        .await
        .expect("connect");
    let (status, head, _) = upgrade(stream, &ws_off.addr.to_string(), &[]).await;
    assert_eq!(status, 404, "{head}");
    // Polling still works.
    let mut alice = Poller::connect(ws_off.addr, "alice").await;
    alice.ok(json!({"cmd": "ping"})).await;

    let http_off = server(|c| {
        c.transports.sse = false;
        c.transports.polling = false;
    })
    .await;
    for (method, path) in [
        ("GET", "/sse"),
        ("POST", "/sse/send?session=x"),
        ("GET", "/poll"),
        ("POST", "/poll"),
        ("OPTIONS", "/poll"),
    ] {
        let response = http_response(http_off.addr, method, path, &[], b"").await;
        assert_eq!(response.status, 404, "{method} {path}");
        assert!(response.body.contains("disabled"), "{}", response.body);
    }
    // The WebSocket still works.
    http_off.client("alice").await;
}

#[tokio::test]
async fn a_new_session_recovers_what_the_lost_one_missed() {
    let server = server(|_| {}).await;
    let mut alice = Poller::connect(server.addr, "alice").await;
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:rec"}))
        .await;
    let epoch = sub["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=3 {
        server.publish("chat:rec", json!(i)).await;
    }
    let mut last = 0;
    for i in 1..=3 {
        let publication = alice.next_publication().await;
        assert_eq!(publication["data"], i);
        last = publication["offset"].as_u64().expect("offset");
    }
    // The session is lost; three more are published meanwhile.
    server.api_ok("disconnect", json!({"user": "alice"})).await;
    eventually("the session to end", || async {
        server.metric("switchboard_connections").await == 0.0
    })
    .await;
    for i in 4..=6 {
        server.publish("chat:rec", json!(i)).await;
    }
    let answer = alice.poll(&[], false).await;
    assert_eq!(answer["closed"]["code"], 4003, "{answer}");

    let mut again = Poller::connect(server.addr, "alice").await;
    let sub = again
        .ok(json!({"cmd": "subscribe", "channel": "chat:rec", "recover": {"offset": last, "epoch": epoch}}))
        .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    let data: Vec<Value> = sub["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(data, [json!(4), json!(5), json!(6)]);
    server.publish("chat:rec", json!(7)).await;
    assert_eq!(again.next_publication().await["data"], 7);
}

#[tokio::test]
async fn shutdown_answers_waiting_polls_with_1001() {
    let mut server = start(|c| c.limits.poll_timeout = Duration::from_secs(4)).await;
    let alice = subscribed(&server, "alice", "feed:bye").await;
    let path = alice.path(alice.ack, true);
    let addr = server.addr;
    let held = tokio::spawn(async move { http_response(addr, "GET", &path, &[], b"").await });
    eventually("the poll to be held", || async {
        server.metric("switchboard_polls_waiting").await == 1.0
    })
    .await;
    let task = server.shutdown();
    let response = bounded("the held poll", held).await.expect("task");
    let answer: Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(answer["closed"]["code"], 1001, "{answer}");
    let result = bounded("the server to stop", task).await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}

/// Issue 11, point 9: a poll without a session and without `connect` first opens nothing:
/// it is answered at once with 400 naming what is missing, instead of being held and
/// answered 4007 when the connect timeout runs out.
#[tokio::test]
async fn a_first_poll_without_connect_is_400_at_once() {
    let server = server(|_| {}).await;
    let started = std::time::Instant::now();
    for body in [
        "",
        r#"{"cmd":"ping"}"#,
        r#"[{"cmd":"subscribe","channel":"chat:x"}]"#,
    ] {
        let response = http_response(server.addr, "POST", "/poll", &[], body.as_bytes()).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        assert!(response.body.contains("connect"), "{}", response.body);
    }
    let response = http_response(server.addr, "GET", "/poll", &[], b"").await;
    assert_eq!(response.status, 400);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    assert_eq!(server.metric("switchboard_pending_connections").await, 0.0);
}
