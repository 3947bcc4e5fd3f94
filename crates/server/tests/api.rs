//! The server API over real HTTP: every command, the key check, errors, `/health` and
//! `/metrics`.

use serde_json::{Value, json};

use crate::util::{API_KEY, Poller, SseClient, http, start};

#[tokio::test]
async fn publish_reaches_subscribers_without_publisher_info() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    let sub = client
        .ok(json!({"cmd": "subscribe", "channel": "chat:a"}))
        .await;
    let reply = server
        .api_ok("publish", json!({"channel": "chat:a", "data": {"x": 1}}))
        .await;
    assert_eq!(reply, json!({"offset": 1, "epoch": sub["epoch"]}));
    let push = client.next_publication().await;
    assert_eq!(push["data"], json!({"x": 1}));
    assert_eq!(push["offset"], 1);
    assert!(push.get("info").is_none(), "{push}");
    // The API may publish where clients may not.
    server
        .api_ok("publish", json!({"channel": "feed:web-1", "data": "line"}))
        .await;
}

#[tokio::test]
async fn publish_errors() {
    let server = start(|c| c.limits.max_payload_size = 50).await;
    let cases = [
        (json!({"channel": "nope:x", "data": 1}), 400, 102),
        (json!({"channel": "bad name", "data": 1}), 400, 102),
        (json!({"channel": "chat:a"}), 400, 107),
        (
            json!({"channel": "chat:a", "data": 1, "extra": true}),
            400,
            107,
        ),
        (
            json!({"channel": "chat:a", "data": "z".repeat(100)}),
            413,
            114,
        ),
    ];
    for (body, status, code) in cases {
        let (got_status, reply) = server.api("publish", body.clone()).await;
        assert_eq!(
            (got_status, reply["error"]["code"].as_u64()),
            (status, Some(code)),
            "{body} -> {reply}"
        );
    }
}

#[tokio::test]
async fn broadcast_reports_per_channel_results() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    client
        .ok(json!({"cmd": "subscribe", "channel": "chat:a"}))
        .await;
    client
        .ok(json!({"cmd": "subscribe", "channel": "chat:b"}))
        .await;
    let reply = server
        .api_ok(
            "broadcast",
            json!({"channels": ["chat:a", "chat:b", "bad channel"], "data": "all"}),
        )
        .await;
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{reply}");
    assert_eq!(
        (results[0]["channel"].clone(), results[0]["offset"].clone()),
        (json!("chat:a"), json!(1))
    );
    assert_eq!(
        (results[1]["channel"].clone(), results[1]["offset"].clone()),
        (json!("chat:b"), json!(1))
    );
    assert_eq!(results[2]["channel"], "bad channel");
    assert_eq!(results[2]["error"]["code"], 102);
    let mut channels: Vec<Value> = Vec::new();
    for _ in 0..2 {
        let push = client.next_publication().await;
        assert_eq!(push["data"], "all");
        channels.push(push["channel"].clone());
    }
    channels.sort_by_key(|c| c.to_string());
    assert_eq!(channels, [json!("chat:a"), json!("chat:b")]);
}

#[tokio::test]
async fn send_delivers_or_stores() {
    let server = start(|_| {}).await;
    let reply = server
        .api_ok("send", json!({"user": "carol", "data": 1}))
        .await;
    assert_eq!(reply["status"], "stored");
    assert!(reply["mailbox"].as_u64().is_some());
    let mut carol = server.client("carol").await;
    let reply = server
        .api_ok("send", json!({"user": "carol", "data": 2}))
        .await;
    assert_eq!(reply["status"], "delivered");
    assert_eq!(carol.next_push().await["data"], 1);
    assert_eq!(carol.next_push().await["data"], 2);
    let (status, reply) = server.api("send", json!({"user": "", "data": 1})).await;
    assert_eq!((status, reply["error"]["code"].clone()), (400, json!(107)));
}

