//! The hub's extension points, as the built-in apps and a user's backend use them: `rpc`
//! answered by handlers registered by prefix or proxied to a backend over HTTP, `history`
//! paging backwards with `before`, and ephemeral publications.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_server::error::ClientError;
use switchboard_server::rpc::{self, RpcCall, RpcHandler};
use switchboard_server::{HistoryRequest, Node, PublishOptions};
use tokio::net::TcpListener;

use crate::util::{Poller, SseClient, error_of, start, start_extended};

/// Answers `echo.*` with the call as it saw it, and refuses `echo.refuse` in its own words.
struct Echo;

impl RpcHandler for Echo {
    fn call(&self, call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
        Box::pin(async move {
            if call.method == "echo.refuse" {
                return Err(ClientError::rpc_failed("no, thank you"));
            }
            if call.method == "echo.slow" {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let data: Value = rpc::data(&call)?;
            rpc::result(&json!({
                "method": call.method,
                "data": data,
                "user": call.caller.user,
                "roles": call.caller.roles,
                "client": call.caller.client,
            }))
        })
    }
}

/// A more specific prefix than `echo.`: it must win for `echo.deep.*`.
struct Deep;

impl RpcHandler for Deep {
    fn call(&self, _call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
        Box::pin(async { rpc::result(&"deep") })
    }
}

#[tokio::test]
async fn rpc_calls_reach_the_handler_of_their_prefix_on_every_transport() {
    let server = start_extended(
        |_| {},
        |server| {
            server.rpc("echo.", Arc::new(Echo));
            server.rpc("echo.deep.", Arc::new(Deep));
        },
    )
    .await;
    let call = json!({"cmd": "rpc", "method": "echo.hello", "data": {"n": 1}});

    let mut ws = server.client("alice").await;
    let answer = ws.ok(call.clone()).await;
    assert_eq!(
        (
            answer["method"].clone(),
            answer["data"].clone(),
            answer["user"].clone()
        ),
        (json!("echo.hello"), json!({"n": 1}), json!("alice"))
    );
    let deep = ws.ok(json!({"cmd": "rpc", "method": "echo.deep.x"})).await;
    assert_eq!(deep, "deep");
    let refused = ws.cmd(json!({"cmd": "rpc", "method": "echo.refuse"})).await;
    assert_eq!(error_of(&refused), Some((119, "no, thank you".to_owned())));
    // A connection's calls are answered in the order they were made, a slow one first.
    let slow = ws
        .send_cmd(json!({"cmd": "rpc", "method": "echo.slow"}))
        .await;
    let fast = ws
        .send_cmd(json!({"cmd": "rpc", "method": "echo.fast"}))
        .await;
    let first = ws.next_reply().await;
    assert_eq!(first["id"], slow, "{first}");
    assert_eq!(ws.next_reply().await["id"], fast);
    let unknown = ws.cmd(json!({"cmd": "rpc", "method": "vote.cast"})).await;
    let (code, message) = error_of(&unknown).expect("an error");
    assert_eq!(code, 104);
    assert!(message.contains("rpc.proxy_url"), "{message}");
    let missing = ws.cmd(json!({"cmd": "rpc"})).await;
    assert_eq!(
        error_of(&missing),
        Some((107, "missing field \"method\"".to_owned()))
    );
    let mut sse = SseClient::connect(server.addr, "bob").await;
    let answer = sse.ok(call.clone()).await;
    assert_eq!(answer["user"], "bob");
    let mut poll = Poller::connect(server.addr, "carol").await;
    let answer = poll.ok(call).await;
    assert_eq!(answer["user"], "carol");
}

#[tokio::test]
async fn rpc_before_connect_is_110() {
    let server = start_extended(|_| {}, |s| s.rpc("echo.", Arc::new(Echo))).await;
    let mut raw = crate::util::Client::open(server.addr).await;
    let reply = raw.cmd(json!({"cmd": "rpc", "method": "echo.x"})).await;
    assert_eq!(error_of(&reply).map(|e| e.0), Some(110));
}

/// A backend on 127.0.0.1 answering the proxy as a Flask app would; returns its address.
async fn backend() -> String {
    use axum::Json;
    use axum::routing::post;
    async fn answer(Json(call): Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse;
        match call["method"].as_str().unwrap_or_default() {
            "orders.status" => Json(json!({"result": {
                "order": call["data"]["order"],
                "asked_by": call["user"],
                "info": call["info"],
                "roles": call["roles"],
            }}))
            .into_response(),
            "orders.cancel" => {
                Json(json!({"error": {"message": "it has shipped"}})).into_response()
            }
            "orders.slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Json(json!({"result": 1})).into_response()
            }
            "orders.broken" => "not json".into_response(),
            _ => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/rpc", post(answer)))
            .await
            .ok();
    });
    format!("http://{addr}/rpc")
}

