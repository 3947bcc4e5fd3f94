//! Unit tests of the hub over the memory store, with connections that are only outboxes
//! (no sockets): what each subscriber was handed, in what order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use serde_json::value::RawValue;

use super::Hub;
use crate::config::Config;
use crate::engine::memory::MemoryStore;
use crate::metrics::Metrics;
use crate::outbox::{ClientHandle, Outbox, outbox};
use crate::protocol::ClientInfo;

fn hub(chunk: usize) -> Arc<Hub> {
    let config = Arc::new(Config::default());
    let mut hub = Hub::new(
        config,
        Arc::new(Metrics::default()),
        Arc::new(MemoryStore::new()),
    );
    hub.delivery_chunk = chunk;
    Arc::new(hub)
}

fn info(n: usize) -> ClientInfo {
    ClientInfo {
        user: format!("u{n}"),
        client: format!("c{n}"),
        info: None,
    }
}

fn data(n: usize) -> Arc<RawValue> {
    Arc::from(RawValue::from_string(n.to_string()).unwrap())
}

/// Everything queued to a connection so far, as JSON.
fn drain(outbox: &mut Outbox) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(message) = outbox.try_recv() {
        out.push(serde_json::from_slice(&message.payload()).unwrap());
    }
    out
}

async fn subscribers(hub: &Arc<Hub>, channel: &str, n: usize) -> Vec<(ClientHandle, Outbox)> {
    let mut all = Vec::new();
    for i in 0..n {
        let (handle, mut outbox) = outbox(
            hub.next_client_id(),
            100_000,
            1 << 30,
            hub.metrics().clone(),
        );
        hub.subscribe(channel, &handle, &info(i), None, |_| "{}".into())
            .await
            .unwrap();
        drain(&mut outbox);
        all.push((handle, outbox));
    }
    all
}

/// The deliverer writes a round to a chunk of subscribers, yields, and takes publications
/// released meanwhile into the round for the subscribers it has not reached; those it
/// passed get them in a round of their own, queued first. With a chunk of 4 and 20
/// subscribers (as 256 and 5,000 in production), every subscriber still gets every
/// publication once and in offset order, and the joining path ran.
#[tokio::test(flavor = "current_thread")]
async fn rounds_joined_under_way_keep_each_subscriber_in_order() {
    let hub = hub(4);
    let channel = "vote:rounds";
    let mut subs = subscribers(&hub, channel, 20).await;
    let published = 60;
    let mut acks = Vec::new();
    for n in 1..=published {
        let (tx, rx) = tokio::sync::oneshot::channel();
        hub.publish_then(channel, data(n), None, move |result| {
            let _ = tx.send(result);
        })
        .await
        .unwrap();
        acks.push(rx);
        // Let commits and rounds interleave with the next publications.
        if n % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    // Let the deliverer finish its rounds.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert!(
        hub.rounds_joined.load(Ordering::Relaxed) > 0,
        "no round was joined: the test no longer reaches that path"
    );
    for (i, (_, outbox)) in subs.iter_mut().enumerate() {
        let offsets: Vec<u64> = drain(outbox)
            .iter()
            .map(|push| push["offset"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=published as u64).collect();
        assert_eq!(offsets, expected, "subscriber {i}");
    }
}

/// Join and leave announcements are delivered with the publications around them, in
/// order, to whoever is subscribed when the deliverer reaches them.
#[tokio::test(flavor = "current_thread")]
async fn announcements_are_ordered_with_publications() {
    let hub = hub(2);
    let channel = "chat:announce";
    let mut subs = subscribers(&hub, channel, 5).await;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    for (_, outbox) in subs.iter_mut() {
        drain(outbox);
    }
    hub.publish(channel, data(1), None).await.unwrap();
    let (handle, mut guest) = outbox(hub.next_client_id(), 1000, 1 << 20, hub.metrics().clone());
    hub.subscribe(channel, &handle, &info(99), None, |_| {
        "{\"id\":1,\"result\":{}}".into()
    })
    .await
    .unwrap();
    // The guest's own join reaches it before it leaves.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    hub.publish(channel, data(2), None).await.unwrap();
    hub.unsubscribe(channel, handle.id, &info(99));
    hub.publish(channel, data(3), None).await.unwrap();
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    let kind = |push: &Value| match push["push"].as_str() {
        Some("publication") => format!("p{}", push["data"]),
        Some(other) => other.to_owned(),
        None => "reply".to_owned(),
    };
    for (i, (_, outbox)) in subs.iter_mut().enumerate() {
        let seen: Vec<String> = drain(outbox).iter().map(kind).collect();
        assert_eq!(seen, ["p1", "join", "p2", "leave", "p3"], "subscriber {i}");
    }
    // The guest: its reply, its own join, then what was published while it was in.
    let seen: Vec<String> = drain(&mut guest).iter().map(kind).collect();
    assert_eq!(seen, ["reply", "join", "p2"]);
}
