//! Slow consumers: a subscriber that stops reading is disconnected once its outbox passes
//! its bound, and the healthy subscribers of the same channel miss nothing.

use serde_json::{Value, json};

use crate::util::{RawPeer, api, bounded, eventually, start, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected_and_others_get_everything() {
    const MAX_PUBLICATIONS: u64 = 2000;
    let server = start(|c| {
        c.limits.outbox_messages = 8;
        c.limits.outbox_bytes = 256 << 10;
    })
    .await;
    let mut healthy = server.client("healthy").await;
    healthy
        .ok(json!({"cmd": "subscribe", "channel": "chat:flood"}))
        .await;
    assert_eq!(healthy.next_push().await["push"], "join");

    // The slow one: a raw peer with a small receive buffer that subscribes, then stops
    // reading.
    let mut slow = RawPeer::connect(server.addr, &token("slow", None, &[], 3600), Some(4096)).await;
    slow.send_text(&json!({"id": 2, "cmd": "subscribe", "channel": "chat:flood"}).to_string())
        .await;
    let join = healthy.next_push().await;
    assert_eq!(
        (join["push"].clone(), join["info"]["user"].clone()),
        (json!("join"), json!("slow"))
    );
    assert_eq!(server.subscribers("chat:flood").await, 2);

    // The healthy subscriber reads on its own task while the API floods the channel.
    let reader = tokio::spawn(async move {
        let mut offsets = Vec::new();
        let mut leave = None;
        loop {
            let push = healthy.next_push().await;
            match push["push"].as_str() {
                Some("publication") if push["data"] == "end" => return (offsets, leave, healthy),
                Some("publication") => offsets.push(push["offset"].as_u64().unwrap()),
                Some("leave") => leave = Some(push),
                _ => panic!("unexpected push {push}"),
            }
        }
    });
    let data = "x".repeat(30_000);
    let mut published = 0;
    while published < MAX_PUBLICATIONS {
        published = server.publish("chat:flood", json!(data)).await;
        if published % 20 == 0 && server.metric("switchboard_slow_consumers_total").await > 0.0 {
            break;
        }
    }
    assert!(
        server.metric("switchboard_slow_consumers_total").await > 0.0,
        "no slow consumer after {published} publications of 30 kB"
    );
    server.publish("chat:flood", json!("end")).await;
    let (offsets, leave, mut healthy) = bounded("the healthy reader", reader).await.unwrap();
    let expected: Vec<u64> = (1..=published).collect();
    assert_eq!(offsets.len(), expected.len());
    assert!(
        offsets == expected,
        "the healthy subscriber missed publications"
    );

    // The slow one is gone from the channel: its leave is announced and one subscriber
    // is left.
    let leave = match leave {
        Some(leave) => leave,
        None => healthy.next_push().await,
    };
    assert_eq!(
        (leave["push"].clone(), leave["info"]["user"].clone()),
        (json!("leave"), json!("slow"))
    );
    assert_eq!(server.subscribers("chat:flood").await, 1);

    // When it reads again, it finds whole publications, then the close frame with 4004.
    let mut frames = 0;
    let code = loop {
        let frame = slow
            .try_read_frame()
            .await
            .unwrap_or_else(|e| panic!("after {frames} whole frames: {e}"));
        match frame.opcode {
            0x1 => {
                let push: Value = serde_json::from_slice(&frame.payload).unwrap_or_else(|e| {
                    panic!("frame {frames} after the disconnect is not JSON ({e}): the stream is corrupt")
                });
                // The subscribe reply, the join, then publications.
                assert!(push.get("push").is_some() || push["id"] == 2, "{push}");
                frames += 1;
            }
            0x8 => break frame.close_code(),
            other => panic!("unexpected opcode {other:#x} after {frames} frames"),
        }
    };
    assert_eq!(code, Some(4004));
    // Answer the close and hang up, as a client does.
    slow.send_close(4004).await;
    drop(slow);
    eventually("the slow connection to be closed", || async {
        server.metric("switchboard_connections").await == 1.0
    })
    .await;
    healthy.barrier().await;
}

/// Pushes are written to the socket straight from the publisher's task, and the
/// connection's own frames (here, pongs) share that socket. While a flood keeps the
/// socket full, so that writes stop in the middle of frames, no frame may be split by
/// another: every frame arrives whole, publications in order, each pong once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_during_a_flood_never_split_a_frame() {
    const PUBLICATIONS: u64 = 600;
    const PINGS: u64 = 200;
    let server = start(|c| {
        c.limits.outbox_messages = 4096;
        c.limits.outbox_bytes = 256 << 20;
    })
    .await;
    let mut peer =
        RawPeer::connect(server.addr, &token("reader", None, &[], 3600), Some(4096)).await;
    peer.send_text(&json!({"id": 2, "cmd": "subscribe", "channel": "vote:flood"}).to_string())
        .await;
    assert!(peer.read_json().await.get("result").is_some());
    let addr = server.addr;
    let flood = tokio::spawn(async move {
        let data = "y".repeat(30_000);
        for i in 0..=PUBLICATIONS {
            let data = if i == PUBLICATIONS {
                json!("end")
            } else {
                json!(data)
            };
            let (status, reply) = api(
                addr,
                "publish",
                json!({"channel": "vote:flood", "data": data}),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
        }
    });
    let (mut pings, mut pongs, mut offsets) = (0u64, 0u64, Vec::new());
    let mut ended = false;
    while !ended || pongs < pings {
        if pings < PINGS {
            peer.send_ping(&pings.to_be_bytes()).await;
            pings += 1;
        }
        let frame = peer.read_frame().await;
        match frame.opcode {
            0x1 => {
                let push: Value = serde_json::from_slice(&frame.payload).unwrap_or_else(|e| {
                    panic!("a text frame is not JSON ({e}): frames were mixed")
                });
                assert_eq!(push["push"], "publication", "{push}");
                if push["data"] == "end" {
                    ended = true;
                } else {
                    offsets.push(push["offset"].as_u64().expect("offset"));
                }
            }
            0xA => {
                assert_eq!(frame.payload, pongs.to_be_bytes(), "pong {pongs}");
                pongs += 1;
            }
            other => panic!("unexpected opcode {other:#x}"),
        }
        // Read slowly, so the server's socket stays full.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    bounded("the flood", flood).await.expect("the flood task");
    assert_eq!(offsets, (1..=PUBLICATIONS).collect::<Vec<_>>());
    assert_eq!(pongs, PINGS);
}
