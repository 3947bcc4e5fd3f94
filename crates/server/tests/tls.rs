//! TLS on the listening port: HTTPS and `wss://` on one port, the direct-write fan-out
//! over TLS, HSTS, the certificate reloaded while connections stay open, and the start-up
//! errors. Every certificate is made here by a test CA (rcgen), for `localhost` and
//! 127.0.0.1; clients trust only that CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use switchboard_client::{Api, Client, Endpoint, HttpConnection, Tls};
use switchboard_server::config::TlsConfig;

use crate::util::{API_KEY, WAIT, bounded, start_extended};

/// A test CA: its certificate (PEM) and what signs with it.
pub(crate) struct TestCa {
    pub(crate) pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1: (chain PEM, key PEM).
    pub(crate) fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the server certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A client configuration trusting this CA only.
    pub(crate) fn trust(&self) -> Tls {
        Tls::from_ca_pem(self.pem.as_bytes(), "the test CA").expect("trust the test CA")
    }
}

/// Writes a fresh server certificate of `ca` to `dir`: (cert path, key path).
pub(crate) fn write_server_cert(ca: &TestCa, dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.server_cert();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).expect("write cert.pem");
    std::fs::write(&key_path, key).expect("write key.pem");
    (cert_path, key_path)
}

/// A directory of its own for a test's files.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-tls-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("create the test dir");
    dir
}

/// A server with TLS from `ca` (and `hsts`), anonymous clients allowed; its TLS handle.
async fn tls_server(
    ca: &TestCa,
    hsts: Option<Duration>,
) -> (crate::util::Server, switchboard_server::Tls, PathBuf) {
    tls_server_with(ca, hsts, |_| {}).await
}

/// [`tls_server`] with the configuration changed by `tweak`.
async fn tls_server_with(
    ca: &TestCa,
    hsts: Option<Duration>,
    tweak: impl FnOnce(&mut switchboard_server::Config),
) -> (crate::util::Server, switchboard_server::Tls, PathBuf) {
    let dir = temp_dir();
    let (cert, key) = write_server_cert(ca, &dir);
    let mut handle = None;
    let server = start_extended(
        |config| {
            config.allow_anonymous = true;
            config.tls = TlsConfig {
                cert: Some(cert),
                key: Some(key),
                hsts,
            };
            tweak(config);
        },
        |server| handle = server.tls(),
    )
    .await;
    (server, handle.expect("TLS is on"), dir)
}

/// Opens `wss://` to `addr` trusting `tls`, connects anonymously and subscribes to
/// `channel`.
async fn subscriber(addr: std::net::SocketAddr, tls: &Tls, channel: &str) -> Client {
    let url = format!("wss://localhost:{}/ws", addr.port());
    let mut client = bounded("wss open", Client::open_with(&url, Some(tls)))
        .await
        .expect("open wss://");
    bounded("connect", client.connect(None))
        .await
        .expect("connect");
    bounded(
        "subscribe",
        client.result(json!({"cmd": "subscribe", "channel": channel})),
    )
    .await
    .expect("subscribe");
    client
}

async fn next_data(client: &mut Client) -> Value {
    loop {
        let push = bounded("a publication", client.next_push())
            .await
            .expect("a push");
        if push["push"] == "publication" {
            return push["data"].clone();
        }
    }
}

