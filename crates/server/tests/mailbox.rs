//! Private messages: delivered to every connection of an online user, kept in the
//! offline mailbox otherwise and delivered in order, once acknowledged never again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Client, start};

/// The private messages a client got right after its connect reply.
async fn messages_after_connect(client: &mut Client) -> Vec<Value> {
    client.barrier().await;
    let pushes = client.take_pushes();
    for push in &pushes {
        assert_eq!(push["push"], "message", "{push}");
    }
    pushes
}

#[tokio::test]
async fn offline_messages_are_stored_then_delivered_in_order_once_acked() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut ids = Vec::new();
    for n in 1..=2 {
        let reply = alice
            .ok(json!({"cmd": "send", "user": "carol", "data": {"n": n}}))
            .await;
        assert_eq!(reply["status"], "stored", "{reply}");
        ids.push(reply["mailbox"].as_u64().unwrap());
    }
    let reply = server
        .api_ok("send", json!({"user": "carol", "data": {"n": 3}}))
        .await;
    assert_eq!(reply["status"], "stored", "{reply}");
    ids.push(reply["mailbox"].as_u64().unwrap());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let mut carol = server.client("carol").await;
    let messages = messages_after_connect(&mut carol).await;
    let got: Vec<(u64, Value)> = messages
        .iter()
        .map(|m| (m["mailbox"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    let expected: Vec<(u64, Value)> = ids
        .iter()
        .zip(1..)
        .map(|(&id, n)| (id, json!({"n": n})))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(messages[0]["from"]["user"], "alice");
    assert_eq!(messages[0]["from"]["client"], alice.hello["client"]);
    assert!(
        messages[2].get("from").is_none(),
        "sent by the server API: {}",
        messages[2]
    );

    // Not acknowledged: a new connection gets them again.
    carol.close().await;
    let mut carol = server.client("carol").await;
    assert_eq!(messages_after_connect(&mut carol).await.len(), 3);

    // Acknowledged up to the last id: never again.
    carol.ok(json!({"cmd": "ack", "mailbox": ids[2]})).await;
    carol.close().await;
    let mut carol = server.client("carol").await;
    assert_eq!(
        messages_after_connect(&mut carol).await,
        Vec::<Value>::new()
    );
}

#[tokio::test]
async fn ack_removes_only_up_to_the_id() {
    let server = start(|_| {}).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let reply = server
            .api_ok("send", json!({"user": "carol", "data": n}))
            .await;
        ids.push(reply["mailbox"].as_u64().unwrap());
    }
    let mut carol = server.client("carol").await;
    assert_eq!(messages_after_connect(&mut carol).await.len(), 3);
    carol.ok(json!({"cmd": "ack", "mailbox": ids[1]})).await;
    carol.close().await;
    let mut carol = server.client("carol").await;
    let left = messages_after_connect(&mut carol).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0]["mailbox"].as_u64(), left[0]["data"].clone()),
        (Some(ids[2]), json!(3))
    );
}

#[tokio::test]
async fn online_user_gets_it_on_every_connection() {
    let server = start(|_| {}).await;
    let mut c1 = server.client("carol").await;
    let mut c2 = server.client("carol").await;
    let mut alice = server.client("alice").await;
    let reply = alice
        .ok(json!({"cmd": "send", "user": "carol", "data": "hi"}))
        .await;
    assert_eq!(reply["status"], "delivered", "{reply}");
    let reply = server
        .api_ok("send", json!({"user": "carol", "data": "from api"}))
        .await;
    assert_eq!(reply["status"], "delivered", "{reply}");
    for carol in [&mut c1, &mut c2] {
        let first = carol.next_push().await;
        assert_eq!(
            (first["push"].clone(), first["data"].clone()),
            (json!("message"), json!("hi"))
        );
        assert_eq!(first["from"]["user"], "alice");
        let second = carol.next_push().await;
        assert_eq!(second["data"], "from api");
        assert!(first["mailbox"].as_u64() < second["mailbox"].as_u64());
    }
    // The sender's other connections do not get it.
    alice.barrier().await;
    assert_eq!(alice.take_pushes(), Vec::<Value>::new());
}

