//! `serve --engine redis` as separate processes sharing one real redis-server (issue 15):
//! a node killed with SIGKILL has its subscribers' leave events published by the nodes
//! that outlive it, within the presence TTL. Skipped, with a message, where redis-server
//! is not installed (scripts/test installs it and makes it required).

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_redis_fixture::RedisServer;

use crate::util::{Server, TempDir, Ws, api_key, api_ok, token};

/// The presence TTL the nodes of these tests run with.
const TTL: Duration = Duration::from_secs(2);

/// A node of the group over `redis`, in `dir`, with the secrets of `secrets_from` (every
/// node of a group shares them) when given.
fn node(redis: &RedisServer, dir: &TempDir, secrets_from: Option<&TempDir>) -> Server {
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\nredis_url = \"{}\"\npresence_ttl = \"{}s\"\n",
            redis.url(),
            TTL.as_secs()
        ),
    )
    .expect("write the node's configuration");
    if let Some(from) = secrets_from {
        for file in ["api-key", "token-secret"] {
            std::fs::copy(from.join(file), dir.join(file)).expect("copy a secret");
        }
    }
    let config = config.to_str().expect("UTF-8 path").to_owned();
    Server::serve_with(&dir.0, &["--engine", "redis", "--config", &config])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_subscribers_leave_within_the_presence_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (dir_a, dir_b) = (
        TempDir::new("cluster-kill-a"),
        TempDir::new("cluster-kill-b"),
    );
    let a = node(&redis, &dir_a, None);
    let b = node(&redis, &dir_b, Some(&dir_a));
    let (mut bob, _) = Ws::connect(&b.addr, &token(&dir_a.0, "bob")).await;
    bob.ok(json!({"cmd": "subscribe", "channel": "chat:k"}))
        .await;
    assert_eq!(bob.push().await["info"]["user"], "bob");
    let (mut ann, _) = Ws::connect(&a.addr, &token(&dir_a.0, "ann")).await;
    ann.ok(json!({"cmd": "subscribe", "channel": "chat:k"}))
        .await;
    let join = bob.push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("ann"))
    );
    let key = api_key(&dir_a.0);
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
    let presence = api_ok(&b.addr, &key, "presence", &json!({"channel": "chat:k"})).await;
    assert!(presence["presence"].get("ann").is_none(), "{presence}");
    let info = api_ok(&b.addr, &key, "info", &json!({})).await;
    assert_eq!(info["nodes"].as_array().map(Vec::len), Some(1), "{info}");
}
