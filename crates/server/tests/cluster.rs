//! Several nodes as one hub over one real redis-server (issue 15): publications reach
//! subscribers on every node once and in order, recovery works on whichever node a client
//! comes back to, presence and join/leave span the nodes, private messages reach a user
//! on any node or wait in the mailbox in Redis. Skipped, with a message, where
//! redis-server is not installed (scripts/test installs it and makes it required).

use serde_json::{Value, json};
use switchboard_redis_fixture::RedisServer;

use crate::util::{Client, Poller, Server, SseClient, eventually, start_node};

/// Three nodes of one group.
async fn three_nodes(redis: &RedisServer) -> (Server, Server, Server) {
    let url = redis.url();
    (
        start_node(&url, "sb", |_| {}).await,
        start_node(&url, "sb", |_| {}).await,
        start_node(&url, "sb", |_| {}).await,
    )
}

fn offsets_and_data(pushes: &[Value]) -> Vec<(u64, Value)> {
    pushes
        .iter()
        .map(|p| (p["offset"].as_u64().expect("offset"), p["data"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_on_any_node_reaches_every_node_once_and_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c) = three_nodes(&redis).await;
    let mut subscribers = Vec::new();
    for (node, user) in [(&a, "ann"), (&b, "bob"), (&c, "cat")] {
        let mut client = node.client(user).await;
        client
            .ok(json!({"cmd": "subscribe", "channel": "chat:all"}))
            .await;
        subscribers.push(client);
    }
    // The server API of every node in turn, then a client of node b.
    let nodes = [&a, &b, &c];
    for i in 1..=30u64 {
        let offset = nodes[(i % 3) as usize]
            .publish("chat:all", json!({"i": i}))
            .await;
        assert_eq!(offset, i, "offsets are the group's, one sequence");
    }
    let reply = subscribers[1]
        .ok(json!({"cmd": "publish", "channel": "chat:all", "data": {"i": 31}}))
        .await;
    assert_eq!(reply["offset"], 31, "{reply}");
    let expected: Vec<(u64, Value)> = (1..=31).map(|i| (i, json!({"i": i}))).collect();
    for client in &mut subscribers {
        let mut got = Vec::new();
        for _ in 1..=31 {
            got.push(client.next_publication().await);
        }
        assert_eq!(offsets_and_data(&got), expected);
        let epochs: std::collections::HashSet<_> = got.iter().map(|p| p["epoch"].clone()).collect();
        assert_eq!(epochs.len(), 1, "one epoch everywhere: {epochs:?}");
        // Nothing twice: a round trip later, nothing more arrived.
        client.barrier().await;
        let extra: Vec<Value> = client
            .take_pushes()
            .into_iter()
            .filter(|p| p["push"] == "publication")
            .collect();
        assert!(extra.is_empty(), "delivered twice: {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node_exactly_what_it_missed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c) = three_nodes(&redis).await;
    let mut ann = a.client("ann").await;
    ann.ok(json!({"cmd": "subscribe", "channel": "chat:r"}))
        .await;
    for i in 1..=3 {
        b.publish("chat:r", json!({"i": i})).await;
    }
    let mut epoch = Value::Null;
    for i in 1..=3u64 {
        let push = ann.next_publication().await;
        assert_eq!(push["offset"], i);
        epoch = push["epoch"].clone();
    }
    ann.close().await;
    for i in 4..=7 {
        b.publish("chat:r", json!({"i": i})).await;
    }

    // Node c never had the channel in memory: it reads what is missed from Redis.
    let mut ann = c.client("ann").await;
    let sub = ann
        .ok(json!({"cmd": "subscribe", "channel": "chat:r", "recover": {"offset": 3, "epoch": epoch}}))
        .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["epoch"], epoch);
    assert_eq!(sub["offset"], 7);
    let missed = offsets_and_data(sub["publications"].as_array().expect("publications"));
    let expected: Vec<(u64, Value)> = (4..=7).map(|i| (i, json!({"i": i}))).collect();
    assert_eq!(missed, expected);
    a.publish("chat:r", json!({"i": 8})).await;
    let live = ann.next_publication().await;
    assert_eq!(
        (live["offset"].clone(), live["epoch"].clone()),
        (json!(8), epoch.clone())
    );

    // A position of another epoch cannot be recovered, on any node.
    let mut ben = b.client("ben").await;
    let sub = ben
        .ok(json!({"cmd": "subscribe", "channel": "chat:r", "recover": {"offset": 3, "epoch": "other"}}))
        .await;
    assert_eq!(sub["recovered"], false, "{sub}");
    assert_eq!(sub["offset"], 8);

    // History reads the same from every node.
    for node in [&a, &b, &c] {
        let history = node
            .api_ok("history", json!({"channel": "chat:r", "limit": 2}))
            .await;
        let got = offsets_and_data(history["publications"].as_array().expect("publications"));
        assert_eq!(got, vec![(7, json!({"i": 7})), (8, json!({"i": 8}))]);
        assert_eq!(history["epoch"], epoch);
    }
}

/// Pushes seen since the last call, without the replies.
fn pushes_of(client: &mut Client, kind: &str) -> Vec<Value> {
    client
        .take_pushes()
        .into_iter()
        .filter(|p| p["push"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_join_leave_span_the_nodes_and_count_users_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c) = three_nodes(&redis).await;
    let mut bob = b.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:p"}))
        .await;
    let join = bob.next_push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("bob"))
    );

    let mut ann = a.client("ann").await;
    ann.ok(json!({"cmd": "subscribe", "channel": "chat:p"}))
        .await;
    let join = bob.next_push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("ann")),
        "{join}"
    );

    // Ann's second connection, on node c: counted, not announced. A publication made on
    // node c after it is ordered after any join it would have caused.
    let mut ann2 = c.client("ann").await;
    ann2.ok(json!({"cmd": "subscribe", "channel": "chat:p"}))
        .await;
    c.publish("chat:p", json!("after")).await;
    let next = bob.next_push().await;
    assert_eq!(next["push"], "publication", "ann joined twice: {next}");

    for node in [&a, &b, &c] {
        let presence = node.api_ok("presence", json!({"channel": "chat:p"})).await;
        assert_eq!(presence["presence"]["ann"]["connections"], 2, "{presence}");
        assert_eq!(presence["presence"]["bob"]["connections"], 1, "{presence}");
    }
    let presence = bob
        .ok(json!({"cmd": "presence", "channel": "chat:p"}))
        .await;
    assert_eq!(presence["presence"].as_object().map(|o| o.len()), Some(2));

    // Her connection on node c leaves: still there. Her last one leaves: gone, announced.
    ann2.close().await;
    c.publish("chat:p", json!("after ann2")).await;
    let next = bob.next_push().await;
    assert_eq!(next["push"], "publication", "ann left too early: {next}");
    ann.close().await;
    let leave = bob.next_push().await;
    assert_eq!(
        (leave["push"].clone(), leave["info"]["user"].clone()),
        (json!("leave"), json!("ann")),
        "{leave}"
    );
    let presence = a.api_ok("presence", json!({"channel": "chat:p"})).await;
    assert!(presence["presence"].get("ann").is_none(), "{presence}");
    assert!(pushes_of(&mut bob, "join").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_reach_a_user_on_any_node_or_wait_in_the_mailbox() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c) = three_nodes(&redis).await;
    let mut bob = b.client("bob").await;
    let mut bob2 = c.client("bob").await;
    let mut ann = a.client("ann").await;
    let reply = ann
        .ok(json!({"cmd": "send", "user": "bob", "data": {"n": 1}}))
        .await;
    assert_eq!(reply["status"], "delivered", "{reply}");
    let id = reply["mailbox"].as_u64().expect("id");
    for client in [&mut bob, &mut bob2] {
        let message = client.next_push().await;
        assert_eq!(message["push"], "message", "{message}");
        assert_eq!(
            (message["mailbox"].as_u64(), message["data"].clone()),
            (Some(id), json!({"n": 1}))
        );
        assert_eq!(message["from"]["user"], "ann");
    }

    // Carol is offline: kept in Redis, delivered when she connects to any node.
    let mut ids = Vec::new();
    for n in 1..=3 {
        let node = [&a, &b, &c][n % 3];
        let reply = node
            .api_ok("send", json!({"user": "carol", "data": {"n": n}}))
            .await;
        assert_eq!(reply["status"], "stored", "{reply}");
        ids.push(reply["mailbox"].as_u64().expect("id"));
    }
    let mut carol = c.client("carol").await;
    carol.barrier().await;
    let got: Vec<(Option<u64>, Value)> = pushes_of(&mut carol, "message")
        .iter()
        .map(|m| (m["mailbox"].as_u64(), m["data"].clone()))
        .collect();
    let expected: Vec<(Option<u64>, Value)> = ids
        .iter()
        .zip(1..)
        .map(|(id, n)| (Some(*id), json!({"n": n})))
        .collect();
    assert_eq!(got, expected);
    carol.ok(json!({"cmd": "ack", "mailbox": ids[2]})).await;
    carol.close().await;
    let mut carol = a.client("carol").await;
    carol.barrier().await;
    assert!(
        pushes_of(&mut carol, "message").is_empty(),
        "acknowledged, never again"
    );

    // A message sent while she is connected (to node a) arrives live, once.
    let reply = b
        .api_ok("send", json!({"user": "carol", "data": "live"}))
        .await;
    assert_eq!(reply["status"], "delivered", "{reply}");
    let message = carol.next_push().await;
    assert_eq!(message["data"], "live", "{message}");
    carol.barrier().await;
    assert!(
        pushes_of(&mut carol, "message").is_empty(),
        "delivered twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_publications_reach_every_node_in_order_with_the_stream() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, _c) = three_nodes(&redis).await;
    let mut bob = b.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:e"}))
        .await;
    let mut ann = a.client("ann").await;
    ann.ok(json!({"cmd": "subscribe", "channel": "chat:e"}))
        .await;
    ann.ok(json!({"cmd": "publish", "channel": "chat:e", "data": 1}))
        .await;
    ann.ok(json!({"cmd": "publish", "channel": "chat:e", "data": "typing", "ephemeral": true}))
        .await;
    ann.ok(json!({"cmd": "publish", "channel": "chat:e", "data": 2}))
        .await;
    let got: Vec<(Value, Value)> = [
        bob.next_publication().await,
        bob.next_publication().await,
        bob.next_publication().await,
    ]
    .iter()
    .map(|p| {
        (
            p["data"].clone(),
            p.get("ephemeral").cloned().unwrap_or(Value::Null),
        )
    })
    .collect();
    assert_eq!(
        got,
        vec![
            (json!(1), Value::Null),
            (json!("typing"), json!(true)),
            (json!(2), Value::Null)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_on_any_node_answers_for_and_acts_on_the_whole_group() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c) = three_nodes(&redis).await;
    let mut bob_b = b.client("bob").await;
    let mut bob_c = c.client("bob").await;
    let mut ann = a.client("ann").await;
    for client in [&mut bob_b, &mut bob_c, &mut ann] {
        client
            .ok(json!({"cmd": "subscribe", "channel": "chat:api"}))
            .await;
    }
    bob_b
        .ok(json!({"cmd": "subscribe", "channel": "feed:b-only"}))
        .await;
    for node in [&a, &b, &c] {
        assert_eq!(node.subscribers("chat:api").await, 3);
        assert_eq!(node.subscribers("feed:b-only").await, 1);
        let info = node.api_ok("info", json!({})).await;
        let nodes = info["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 3, "{info}");
        let ids: std::collections::HashSet<_> = nodes.iter().map(|n| n["id"].clone()).collect();
        assert_eq!(ids.len(), 3, "{info}");
        let connections: i64 = nodes
            .iter()
            .map(|n| n["connections"].as_i64().unwrap_or(0))
            .sum();
        assert_eq!(connections, 3, "{info}");
    }
    // Bob's connections are on b and c; the call is made on a.
    let reply = a.api_ok("disconnect", json!({"user": "bob"})).await;
    assert_eq!(reply["disconnected"], 2, "{reply}");
    assert_eq!(bob_b.expect_close().await.0, 4003);
    assert_eq!(bob_c.expect_close().await.0, 4003);
    eventually("bob's subscriptions to end everywhere", || async {
        c.subscribers("chat:api").await == 1
    })
    .await;
    ann.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_session_alternating_between_nodes_loses_and_doubles_nothing() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c) = three_nodes(&redis).await;
    let mut poller = Poller::new(a.addr);
    // Every request to the next node, as a round-robin balancer without stickiness would.
    poller.rotate = vec![a.addr, b.addr, c.addr];
    let hello = poller
        .ok(json!({"cmd": "connect", "token": crate::util::token("ann", None, &[], 3600)}))
        .await;
    assert_eq!(hello["user"], "ann");
    poller
        .ok(json!({"cmd": "subscribe", "channel": "chat:lp"}))
        .await;
    // Published on every node while the polls go round; Poller checks that seqs follow
    // each other with nothing acknowledged twice, this checks the offsets.
    let mut got = Vec::new();
    for i in 1..=24u64 {
        [&a, &b, &c][(i % 3) as usize]
            .publish("chat:lp", json!({"i": i}))
            .await;
        if i % 4 == 0 {
            while got.len() < i as usize {
                got.push(poller.next_publication().await);
            }
        }
    }
    let expected: Vec<(u64, Value)> = (1..=24).map(|i| (i, json!({"i": i}))).collect();
    assert_eq!(offsets_and_data(&got), expected);
    // A command through another node is answered in the same session.
    let reply = poller
        .ok(json!({"cmd": "publish", "channel": "chat:lp", "data": "from the poller"}))
        .await;
    assert_eq!(reply["offset"], 25);
    assert_eq!(poller.next_publication().await["data"], "from the poller");
    // Nothing more than that: a short poll on each node brings nothing.
    for _ in 0..3 {
        let answer = poller.poll(&[], false).await;
        assert_eq!(answer["messages"], json!([]), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_session_resumes_and_takes_commands_on_any_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b, c) = three_nodes(&redis).await;
    let mut sse = SseClient::connect(a.addr, "ann").await;
    // Commands posted to node b reach the session on node a; replies come on its stream.
    sse.addr = b.addr;
    sse.ok(json!({"cmd": "subscribe", "channel": "chat:sse"}))
        .await;
    c.publish("chat:sse", json!(1)).await;
    assert_eq!(sse.next_publication().await["data"], 1);
    // The stream drops; EventSource comes back through node c with Last-Event-ID.
    let last = sse.last_id.clone();
    c.publish("chat:sse", json!(2)).await;
    sse.addr = c.addr;
    sse.reconnect(&last).await;
    let second = sse.next_publication().await;
    assert_eq!(
        (second["offset"].clone(), second["data"].clone()),
        (json!(2), json!(2))
    );
    b.publish("chat:sse", json!(3)).await;
    assert_eq!(sse.next_publication().await["data"], 3);
    // A session nobody has: 404, so the client opens a new one.
    let response = crate::util::http_response(
        b.addr,
        "POST",
        "/sse/send?session=00000000.nosuchsession",
        &[],
        b"{}",
    )
    .await;
    assert_eq!(response.status, 404, "{response:?}");
}

/// `GET /health`'s status.
async fn health(node: &Server) -> u16 {
    crate::util::http_response(node.addr, "GET", "/health", &[], b"")
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_loses_no_acknowledged_publication() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let Some(mut redis) = RedisServer::start_persistent() else {
        return;
    };
    let url = redis.url();
    let a = start_node(&url, "sb", |_| {}).await;
    let b = start_node(&url, "sb", |_| {}).await;
    let mut bob = b.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:o"}))
        .await;
    // Node a's API publishes without pause; what it acknowledged is kept, what it refused
    // is counted.
    let acked: Arc<Mutex<Vec<(u64, Value)>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (acked, refused, stop, addr) = (acked.clone(), refused.clone(), stop.clone(), a.addr);
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({"channel": "chat:o", "data": {"i": i}});
                let (status, reply) = crate::util::api(addr, "publish", body).await;
                if status == 200 {
                    let offset = reply["offset"].as_u64().expect("offset");
                    acked.lock().unwrap().push((offset, json!({"i": i})));
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let count = || acked.lock().unwrap().len();
    eventually("20 acknowledged publications", || async { count() >= 20 }).await;
    redis.kill();
    eventually("the nodes to report the outage", || async {
        health(&a).await == 503 && health(&b).await == 503
    })
    .await;
    eventually("publications to be refused", || async {
        refused.load(Ordering::Relaxed) >= 3
    })
    .await;
    redis.restart();
    let before = count();
    eventually("publications to be acknowledged again", || async {
        count() >= before + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("the publisher");
    let acked = acked.lock().unwrap().clone();
    let last = acked.last().expect("some").0;
    // Bob gets every acknowledged publication, in offset order, once; a publication Redis
    // ran as the connection broke may come too though its publisher was told it failed.
    let mut got = Vec::new();
    while got.last().is_none_or(|(offset, _)| *offset < last) {
        let push = bob.next_publication().await;
        got.push((
            push["offset"].as_u64().expect("offset"),
            push["data"].clone(),
        ));
    }
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "out of order or twice: {got:?}"
    );
    for publication in &acked {
        assert!(
            got.contains(publication),
            "acknowledged and lost: {publication:?}"
        );
    }
    eventually("the nodes to be healthy again", || async {
        health(&a).await == 200 && health(&b).await == 200
    })
    .await;
    assert!(b.metric("switchboard_redis_disconnects_total").await >= 1.0);
    assert_eq!(
        b.metric("switchboard_cluster_broken_total").await,
        0.0,
        "continuity held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_told_when_redis_lost_their_stream() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let a = start_node(&url, "sb", |_| {}).await;
    let b = start_node(&url, "sb", |_| {}).await;
    let mut bob = b.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:lost"}))
        .await;
    let mut epoch = Value::Null;
    for i in 1..=3u64 {
        a.publish("chat:lost", json!(i)).await;
        epoch = bob.next_publication().await["epoch"].clone();
    }
    // Without persistence, a restarted Redis has forgotten the stream.
    redis.kill();
    redis.restart();
    let (code, _) = bob.expect_close().await;
    assert_eq!(code, 4008, "told to reconnect");
    let mut bob = b.client("bob").await;
    let sub = bob
        .ok(json!({"cmd": "subscribe", "channel": "chat:lost", "recover": {"offset": 3, "epoch": epoch}}))
        .await;
    assert_eq!(sub["recovered"], false, "{sub}");
    assert_ne!(sub["epoch"], epoch);
    assert!(b.metric("switchboard_cluster_broken_total").await >= 1.0);
    // The group goes on in the new epoch (a publication refused while the node's
    // command connection comes back is tried again, as a client would).
    let offset = std::sync::Arc::new(std::sync::Mutex::new(None));
    eventually("a publication to be acknowledged", || {
        let (a, offset) = (&a, offset.clone());
        async move {
            let (status, reply) = a
                .api("publish", json!({"channel": "chat:lost", "data": "again"}))
                .await;
            *offset.lock().unwrap() = reply["offset"].as_u64();
            status == 200
        }
    })
    .await;
    let offset = *offset.lock().unwrap();
    assert_eq!(offset, Some(1));
    assert_eq!(bob.next_publication().await["data"], "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_with_subscribers_keeps_its_position_past_its_history() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // History kept one second; the subscriber's node keeps the stream's position.
    let short = |c: &mut switchboard_server::Config| {
        c.namespaces.push(switchboard_server::config::Namespace {
            name: "short".into(),
            options: switchboard_server::config::NamespaceOptions {
                history_size: 10,
                history_ttl: std::time::Duration::from_secs(1),
                ..Default::default()
            },
        });
    };
    let a = start_node(&redis.url(), "sb", short).await;
    let b = start_node(&redis.url(), "sb", short).await;
    let mut bob = b.client("bob").await;
    bob.ok(json!({"cmd": "subscribe", "channel": "short:q"}))
        .await;
    assert_eq!(a.publish("short:q", json!(1)).await, 1);
    let published = std::time::Instant::now();
    let first = bob.next_publication().await;
    // What is tested is time passing: twice the TTL, so that Redis would have dropped the
    // stream's position with its history, had no node kept it.
    eventually(
        "the publication to leave the history, and the TTL twice over",
        || async {
            let history = a.api_ok("history", json!({"channel": "short:q"})).await;
            history["publications"] == json!([])
                && published.elapsed() > std::time::Duration::from_secs(2)
        },
    )
    .await;
    // Later than the history's TTL after the last publication: the same stream goes on.
    assert_eq!(a.publish("short:q", json!(2)).await, 2);
    let second = bob.next_publication().await;
    assert_eq!(
        (second["offset"].clone(), second["epoch"].clone()),
        (json!(2), first["epoch"].clone())
    );
}
