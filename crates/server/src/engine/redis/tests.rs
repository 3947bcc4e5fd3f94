//! Tests of the Redis engine against a real `redis-server` (one per test, on a free
//! loopback port; skipped with the fixture's message where Redis is not installed): the
//! shared suite, publishing, two nodes at once, outages and restarts.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use switchboard_redis_fixture::RedisServer;

use super::*;
use crate::engine::{HistoryQuery, MailboxQuota, suite};
use crate::protocol::now_ms;

const KEEP: Retention = Retention {
    size: 3,
    ttl: Duration::from_secs(60),
};

const LIMITS: MailboxLimits = MailboxLimits {
    size: 10,
    per_sender: 10,
    server_size: 10,
    ttl: Duration::from_secs(60),
};

fn settings(server: &RedisServer) -> RedisSettings {
    RedisSettings {
        url: server.url(),
        ..RedisSettings::default()
    }
}

async fn engine(server: &RedisServer) -> RedisEngine {
    RedisEngine::connect(&settings(server)).await.unwrap()
}

/// A plain connection, to look at what the engine wrote.
async fn plain(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn json(text: &str) -> Arc<RawValue> {
    Arc::from(RawValue::from_string(text.to_owned()).unwrap())
}

/// A publication before its offset is known; its data holds a number no float can hold,
/// which must come back as it went in.
fn unpublished(n: u64) -> Publication {
    Publication {
        offset: 0,
        data: json(&format!(r#"{{"n":{n},"big":12345678901234567890123}}"#)),
        info: Some(ClientInfo {
            user: "alice".into(),
            client: "c1".into(),
            info: Some(json(r#"{"name":"Alice"}"#)),
        }),
        time: now_ms(),
    }
}

fn offsets(found: &[Arc<Publication>]) -> Vec<u64> {
    found.iter().map(|p| p.offset).collect()
}

/// Retries `publish` until Redis answers again (the connection backs off meanwhile).
async fn publish_until_up(engine: &RedisEngine, channel: &str) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match engine.publish(channel, &unpublished(0), Some(KEEP)).await {
            Ok(position) => return position,
            Err(err) => {
                assert!(Instant::now() < deadline, "redis did not come back: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn store_suite() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    suite::run_all(&engine(&server).await).await;
}

/// Redis' `maxmemory` is the budget: a little above what the empty server uses.
#[tokio::test]
async fn budget_refuses_then_frees() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server).await;
    let mut conn = plain(&server).await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let used = used_memory(&info).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .arg("maxmemory")
        .arg(used + 300_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    suite::budget_refuses_then_frees(&engine).await;
    assert!(engine.usage().bytes > 0);
}

#[tokio::test]
async fn publish_takes_increasing_offsets_and_publishes_the_payload() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server).await;
    let mut pubsub = redis::Client::open(server.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(engine.keys().topic("chat:p"))
        .await
        .unwrap();
    let mut positions = Vec::new();
    for n in 1..=5 {
        positions.push(
            engine
                .publish("chat:p", &unpublished(n), Some(KEEP))
                .await
                .unwrap(),
        );
    }
    let epoch = positions[0].0.clone();
    assert!(epoch.len() >= 8 && epoch.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(positions.iter().all(|(e, _)| *e == epoch));
    let taken: Vec<u64> = positions.iter().map(|(_, offset)| *offset).collect();
    assert_eq!(taken, [1, 2, 3, 4, 5]);

    // Every node subscribed to the topic gets `P<epoch> <publication>`, in offset order.
    let mut messages = pubsub.on_message();
    for n in 1..=5 {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        let payload: String = message.get_payload().unwrap();
        let json = payload.strip_prefix(&format!("P{epoch} ")).unwrap();
        let publication: Publication = serde_json::from_str(json).unwrap();
        assert_eq!(publication.offset, n);
        assert_eq!(
            publication.data.get(),
            format!(r#"{{"n":{n},"big":12345678901234567890123}}"#)
        );
        assert_eq!(publication.info.unwrap().user, "alice");
    }
    drop(messages);

    // The history is trimmed to exactly its size; every entry parses back.
    let mut conn = plain(&server).await;
    let history = engine.keys().history("chat:p");
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(&history)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["3-0", "4-0", "5-0"]);
    for (id, fields) in &entries {
        assert_eq!(fields.len(), 2, "one field p");
        let publication: Publication = serde_json::from_str(field(fields, "p").unwrap()).unwrap();
        assert_eq!(format!("{}-0", publication.offset), *id);
    }
    // Meta and history expire with the history's TTL.
    for key in [engine.keys().meta("chat:p"), history] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 50_000 && ttl <= 60_000, "{key}: {ttl}");
    }

    let snapshot = engine.channel("chat:p", KEEP, usize::MAX).await.unwrap();
    assert_eq!((snapshot.epoch.as_str(), snapshot.top), (epoch.as_str(), 5));
    assert_eq!(offsets(&snapshot.recent), [3, 4, 5]);
    let query = HistoryQuery {
        after: 0,
        before: None,
        limit: 10,
        newest: false,
    };
    assert_eq!(
        offsets(&engine.history("chat:p", query).await.unwrap()),
        [3, 4, 5]
    );
}

#[tokio::test]
async fn publish_without_history_still_takes_offsets() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server).await;
    let mut taken = Vec::new();
    for n in 1..=3 {
        taken.push(
            engine
                .publish("news:x", &unpublished(n), None)
                .await
                .unwrap()
                .1,
        );
    }
    assert_eq!(taken, [1, 2, 3]);
    let mut conn = plain(&server).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(engine.keys().history("news:x"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "no history is kept");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(engine.keys().meta("news:x"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let limit = i64::try_from(NO_HISTORY_TTL.as_millis()).unwrap();
    assert!(ttl > limit - 10_000 && ttl <= limit, "{ttl}");
    // Another node learns the position from the meta.
    let none = Retention {
        size: 0,
        ttl: Duration::ZERO,
    };
    let snapshot = engine.channel("news:x", none, usize::MAX).await.unwrap();
    assert_eq!(snapshot.top, 3);
    assert!(snapshot.recent.is_empty());
}

/// Two nodes publishing on one channel at once take distinct offsets, each stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_take_distinct_offsets() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (engine(&server).await, engine(&server).await);
    let keep = Retention {
        size: 1000,
        ttl: Duration::from_secs(60),
    };
    let publication = unpublished(1);
    let publishes = (0..100).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        node.publish("chat:race", &publication, Some(keep))
    });
    let mut taken: Vec<u64> = join_all(publishes)
        .await
        .into_iter()
        .map(|r| r.unwrap().1)
        .collect();
    taken.sort_unstable();
    assert_eq!(taken, (1..=100).collect::<Vec<_>>());
    let query = HistoryQuery {
        after: 0,
        before: None,
        limit: 1000,
        newest: false,
    };
    let stored = b.history("chat:race", query).await.unwrap();
    assert_eq!(offsets(&stored), (1..=100).collect::<Vec<_>>());
}

/// Two nodes filling one mailbox at once: exactly `size` messages are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_cannot_overfill_a_mailbox() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (engine(&server).await, engine(&server).await);
    let pushes = (0..40).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        let from = ClientInfo {
            user: format!("u{i}"),
            client: "c".into(),
            info: None,
        };
        node.mailbox_push("zoe", Some(from), json("1"), LIMITS, false)
    });
    let results = join_all(pushes).await;
    let kept = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(kept, LIMITS.size);
    assert!(results.iter().all(|r| match r {
        Ok(_) => true,
        Err(err) => matches!(
            err,
            StoreError::MailboxFull {
                quota: MailboxQuota::Users,
                ..
            }
        ),
    }));
    let page = a.mailbox_page("zoe", 0, PageLimit::ALL).await.unwrap();
    assert_eq!(page.messages.len(), LIMITS.size);
}

