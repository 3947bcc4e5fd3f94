//! Redis only: what the shared suite (`store::suite`) cannot show. Two stores on one
//! server stand for two nodes; each test has a server of its own and is skipped (with
//! the fixture's message) where redis-server is not installed.

use std::sync::Barrier;

use redis::Commands;
use switchboard_redis_fixture::RedisServer;

use super::RedisStore;
use crate::store::{
    NewAccount, NewPoll, NewSession, ResultsShown, Room, SessionOwner, Store, StoreError, Vote,
};

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::open(redis::Client::open(server.url()).unwrap(), "node").unwrap()
}

/// A plain connection, to look at what the store wrote.
fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn account(name: &str) -> NewAccount<'_> {
    NewAccount {
        name,
        hash: "$argon2id$fake",
        admin: false,
        invite: None,
    }
}

fn poll<'a>(id: &'a str, options: &'a [String], changeable: bool) -> NewPoll<'a> {
    NewPoll {
        id,
        owner: "olga",
        owner_name: "Olga",
        question: "Which?",
        options,
        max_choices: 1,
        results: ResultsShown::Always,
        changeable,
        closes_at: None,
        anonymous: false,
    }
}

fn vote<'a>(poll: &'a str, voter: &'a str, choices: &'a [u32]) -> Vote<'a> {
    Vote {
        poll,
        voter,
        voter_name: voter,
        choices,
    }
}

