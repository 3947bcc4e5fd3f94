//! One behaviour suite for every apps [`Store`]: each test below runs against SQLite (a
//! fresh file) and against Redis (a fresh `redis-server` on a free loopback port,
//! skipped with a message where none is installed), so the engines cannot drift apart.
//!
//! A behaviour is a function of a `&dyn Store`; `engine_tests!` makes one `#[test]` of
//! it per engine (`store::suite::sqlite::NAME`, `store::suite::redis::NAME`).

use std::path::PathBuf;

use switchboard_redis_fixture::RedisServer;

use super::redis::RedisStore;
use super::sqlite::SqliteStore;
use super::{
    Cast, DmState, NewAccount, NewDm, NewPoll, NewSession, ResultsShown, Room, SecretHash,
    SessionOwner, SessionUser, Store, StoreError, StoreResult, Tally, Vote,
};

/// A store and what it lives in (a directory, a server), dropped after it.
pub(super) struct Engine {
    store: Box<dyn Store>,
    _home: Box<dyn std::any::Any>,
}

impl Engine {
    pub(super) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }
}

/// A directory removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh SQLite store in a directory of its own.
pub(super) fn sqlite() -> Option<Engine> {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-apps-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let store = SqliteStore::open_in(&dir).unwrap();
    Some(Engine {
        store: Box::new(store),
        _home: Box::new(TempDir(dir)),
    })
}

/// A fresh Redis store on a server of its own (`None`, skipped, without redis-server).
pub(super) fn redis() -> Option<Engine> {
    let server = RedisServer::start()?;
    let client = ::redis::Client::open(server.url()).unwrap();
    let store = RedisStore::open(client, "test").unwrap();
    Some(Engine {
        store: Box::new(store),
        _home: Box::new(server),
    })
}

