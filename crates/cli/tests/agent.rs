//! `switchboard agent` and `serve --local-agent`, the real binary against a real
//! `serve`: samples and log lines arrive, the token stays out of the output, SIGTERM
//! stops it cleanly.

use std::ffi::OsStr;

use serde_json::{Value, json};

use crate::util::{Proc, Server, TempDir, Ws, bounded, run};

/// A token from `switchboard token` with `args` (after `token --data-dir DIR`).
fn mint(data: &TempDir, args: &[&str]) -> String {
    let mut all = vec!["token", "--data-dir", data.path()];
    all.extend(args);
    let (status, stdout, stderr) = run(&all);
    assert!(status.success(), "token {args:?}: {stderr}");
    stdout.trim().to_owned()
}

/// The next publication on `channel` whose data satisfies `wanted`.
async fn publication(ws: &mut Ws, channel: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    bounded(&format!("a publication on {channel}"), async {
        loop {
            let push = ws.push().await;
            if push["push"] == "publication" && push["channel"] == channel && wanted(&push["data"])
            {
                return push["data"].clone();
            }
        }
    })
    .await
}

#[tokio::test]
async fn the_agent_command_sends_samples_and_log_lines() {
    let data = TempDir::new("agent-serve");
    let server = Server::serve_with(&data.0, &["--store", "memory"]);
    let token = mint(&data, &["--agent", "cli-1"]);
    let viewer = mint(
        &data,
        &[
            "--user",
            "viewer",
            "--channels",
            "metrics:cli-1,logs:cli-1:app",
        ],
    );
    let files = TempDir::new("agent-files");
    let log = files.join("app.log");
    std::fs::write(&log, "").unwrap();
    let config = files.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[interval]\nwatched = \"200ms\"\nidle = \"1s\"\n\n[[logs]]\nname = \"app\"\npath = \"{}\"\n",
            log.display()
        ),
    )
    .unwrap();
    let (mut ws, _) = Ws::connect(&server.addr, &viewer).await;
    ws.ok(json!({"cmd": "subscribe", "channel": "metrics:cli-1"}))
        .await;
    ws.ok(json!({"cmd": "subscribe", "channel": "logs:cli-1:app"}))
        .await;

    // The token from the environment (through env(1): the test's own SWITCHBOARD_
    // variables are cleared), the server as its base URL.
    let binary = env!("CARGO_BIN_EXE_switchboard");
    let variable = format!("SWITCHBOARD_AGENT_TOKEN={token}");
    let agent = Proc::start_program(
        "env",
        &[
            OsStr::new(&variable),
            OsStr::new(binary),
            OsStr::new("agent"),
            OsStr::new("--server"),
            OsStr::new(&server.http_url()),
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--host"),
            OsStr::new("cli-1"),
        ],
    );
    let hello = publication(&mut ws, "metrics:cli-1", |d| d["type"] == "hello").await;
    assert_eq!(hello["logs"], json!([{"name": "app", "kind": "file"}]));
    let sample = publication(&mut ws, "metrics:cli-1", |d| d["type"] == "sample").await;
    assert!(sample["agent"]["rss"].as_u64().is_some_and(|rss| rss > 0));
    std::fs::write(&log, "hello from the agent\n").unwrap();
    let batch = publication(&mut ws, "logs:cli-1:app", |d| {
        d["lines"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    assert_eq!(batch["lines"][0]["text"], "hello from the agent");

    agent.signal("TERM");
    let (status, _, stderr) = agent.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("host cli-1"), "{stderr}");
    assert!(
        !stderr.contains(&token),
        "the token was written out: {stderr}"
    );
    server.stop();
}

#[tokio::test]
async fn serve_local_agent_reports_this_machine() {
    let data = TempDir::new("agent-local");
    let server = Server::serve_with(&data.0, &["--store", "memory", "--local-agent"]);
    let block = server.proc.stderr.seen();
    let host = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("local agent"))
        .and_then(|rest| rest.trim().strip_prefix("host "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no local agent line in:\n{block}"))
        .to_owned();
    let channel = format!("metrics:{host}");
    let viewer = mint(&data, &["--user", "viewer", "--channels", &channel]);
    let (mut ws, _) = Ws::connect(&server.addr, &viewer).await;
    ws.ok(json!({"cmd": "subscribe", "channel": &channel}))
        .await;
    // Watched now: a sample within a second or so.
    let sample = publication(&mut ws, &channel, |d| d["type"] == "sample").await;
    assert!(sample["mem"]["total"].as_u64().is_some_and(|t| t > 0));
    let history = ws
        .ok(json!({"cmd": "history", "channel": &channel, "limit": 100}))
        .await;
    let first = &history["publications"][0]["data"];
    assert_eq!(first["type"], "hello");
    assert_eq!(first["host"], host.as_str());
    server.stop();
}

#[tokio::test]
async fn serve_local_agent_follows_the_logs_of_its_agent_table() {
    let data = TempDir::new("agent-local-config");
    let log = data.join("app.log");
    std::fs::write(&log, "").unwrap();
    let config = data.join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhost = \"local-1\"\n\n[[agent.logs]]\nname = \"app\"\npath = \"{}\"\n",
            log.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let server = Server::serve_with(
        &data.0,
        &["--store", "memory", "--local-agent", "--config", config],
    );
    assert!(
        server.proc.stderr.seen().contains("host local-1"),
        "{}",
        server.proc.stderr.seen()
    );
    let viewer = mint(
        &data,
        &[
            "--user",
            "viewer",
            "--channels",
            "logs:local-1:app",
            "--config",
            config,
        ],
    );
    let (mut ws, _) = Ws::connect(&server.addr, &viewer).await;
    ws.ok(json!({"cmd": "subscribe", "channel": "logs:local-1:app"}))
        .await;
    // The file is open once its `started` batch is out (maybe before the subscription:
    // read from history).
    bounded("the started batch", async {
        loop {
            let history = ws
                .ok(json!({"cmd": "history", "channel": "logs:local-1:app"}))
                .await;
            let started = history["publications"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["data"]["event"] == "started"));
            if started {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    std::fs::write(&log, "from the local agent\n").unwrap();
    let batch = publication(&mut ws, "logs:local-1:app", |d| {
        d["lines"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    assert_eq!(batch["lines"][0]["text"], "from the local agent");
    server.stop();

    // A wrong `[agent]` stops the start, and says where.
    std::fs::write(data.join("bad.toml"), "[agent]\nhots = \"x\"\n").unwrap();
    let bad = data.join("bad.toml");
    let (status, _, stderr) = run(&[
        OsStr::new("serve"),
        OsStr::new("--local-agent"),
        OsStr::new("--store"),
        OsStr::new("memory"),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--data-dir"),
        data.0.as_os_str(),
        OsStr::new("--config"),
        bad.as_os_str(),
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains("[agent]") && stderr.contains("hots"),
        "{stderr}"
    );
}
