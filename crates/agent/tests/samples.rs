//! Samples: every interval, with sane values; every `watched` interval while someone
//! is subscribed to the host's channel, and back to `idle` when nobody is.

use serde_json::Value;

use crate::util::{Agent, Hub, fast_config};

/// The samples among publications.
fn samples(history: &[Value]) -> Vec<Value> {
    history
        .iter()
        .filter(|d| d["type"] == "sample")
        .cloned()
        .collect()
}

/// The gaps between consecutive samples' times, in ms, sorted.
fn gaps(samples: &[Value]) -> Vec<u64> {
    let times: Vec<u64> = samples
        .iter()
        .map(|s| s["time"].as_u64().expect("time"))
        .collect();
    let mut gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    gaps
}

fn median(sorted: &[u64]) -> u64 {
    sorted[sorted.len() / 2]
}

/// Checks one sample against the hello and common sense.
fn check_sample(s: &Value, cores: u64, started: u64) {
    let now = switchboard_agent::sample::now_ms();
    let time = s["time"].as_u64().expect("time");
    assert!(time >= started && time <= now, "time {time}");
    let pct = |v: &Value| v.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p));
    assert!(pct(&s["cpu"]["total"]), "cpu.total {s}");
    let per_core = s["cpu"]["cores"].as_array().expect("cpu.cores");
    assert_eq!(per_core.len() as u64, cores);
    assert!(per_core.iter().all(pct), "cpu.cores {s}");
    let load = s["load"].as_array().expect("load");
    assert_eq!(load.len(), 3);
    assert!(load.iter().all(|l| l.as_f64().is_some_and(|l| l >= 0.0)));
    let mem = &s["mem"];
    let total = mem["total"].as_u64().expect("mem.total");
    assert!(total > 0);
    assert!(mem["used"].as_u64().expect("mem.used") <= total);
    assert!(mem["available"].as_u64().expect("mem.available") <= total);
    assert!(
        s["swap"]["used"].as_u64().expect("swap.used")
            <= s["swap"]["total"].as_u64().expect("swap.total")
    );
    for disk in s["disks"].as_array().expect("disks") {
        assert!(disk["mount"].is_string());
        assert!(disk["used"].as_u64().expect("used") <= disk["total"].as_u64().expect("total"));
    }
    for net in s["net"].as_array().expect("net") {
        assert!(net["iface"].is_string() && net["rx"].is_u64() && net["tx"].is_u64());
    }
    if cfg!(target_os = "linux") {
        assert!(
            s["io"]["read"].is_u64() && s["io"]["write"].is_u64(),
            "io {s}"
        );
        assert!(s["procs"].as_u64().expect("procs") > 0);
    }
    assert!(s["uptime"].as_u64().expect("uptime") > 0);
    // The agent runs inside the test process here: its RSS is the process's.
    assert!(s["agent"]["rss"].as_u64().expect("agent.rss") > 0);
    assert!(s["agent"]["cpu"].as_f64().expect("agent.cpu") >= 0.0);
    assert!(s.get("late").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_arrive_every_interval_and_every_watched_interval_when_watched() {
    let hub = Hub::start().await;
    let started = switchboard_agent::sample::now_ms();
    let agent = Agent::on(&hub, "s1", fast_config());
    let mut admin = hub.admin().await;

    // Nobody subscribed: every 300 ms (read from history, which watches nothing).
    let history = admin
        .history_until("metrics:s1", "six idle samples", |h| samples(h).len() >= 6)
        .await;
    let hello = &history[0];
    assert_eq!(hello["type"], "hello", "hello first: {history:?}");
    assert_eq!(hello["host"], "s1");
    assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        hello["interval_ms"],
        serde_json::json!({"watched": 100, "idle": 300})
    );
    assert!(hello["os"].is_string());
    let cores = hello["cores"].as_u64().expect("cores");
    assert!(cores > 0);
    let idle = samples(&history);
    for s in &idle {
        check_sample(s, cores, started);
    }
    let idle_gaps = gaps(&idle);
    // Timers run late on a busy machine, never early: bounds are wider above.
    assert!(
        (250..=600).contains(&median(&idle_gaps)) && idle_gaps[0] >= 200,
        "idle gaps {idle_gaps:?}"
    );

    // Subscribed: the agent sees the join and samples every 100 ms.
    admin.subscribe("metrics:s1").await;
    let mut watched = Vec::new();
    while watched.len() < 12 {
        let data = admin.next_publication("metrics:s1").await;
        if data["type"] == "sample" {
            watched.push(data);
        }
    }
    // The first one or two may still be on the idle schedule.
    let watched = &watched[2..];
    for s in watched {
        check_sample(s, cores, started);
    }
    let watched_gaps = gaps(watched);
    assert!(
        (70..=200).contains(&median(&watched_gaps)),
        "watched gaps {watched_gaps:?}"
    );

    // Unsubscribed: back to every 300 ms.
    admin.unsubscribe("metrics:s1").await;
    let before = samples(&admin.history("metrics:s1").await).len();
    let history = admin
        .history_until("metrics:s1", "five more idle samples", |h| {
            samples(h).len() >= before + 6
        })
        .await;
    let all = samples(&history);
    let again = gaps(&all[before + 1..]);
    assert!(median(&again) >= 250, "idle again {again:?}");
    agent.stop().await;
}