#[tokio::test]
async fn rpc_methods_no_handler_claims_go_to_the_backend() {
    let url = backend().await;
    let server = start_extended(
        |c| {
            c.rpc.proxy_url = Some(url);
            c.rpc.timeout = Duration::from_millis(200);
        },
        |s| s.rpc("echo.", Arc::new(Echo)),
    )
    .await;
    let token = crate::util::token("alice", Some(json!({"name": "Alice"})), &[], 3600);
    let mut alice = crate::util::Client::connect(server.addr, Some(&token)).await;
    // Handlers registered in process still answer their own prefix.
    assert_eq!(
        alice.ok(json!({"cmd": "rpc", "method": "echo.x"})).await["user"],
        "alice"
    );
    // Several calls on one connection: the proxy's keep-alive connection is reused.
    for order in [1042, 1043] {
        let status = alice
            .ok(json!({"cmd": "rpc", "method": "orders.status", "data": {"order": order}}))
            .await;
        assert_eq!(
            status,
            json!({"order": order, "asked_by": "alice", "info": {"name": "Alice"}, "roles": []})
        );
    }
    let refused = alice
        .cmd(json!({"cmd": "rpc", "method": "orders.cancel", "data": {"order": 1}}))
        .await;
    assert_eq!(error_of(&refused), Some((119, "it has shipped".to_owned())));
    for method in ["orders.broken", "orders.unknown", "orders.slow"] {
        let failed = alice.cmd(json!({"cmd": "rpc", "method": method})).await;
        assert_eq!(
            error_of(&failed).map(|e| e.0),
            Some(100),
            "{method}: {failed}"
        );
    }
    // Calls waiting for a slow backend hold up neither pushes nor other commands, and a
    // connection has at most 16 of them waiting.
    alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
        .await;
    let mut waiting = Vec::new();
    for _ in 0..16 {
        waiting.push(
            alice
                .send_cmd(json!({"cmd": "rpc", "method": "orders.slow"}))
                .await,
        );
    }
    let seventeenth = alice
        .cmd(json!({"cmd": "rpc", "method": "orders.slow"}))
        .await;
    assert_eq!(
        error_of(&seventeenth).map(|e| e.0),
        Some(111),
        "{seventeenth}"
    );
    assert_eq!(
        server.publish("chat:lobby", json!("while waiting")).await,
        1
    );
    let publication = alice.next_publication().await;
    assert_eq!(publication["data"], "while waiting");
    assert_eq!(alice.ok(json!({"cmd": "ping"})).await, json!({}));
    for id in waiting {
        let reply = alice.reply(id).await;
        assert_eq!(error_of(&reply).map(|e| e.0), Some(100), "{reply}");
    }
    // The connection is still fine after timed-out calls.
    assert_eq!(
        alice
            .ok(json!({"cmd": "rpc", "method": "orders.status", "data": {"order": 7}}))
            .await["order"],
        7
    );
}

#[tokio::test]
async fn a_proxy_url_that_is_not_http_is_refused_at_start() {
    let mut config = switchboard_server::Config::default();
    config.rpc.proxy_url = Some("ftp://127.0.0.1/rpc".into());
    let err = config.validate().expect_err("refused");
    assert!(err.to_string().contains("rpc.proxy_url"), "{err}");
}

/// Publishes `n` numbered publications to `channel` through the server API.
async fn fill(server: &crate::util::Server, channel: &str, n: u64) {
    for i in 1..=n {
        assert_eq!(server.publish(channel, json!({"n": i})).await, i);
    }
}

