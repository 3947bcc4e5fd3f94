//! Subscribe, publish, unsubscribe, and every error path of the commands: permissions,
//! channel names, private channels, malformed frames, size limits and the rate limit.

use serde_json::json;
use switchboard_server::config::{Namespace, NamespaceOptions};
use switchboard_ws::Message;

use crate::util::{Client, start, token};

#[tokio::test]
async fn every_subscriber_gets_each_publication_with_increasing_offsets() {
    let server = start(|_| {}).await;
    let alice_token = token("alice", Some(json!({"name": "Alice"})), &[], 3600);
    let mut alice = Client::connect(server.addr, Some(&alice_token)).await;
    let mut bob = server.client("bob").await;
    let sub_a = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:room"}))
        .await;
    let sub_b = bob
        .ok(json!({"cmd": "subscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(sub_a["offset"], 0);
    assert_eq!(sub_a["recoverable"], true);
    assert_eq!(sub_a["epoch"], sub_b["epoch"]);
    let epoch = sub_a["epoch"].clone();

    for i in 1..=3u64 {
        let position = alice
            .ok(json!({"cmd": "publish", "channel": "chat:room", "data": {"n": i}}))
            .await;
        assert_eq!(position, json!({"offset": i, "epoch": epoch}));
    }
    let alice_client = alice.hello["client"].clone();
    for client in [&mut alice, &mut bob] {
        for i in 1..=3u64 {
            let push = client.next_publication().await;
            assert_eq!(push["push"], "publication", "{push}");
            assert_eq!(push["channel"], "chat:room");
            assert_eq!(push["epoch"], epoch);
            assert_eq!(push["offset"], i);
            assert_eq!(push["data"], json!({"n": i}));
            assert_eq!(push["info"]["user"], "alice");
            assert_eq!(push["info"]["client"], alice_client);
            assert_eq!(push["info"]["info"], json!({"name": "Alice"}));
        }
    }

    // After unsubscribing, bob gets nothing more: the next push he sees is from the
    // channel he is still in.
    bob.ok(json!({"cmd": "unsubscribe", "channel": "chat:room"}))
        .await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:other"}))
        .await;
    alice
        .ok(json!({"cmd": "publish", "channel": "chat:room", "data": 4}))
        .await;
    server.publish("chat:other", json!("other")).await;
    let push = bob.next_publication().await;
    assert_eq!(
        (push["channel"].clone(), push["data"].clone()),
        (json!("chat:other"), json!("other"))
    );
}

#[tokio::test]
async fn publish_where_the_namespace_forbids_is_103() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    for channel in ["feed:web-1", "metrics:host", "plain"] {
        let (code, message) = client
            .err(json!({"cmd": "publish", "channel": channel, "data": 1}))
            .await;
        assert_eq!(code, 103, "{channel}: {message}");
    }
    // Subscribing there is fine, and the server API may publish.
    client
        .ok(json!({"cmd": "subscribe", "channel": "feed:web-1"}))
        .await;
    server.publish("feed:web-1", json!("line")).await;
    assert_eq!(client.next_push().await["data"], "line");
}

#[tokio::test]
async fn unknown_namespace_and_invalid_names_are_102() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    let long = "a".repeat(256);
    for channel in ["nope:x", "bad channel", "chat:ünï", "", long.as_str()] {
        for cmd in ["subscribe", "publish", "history"] {
            let (code, message) = client
                .err(json!({"cmd": cmd, "channel": channel, "data": 1}))
                .await;
            assert_eq!(code, 102, "{cmd} {channel:?}: {message}");
        }
    }
}

#[tokio::test]
async fn double_subscribe_is_105_and_unsubscribe_when_not_subscribed_is_113() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    client
        .ok(json!({"cmd": "subscribe", "channel": "chat:a"}))
        .await;
    let (code, _) = client
        .err(json!({"cmd": "subscribe", "channel": "chat:a"}))
        .await;
    assert_eq!(code, 105);
    client
        .ok(json!({"cmd": "unsubscribe", "channel": "chat:a"}))
        .await;
    let (code, _) = client
        .err(json!({"cmd": "unsubscribe", "channel": "chat:a"}))
        .await;
    assert_eq!(code, 113);
    let (code, _) = client
        .err(json!({"cmd": "unsubscribe", "channel": "chat:never"}))
        .await;
    assert_eq!(code, 113);
}

