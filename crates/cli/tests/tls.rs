//! `serve --tls-cert FILE --tls-key FILE`: HTTPS and wss:// from the binary, `sub`, `pub`
//! and `bench` over TLS with `--ca`, SIGHUP reloading the certificate while a connection
//! stays open, the start-up errors, and Python's `ssl` as another client. The CA and
//! certificates are made here (rcgen).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;
use switchboard_client::{Client, Endpoint, HttpConnection, Tls};

use crate::util::{Proc, Server, TempDir, WAIT, api_key, bounded, json, run};

/// A test CA (PEM) and what signs with it.
struct TestCa {
    pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-sign");
        TestCa {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// Writes `ca.pem` and a server certificate for localhost/127.0.0.1 (`cert.pem`,
    /// `key.pem`) into `dir`; the three paths.
    fn write(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        let paths = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&paths.0, &self.pem).expect("write ca.pem");
        std::fs::write(&paths.1, cert.pem()).expect("write cert.pem");
        std::fs::write(&paths.2, key.serialize_pem()).expect("write key.pem");
        paths
    }
}

fn tls_serve(data: &Path, cert: &Path, key: &Path) -> Server {
    Server::serve_with(
        data,
        &[
            "--engine",
            "memory",
            "--allow-anonymous",
            "--tls-cert",
            cert.to_str().expect("a UTF-8 path"),
            "--tls-key",
            key.to_str().expect("a UTF-8 path"),
        ],
    )
}

/// A server on TLS with a certificate of a fresh test CA, its data in `tmp/data`.
struct TlsServer {
    ca: TestCa,
    /// The CA's certificate file, for `--ca`.
    ca_pem: PathBuf,
    data: PathBuf,
    server: Server,
}

impl TlsServer {
    fn start(tmp: &TempDir) -> TlsServer {
        let ca = TestCa::new("switchboard test CA");
        let (ca_pem, cert, key) = ca.write(&tmp.0);
        let data = tmp.join("data");
        let server = tls_serve(&data, &cert, &key);
        TlsServer {
            ca,
            ca_pem,
            data,
            server,
        }
    }
}

fn port(server: &Server) -> u16 {
    server
        .addr
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port in the address")
}