fn offsets(history: &Value) -> Vec<u64> {
    history["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect()
}

/// `before` pages backwards through a channel, oldest first within a page, from the
/// history cache and (with a cache too small to hold anything) from the store, over
/// WebSocket, SSE, polling and the server API alike.
#[tokio::test]
async fn history_before_pages_backwards_on_every_transport() {
    for cache_bytes in [64 << 20, 1] {
        let server = start(|c| c.storage.history_cache_bytes = cache_bytes).await;
        fill(&server, "chat:lobby", 7).await;
        let pages = [
            (8, 3, vec![5, 6, 7]),
            (5, 3, vec![2, 3, 4]),
            (2, 3, vec![1]),
            (1, 3, vec![]),
        ];
        let mut ws = server.client("alice").await;
        let mut sse = SseClient::connect(server.addr, "bob").await;
        let mut poll = Poller::connect(server.addr, "carol").await;
        for (before, limit, expected) in pages {
            let cmd = json!({"cmd": "history", "channel": "chat:lobby", "before": before, "limit": limit});
            let what = format!("before {before} (cache {cache_bytes} B)");
            let from_ws = ws.ok(cmd.clone()).await;
            assert_eq!(offsets(&from_ws), expected, "ws {what}");
            assert_eq!(from_ws["offset"], 7, "ws {what}");
            assert!(from_ws.get("complete").is_none(), "ws {what}");
            assert_eq!(offsets(&sse.ok(cmd.clone()).await), expected, "sse {what}");
            assert_eq!(offsets(&poll.ok(cmd).await), expected, "poll {what}");
            let api = server
                .api_ok(
                    "history",
                    json!({"channel": "chat:lobby", "before": before, "limit": limit}),
                )
                .await;
            assert_eq!(offsets(&api), expected, "api {what}");
        }
        // Beyond the top: the newest below it, as if it were top + 1.
        let far = ws
            .ok(json!({"cmd": "history", "channel": "chat:lobby", "before": 1000, "limit": 2}))
            .await;
        assert_eq!(offsets(&far), vec![6, 7]);
        // Without a limit: everything below.
        let all = ws
            .ok(json!({"cmd": "history", "channel": "chat:lobby", "before": 4}))
            .await;
        assert_eq!(offsets(&all), vec![1, 2, 3]);
        let both = ws
            .cmd(
                json!({"cmd": "history", "channel": "chat:lobby", "before": 4,
                "since": {"offset": 1, "epoch": from_epoch(&far)}}),
            )
            .await;
        assert_eq!(error_of(&both).map(|e| e.0), Some(107));
        let (status, _) = server
            .api(
                "history",
                json!({"channel": "chat:lobby", "before": 4, "since": {"offset": 1, "epoch": "x"}}),
            )
            .await;
        assert_eq!(status, 400);
    }
}

fn from_epoch(history: &Value) -> String {
    history["epoch"].as_str().expect("epoch").to_owned()
}

/// An ephemeral publication reaches the subscribers of the moment with `"ephemeral":
/// true` and offset 0, takes no offset, and is never in history or recovered.
#[tokio::test]
async fn ephemeral_publications_reach_subscribers_and_are_not_stored() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
        .await;
    let epoch = sub["epoch"].clone();
    let mut bob = server.client("bob").await;
    let reply = bob
        .ok(json!({"cmd": "publish", "channel": "chat:lobby", "data": {"typing": true}, "ephemeral": true}))
        .await;
    assert_eq!(reply["offset"], 0);
    let push = alice.next_publication().await;
    assert_eq!(
        (
            push["ephemeral"].clone(),
            push["offset"].clone(),
            push["data"].clone(),
            push["info"]["user"].clone()
        ),
        (json!(true), json!(0), json!({"typing": true}), json!("bob"))
    );
    assert_eq!(push["epoch"], epoch);
    // From the server API too.
    let (status, body) = server
        .api(
            "publish",
            json!({"channel": "chat:lobby", "data": "ping", "ephemeral": true}),
        )
        .await;
    assert_eq!((status, body["offset"].clone()), (200, json!(0)));
    let push = alice.next_publication().await;
    assert_eq!(
        (push["data"].clone(), push["ephemeral"].clone()),
        (json!("ping"), json!(true))
    );
    // A stored publication afterwards takes offset 1: the ephemeral ones took none.
    assert_eq!(server.publish("chat:lobby", json!("stored")).await, 1);
    let stored = alice.next_publication().await;
    assert_eq!(stored["offset"], 1);
    assert!(stored.get("ephemeral").is_none(), "{stored}");
    let history = bob
        .ok(json!({"cmd": "history", "channel": "chat:lobby"}))
        .await;
    assert_eq!(offsets(&history), vec![1]);
    // Recovery from before them returns only the stored one.
    let mut carol = server.client("carol").await;
    let recovered = carol
        .ok(json!({"cmd": "subscribe", "channel": "chat:lobby",
            "recover": {"offset": 0, "epoch": epoch}}))
        .await;
    assert_eq!(offsets(&recovered), vec![1]);
    // The namespace's rules hold: clients may not publish to feed:, ephemeral or not.
    let refused = bob
        .cmd(json!({"cmd": "publish", "channel": "feed:web", "data": 1, "ephemeral": true}))
        .await;
    assert_eq!(error_of(&refused).map(|e| e.0), Some(103));
}