/// One `#[test]` per behaviour for the engine `$open` makes.
macro_rules! engine_tests {
    ($engine:ident: $($name:ident),* $(,)?) => {
        mod $engine {
            $(
                #[test]
                fn $name() {
                    let Some(engine) = super::$engine() else { return };
                    super::$name(engine.store());
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($engine:ident),*) => {
        $(
            engine_tests!($engine:
                accounts_are_unique_case_insensitively,
                invites_are_used_once_and_can_make_admins,
                sessions_expire_end_and_are_capped,
                rooms_and_their_limits,
                direct_messages_states_history_and_conversations,
                votes_change_the_tally_in_their_transaction,
                refusals_leave_the_tally_alone,
                closing_times_reopening_lists_limits_and_deletion,
                concurrent_voters_end_with_a_recount,
                lists_are_ordered_and_bounded,
                deleting_messages_moves_conversations,
                removing_an_account_ends_what_is_its_own,
                the_sweep_keeps_what_is_live,
            );
        )*
    };
}

suite!(sqlite, redis);

fn account<'a>(name: &'a str, invite: Option<SecretHash>) -> NewAccount<'a> {
    NewAccount {
        name,
        hash: "$argon2id$fake",
        admin: false,
        invite,
    }
}

fn new_poll<'a>(id: &'a str, options: &'a [String]) -> NewPoll<'a> {
    NewPoll {
        id,
        owner: "olga",
        owner_name: "Olga",
        question: "Lunch?",
        options,
        max_choices: 1,
        results: ResultsShown::Always,
        changeable: true,
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

fn refused(result: StoreResult<Cast>) -> String {
    match result {
        Err(StoreError::Refused(words)) => words,
        other => panic!("not refused: {other:?}"),
    }
}

pub(super) fn votes_change_the_tally_in_their_transaction(s: &dyn Store) {
    let options: Vec<String> = ["rice", "soup", "salad"].map(String::from).into();
    s.create_poll(&new_poll("p1", &options), 10, 1).unwrap();
    let cast = s.cast(&vote("p1", "ann", &[0]), 2).unwrap();
    assert!(!cast.changed);
    assert_eq!(cast.view.tally.counts, [1, 0, 0]);
    assert_eq!(cast.view.mine, Some(vec![0]));
    s.cast(&vote("p1", "bob", &[0]), 3).unwrap();
    let cast = s.cast(&vote("p1", "ann", &[2]), 4).unwrap();
    assert!(cast.changed);
    assert_eq!(
        cast.view.tally,
        Tally {
            counts: vec![1, 0, 1],
            total: 2,
            voters: 2
        }
    );
    assert!(cast.view.seq > 2, "every vote moves seq");
    assert_eq!(s.recount("p1").unwrap(), cast.view.tally);
    let view = s.poll("p1", "bob", 5).unwrap().unwrap();
    assert_eq!(view.mine, Some(vec![0]));
    assert_eq!(view.poll.options, options);
    assert_eq!(s.poll("p1", "carl", 5).unwrap().unwrap().mine, None);
    assert_eq!(s.poll("nope", "carl", 5).unwrap(), None);
    assert_eq!(
        s.cast(&vote("nope", "ann", &[0]), 6),
        Err(StoreError::NoPoll)
    );
    let votes = s.votes("p1").unwrap();
    assert_eq!(votes.len(), 2);
    assert_eq!(
        (votes[1].voter.as_str(), votes[1].choices.as_slice()),
        ("ann", &[2][..])
    );
}

pub(super) fn refusals_leave_the_tally_alone(s: &dyn Store) {
    let options: Vec<String> = ["a", "b", "c", "d"].map(String::from).into();
    let mut multi = new_poll("m", &options);
    multi.max_choices = 2;
    multi.changeable = false;
    s.create_poll(&multi, 10, 1).unwrap();
    assert!(refused(s.cast(&vote("m", "ann", &[]), 2)).contains("at least one"));
    assert!(refused(s.cast(&vote("m", "ann", &[1, 1]), 2)).contains("twice"));
    assert!(refused(s.cast(&vote("m", "ann", &[0, 1, 2]), 2)).contains("at most 2"));
    assert!(refused(s.cast(&vote("m", "ann", &[4]), 2)).contains("no option 4"));
    let cast = s.cast(&vote("m", "ann", &[3, 1]), 2).unwrap();
    assert_eq!(cast.view.mine, Some(vec![1, 3]), "kept rising");
    assert_eq!(cast.view.tally.total, 2);
    assert!(refused(s.cast(&vote("m", "ann", &[0]), 3)).contains("already voted"));
    s.set_closed("m", true, 4).unwrap();
    assert_eq!(
        refused(s.cast(&vote("m", "bob", &[0]), 5)),
        "the poll is closed"
    );
    let tally = s.poll("m", "", 6).unwrap().unwrap().tally;
    assert_eq!(
        tally,
        Tally {
            counts: vec![0, 1, 0, 1],
            total: 2,
            voters: 1
        }
    );
    assert_eq!(s.recount("m").unwrap(), tally);
}

pub(super) fn closing_times_reopening_lists_limits_and_deletion(s: &dyn Store) {
    let options: Vec<String> = ["yes", "no"].map(String::from).into();
    let mut timed = new_poll("t", &options);
    timed.closes_at = Some(100);
    s.create_poll(&timed, 2, 1).unwrap();
    s.create_poll(&new_poll("u", &options), 2, 2).unwrap();
    match s.create_poll(&new_poll("v", &options), 2, 3) {
        Err(StoreError::Refused(words)) => assert!(words.contains("limit"), "{words}"),
        other => panic!("{other:?}"),
    }
    s.cast(&vote("t", "ann", &[0]), 99).unwrap();
    let open: Vec<_> = s.open_polls("ann", 10, 50).unwrap();
    assert_eq!(
        open.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["u", "t"]
    );
    assert!(open[1].voted && !open[0].voted);
    assert_eq!((open[1].voters, open[1].total), (1, 1));
    // Past its closing time a poll reads closed before the sweep closes it.
    assert!(s.poll("t", "", 100).unwrap().unwrap().poll.closed);
    assert_eq!(
        refused(s.cast(&vote("t", "bob", &[1]), 100)),
        "the poll is closed"
    );
    assert_eq!(s.open_polls("ann", 10, 100).unwrap().len(), 1);
    let due = s.close_due(100).unwrap();
    assert_eq!(due.len(), 1);
    assert!(due[0].poll.closed);
    assert!(s.close_due(101).unwrap().is_empty(), "once");
    let reopened = s.set_closed("t", false, 200).unwrap();
    assert!(!reopened.poll.closed);
    assert_eq!(
        reopened.poll.closes_at, None,
        "reopening clears the closing time"
    );
    s.cast(&vote("t", "bob", &[1]), 201).unwrap();
    let mine = s.polls_of("olga", 10, 202).unwrap();
    assert_eq!(mine.len(), 2);
    assert!(s.delete_poll("t").unwrap());
    assert!(!s.delete_poll("t").unwrap());
    assert!(s.votes("t").unwrap().is_empty(), "votes go with their poll");
    assert_eq!(s.recount("t"), Err(StoreError::NoPoll));
    assert_eq!(s.set_closed("t", true, 203), Err(StoreError::NoPoll));
}

pub(super) fn concurrent_voters_end_with_a_recount(s: &dyn Store) {
    let options: Vec<String> = ["a", "b", "c"].map(String::from).into();
    let mut poll = new_poll("c", &options);
    poll.max_choices = 2;
    s.create_poll(&poll, 10, 1).unwrap();
    std::thread::scope(|scope| {
        for n in 0..8u32 {
            scope.spawn(move || {
                for i in 0..50u32 {
                    let voter = format!("v{n}-{}", i % 10);
                    let choices: &[u32] = match (i + n) % 3 {
                        0 => &[0],
                        1 => &[1, 2],
                        _ => &[2],
                    };
                    s.cast(&vote("c", &voter, choices), i64::from(i)).unwrap();
                }
            });
        }
    });
    let tally = s.poll("c", "", 100).unwrap().unwrap().tally;
    assert_eq!(tally.voters, 80);
    assert_eq!(s.recount("c").unwrap(), tally);
}

pub(super) fn accounts_are_unique_case_insensitively(s: &dyn Store) {
    let alice = s.create_account(&account("Alice", None), 1).unwrap();
    assert_eq!((alice.id.as_str(), alice.name.as_str()), ("alice", "Alice"));
    assert_eq!(
        s.create_account(&account("ALICE", None), 2),
        Err(StoreError::NameTaken)
    );
    assert_eq!(s.account("alice").unwrap(), Some(alice.clone()));
    assert_eq!(
        s.account_with_hash("alice").unwrap().unwrap().1,
        "$argon2id$fake"
    );
    s.create_account(&account("bob", None), 3).unwrap();
    assert_eq!(s.account_count().unwrap(), 2);
    let names: Vec<_> = s.accounts().unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(s.remove_account("bob").unwrap());
    assert!(!s.remove_account("bob").unwrap());
    assert_eq!(s.account_count().unwrap(), 1);
}

pub(super) fn invites_are_used_once_and_can_make_admins(s: &dyn Store) {
    let code = [7u8; 32];
    s.create_invite(&code, true, true, 100, 1).unwrap();
    assert!(s.invite_valid(&code, 50).unwrap());
    assert!(!s.invite_valid(&code, 100).unwrap(), "expired");
    assert_eq!(
        s.create_account(&account("late", Some(code)), 200),
        Err(StoreError::InvalidInvite)
    );
    assert_eq!(s.account_count().unwrap(), 0, "nothing created");
    let root = s.create_account(&account("root", Some(code)), 2).unwrap();
    assert!(root.admin, "an admin invite makes an admin");
    assert_eq!(
        s.create_account(&account("second", Some(code)), 3),
        Err(StoreError::InvalidInvite),
        "used"
    );
    // A taken name does not use the invite up.
    let other = [8u8; 32];
    s.create_invite(&other, false, false, 100, 1).unwrap();
    assert_eq!(
        s.create_account(&account("ROOT", Some(other)), 3),
        Err(StoreError::NameTaken)
    );
    assert!(s.invite_valid(&other, 3).unwrap());
    // A new bootstrap invite replaces the unused one.
    s.create_invite(&[9u8; 32], true, true, 100, 1).unwrap();
    s.create_invite(&[10u8; 32], true, true, 100, 1).unwrap();
    assert!(!s.invite_valid(&[9u8; 32], 3).unwrap());
    assert!(s.invite_valid(&[10u8; 32], 3).unwrap());
}

pub(super) fn sessions_expire_end_and_are_capped(s: &dyn Store) {
    s.create_account(&account("carol", None), 1).unwrap();
    let session = |n: u8| NewSession {
        hash: [n; 32],
        user: SessionOwner::Account("carol"),
        expires: 1000,
        max_per_account: 3,
    };
    for n in 1..=5 {
        s.create_session(&session(n), i64::from(n)).unwrap();
    }
    assert_eq!(s.session_count("carol").unwrap(), 3, "capped");
    assert_eq!(s.session(&[1; 32], 10).unwrap(), None, "oldest evicted");
    match s.session(&[5; 32], 10).unwrap() {
        Some(SessionUser::Account(a)) => assert_eq!(a.name, "carol"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.session(&[5; 32], 1000).unwrap(), None, "expired");
    s.delete_session(&[5; 32]).unwrap();
    assert_eq!(s.session(&[5; 32], 10).unwrap(), None, "signed out");
    assert!(s.session(&[4; 32], 10).unwrap().is_some());
    assert!(s.set_password("carol", "$argon2id$new").unwrap());
    assert_eq!(
        s.session_count("carol").unwrap(),
        0,
        "a new password ends sessions"
    );
    s.create_session(
        &NewSession {
            hash: [20; 32],
            user: SessionOwner::Guest {
                id: "guest:abc",
                name: "Visitor",
            },
            expires: 50,
            max_per_account: 3,
        },
        10,
    )
    .unwrap();
    assert_eq!(
        s.session(&[20; 32], 11).unwrap(),
        Some(SessionUser::Guest {
            id: "guest:abc".into(),
            name: "Visitor".into()
        })
    );
    s.sweep(60).unwrap();
    assert_eq!(s.session(&[20; 32], 11).unwrap(), None, "swept");
    s.create_session(&session(30), 1).unwrap();
    assert!(s.remove_account("carol").unwrap());
    assert_eq!(
        s.session(&[30; 32], 11).unwrap(),
        None,
        "removed with its account"
    );
}

pub(super) fn rooms_and_their_limits(s: &dyn Store) {
    let room = |name: &str, creator: &str| Room {
        name: name.into(),
        topic: String::new(),
        creator: creator.into(),
    };
    s.create_room(&room("lobby", ""), 3, 1, 1).unwrap();
    s.create_room(&room("rust", "dan"), 3, 1, 1).unwrap();
    assert_eq!(
        s.create_room(&room("rust", "eve"), 3, 1, 1),
        Err(StoreError::RoomTaken)
    );
    assert!(matches!(
        s.create_room(&room("go", "dan"), 3, 1, 1),
        Err(StoreError::RoomLimit(_))
    ));
    s.create_room(&room("go", "eve"), 3, 1, 1).unwrap();
    assert!(matches!(
        s.create_room(&room("zig", "fay"), 3, 1, 1),
        Err(StoreError::RoomLimit(_))
    ));
    assert!(s.set_topic("rust", "fearless").unwrap());
    assert!(!s.set_topic("nope", "x").unwrap());
    let rooms = s.rooms().unwrap();
    assert_eq!(rooms.len(), 3);
    assert_eq!(rooms[2].topic, "fearless");
    s.set_read("dan", "rust", 5).unwrap();
    s.set_read("dan", "rust", 3).unwrap();
    s.set_read("dan", "go", 1).unwrap();
    let mut reads = s.reads("dan").unwrap();
    reads.sort();
    assert_eq!(
        reads,
        [("go".to_string(), 1), ("rust".to_string(), 5)],
        "never back"
    );
}

pub(super) fn direct_messages_states_history_and_conversations(s: &dyn Store) {
    let dm = |from: &'static str, to: &'static str, text: &'static str| NewDm {
        from,
        from_name: from,
        to,
        to_name: to,
        text,
        keep: 4,
    };
    let first = s.add_dm(&dm("ann", "ben", "hi ben"), 10).unwrap();
    assert_eq!(first.state, DmState::Stored);
    let second = s.add_dm(&dm("ben", "ann", "hi ann"), 11).unwrap();
    s.dm_delivered_now(second.id).unwrap();
    s.add_dm(&dm("cid", "ann", "yo"), 12).unwrap();
    // Only the recipient marks, and only stored ones change.
    assert_eq!(s.dm_mark_delivered("ann", &[first.id]).unwrap(), []);
    assert_eq!(
        s.dm_mark_delivered("ben", &[first.id, second.id, 999])
            .unwrap(),
        [(first.id, "ann".to_string())]
    );
    let history = s.dm_history("ben", "ann", None, 10).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].text, "hi ben", "oldest first");
    assert!(history[0].late && history[0].state == DmState::Delivered);
    assert!(!history[1].late && history[1].state == DmState::Delivered);
    let before = s.dm_history("ann", "ben", Some(second.id), 10).unwrap();
    assert_eq!(before.len(), 1);
    let convs = s.conversations("ann", 10).unwrap();
    assert_eq!(
        convs
            .iter()
            .map(|c| (c.user.as_str(), c.unread))
            .collect::<Vec<_>>(),
        [("cid", 1), ("ben", 1)],
        "most recent first, unread from the peer"
    );
    s.set_dm_read("ann", "ben", second.id).unwrap();
    s.set_dm_read("ann", "ben", 1).unwrap();
    let convs = s.conversations("ann", 10).unwrap();
    assert_eq!(convs[1].unread, 0, "read, and never back");
    assert_eq!(convs[1].name, "ben");
    // A conversation keeps its newest `keep` (4).
    for n in 0..6 {
        s.add_dm(&dm("ann", "ben", "more"), 20 + n).unwrap();
    }
    let history = s.dm_history("ann", "ben", None, 100).unwrap();
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|m| m.text == "more"));
    s.delete_dm(history[3].id).unwrap();
    assert_eq!(s.dm_history("ann", "ben", None, 100).unwrap().len(), 3);
}

