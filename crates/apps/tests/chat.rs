//! The `chat.` rpc methods end to end over WebSockets.

use serde_json::{Value, json};

use crate::util::start;

fn is_publication(push: &Value) -> bool {
    push["push"] == "publication"
}

#[tokio::test]
async fn posts_reach_subscribers_and_typing_is_ephemeral() {
    let server = start(|_| {}).await;
    let (_, mut alice) = server.user("Alice").await;
    let (_, mut bob) = server.user("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "room:lobby"}))
        .await;

    let posted = alice
        .rpc(
            "chat.post",
            json!({"room": "lobby", "text": "Hello <b>bob</b>"}),
        )
        .await;
    let offset = posted["offset"].as_u64().expect("an offset");
    assert!(offset >= 1);
    let push = bob.push_where("the message", is_publication).await;
    assert_eq!(push["channel"], "room:lobby");
    assert_eq!(push["offset"], offset);
    assert_eq!(
        push["data"],
        json!({"type": "message", "text": "Hello <b>bob</b>"})
    );
    assert_eq!(push["info"]["user"], "alice");
    assert_eq!(
        push["info"]["info"],
        json!({"name": "Alice", "guest": false})
    );

    // Typing: pushed, marked ephemeral, never in history; a second within 2 s is dropped.
    assert_eq!(
        alice.rpc("chat.typing", json!({"room": "lobby"})).await,
        json!({})
    );
    assert_eq!(
        alice.rpc("chat.typing", json!({"room": "lobby"})).await,
        json!({})
    );
    let typing = bob.push_where("typing", is_publication).await;
    assert_eq!(typing["data"], json!({"type": "typing"}));
    assert_eq!(typing["ephemeral"], true);
    assert_eq!(typing["offset"], 0);
    assert_eq!(server.apps.metrics().typing_dropped.get(), 1);
    let history = bob
        .ok(json!({"cmd": "history", "channel": "room:lobby", "limit": 10}))
        .await;
    let kinds: Vec<&Value> = history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["data"]["type"])
        .collect();
    assert_eq!(kinds, [&json!("message")], "typing is not kept");

    // Clients cannot publish around the rules.
    let direct = alice
        .cmd(json!({"cmd": "publish", "channel": "room:lobby", "data": {"type": "message", "text": "x"}}))
        .await;
    assert_eq!(direct["error"]["code"], 103, "{direct}");

    // Refusals.
    let too_long = "x".repeat(2001);
    for (data, code) in [
        (json!({"room": "lobby", "text": too_long}), 107),
        (json!({"room": "lobby", "text": "   "}), 107),
        (json!({"room": "nowhere", "text": "hi"}), 119),
        (json!({"room": "lobby"}), 107),
        (json!("lobby"), 107),
    ] {
        let (got, message) = alice.rpc_err("chat.post", data.clone()).await;
        assert_eq!(got, code, "{data}: {message}");
    }
    let (unknown, _) = alice.rpc_err("chat.nothing", json!({})).await;
    assert_eq!(unknown, 104);
}

#[tokio::test]
async fn posting_too_fast_is_refused() {
    let server = start(|o| {
        o.limits.post_burst = 3;
        o.limits.posts_per_second = 1;
    })
    .await;
    let (_, mut kim) = server.user("kim").await;
    for n in 0..3 {
        kim.rpc(
            "chat.post",
            json!({"room": "lobby", "text": format!("{n}")}),
        )
        .await;
    }
    let (code, message) = kim
        .rpc_err("chat.post", json!({"room": "lobby", "text": "one more"}))
        .await;
    assert_eq!(code, 111, "{message}");
    assert_eq!(server.apps.metrics().posts_limited.get(), 1);
    // The apps' counters are on the server's /metrics, after its own.
    let metrics = server.get("/metrics", &[]).await;
    let text = metrics.text();
    assert!(
        text.contains("switchboard_apps_posts_limited_total 1\n"),
        "{text}"
    );
    assert!(text.contains("switchboard_connections "), "{text}");
}

