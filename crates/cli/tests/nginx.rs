//! nginx in front of a group of nodes (issue 15): Debian's nginx runs
//! docs/nginx/switchboard.conf itself, with this test's ports and paths filled in, in front
//! of two `serve --engine redis` nodes that share one real redis-server. Through nginx, with
//! round-robin and no sticky sessions: a WebSocket client (upgrade, Origin), an SSE session
//! whose commands and resumed stream land on both nodes, a long-poll session whose polls
//! alternate between them; nginx's access log (the documented format, which names the
//! node of each request) proves that both nodes served them.
//!
//! Skipped, with a message, where nginx or redis-server is not installed; scripts/test
//! installs both and sets `SWITCHBOARD_REQUIRE_NGINX` and `SWITCHBOARD_REQUIRE_REDIS`, under
//! which a missing one fails the test. `NGINX` names another nginx binary.

use std::collections::BTreeMap;
use std::net::TcpStream as StdTcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_client::poll::Answer;
use switchboard_client::{Client, EventStream, HttpConnection, LongPoll};
use switchboard_redis_fixture::RedisServer;
use tokio::net::TcpStream;

use crate::util::{Server, TempDir, WAIT, Ws, api_key, api_ok, bounded, token};

/// The configuration the documentation shows; the test runs this file, not a copy.
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/nginx/switchboard.conf"
);

/// Debian's nginx (packages nginx-light or nginx).
const NGINX: &str = "/usr/sbin/nginx";

/// The nginx binary to run, or `None` (after saying so) when it is not installed and not
/// required.
fn nginx_binary() -> Option<String> {
    let binary = std::env::var("NGINX").unwrap_or_else(|_| NGINX.into());
    let installed = Command::new(&binary)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Some(binary);
    }
    if std::env::var_os("SWITCHBOARD_REQUIRE_NGINX").is_some() {
        panic!("{binary} is not installed, and SWITCHBOARD_REQUIRE_NGINX is set");
    }
    eprintln!(
        "SKIPPED: this test needs nginx ({binary}), which is not installed (scripts/test installs nginx-light)"
    );
    None
}

/// A node of the group, configured as docs/deployment.md says: nginx (on 127.0.0.1 here)
/// is a trusted proxy, and the allowed host is the public name, which is also the node's
/// own address here. The secrets come from `secrets_from`, the first node's directory.
fn node(redis: &RedisServer, dir: &TempDir, secrets_from: Option<&TempDir>) -> Server {
    let settings = "allowed_hosts = [\"127.0.0.1\"]\ntrusted_proxies = [\"127.0.0.1\"]\n";
    Server::redis_node(&redis.url(), dir, secrets_from, settings, "")
}

/// `text` with its one occurrence of `from` replaced; a documented line the test relies on
/// that moved or changed fails here, by name.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(found, 1, "{from:?} appears {found} times in {CONFIG}");
    text.replacen(from, to, 1)
}

/// The documented configuration with the test's ports and paths: the upstream's first
/// servers become `nodes` (the others go), `listen 80` becomes a loopback port, the logs
/// go to `dir`, and so do the temporary files (Debian's nginx would use /var/lib/nginx).
fn render(documented: &str, nodes: &[&str], port: u16, dir: &Path) -> String {
    let dir = dir.to_str().expect("UTF-8 path");
    let mut servers = 0;
    let mut lines = Vec::new();
    for line in documented.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("server 10.0.0.") {
            servers += 1;
            if let Some(node) = nodes.get(servers - 1) {
                let params = rest.split_once(' ').map_or("", |(_, params)| params);
                lines.push(format!("        server {node} {params}"));
            }
            continue;
        }
        lines.push(line.to_owned());
    }
    assert!(
        servers >= nodes.len(),
        "{CONFIG} lists {servers} upstream servers at 10.0.0.*, fewer than {}",
        nodes.len()
    );
    let mut text = lines.join("\n");
    text = replace_once(&text, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    text = replace_once(
        &text,
        "\nhttp {\n",
        &format!(
            "\nhttp {{\n    client_body_temp_path {dir}/body;\n    proxy_temp_path {dir}/proxy;\n    \
             fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n    \
             scgi_temp_path {dir}/scgi;\n"
        ),
    );
    assert!(text.contains("/var/log/nginx/"), "{CONFIG} logs elsewhere");
    text.replace("/var/log/nginx/", &format!("{dir}/"))
}

/// A free port on 127.0.0.1 (free when asked; nginx binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// nginx in the foreground, stopped when dropped.
struct Nginx {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    dir: TempDir,
}

