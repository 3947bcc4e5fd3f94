//! Graceful shutdown: connected clients are closed with 1001 and `run` returns.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{Client, bounded, start};

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_run_returns() {
    let mut server = start(|c| c.allow_anonymous = true).await;
    let mut alice = server.client("alice").await;
    alice
        .ok(json!({"cmd": "subscribe", "channel": "chat:s"}))
        .await;
    let mut bob = server.client("bob").await;
    let mut anon = Client::connect(server.addr, None).await;
    // Opened but not connected yet: also closed.
    let mut fresh = Client::open(server.addr).await;

    let started = Instant::now();
    let task = server.shutdown();
    let (a, b, c, d) = tokio::join!(
        alice.expect_close(),
        bob.expect_close(),
        anon.expect_close(),
        fresh.expect_close()
    );
    assert_eq!([a.0, b.0, c.0, d.0], [1001; 4]);
    // Done with them: their TCP connections close, which the server waits for (bounded)
    // after each close handshake.
    drop((alice, bob, anon, fresh));
    let result = bounded("run to return", task).await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}