/// Appends reach Redis in call order even when their futures are awaited in reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_keep_call_order() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server).await;
    let keep = Retention {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    let snapshot = engine.channel("chat:o", keep, usize::MAX).await.unwrap();
    let pending: Vec<_> = (1..=50)
        .map(|offset| {
            let publication = Publication {
                offset,
                ..unpublished(offset)
            };
            engine.append("chat:o", &snapshot.epoch, Arc::new(publication), keep)
        })
        .collect();
    for write in pending.into_iter().rev() {
        write.await.unwrap();
    }
    let again = engine.channel("chat:o", keep, usize::MAX).await.unwrap();
    assert_eq!((again.epoch, again.top), (snapshot.epoch, 50));
    assert_eq!(offsets(&again.recent), (1..=50).collect::<Vec<_>>());
}

/// A persistent Redis killed and restarted: commands fail (and health says so) while it
/// is down, then reconnect; the stream continues under its epoch.
#[tokio::test]
async fn commands_reconnect_after_a_restart() {
    let Some(mut server) = RedisServer::start_persistent() else {
        return;
    };
    let engine = engine(&server).await;
    let (epoch, offset) = engine
        .publish("chat:r", &unpublished(1), Some(KEEP))
        .await
        .unwrap();
    assert_eq!(offset, 1);
    assert_eq!(engine.health(), Ok(()));

    server.kill();
    let started = Instant::now();
    let err = engine
        .publish("chat:r", &unpublished(2), Some(KEEP))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Failed(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a publication during an outage fails quickly: {:?}",
        started.elapsed()
    );
    let reason = engine.health().unwrap_err();
    assert!(reason.starts_with("redis"), "{reason}");
    assert!(engine.sweep().await.is_err());
    assert!(engine.health().is_err());

    server.restart();
    assert_eq!(
        publish_until_up(&engine, "chat:r").await,
        (epoch.clone(), 2)
    );
    assert_eq!(engine.health(), Ok(()));
    engine.sweep().await.unwrap();
}

