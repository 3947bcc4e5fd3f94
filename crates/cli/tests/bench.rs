//! `bench fanout` and `bench idle` over each subscriber transport (`--transport`), against
//! the real server: small runs that must lose nothing.

use crate::util::{Server, TempDir, json, run};

/// `bench fanout` with `transport` subscribers: the JSON line.
fn fanout(server: &Server, data: &str, transport: &str) -> serde_json::Value {
    let (status, stdout, stderr) = run(&[
        "bench",
        "fanout",
        "--url",
        &server.ws_url(),
        "--data-dir",
        data,
        "--transport",
        transport,
        "--subscribers",
        "20",
        "--rate",
        "20",
        "--duration",
        "2",
        "--conns-per-task",
        "8",
        "--server-pid",
        &server.proc.child.id().to_string(),
    ]);
    assert!(status.success(), "{transport}: {status}\n{stderr}");
    json(stdout.lines().last().unwrap_or_default())
}

/// `bench idle` with `conns` `transport` sessions held for `hold` seconds: exit status,
/// stdout and stderr.
fn idle(
    server: &Server,
    data: &str,
    transport: &str,
    conns: &str,
    hold: &str,
) -> (std::process::ExitStatus, String, String) {
    run(&[
        "bench",
        "idle",
        "--url",
        &server.ws_url(),
        "--data-dir",
        data,
        "--transport",
        transport,
        "--conns",
        conns,
        "--hold",
        hold,
        "--server-pid",
        &server.proc.child.id().to_string(),
    ])
}

fn fanout_loses_nothing(transport: &str) {
    let tmp = TempDir::new(&format!("bench-{transport}"));
    let server = Server::serve(&tmp.0);
    let report = fanout(&server, tmp.path(), transport);
    assert_eq!(report["transport"], transport, "{report}");
    assert_eq!(report["acked"], 40, "{report}");
    assert_eq!(report["expected"], 800, "{report}");
    assert_eq!(report["delivered"], 800, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["subscribers_ended"], 0, "{report}");
    let (p50, p99) = (report["p50_ms"].as_f64(), report["p99_ms"].as_f64());
    assert!(p50 > Some(0.0) && p99 >= p50, "{report}");
    assert!(report["server_cpu_s"].is_number(), "{report}");

    // The same sessions held idle, with the server's memory per connection.
    let (status, stdout, stderr) = idle(&server, tmp.path(), transport, "20", "0.5");
    assert!(status.success(), "{transport}: {status}\n{stderr}");
    assert!(stdout.starts_with("ready 20\n"), "{stdout}");
    let idle = json(stdout.lines().last().unwrap_or_default());
    assert_eq!(idle["transport"], transport, "{idle}");
    assert!(idle["rss_per_conn_bytes"].is_number(), "{idle}");
    assert!(!stderr.contains("ended while held"), "{stderr}");
    server.stop();
}

#[test]
fn fanout_over_websocket_loses_nothing() {
    fanout_loses_nothing("ws");
}

#[test]
fn fanout_over_sse_loses_nothing() {
    fanout_loses_nothing("sse");
}

#[test]
fn fanout_over_long_polling_loses_nothing() {
    fanout_loses_nothing("longpoll");
}

#[test]
fn a_transport_the_server_refuses_fails_the_bench_with_its_answer() {
    let tmp = TempDir::new("bench-refused");
    let config = tmp.join("switchboard.toml");
    std::fs::write(&config, "[transports]\nsse = false\npolling = false\n").expect("config");
    let server = Server::serve_with(&tmp.0, &["--config", config.to_str().expect("UTF-8")]);
    for (transport, says) in [("sse", "GET /sse: HTTP 404"), ("longpoll", "HTTP 404")] {
        let (status, _, stderr) = idle(&server, tmp.path(), transport, "3", "0.1");
        assert_eq!(status.code(), Some(2), "{transport}: {stderr}");
        assert!(
            stderr.contains("3 of 3 connections could not be opened") && stderr.contains(says),
            "{transport}: {stderr}"
        );
    }
    server.stop();
}

/// `bench flood`: a short slot flood from 127.0.0.2 and .3 against a server allowing 8
/// pending connections per address. The attackers get 503s past their share, and every
/// legitimate connect (from 127.0.0.1) succeeds meanwhile.
#[test]
fn bench_flood_leaves_legitimate_clients_in() {
    let tmp = TempDir::new("bench-flood");
    let data = tmp.join("data");
    let config = tmp.join("flood.toml");
    std::fs::write(&config, "[limits]\npending_per_ip = 8\n").expect("write the config");
    let server = Server::serve_with(&data, &["--config", config.to_str().expect("UTF-8")]);
    let (status, stdout, stderr) = run(&[
        "bench",
        "flood",
        "--url",
        &server.ws_url(),
        "--data-dir",
        data.to_str().expect("UTF-8"),
        "--kind",
        "slots",
        "--attackers",
        "8",
        "--sources",
        "2",
        "--duration",
        "1",
        "--legit-rate",
        "20",
        "--server-pid",
        &server.proc.child.id().to_string(),
    ]);
    assert!(status.success(), "{status}\n{stderr}");
    let report = json(stdout.lines().last().unwrap_or_default());
    assert_eq!(report["attack_answers"]["200"], 16, "{report}");
    assert!(
        report["attack_answers"]["503"].as_u64() > Some(0),
        "{report}"
    );
    assert_eq!(report["legit_failed"], 0, "{report}");
    assert!(report["legit_ok"].as_u64() >= Some(15), "{report}");
}

