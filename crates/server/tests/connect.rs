//! Connecting: the connect reply, tokens (bad, expired, expiring, refreshed), anonymous
//! connections, the connect timeout, and the Origin check of the upgrade.

use std::time::Duration;

use serde_json::json;
use tokio::net::TcpStream;

use crate::util::{Client, start, token, upgrade};

#[tokio::test]
async fn connect_reply_names_client_user_version_and_ping() {
    let server = start(|_| {}).await;
    let client = Client::connect(server.addr, Some(&token("alice", None, &[], 3600))).await;
    let hello = &client.hello;
    assert_eq!(hello["user"], "alice");
    assert!(
        hello["client"].as_str().is_some_and(|c| !c.is_empty()),
        "{hello}"
    );
    assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(hello["ping"], 25, "the default ping interval, in seconds");
    let other = server.client("alice").await;
    assert_ne!(
        other.hello["client"], hello["client"],
        "client ids are per connection"
    );
}

#[tokio::test]
async fn commands_before_connect_are_refused_with_110() {
    let server = start(|_| {}).await;
    let mut client = Client::open(server.addr).await;
    let (code, _) = client
        .err(json!({"cmd": "subscribe", "channel": "chat:a"}))
        .await;
    assert_eq!(code, 110);
    let (code, _) = client.err(json!({"cmd": "ping"})).await;
    assert_eq!(code, 110);
    // The connection stays: connect still works.
    client
        .ok(json!({"cmd": "connect", "token": token("bob", None, &[], 60)}))
        .await;
    let (code, _) = client
        .err(json!({"cmd": "connect", "token": token("bob", None, &[], 60)}))
        .await;
    assert_eq!(code, 112, "a second connect");
}

#[tokio::test]
async fn anonymous_is_refused_with_101_and_4001_unless_allowed() {
    let server = start(|_| {}).await;
    let mut client = Client::open(server.addr).await;
    let (code, _) = client.err(json!({"cmd": "connect"})).await;
    assert_eq!(code, 101);
    assert_eq!(client.expect_close().await.0, 4001);

    let server = start(|c| c.allow_anonymous = true).await;
    let mut client = Client::connect(server.addr, None).await;
    assert_eq!(client.hello["user"], "");
    client.barrier().await;
}

#[tokio::test]
async fn bad_token_is_refused_with_101_and_4001() {
    let server = start(|_| {}).await;
    for bad in [
        "not.a.token".to_string(),
        // Signed with another secret.
        switchboard_server::auth::mint(
            "another-secret",
            &switchboard_server::auth::Claims {
                sub: "mallory".into(),
                exp: switchboard_server::auth::now_secs() + 60,
                info: None,
                channels: vec![],
                roles: Vec::new(),
                publish: Vec::new(),
            },
        )
        .unwrap(),
    ] {
        let mut client = Client::open(server.addr).await;
        let (code, message) = client.err(json!({"cmd": "connect", "token": bad})).await;
        assert_eq!(code, 101, "{message}");
        assert_eq!(client.expect_close().await.0, 4001);
    }
}

#[tokio::test]
async fn expired_token_is_refused_with_109_and_4002() {
    let server = start(|_| {}).await;
    let mut client = Client::open(server.addr).await;
    let (code, _) = client
        .err(json!({"cmd": "connect", "token": token("alice", None, &[], -10)}))
        .await;
    assert_eq!(code, 109);
    assert_eq!(client.expect_close().await.0, 4002);
}

/// Two connections whose tokens expire together; one refreshes its token first. The other
/// is closed with 4002 at expiry, and the refreshed one stays.
#[tokio::test]
async fn token_expiring_while_connected_closes_4002_unless_refreshed() {
    let server = start(|c| c.limits.connect_timeout = Duration::from_millis(300)).await;
    let short = token("alice", None, &[], 2);
    let mut expiring = Client::connect(server.addr, Some(&short)).await;
    let mut refreshed = Client::connect(server.addr, Some(&short)).await;
    let result = refreshed
        .ok(json!({"cmd": "refresh", "token": token("alice", None, &[], 3600)}))
        .await;
    assert!(result["expires"].as_u64().is_some(), "{result}");
    let (code, _) = refreshed
        .err(json!({"cmd": "refresh", "token": token("bob", None, &[], 3600)}))
        .await;
    assert_eq!(code, 101, "a token for another user");
    let (code, _) = refreshed
        .err(json!({"cmd": "refresh", "token": token("alice", None, &[], -10)}))
        .await;
    assert_eq!(code, 109, "an expired token; the connection stays");
    let ((code, _), ()) = tokio::join!(
        expiring.expect_close(),
        refreshed.pump(Duration::from_millis(2500))
    );
    assert_eq!(code, 4002);
    refreshed.barrier().await;
}

/// Regression: expiry was only checked once the connect timeout (10 s by default) had
/// passed, so a token stayed usable for up to that long after it expired.
#[tokio::test]
async fn token_expiry_is_enforced_before_the_connect_timeout_passes() {
    let server = start(|_| {}).await;
    let mut client = Client::connect(server.addr, Some(&token("alice", None, &[], 1))).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), client.expect_close()).await;
    assert_eq!(
        closed.ok().map(|(code, _)| code),
        Some(4002),
        "still open 3 s after connecting with a token valid for at most 1 s"
    );
}

#[tokio::test]
async fn connect_timeout_closes_4007() {
    let server = start(|c| c.limits.connect_timeout = Duration::from_millis(200)).await;
    let mut client = Client::open(server.addr).await;
    assert_eq!(client.expect_close().await.0, 4007);
}

async fn upgrade_status(addr: std::net::SocketAddr, host: &str, origin: Option<&str>) -> u16 {
    let stream = TcpStream::connect(addr).await.expect("TCP connect");
    let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
    upgrade(stream, host, &headers).await.0
}

#[tokio::test]
async fn foreign_origin_is_refused_with_403() {
    let server = start(|_| {}).await;
    let host = server.addr.to_string();
    assert_eq!(
        upgrade_status(server.addr, &host, Some("http://evil.example")).await,
        403
    );
    assert_eq!(upgrade_status(server.addr, &host, Some("null")).await, 403);
    // Same origin (the Origin names the Host), and no Origin (not a browser).
    let own = format!("http://{host}");
    assert_eq!(upgrade_status(server.addr, &host, Some(&own)).await, 101);
    assert_eq!(upgrade_status(server.addr, &host, None).await, 101);
}

#[tokio::test]
async fn allowed_origins_are_accepted() {
    let server = start(|c| c.allowed_origins = vec!["http://evil.example".into()]).await;
    let host = server.addr.to_string();
    assert_eq!(
        upgrade_status(server.addr, &host, Some("http://evil.example")).await,
        101
    );
    assert_eq!(
        upgrade_status(server.addr, &host, Some("http://other.example")).await,
        403
    );
}

#[tokio::test]
async fn max_connections_refuses_with_503_until_one_closes() {
    let server = start(|c| c.limits.max_connections = 2).await;
    let first = server.client("alice").await;
    let _second = server.client("bob").await;
    let host = server.addr.to_string();
    assert_eq!(upgrade_status(server.addr, &host, None).await, 503);
    first.close().await;
    crate::util::eventually("a permit to be released", || async {
        upgrade_status(server.addr, &host, None).await == 101
    })
    .await;
}