/// HTTPS and `wss://` answer on the same port; a publication made over HTTPS reaches
/// WebSocket subscribers over TLS (pushes take the direct-write path).
#[tokio::test]
async fn https_and_wss_share_the_port_and_publications_reach_subscribers() {
    let ca = TestCa::new("switchboard test CA");
    let (server, _tls, _dir) = tls_server(&ca, Some(Duration::from_secs(3600))).await;
    let trust = ca.trust();
    let base = format!("https://localhost:{}", server.addr.port());

    let endpoint = Endpoint::parse(&format!("{base}/health")).unwrap();
    let mut conn = bounded(
        "https connect",
        HttpConnection::connect_to(&endpoint, Some(&trust)),
    )
    .await
    .expect("HTTPS connection");
    let health = bounded("GET /health", conn.request("GET", "/health", &[], ""))
        .await
        .expect("GET /health");
    assert_eq!(health.status, 200);
    assert_eq!(
        health
            .headers
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=3600"),
        "HSTS on a TLS response"
    );

    let mut alice = subscriber(server.addr, &trust, "chat:tls").await;
    let mut bob = subscriber(server.addr, &trust, "chat:tls").await;
    let api = Api::new(&base, API_KEY).unwrap().with_tls(trust.clone());
    for i in 0..20 {
        let body = json!({"channel": "chat:tls", "data": {"n": i}});
        bounded("publish over HTTPS", api.ok("publish", &body))
            .await
            .expect("publish");
    }
    for client in [&mut alice, &mut bob] {
        for i in 0..20 {
            assert_eq!(next_data(client).await, json!({"n": i}));
        }
    }
    // The client's own publish goes back through the same TLS session.
    let reply = bounded(
        "publish over wss",
        alice.result(json!({"cmd": "publish", "channel": "chat:tls", "data": "hi"})),
    )
    .await
    .expect("publish over wss");
    assert_eq!(reply["offset"], 21);
    assert_eq!(next_data(&mut bob).await, json!("hi"));
}

/// A subscriber that does not read while large publications pile up: the socket fills,
/// records wait in the session and frames in the queue, and once it reads, every frame
/// arrives whole and in order (nothing lost, duplicated or cut between records).
#[tokio::test]
async fn a_stalled_tls_subscriber_gets_every_large_frame_whole_and_in_order() {
    let ca = TestCa::new("switchboard test CA");
    // Small socket buffers on both ends, so the kernel takes little and the rest waits
    // in the server (records in the session, frames in the queue).
    let (server, _tls, _dir) = tls_server_with(&ca, None, |config| {
        config.limits.socket_send_buffer = 4096;
        config.limits.publish_bytes_per_second = 1 << 30;
        config.limits.publish_bytes_burst = 1 << 30;
    })
    .await;
    let trust = ca.trust();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let endpoint = Endpoint::parse(&format!("wss://localhost:{}/ws", server.addr.port())).unwrap();
    let stream = bounded("TLS handshake", endpoint.secure(tcp, Some(&trust)))
        .await
        .expect("TLS handshake");
    let mut slow = Client::handshake(stream, &endpoint.authority, "/ws", &[])
        .await
        .expect("WebSocket handshake");
    slow.connect(None).await.expect("connect");
    slow.result(json!({"cmd": "subscribe", "channel": "chat:big"}))
        .await
        .expect("subscribe");

    let mut publisher = subscriber(server.addr, &trust, "chat:other").await;
    let filler = "x".repeat(20_000);
    let count = 60;
    for i in 0..count {
        bounded(
            "publish",
            publisher.result(
                json!({"cmd": "publish", "channel": "chat:big", "data": format!("{i:04}{filler}")}),
            ),
        )
        .await
        .expect("publish");
    }
    // Now read: all of it, in order.
    for i in 0..count {
        let data = next_data(&mut slow).await;
        let text = data.as_str().expect("a string");
        assert_eq!(&text[..4], format!("{i:04}"), "publication {i}");
        assert_eq!(text.len(), 4 + filler.len(), "publication {i} whole");
    }
}