/// The in-process handle does what the server API does, and mints tokens the server takes.
#[tokio::test]
async fn the_node_handle_publishes_sends_and_mints_tokens() {
    let slot: Arc<std::sync::Mutex<Option<Node>>> = Arc::default();
    let keep = slot.clone();
    let server = start_extended(|_| {}, move |s| *keep.lock().unwrap() = Some(s.node())).await;
    let node = slot.lock().unwrap().clone().expect("the node");
    // The key the server runs with; nothing else, not even an empty one.
    assert!(node.api_key_matches(crate::util::API_KEY));
    assert!(!node.api_key_matches("wrong") && !node.api_key_matches(""));
    let token = node
        .mint_token(&switchboard_server::auth::Claims {
            sub: "dora".into(),
            exp: switchboard_server::auth::now_secs() + 60,
            info: None,
            channels: vec![],
            roles: vec!["admin".into()],
            publish: Vec::new(),
        })
        .expect("mint");
    let mut dora = crate::util::Client::connect(server.addr, Some(&token)).await;
    dora.ok(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
        .await;
    assert!(node.is_online("dora"));
    assert_eq!(node.users_online(), 1);
    let data = RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
    let position = node
        .publish("chat:lobby", data, PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(position.offset, 1);
    assert_eq!(dora.next_publication().await["data"], json!({"n": 1}));
    let history = node
        .history(
            "chat:lobby",
            HistoryRequest {
                before: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(history.publications.len(), 1);
    let sent = node
        .send(
            "dora",
            RawValue::from_string("\"hi\"".into()).unwrap(),
            None,
        )
        .await
        .expect("send");
    assert_eq!(sent.mailbox, 1);
    assert_eq!(node.channels(), vec![("chat:lobby".to_owned(), 1)]);
    assert_eq!(node.disconnect("dora", true), 1);
    assert_eq!(dora.expect_close().await.0, 4008);
}

/// Counts the calls it starts; each takes 200 ms.
struct Counting(Arc<std::sync::atomic::AtomicUsize>);

impl RpcHandler for Counting {
    fn call(&self, _call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rpc::result(&"done")
        })
    }
}

/// A client that leaves with calls waiting leaves no work behind: the calls not yet
/// started never start.
#[tokio::test]
async fn calls_waiting_when_the_connection_ends_are_dropped() {
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = started.clone();
    let server = start_extended(
        |_| {},
        move |s| s.rpc("count.", Arc::new(Counting(counter))),
    )
    .await;
    let mut client = server.client("alice").await;
    for _ in 0..5 {
        client
            .send_cmd(json!({"cmd": "rpc", "method": "count.x"}))
            .await;
    }
    crate::util::eventually("the first call to start", || {
        let started = started.clone();
        async move { started.load(std::sync::atomic::Ordering::SeqCst) == 1 }
    })
    .await;
    client.close().await;
    // Had they been kept, the other four would start within 5 × 200 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Keeps what it is told.
#[derive(Debug, Default)]
struct Seen(std::sync::Mutex<Vec<(String, u64, String)>>);

impl switchboard_server::observe::Observer for Seen {
    fn publication(&self, channel: &str, offset: u64, time: u64, data: &Arc<RawValue>) {
        assert!(time > 0);
        let mut seen = self.0.lock().expect("lock");
        seen.push((channel.to_owned(), offset, data.get().to_owned()));
    }
}

#[tokio::test]
async fn an_observer_sees_its_namespace_committed_in_order() {
    let seen = Arc::new(Seen::default());
    let observer = seen.clone();
    let server = start_extended(|_| {}, move |s| s.observe("feed", observer)).await;
    let mut alice = server.client("alice").await;
    server.publish("feed:a", json!(1)).await;
    server.publish("chat:b", json!("not observed")).await;
    alice
        .ok(json!({"cmd": "publish", "channel": "chat:c", "data": "nor this"}))
        .await;
    alice
        .cmd(json!({"cmd": "publish", "channel": "chat:c", "data": 2, "ephemeral": true}))
        .await;
    server.publish("feed:a", json!({"n": 2})).await;
    server.publish("feed:other", json!(3)).await;
    assert_eq!(
        *seen.0.lock().expect("lock"),
        [
            ("feed:a".to_owned(), 1, "1".to_owned()),
            ("feed:a".to_owned(), 2, r#"{"n":2}"#.to_owned()),
            ("feed:other".to_owned(), 1, "3".to_owned()),
        ]
    );
}
