//! Unit tests of the session state machine: a [`Context`] over the memory store, command
//! frames in, and what the session queued to its outbox read back as JSON.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Context, Session};
use crate::admission::Admission;
use crate::auth::{Claims, Verifier, mint, now_secs};
use crate::config::{Config, Namespace};
use crate::engine::memory::MemoryStore;
use crate::error::close;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, outbox};

const SECRET: &str = "a-session-test-secret-of-32-bytes!";

fn context(tweak: impl FnOnce(&mut Config)) -> Arc<Context> {
    let mut config = Config::default();
    let mut team = config.namespaces[0].clone();
    team.name = "team".into();
    team.options.private = true;
    team.options.join_leave = false;
    config.namespaces.push(Namespace { ..team });
    tweak(&mut config);
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    Arc::new(Context {
        hub: Arc::new(Hub::new(
            config.clone(),
            metrics.clone(),
            Arc::new(MemoryStore::new()),
        )),
        verifier: Verifier::new(&config.auth, SECRET).unwrap(),
        admission: Admission::new(&config.limits, metrics),
        config,
        rpc: Default::default(),
    })
}

fn token(user: &str, channels: &[&str]) -> String {
    let claims = Claims {
        sub: user.into(),
        exp: now_secs() + 3600,
        info: None,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        roles: Vec::new(),
        publish: Vec::new(),
    };
    mint(SECRET, &claims).unwrap()
}

/// A session and its outbox.
fn session(ctx: &Arc<Context>) -> (Session, Outbox) {
    let (handle, outbox) = outbox(
        ctx.hub.next_client_id(),
        1000,
        1 << 20,
        ctx.hub.metrics().clone(),
    );
    let peer = IpAddr::from([127, 0, 0, 1]);
    let slot = ctx.admission.pending(peer).unwrap();
    (Session::new(ctx.clone(), handle, slot, peer), outbox)
}

/// What the session queued so far.
fn drain(outbox: &mut Outbox) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(message) = outbox.try_recv() {
        out.push(serde_json::from_slice(&message.payload()).unwrap());
    }
    out
}

async fn send(session: &mut Session, outbox: &mut Outbox, command: Value) -> Vec<Value> {
    session.handle(&command.to_string()).await.unwrap();
    drain(outbox)
}

#[tokio::test]
async fn connect_comes_first_then_once() {
    let ctx = context(|_| {});
    let (mut s, mut out) = session(&ctx);
    let replies = send(&mut s, &mut out, json!({"id": 1, "cmd": "ping"})).await;
    assert_eq!(replies[0]["error"]["code"], 110);
    assert!(!s.is_connected());
    let replies = send(
        &mut s,
        &mut out,
        json!({"id": 2, "cmd": "connect", "token": token("ann", &[])}),
    )
    .await;
    assert_eq!(replies.len(), 1, "one reply: {replies:?}");
    assert_eq!(replies[0]["result"]["user"], "ann");
    assert!(replies[0]["result"]["mailbox_epoch"].is_string());
    assert!(s.is_connected());
    let replies = send(
        &mut s,
        &mut out,
        json!({"id": 3, "cmd": "connect", "token": token("ann", &[])}),
    )
    .await;
    assert_eq!(replies[0]["error"]["code"], 112);
}

#[tokio::test]
async fn a_refused_connect_closes_with_the_code_of_its_error() {
    let ctx = context(|c| c.limits.connections_per_user = 1);
    for (token, code, close) in [
        ("not-a-token".to_owned(), 101, close::UNAUTHORIZED),
        (String::new(), 101, close::UNAUTHORIZED),
    ] {
        let (mut s, mut out) = session(&ctx);
        let command = if token.is_empty() {
            json!({"id": 1, "cmd": "connect"})
        } else {
            json!({"id": 1, "cmd": "connect", "token": token})
        };
        let end = s.handle(&command.to_string()).await.unwrap_err();
        assert_eq!(end.code, close);
        assert_eq!(drain(&mut out)[0]["error"]["code"], code);
    }
    // The user's one slot taken: 118, then 1013.
    let (mut first, mut first_out) = session(&ctx);
    send(
        &mut first,
        &mut first_out,
        json!({"id": 1, "cmd": "connect", "token": token("bo", &[])}),
    )
    .await;
    let (mut second, mut out) = session(&ctx);
    let end = second
        .handle(&json!({"id": 1, "cmd": "connect", "token": token("bo", &[])}).to_string())
        .await
        .unwrap_err();
    assert_eq!(end.code, close::TRY_AGAIN_LATER);
    assert_eq!(drain(&mut out)[0]["error"]["code"], 118);
    // Its slot comes back when the session goes.
    drop(first);
    let (mut third, mut out) = session(&ctx);
    let replies = send(
        &mut third,
        &mut out,
        json!({"id": 1, "cmd": "connect", "token": token("bo", &[])}),
    )
    .await;
    assert!(replies[0].get("result").is_some(), "{replies:?}");
}

