//! `serve --engine redis` as separate processes sharing one real redis-server (issue 15):
//! a node killed with SIGKILL has its subscribers' leave events published by the nodes
//! that outlive it, within the presence TTL; each node's apps show the hub's figures as a
//! host of their own (`@hub-NODE`). Skipped, with a message, where redis-server
//! is not installed (scripts/test installs it and makes it required).

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_redis_fixture::RedisServer;

use crate::util::{Server, TempDir, Ws, api_key, api_ok, bounded, token};

/// The presence TTL the nodes of these tests run with.
const TTL: Duration = Duration::from_secs(2);

/// A node of the group over `redis`, in `dir`, with the secrets of `secrets_from`.
fn node(redis: &RedisServer, dir: &TempDir, secrets_from: Option<&TempDir>) -> Server {
    let ttl = format!("presence_ttl = \"{}s\"\n", TTL.as_secs());
    Server::redis_node(&redis.url(), dir, secrets_from, "", &ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_subscribers_leave_within_the_presence_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dirs = ["cluster-kill-a", "cluster-kill-b", "cluster-kill-c"].map(TempDir::new);
    let a = node(&redis, &dirs[0], None);
    let b = node(&redis, &dirs[1], Some(&dirs[0]));
    let c = node(&redis, &dirs[2], Some(&dirs[0]));
    let dir_a = &dirs[0];
    let key = api_key(&dir_a.0);
    // Each node's apps publish the hub's own figures as a host named after the node.
    let info = api_ok(&c.addr, &key, "info", &json!({})).await;
    let ids: Vec<String> = info["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{info}");
    for id in &ids {
        let channel = format!("metrics:@hub-{id}");
        bounded("the node's hub figures", async {
            loop {
                let history = api_ok(&a.addr, &key, "history", &json!({"channel": channel})).await;
                if history["publications"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())
                {
                    assert!(
                        !history["publications"][0]["data"]["hub"].is_null(),
                        "{history}"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    let (mut bob, _) = Ws::connect(&b.addr, &token(&dir_a.0, "bob")).await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:k"}))
        .await;
    assert_eq!(bob.push().await["info"]["user"], "bob");
    let (mut cai, _) = Ws::connect(&c.addr, &token(&dir_a.0, "cai")).await;
    cai.ok(json!({"cmd": "subscribe", "channel": "chat:k"}))
        .await;
    assert_eq!(bob.push().await["info"]["user"], "cai");
    let (mut ann, _) = Ws::connect(&a.addr, &token(&dir_a.0, "ann")).await;
    ann.ok(json!({"cmd": "subscribe", "channel": "chat:k"}))
        .await;
    let join = bob.push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("ann"))
    );
    let presence = api_ok(&b.addr, &key, "presence", &json!({"channel": "chat:k"})).await;
    assert_eq!(presence["presence"]["ann"]["connections"], 1, "{presence}");

    a.proc.signal("KILL");
    let killed = Instant::now();
    let leave = bob.push().await;
    let took = killed.elapsed();
    assert_eq!(
        (leave["push"].clone(), leave["info"]["user"].clone()),
        (json!("leave"), json!("ann")),
        "{leave}"
    );
    // The TTL from the last heartbeat, plus a heartbeat period for a surviving node to
    // notice, plus scheduling.
    assert!(
        took <= TTL + TTL / 3 + Duration::from_secs(1),
        "the leave took {took:?}"
    );
    // Every surviving node's subscribers hear it once.
    let leave = loop {
        let push = cai.push().await;
        if push["push"] == "leave" {
            break push;
        }
    };
    assert_eq!(leave["info"]["user"], "ann", "{leave}");
    let presence = api_ok(&b.addr, &key, "presence", &json!({"channel": "chat:k"})).await;
    assert!(presence["presence"].get("ann").is_none(), "{presence}");
    let info = api_ok(&b.addr, &key, "info", &json!({})).await;
    assert_eq!(info["nodes"].as_array().map(Vec::len), Some(2), "{info}");
}
