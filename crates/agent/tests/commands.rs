//! Commands as streams: their output lines, and their restart when they exit.

use switchboard_agent::config::CommandSource;

use crate::util::{Agent, Hub, events, fast_config, texts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_streams_its_lines_and_is_restarted() {
    let hub = Hub::start().await;
    let mut config = fast_config();
    // The argv is run as it is: `sh` here is the program named, not a shell the agent
    // adds.
    config.commands.push(CommandSource {
        name: "count".into(),
        run: vec![
            "sh".into(),
            "-c".into(),
            "echo one; echo two >&2; echo three; exit 3".into(),
        ],
    });
    let mut admin = hub.admin().await;
    let agent = Agent::on(&hub, "c1", config);
    // It ran twice: the restart waits 1 s.
    let history = admin
        .history_until("logs:c1:count", "two runs", |h| {
            events(h).iter().filter(|e| *e == "started").count() >= 2 && texts(h).len() >= 6
        })
        .await;
    let lines = texts(&history);
    let first = &lines[..3];
    // stdout's lines keep their order; stderr's line is among them.
    assert_eq!(
        first.iter().filter(|l| *l != "two").collect::<Vec<_>>(),
        ["one", "three"]
    );
    assert!(first.contains(&"two".to_owned()));
    let hello = admin
        .history("metrics:c1")
        .await
        .into_iter()
        .find(|d| d["type"] == "hello")
        .expect("hello");
    assert_eq!(
        hello["logs"],
        serde_json::json!([{"name": "count", "kind": "command"}])
    );
    agent.stop().await;
}
