//! The `admin.` rpc methods: the server API in process, the live figures, disconnecting a
//! user, and the refusals for everyone without the `admin` role.

use serde_json::{Value, json};
use switchboard_apps::admin;

use crate::util::{Server, Ws, body, session_of, start, start_with};

/// An administrator made as the CLI makes one, signed in and connected.
async fn admin_ws(server: &Server) -> Ws {
    admin::add_user(
        server.apps.store().as_ref(),
        "Root",
        "root-password-1",
        true,
    )
    .expect("add the administrator");
    let signin = server
        .post(
            "/auth/signin",
            json!({"name": "root", "password": "root-password-1"}),
            None,
        )
        .await;
    assert_eq!(signin.status, 200, "{}", signin.text());
    server.connect(&session_of(&signin)).await
}

/// `POST /api/{command}` with the test server's key.
async fn http_api(server: &Server, command: &str, body_json: Value) -> Value {
    let response = server
        .request(
            "POST",
            &format!("/api/{command}"),
            &[
                ("Content-Type", "application/json"),
                ("X-API-Key", "test-api-key-0123456789"),
            ],
            body_json.to_string(),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    body(&response)
}

#[tokio::test]
async fn admin_api_answers_as_the_http_api_does() {
    let server = start(|_| {}).await;
    let mut root = admin_ws(&server).await;
    let (_, mut bob) = server.user("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "room:lobby"}))
        .await;

    // publish: the data passes through exactly, and reaches subscribers.
    let published = root
        .rpc(
            "admin.api",
            json!({"command": "publish", "body": {"channel": "room:lobby", "data": {"type": "message", "text": "from the console", "n": 1.50}}}),
        )
        .await;
    let offset = published["offset"].as_u64().expect("an offset");
    let push = bob
        .push_where("the publication", |p| p["push"] == "publication")
        .await;
    assert_eq!(push["offset"], offset);
    assert_eq!(push["data"]["text"], "from the console");

    // Read-only commands give what the HTTP API gives.
    for (command, body_json) in [
        ("channels", json!({})),
        ("presence", json!({"channel": "room:lobby"})),
        ("history", json!({"channel": "room:lobby", "limit": 5})),
    ] {
        let in_process = root
            .rpc("admin.api", json!({"command": command, "body": body_json}))
            .await;
        assert_eq!(
            in_process,
            http_api(&server, command, body_json).await,
            "{command}"
        );
    }
    let info = root.rpc("admin.api", json!({"command": "info"})).await;
    assert_eq!(info["nodes"][0]["connections"], 2);

    // send, broadcast, disconnect.
    let sent = root
        .rpc(
            "admin.api",
            json!({"command": "send", "body": {"user": "bob", "data": {"hi": true}}}),
        )
        .await;
    assert_eq!(sent["status"], "delivered", "{sent}");
    let broadcast = root
        .rpc(
            "admin.api",
            json!({"command": "broadcast", "body": {"channels": ["room:lobby", "nope"], "data": 1}}),
        )
        .await;
    assert_eq!(broadcast["results"].as_array().map(Vec::len), Some(2));

    // The API's errors, as rpc errors with the API's codes.
    let (code, message) = root
        .rpc_err("admin.api", json!({"command": "nope", "body": {}}))
        .await;
    assert_eq!(code, 104, "{message}");
    let (code, message) = root
        .rpc_err(
            "admin.api",
            json!({"command": "publish", "body": {"channel": "room:lobby"}}),
        )
        .await;
    assert_eq!(code, 107, "{message}");

    let gone = root
        .rpc(
            "admin.api",
            json!({"command": "disconnect", "body": {"user": "bob"}}),
        )
        .await;
    assert_eq!(gone, json!({"disconnected": 1}));
}

#[tokio::test]
async fn overview_and_disconnect() {
    let server = start(|_| {}).await;
    let mut root = admin_ws(&server).await;
    let (cookie, _bob) = server.user("bob").await;
    let _bob2 = server.connect(&cookie).await;

    let o = root.rpc("admin.overview", json!({})).await;
    assert_eq!(o["connections"], 3, "{o}");
    assert_eq!(
        o["transports"],
        json!({"websocket": 3, "sse": 0, "polling": 0})
    );
    assert_eq!(o["users_online"], 2, "{o}");
    assert_eq!(
        o["users"],
        json!([{"user": "bob", "connections": 2}, {"user": "root", "connections": 1}])
    );
    assert!(o["rss_bytes"].as_u64().unwrap_or(0) > 0, "{o}");
    for counter in ["publications", "deliveries", "commands", "store_writes"] {
        assert!(o["counters"][counter].is_u64(), "{counter}: {o}");
    }
    assert!(o["store_write_ms"].is_number());
    assert!(o["channels"].is_u64());

    assert_eq!(
        root.rpc("admin.disconnect", json!({"user": "bob"})).await,
        json!({"disconnected": 2})
    );
    let deadline = std::time::Instant::now() + crate::util::WAIT;
    loop {
        let o = root.rpc("admin.overview", json!({})).await;
        if o["users_online"] == 1 {
            assert_eq!(o["users"], json!([{"user": "root", "connections": 1}]));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob still online: {o}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (code, _) = root.rpc_err("admin.disconnect", json!({"user": ""})).await;
    assert_eq!(code, 107);
    let (code, _) = root.rpc_err("admin.nope", json!({})).await;
    assert_eq!(code, 104);
}

#[tokio::test]
async fn everyone_else_is_refused() {
    let server = start_with(|c| c.allow_anonymous = true, |o| o.guests = true).await;
    let (_, mut bob) = server.user("bob").await;
    let guest = server
        .post("/auth/guest", json!({"name": "Gus"}), None)
        .await;
    assert_eq!(guest.status, 200, "{}", guest.text());
    let mut gus = server.connect(&session_of(&guest)).await;
    let anonymous = format!("ws://{}/ws", server.addr);
    let mut anon = switchboard_client::Client::open(&anonymous)
        .await
        .expect("open");
    anon.connect(None).await.expect("connect anonymously");
    let mut anon = Ws(anon);
    for ws in [&mut bob, &mut gus, &mut anon] {
        for (method, data) in [
            ("admin.api", json!({"command": "channels", "body": {}})),
            ("admin.overview", json!({})),
            ("admin.disconnect", json!({"user": "bob"})),
            ("admin.nope", json!({})),
        ] {
            let (code, message) = ws.rpc_err(method, data).await;
            assert_eq!(code, 103, "{method}: {message}");
        }
    }
    // Nothing was done for them: bob is still connected.
    bob.ok(json!({"cmd": "ping"})).await;
}