/// Runs `attempt(store, round, side)` from two threads with a store each, `rounds`
/// times, both sides of a round released together; returns each round's two outcomes.
fn race<T: Send>(
    server: &RedisServer,
    rounds: usize,
    attempt: impl Fn(&RedisStore, usize, usize) -> T + Sync,
) -> Vec<[T; 2]> {
    let stores = [store(server), store(server)];
    let barrier = Barrier::new(2);
    let (a, b) = std::thread::scope(|scope| {
        let sides: Vec<_> = (0..2)
            .map(|side| {
                let (store, barrier, attempt) = (&stores[side], &barrier, &attempt);
                scope.spawn(move || {
                    (0..rounds)
                        .map(|round| {
                            barrier.wait();
                            attempt(store, round, side)
                        })
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        let mut joined = sides.into_iter().map(|h| h.join().unwrap());
        (joined.next().unwrap(), joined.next().unwrap())
    });
    a.into_iter().zip(b).map(|(a, b)| [a, b]).collect()
}

#[test]
fn two_nodes_racing_for_one_name_one_wins() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let outcomes = race(&server, 200, |store, round, side| {
        // The same name in two spellings: one account, case-insensitively.
        let name = if side == 0 {
            format!("user{round}")
        } else {
            format!("USER{round}")
        };
        store.create_account(&account(&name), 1)
    });
    for (round, [a, b]) in outcomes.iter().enumerate() {
        match (a, b) {
            (Ok(_), Err(StoreError::NameTaken)) | (Err(StoreError::NameTaken), Ok(_)) => {}
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(store(&server).account_count().unwrap(), 200);
}

#[test]
fn two_nodes_racing_for_one_voters_vote_one_wins() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let options: Vec<String> = ["a", "b"].map(String::from).into();
    store(&server)
        .create_poll(&poll("fixed", &options, false), 10, 1)
        .unwrap();
    let outcomes = race(&server, 200, |store, round, side| {
        let voter = format!("v{round}");
        let choice = [side as u32];
        store.cast(&vote("fixed", &voter, &choice), 2)
    });
    for (round, [a, b]) in outcomes.iter().enumerate() {
        match (a, b) {
            (Ok(cast), Err(StoreError::Refused(words)))
            | (Err(StoreError::Refused(words)), Ok(cast)) => {
                assert!(!cast.changed);
                assert!(words.contains("already voted"), "{words}");
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    let s = store(&server);
    let tally = s.poll("fixed", "", 3).unwrap().unwrap().tally;
    assert_eq!((tally.voters, tally.total), (200, 200));
    assert_eq!(s.recount("fixed").unwrap(), tally);
    assert_eq!(s.votes("fixed").unwrap().len(), 200);
}

#[test]
fn two_nodes_racing_for_limits_stay_within_them() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let s = store(&server);
    for n in 0..50 {
        s.create_account(&account(&format!("u{n}")), 1).unwrap();
    }
    // Rooms: one per user; sessions: two per account; polls: one per owner.
    let options: Vec<String> = ["a", "b"].map(String::from).into();
    let outcomes = race(&server, 50, |store, round, side| {
        let user = format!("u{round}");
        let room = store.create_room(
            &Room {
                name: format!("r{round}-{side}"),
                topic: String::new(),
                creator: user.clone(),
            },
            1000,
            1,
            1,
        );
        for n in 0..3u8 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&(round as u32).to_be_bytes());
            hash[4] = side as u8;
            hash[5] = n;
            store
                .create_session(
                    &NewSession {
                        hash,
                        user: SessionOwner::Account(&user),
                        expires: 1000,
                        max_per_account: 2,
                    },
                    1,
                )
                .unwrap();
        }
        let id = format!("p{round}-{side}");
        let mut new = poll(&id, &options, true);
        new.owner = &user;
        let poll = store.create_poll(&new, 1, 1);
        (room.is_ok(), poll.is_ok())
    });
    for (round, [a, b]) in outcomes.iter().enumerate() {
        assert!(a.0 ^ b.0, "round {round}: one room ({a:?} {b:?})");
        assert!(a.1 ^ b.1, "round {round}: one poll ({a:?} {b:?})");
        assert_eq!(s.session_count(&format!("u{round}")).unwrap(), 2);
    }
    assert_eq!(s.rooms().unwrap().len(), 50);
}

#[test]
fn two_nodes_closing_due_polls_close_each_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let options: Vec<String> = ["a", "b"].map(String::from).into();
    let s = store(&server);
    for n in 0..100 {
        let id = format!("p{n}");
        let mut timed = poll(&id, &options, true);
        timed.closes_at = Some(10);
        s.create_poll(&timed, 1000, 1).unwrap();
    }
    let outcomes = race(&server, 1, |store, _, _| store.close_due(20).unwrap());
    let mut closed: Vec<String> = outcomes
        .into_iter()
        .flatten()
        .flatten()
        .map(|view| view.poll.id)
        .collect();
    closed.sort();
    closed.dedup();
    assert_eq!(closed.len(), 100, "each once, by one node or the other");
    assert!(s.close_due(30).unwrap().is_empty());
}

#[test]
fn keys_live_under_the_prefix_with_ttls_past_expiry() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let s = store(&server);
    s.create_account(&account("Ann"), 1).unwrap();
    s.create_session(
        &NewSession {
            hash: [0xab; 32],
            user: SessionOwner::Account("ann"),
            expires: 61_000,
            max_per_account: 3,
        },
        1_000,
    )
    .unwrap();
    s.create_invite(&[0xcd; 32], false, false, 11_000, 1_000)
        .unwrap();
    let mut conn = raw(&server);
    let keys: Vec<String> = conn.keys("*").unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("node:app:")), "{keys:?}");
    let session = format!("node:app:session:{}", "ab".repeat(32));
    assert!(
        keys.contains(&session),
        "the secret's hash, in hex: {keys:?}"
    );
    // A TTL an hour past the expiry: the store decides expiry, Redis only collects.
    let ttl: i64 = conn.pttl(&session).unwrap();
    assert!((3_600_000..=3_660_000).contains(&ttl), "{ttl}");
    let ttl: i64 = conn
        .pttl(format!("node:app:invite:{}", "cd".repeat(32)))
        .unwrap();
    assert!((3_600_000..=3_610_000).contains(&ttl), "{ttl}");
    let ttl: i64 = conn.pttl("node:app:account:ann").unwrap();
    assert_eq!(ttl, -1, "accounts do not expire");
}

#[test]
fn votes_are_exported_in_pages() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let s = store(&server);
    let options: Vec<String> = ["a", "b", "c"].map(String::from).into();
    s.create_poll(&poll("big", &options, true), 10, 1).unwrap();
    // More than two pages of HSCAN.
    for n in 0..1_200u32 {
        s.cast(
            &vote("big", &format!("voter{n:04}"), &[n % 3]),
            i64::from(n),
        )
        .unwrap();
    }
    let votes = s.votes("big").unwrap();
    assert_eq!(votes.len(), 1_200);
    assert!(
        votes.windows(2).all(|w| w[0].time < w[1].time),
        "oldest first"
    );
    assert_eq!(votes[7].voter, "voter0007");
    assert_eq!(s.recount("big").unwrap().counts, [400, 400, 400]);
}

