//! The `vote.` rpc methods end to end over WebSockets: a poll's life, who sees what, the
//! coalesced tally pushes, 1,000 concurrent voters against a recount, and a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_client::Client;
use switchboard_server::auth::{Claims, mint};
use tokio::sync::Semaphore;

use crate::util::{Server, Ws, bounded, start};

/// The token secret of the test server ([`crate::util::start`]).
const SECRET: &str = "test-token-secret-0123456789abcdef";

/// A guest with id `guest:ID`, connected with a token minted as `/auth/token` would.
async fn guest(server: &Server, id: &str) -> Ws {
    guest_at(server.addr, id).await
}

fn is_poll_push(push: &Value) -> bool {
    push["push"] == "publication"
}

/// A push's data without its `seq` (which only has to rise).
fn data(push: &Value) -> Value {
    let mut data = push["data"].clone();
    if let Some(map) = data.as_object_mut() {
        map.remove("seq");
    }
    data
}

async fn create(ws: &mut Ws, poll: Value) -> String {
    ws.rpc("vote.create", poll).await["poll"]
        .as_str()
        .expect("a poll id")
        .to_owned()
}

#[tokio::test]
async fn a_poll_from_creation_to_export() {
    let server = start(|_| {}).await;
    let (_, mut alice) = server.user("Alice").await;
    let (bob_cookie, mut bob) = server.user("bob").await;
    let mut gus = guest(&server, "gus000000000").await;

    // What a poll may be.
    for (bad, words) in [
        (
            json!({"question": "Q", "options": ["only"]}),
            "2 to 20 options",
        ),
        (
            json!({"question": " ", "options": ["a", "b"]}),
            "question is empty",
        ),
        (
            json!({"question": "Q", "options": ["a", ""]}),
            "option 2 is empty",
        ),
        (
            json!({"question": "Q", "options": ["a", "b"], "max_choices": 3}),
            "max_choices",
        ),
        (
            json!({"question": "Q", "options": ["a", "b"], "results": "never"}),
            "results",
        ),
        (
            json!({"question": "Q", "options": ["a", "b"], "closes_at": 1}),
            "closes_at",
        ),
    ] {
        let (code, message) = alice.rpc_err("vote.create", bad.clone()).await;
        assert_eq!(code, 107, "{bad}");
        assert!(message.contains(words), "{bad}: {message}");
    }

    let id = create(
        &mut alice,
        json!({"question": "Lunch?", "options": ["rice", "soup", "salad"], "max_choices": 2,
               "results": "always", "changeable": false, "closes_at": null, "anonymous": false}),
    )
    .await;
    assert_eq!(id.len(), 10);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    bob.ok(json!({"cmd": "subscribe", "channel": format!("poll:{id}")}))
        .await;
    // A second page of bob's: still one person watching.
    let mut bob_again = server.connect(&bob_cookie).await;
    bob_again
        .ok(json!({"cmd": "subscribe", "channel": format!("poll:{id}")}))
        .await;

    let got = gus.rpc("vote.get", json!({"poll": id})).await;
    assert_eq!(got["poll"]["question"], "Lunch?");
    assert_eq!(got["poll"]["owner"], "alice");
    assert_eq!(got["poll"]["owner_name"], "Alice");
    assert_eq!(got["poll"]["closed"], false);
    assert_eq!(got["mine"], Value::Null);
    assert_eq!(got["visible"], true);
    assert_eq!(
        got["tally"],
        json!({"counts": [0, 0, 0], "total": 0, "voters": 0})
    );
    assert_eq!(got["watchers"], 1, "bob watches, in two pages");

    let cast = gus
        .rpc("vote.cast", json!({"poll": id, "choices": [2, 0]}))
        .await;
    assert_eq!(
        cast["tally"],
        json!({"counts": [1, 0, 1], "total": 2, "voters": 1})
    );
    let push = bob.push_where("the tally", is_poll_push).await;
    assert_eq!(push["channel"], format!("poll:{id}"));
    assert_eq!(
        push["data"],
        json!({"type": "tally", "counts": [1, 0, 1], "total": 2, "voters": 1, "seq": cast["seq"]})
    );
    assert_eq!(
        gus.rpc("vote.get", json!({"poll": id})).await["mine"],
        json!([0, 2])
    );

    // Refusals, in words, as error 119.
    for (choices, words) in [(json!([0]), "already voted")] {
        let (code, message) = gus
            .rpc_err("vote.cast", json!({"poll": id, "choices": choices}))
            .await;
        assert_eq!((code, message.contains(words)), (119, true), "{message}");
    }
    for (choices, words) in [
        (json!([]), "at least one"),
        (json!([0, 1, 2]), "at most 2"),
        (json!([3]), "no option 3"),
        (json!([1, 1]), "twice"),
    ] {
        let (code, message) = bob
            .rpc_err("vote.cast", json!({"poll": id, "choices": choices}))
            .await;
        assert_eq!((code, message.contains(words)), (119, true), "{message}");
    }
    let (code, _) = bob
        .rpc_err("vote.cast", json!({"poll": "nothere00", "choices": [0]}))
        .await;
    assert_eq!(code, 119);

    // Only the owner (or an admin) manages it.
    for method in ["vote.close", "vote.reopen", "vote.delete"] {
        let (code, _) = bob.rpc_err(method, json!({"poll": id})).await;
        assert_eq!(code, 103, "{method}");
    }
    let (code, _) = bob
        .rpc_err("vote.export", json!({"poll": id, "format": "csv"}))
        .await;
    assert_eq!(code, 103);

    assert_eq!(
        alice.rpc("vote.close", json!({"poll": id})).await,
        json!({"closed": true})
    );
    let state = bob.push_where("the state", is_poll_push).await;
    assert_eq!(state["data"], json!({"type": "state", "closed": true}));
    let (code, message) = bob
        .rpc_err("vote.cast", json!({"poll": id, "choices": [1]}))
        .await;
    assert_eq!((code, message.as_str()), (119, "the poll is closed"));
    alice.rpc("vote.reopen", json!({"poll": id})).await;
    bob.rpc("vote.cast", json!({"poll": id, "choices": [1]}))
        .await;

    let list = bob.rpc("vote.list", json!({})).await;
    assert_eq!(list["mine"], json!([]));
    let open = &list["open"][0];
    assert_eq!(
        (&open["id"], &open["voters"], &open["total"], &open["voted"]),
        (&json!(id), &json!(2), &json!(3), &json!(true))
    );
    let mine = alice.rpc("vote.list", json!({})).await;
    assert_eq!(mine["mine"][0]["id"], id);

    // Exports: named, so who chose what.
    let csv = alice
        .rpc("vote.export", json!({"poll": id, "format": "csv"}))
        .await;
    assert_eq!(csv["filename"], format!("poll-{id}.csv"));
    let text = csv["content"].as_str().unwrap();
    assert!(
        text.starts_with(
            "option,votes\r\nrice,1\r\nsoup,1\r\nsalad,1\r\n\r\nvoter,name,choices,time\r\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("guest:gus000000000,gus000000000,rice | salad,"),
        "{text}"
    );
    assert!(text.contains("bob,bob,soup,"), "{text}");
    let exported = alice
        .rpc("vote.export", json!({"poll": id, "format": "json"}))
        .await;
    let content: Value = serde_json::from_str(exported["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["tally"]["counts"], json!([1, 1, 1]));
    assert_eq!(content["votes"].as_array().unwrap().len(), 2);

    alice.rpc("vote.delete", json!({"poll": id})).await;
    let gone = bob
        .push_where("the deletion", |p| {
            is_poll_push(p) && p["data"]["type"] == "deleted"
        })
        .await;
    assert_eq!(gone["data"], json!({"type": "deleted"}));
    let (code, _) = bob.rpc_err("vote.get", json!({"poll": id})).await;
    assert_eq!(code, 119);
}

#[tokio::test]
async fn hidden_results_anonymous_polls_and_closing_times() {
    let server = start(|_| {}).await;
    let (_, mut olga) = server.user("olga").await;
    let (_, mut pia) = server.user("pia").await;
    let mut watcher = guest(&server, "watcher00000").await;

    // Results after voting: a watcher sees totals only; a voter sees the counts.
    let voted = create(
        &mut olga,
        json!({"question": "Q", "options": ["a", "b"], "results": "voted", "anonymous": true}),
    )
    .await;
    watcher
        .ok(json!({"cmd": "subscribe", "channel": format!("poll:{voted}")}))
        .await;
    let before = watcher.rpc("vote.get", json!({"poll": voted})).await;
    assert_eq!(
        (&before["visible"], &before["tally"]),
        (&json!(false), &Value::Null)
    );
    let owner = olga.rpc("vote.get", json!({"poll": voted})).await;
    assert_eq!(owner["visible"], true, "the owner always sees");
    let cast = pia
        .rpc("vote.cast", json!({"poll": voted, "choices": [1]}))
        .await;
    assert_eq!(cast["tally"]["counts"], json!([0, 1]));
    let push = watcher.push_where("a hidden tally", is_poll_push).await;
    assert_eq!(
        data(&push),
        json!({"type": "tally", "total": 1, "voters": 1, "hidden": true})
    );
    // Anonymous: the export has counts, no voters.
    let exported = olga
        .rpc("vote.export", json!({"poll": voted, "format": "csv"}))
        .await;
    assert_eq!(exported["content"], "option,votes\r\na,0\r\nb,1\r\n");

    // Results after closing, and a closing time that comes: state then the counts.
    let closes_at = now_ms() + 1500;
    let timed = create(
        &mut olga,
        json!({"question": "Soon", "options": ["x", "y"], "results": "closed",
               "closes_at": closes_at}),
    )
    .await;
    watcher
        .ok(json!({"cmd": "subscribe", "channel": format!("poll:{timed}")}))
        .await;
    let cast = pia
        .rpc("vote.cast", json!({"poll": timed, "choices": [0]}))
        .await;
    assert_eq!(cast["tally"], Value::Null, "hidden until it closes");
    let state = watcher
        .push_where("the close", |p| {
            is_poll_push(p) && p["data"]["type"] == "state"
        })
        .await;
    assert_eq!(state["channel"], format!("poll:{timed}"));
    assert_eq!(state["data"]["closed"], true);
    assert!(now_ms() >= closes_at);
    let revealed = watcher
        .push_where("the revealed tally", |p| {
            is_poll_push(p)
                && p["channel"] == format!("poll:{timed}")
                && p["data"].get("counts").is_some()
        })
        .await;
    assert_eq!(
        data(&revealed),
        json!({"type": "tally", "counts": [1, 0], "total": 1, "voters": 1})
    );
    let got = watcher.rpc("vote.get", json!({"poll": timed})).await;
    assert_eq!(
        (&got["visible"], &got["poll"]["closed"]),
        (&json!(true), &json!(true))
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Voters in the concurrency test.
const VOTERS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_voters_end_with_a_recount_that_survives_a_restart() {
    let server = start(|_| {}).await;
    let (_, mut owner) = server.user("owner").await;
    let id = create(
        &mut owner,
        json!({"question": "Which?", "options": ["a", "b", "c", "d"], "max_choices": 2,
               "results": "always", "changeable": true}),
    )
    .await;
    let mut watcher = guest(&server, "watcher00000").await;
    watcher
        .ok(json!({"cmd": "subscribe", "channel": format!("poll:{id}")}))
        .await;

    // Each voter connects (at most 64 handshakes at once: the server bounds pending
    // connections per address), then all vote and change their votes at once.
    let connecting = Arc::new(Semaphore::new(64));
    let start_line = Arc::new(tokio::sync::Barrier::new(VOTERS));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(VOTERS);
    for n in 0..VOTERS {
        let (connecting, start_line) = (connecting.clone(), start_line.clone());
        let addr = server.addr;
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = {
                let _permit = connecting.acquire().await.unwrap();
                guest_at(addr, &format!("v{n:011}")).await
            };
            start_line.wait().await;
            // A first vote, then two changes; the last one stays.
            let rounds: [&[u32]; 3] = [&[0], &[1, 2], &[(n % 4) as u32]];
            for (i, choices) in rounds.iter().enumerate() {
                let choices: Vec<u32> = if i == 1 && n % 3 == 0 {
                    vec![3]
                } else {
                    choices.to_vec()
                };
                ws.rpc("vote.cast", json!({"poll": id, "choices": choices}))
                    .await;
            }
            ws
        }));
    }
    let mut voters = Vec::with_capacity(VOTERS);
    for task in tasks {
        voters.push(
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("the voters finish")
                .expect("a voter"),
        );
    }
    let voting = started.elapsed();

    let store = server.apps.store().clone();
    let poll = id.clone();
    let recount = tokio::task::spawn_blocking(move || store.recount(&poll))
        .await
        .unwrap()
        .unwrap();
    let each = (VOTERS / 4) as u64;
    assert_eq!(recount.counts, [each, each, each, each]);
    assert_eq!(
        (recount.voters, recount.total),
        (VOTERS as u64, VOTERS as u64)
    );
    let got = watcher.rpc("vote.get", json!({"poll": id})).await;
    assert_eq!(
        got["tally"],
        json!({"counts": recount.counts, "total": recount.total, "voters": recount.voters})
    );

    // The watcher's last push is the final tally, and the pushes were coalesced.
    let expected = json!({"type": "tally", "counts": recount.counts, "total": recount.total,
                          "voters": recount.voters});
    let mut pushes = 0u32;
    let mut seq = 0;
    loop {
        let push = watcher.push_where("tally pushes", is_poll_push).await;
        pushes += 1;
        let next = push["data"]["seq"].as_u64().expect("a seq");
        assert!(next > seq, "pushes in order: {next} after {seq}");
        seq = next;
        if data(&push) == expected {
            break;
        }
    }
    let window = started.elapsed();
    let most = (window.as_secs_f64() * 4.0).ceil() as u32 + 1;
    assert!(
        pushes <= most,
        "{pushes} pushes in {window:?} (votes took {voting:?}): more than 4 per second"
    );
    let sent = server.apps.metrics().tally_pushes.get();
    assert!(sent <= u64::from(most), "{sent} pushes sent in {window:?}");
    eprintln!("{VOTERS} voters, 3 votes each: {voting:?}; {sent} tally pushes sent, {pushes} seen");
    drop(voters);

    // A restart keeps the counts.
    let server = server.restart().await;
    let mut again = guest(&server, "watcher00000").await;
    let got = again.rpc("vote.get", json!({"poll": id})).await;
    assert_eq!(
        got["tally"],
        json!({"counts": recount.counts, "total": recount.total, "voters": recount.voters})
    );
    let store = server.apps.store().clone();
    let after = tokio::task::spawn_blocking(move || store.recount(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, recount);
}

/// [`guest`] by address (for tasks that do not hold the server).
async fn guest_at(addr: std::net::SocketAddr, id: &str) -> Ws {
    let claims = Claims {
        sub: format!("guest:{id}"),
        exp: 4_000_000_000,
        info: Some(
            serde_json::value::to_raw_value(&json!({"name": id, "guest": true})).expect("info"),
        ),
        channels: vec![],
        roles: vec![],
        publish: Vec::new(),
    };
    let token = mint(SECRET, &claims).expect("mint");
    let url = format!("ws://{addr}/ws");
    let mut client = bounded("open", Client::open(&url)).await.expect("open");
    bounded("connect", client.connect(Some(&token)))
        .await
        .expect("connect");
    Ws(client)
}