impl Nginx {
    /// Runs the documented configuration in front of `nodes`, and waits until it accepts
    /// connections.
    fn start(binary: &str, dir: TempDir, nodes: &[&str]) -> Nginx {
        let documented = std::fs::read_to_string(CONFIG).expect("read the documented config");
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, render(&documented, nodes, port, &dir.0)).expect("write conf");
        let stderr = std::fs::File::create(dir.join("stderr")).expect("nginx's stderr");
        let child = Command::new(binary)
            .arg("-p")
            .arg(format!("{}/", dir.path()))
            .arg("-c")
            .arg(&conf)
            // Debian's default pid file is /run/nginx.pid: the system's nginx has it.
            .args(["-g", &format!("daemon off; pid {}/nginx.pid;", dir.path())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + WAIT;
        while StdTcpStream::connect(&nginx.addr).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {} after {WAIT:?}:\n{}",
                nginx.addr,
                nginx.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The access log as written so far (nginx writes each line when its request ends).
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("switchboard.access.log")).unwrap_or_default()
    }

    /// The nodes (`upstream=` addresses) that served requests `METHOD PATH`, in order.
    fn upstreams(&self, method: &str, path: &str) -> Vec<String> {
        let request = format!("\"{method} {path} HTTP/");
        self.access_log()
            .lines()
            .filter(|line| line.contains(&request))
            .filter_map(|line| line.split_once(" upstream=").map(|(_, up)| up.to_owned()))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them running).
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many requests each node served, by its address, of those in `upstreams`.
fn per_node(upstreams: &[String], nodes: &[&str]) -> Vec<usize> {
    nodes
        .iter()
        .map(|node| upstreams.iter().filter(|up| up.contains(node)).count())
        .collect()
}

/// Asserts that `METHOD PATH` went to every node, at least `least` requests in all.
fn spread(nginx: &Nginx, method: &str, path: &str, nodes: &[&str], least: usize) {
    let upstreams = nginx.upstreams(method, path);
    let counts = per_node(&upstreams, nodes);
    assert!(
        upstreams.len() >= least && counts.iter().all(|&n| n > 0),
        "{method} {path}: {} requests, per node {counts:?} (nodes {nodes:?}): {upstreams:?}\n{}",
        upstreams.len(),
        nginx.access_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sse_and_long_polling_through_nginx_round_robin() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (dir_a, dir_b) = (TempDir::new("nginx-a"), TempDir::new("nginx-b"));
    let a = node(&redis, &dir_a, None);
    let b = node(&redis, &dir_b, Some(&dir_a));
    let nodes = [a.addr.as_str(), b.addr.as_str()];
    let nginx = Nginx::start(&binary, TempDir::new("nginx-proxy"), &nodes);
    let key = api_key(&dir_a.0);

    websocket(&nginx, &nodes, &key, &token(&dir_a.0, "wendy")).await;
    let sse_sid = sse(&nginx, &nodes, &key, &token(&dir_a.0, "sam")).await;
    let poll_sid = long_poll(&nginx, &nodes, &key, &token(&dir_a.0, "paula")).await;

    // /health is the node's; /metrics is hidden from the public name (scraped per node).
    let mut conn = bounded("connect to nginx", HttpConnection::connect(&nginx.addr))
        .await
        .expect("connect to nginx");
    let health = bounded("GET /health", conn.request("GET", "/health", &[], ""))
        .await
        .expect("GET /health");
    assert_eq!(
        (health.status, health.text()),
        (200, r#"{"status":"ok"}"#.into())
    );
    let metrics = bounded("GET /metrics", conn.request("GET", "/metrics", &[], ""))
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status, 403, "{}", metrics.text());

    // The documented log format keeps session ids out of the log.
    let log = nginx.access_log();
    for secret in ["session=", sse_sid.as_str(), poll_sid.as_str()] {
        assert!(
            !log.contains(secret),
            "{secret:?} in the access log:\n{log}"
        );
    }
    let all: Vec<String> = log
        .lines()
        .filter_map(|line| line.split_once(" upstream=").map(|(_, up)| up.to_owned()))
        .collect();
    eprintln!(
        "requests per node through nginx: {:?}",
        per_node(&all, &nodes)
    );
}

/// The publications among `pushes`, as (offset, data).
fn publications(pushes: impl IntoIterator<Item = Value>) -> Vec<(u64, Value)> {
    pushes
        .into_iter()
        .filter(|p| p["push"] == "publication")
        .map(|p| (p["offset"].as_u64().unwrap_or(0), p["data"].clone()))
        .collect()
}

/// A WebSocket through nginx: the upgrade passes, the page's own origin (the public name
/// with nginx's port, as nginx forwards it) is accepted and another site's refused, and a
/// subscriber gets what the API of each node and of nginx publishes.
async fn websocket(nginx: &Nginx, nodes: &[&str], key: &str, token: &str) {
    let handshake = |origin: String| async move {
        let stream = TcpStream::connect(&nginx.addr).await.expect("connect");
        bounded(
            "WebSocket handshake",
            Client::handshake(stream, &nginx.addr, "/ws", &[("Origin", &origin)]),
        )
        .await
    };
    let own = format!("http://{}", nginx.addr);
    handshake(own.clone())
        .await
        .unwrap_or_else(|e| panic!("a page from {own} refused through nginx: {e}"));
    let refused = handshake("http://evil.example".into()).await;
    assert!(refused.is_err(), "another site's page got a WebSocket");

    let (mut ws, hello) = Ws::connect(&nginx.addr, token).await;
    assert_eq!(hello["user"], "wendy", "{hello}");
    ws.ok(json!({"cmd": "subscribe", "channel": "chat:nginx-ws"}))
        .await;
    let mut sent = Vec::new();
    for (n, via) in [nodes[0], nodes[1], nginx.addr.as_str()]
        .into_iter()
        .enumerate()
    {
        let data = json!({"n": n, "via": via});
        let body = json!({"channel": "chat:nginx-ws", "data": data});
        let published = api_ok(via, key, "publish", &body).await;
        sent.push((published["offset"].as_u64().unwrap_or(0), data));
    }
    let mut got = publications(ws.take_pushes());
    while got.len() < sent.len() {
        got.extend(publications([ws.push().await]));
    }
    assert_eq!(got, sent);
    assert_eq!(
        sent.iter().map(|(offset, _)| *offset).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

/// Reads `stream` until `done` says that what was read is enough; every event's id and
/// JSON, in order.
async fn read_events(
    stream: &mut EventStream,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    while !done(&events) {
        let event = bounded("an SSE event", stream.next_event())
            .await
            .expect("read the stream")
            .unwrap_or_else(|| panic!("the stream ended after {events:?}"));
        let json = event.json().expect("event data");
        events.push((event.id().unwrap_or_default().to_owned(), json));
    }
    events
}

/// An SSE session through nginx: the stream opens on one node, its commands go to
/// `/sse/send` in turn on both (those that land on the other node are forwarded), the
/// replies and publications arrive once each; the stream, cut, resumes with
/// `Last-Event-ID` on the other node. The session id.
async fn sse(nginx: &Nginx, nodes: &[&str], key: &str, token: &str) -> String {
    let mut stream = bounded("GET /sse", EventStream::open(&nginx.addr, "/sse", &[]))
        .await
        .expect("GET /sse through nginx");
    let first = bounded("the session event", stream.next_event())
        .await
        .expect("read the stream")
        .expect("a session event");
    assert_eq!(first.kind(), Some("session"));
    let sid = first.json().expect("JSON")["session"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let channel = "chat:nginx-sse";
    let commands = [
        json!([{"id": 1, "cmd": "connect", "token": token},
               {"id": 2, "cmd": "subscribe", "channel": channel}]),
        json!({"id": 3, "cmd": "publish", "channel": channel, "data": {"n": 1}}),
        json!({"id": 4, "cmd": "presence", "channel": channel}),
        json!({"id": 5, "cmd": "publish", "channel": channel, "data": {"n": 2}}),
        json!({"id": 6, "cmd": "ping"}),
    ];
    // One keep-alive connection to nginx: it still picks a node for each request.
    let mut conn = bounded("connect to nginx", HttpConnection::connect(&nginx.addr))
        .await
        .expect("connect to nginx");
    let path = format!("/sse/send?session={sid}");
    let headers = [("Content-Type", "application/json")];
    for command in &commands {
        let answer = bounded(
            "POST /sse/send",
            conn.request("POST", &path, &headers, command.to_string()),
        )
        .await
        .expect("POST /sse/send through nginx");
        assert_eq!(answer.status, 202, "{command}: {}", answer.text());
    }
    api_ok(
        nodes[1],
        key,
        "publish",
        &json!({"channel": channel, "data": {"n": 3}}),
    )
    .await;
    let events = read_events(&mut stream, |events| {
        events.iter().filter(|(_, e)| e.get("id").is_some()).count() == 6
            && events
                .iter()
                .filter(|(_, e)| e["push"] == "publication")
                .count()
                == 3
    })
    .await;
    let seqs: Vec<String> = (1..=events.len())
        .map(|seq| format!("{sid}:{seq}"))
        .collect();
    let ids: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, seqs, "every message once, in order");
    let replies: Vec<&Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.get("id").is_some())
        .collect();
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply["id"], n + 1, "{reply}");
        assert!(reply.get("error").is_none(), "{reply}");
    }
    assert_eq!(replies[0]["result"]["user"], "sam");
    assert!(
        replies[3]["result"]["presence"].get("sam").is_some(),
        "{}",
        replies[3]
    );
    let published = publications(events.iter().map(|(_, e)| e.clone()));
    let numbers: Vec<(u64, Value)> = published
        .into_iter()
        .map(|(offset, data)| (offset, data["n"].clone()))
        .collect();
    assert_eq!(numbers, [(1, json!(1)), (2, json!(2)), (3, json!(3))]);
    spread(nginx, "POST", "/sse/send", nodes, commands.len());

    // Cut the stream, publish, and resume after the last event, on whichever node nginx
    // picks: what was published meanwhile arrives, and nothing before it again.
    let last = ids.last().cloned().unwrap_or_default();
    drop(stream);
    api_ok(
        nodes[0],
        key,
        "publish",
        &json!({"channel": channel, "data": {"n": 4}}),
    )
    .await;
    let mut stream = bounded(
        "GET /sse with Last-Event-ID",
        EventStream::open(&nginx.addr, "/sse", &[("Last-Event-ID", &last)]),
    )
    .await
    .expect("resume through nginx");
    let events = read_events(&mut stream, |events| !events.is_empty()).await;
    let (id, event) = &events[0];
    assert_eq!(id, &format!("{sid}:{}", ids.len() + 1));
    assert_eq!(
        (
            event["push"].clone(),
            event["offset"].clone(),
            event["data"]["n"].clone()
        ),
        (json!("publication"), json!(4), json!(4)),
        "{event}"
    );
    sid
}

/// Appends the messages of a poll answer to `messages`.
fn take(messages: &mut Vec<Value>, answer: Answer) {
    for message in answer.messages() {
        messages.push(serde_json::from_slice(message).expect("a JSON message"));
    }
}

/// A long-poll session through nginx: every poll is a new request that nginx sends to the
/// next node, most of them held until a publication (from either node's API) arrives;
/// each publication is received once, in order.
async fn long_poll(nginx: &Nginx, nodes: &[&str], key: &str, token: &str) -> String {
    const PUBLICATIONS: u64 = 6;
    let channel = "chat:nginx-poll";
    let mut session = bounded("connect to nginx", LongPoll::connect(&nginx.addr))
        .await
        .expect("connect to nginx");
    let open = json!([{"id": 1, "cmd": "connect", "token": token},
                      {"id": 2, "cmd": "subscribe", "channel": channel}]);
    let mut messages: Vec<Value> = Vec::new();
    take(
        &mut messages,
        bounded("the first poll", session.poll(&open.to_string(), false))
            .await
            .expect("POST /poll through nginx"),
    );
    let mut polls = 1;
    for n in 1..=PUBLICATIONS {
        // Published a little after the poll is sent, so that the poll is held for it.
        let via = nodes[(n % 2) as usize].to_owned();
        let key = key.to_owned();
        let body = json!({"channel": channel, "data": {"n": n}});
        let publisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            api_ok(&via, &key, "publish", &body).await
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = bounded("a long poll", session.poll("", true))
                .await
                .expect("POST /poll through nginx");
            polls += 1;
            let before = messages.len();
            take(&mut messages, answer);
            let arrived = messages[before..]
                .iter()
                .any(|m| m["push"] == "publication" && m["data"]["n"] == n);
            if arrived {
                break;
            }
            assert!(Instant::now() < deadline, "publication {n} never came");
        }
        publisher.await.expect("the publisher");
    }
    let replies: Vec<&Value> = messages.iter().filter(|m| m.get("id").is_some()).collect();
    assert_eq!(replies.len(), 2, "{messages:?}");
    assert_eq!(replies[0]["result"]["user"], "paula", "{}", replies[0]);
    let mut seen = BTreeMap::new();
    for (offset, data) in publications(messages.iter().cloned()) {
        *seen.entry(offset).or_insert(0) += 1;
        assert_eq!(data["n"], offset, "{data}");
    }
    let once: BTreeMap<u64, i32> = (1..=PUBLICATIONS).map(|offset| (offset, 1)).collect();
    assert_eq!(seen, once, "each publication once: {messages:?}");
    let offsets: Vec<u64> = publications(messages.iter().cloned())
        .into_iter()
        .map(|(offset, _)| offset)
        .collect();
    assert!(offsets.is_sorted(), "in order: {offsets:?}");
    spread(nginx, "POST", "/poll", nodes, polls);
    session.session().unwrap_or_default().to_owned()
}