/// A reload swaps the certificate for new handshakes; a connection opened before it
/// keeps working, with pushes in both directions.
#[tokio::test]
async fn a_reload_keeps_open_connections_and_new_handshakes_see_the_new_certificate() {
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let (server, tls, dir) = tls_server(&old_ca, None).await;
    let mut before = subscriber(server.addr, &old_ca.trust(), "chat:reload").await;

    write_server_cert(&new_ca, &dir);
    tls.reload().expect("reload");

    // New handshakes present the new certificate: the old CA no longer vouches for it.
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let refused = bounded("wss open", Client::open_with(&url, Some(&old_ca.trust()))).await;
    assert!(
        matches!(&refused, Err(switchboard_client::Error::Tls(why)) if why.contains("certificate")),
        "{refused:?}"
    );
    let mut after = subscriber(server.addr, &new_ca.trust(), "chat:reload").await;

    // The connection from before the reload still publishes and receives.
    bounded(
        "publish",
        before.result(json!({"cmd": "publish", "channel": "chat:reload", "data": 1})),
    )
    .await
    .expect("publish on the old connection");
    assert_eq!(next_data(&mut before).await, json!(1));
    assert_eq!(next_data(&mut after).await, json!(1));

    // A reload that fails keeps the certificate in use.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let err = tls.reload().expect_err("a broken key").to_string();
    assert!(err.contains("key.pem"), "{err}");
    subscriber(server.addr, &new_ca.trust(), "chat:reload").await;
}

/// Without `tls.hsts` no HSTS header is sent over TLS, and a plain server never sends it.
#[tokio::test]
async fn hsts_is_sent_only_when_configured_and_only_over_tls() {
    let ca = TestCa::new("switchboard test CA");
    let (server, _tls, _dir) = tls_server(&ca, None).await;
    let endpoint = Endpoint::parse(&format!("https://localhost:{}/", server.addr.port())).unwrap();
    let mut conn = HttpConnection::connect_to(&endpoint, Some(&ca.trust()))
        .await
        .expect("HTTPS");
    let health = conn.request("GET", "/health", &[], "").await.unwrap();
    assert_eq!(health.status, 200);
    assert!(health.headers.get("strict-transport-security").is_none());

    let plain = crate::util::start(|config| {
        config.tls.hsts = Some(Duration::from_secs(60));
    })
    .await;
    let mut conn = HttpConnection::connect(&plain.addr.to_string())
        .await
        .unwrap();
    let health = conn.request("GET", "/health", &[], "").await.unwrap();
    assert_eq!(health.status, 200);
    assert!(health.headers.get("strict-transport-security").is_none());
}

/// Plain HTTP sent to the TLS port gets no answer in plain text: the handshake fails and
/// the connection is closed.
#[tokio::test]
async fn plain_http_to_the_tls_port_is_not_served() {
    let ca = TestCa::new("switchboard test CA");
    let (server, _tls, _dir) = tls_server(&ca, None).await;
    let result = tokio::time::timeout(WAIT, async {
        let mut conn = HttpConnection::connect(&server.addr.to_string()).await?;
        conn.request("GET", "/health", &[], "").await
    })
    .await
    .expect("an answer or an error in time");
    assert!(result.is_err(), "{result:?}");
}

/// `switchboard_tls_handshake_failures_total`, read over HTTPS (a good handshake, which is
/// not counted).
async fn handshake_failures(addr: std::net::SocketAddr, trust: &Tls) -> u64 {
    let endpoint = Endpoint::parse(&format!("https://localhost:{}/metrics", addr.port()))
        .expect("an https:// URL");
    let mut conn = bounded("https", HttpConnection::connect_to(&endpoint, Some(trust)))
        .await
        .expect("HTTPS");
    let answer = bounded("/metrics", conn.request("GET", "/metrics", &[], ""))
        .await
        .expect("GET /metrics");
    answer
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("switchboard_tls_handshake_failures_total "))
        .and_then(|value| value.parse().ok())
        .expect("the counter in /metrics")
}

