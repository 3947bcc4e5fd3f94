//! `switchboard echo`, `bench echo`, `sub`, `pub`, `token`, `config init` and `serve`'s
//! start-up, run as a user runs them: over real sockets on 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use switchboard_ws::tokio::connect;
use switchboard_ws::{CloseCode, Config, Message};
use tokio::net::TcpStream;

use crate::util::{Proc, Server, TempDir, json, run};

#[tokio::test]
async fn echo_returns_text_and_binary_then_closes_with_1001_on_sigterm() {
    let echo = Server::echo();
    let stream = TcpStream::connect(&echo.addr).await.unwrap();
    let (mut ws, _) = connect(stream, &echo.addr, "/", &[], &[], Config::default())
        .await
        .unwrap();
    for message in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(&message).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(message));
    }

    echo.proc.signal("TERM");
    let close = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("close within 5 s")
        .unwrap();
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    // The server exits once its connections have closed.
    let (exited, _, _) = tokio::task::spawn_blocking(move || echo.proc.finish())
        .await
        .unwrap();
    assert!(exited.success(), "exit status {exited}");
}

#[test]
fn bench_echo_ends_with_one_json_line() {
    let echo = Server::echo();
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", "echo", "--url", &format!("ws://{}/", echo.addr)])
        .args([
            "--conns",
            "4",
            "--size",
            "32",
            "--duration",
            "0.5",
            "--pipeline",
            "2",
        ])
        .args(["--server-pid", &echo.proc.child.id().to_string()])
        .output()
        .expect("run bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last = stdout.lines().last().expect("some output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert!(json["msgs_per_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["p99_us"].as_u64().unwrap() >= json["p50_us"].as_u64().unwrap());
    assert!(json["server_cpu_us_per_msg"].is_number(), "{json}");
}

#[test]
fn echo_refuses_a_port_it_cannot_bind_with_a_clear_error() {
    let echo = Server::echo();
    let (status, _, stderr) = run(&["echo", "--listen", &echo.addr]);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains(&format!("cannot listen on {}", echo.addr)),
        "{stderr}"
    );
}

/// `pub` to a server: the answer's JSON, after checking that it succeeded.
fn publish(server: &Server, data_dir: &str, channel: &str, data: &str) -> serde_json::Value {
    let url = server.http_url();
    let (status, stdout, stderr) =
        run(&["pub", channel, data, "--data-dir", data_dir, "--url", &url]);
    assert!(status.success(), "pub {data}: {status}: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    json(&stdout)
}

#[test]
fn sub_prints_each_publication_as_one_json_line_and_pub_publishes() {
    let tmp = TempDir::new("pubsub");
    let data = tmp.path();
    let server = Server::serve(tmp.0.as_path());
    let url = server.ws_url();
    let sub = Proc::start(&[
        "sub",
        "chat:lobby",
        "--user",
        "alice",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    sub.stderr.until("switchboard: subscribed to chat:lobby");

    let first = publish(&server, data, "chat:lobby", r#"{"n":1}"#);
    assert_eq!(first["offset"], 1, "{first}");
    assert_eq!(
        publish(&server, data, "chat:lobby", r#"{"n":1}"#)["offset"],
        2
    );
    assert_eq!(publish(&server, data, "chat:lobby", "hello")["offset"], 3);
    let epoch = first["epoch"].as_str().unwrap();
    assert!(!epoch.is_empty());
    for (offset, expected) in [(1, r#"{"n":1}"#), (2, r#"{"n":1}"#), (3, r#""hello""#)] {
        let line = sub.stdout.next();
        let got = json(&line);
        assert_eq!(got["channel"], "chat:lobby", "{line}");
        assert_eq!(got["offset"], offset, "{line}");
        assert_eq!(got["epoch"], epoch, "{line}");
        assert_eq!(got["data"], json(expected), "{line}");
        assert!(got["info"].is_null(), "the server API published it: {line}");
        assert_eq!(got.as_object().unwrap().len(), 5, "{line}");
    }

    // ctrl-c: a clean close, status 0.
    sub.signal("INT");
    let (status, stdout, stderr) = sub.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");

    // A token from `switchboard token`; --history replays the latest publications, then
    // live ones follow without a gap.
    let (status, token, stderr) = run(&["token", "--user", "bob", "--data-dir", data]);
    assert!(status.success(), "{stderr}");
    let token = token.trim();
    let sub = Proc::start(&[
        "sub",
        "chat:lobby",
        "--history",
        "2",
        "--token",
        token,
        "--url",
        &url,
    ]);
    sub.stderr.until("switchboard: subscribed to chat:lobby");
    assert_eq!(json(&sub.stdout.next())["offset"], 2);
    assert_eq!(json(&sub.stdout.next())["data"], "hello");
    publish(&server, data, "chat:lobby", "[1, 2.50]");
    let line = sub.stdout.next();
    assert!(
        line.contains(r#""offset":4"#) && line.contains(r#""data":[1, 2.50]"#),
        "data kept as sent: {line}"
    );
}

#[test]
fn refusals_go_to_stderr_with_their_code_and_exit_status_1() {
    let tmp = TempDir::new("refusals");
    let data = tmp.path();
    let server = Server::serve(tmp.0.as_path());
    let url = server.ws_url();
    let http = server.http_url();

    // No token, and the server does not allow anonymous connections.
    let (status, _, stderr) = run(&["sub", "chat:lobby", "--url", &url]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error 101"), "{stderr}");
    // A namespace the server does not have.
    let (status, _, stderr) = run(&[
        "sub",
        "nope:x",
        "--user",
        "a",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error 102"), "{stderr}");
    // History where the namespace keeps none.
    let (status, _, stderr) = run(&[
        "sub",
        "lobby",
        "--history",
        "5",
        "--user",
        "a",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error 108"), "{stderr}");
    // A wrong path: the upgrade is refused.
    let (status, _, stderr) = run(&[
        "sub",
        "chat:x",
        "--url",
        &format!("ws://{}/nope", server.addr),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    // A wrong API key.
    let (status, stdout, stderr) =
        run(&["pub", "chat:x", "1", "--api-key", "wrong", "--url", &http]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("error 101"),
        "{stderr}"
    );
    // Clients may not publish to logs:, but the server API may.
    assert_eq!(publish(&server, data, "logs:web-1", "line")["offset"], 1);

    // Local errors: status 2, and no secret is generated where the server has none.
    let elsewhere = format!("{data}/elsewhere");
    let (status, _, stderr) = run(&[
        "pub",
        "chat:x",
        "1",
        "--data-dir",
        &elsewhere,
        "--url",
        &http,
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("api-key does not exist"), "{stderr}");
    assert!(!Path::new(&elsewhere).exists());
    let (status, _, stderr) = run(&[
        "sub",
        "chat:x",
        "--url",
        &format!("wss://{}/ws", server.addr),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ws://HOST"), "{stderr}");

    // The server going away ends a subscription with its close code.
    let sub = Proc::start(&[
        "sub",
        "chat:lobby",
        "--user",
        "a",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    sub.stderr.until("switchboard: subscribed to chat:lobby");
    server.proc.signal("TERM");
    let (status, _, stderr) = sub.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("closed the connection: 1001"), "{stderr}");
}

#[test]
fn config_init_writes_an_example_that_serve_accepts_and_refuses_to_overwrite() {
    let tmp = TempDir::new("config");
    let file = format!("{}/switchboard.toml", tmp.path());
    let (status, _, stderr) = run(&["config", "init", &file]);
    assert!(status.success(), "{stderr}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("[[namespaces]]"));

    let data = format!("{}/data", tmp.path());
    let server = Server::start(&[
        "serve",
        "--config",
        &file,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--log-level",
        "warn",
    ]);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);

    std::fs::write(&file, "# mine\n").unwrap();
    let (status, _, stderr) = run(&["config", "init", &file]);
    assert!(!status.success());
    assert!(
        stderr.contains(&file) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "# mine\n",
        "left alone"
    );
    let (status, _, stderr) = run(&["config", "init", &file, "--force"]);
    assert!(status.success(), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
}

#[test]
fn token_prints_a_jwt() {
    let tmp = TempDir::new("token");
    // Without a server's secret it refuses rather than invent one the server won't know.
    let (status, _, stderr) = run(&["token", "--user", "alice", "--data-dir", tmp.path()]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("token-secret does not exist"), "{stderr}");
    assert!(!std::path::Path::new(&format!("{}/token-secret", tmp.path())).exists());
    std::fs::create_dir_all(tmp.path()).unwrap();
    std::fs::write(
        format!("{}/token-secret", tmp.path()),
        "a-secret-of-at-least-thirty-two-bytes\n",
    )
    .unwrap();
    let (status, stdout, stderr) = run(&[
        "token",
        "--user",
        "alice",
        "--info",
        r#"{"name":"Alice"}"#,
        "--ttl",
        "10m",
        "--data-dir",
        tmp.path(),
    ]);
    assert!(status.success(), "{stderr}");
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    for part in parts {
        assert!(!part.is_empty());
        assert!(
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{token}"
        );
    }
    let (status, _, stderr) = run(&[
        "token",
        "--user",
        "alice",
        "--ttl",
        "1y",
        "--data-dir",
        tmp.path(),
    ]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--ttl"), "{stderr}");
}

#[test]
fn serve_generates_private_secrets_on_first_start_and_says_where() {
    let tmp = TempDir::new("secrets");
    let data = tmp.0.join("data");
    let server = Server::serve(&data);
    let stderr = || server.proc.stderr.seen();
    server.proc.stderr.until("switchboard: API key in");
    for file in ["api-key", "token-secret"] {
        let path = data.join(file);
        assert!(
            stderr().contains(&format!("generated {} (mode 0600)", path.display())),
            "{}",
            stderr()
        );
        assert!(stderr().contains(&path.display().to_string()));
        let meta = std::fs::metadata(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        }
        assert!(meta.len() > 32, "{file} holds a long random secret");
    }
    let key = std::fs::read_to_string(data.join("api-key")).unwrap();
    drop(server);

    // The next start reuses them and generates nothing.
    let server = Server::serve(&data);
    server.proc.stderr.until("switchboard: API key in");
    assert!(
        !server.proc.stderr.seen().contains("generated"),
        "{}",
        server.proc.stderr.seen()
    );
    assert_eq!(std::fs::read_to_string(data.join("api-key")).unwrap(), key);
}