/// A Redis restarted without persistence comes back empty: channels and the mailbox
/// series start new epochs (ids start over), so clients are told they cannot recover.
#[tokio::test]
async fn a_restart_without_persistence_changes_the_epochs() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server).await;
    let (epoch, _) = engine
        .publish("chat:e", &unpublished(1), Some(KEEP))
        .await
        .unwrap();
    let before = engine.mailbox_epoch();
    let first = engine
        .mailbox_push("bob", None, json("1"), LIMITS, false)
        .await
        .unwrap();

    server.restart();
    let (again, offset) = publish_until_up(&engine, "chat:e").await;
    assert_ne!(again, epoch);
    assert_eq!(offset, 1);
    engine.sweep().await.unwrap();
    assert_ne!(engine.mailbox_epoch(), before);
    let next = engine
        .mailbox_push("bob", None, json("2"), LIMITS, false)
        .await
        .unwrap();
    assert!(next.id <= first.id, "ids started over: {}", next.id);
}

/// The series hash lost (evicted) while a mailbox was not: the ids may come again, so the
/// epoch changes, and the old messages are neither shown nor counted.
#[tokio::test]
async fn mailbox_ids_going_back_change_the_epoch() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server).await;
    let small = MailboxLimits {
        server_size: 2,
        ..LIMITS
    };
    for n in 0..2 {
        engine
            .mailbox_push("amy", None, json(&n.to_string()), small, false)
            .await
            .unwrap();
    }
    let before = engine.mailbox_epoch();
    let mut conn = plain(&server).await;
    let _: () = redis::cmd("DEL")
        .arg(engine.keys().mailbox_series())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        engine
            .mailbox_page("amy", 0, PageLimit::ALL)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    let message = engine
        .mailbox_push("amy", None, json(r#""new""#), small, false)
        .await
        .unwrap();
    assert_eq!(message.id, 1);
    assert_ne!(engine.mailbox_epoch(), before);
    let page = engine.mailbox_page("amy", 0, PageLimit::ALL).await.unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.data.get()).collect();
    assert_eq!(texts, [r#""new""#]);
}

/// Expired messages make room, however many senders they came from, and acks keep the
/// counts right: the mailbox's keys go when it empties.
#[tokio::test]
async fn counts_follow_expiry_and_acks() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let engine = engine(&server).await;
    let short = MailboxLimits {
        size: 4,
        per_sender: 2,
        ttl: Duration::from_millis(50),
        ..LIMITS
    };
    let from = |user: &str| {
        Some(ClientInfo {
            user: user.into(),
            client: "c".into(),
            info: None,
        })
    };
    for user in ["a", "a", "b", "b"] {
        engine
            .mailbox_push("kim", from(user), json("1"), short, false)
            .await
            .unwrap();
    }
    assert!(
        engine
            .mailbox_push("kim", from("c"), json("1"), short, false)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    let long = MailboxLimits {
        ttl: Duration::from_secs(60),
        ..short
    };
    let mut last = 0;
    for user in ["a", "a", "b", "c"] {
        last = engine
            .mailbox_push("kim", from(user), json("2"), long, false)
            .await
            .unwrap()
            .id;
    }
    let err = engine
        .mailbox_push("kim", from("a"), json("3"), long, false)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::MailboxFull {
            quota: MailboxQuota::Sender,
            limit: 2
        }
    );
    let mut conn = plain(&server).await;
    let counts: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(engine.keys().mailbox_counts("kim"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let count = |name: &str| {
        counts
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, n)| n.as_str())
    };
    assert_eq!(count("#users"), Some("4"));
    assert_eq!(
        (count("ua"), count("ub"), count("uc")),
        (Some("2"), Some("1"), Some("1"))
    );
    engine.mailbox_ack("kim", last).await.unwrap();
    let exists: u32 = redis::cmd("EXISTS")
        .arg(engine.keys().mailbox("kim"))
        .arg(engine.keys().mailbox_counts("kim"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

/// Neither the settings nor the engine print the password, and neither does a failed
/// connection's error.
#[tokio::test]
async fn debug_hides_the_password() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut conn = plain(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("hunter2")
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", server.port());
    let engine = RedisEngine::connect(&RedisSettings {
        url,
        ..RedisSettings::default()
    })
    .await
    .unwrap();
    let shown = format!("{engine:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(":(set)@127.0.0.1"), "{shown}");
    let wrong = format!("redis://:letmein@127.0.0.1:{}/0", server.port());
    let err = RedisEngine::connect(&RedisSettings {
        url: wrong,
        ..RedisSettings::default()
    })
    .await
    .unwrap_err();
    assert!(!err.to_string().contains("letmein"), "{err}");
}

#[test]
fn json_after_strips_the_number_the_script_writes() {
    let tail = json_after(&unpublished(1), "offset", 0).unwrap();
    assert!(tail.starts_with(r#","data":"#), "{tail}");
    let message = PrivateMessage {
        id: 0,
        from: None,
        data: json("1"),
        time: 5,
    };
    assert_eq!(
        json_after(&message, "mailbox", 0).unwrap(),
        r#","data":1,"time":5}"#
    );
    assert!(json_after(&message, "offset", 0).is_err());
}

#[test]
fn used_memory_is_read_from_info() {
    let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
    assert_eq!(used_memory(info), Some(1_048_576));
    assert_eq!(used_memory("# Memory\r\n"), None);
}

/// A `redis-server --sentinel` on a free loopback port watching one master as
/// `mymaster`, killed (by its own child handle) when dropped.
struct Sentinel {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "switchboard-sentinel-{}-{}",
            std::process::id(),
            random_id(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                dir.display()
            ),
        )
        .unwrap();
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = std::process::Command::new(binary)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let sentinel = Sentinel { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 100 ms for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn role(server: &RedisServer) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut plain(server).await)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Through Sentinel the engine finds the master, and after a failover it follows the new
/// one: the stream continues there under its epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_names_the_master_and_the_engine_follows_a_failover() {
    let (Some(primary), Some(replica)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query_async(&mut plain(&replica).await)
        .await
        .unwrap();
    let sentinel = Sentinel::start(primary.port());
    let settings = RedisSettings {
        url: "redis:///0".into(),
        sentinels: vec![format!("127.0.0.1:{}", sentinel.port)],
        ..RedisSettings::default()
    };
    let engine = RedisEngine::connect(&settings).await.unwrap();
    let (epoch, offset) = engine
        .publish("chat:s", &unpublished(1), Some(KEEP))
        .await
        .unwrap();
    assert_eq!(offset, 1);
    // Replication is asynchronous: a failover before the replica has the stream would
    // lose it (and rightly start a new epoch); here the test waits for it.
    eventually("the replica has the stream", || async {
        let stored: Option<String> = redis::cmd("HGET")
            .arg(engine.keys().meta("chat:s"))
            .arg("epoch")
            .query_async(&mut plain(&replica).await)
            .await
            .unwrap();
        stored.as_deref() == Some(epoch.as_str())
    })
    .await;

    let mut ask = redis::Client::open(format!("redis://127.0.0.1:{}", sentinel.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Refused until the sentinel has learnt the replica from the master.
    eventually("the failover starts", || {
        let mut ask = ask.clone();
        async move {
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg("mymaster")
                .query_async::<()>(&mut ask)
                .await
                .is_ok()
        }
    })
    .await;
    eventually("the replica is the master", || async {
        role(&replica).await == "master" && role(&primary).await == "slave"
    })
    .await;
    let _ = &mut ask;

    // The old master refuses writes (READONLY): the engine asks the sentinel and follows.
    let (again, offset) = publish_until_up(&engine, "chat:s").await;
    assert_eq!(again, epoch);
    assert!(offset >= 2, "{offset}");
    let top: Option<u64> = redis::cmd("HGET")
        .arg(engine.keys().meta("chat:s"))
        .arg("top")
        .query_async(&mut plain(&replica).await)
        .await
        .unwrap();
    assert_eq!(top, Some(offset), "written on the new master");
}