#[test]
fn a_restarted_redis_is_reconnected() {
    let Some(mut server) = RedisServer::start_persistent() else {
        return;
    };
    let s = store(&server);
    s.create_account(&account("kept"), 1).unwrap();
    server.kill();
    assert!(
        matches!(s.account_count(), Err(StoreError::Backend(_))),
        "an outage is an error"
    );
    assert!(matches!(
        s.create_account(&account("lost"), 2),
        Err(StoreError::Backend(_))
    ));
    server.restart();
    // Idle past the check: the next write finds its connection dead before sending.
    std::thread::sleep(super::IDLE_CHECK);
    assert!(
        s.account("kept").unwrap().is_some(),
        "persisted, and read again"
    );
    s.create_account(&account("after"), 3).unwrap();
    assert_eq!(s.account_count().unwrap(), 2);
}

#[test]
fn a_write_after_a_restart_goes_out_on_a_live_connection() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let s = store(&server);
    s.create_account(&account("first"), 1).unwrap();
    server.restart();
    std::thread::sleep(super::IDLE_CHECK);
    // The pooled connection died with the old server; the PING finds out, and the
    // script is loaded again on the new one (it kept nothing).
    s.create_account(&account("second"), 2).unwrap();
    assert_eq!(s.account_count().unwrap(), 1);
}

#[test]
fn debug_hides_the_password() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut conn = raw(&server);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("hunter2")
        .query::<()>(&mut conn)
        .unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", server.port());
    let s = RedisStore::open(redis::Client::open(url).unwrap(), "node").unwrap();
    s.create_account(&account("ann"), 1).unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("node:app:"), "{shown}");
}

#[test]
fn opening_an_unreachable_redis_fails() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    server.kill();
    let client = redis::Client::open(server.url()).unwrap();
    assert!(matches!(
        RedisStore::open(client, "node"),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn a_full_redis_refuses_writes_whole_and_still_reads() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let s = store(&server);
    s.create_account(&account("ann"), 1).unwrap();
    let mut conn = raw(&server);
    let maxmemory = |conn: &mut redis::Connection, bytes: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query::<()>(conn)
            .unwrap();
    };
    maxmemory(&mut conn, "1");
    match s.create_account(&account("bob"), 2) {
        Err(StoreError::Backend(words)) => assert!(words.contains("OOM"), "{words}"),
        other => panic!("{other:?}"),
    }
    assert!(s.account("ann").unwrap().is_some(), "reads go on");
    assert_eq!(s.account_count().unwrap(), 1);
    maxmemory(&mut conn, "0");
    assert_eq!(s.account("bob").unwrap(), None, "nothing half written");
    s.create_account(&account("bob"), 3).unwrap();
}

#[test]
fn users_online_are_the_union_over_live_nodes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (store(&server), store(&server));
    let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let long = std::time::Duration::from_secs(60);
    assert_eq!(
        a.users_online("a", &list(&["ann", "bob"]), long).unwrap(),
        2
    );
    // Bob has connections on both nodes: one person online.
    assert_eq!(
        b.users_online("b", &list(&["bob", "cai"]), long).unwrap(),
        3
    );
    // Each call replaces the node's list: Bob left node a, and is still on b.
    assert_eq!(a.users_online("a", &list(&["ann"]), long).unwrap(), 3);
    assert_eq!(b.users_online("b", &[], long).unwrap(), 1);
    // More users than one SADD takes at a time.
    let many: Vec<String> = (0..2500).map(|i| format!("user{i}")).collect();
    assert_eq!(b.users_online("b", &many, long).unwrap(), 2501);

    // Node b stops writing: its users stop counting once its short TTL passes.
    let short = std::time::Duration::from_millis(100);
    assert_eq!(b.users_online("b", &many, short).unwrap(), 2501);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = a.users_online("a", &list(&["ann"]), long).unwrap();
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node b still counts: {n}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left: Vec<String> = raw(&server).keys("node:app:online*").unwrap();
    assert_eq!(
        left.len(),
        2,
        "node a's set and the list of nodes: {left:?}"
    );
}