pub(super) fn lists_are_ordered_and_bounded(s: &dyn Store) {
    let options: Vec<String> = ["yes", "no"].map(String::from).into();
    // Three created in one millisecond: newest first, then by id.
    for id in ["b", "a", "c"] {
        s.create_poll(&new_poll(id, &options), 10, 5).unwrap();
    }
    s.create_poll(&new_poll("d", &options), 10, 6).unwrap();
    let mut closing = new_poll("e", &options);
    closing.closes_at = Some(7);
    s.create_poll(&closing, 10, 8).unwrap();
    s.cast(&vote("a", "ann", &[0]), 9).unwrap();
    let ids = |list: Vec<super::PollSummary>| list.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.polls_of("olga", 10, 7).unwrap()),
        ["e", "d", "a", "b", "c"]
    );
    assert_eq!(ids(s.polls_of("olga", 3, 7).unwrap()), ["e", "d", "a"]);
    assert!(s.polls_of("olga", 0, 7).unwrap().is_empty());
    assert!(s.polls_of("nobody", 10, 7).unwrap().is_empty());
    let open = s.open_polls("ann", 2, 7).unwrap();
    assert_eq!(
        open.iter()
            .map(|p| (p.id.as_str(), p.voted))
            .collect::<Vec<_>>(),
        [("d", false), ("a", true)],
        "past its closing time a poll is not open"
    );
    assert_eq!(
        ids(s.open_polls("ann", 10, 6).unwrap()),
        ["e", "d", "a", "b", "c"]
    );

    let dm = |to: &'static str, text: &'static str| NewDm {
        from: "ann",
        from_name: "Ann",
        to,
        to_name: to,
        text,
        keep: 10,
    };
    let sent: Vec<i64> = ["one", "two", "three", "four"]
        .into_iter()
        .enumerate()
        .map(|(n, text)| s.add_dm(&dm("ben", text), 10 + n as i64).unwrap().id)
        .collect();
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "ids rise");
    s.add_dm(&dm("cid", "hey"), 20).unwrap();
    let texts = |list: Vec<super::DmMessage>| list.into_iter().map(|m| m.text).collect::<Vec<_>>();
    assert_eq!(
        texts(s.dm_history("ann", "ben", None, 2).unwrap()),
        ["three", "four"]
    );
    assert_eq!(
        texts(s.dm_history("ben", "ann", Some(sent[2]), 10).unwrap()),
        ["one", "two"]
    );
    assert!(s.dm_history("ann", "ben", None, 0).unwrap().is_empty());
    let convs = s.conversations("ann", 1).unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!((convs[0].user.as_str(), convs[0].unread), ("cid", 0));
    let ben = s.conversations("ben", 10).unwrap();
    assert_eq!((ben[0].user.as_str(), ben[0].name.as_str()), ("ann", "Ann"));
    assert_eq!(ben[0].unread, 4, "everything from ann");
    assert!(s.conversations("ann", 0).unwrap().is_empty());
}