#[tokio::test]
async fn anonymous_users_cannot_send() {
    let server = start(|c| c.allow_anonymous = true).await;
    let mut anon = Client::connect(server.addr, None).await;
    let (code, _) = anon
        .err(json!({"cmd": "send", "user": "carol", "data": 1}))
        .await;
    assert_eq!(code, 103);
}

/// Issue 10, point 5: users filling someone's mailbox get 115, and the server API's
/// messages have room of their own (`mailbox.server_size`), so a backend's message to
/// that user is still stored; the API is refused (507) only past its own bound.
#[tokio::test]
async fn full_mailbox_of_an_offline_user_is_115() {
    let server = start(|c| {
        c.mailbox.size = 2;
        c.mailbox.server_size = 1;
    })
    .await;
    let mut alice = server.client("alice").await;
    for n in 1..=2 {
        alice
            .ok(json!({"cmd": "send", "user": "carol", "data": n}))
            .await;
    }
    let (code, _) = alice
        .err(json!({"cmd": "send", "user": "carol", "data": 3}))
        .await;
    assert_eq!(code, 115);
    let reply = server
        .api_ok("send", json!({"user": "carol", "data": "from the backend"}))
        .await;
    assert_eq!(reply["status"], "stored");
    let (status, reply) = server
        .api("send", json!({"user": "carol", "data": "one too many"}))
        .await;
    assert_eq!((status, reply["error"]["code"].clone()), (507, json!(115)));
    let mut carol = server.client("carol").await;
    let messages = messages_after_connect(&mut carol).await;
    let data: Vec<Value> = messages.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, [json!(1), json!(2), json!("from the backend")]);
}

/// Issue 10, point 5: one sender fills only their share of a mailbox
/// (`mailbox.per_sender`); others still reach the user.
#[tokio::test]
async fn one_sender_cannot_fill_someone_elses_mailbox() {
    let server = start(|c| c.mailbox.per_sender = 3).await;
    let mut spammer = server.client("spammer").await;
    for n in 1..=3 {
        spammer
            .ok(json!({"cmd": "send", "user": "dora", "data": n}))
            .await;
    }
    let (code, message) = spammer
        .err(json!({"cmd": "send", "user": "dora", "data": 4}))
        .await;
    assert_eq!(code, 115, "{message}");
    let mut friend = server.client("friend").await;
    friend
        .ok(json!({"cmd": "send", "user": "dora", "data": "hi"}))
        .await;
    let mut dora = server.client("dora").await;
    let messages = messages_after_connect(&mut dora).await;
    let data: Vec<Value> = messages.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, [json!(1), json!(2), json!(3), json!("hi")]);
}

#[tokio::test]
async fn expired_mailbox_messages_are_not_delivered() {
    let server = start(|c| c.mailbox.ttl = Duration::from_millis(200)).await;
    server
        .api_ok("send", json!({"user": "carol", "data": "old"}))
        .await;
    // The message ages past its TTL (unacknowledged, it comes with every connect until
    // then).
    crate::util::bounded("the message to expire", async {
        loop {
            let mut carol = server.client("carol").await;
            if messages_after_connect(&mut carol).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server
        .api_ok("send", json!({"user": "carol", "data": "new"}))
        .await;
    let mut carol = server.client("carol").await;
    let messages = messages_after_connect(&mut carol).await;
    let data: Vec<Value> = messages.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, [json!("new")]);
}

/// The mailbox bound is for offline users: a user who is online gets every message at
/// once, however many unacknowledged ones are kept for their other devices.
#[tokio::test]
async fn a_full_mailbox_does_not_refuse_an_online_user() {
    let server = start(|c| c.mailbox.size = 2).await;
    let mut carol = server.client("carol").await;
    let mut alice = server.client("alice").await;
    for n in 1..=3 {
        let reply = alice
            .cmd(json!({"cmd": "send", "user": "carol", "data": n}))
            .await;
        assert_eq!(
            reply["result"]["status"], "delivered",
            "message {n}: {reply}"
        );
    }
    for n in 1..=3 {
        assert_eq!(carol.next_push().await["data"], n);
    }
}