#[tokio::test]
async fn rooms_topics_and_unread_counts() {
    let server = start(|o| o.limits.rooms_per_user = 1).await;
    let (_, mut lee) = server.user("lee").await;
    let (_, mut max) = server.user("max").await;
    lee.ok(json!({"cmd": "subscribe", "channel": "apps:rooms"}))
        .await;

    let created = max
        .rpc("chat.create", json!({"name": "rust", "topic": "crabs"}))
        .await;
    assert_eq!(created, json!({"room": {"name": "rust", "topic": "crabs"}}));
    let notice = lee.push_where("a room notice", is_publication).await;
    assert_eq!(notice["data"]["type"], "room");
    assert_eq!(notice["data"]["room"]["name"], "rust");
    let (code, _) = max.rpc_err("chat.create", json!({"name": "go"})).await;
    assert_eq!(code, 106, "one room per user here");
    let (code, message) = lee.rpc_err("chat.create", json!({"name": "rust"})).await;
    assert_eq!(code, 119, "{message}");
    for bad in ["Rust", "a b", "", "chat:x"] {
        let (code, _) = lee.rpc_err("chat.create", json!({"name": bad})).await;
        assert_eq!(code, 107, "{bad}");
    }

    max.ok(json!({"cmd": "subscribe", "channel": "room:rust"}))
        .await;
    lee.rpc("chat.topic", json!({"room": "rust", "topic": "fearless"}))
        .await;
    let topic = max.push_where("the topic", is_publication).await;
    assert_eq!(topic["data"], json!({"type": "topic", "topic": "fearless"}));

    let first = lee
        .rpc("chat.post", json!({"room": "rust", "text": "one"}))
        .await["offset"]
        .as_u64()
        .unwrap();
    max.rpc("chat.read", json!({"room": "rust", "offset": first}))
        .await;
    lee.rpc("chat.post", json!({"room": "rust", "text": "two"}))
        .await;
    lee.rpc("chat.post", json!({"room": "rust", "text": "three"}))
        .await;
    let rooms = max.rpc("chat.rooms", json!({})).await;
    let list = rooms["rooms"].as_array().unwrap();
    let names: Vec<&Value> = list.iter().map(|r| &r["name"]).collect();
    assert_eq!(names, [&json!("lobby"), &json!("rust")]);
    let rust = &list[1];
    assert_eq!(rust["topic"], "fearless");
    assert_eq!(rust["online"], 1, "max is subscribed");
    assert_eq!(rust["read"], first);
    assert_eq!(rust["unread"], 2);
    assert_eq!(rust["offset"], first + 2);
    assert_eq!(list[0]["unread"], 0, "never opened");
    // The read position follows the user, and never goes back.
    max.rpc("chat.read", json!({"room": "rust", "offset": first + 2}))
        .await;
    max.rpc("chat.read", json!({"room": "rust", "offset": 1}))
        .await;
    let rooms = max.rpc("chat.rooms", json!({})).await;
    assert_eq!(rooms["rooms"][1]["unread"], 0);
    let (code, _) = max.rpc_err("chat.read", json!({"room": "rust"})).await;
    assert_eq!(code, 107);
    // Leaving forgets the position, on every device: the room is no longer one of max's.
    max.rpc("chat.leave", json!({"room": "rust"})).await;
    let rooms = max.rpc("chat.rooms", json!({})).await;
    assert_eq!(rooms["rooms"][1]["read"], Value::Null, "{rooms}");
    let (code, message) = max.rpc_err("chat.leave", json!({"room": "lobby"})).await;
    assert_eq!(
        (code, message.as_str()),
        (119, "everyone stays in the lobby")
    );
}

#[tokio::test]
async fn guests_post_but_create_nothing_and_have_no_conversations() {
    let server = start(|_| {}).await;
    let guest = server
        .post("/auth/guest", json!({"name": "Visitor"}), None)
        .await;
    let cookie = crate::util::session_of(&guest);
    let mut ws = server.connect(&cookie).await;
    ws.rpc("chat.post", json!({"room": "lobby", "text": "hi all"}))
        .await;
    for (method, data) in [
        ("chat.create", json!({"name": "mine"})),
        ("chat.topic", json!({"room": "lobby", "topic": "x"})),
        ("chat.dm.send", json!({"to": "someone", "text": "x"})),
    ] {
        let (code, _) = ws.rpc_err(method, data).await;
        assert_eq!(code, 103, "{method}");
    }
    assert_eq!(ws.rpc("chat.rooms", json!({})).await["dms"], json!([]));
}

#[tokio::test]
async fn anonymous_connections_cannot_chat() {
    let server = crate::util::start_with(|c| c.allow_anonymous = true, |_| {}).await;
    let url = format!("ws://{}/ws", server.addr);
    let mut client = switchboard_client::Client::open(&url).await.unwrap();
    client.connect(None).await.unwrap();
    let mut ws = crate::util::Ws(client);
    let (code, _) = ws.rpc_err("chat.rooms", json!({})).await;
    assert_eq!(code, 103);
}

