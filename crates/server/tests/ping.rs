//! Server pings: an idle connection that answers is kept; one that never answers is
//! closed with 4006 after `ping_interval` + `pong_timeout`.

use std::time::{Duration, Instant};

use crate::util::{RawPeer, start, token};

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_4006() {
    let server = start(|c| {
        c.limits.connect_timeout = Duration::from_millis(300);
        c.limits.ping_interval = Duration::from_millis(300);
        c.limits.pong_timeout = Duration::from_millis(300);
    })
    .await;
    // Answers pings: our WebSocket adapter pongs while it reads.
    let mut healthy = server.client("alice").await;
    // Never answers: a raw peer that only reads.
    let started = Instant::now();
    let mut silent = RawPeer::connect(server.addr, &token("bob", None, &[], 3600), None).await;
    let silent_side = async {
        let mut pings = 0;
        loop {
            let frame = silent.read_frame().await;
            match frame.opcode {
                0x9 => pings += 1,
                0x8 => return (pings, frame.close_code(), started.elapsed()),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    };
    let ((pings, code, elapsed), ()) =
        tokio::join!(silent_side, healthy.pump(Duration::from_millis(1500)));
    assert_eq!(code, Some(4006));
    assert!(pings >= 1, "closed without a ping first");
    assert!(
        elapsed >= Duration::from_millis(600),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1800),
        "closed too late: {elapsed:?}"
    );
    // The healthy one stayed open all along.
    healthy.barrier().await;
}