#[tokio::test]
async fn too_many_subscriptions_is_106() {
    let server = start(|c| c.limits.max_subscriptions = 2).await;
    let mut client = server.client("alice").await;
    client
        .ok(json!({"cmd": "subscribe", "channel": "chat:1"}))
        .await;
    client
        .ok(json!({"cmd": "subscribe", "channel": "chat:2"}))
        .await;
    let (code, _) = client
        .err(json!({"cmd": "subscribe", "channel": "chat:3"}))
        .await;
    assert_eq!(code, 106);
}

#[tokio::test]
async fn private_channels_need_the_token_claim() {
    let server = start(|c| {
        c.namespaces.push(Namespace {
            name: "secret".into(),
            options: NamespaceOptions {
                private: true,
                roles: Vec::new(),
                publish: true,
                ..NamespaceOptions::default()
            },
        })
    })
    .await;
    let claim = token("alice", None, &["secret:a"], 3600);
    let mut alice = Client::connect(server.addr, Some(&claim)).await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "secret:a"}))
        .await;
    let (code, _) = alice
        .err(json!({"cmd": "subscribe", "channel": "secret:b"}))
        .await;
    assert_eq!(code, 103);
    let mut bob = server.client("bob").await;
    let (code, _) = bob
        .err(json!({"cmd": "subscribe", "channel": "secret:a"}))
        .await;
    assert_eq!(code, 103);
    let server_anon = start(|c| {
        c.allow_anonymous = true;
        c.namespaces.push(Namespace {
            name: "secret".into(),
            options: NamespaceOptions {
                private: true,
                roles: Vec::new(),
                ..NamespaceOptions::default()
            },
        })
    })
    .await;
    let mut anon = Client::connect(server_anon.addr, None).await;
    let (code, _) = anon
        .err(json!({"cmd": "subscribe", "channel": "secret:a"}))
        .await;
    assert_eq!(code, 103);
}

#[tokio::test]
async fn bad_json_is_107_and_the_connection_stays() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    for bad in [
        "{",
        "[1,2]",
        "\"text\"",
        "{\"id\": \"one\", \"cmd\": \"ping\"}",
    ] {
        client.send_text(bad).await;
        let reply = client.next_reply().await;
        assert_eq!(reply["error"]["code"], 107, "{bad} -> {reply}");
        assert_eq!(reply["id"], serde_json::Value::Null, "{bad} -> {reply}");
    }
    client.barrier().await;
}

#[tokio::test]
async fn unknown_cmd_is_104_and_missing_fields_are_107_naming_them() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    let (code, _) = client.err(json!({"cmd": "fly"})).await;
    assert_eq!(code, 104);
    let cases = [
        (json!({}), "cmd"),
        (json!({"cmd": "subscribe"}), "channel"),
        (json!({"cmd": "publish", "channel": "chat:a"}), "data"),
        (json!({"cmd": "publish", "data": 1}), "channel"),
        (json!({"cmd": "send", "data": 1}), "user"),
        (json!({"cmd": "send", "user": "bob"}), "data"),
        (json!({"cmd": "ack"}), "mailbox"),
        (json!({"cmd": "refresh"}), "token"),
    ];
    for (command, field) in cases {
        let (code, message) = client.err(command.clone()).await;
        assert_eq!(code, 107, "{command}");
        assert!(
            message.contains(&format!("\"{field}\"")),
            "{command}: {message}"
        );
    }
    client.barrier().await;
}

#[tokio::test]
async fn oversized_payload_is_114_and_the_connection_stays() {
    let server = start(|c| {
        c.limits.max_payload_size = 100;
        c.limits.max_message_size = 1000;
    })
    .await;
    let mut client = server.client("alice").await;
    let big = "x".repeat(200);
    let (code, _) = client
        .err(json!({"cmd": "publish", "channel": "chat:a", "data": big}))
        .await;
    assert_eq!(code, 114);
    let (code, _) = client
        .err(json!({"cmd": "send", "user": "bob", "data": big}))
        .await;
    assert_eq!(code, 114);
    client
        .ok(json!({"cmd": "publish", "channel": "chat:a", "data": "small"}))
        .await;
}

