//! History (latest N, since a position), presence (several connections of one user,
//! anonymous users) and join/leave pushes.

use serde_json::{Value, json};

use crate::util::{Client, Server, start, token};

fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect()
}

#[tokio::test]
async fn history_latest_n_and_since_a_position() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    let empty = client
        .ok(json!({"cmd": "history", "channel": "chat:h"}))
        .await;
    assert_eq!(empty["offset"], 0);
    assert_eq!(offsets(&empty["publications"]), Vec::<u64>::new());
    for i in 1..=5 {
        client
            .ok(json!({"cmd": "publish", "channel": "chat:h", "data": {"n": i}}))
            .await;
    }
    let all = client
        .ok(json!({"cmd": "history", "channel": "chat:h"}))
        .await;
    assert_eq!(offsets(&all["publications"]), [1, 2, 3, 4, 5]);
    assert_eq!(all["publications"][0]["data"], json!({"n": 1}));
    assert_eq!(all["publications"][0]["info"]["user"], "alice");
    assert_eq!(all["offset"], 5);
    let epoch = all["epoch"].clone();

    let latest = client
        .ok(json!({"cmd": "history", "channel": "chat:h", "limit": 2}))
        .await;
    assert_eq!(offsets(&latest["publications"]), [4, 5]);

    let since = client
        .ok(json!({"cmd": "history", "channel": "chat:h", "since": {"offset": 2, "epoch": epoch}}))
        .await;
    assert_eq!(offsets(&since["publications"]), [3, 4, 5]);
    assert_eq!(since["complete"], true);

    let since_limited = client
        .ok(json!({"cmd": "history", "channel": "chat:h", "limit": 2,
                   "since": {"offset": 2, "epoch": epoch}}))
        .await;
    assert_eq!(offsets(&since_limited["publications"]), [3, 4]);

    let other_epoch = client
        .ok(json!({"cmd": "history", "channel": "chat:h", "since": {"offset": 2, "epoch": "stale"}}))
        .await;
    assert_eq!(other_epoch["complete"], false);
    assert_eq!(offsets(&other_epoch["publications"]), Vec::<u64>::new());
}

#[tokio::test]
async fn history_is_bounded_by_history_size() {
    let server = start(|c| c.namespaces[0].options.history_size = 3).await;
    assert_eq!(server.publish("chat:b", json!(1)).await, 1);
    for i in 2..=10 {
        assert_eq!(server.publish("chat:b", json!(i)).await, i);
    }
    let mut client = server.client("alice").await;
    let history = client
        .ok(json!({"cmd": "history", "channel": "chat:b"}))
        .await;
    assert_eq!(offsets(&history["publications"]), [8, 9, 10]);
    let epoch = history["epoch"].clone();
    let since = client
        .ok(json!({"cmd": "history", "channel": "chat:b", "since": {"offset": 2, "epoch": epoch}}))
        .await;
    assert_eq!(since["complete"], false, "{since}");
}

#[tokio::test]
async fn history_and_presence_off_are_108() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    // The default namespace keeps no history; `vote` has no presence.
    let (code, _) = client
        .err(json!({"cmd": "history", "channel": "plain"}))
        .await;
    assert_eq!(code, 108);
    client
        .ok(json!({"cmd": "subscribe", "channel": "vote:poll-7"}))
        .await;
    let (code, _) = client
        .err(json!({"cmd": "presence", "channel": "vote:poll-7"}))
        .await;
    assert_eq!(code, 108);
    let (status, reply) = server
        .api("presence", json!({"channel": "vote:poll-7"}))
        .await;
    assert_eq!((status, reply["error"]["code"].clone()), (400, json!(108)));
    // Presence over the client protocol needs a subscription.
    let (code, _) = client
        .err(json!({"cmd": "presence", "channel": "chat:x"}))
        .await;
    assert_eq!(code, 113);
}

