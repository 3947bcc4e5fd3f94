//! The connection: buffering through a server restart, a full buffer's drops reported,
//! and what an agent's token may do.

use std::time::Duration;

use serde_json::json;
use switchboard_agent::config::{LogSource, Start};

use crate::util::{Agent, Hub, TempDir, WAIT, agent_token, append, fast_config, texts};

fn numbered(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("line {n:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_buffers_through_a_server_restart() {
    let data = TempDir::new("restart-data");
    let dir = TempDir::new("restart-log");
    let log = dir.path().join("app.log");
    append(&log, ["before".to_owned()]);
    let hub = Hub::start_at(None, Some(data.path())).await;
    let addr = hub.addr;
    let mut config = fast_config();
    config.logs.push(LogSource {
        name: "app".into(),
        path: log.clone(),
        start: Start::End,
    });
    let agent = Agent::on(&hub, "r1", config);
    let mut admin = hub.admin().await;
    admin
        .history_until("logs:r1:app", "the file opened", |h| !h.is_empty())
        .await;
    append(&log, numbered(0..10));
    admin
        .history_until("logs:r1:app", "the first lines", |h| texts(h).len() >= 10)
        .await;

    drop(admin);
    hub.stop().await;
    let down = switchboard_agent::sample::now_ms();
    // While the server is down: lines are written and samples taken (every 300 ms).
    append(&log, numbered(10..30));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    append(&log, numbered(30..40));
    let up = switchboard_agent::sample::now_ms();

    let hub = Hub::start_at(Some(addr), Some(data.path())).await;
    let mut admin = hub.admin().await;
    let history = admin
        .history_until("logs:r1:app", "every line", |h| texts(h).len() >= 40)
        .await;
    assert_eq!(texts(&history), numbered(0..40), "each line once, in order");

    // The samples taken while down came late, with their own times, after a new hello.
    let metrics = admin
        .history_until("metrics:r1", "late samples", |h| {
            h.iter().filter(|d| d["late"] == true).count() >= 3
        })
        .await;
    let late: Vec<u64> = metrics
        .iter()
        .filter(|d| d["late"] == true)
        .map(|d| d["time"].as_u64().expect("time"))
        .collect();
    assert!(
        late.iter().filter(|t| **t >= down && **t <= up).count() >= 3,
        "late samples {late:?} between {down} and {up}"
    );
    let hellos: Vec<usize> = metrics
        .iter()
        .enumerate()
        .filter(|(_, d)| d["type"] == "hello")
        .map(|(i, _)| i)
        .collect();
    let first_late = metrics.iter().position(|d| d["late"] == true).unwrap();
    assert!(
        hellos.len() >= 2 && hellos[1] < first_late,
        "a hello comes before what was buffered"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_says_so() {
    // A port with nothing behind it yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = TempDir::new("drops");
    // Empty at the start, and read from its start whenever the agent first opens it
    // (`last:N` with N above what is written): every line is read, however the test's
    // writes and the agent's first poll interleave.
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let mut config = fast_config();
    config.buffer_bytes = 64 << 10;
    config.logs.push(LogSource {
        name: "app".into(),
        path: log.clone(),
        start: Start::Last(1_000_000),
    });
    let agent = Agent::start(&format!("ws://{addr}/ws"), &agent_token("d1"), "d1", config);
    // 4000 lines of about 70 bytes once written as JSON: more than 64 KiB.
    let text = "x".repeat(40);
    append(&log, (0..4000).map(|n| format!("{n:05} {text}")));
    // Nothing outside tells when the agent has read them: ten of its polls (50 ms) is
    // ample for a file this size (read up to 1 MiB a poll).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let hub = Hub::start_at(Some(addr), None).await;
    let mut admin = hub.admin().await;
    let metrics = admin
        .history_until("metrics:d1", "a dropped report", |h| {
            h.iter().any(|d| d["type"] == "dropped")
        })
        .await;
    let report = metrics.iter().find(|d| d["type"] == "dropped").unwrap();
    let dropped = report["lines"].as_u64().expect("lines");
    assert!(dropped > 0, "{report}");
    assert!(report["time"].is_u64() && report["samples"].is_u64());
    // The newest lines arrived; the first batch says how many came before it and were
    // lost.
    let history = admin
        .history_until("logs:d1:app", "the last line", |h| {
            texts(h).last().is_some_and(|l| l.starts_with("03999 "))
        })
        .await;
    let lines = texts(&history);
    assert_eq!(
        lines.len() as u64 + dropped,
        4000,
        "kept + dropped = written"
    );
    let first: u64 = lines[0][..5].parse().unwrap();
    assert_eq!(first, dropped, "the oldest were dropped");
    assert_eq!(
        history.iter().find_map(|b| b["dropped"].as_u64()),
        Some(dropped)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_cannot_publish_to_another_hosts_channels() {
    let hub = Hub::start().await;
    let mut client = switchboard_client::Client::open(&hub.url()).await.unwrap();
    client.connect(Some(&agent_token("a1"))).await.unwrap();
    // Its own host's channels: allowed.
    let publish = |channel: &str| json!({"cmd": "publish", "channel": channel, "data": {}});
    assert_eq!(code(&mut client, publish("metrics:a1")).await, 0);
    assert_eq!(code(&mut client, publish("logs:a1:syslog")).await, 0);
    // Another host's: refused (103).
    assert_eq!(code(&mut client, publish("metrics:b1")).await, 103);
    assert_eq!(code(&mut client, publish("logs:b1:syslog")).await, 103);
    assert_eq!(code(&mut client, publish("logs:a1x:syslog")).await, 103);
    // It reads nothing but whether its own host is watched.
    let subscribe = |channel: &str| json!({"cmd": "subscribe", "channel": channel});
    assert_eq!(code(&mut client, subscribe("metrics:b1")).await, 103);
    assert_eq!(code(&mut client, subscribe("logs:a1:syslog")).await, 103);
    assert_eq!(code(&mut client, subscribe("metrics:a1")).await, 0);

    // An agent that calls itself b1 with a1's token gets nothing into b1's channels.
    let agent = Agent::start(&hub.url(), &agent_token("a1"), "b1", fast_config());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut admin = hub.admin().await;
    assert!(admin.history("metrics:b1").await.is_empty());
    agent.stop().await;
}

/// The error code of the reply to `command` (0 for a result).
async fn code(client: &mut switchboard_client::Client, command: serde_json::Value) -> u64 {
    let reply = tokio::time::timeout(WAIT, client.call(command))
        .await
        .expect("a reply in time")
        .expect("a reply");
    reply["error"]["code"].as_u64().unwrap_or(0)
}

#[test]
fn host_names_are_the_servers() {
    for name in [
        "web-1",
        "a",
        "a.b_c-d",
        "",
        "a b",
        "@hub",
        "é",
        "x:y",
        &"h".repeat(64),
        &"h".repeat(65),
    ] {
        assert_eq!(
            switchboard_agent::config::valid_name(name),
            switchboard_server::auth::valid_host(name),
            "{name:?}"
        );
    }
}