#[test]
fn sub_and_pub_speak_wss_and_https_with_a_ca_file() {
    let tmp = TempDir::new("tls-pubsub");
    let TlsServer {
        ca_pem,
        data,
        server,
        ..
    } = TlsServer::start(&tmp);
    let start_up = server.proc.stderr.seen();
    assert!(
        start_up.contains("switchboard: serving https://") && start_up.contains(" and wss://"),
        "{start_up}"
    );
    let port = port(&server);
    let wss = format!("wss://localhost:{port}/ws");
    let https = format!("https://localhost:{port}");
    let ca_arg = ca_pem.to_str().unwrap();

    let sub = Proc::start(&["sub", "chat:tls", "--url", &wss, "--ca", ca_arg]);
    sub.stderr.until("switchboard: subscribed to chat:tls");
    let key = api_key(&data);
    let (status, stdout, stderr) = run(&[
        "pub",
        "chat:tls",
        r#"{"n":1}"#,
        "--url",
        &https,
        "--ca",
        ca_arg,
        "--api-key",
        &key,
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(json(&stdout)["offset"], 1, "{stdout}");
    let line = json(&sub.stdout.next());
    assert_eq!(line["data"], json!({"n": 1}), "{line}");

    // Without --ca the test CA is not trusted: a clear TLS error, status 2.
    let (status, _, stderr) = run(&["pub", "chat:tls", "1", "--url", &https, "--api-key", &key]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("TLS") && stderr.contains("certificate"),
        "{stderr}"
    );

    sub.signal("INT");
    let (status, _, stderr) = sub.finish();
    assert!(status.success(), "{stderr}");
    server.stop();
}

/// SIGHUP: new handshakes see the new certificate, the connection opened before stays.
#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let tmp = TempDir::new("tls-reload");
    let old_ca = TestCa::new("old CA");
    let (_, cert, key) = old_ca.write(&tmp.0);
    let data = tmp.join("data");
    let server = tls_serve(&data, &cert, &key);
    let url = format!("wss://localhost:{}/ws", port(&server));
    let old_trust = Tls::from_ca_pem(old_ca.pem.as_bytes(), "old CA").unwrap();
    let mut before = bounded("open", Client::open_with(&url, Some(&old_trust)))
        .await
        .expect("wss:// with the old certificate");
    before.connect(None).await.expect("connect");
    before
        .result(json!({"cmd": "subscribe", "channel": "chat:hup"}))
        .await
        .expect("subscribe");

    let new_ca = TestCa::new("new CA");
    new_ca.write(&tmp.0);
    server.proc.signal("HUP");
    let new_trust = Tls::from_ca_pem(new_ca.pem.as_bytes(), "new CA").unwrap();
    // The reload happens in the server's own time: wait until a handshake sees it.
    let deadline = Instant::now() + WAIT;
    let mut after = loop {
        match Client::open_with(&url, Some(&new_trust)).await {
            Ok(client) => break client,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("the new certificate never came: {err}"),
        }
    };
    // A client that trusts only the old CA fails now. A fresh configuration: one that
    // connected before would resume its session (rustls' session cache), which needs no
    // certificate; resumption is kept on purpose, it spares reconnecting clients a full
    // handshake.
    let fresh_old = Tls::from_ca_pem(old_ca.pem.as_bytes(), "old CA").unwrap();
    assert!(
        Client::open_with(&url, Some(&fresh_old)).await.is_err(),
        "the old certificate is still presented"
    );
    after.connect(None).await.expect("connect");

    // The connection from before the reload still works both ways.
    let reply = bounded(
        "publish",
        before.result(json!({"cmd": "publish", "channel": "chat:hup", "data": "still here"})),
    )
    .await
    .expect("publish over the old connection");
    assert_eq!(reply["offset"], 1);
    let publication = loop {
        let push = bounded("push", before.next_push()).await.expect("push");
        if push["push"] == "publication" {
            break push;
        }
    };
    assert_eq!(publication["data"], "still here");

    // A reload of a broken key keeps serving with the certificate in use.
    std::fs::write(&key, "broken").unwrap();
    server.proc.signal("HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    bounded("open", Client::open_with(&url, Some(&new_trust)))
        .await
        .expect("still serving the new certificate");
    let stderr = server.stop();
    assert!(stderr.contains("TLS reload failed"), "{stderr}");
}

#[test]
fn unusable_tls_files_stop_the_start_with_a_clear_error() {
    let tmp = TempDir::new("tls-errors");
    let ca = TestCa::new("switchboard test CA");
    let (_, cert, key) = ca.write(&tmp.0);
    let other = tmp.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, _, other_key) = ca.write(&other);
    let missing = tmp.join("missing.pem");
    let data = tmp.join("data");
    for (cert, key, expected) in [
        (&cert, &missing, "cannot read the TLS private key"),
        (&missing, &key, "cannot read the TLS certificate"),
        (&cert, &other, "cannot read the TLS private key"),
        (&cert, &other_key, "does not match the certificate"),
    ] {
        let (status, _, stderr) = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--engine",
            "memory",
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]);
        assert_eq!(status.code(), Some(2), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
    // One flag without the other is refused by the argument parser.
    let (status, _, stderr) = run(&["serve", "--tls-cert", cert.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

/// Runs `script` with `python`, the server's port and the CA file as its arguments;
/// returns what it printed, failing the test if it failed.
fn run_python(python: &str, script: &str, port: u16, ca_pem: &std::path::Path) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            script,
            &port.to_string(),
            ca_pem.to_str().expect("a UTF-8 path"),
        ])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Another TLS client than ours: Python's `ssl` (OpenSSL) trusting the test CA gets the
/// health answer over HTTPS, with TLS 1.3; with TLS 1.1 at most it gets no handshake.
/// Skipped (said on stderr) without python3.
#[test]
fn python_ssl_talks_to_the_server_and_old_versions_are_refused() {
    if Command::new("python3")
        .arg("-c")
        .arg("import ssl")
        .output()
        .is_err()
    {
        eprintln!("python3 not found: skipping the Python ssl check");
        return;
    }
    let tmp = TempDir::new("tls-python");
    let TlsServer { ca_pem, server, .. } = TlsServer::start(&tmp);
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port)) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        print(s.version(), answer.split(b"\r\n")[0].decode())
old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
old.load_verify_locations(ca)
old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
old.maximum_version = ssl.TLSVersion.TLSv1_1
try:
    old.set_ciphers("ALL:@SECLEVEL=0")
except ssl.SSLError:
    pass
try:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with old.wrap_socket(raw, server_hostname="localhost") as s:
            print("old", s.version())
except (ssl.SSLError, OSError) as e:
    print("old refused")
"#;
    let stdout = run_python("python3", script, port(&server), &ca_pem);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("TLSv1.3 HTTP/1.1 200 OK"), "{stdout}");
    assert_eq!(lines.next(), Some("old refused"), "{stdout}");
    server.stop();
}