#[tokio::test]
async fn direct_messages_wait_for_offline_users_and_report_delivery() {
    let server = start(|_| {}).await;
    let (_, mut ann) = server.user("Ann").await;
    let (_, mut ben) = server.user("Ben").await;
    let cara = server.signup("Cara").await;

    // Ben is online: delivered at once, to him and to Ann's other devices.
    let sent = ann
        .rpc("chat.dm.send", json!({"to": "BEN", "text": "hi ben"}))
        .await;
    assert_eq!(sent["state"], "delivered");
    let id = sent["id"].as_i64().unwrap();
    let got = ben.push_where("the DM", |p| p["push"] == "message").await;
    assert_eq!(
        got["data"],
        json!({"type": "dm", "id": id, "from": "ann", "from_name": "Ann", "to": "ben",
               "text": "hi ben", "time": sent["time"]})
    );
    assert_eq!(got["from"]["user"], "ann");
    let copy = ann.push_where("the copy", |p| p["push"] == "message").await;
    assert_eq!(copy["data"]["id"], id);

    // Cara is offline: stored; delivered when she connects; Ann hears of it.
    let stored = ann
        .rpc(
            "chat.dm.send",
            json!({"to": "cara", "text": "are you there?"}),
        )
        .await;
    assert_eq!(stored["state"], "stored");
    let late_id = stored["id"].as_i64().unwrap();
    let mut cara_ws = server.connect(&cara).await;
    let waiting = cara_ws
        .push_where("the mailbox", |p| p["push"] == "message")
        .await;
    assert_eq!(waiting["data"]["id"], late_id);
    assert_eq!(waiting["data"]["text"], "are you there?");
    cara_ws
        .rpc("chat.dm.delivered", json!({"ids": [late_id, id]}))
        .await;
    let state = ann
        .push_where("dm.state", |p| {
            p["push"] == "message" && p["data"]["type"] == "dm.state"
        })
        .await;
    assert_eq!(
        state["data"],
        json!({"type": "dm.state", "id": late_id, "state": "delivered"})
    );

    let history = cara_ws.rpc("chat.dm.history", json!({"with": "ann"})).await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["state"], "delivered");
    assert_eq!(messages[0]["late"], true);
    assert_eq!(messages[0]["from"], "ann");
    assert_eq!(messages[0]["to"], "cara");

    // Conversations and their unread counts.
    ann.rpc("chat.dm.send", json!({"to": "cara", "text": "second"}))
        .await;
    let rooms = cara_ws.rpc("chat.rooms", json!({})).await;
    assert_eq!(rooms["dms"][0]["user"], "ann");
    assert_eq!(rooms["dms"][0]["name"], "Ann");
    assert_eq!(rooms["dms"][0]["unread"], 2);
    assert_eq!(rooms["dms"][0]["last"]["text"], "second");
    cara_ws
        .rpc(
            "chat.read",
            json!({"dm": "ann", "id": rooms["dms"][0]["last"]["id"]}),
        )
        .await;
    let rooms = cara_ws.rpc("chat.rooms", json!({})).await;
    assert_eq!(rooms["dms"][0]["unread"], 0);
    let ann_side = ann
        .rpc("chat.dm.history", json!({"with": "cara", "limit": 1}))
        .await;
    assert_eq!(ann_side["messages"].as_array().unwrap().len(), 1);
    assert_eq!(ann_side["messages"][0]["text"], "second");
    let older = ann
        .rpc(
            "chat.dm.history",
            json!({"with": "cara", "before": ann_side["messages"][0]["id"]}),
        )
        .await;
    assert_eq!(older["messages"][0]["text"], "are you there?");

    // Refusals: nobody, oneself, too long.
    let (code, _) = ann
        .rpc_err("chat.dm.send", json!({"to": "nobody", "text": "x"}))
        .await;
    assert_eq!(code, 119);
    let (code, _) = ann
        .rpc_err("chat.dm.send", json!({"to": "ann", "text": "x"}))
        .await;
    assert_eq!(code, 119);
    let (code, _) = ann
        .rpc_err(
            "chat.dm.send",
            json!({"to": "ben", "text": "y".repeat(2001)}),
        )
        .await;
    assert_eq!(code, 107);
    assert_eq!(
        server.apps.metrics().dms_stored.get(),
        1,
        "the second found Cara online"
    );
}

/// The apps' `chat.*` handlers and the user's own backend behind `rpc.proxy_url` answer
/// side by side on one connection: the apps claim their prefix, the rest is proxied with
/// the caller's identity (the display name and roles the apps' token carries).
#[tokio::test]
async fn the_apps_methods_and_a_proxied_backend_answer_side_by_side() {
    use axum::Json;
    async fn backend(Json(call): Json<Value>) -> Json<Value> {
        Json(
            json!({"result": {"method": call["method"], "user": call["user"], "info": call["info"]}}),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/rpc", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let app = axum::Router::new().route("/rpc", axum::routing::post(backend));
        axum::serve(listener, app).await.ok();
    });
    let server = crate::util::start_with(|c| c.rpc.proxy_url = Some(url), |_| {}).await;
    let (_, mut ana) = server.user("Ana").await;
    let rooms = ana.rpc("chat.rooms", json!({})).await;
    assert_eq!(rooms["rooms"][0]["name"], "lobby");
    let answer = ana.rpc("orders.status", json!({"order": 7})).await;
    assert_eq!(
        answer,
        json!({"method": "orders.status", "user": "ana", "info": {"name": "Ana", "guest": false}})
    );
}
