//! The `switchboard` binary, run as a user runs it: over real sockets on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard_ws::tokio::connect;
use switchboard_ws::{CloseCode, Config, Message};
use tokio::net::TcpStream;

/// A running `switchboard echo`, killed when dropped.
struct Echo {
    child: Child,
    addr: String,
}

impl Echo {
    fn start() -> Echo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["echo", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard echo");
        // The first stderr line says where it listens.
        let mut line = String::new();
        let stderr = child.stderr.take().expect("stderr");
        BufReader::new(stderr)
            .read_line(&mut line)
            .expect("read stderr");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Echo { child, addr }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn echo_returns_text_and_binary_then_closes_with_1001_on_sigterm() {
    let mut echo = Echo::start();
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

    echo.signal("TERM");
    let close = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("close within 5 s")
        .unwrap();
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    // The server exits once its connections have closed.
    let exited = tokio::task::spawn_blocking(move || echo.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "exit status {exited}");
}

#[test]
fn bench_echo_ends_with_one_json_line() {
    let echo = Echo::start();
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
        .args(["--server-pid", &echo.child.id().to_string()])
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
    let echo = Echo::start();
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["echo", "--listen", &echo.addr])
        .output()
        .expect("run echo");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {}", echo.addr)),
        "{stderr}"
    );
}
