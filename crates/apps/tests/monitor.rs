//! Monitoring over real sockets: an agent (a WebSocket with an agent token, publishing
//! what the contract says an agent publishes) fills the registry; thresholds and silence
//! become events on `metrics:@events` and webhook calls; the hub reports itself as
//! `@hub`; `POST /api/ingest` with and without the key; the `monitor.` methods refuse
//! everyone but administrators; `/logs` and `/monitor` are served with the CSP.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_apps::admin;
use switchboard_client::Client;
use switchboard_server::auth::{agent_claims, mint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::{Server, WAIT, Ws, body, bounded, session_of, start, start_with};

/// The test server's secrets (util.rs).
const TOKEN_SECRET: &str = "test-token-secret-0123456789abcdef";
/// The API key `util::start_with` gives the server.
const API_KEY: &str = "test-api-key-0123456789";

/// An administrator, signed in and connected.
async fn admin_ws(server: &Server) -> Ws {
    admin::add_user(
        server.apps.store().as_ref(),
        "Root",
        "root-password-1",
        true,
    )
    .expect("add the administrator");
    let signin = server
        .post(
            "/auth/signin",
            json!({"name": "root", "password": "root-password-1"}),
            None,
        )
        .await;
    assert_eq!(signin.status, 200, "{}", signin.text());
    server.connect(&session_of(&signin)).await
}

/// A connection with `token`.
async fn connect_with(server: &Server, token: &str) -> Ws {
    let url = format!("ws://{}/ws", server.addr);
    let mut client = bounded("open", Client::open(&url)).await.expect("open");
    bounded("connect", client.connect(Some(token)))
        .await
        .expect("connect");
    Ws(client)
}

/// An agent for `host`, as `switchboard token --agent` would make its token.
async fn agent(server: &Server, host: &str) -> Ws {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let token = mint(TOKEN_SECRET, &agent_claims(host, exp).expect("claims")).expect("mint");
    connect_with(server, &token).await
}

fn hello(host: &str) -> Value {
    json!({"type": "hello", "time": 1, "host": host, "version": "0.1.0", "os": "Debian 12",
        "cores": 2, "interval_ms": {"watched": 1000, "idle": 10000},
        "logs": [{"name": "syslog", "kind": "file"}, {"name": "vmstat", "kind": "command"}]})
}

fn sample(cpu: f64) -> Value {
    json!({"type": "sample", "time": 2, "cpu": {"total": cpu, "cores": [cpu, cpu]},
        "load": [0.1, 0.1, 0.1], "mem": {"total": 1000, "used": 100, "available": 900},
        "disks": [{"mount": "/", "total": 100, "used": 10}], "net": [{"iface": "eth0", "rx": 10, "tx": 20}]})
}

async fn publish(ws: &mut Ws, channel: &str, data: Value) {
    ws.ok(json!({"cmd": "publish", "channel": channel, "data": data}))
        .await;
}

/// The registry's entry of `host`, once `ready` holds for it (the registry is fed by a
/// task: a moment after the publication).
async fn host_where(root: &mut Ws, host: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let hosts = root.rpc("monitor.hosts", json!({})).await;
        if let Some(entry) = hosts["hosts"]
            .as_array()
            .and_then(|list| list.iter().find(|h| h["host"] == host))
        {
            if ready(entry) {
                return entry.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host} never got there: {hosts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next event on `metrics:@events` (root subscribed).
async fn event(root: &mut Ws, what: &str) -> Value {
    root.push_where(what, |p| {
        p["push"] == "publication" && p["channel"] == "metrics:@events"
    })
    .await["data"]
        .clone()
}

#[tokio::test]
async fn an_agent_fills_the_registry_and_crossings_and_silence_become_events() {
    let server = start(|o| o.monitor.stale_after = Duration::from_millis(1500)).await;
    let mut root = admin_ws(&server).await;
    root.ok(json!({"cmd": "subscribe", "channel": "metrics:@events"}))
        .await;
    let mut web1 = agent(&server, "web1").await;
    publish(&mut web1, "metrics:web1", hello("web1")).await;
    publish(&mut web1, "metrics:web1", sample(20.0)).await;
    let entry = host_where(&mut root, "web1", |h| !h["sample"].is_null()).await;
    assert_eq!(entry["version"], "0.1.0");
    assert_eq!(entry["os"], "Debian 12");
    assert_eq!(entry["cores"], 2);
    assert_eq!(entry["logs"][0], json!({"name": "syslog", "kind": "file"}));
    assert_eq!(entry["sample"]["cpu"]["total"], 20.0);
    assert_eq!(entry["stale"], false);
    assert_eq!(entry["levels"], json!({}));

    // Over the critical threshold: one event, and the level in the registry.
    publish(&mut web1, "metrics:web1", sample(99.0)).await;
    let crit = event(&mut root, "the cpu event").await;
    assert_eq!(
        (
            &crit["type"],
            &crit["host"],
            &crit["metric"],
            &crit["level"]
        ),
        (
            &json!("event"),
            &json!("web1"),
            &json!("cpu"),
            &json!("crit")
        )
    );
    assert_eq!(crit["value"], 99.0);
    assert_eq!(crit["threshold"], 95.0);
    let entry = host_where(&mut root, "web1", |h| h["levels"]["cpu"] == "crit").await;
    assert_eq!(entry["sample"]["cpu"]["total"], 99.0);
    // Back under: ok.
    publish(&mut web1, "metrics:web1", sample(10.0)).await;
    let ok = event(&mut root, "the cpu back to ok").await;
    assert_eq!((&ok["metric"], &ok["level"]), (&json!("cpu"), &json!("ok")));

    // Silence past stale_after: stale; a sample again: back.
    let stale = event(&mut root, "web1 stale").await;
    assert_eq!(
        (&stale["host"], &stale["metric"], &stale["level"]),
        (&json!("web1"), &json!("reporting"), &json!("stale"))
    );
    assert!(stale["value"].as_f64().expect("seconds") >= 1.5, "{stale}");
    host_where(&mut root, "web1", |h| h["stale"] == true).await;
    publish(&mut web1, "metrics:web1", sample(10.0)).await;
    let back = event(&mut root, "web1 back").await;
    assert_eq!(
        (&back["metric"], &back["level"]),
        (&json!("reporting"), &json!("ok"))
    );
    host_where(&mut root, "web1", |h| h["stale"] == false).await;
    assert!(server.apps.metrics().monitor_events.get() >= 4);

    // The hub reports itself, every second, as an agent would.
    let hub = host_where(&mut root, "@hub", |h| !h["sample"].is_null()).await;
    let figures = &hub["sample"]["hub"];
    assert!(
        figures["connections"].as_i64().expect("connections") >= 2,
        "{hub}"
    );
    assert!(
        figures["websocket"].as_i64().expect("websocket") >= 2,
        "{hub}"
    );
    assert!(figures["publications_per_s"].is_number(), "{hub}");
    assert!(figures["store_write_ms"].is_number(), "{hub}");
    // The events channel is not a host.
    let hosts = root.rpc("monitor.hosts", json!({})).await;
    assert!(
        hosts["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .all(|h| h["host"] != "@events"),
        "{hosts}"
    );
    let config = root.rpc("monitor.config", json!({})).await;
    assert_eq!(config["stale_after"], 1.5);
    assert_eq!(
        config["thresholds"]["cpu"],
        json!({"warn": 85.0, "crit": 95.0})
    );
    assert_eq!(config["webhook"], false);
}

/// A one-shot HTTP server: answers each request with `status`, sends each body it got.
async fn hook(status: u16) -> (String, tokio::sync::mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + length {
                            let body = &got[end + 4..end + 4 + length];
                            if let Ok(v) = serde_json::from_slice(body) {
                                let _ = tx.send(v).await;
                            }
                            let answer = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = socket.write_all(answer.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn events_reach_the_webhook_and_failures_are_counted() {
    let (url, mut calls) = hook(200).await;
    let server = start(move |o| o.monitor.webhook_url = Some(url)).await;
    let mut root = admin_ws(&server).await;
    assert_eq!(root.rpc("monitor.config", json!({})).await["webhook"], true);
    let mut db1 = agent(&server, "db1").await;
    publish(&mut db1, "metrics:db1", sample(90.0)).await;
    let call = bounded("the webhook call", calls.recv())
        .await
        .expect("a call");
    assert_eq!(
        (
            &call["type"],
            &call["host"],
            &call["metric"],
            &call["level"]
        ),
        (
            &json!("event"),
            &json!("db1"),
            &json!("cpu"),
            &json!("warn")
        )
    );
    let metrics = server.apps.metrics();
    bounded("the call counted", async {
        while metrics.monitor_webhook_calls.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // A webhook that answers 500, and one where nobody listens: counted, and the events
    // still on metrics:@events.
    for status in [Some(500), None] {
        let url = match status {
            Some(status) => hook(status).await.0,
            None => {
                let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let url = format!("http://{}/hook", closed.local_addr().expect("addr"));
                drop(closed);
                url
            }
        };
        let server = start(move |o| {
            o.monitor.webhook_url = Some(url);
            o.monitor.webhook_timeout = Duration::from_secs(2);
        })
        .await;
        let mut root = admin_ws(&server).await;
        root.ok(json!({"cmd": "subscribe", "channel": "metrics:@events"}))
            .await;
        let mut db1 = agent(&server, "db1").await;
        publish(&mut db1, "metrics:db1", sample(99.0)).await;
        assert_eq!(event(&mut root, "the event").await["level"], "crit");
        let metrics = server.apps.metrics();
        bounded("the failure counted", async {
            while metrics.monitor_webhook_failures.get() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(metrics.monitor_webhook_calls.get(), 0, "{status:?}");
    }
}

/// `POST /api/ingest` with `headers` and `body`.
async fn ingest(server: &Server, headers: &[(&str, &str)], body_json: Value) -> (u16, Value) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let response = server
        .request("POST", "/api/ingest", &all, body_json.to_string())
        .await;
    (response.status, body(&response))
}

#[tokio::test]
async fn ingest_takes_custom_metrics_with_the_key_only() {
    // The key the server was started with (its Secrets), not one in the configuration.
    let server = start_with(|_| {}, |_| {}).await;
    let mut root = admin_ws(&server).await;
    root.ok(json!({"cmd": "subscribe", "channel": "metrics:jobs"}))
        .await;
    let good = json!({"host": "jobs", "metrics": {"queue_depth": 12, "lag.s": 0.5}, "time": 1234});

    // No key, a wrong key: 401, code 101, as the server API answers; nothing published.
    for headers in [
        vec![],
        vec![("X-API-Key", "wrong-key-0123456789012")],
        vec![("Authorization", "Bearer wrong")],
    ] {
        let (status, answer) = ingest(&server, &headers, good.clone()).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], 101, "{answer}");
    }

    let (status, answer) = ingest(&server, &[("X-API-Key", API_KEY)], good.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["channel"], "metrics:jobs");
    let push = root
        .push_where("the custom sample", |p| p["push"] == "publication")
        .await;
    assert_eq!(push["channel"], "metrics:jobs");
    assert_eq!(
        push["data"],
        json!({"type": "custom", "time": 1234, "metrics": {"lag.s": 0.5, "queue_depth": 12.0}})
    );
    let entry = host_where(&mut root, "jobs", |h| h["custom"]["queue_depth"] == 12.0).await;
    assert_eq!(entry["custom_time"], 1234);

    // The key as a bearer token works too.
    let bearer = format!("Bearer {API_KEY}");
    let (status, _) = ingest(
        &server,
        &[("Authorization", bearer.as_str())],
        json!({"host": "jobs", "metrics": {"queue_depth": 3}}),
    )
    .await;
    assert_eq!(status, 200);
    host_where(&mut root, "jobs", |h| h["custom"]["queue_depth"] == 3.0).await;

    // Bodies it refuses: 400, code 107.
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("m{i}"), json!(i))).collect();
    for bad in [
        json!({"host": "@hub", "metrics": {"x": 1}}),
        json!({"host": "jobs", "metrics": {}}),
        json!({"host": "jobs", "metrics": many}),
        json!({"host": "jobs", "metrics": {"x": "high"}}),
        json!({"host": "jobs", "metrics": {"bad name": 1}}),
        json!({"host": "jobs", "metrics": {"x": 1}, "extra": true}),
    ] {
        let (status, answer) = ingest(&server, &[("X-API-Key", API_KEY)], bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {answer}");
        assert_eq!(answer["error"]["code"], 107, "{bad} -> {answer}");
    }
    assert!(server.apps.metrics().monitor_ingest_refused.get() >= 9);
    assert_eq!(server.apps.metrics().monitor_ingested.get(), 2);
}

#[tokio::test]
async fn monitor_methods_are_for_administrators_only() {
    let server = start_with(|c| c.allow_anonymous = true, |_| {}).await;
    let (_, mut bob) = server.user("bob").await;
    let mut anon = switchboard_client::Client::open(&format!("ws://{}/ws", server.addr))
        .await
        .expect("open");
    anon.connect(None).await.expect("connect anonymously");
    let mut anon = Ws(anon);
    let mut web1 = agent(&server, "web1").await;
    for ws in [&mut bob, &mut anon, &mut web1] {
        for (method, data) in [
            ("monitor.hosts", json!({})),
            ("monitor.config", json!({})),
            ("monitor.token", json!({"host": "evil"})),
            ("monitor.nope", json!({})),
        ] {
            let (code, message) = ws.rpc_err(method, data).await;
            assert_eq!(code, 103, "{method}: {message}");
        }
    }
    // Nor can they read the hosts' channels.
    let refused = bob
        .cmd(json!({"cmd": "subscribe", "channel": "metrics:web1"}))
        .await;
    assert_eq!(refused["error"]["code"], 103, "{refused}");

    // An administrator mints an agent token: it publishes to its host, nowhere else.
    let mut root = admin_ws(&server).await;
    let minted = root
        .rpc(
            "monitor.token",
            json!({"host": "new-host", "server": "http://hub.example:8000"}),
        )
        .await;
    let token = minted["token"].as_str().expect("a token");
    let command = minted["command"].as_str().expect("a command");
    assert!(
        command.contains("switchboard agent --server 'http://hub.example:8000'"),
        "{command}"
    );
    assert!(command.contains("SWITCHBOARD_AGENT_TOKEN='"), "{command}");
    let (code, _) = root
        .rpc_err("monitor.token", json!({"host": "../etc"}))
        .await;
    assert_eq!(code, 107);
    let mut new_host = connect_with(&server, token).await;
    publish(&mut new_host, "metrics:new-host", sample(1.0)).await;
    let other = new_host
        .cmd(json!({"cmd": "publish", "channel": "metrics:web1", "data": sample(1.0)}))
        .await;
    assert_eq!(other["error"]["code"], 103, "{other}");
    host_where(&mut root, "new-host", |h| !h["sample"].is_null()).await;
}

#[tokio::test]
async fn the_pages_are_served_with_the_csp() {
    let server = start(|o| o.assets = switchboard_apps::assets::FILES).await;
    for (path, script) in [
        ("/logs", "logs/logs.js"),
        ("/monitor", "monitor/monitor.js"),
    ] {
        let page = server.get(path, &[]).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.header("content-security-policy")
                .is_some_and(|csp| csp.contains("script-src 'self'")),
            "{path}"
        );
        assert!(page.text().contains(script), "{path}");
    }
}
