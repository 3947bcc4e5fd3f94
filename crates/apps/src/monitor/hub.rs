//! The hub as a host: every `hub_interval`, its own figures on `metrics:@hub` in the
//! shape of an agent's sample, so the pages draw it as one more card (connections by
//! transport, publications and deliveries per second, the store's write latency, its
//! memory). Rates are counter differences over the time between two ticks, as `/admin`
//! computes them. In a group of nodes each node is a host of its own, `@hub-NODE` (its id
//! in the group), so that their figures never mix on one channel.

use std::sync::Weak;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::Shared;

/// The hub's channel: `metrics:@hub`, or in a group `metrics:@hub-NODE`.
fn channel(group_id: Option<String>) -> String {
    match group_id {
        Some(id) => format!("metrics:@hub-{id}"),
        None => "metrics:@hub".to_owned(),
    }
}

/// The counters a rate is computed from, at one moment.
#[derive(Clone, Copy)]
struct Counters {
    at: Instant,
    publications: u64,
    deliveries: u64,
    store_writes: u64,
    store_write_us: u64,
}

/// Publishes the hub's sample every `every` until the apps are gone.
pub(crate) async fn run(shared: Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Counters> = None;
    let mut name = None;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let m = shared.node.metrics();
        let now = Counters {
            at: Instant::now(),
            publications: m.publications.get(),
            deliveries: m.messages_out.get(),
            store_writes: m.store_writes.get(),
            store_write_us: m.store_write_us.get(),
        };
        let (publications, deliveries, store_ms) = match last {
            Some(before) => {
                let secs = now.at.duration_since(before.at).as_secs_f64().max(0.001);
                let writes = now.store_writes.saturating_sub(before.store_writes);
                let store_ms = if writes == 0 {
                    0.0
                } else {
                    now.store_write_us.saturating_sub(before.store_write_us) as f64
                        / writes as f64
                        / 1000.0
                };
                (
                    now.publications.saturating_sub(before.publications) as f64 / secs,
                    now.deliveries.saturating_sub(before.deliveries) as f64 / secs,
                    store_ms,
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        last = Some(now);
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let mut sample = json!({
            "type": "sample",
            "time": crate::now_ms(),
            "hub": {
                "connections": m.connections.get(),
                "websocket": m.websocket_connections.get(),
                "sse": m.sse_streams.get(),
                // As `admin.overview` counts them: sessions without an open stream.
                "polling": (m.http_sessions.get() - m.sse_streams.get()).max(0),
                "publications_per_s": round(publications),
                "deliveries_per_s": round(deliveries),
                "store_write_ms": round(store_ms),
            },
        });
        // Left out where it cannot be read, as an agent leaves out what it cannot read.
        if let Some(rss) = crate::ops::rss_bytes() {
            sample["mem"] = json!({"used": rss});
        }
        let channel = name.get_or_insert_with(|| channel(shared.node.group_id()));
        shared.publish_best_effort(channel, &sample).await;
    }
}