#[tokio::test]
async fn presence_counts_connections_per_user() {
    let server = start(|_| {}).await;
    let alice_token = token("alice", Some(json!({"name": "Alice"})), &[], 3600);
    let mut a1 = Client::connect(server.addr, Some(&alice_token)).await;
    let mut a2 = Client::connect(server.addr, Some(&alice_token)).await;
    let mut bob = server.client("bob").await;
    for c in [&mut a1, &mut a2, &mut bob] {
        c.ok(json!({"cmd": "subscribe", "channel": "chat:p"})).await;
    }
    let presence = bob
        .ok(json!({"cmd": "presence", "channel": "chat:p"}))
        .await["presence"]
        .clone();
    let entries = presence.as_object().unwrap();
    assert_eq!(entries.len(), 2, "{presence}");
    assert_eq!(presence["alice"]["user"], "alice");
    assert_eq!(presence["alice"]["connections"], 2);
    assert_eq!(presence["alice"]["info"], json!({"name": "Alice"}));
    assert_eq!(presence["bob"]["connections"], 1);

    a1.ok(json!({"cmd": "unsubscribe", "channel": "chat:p"}))
        .await;
    let presence = bob
        .ok(json!({"cmd": "presence", "channel": "chat:p"}))
        .await["presence"]
        .clone();
    assert_eq!(presence["alice"]["connections"], 1);
    drop(a2);
    // The server API sees the same; a2's drop is seen once its session ended.
    crate::util::eventually("alice to leave the presence", || async {
        let reply = server
            .api_ok("presence", json!({"channel": "chat:p"}))
            .await;
        reply["presence"].get("alice").is_none()
    })
    .await;
}

#[tokio::test]
async fn anonymous_connections_are_separate_presence_entries() {
    let server = start(|c| c.allow_anonymous = true).await;
    let mut x = Client::connect(server.addr, None).await;
    let mut y = Client::connect(server.addr, None).await;
    x.ok(json!({"cmd": "subscribe", "channel": "chat:anon"}))
        .await;
    y.ok(json!({"cmd": "subscribe", "channel": "chat:anon"}))
        .await;
    let reply = x
        .ok(json!({"cmd": "presence", "channel": "chat:anon"}))
        .await;
    assert_eq!(reply["presence"], json!({}), "{reply}");
    let entries = reply["anonymous"].as_object().unwrap();
    assert_eq!(entries.len(), 2, "{reply}");
    for (key, entry) in entries {
        assert_eq!(entry["user"], "");
        assert_eq!(entry["connections"], 1);
        assert!(
            key == &x.hello["client"] || key == &y.hello["client"],
            "{key}"
        );
    }
}

/// Issue 10, point 11: a token whose `sub` is an anonymous connection's client id is a
/// user of its own in presence, never merged with that connection.
#[tokio::test]
async fn presence_keys_of_users_and_anonymous_connections_never_collide() {
    let server = start(|c| c.allow_anonymous = true).await;
    let mut anonymous = Client::connect(server.addr, None).await;
    anonymous
        .ok(json!({"cmd": "subscribe", "channel": "chat:keys"}))
        .await;
    let client_id = anonymous.hello["client"].as_str().unwrap().to_owned();
    let mut impostor = server.client(&client_id).await;
    impostor
        .ok(json!({"cmd": "subscribe", "channel": "chat:keys"}))
        .await;
    let reply = impostor
        .ok(json!({"cmd": "presence", "channel": "chat:keys"}))
        .await;
    assert_eq!(reply["presence"][&client_id]["user"], client_id, "{reply}");
    assert_eq!(reply["presence"][&client_id]["connections"], 1, "{reply}");
    assert_eq!(reply["anonymous"][&client_id]["user"], "", "{reply}");
    assert_eq!(reply["anonymous"][&client_id]["connections"], 1, "{reply}");
    // Each leaves on its own: the user's leave does not take the anonymous entry along.
    drop(impostor);
    crate::util::eventually("the user to leave the presence", || async {
        let reply = server
            .api_ok("presence", json!({"channel": "chat:keys"}))
            .await;
        reply["presence"].get(&client_id).is_none()
            && reply["anonymous"][&client_id]["connections"] == 1
    })
    .await;
}

/// Publishes the next step and returns the pushes the observer got before it.
async fn next_step(server: &Server, bob: &mut Client, step: &mut u64) -> Vec<Value> {
    *step += 1;
    server.publish("chat:j", json!({"step": *step})).await;
    let mut seen = Vec::new();
    loop {
        let push = bob.next_push().await;
        if push["push"] == "publication" {
            assert_eq!(push["data"]["step"], *step);
            return seen;
        }
        seen.push(push);
    }
}