#[tokio::test]
async fn the_command_rate_refuses_then_closes() {
    let ctx = context(|c| {
        c.limits.command_burst = 3;
        c.limits.commands_per_second = 1;
        c.limits.rate_strikes = 2;
    });
    let (mut s, mut out) = session(&ctx);
    send(
        &mut s,
        &mut out,
        json!({"id": 1, "cmd": "connect", "token": token("cy", &[])}),
    )
    .await;
    send(&mut s, &mut out, json!({"id": 2, "cmd": "ping"})).await;
    send(&mut s, &mut out, json!({"id": 3, "cmd": "ping"})).await;
    let replies = send(&mut s, &mut out, json!({"id": 4, "cmd": "ping"})).await;
    assert_eq!(replies[0]["error"]["code"], 111);
    let end = s
        .handle(&json!({"id": 5, "cmd": "ping"}).to_string())
        .await
        .unwrap_err();
    assert_eq!(end.code, close::RATE_LIMIT);
}

#[tokio::test]
async fn refresh_ends_private_subscriptions_the_new_token_drops() {
    let ctx = context(|_| {});
    let (mut s, mut out) = session(&ctx);
    send(
        &mut s,
        &mut out,
        json!({"id": 1, "cmd": "connect", "token": token("di", &["team:a", "team:b"])}),
    )
    .await;
    for channel in ["team:a", "team:b", "chat:open"] {
        let replies = send(
            &mut s,
            &mut out,
            json!({"id": 2, "cmd": "subscribe", "channel": channel}),
        )
        .await;
        assert!(
            replies.iter().any(|r| r.get("result").is_some()),
            "{channel}: {replies:?}"
        );
    }
    let replies = send(
        &mut s,
        &mut out,
        json!({"id": 3, "cmd": "refresh", "token": token("di", &["team:a"])}),
    )
    .await;
    assert!(replies[0]["result"]["expires"].is_u64(), "{replies:?}");
    let pushes: Vec<&Value> = replies
        .iter()
        .filter(|r| r["push"] == "unsubscribe")
        .collect();
    assert_eq!(pushes.len(), 1, "{replies:?}");
    assert_eq!(pushes[0]["channel"], "team:b");
    let replies = send(
        &mut s,
        &mut out,
        json!({"id": 4, "cmd": "unsubscribe", "channel": "team:b"}),
    )
    .await;
    assert_eq!(replies[0]["error"]["code"], 113, "no longer subscribed");
    // Another user's token is refused, and the connection stays.
    let replies = send(
        &mut s,
        &mut out,
        json!({"id": 5, "cmd": "refresh", "token": token("eve", &[])}),
    )
    .await;
    assert_eq!(replies[0]["error"]["code"], 101);
    assert!(s.is_connected());
}

#[tokio::test]
async fn close_answers_then_ends_even_before_connect() {
    let ctx = context(|_| {});
    let (mut s, mut out) = session(&ctx);
    let end = s
        .handle(&json!({"id": 9, "cmd": "close"}).to_string())
        .await
        .unwrap_err();
    assert_eq!(end.code, close::NORMAL);
    let replies = drain(&mut out);
    assert_eq!(replies, [json!({"id": 9, "result": {}})]);
}

#[tokio::test]
async fn payloads_are_bounded_in_size_and_in_bytes_per_second() {
    let ctx = context(|c| {
        c.limits.max_payload_size = 100;
        c.limits.max_message_size = 1000;
        c.limits.publish_bytes_per_second = 1;
        c.limits.publish_bytes_burst = 250;
    });
    let (mut s, mut out) = session(&ctx);
    send(
        &mut s,
        &mut out,
        json!({"id": 1, "cmd": "connect", "token": token("fe", &[])}),
    )
    .await;
    let big = "x".repeat(120);
    let replies = send(
        &mut s,
        &mut out,
        json!({"id": 2, "cmd": "publish", "channel": "chat:q", "data": big}),
    )
    .await;
    assert_eq!(replies[0]["error"]["code"], 114);
    let fits = "y".repeat(90);
    for id in 3..5 {
        send(
            &mut s,
            &mut out,
            json!({"id": id, "cmd": "publish", "channel": "chat:q", "data": fits}),
        )
        .await;
    }
    let replies = send(
        &mut s,
        &mut out,
        json!({"id": 5, "cmd": "publish", "channel": "chat:q", "data": fits}),
    )
    .await;
    let refused = replies.iter().find(|r| r["id"] == 5).unwrap();
    assert_eq!(refused["error"]["code"], 111, "{replies:?}");
}