pub(super) fn deleting_messages_moves_conversations(s: &dyn Store) {
    let dm = |from: &'static str, to: &'static str| NewDm {
        from,
        from_name: from,
        to,
        to_name: to,
        text: "hi",
        keep: 10,
    };
    let to_ben = s.add_dm(&dm("ann", "ben"), 1).unwrap();
    let to_cid = s.add_dm(&dm("ann", "cid"), 2).unwrap();
    let peers = |user: &str| {
        s.conversations(user, 10)
            .unwrap()
            .into_iter()
            .map(|c| c.user)
            .collect::<Vec<_>>()
    };
    assert_eq!(peers("ann"), ["cid", "ben"]);
    s.delete_dm(to_cid.id).unwrap();
    assert_eq!(
        peers("ann"),
        ["ben"],
        "a conversation with nothing left goes"
    );
    assert!(peers("cid").is_empty());
    let again = s.add_dm(&dm("ann", "ben"), 3).unwrap();
    s.delete_dm(again.id).unwrap();
    let convs = s.conversations("ann", 10).unwrap();
    assert_eq!(convs[0].last.id, to_ben.id, "back to the newest left");
    // A note to oneself is one conversation.
    s.add_dm(&dm("ann", "ann"), 4).unwrap();
    assert_eq!(peers("ann"), ["ann", "ben"]);
    assert_eq!(s.conversations("ann", 10).unwrap()[0].unread, 1);
    s.delete_dm(to_ben.id).unwrap();
    s.delete_dm(to_ben.id).unwrap();
    assert_eq!(peers("ann"), ["ann"]);
    s.dm_delivered_now(999_999).unwrap();
    assert!(
        s.dm_history("ann", "ben", None, 10).unwrap().is_empty(),
        "nothing made"
    );
}

