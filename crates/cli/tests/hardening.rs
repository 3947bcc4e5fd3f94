//! Issue 10 at the level of the binary: what `switchboard serve` does when its stderr
//! fails or is never read, when a secret is empty, when it runs out of file descriptors,
//! and what it never writes to its log.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{Proc, Server, TempDir, WAIT, Ws, api_key, api_ok, bounded, token};

/// A port free on 127.0.0.1 right now, for a server whose stderr cannot tell its address.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    listener.local_addr().expect("local_addr").port()
}

/// `switchboard serve --listen 127.0.0.1:PORT --data-dir DIR EXTRA…` with stderr going to
/// `stderr`, killed when dropped.
struct Raw(Child);

impl Raw {
    fn serve(port: u16, data: &Path, stderr: Stdio, extra: &[&str]) -> Raw {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SWITCHBOARD_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let child = command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data)
            .args(extra.iter().map(OsStr::new))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start switchboard");
        Raw(child)
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then the exit status (bounded).
    fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`: the status and the body.
async fn http(addr: &str, request: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| "no answer".to_owned())??;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

async fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Waits until `/health` answers 200.
async fn healthy(addr: &str) {
    bounded("the server to answer /health", async {
        loop {
            if let Ok((200, _)) = get(addr, "/health").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Work that makes the server log at every level: connections, commands, refused hosts
/// and origins (warnings), publications through the store. Checks each answer.
async fn busy_work(addr: &str, data: &Path) {
    let key = api_key(data);
    for round in 0..20 {
        let (mut ws, _) = Ws::connect(addr, &token(data, &format!("user{round}"))).await;
        ws.ok(json!({"cmd": "subscribe", "channel": "vote:noisy"}))
            .await;
        ws.ok(json!({"cmd": "publish", "channel": "vote:noisy", "data": {"n": round}}))
            .await;
        let body = json!({"channel": "vote:noisy", "data": {"api": round}});
        api_ok(addr, &key, "publish", &body).await;
        let refused = http(
            addr,
            "GET /health HTTP/1.1\r\nHost: rebind.evil.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(refused.map(|(status, _)| status), Ok(421));
    }
}

/// Issue 10, point 7: with stderr on a full disk (`/dev/full`: every write fails with
/// ENOSPC), the server serves as usual at debug level, the store keeps writing, and it
/// stops with status 0 on SIGTERM (it used to exit 101, panicking in the accept loop's
/// warning, and to lose its SQLite writer thread for good).
#[tokio::test]
async fn logging_to_a_full_disk_never_stops_the_server() {
    let tmp = TempDir::new("full-stderr");
    let data = tmp.join("data");
    // The secrets are generated by a first start whose stderr works.
    let first = Server::serve(&data);
    drop(first);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let port = free_port();
    let mut server = Raw::serve(port, &data, full.into(), &["--log-level", "debug"]);
    let addr = format!("127.0.0.1:{port}");
    healthy(&addr).await;
    busy_work(&addr, &data).await;
    assert!(server.alive(), "the server died");
    let (status, body) = get(&addr, "/health").await.expect("health");
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = get(&addr, "/metrics").await.expect("metrics");
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("the dropped-lines metric");
    assert!(dropped > 0, "nothing was dropped: was anything logged?");
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
}

/// Opens and closes `n` polling sessions, one after the other; each logs two lines at
/// debug level ("HTTP session opened", "HTTP session ended"). Checks each answer.
async fn chatty_work(addr: &str, data: &Path, n: usize) {
    let body = json!([{"id": 1, "cmd": "connect", "token": token(data, "chatty")},
                      {"id": 2, "cmd": "close"}])
    .to_string();
    let request = format!(
        "POST /poll?wait=0 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..n {
        let (status, answer) = http(addr, &request).await.expect("poll");
        assert_eq!(status, 200, "{answer}");
    }
}

/// Issue 10, point 7: a stderr pipe nobody reads fills after 64 KiB; the server's tasks
/// must not wait for it. At debug level the work below logs several times that much
/// (about 300 bytes per session).
#[tokio::test]
async fn a_stderr_nobody_reads_never_blocks_the_server() {
    let tmp = TempDir::new("unread-stderr");
    let data = tmp.join("data");
    drop(Server::serve(&data));
    let port = free_port();
    // Piped, and the read end is kept open but never read.
    let mut server = Raw::serve(port, &data, Stdio::piped(), &["--log-level", "debug"]);
    let addr = format!("127.0.0.1:{port}");
    healthy(&addr).await;
    chatty_work(&addr, &data, 1000).await;
    busy_work(&addr, &data).await;
    assert!(server.alive(), "the server died");
    assert_eq!(get(&addr, "/health").await.map(|(s, _)| s), Ok(200));
}

/// Issue 10, point 3: an empty or short secret from the environment or the TOML file is
/// refused at start-up (exit 2), and the message names where it came from.
#[test]
fn empty_or_short_secrets_are_refused_at_start_up() {
    let tmp = TempDir::new("secrets");
    let data = tmp.join("data");
    let serve = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(name);
            }
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(extra)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run switchboard")
    };
    let out = serve(&[("SWITCHBOARD_API_KEY", "")], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SWITCHBOARD_API_KEY") && stderr.contains("empty"),
        "{stderr}"
    );
    let out = serve(&[("SWITCHBOARD_TOKEN_SECRET", "too-short")], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SWITCHBOARD_TOKEN_SECRET") && stderr.contains("at least 32"),
        "{stderr}"
    );
    let config = tmp.join("empty-key.toml");
    std::fs::write(&config, "[auth]\napi_key = \"\"\n").expect("write the config");
    let config = config.to_str().expect("UTF-8").to_owned();
    let out = serve(&[], &["--config", &config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&config) && stderr.contains("auth.api_key"),
        "{stderr}"
    );
    // Nothing was generated or started meanwhile.
    assert!(!data.join("switchboard.db").exists());
}

/// Issue 10, point 15: an HTTP session's id is a bearer credential; even at trace level
/// it never reaches the log.
#[tokio::test]
async fn http_session_ids_never_reach_the_log() {
    let tmp = TempDir::new("sid-log");
    let data = tmp.join("data");
    let server = Server::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "trace",
        "--data-dir",
        data.to_str().expect("UTF-8"),
    ]);
    let tok = token(&data, "alice");
    let body = json!([{"id": 1, "cmd": "connect", "token": tok},
                      {"id": 2, "cmd": "subscribe", "channel": "chat:x"}])
    .to_string();
    let addr = &server.addr;
    let (status, answer) = http(
        addr,
        &format!(
            "POST /poll?wait=0 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
    .expect("poll");
    assert_eq!(status, 200, "{answer}");
    let sid = serde_json::from_str::<serde_json::Value>(&answer).expect("JSON")["session"]
        .as_str()
        .expect("session")
        .to_owned();
    let (status, _) = http(
        addr,
        &format!("GET /poll?session={sid}&ack=3&wait=0 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
    .expect("poll");
    assert_eq!(status, 200);
    let stderr = server.stop();
    assert!(
        stderr.contains("HTTP session opened"),
        "trace logging is on"
    );
    assert!(
        !stderr.contains(&sid),
        "the session id was logged:\n{stderr}"
    );
}

/// Issue 10, point 2: out of file descriptors, `accept` fails; the server backs off,
/// warns once (not 20 times a second), and serves again once descriptors are free.
#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_with_one_warning() {
    let tmp = TempDir::new("emfile");
    let data = tmp.join("data");
    drop(Server::serve(&data));
    // Room for the runtime, the store and a few sockets only.
    let args: Vec<String> = [
        "--nofile=48:48",
        "--",
        env!("CARGO_BIN_EXE_switchboard"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "warn",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([data.display().to_string()])
    .collect();
    let proc = Proc::start_program("prlimit", &args);
    let addr = proc.stderr.until("listening on ");
    healthy(&addr).await;
    // Hold many connections: the later ones wait in the backlog while accept fails.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(&addr).await {
            held.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(held);
    healthy(&addr).await;
    let log = proc.stderr.seen();
    let warnings = log.matches("accept failed").count();
    assert!(warnings >= 1, "no warning:\n{log}");
    assert!(warnings <= 2, "{warnings} warnings in 1.5 s:\n{log}");
}