/// `bench chat` against the built-in chat app: every message reaches every member of its
/// room, typing calls succeed, nothing is refused.
#[test]
fn bench_chat_delivers_every_message_to_its_room() {
    let tmp = TempDir::new("bench-chat");
    let server = Server::serve(&tmp.0);
    let (status, stdout, stderr) = run(&[
        "bench",
        "chat",
        "--url",
        &server.ws_url(),
        "--data-dir",
        tmp.path(),
        "--users",
        "24",
        "--rooms",
        "4",
        "--interval",
        "1",
        "--duration",
        "2",
        "--server-pid",
        &server.proc.child.id().to_string(),
    ]);
    assert!(status.success(), "{status}\n{stderr}");
    let report = json(stdout.lines().last().unwrap_or_default());
    // 24 users post twice in 2 s; each message reaches the 6 members of its room.
    assert_eq!(report["posted"], 48, "{report}");
    assert_eq!(report["expected"], 288, "{report}");
    assert_eq!(report["delivered"], 288, "{report}");
    assert_eq!(report["post_errors"], 0, "{report}");
    assert_eq!(report["typing_errors"], 0, "{report}");
    assert_eq!(report["connections_ended"], 0, "{report}");
    assert!(report["typing_delivered"].as_u64() > Some(0), "{report}");
    assert!(
        report["server_cpu_us_per_delivery"].as_f64() > Some(0.0),
        "{report}"
    );
}

/// `bench vote` against the built-in voting app: every vote is acknowledged and reaches
/// every watcher in a coalesced tally push.
#[test]
fn bench_vote_sees_every_vote_reach_every_watcher() {
    let tmp = TempDir::new("bench-vote");
    let server = Server::serve(&tmp.0);
    let (status, stdout, stderr) = run(&[
        "bench",
        "vote",
        "--url",
        &server.ws_url(),
        "--data-dir",
        tmp.path(),
        "--watchers",
        "20",
        "--voters",
        "5",
        "--rate",
        "10",
        "--duration",
        "2",
        "--server-pid",
        &server.proc.child.id().to_string(),
    ]);
    assert!(status.success(), "{status}\n{stderr}");
    let report = json(stdout.lines().last().unwrap_or_default());
    // 5 voters, one vote each per 0.5 s for 2 s; each vote seen by the 20 watchers.
    assert_eq!(report["votes"], 20, "{report}");
    assert_eq!(report["vote_errors"], 0, "{report}");
    assert_eq!(report["samples"], 400, "{report}");
    assert_eq!(report["missed"], 0, "{report}");
    assert_eq!(report["connections_ended"], 0, "{report}");
    // Coalesced: at most 4 pushes a second (over the window and its grace).
    assert!(
        report["pushes_per_s_per_watcher"].as_f64() <= Some(4.0),
        "{report}"
    );
    assert!(report["p99_ms"].as_f64() > Some(0.0), "{report}");
    assert!(
        report["server_cpu_us_per_vote"].as_f64() > Some(0.0),
        "{report}"
    );
}

/// `bench agents`: every line every simulated agent writes reaches every viewer, and the
/// agents' scoped tokens are accepted where they publish.
#[test]
fn bench_agents_delivers_every_line_to_every_viewer() {
    let tmp = TempDir::new("bench-agents");
    let server = Server::serve(&tmp.0);
    let (status, stdout, stderr) = run(&[
        "bench",
        "agents",
        "--url",
        &server.ws_url(),
        "--data-dir",
        tmp.path(),
        "--agents",
        "5",
        "--viewers",
        "3",
        "--lines",
        "20",
        "--interval",
        "0.5",
        "--duration",
        "2",
        "--server-pid",
        &server.proc.child.id().to_string(),
    ]);
    assert!(status.success(), "{status}\n{stderr}");
    let report = json(stdout.lines().last().unwrap_or_default());
    // 5 agents × 20 lines/s × 2 s, each line read by 3 viewers; 4 samples per agent.
    assert_eq!(report["lines_written"], 200, "{report}");
    assert_eq!(report["lines_read"], 600, "{report}");
    assert_eq!(report["lines_lost"], 0, "{report}");
    assert_eq!(report["samples_written"], 20, "{report}");
    assert_eq!(report["samples_read"], 60, "{report}");
    assert_eq!(report["publish_errors"], 0, "{report}");
    assert_eq!(report["connections_ended"], 0, "{report}");
    assert!(report["p99_ms"].as_f64() > Some(0.0), "{report}");
    assert!(
        report["server_cpu_us_per_delivery"].as_f64() > Some(0.0),
        "{report}"
    );
}