pub(super) fn removing_an_account_ends_what_is_its_own(s: &dyn Store) {
    s.create_account(&account("Dan", None), 1).unwrap();
    s.set_read("dan", "lobby", 3).unwrap();
    s.set_read("eve", "lobby", 4).unwrap();
    s.create_session(
        &NewSession {
            hash: [1; 32],
            user: SessionOwner::Account("dan"),
            expires: 1000,
            max_per_account: 5,
        },
        2,
    )
    .unwrap();
    s.forget_read("eve", "lobby").unwrap();
    assert!(s.reads("eve").unwrap().is_empty(), "forgotten");
    assert!(s.remove_account("dan").unwrap());
    assert_eq!(s.account("dan").unwrap(), None);
    assert_eq!(s.account_with_hash("dan").unwrap(), None);
    assert_eq!(s.session(&[1; 32], 3).unwrap(), None);
    assert_eq!(s.session_count("dan").unwrap(), 0);
    assert!(
        s.reads("dan").unwrap().is_empty(),
        "read positions go with it"
    );
    assert!(!s.set_password("dan", "$argon2id$x").unwrap());
    assert!(
        matches!(
            s.create_session(
                &NewSession {
                    hash: [2; 32],
                    user: SessionOwner::Account("dan"),
                    expires: 1000,
                    max_per_account: 5,
                },
                4,
            ),
            Err(StoreError::Backend(_))
        ),
        "a session needs its account"
    );
    let dan = s.create_account(&account("DAN", None), 5).unwrap();
    assert_eq!(
        (dan.name.as_str(), dan.created),
        ("DAN", 5),
        "the name is free again"
    );
    assert!(s.reads("dan").unwrap().is_empty());
    s.set_read("dan", "lobby", u64::MAX).unwrap();
    assert_eq!(
        s.reads("dan").unwrap(),
        [("lobby".to_string(), i64::MAX as u64)]
    );
}