/// Join comes when a user's first connection subscribes, leave when their last one goes
/// (by unsubscribing or by dropping the connection). A publication after each step shows
/// what the observer got, in order, without waiting for pushes that should not come.
#[tokio::test]
async fn join_on_first_connection_and_leave_on_last() {
    let server = start(|_| {}).await;
    let mut bob = server.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:j"}))
        .await;
    let join = bob.next_push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("bob"))
    );

    let alice_token = token("alice", Some(json!({"name": "Alice"})), &[], 3600);
    let mut a1 = Client::connect(server.addr, Some(&alice_token)).await;
    let mut a2 = Client::connect(server.addr, Some(&alice_token)).await;
    let mut step = 0;

    a1.ok(json!({"cmd": "subscribe", "channel": "chat:j"}))
        .await;
    let seen = next_step(&server, &mut bob, &mut step).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["push"], "join");
    assert_eq!(seen[0]["channel"], "chat:j");
    assert_eq!(seen[0]["info"]["user"], "alice");
    assert_eq!(seen[0]["info"]["client"], a1.hello["client"]);
    assert_eq!(seen[0]["info"]["info"], json!({"name": "Alice"}));

    a2.ok(json!({"cmd": "subscribe", "channel": "chat:j"}))
        .await;
    assert_eq!(
        next_step(&server, &mut bob, &mut step).await,
        Vec::<Value>::new(),
        "no join for a second connection"
    );

    a1.ok(json!({"cmd": "unsubscribe", "channel": "chat:j"}))
        .await;
    assert_eq!(
        next_step(&server, &mut bob, &mut step).await,
        Vec::<Value>::new(),
        "no leave while a2 is in"
    );

    // The last connection drops without unsubscribing.
    drop(a2);
    let leave = bob.next_push().await;
    assert_eq!(leave["push"], "leave", "{leave}");
    assert_eq!(leave["channel"], "chat:j");
    assert_eq!(leave["info"]["user"], "alice");
    assert_eq!(
        next_step(&server, &mut bob, &mut step).await,
        Vec::<Value>::new()
    );

    // Back again: a join, and a leave on unsubscribe.
    a1.ok(json!({"cmd": "subscribe", "channel": "chat:j"}))
        .await;
    a1.ok(json!({"cmd": "unsubscribe", "channel": "chat:j"}))
        .await;
    let seen = next_step(&server, &mut bob, &mut step).await;
    let kinds: Vec<&Value> = seen.iter().map(|p| &p["push"]).collect();
    assert_eq!(kinds, [&json!("join"), &json!("leave")]);
}

#[tokio::test]
async fn no_join_leave_where_the_namespace_turns_them_off() {
    let server = start(|_| {}).await;
    let mut bob = server.client("bob").await;
    let mut alice = server.client("alice").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "vote:v"}))
        .await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "vote:v"}))
        .await;
    alice
        .ok(json!({"cmd": "unsubscribe", "channel": "vote:v"}))
        .await;
    server.publish("vote:v", json!("after")).await;
    let push = bob.next_push().await;
    assert_eq!(
        (push["push"].clone(), push["data"].clone()),
        (json!("publication"), json!("after"))
    );
}

#[tokio::test]
async fn history_expires_after_its_ttl() {
    let server = start(|c| {
        c.namespaces[0].options.history_ttl = std::time::Duration::from_millis(200);
    })
    .await;
    let mut client = server.client("alice").await;
    client
        .ok(json!({"cmd": "subscribe", "channel": "chat:ttl"}))
        .await;
    server.publish("chat:ttl", json!(1)).await;
    server.publish("chat:ttl", json!(2)).await;
    let history = client
        .ok(json!({"cmd": "history", "channel": "chat:ttl"}))
        .await;
    assert_eq!(offsets(&history["publications"]), [1, 2]);
    let epoch = history["epoch"].clone();
    // The publications age past their TTL (polled until they have).
    let history = crate::util::bounded("the publications to expire", async {
        loop {
            let history = client
                .ok(json!({"cmd": "history", "channel": "chat:ttl"}))
                .await;
            if offsets(&history["publications"]).is_empty() {
                break history;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        history["offset"], 2,
        "the offset stays while the channel lives"
    );
    client
        .ok(json!({"cmd": "unsubscribe", "channel": "chat:ttl"}))
        .await;
    let sub = client
        .ok(json!({"cmd": "subscribe", "channel": "chat:ttl", "recover": {"offset": 0, "epoch": epoch}}))
        .await;
    assert_eq!(sub["recovered"], false, "{sub}");
}