/// Waits until the counter reaches `expected` (a failed handshake is counted by the
/// connection's task, a moment after the client has seen it fail).
async fn await_failures(addr: std::net::SocketAddr, trust: &Tls, expected: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = handshake_failures(addr, trust).await;
        if seen == expected {
            return;
        }
        assert!(
            seen < expected && tokio::time::Instant::now() < deadline,
            "{seen} handshake failures counted, {expected} expected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every failed handshake is counted in `switchboard_tls_handshake_failures_total`: plain
/// HTTP on the TLS port, a client that does not trust the certificate, one that connects
/// and says nothing until the handshake's deadline. Good handshakes are not.
#[tokio::test]
async fn failed_handshakes_are_counted() {
    let ca = TestCa::new("switchboard test CA");
    let (server, _tls, _dir) = tls_server_with(&ca, None, |config| {
        config.limits.header_timeout = Duration::from_millis(300);
    })
    .await;
    let trust = ca.trust();
    let addr = server.addr;
    assert_eq!(handshake_failures(addr, &trust).await, 0);
    let _ = subscriber(addr, &trust, "chat:counted").await;
    assert_eq!(handshake_failures(addr, &trust).await, 0, "good handshakes");

    let plain = tokio::time::timeout(WAIT, async {
        let mut conn = HttpConnection::connect(&addr.to_string()).await?;
        conn.request("GET", "/health", &[], "").await
    })
    .await
    .expect("an answer or an error in time");
    assert!(plain.is_err(), "{plain:?}");
    await_failures(addr, &trust, 1).await;

    let stranger = TestCa::new("another CA").trust();
    let url = format!("wss://localhost:{}/ws", addr.port());
    let refused = bounded("wss open", Client::open_with(&url, Some(&stranger))).await;
    assert!(
        refused.is_err(),
        "a certificate of an untrusted CA was accepted"
    );
    await_failures(addr, &trust, 2).await;

    // Connected, silent: the handshake's deadline (limits.header_timeout) ends it.
    let _silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    await_failures(addr, &trust, 3).await;
}

fn load_error(cert: &Path, key: &Path) -> String {
    let config = TlsConfig {
        cert: Some(cert.to_owned()),
        key: Some(key.to_owned()),
        hsts: None,
    };
    match switchboard_server::Tls::load(&config) {
        Ok(_) => panic!("{} and {} were accepted", cert.display(), key.display()),
        Err(err) => err.to_string(),
    }
}

/// Each way a certificate or key can be unusable is a start-up error naming the file.
#[test]
fn unusable_certificates_and_keys_are_clear_start_up_errors() {
    let ca = TestCa::new("switchboard test CA");
    let dir = temp_dir();
    let (cert, key) = write_server_cert(&ca, &dir);
    let missing = dir.join("missing.pem");

    let err = load_error(&missing, &key);
    assert!(
        err.contains("cannot read the TLS certificate") && err.contains("missing.pem"),
        "{err}"
    );
    let err = load_error(&cert, &missing);
    assert!(
        err.contains("cannot read the TLS private key") && err.contains("missing.pem"),
        "{err}"
    );
    // A directory cannot be read as a file (permissions do not stop root, which runs CI).
    let err = load_error(&cert, &dir);
    assert!(err.contains("cannot read the TLS private key"), "{err}");

    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let err = load_error(&cert, &junk);
    assert!(err.contains("holds no private key"), "{err}");
    let err = load_error(&junk, &key);
    assert!(err.contains("holds no certificate"), "{err}");

    // The key of another certificate.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, other_key) = write_server_cert(&ca, &other);
    let err = load_error(&cert, &other_key);
    assert!(err.contains("does not match the certificate"), "{err}");

    // Through the server's constructor, as `serve` meets it.
    let config = switchboard_server::Config {
        data_dir: dir.clone(),
        tls: TlsConfig {
            cert: Some(cert.clone()),
            key: Some(other_key),
            hsts: None,
        },
        ..switchboard_server::Config::default()
    };
    let store = std::sync::Arc::new(
        switchboard_server::engine::memory::MemoryStore::with_max_bytes(1 << 20),
    );
    let err = switchboard_server::Server::new(config, crate::util::secrets(), store)
        .expect_err("a mismatched key")
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