pub(super) fn the_sweep_keeps_what_is_live(s: &dyn Store) {
    s.create_account(&account("fay", None), 1).unwrap();
    let session = |n: u8, user: SessionOwner<'static>, expires: i64| NewSession {
        hash: [n; 32],
        user,
        expires,
        max_per_account: 5,
    };
    let guest = SessionOwner::Guest {
        id: "guest:abc",
        name: "G",
    };
    s.create_session(&session(1, SessionOwner::Account("fay"), 100), 1)
        .unwrap();
    s.create_session(&session(2, SessionOwner::Account("fay"), 500), 1)
        .unwrap();
    s.create_session(&session(3, SessionOwner::Account("fay"), 1000), 1)
        .unwrap();
    s.create_session(&session(4, guest, 100), 1).unwrap();
    s.create_session(&session(5, guest, 1000), 1).unwrap();
    s.create_invite(&[6; 32], false, false, 100, 1).unwrap();
    s.create_invite(&[7; 32], false, false, 1000, 1).unwrap();
    assert_eq!(s.session_count("fay").unwrap(), 3);
    assert!(s.session(&[1; 32], 50).unwrap().is_some());
    s.sweep(500).unwrap();
    assert_eq!(
        s.session_count("fay").unwrap(),
        1,
        "expiring at the sweep's time too"
    );
    assert_eq!(s.session(&[1; 32], 50).unwrap(), None, "swept");
    assert_eq!(s.session(&[4; 32], 50).unwrap(), None, "swept");
    assert!(s.session(&[3; 32], 600).unwrap().is_some());
    assert!(s.session(&[5; 32], 600).unwrap().is_some());
    assert!(!s.invite_valid(&[6; 32], 50).unwrap(), "swept");
    assert!(s.invite_valid(&[7; 32], 600).unwrap());
    s.sweep(500).unwrap();
    assert_eq!(s.session_count("fay").unwrap(), 1, "twice is once");
    s.delete_session(&[3; 32]).unwrap();
    assert_eq!(s.session_count("fay").unwrap(), 0);
}