/// `switchboard_tls_handshake_failures_total` of the server on `port`, read over HTTPS
/// trusting `ca`.
async fn handshake_failures(port: u16, ca: &Tls) -> u64 {
    let endpoint = Endpoint::parse(&format!("https://localhost:{port}/metrics")).expect("URL");
    let mut conn = bounded("https", HttpConnection::connect_to(&endpoint, Some(ca)))
        .await
        .expect("HTTPS to the server");
    let answer = bounded("/metrics", conn.request("GET", "/metrics", &[], ""))
        .await
        .expect("GET /metrics");
    answer
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("switchboard_tls_handshake_failures_total "))
        .and_then(|value| value.parse().ok())
        .expect("the handshake failures counter in /metrics")
}

/// `bench fanout` with a wss:// URL and `--ca`: WebSocket, SSE and polling subscribers
/// all over TLS, nothing lost. Not one connection of the bench failed its handshake (a
/// bench that spoke plain text to the TLS port, as it did before it knew wss://, failed
/// every one); a ws:// URL to the same port does fail, and the server counts it.
#[tokio::test]
async fn bench_fanout_runs_over_wss_and_https_with_a_ca_file() {
    let tmp = TempDir::new("tls-bench");
    let TlsServer {
        ca,
        ca_pem,
        data,
        server,
    } = TlsServer::start(&tmp);
    let port = port(&server);
    let trust = Tls::from_ca_pem(ca.pem.as_bytes(), "the test CA").unwrap();
    let wss = format!("wss://localhost:{port}/ws");
    let (ca_arg, data_arg) = (ca_pem.to_str().unwrap(), data.to_str().unwrap());
    let pid = server.proc.child.id().to_string();
    for transport in ["ws", "sse", "longpoll"] {
        let (status, stdout, stderr) = run(&[
            "bench",
            "fanout",
            "--url",
            &wss,
            "--ca",
            ca_arg,
            "--data-dir",
            data_arg,
            "--transport",
            transport,
            "--subscribers",
            "10",
            "--rate",
            "20",
            "--duration",
            "1",
            "--conns-per-task",
            "4",
            "--server-pid",
            &pid,
        ]);
        assert!(status.success(), "{transport}: {status}\n{stderr}");
        let report = json(stdout.lines().last().unwrap_or_default());
        assert_eq!(report["transport"], transport, "{report}");
        assert_eq!(report["acked"], 20, "{report}");
        assert_eq!(report["delivered"], 200, "{report}");
        assert_eq!(report["lost"], 0, "{report}");
    }
    assert_eq!(handshake_failures(port, &trust).await, 0);

    // bench idle and bench flood take the same URLs.
    let (status, stdout, stderr) = run(&[
        "bench",
        "idle",
        "--url",
        &wss,
        "--ca",
        ca_arg,
        "--data-dir",
        data_arg,
        "--conns",
        "5",
        "--hold",
        "0.2",
    ]);
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stdout.starts_with("ready 5\n"), "{stdout}");
    let (status, stdout, stderr) = run(&[
        "bench",
        "flood",
        "--url",
        &format!("wss://127.0.0.1:{port}/ws"),
        "--ca",
        ca_arg,
        "--data-dir",
        data_arg,
        "--attackers",
        "2",
        "--duration",
        "1",
    ]);
    assert!(status.success(), "{status}\n{stderr}");
    let report = json(stdout.lines().last().unwrap_or_default());
    assert_eq!(report["legit_failed"], 0, "{report}");
    assert!(report["legit_ok"].as_u64() >= Some(15), "{report}");
    assert!(
        report["attack_answers"]["200"].as_u64() > Some(0),
        "{report}"
    );
    assert_eq!(handshake_failures(port, &trust).await, 0);

    // Without --ca the test CA is not trusted: the bench stops at once, saying why.
    let (status, _, stderr) = run(&[
        "bench",
        "fanout",
        "--url",
        &wss,
        "--data-dir",
        data_arg,
        "--subscribers",
        "1",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("certificate"), "{stderr}");
    // --ca means TLS: with a ws:// URL it is a mistake, not ignored.
    let plain = format!("ws://localhost:{port}/ws");
    let (status, _, stderr) = run(&[
        "bench",
        "fanout",
        "--url",
        &plain,
        "--ca",
        ca_arg,
        "--data-dir",
        data_arg,
    ]);
    assert!(!status.success());
    assert!(stderr.contains("--ca is for wss:// URLs"), "{stderr}");
    // Plain text to the TLS port: no session, and the server counts the handshake.
    let (status, _, stderr) = run(&[
        "bench",
        "fanout",
        "--url",
        &plain,
        "--data-dir",
        data_arg,
        "--subscribers",
        "1",
        "--duration",
        "0.5",
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(handshake_failures(port, &trust).await >= 1);
    server.stop();
}

/// Another WebSocket client than ours over TLS: Python's `websockets` (its own handshake
/// and framing, OpenSSL under it) opens wss:// trusting the test CA, connects, subscribes,
/// publishes and gets its publication back; with TLS 1.2 at most it still gets in, and a
/// context that does not trust the CA gets no socket. The Python is $SWITCHBOARD_PYTHON
/// (scripts/test makes a venv with `websockets`), else python3. Skipped (said on stderr)
/// when it has no `websockets`, unless SWITCHBOARD_REQUIRE_PYWS is set.
#[test]
fn python_websockets_chats_over_wss() {
    let python = std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has_websockets = Command::new(&python)
        .args(["-c", "import websockets.sync.client"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_websockets {
        let required = std::env::var_os("SWITCHBOARD_REQUIRE_PYWS").is_some();
        assert!(
            !required,
            "SWITCHBOARD_REQUIRE_PYWS is set, but {python} has no websockets"
        );
        eprintln!("SKIPPED: {python} has no websockets (pip install websockets)");
        return;
    }
    let tmp = TempDir::new("tls-pyws");
    let TlsServer { ca_pem, server, .. } = TlsServer::start(&tmp);
    let script = r#"
import json, ssl, sys
from websockets.sync.client import connect
port, ca = int(sys.argv[1]), sys.argv[2]
url = f"wss://localhost:{port}/ws"

def chat(ctx, channel):
    with connect(url, ssl=ctx, open_timeout=10) as ws:
        ws.send(json.dumps({"id": 1, "cmd": "connect"}))
        ws.send(json.dumps({"id": 2, "cmd": "subscribe", "channel": channel}))
        ws.send(json.dumps({"id": 3, "cmd": "publish", "channel": channel, "data": {"from": "python"}}))
        replies, publication = {}, None
        while len(replies) < 3 or publication is None:
            message = json.loads(ws.recv(timeout=10))
            if "id" in message:
                replies[message["id"]] = message
            elif message.get("push") == "publication":
                publication = message
        errors = [r for r in replies.values() if "error" in r]
        return ws.socket.version(), errors, publication["data"], replies[3]["result"]["offset"]

ctx = ssl.create_default_context(cafile=ca)
print(*chat(ctx, "vote:py13"))
tls12 = ssl.create_default_context(cafile=ca)
tls12.maximum_version = ssl.TLSVersion.TLSv1_2
print(*chat(tls12, "vote:py12"))
try:
    chat(ssl.create_default_context(), "vote:untrusted")
    print("untrusted accepted")
except ssl.SSLCertVerificationError:
    print("untrusted refused")
"#;
    let stdout = run_python(&python, script, port(&server), &ca_pem);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "TLSv1.3 [] {'from': 'python'} 1",
            "TLSv1.2 [] {'from': 'python'} 1",
            "untrusted refused"
        ],
        "{stdout}"
    );
    server.stop();
}
