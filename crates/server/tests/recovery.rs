//! Recovery: a client that comes back subscribes with its last `{offset, epoch}` and gets
//! exactly what it missed, in order, then the live publications; or `recovered: false`
//! when that is impossible.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::config::{Namespace, NamespaceOptions};

use crate::util::{Server, api, bounded, start};

async fn publish_n(server: &Server, channel: &str, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        assert_eq!(server.publish(channel, json!({"i": i})).await, i);
    }
}

#[tokio::test]
async fn forced_disconnect_then_recover_gets_exactly_the_missed_publications() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:r"}))
        .await;
    publish_n(&server, "chat:r", 1..=3).await;
    let mut epoch = String::new();
    for i in 1..=3u64 {
        let push = alice.next_publication().await;
        assert_eq!(push["offset"], i);
        epoch = push["epoch"].as_str().unwrap().to_owned();
    }

    let reply = server.api_ok("disconnect", json!({"user": "alice"})).await;
    assert_eq!(reply["disconnected"], 1);
    assert_eq!(alice.expect_close().await.0, 4003);

    publish_n(&server, "chat:r", 4..=7).await;

    let mut alice = server.client("alice").await;
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:r", "recover": {"offset": 3, "epoch": epoch}}))
        .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["epoch"], epoch.as_str());
    assert_eq!(sub["offset"], 7);
    let missed: Vec<(u64, Value)> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap(), p["data"].clone()))
        .collect();
    let expected: Vec<(u64, Value)> = (4..=7).map(|i| (i, json!({"i": i}))).collect();
    assert_eq!(missed, expected);

    publish_n(&server, "chat:r", 8..=8).await;
    let live = alice.next_publication().await;
    assert_eq!(
        (live["offset"].clone(), live["epoch"].clone()),
        (json!(8), json!(epoch))
    );
    alice.barrier().await;
    assert_eq!(alice.take_pushes(), Vec::<Value>::new(), "no duplicates");
}

#[tokio::test]
async fn recover_with_nothing_missed_is_recovered_and_empty() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    publish_n(&server, "chat:n", 1..=2).await;
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:n"}))
        .await;
    let epoch = sub["epoch"].clone();
    alice
        .ok(json!({"cmd": "unsubscribe", "channel": "chat:n"}))
        .await;
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:n", "recover": {"offset": 2, "epoch": epoch}}))
        .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert!(
        sub["publications"].as_array().is_none_or(Vec::is_empty),
        "{sub}"
    );
}

#[tokio::test]
async fn wrong_epoch_or_lost_history_is_not_recovered() {
    let server = start(|c| c.namespaces[0].options.history_size = 3).await;
    let mut alice = server.client("alice").await;
    publish_n(&server, "chat:lost", 1..=10).await;
    let history = server
        .api_ok("history", json!({"channel": "chat:lost"}))
        .await;
    let epoch = history["epoch"].as_str().unwrap().to_owned();
    let cases = [
        json!({"offset": 9, "epoch": "not-the-epoch"}),
        // Offsets 3..=7 are gone: history keeps 8..=10.
        json!({"offset": 2, "epoch": epoch}),
        // From the future.
        json!({"offset": 11, "epoch": epoch}),
    ];
    for recover in cases {
        let sub = alice
            .ok(json!({"cmd": "subscribe", "channel": "chat:lost", "recover": recover}))
            .await;
        assert_eq!(sub["recovered"], false, "{recover} -> {sub}");
        assert!(
            sub["publications"].as_array().is_none_or(Vec::is_empty),
            "{sub}"
        );
        assert_eq!(sub["offset"], 10);
        alice
            .ok(json!({"cmd": "unsubscribe", "channel": "chat:lost"}))
            .await;
    }
    // The oldest offset still recoverable.
    let sub = alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:lost", "recover": {"offset": 7, "epoch": epoch}}))
        .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["publications"].as_array().unwrap().len(), 3);
}

/// Checks that `publication` is the one after `last`, and moves `last` on.
fn see(last: &mut u64, publication: &Value) {
    let offset = publication["offset"].as_u64().expect("offset");
    assert_eq!(
        offset,
        *last + 1,
        "out of order or duplicated: {publication}"
    );
    assert_eq!(publication["data"]["i"], offset);
    *last = offset;
}

/// A publisher publishes without pause while the client disconnects (forced, or by
/// dropping the connection) and reconnects with recovery, over and over. In the end the
/// client has seen every offset once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_under_concurrent_publishing_sees_every_offset_once() {
    const ROUNDS: u64 = 40;
    let server = start(|c| {
        c.namespaces.push(Namespace {
            name: "rec".into(),
            options: NamespaceOptions {
                history_size: 100_000,
                history_ttl: Duration::from_secs(3600),
                publish: true,
                ..NamespaceOptions::default()
            },
        })
    })
    .await;
    let mut client = server.client("alice").await;
    let sub = client
        .ok(json!({"cmd": "subscribe", "channel": "rec:c"}))
        .await;
    assert_eq!(sub["offset"], 0);
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (addr, stop) = (server.addr, stop.clone());
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (status, reply) = api(
                    addr,
                    "publish",
                    json!({"channel": "rec:c", "data": {"i": i}}),
                )
                .await;
                assert_eq!((status, reply["offset"].as_u64()), (200, Some(i)));
            }
            i
        }
    });

    let mut last = 0u64;
    let mut recovered = 0;
    for round in 0..ROUNDS {
        // Read a few live publications, a different number each round.
        for _ in 0..(1 + round % 5) {
            let push = client.next_push().await;
            assert_eq!(push["epoch"], epoch.as_str());
            see(&mut last, &push);
        }
        if round % 2 == 0 {
            server.api_ok("disconnect", json!({"user": "alice"})).await;
            assert_eq!(client.expect_close().await.0, 4003);
        } else {
            drop(client);
        }
        client = server.client("alice").await;
        let sub = client
            .ok(json!({"cmd": "subscribe", "channel": "rec:c", "recover": {"offset": last, "epoch": epoch}}))
            .await;
        assert_eq!(sub["recovered"], true, "{sub}");
        for publication in sub["publications"].as_array().into_iter().flatten() {
            see(&mut last, publication);
            recovered += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let total = bounded("the publisher", publisher).await.unwrap();
    while last < total {
        let push = client.next_push().await;
        see(&mut last, &push);
    }
    client.barrier().await;
    assert_eq!(
        client.take_pushes(),
        Vec::<Value>::new(),
        "nothing after the last offset"
    );
    assert!(
        recovered > 0,
        "no publication came through recovery in {ROUNDS} rounds"
    );
}