#[tokio::test]
async fn presence_and_history() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:p"}))
        .await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:p"}))
        .await;
    let presence = server
        .api_ok("presence", json!({"channel": "chat:p"}))
        .await;
    let mut users: Vec<&str> = presence["presence"]
        .as_object()
        .unwrap()
        .values()
        .map(|e| e["user"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);

    for i in 1..=4 {
        server.publish("chat:p", json!(i)).await;
    }
    let history = server
        .api_ok("history", json!({"channel": "chat:p", "limit": 2}))
        .await;
    let data: Vec<Value> = history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(data, [json!(3), json!(4)]);
    assert_eq!(history["offset"], 4);
    let since = server
        .api_ok(
            "history",
            json!({"channel": "chat:p", "since": {"offset": 3, "epoch": history["epoch"]}}),
        )
        .await;
    assert_eq!(since["publications"].as_array().unwrap().len(), 1);
    assert_eq!(since["complete"], true);
    let (status, reply) = server.api("history", json!({"channel": "plain"})).await;
    assert_eq!((status, reply["error"]["code"].clone()), (400, json!(108)));
}

#[tokio::test]
async fn channels_lists_subscriber_counts() {
    let server = start(|_| {}).await;
    let mut a = server.client("alice").await;
    let mut b = server.client("bob").await;
    a.ok(json!({"cmd": "subscribe", "channel": "chat:one"}))
        .await;
    b.ok(json!({"cmd": "subscribe", "channel": "chat:one"}))
        .await;
    b.ok(json!({"cmd": "subscribe", "channel": "chat:two"}))
        .await;
    let reply = server.api_ok("channels", json!({})).await;
    assert_eq!(
        reply["channels"],
        json!([{"channel": "chat:one", "subscribers": 2}, {"channel": "chat:two", "subscribers": 1}])
    );
    b.ok(json!({"cmd": "unsubscribe", "channel": "chat:two"}))
        .await;
    let reply = server.api_ok("channels", json!({})).await;
    assert_eq!(
        reply["channels"],
        json!([{"channel": "chat:one", "subscribers": 2}])
    );
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_with_4003() {
    let server = start(|_| {}).await;
    let mut a1 = server.client("alice").await;
    let mut a2 = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let reply = server.api_ok("disconnect", json!({"user": "alice"})).await;
    assert_eq!(reply["disconnected"], 2);
    assert_eq!(a1.expect_close().await.0, 4003);
    assert_eq!(a2.expect_close().await.0, 4003);
    bob.barrier().await;
    let reply = server.api_ok("disconnect", json!({"user": "nobody"})).await;
    assert_eq!(reply["disconnected"], 0);
}

#[tokio::test]
async fn disconnect_with_reconnect_closes_every_transport_with_4008() {
    const REASON: &str = "disconnected by the server; reconnect";
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    let mut sse = SseClient::connect(server.addr, "alice").await;
    let mut poller = Poller::connect(server.addr, "alice").await;
    let mut bob = server.client("bob").await;
    let reply = server
        .api_ok("disconnect", json!({"user": "alice", "reconnect": true}))
        .await;
    assert_eq!(reply, json!({"disconnected": 3}));
    assert_eq!(ws.expect_close().await, (4008, REASON.to_owned()));
    assert_eq!(sse.expect_close().await, (4008, REASON.to_owned()));
    let answer = poller.poll(&[], false).await;
    assert_eq!(answer["closed"], json!({"code": 4008, "reason": REASON}));
    bob.barrier().await;
    // `"reconnect": false` is the same as leaving it out: 4003.
    let mut again = server.client("alice").await;
    let reply = server
        .api_ok("disconnect", json!({"user": "alice", "reconnect": false}))
        .await;
    assert_eq!(reply, json!({"disconnected": 1}));
    assert_eq!(again.expect_close().await.0, 4003);
}

#[tokio::test]
async fn disconnect_refuses_a_reconnect_that_is_not_a_boolean() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    for bad in [json!("true"), json!(1), json!(null), json!([true])] {
        let body = json!({"user": "alice", "reconnect": bad});
        let (status, reply) = server.api("disconnect", body.clone()).await;
        assert_eq!(
            (status, reply["error"]["code"].clone()),
            (400, json!(107)),
            "{body} -> {reply}"
        );
    }
    // Refused before anything was closed.
    alice.barrier().await;
}

#[tokio::test]
async fn info_counts_connections() {
    let server = start(|_| {}).await;
    let mut a = server.client("alice").await;
    let _b = server.client("bob").await;
    a.ok(json!({"cmd": "subscribe", "channel": "chat:i"})).await;
    let reply = server.api_ok("info", json!({})).await;
    let node = &reply["nodes"][0];
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(node["connections"], 2);
    assert_eq!(node["subscriptions"], 1);
    assert_eq!(node["channels"], 1);
    assert!(node["uptime"].as_u64().is_some(), "{reply}");
}