#[tokio::test]
async fn frame_over_max_message_size_closes_1009() {
    let server = start(|c| {
        c.limits.max_payload_size = 100;
        c.limits.max_message_size = 1000;
    })
    .await;
    let mut client = server.client("alice").await;
    let huge = json!({"id": 9, "cmd": "publish", "channel": "chat:a", "data": "y".repeat(2000)});
    client.send_text(&huge.to_string()).await;
    assert_eq!(client.expect_close().await.0, 1009);
}

#[tokio::test]
async fn binary_frame_is_107_and_the_connection_stays() {
    let server = start(|_| {}).await;
    let mut client = server.client("alice").await;
    client
        .send(&Message::binary(&b"{\"cmd\":\"ping\"}"[..]))
        .await;
    let reply = client.next_reply().await;
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    client.barrier().await;
}

#[tokio::test]
async fn rate_limit_answers_111_then_closes_4005() {
    let server = start(|c| {
        c.limits.command_burst = 5;
        c.limits.commands_per_second = 1;
        c.limits.rate_strikes = 3;
    })
    .await;
    // `connect` takes the first token of the burst.
    let mut client = server.client("alice").await;
    let ids: Vec<u64> = {
        let mut ids = Vec::new();
        for _ in 0..7 {
            ids.push(client.send_cmd(json!({"cmd": "ping"})).await);
        }
        ids
    };
    for &id in &ids[..4] {
        let reply = client.reply(id).await;
        assert!(reply.get("result").is_some(), "{reply}");
    }
    for &id in &ids[4..6] {
        let reply = client.reply(id).await;
        assert_eq!(reply["error"]["code"], 111, "{reply}");
    }
    assert_eq!(client.expect_close().await.0, 4005);
}

/// A connection does not wait for one publication's commit before reading its next
/// command: publications sent back to back are all acknowledged, in the order they were
/// sent (offsets follow the commands), and a command sent after them is answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_sent_back_to_back_keep_their_order() {
    const COUNT: u64 = 150;
    let server = start(|c| c.limits.command_burst = 400).await;
    let mut watcher = server.client("watcher").await;
    watcher
        .ok(json!({"cmd": "subscribe", "channel": "vote:burst"}))
        .await;
    let mut publisher = server.client("publisher").await;
    let mut ids = Vec::new();
    for i in 0..COUNT {
        ids.push(
            publisher
                .send_cmd(json!({"cmd": "publish", "channel": "vote:burst", "data": i}))
                .await,
        );
    }
    let ping = publisher.send_cmd(json!({"cmd": "ping"})).await;
    for (i, id) in ids.iter().enumerate() {
        let reply = publisher.reply(*id).await;
        assert_eq!(reply["result"]["offset"], json!(i as u64 + 1), "{reply}");
    }
    assert!(publisher.reply(ping).await.get("result").is_some());
    for i in 0..COUNT {
        let push = watcher.next_publication().await;
        assert_eq!(
            (push["offset"].clone(), push["data"].clone()),
            (json!(i + 1), json!(i))
        );
    }
}