#[tokio::test]
async fn wrong_or_missing_key_is_401() {
    let server = start(|_| {}).await;
    let body = json!({"channel": "chat:a", "data": 1}).to_string();
    for headers in [
        vec![("X-API-Key", "wrong")],
        vec![("X-API-Key", "")],
        vec![],
        vec![("X-API-Key", &API_KEY[1..])],
    ] {
        let (status, text) = http(
            server.addr,
            "POST",
            "/api/publish",
            &headers,
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 401, "{headers:?}: {text}");
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["error"]["code"], 101);
    }
    // Checked before the command: an unknown one is still 401 without the key.
    let (status, _) = http(server.addr, "POST", "/api/nope", &[], b"{}").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn unknown_command_is_404_and_bad_json_is_400() {
    let server = start(|_| {}).await;
    let (status, reply) = server.api("nope", json!({})).await;
    assert_eq!((status, reply["error"]["code"].clone()), (404, json!(104)));
    let key = [("X-API-Key", API_KEY)];
    let (status, _) = http(server.addr, "GET", "/api/publish", &key, b"").await;
    assert_eq!(status, 405);
    for body in [&b"{"[..], b"[1]", b"\xff\xfe"] {
        let (status, text) = http(server.addr, "POST", "/api/publish", &key, body).await;
        assert_eq!(status, 400, "{text}");
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["error"]["code"], 107);
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let server = start(|_| {}).await;
    let (status, text) = http(server.addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"status": "ok"})
    );

    let _client = server.client("alice").await;
    let (status, text) = http(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE switchboard_connections gauge"),
        "{text}"
    );
    assert_eq!(server.metric("switchboard_connections").await, 1.0);
    assert!(server.metric("switchboard_commands_total").await >= 1.0);
}

#[tokio::test]
async fn metrics_return_to_zero_when_clients_leave() {
    let server = start(|_| {}).await;
    let mut a = server.client("alice").await;
    let mut b = server.client("bob").await;
    let mut c = server.client("carol").await;
    for client in [&mut a, &mut b, &mut c] {
        client
            .ok(json!({"cmd": "subscribe", "channel": "chat:m"}))
            .await;
        client
            .ok(json!({"cmd": "subscribe", "channel": "vote:m"}))
            .await;
    }
    assert_eq!(server.metric("switchboard_connections").await, 3.0);
    assert_eq!(server.metric("switchboard_subscriptions").await, 6.0);
    // Three ways to go: a close handshake, a dropped socket, a server disconnect.
    a.close().await;
    drop(b);
    server.api_ok("disconnect", json!({"user": "carol"})).await;
    assert_eq!(c.expect_close().await.0, 4003);
    drop(c);
    crate::util::eventually("every connection to be gone", || async {
        server.metric("switchboard_connections").await == 0.0
            && server.metric("switchboard_subscriptions").await == 0.0
    })
    .await;
    assert_eq!(
        server.api_ok("channels", json!({})).await["channels"],
        json!([])
    );
}

#[tokio::test]
async fn metrics_count_connections_by_transport() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    let sse = SseClient::connect(server.addr, "bob").await;
    let _poller = Poller::connect(server.addr, "carol").await;
    let figures = || async {
        [
            "switchboard_connections",
            "switchboard_websocket_connections",
            "switchboard_http_sessions",
            "switchboard_sse_streams",
        ]
        .map(|name| server.metric(name))
    };
    let read = || async {
        let mut out = Vec::new();
        for f in figures().await {
            out.push(f.await);
        }
        out
    };
    assert_eq!(read().await, [3.0, 1.0, 2.0, 1.0]);
    // The stream goes; its session stays until `session_idle`, as a polling one does.
    drop(sse);
    crate::util::eventually("the SSE stream to be gone", || async {
        read().await == [3.0, 1.0, 2.0, 0.0]
    })
    .await;
    for user in ["alice", "bob", "carol"] {
        server.api_ok("disconnect", json!({"user": user})).await;
    }
    assert_eq!(ws.expect_close().await.0, 4003);
    drop(ws);
    crate::util::eventually("every connection to be gone", || async {
        read().await == [0.0, 0.0, 0.0, 0.0]
    })
    .await;
}