/// Publications are written to subscribers by the channel's deliverer, after their
/// release. A client that subscribes while earlier publications are still being
/// delivered gets exactly those after the offset in its subscribe reply: none of the
/// earlier ones, no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_joining_mid_stream_gets_exactly_what_follows_its_offset() {
    const COUNT: u64 = 400;
    let server = start(|c| c.limits.command_burst = 1000).await;
    let mut crowd = Vec::new();
    for i in 0..300 {
        let mut c = server.client(&format!("crowd-{i}")).await;
        c.ok(json!({"cmd": "subscribe", "channel": "vote:stream"}))
            .await;
        crowd.push(c);
    }
    let mut publisher = server.client("publisher").await;
    let mut late = server.client("late").await;
    let mut ids = Vec::new();
    for i in 0..COUNT {
        ids.push(
            publisher
                .send_cmd(json!({"cmd": "publish", "channel": "vote:stream", "data": i}))
                .await,
        );
        if i == COUNT / 3 {
            // Let some of them be acknowledged first.
            publisher.reply(ids[0]).await;
        }
    }
    let joined = late
        .ok(json!({"cmd": "subscribe", "channel": "vote:stream"}))
        .await;
    let from = joined["offset"].as_u64().expect("offset");
    // The first was awaited above.
    for id in &ids[1..] {
        publisher.reply(*id).await;
    }
    for offset in from + 1..=COUNT {
        let push = late.next_publication().await;
        assert_eq!(push["offset"], json!(offset), "after joining at {from}");
    }
    late.barrier().await;
    assert!(late.take_pushes().is_empty(), "a publication came twice");
    for c in &mut crowd {
        for offset in 1..=COUNT {
            assert_eq!(c.next_publication().await["offset"], json!(offset));
        }
    }
}

/// A token with `roles` and `publish` scopes.
fn scoped(user: &str, roles: &[&str], channels: &[&str], publish: &[&str]) -> String {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    switchboard_server::auth::mint(
        crate::util::TOKEN_SECRET,
        &switchboard_server::auth::Claims {
            sub: user.into(),
            exp: switchboard_server::auth::now_secs() + 600,
            info: None,
            channels: owned(channels),
            roles: owned(roles),
            publish: owned(publish),
        },
    )
    .expect("mint")
}

#[tokio::test]
async fn logs_and_metrics_are_for_admins_and_publish_scopes() {
    let server = start(|_| {}).await;
    // An agent's token: its host's channels to publish, its metrics channel to watch.
    let agent_token = scoped(
        "agent:web1",
        &["agent"],
        &["metrics:web1"],
        &["metrics:web1", "logs:web1:*"],
    );
    let mut agent = Client::connect(server.addr, Some(&agent_token)).await;
    let mut admin = Client::connect(server.addr, Some(&scoped("root", &["admin"], &[], &[]))).await;
    let mut alice = server.client("alice").await;

    // Nobody but an administrator (or a token naming the channel) reads them.
    for channel in ["logs:web1:syslog", "metrics:web1"] {
        let (code, _) = alice
            .err(json!({"cmd": "subscribe", "channel": channel}))
            .await;
        assert_eq!(code, 103, "{channel}");
        admin
            .ok(json!({"cmd": "subscribe", "channel": channel}))
            .await;
    }
    let (code, _) = agent
        .err(json!({"cmd": "subscribe", "channel": "logs:web1:syslog"}))
        .await;
    assert_eq!(code, 103, "an agent writes its logs, it does not read them");
    agent
        .ok(json!({"cmd": "subscribe", "channel": "metrics:web1"}))
        .await;

    // The agent publishes within its scopes only; nobody else may publish there.
    agent
        .ok(json!({"cmd": "publish", "channel": "logs:web1:syslog", "data": "a line"}))
        .await;
    assert_eq!(admin.next_publication().await["data"], "a line");
    agent
        .ok(json!({"cmd": "publish", "channel": "metrics:web1", "data": {"cpu": 1}}))
        .await;
    for channel in ["logs:web2:syslog", "metrics:web2", "logs:web10:x", "feed:x"] {
        let (code, message) = agent
            .err(json!({"cmd": "publish", "channel": channel, "data": 1}))
            .await;
        assert_eq!(code, 103, "{channel}: {message}");
    }
    for client in [&mut alice, &mut admin] {
        let (code, _) = client
            .err(json!({"cmd": "publish", "channel": "logs:web1:syslog", "data": 1}))
            .await;
        assert_eq!(code, 103);
    }
    // The agent sees who watches its host: presence on metrics:HOST.
    let presence = agent
        .ok(json!({"cmd": "presence", "channel": "metrics:web1"}))
        .await;
    let users = presence["presence"].as_object().expect("presence");
    assert!(
        users.contains_key("root") && users.contains_key("agent:web1"),
        "{presence}"
    );
}
