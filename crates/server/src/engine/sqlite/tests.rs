//! Tests of the SQLite store: the shared suite, restarts, retention, failures.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::join_all;

use rusqlite::Connection;

use super::sql::int;
use super::*;
use crate::engine::MailboxQuota;

/// A directory removed when dropped (the crate has no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-sqlite-{}-{}",
            std::process::id(),
            random_id(6)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const KEEP: Retention = Retention {
    size: 100,
    ttl: Duration::from_secs(600),
};

const LIMITS: MailboxLimits = MailboxLimits {
    size: 10,
    per_sender: 10,
    server_size: 10,
    ttl: Duration::from_secs(600),
};

/// Every pending message of `user`.
async fn pending(store: &SqliteStore, user: &str) -> Vec<Arc<crate::protocol::PrivateMessage>> {
    store
        .mailbox_page(user, 0, PageLimit::ALL)
        .await
        .unwrap()
        .messages
}

fn json(text: &str) -> Arc<RawValue> {
    Arc::from(RawValue::from_string(text.to_owned()).unwrap())
}

fn alice() -> ClientInfo {
    ClientInfo {
        user: "alice".into(),
        client: "c1".into(),
        info: Some(json(r#"{"name":"Alice"}"#)),
    }
}

fn publication(offset: u64) -> Arc<Publication> {
    Arc::new(Publication {
        offset,
        data: json(&format!(r#"{{"n":{offset}}}"#)),
        info: Some(alice()),
        time: now_ms(),
    })
}

fn offsets(snapshot: &ChannelSnapshot) -> Vec<u64> {
    snapshot.recent.iter().map(|p| p.offset).collect()
}

/// Counts a table's rows through a plain connection (once the store is closed, so that
/// everything it wrote is in).
fn rows(path: &Path, table: &str) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

/// The error of opening `path`, which must fail.
fn open_error(path: &Path) -> String {
    match SqliteStore::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn store_suite() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("store.db")).unwrap();
    super::super::suite::run_all(&store).await;
}

/// The suite's budget check: 256 KiB, of which the empty file takes ~50 KB.
#[tokio::test]
async fn budget_refuses_then_frees() {
    let dir = TempDir::new();
    let options = Options {
        max_bytes: 256 << 10,
        min_free_bytes: 0,
        ..Options::default()
    };
    let store = SqliteStore::open_with(&dir.file("store.db"), options).unwrap();
    super::super::suite::budget_refuses_then_frees(&store).await;
}

/// `storage.max_bytes` counts the database's pages in use and its log: the refusal names
/// the setting and the numbers, `usage` reports them, deletions are never refused, and
/// the log is truncated rather than let it refuse writes the data leaves room for.
#[tokio::test]
async fn max_bytes_refuses_writes_naming_the_setting() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let max = 200 << 10;
    let options = Options {
        max_bytes: max,
        min_free_bytes: 0,
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let empty = store.usage();
    assert!(empty.bytes > 0 && empty.bytes < max, "{empty:?}");
    assert_eq!(empty.refused, 0);
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let big = |offset| {
        Arc::new(Publication {
            data: json(&format!("{:?}", "x".repeat(500))),
            ..(*publication(offset)).clone()
        })
    };
    // One commit each (~12 KB of log): the log alone would pass the budget long before
    // the data does.
    let all = Retention {
        size: 10_000,
        ..KEEP
    };
    let mut offset = 0;
    let err = loop {
        offset += 1;
        assert!(offset < 1000, "never refused");
        if let Err(err) = store
            .append("chat:a", &snapshot.epoch, big(offset), all)
            .await
        {
            break err;
        }
    };
    let StoreError::Full(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.contains("storage.max_bytes") && why.contains(&max.to_string()),
        "{why}"
    );
    // Most of the budget is data, not log, when it refuses.
    assert!(offset > 150, "refused after {offset} appends: {why}");
    let usage = store.usage();
    assert!(usage.refused >= 1, "{usage:?}");
    assert!(usage.bytes > max - 20_000, "{usage:?}");
    // Deletions proceed: an ack, and a sweep.
    store
        .mailbox_ack("bob", u64::MAX)
        .await
        .expect("an ack is never refused");
    store.sweep().await.unwrap();
    drop(store);
    assert_eq!(rows(&path, "publications"), (offset - 1) as i64);
}

/// `storage.min_free_bytes`: while the filesystem has less free, appends and messages
/// are refused naming the setting; acknowledgements still proceed.
#[tokio::test]
async fn min_free_bytes_refuses_writes_naming_the_setting() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let free = budget::free_bytes(&dir.0).unwrap();
    let options = Options {
        min_free_bytes: free.saturating_mul(2).max(1 << 40),
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let err = store
        .append("chat:a", &snapshot.epoch, publication(1), KEEP)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Full(why) if why.contains("storage.min_free_bytes")),
        "{err:?}"
    );
    let err = store
        .mailbox_push("bob", None, json("1"), LIMITS, false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    store.mailbox_ack("bob", u64::MAX).await.unwrap();
    assert_eq!(store.usage().refused, 2);
    drop(store);
    assert_eq!(rows(&path, "publications"), 0);
}

#[tokio::test]
async fn a_restart_continues_epochs_offsets_and_mailboxes() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let first = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    for offset in 1..=5 {
        store
            .append("chat:a", &first.epoch, publication(offset), KEEP)
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for text in ["1", "2", "3"] {
        let m = store
            .mailbox_push("bob", Some(alice()), json(text), LIMITS, false)
            .await
            .unwrap();
        ids.push(m.id);
    }
    store.mailbox_ack("bob", ids[0]).await.unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let again = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!(again.epoch, first.epoch);
    assert_eq!(again.top, 5);
    assert_eq!(offsets(&again), [1, 2, 3, 4, 5]);
    let last = &again.recent[4];
    assert_eq!(last.data.get(), r#"{"n":5}"#);
    let info = last.info.as_ref().unwrap();
    assert_eq!((info.user.as_str(), info.client.as_str()), ("alice", "c1"));
    assert_eq!(info.info.as_ref().unwrap().get(), r#"{"name":"Alice"}"#);

    let pending = pending(&store, "bob").await;
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(pending[0].data.get(), "2");
    assert_eq!(pending[0].from.as_ref().unwrap().user, "alice");

    // Ids keep increasing, even once the newest message was acknowledged (and so
    // deleted) before a restart: AUTOINCREMENT never hands an id out twice.
    store.mailbox_ack("bob", ids[2]).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let next = store
        .mailbox_push("bob", None, json("4"), LIMITS, false)
        .await
        .unwrap();
    assert!(next.id > ids[2], "{} after {}", next.id, ids[2]);
}

/// Dropping the store finishes what is already queued: a request whose caller went
/// away is still committed before the writer stops.
#[tokio::test]
async fn drop_commits_queued_requests() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    for offset in 1..=50 {
        // One poll queues the request; the future (its caller) is then dropped.
        let _ = store
            .append("chat:a", &snapshot.epoch, publication(offset), KEEP)
            .now_or_never();
    }
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let again = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!(again.top, 50);
    assert_eq!(offsets(&again), (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn retention_by_size_deletes_in_the_append() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let three = Retention { size: 3, ..KEEP };
    let snapshot = store.channel("chat:a", three, usize::MAX).await.unwrap();
    for offset in 1..=10 {
        store
            .append("chat:a", &snapshot.epoch, publication(offset), three)
            .await
            .unwrap();
    }
    let again = store.channel("chat:a", three, usize::MAX).await.unwrap();
    assert_eq!((again.top, offsets(&again)), (10, vec![8, 9, 10]));
    // Deleted, not only left out of the snapshot.
    let wide = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!(offsets(&wide), [8, 9, 10]);
    drop(store);
    assert_eq!(rows(&path, "publications"), 3);
}

#[tokio::test]
async fn retention_by_time_hides_then_sweeps() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let short = Retention {
        size: 10_000,
        ttl: Duration::from_millis(100),
    };
    let snapshot = store.channel("chat:a", short, usize::MAX).await.unwrap();
    // More than one sweep batch, appended concurrently so they share commits.
    let count = 2 * SWEEP_BATCH as u64 + 10;
    let appends = (1..=count)
        .map(|offset| store.append("chat:a", &snapshot.epoch, publication(offset), short));
    for result in join_all(appends).await {
        result.unwrap();
    }
    let short_box = MailboxLimits {
        ttl: Duration::from_millis(100),
        ..LIMITS
    };
    store
        .mailbox_push("bob", None, json("1"), short_box, false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Expired: invisible at once, before any sweep; the position stays.
    let again = store.channel("chat:a", short, usize::MAX).await.unwrap();
    assert_eq!(
        (again.epoch.as_str(), again.top),
        (snapshot.epoch.as_str(), count)
    );
    assert!(again.recent.is_empty());
    assert!(pending(&store, "bob").await.is_empty());
    // An unexpired one survives the sweep.
    store
        .append("chat:a", &snapshot.epoch, publication(count + 1), KEEP)
        .await
        .unwrap();
    store.sweep().await.unwrap();
    let after = store.channel("chat:a", short, usize::MAX).await.unwrap();
    assert_eq!(offsets(&after), [count + 1]);
    drop(store);
    assert_eq!(rows(&path, "publications"), 1);
    assert_eq!(rows(&path, "mailbox"), 0);
}

#[tokio::test]
async fn a_full_mailbox_refuses_until_acked() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("store.db")).unwrap();
    let two = MailboxLimits {
        server_size: 2,
        ..LIMITS
    };
    let first = store
        .mailbox_push("bob", None, json("1"), two, false)
        .await
        .unwrap();
    store
        .mailbox_push("bob", None, json("2"), two, false)
        .await
        .unwrap();
    let err = store
        .mailbox_push("bob", None, json("3"), two, false)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::MailboxFull {
            quota: MailboxQuota::Server,
            limit: 2
        }
    );
    // Another user's box is not affected; an ack makes room.
    store
        .mailbox_push("carol", None, json("1"), two, false)
        .await
        .unwrap();
    store.mailbox_ack("bob", first.id).await.unwrap();
    store
        .mailbox_push("bob", None, json("3"), two, false)
        .await
        .unwrap();
    // An ack beyond any id (a client may send anything) clears the box.
    store.mailbox_ack("bob", u64::MAX).await.unwrap();
    assert!(pending(&store, "bob").await.is_empty());
}

#[tokio::test]
async fn namespaces_without_history_are_not_stored() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("store.db")).unwrap();
    let none = Retention {
        size: 0,
        ttl: Duration::ZERO,
    };
    let a = store.channel("live:a", none, usize::MAX).await.unwrap();
    store
        .append("live:a", &a.epoch, publication(1), none)
        .await
        .unwrap();
    let b = store.channel("live:a", none, usize::MAX).await.unwrap();
    // The store cannot know their offsets: a new epoch, never the old one restarting.
    assert_ne!(a.epoch, b.epoch);
    assert_eq!(b.top, 0);
}

/// Appends of one channel reach the writer out of order (the hub reserves offsets,
/// then separate tasks write them): `top` is the highest, whatever the arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_keep_the_highest_top() {
    let dir = TempDir::new();
    let store = Arc::new(SqliteStore::open(&dir.file("store.db")).unwrap());
    let all = Retention {
        size: 10_000,
        ..KEEP
    };
    let snapshot = store.channel("chat:a", all, usize::MAX).await.unwrap();

    // Out of order by construction first.
    for offset in [2, 1] {
        store
            .append("chat:a", &snapshot.epoch, publication(offset), all)
            .await
            .unwrap();
    }
    assert_eq!(
        store.channel("chat:a", all, usize::MAX).await.unwrap().top,
        2
    );

    // Then as the hub does it, with many tasks.
    let reserved = Arc::new(AtomicU64::new(2));
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let store = store.clone();
            let reserved = reserved.clone();
            let epoch = snapshot.epoch.clone();
            tokio::spawn(async move {
                for i in 0..100u64 {
                    let offset = reserved.fetch_add(1, Ordering::Relaxed) + 1;
                    if (task + i) % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    store
                        .append("chat:a", &epoch, publication(offset), all)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let again = store.channel("chat:a", all, usize::MAX).await.unwrap();
    assert_eq!(again.epoch, snapshot.epoch);
    assert_eq!(again.top, 1602);
    assert_eq!(offsets(&again), (1..=1602).collect::<Vec<_>>());
}

/// A request that fails inside a batch fails alone: the batch is rolled back and its
/// requests retried one by one, and the writer goes on serving.
#[tokio::test]
async fn a_failing_request_does_not_fail_its_batch() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("store.db")).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let epoch = snapshot.epoch.as_str();
    // Queued together, so they share one batch; offset 1 twice breaks the primary key.
    let (first, duplicate, message, other) = tokio::join!(
        store.append("chat:a", epoch, publication(1), KEEP),
        store.append("chat:a", epoch, publication(1), KEEP),
        store.mailbox_push("bob", None, json("1"), LIMITS, false),
        store.append("chat:b", "e", publication(1), KEEP),
    );
    first.unwrap();
    assert!(
        matches!(&duplicate, Err(StoreError::Failed(why)) if why.contains("UNIQUE")),
        "{duplicate:?}"
    );
    message.unwrap();
    other.unwrap();
    // Another epoch than the stored one is refused, and stores nothing.
    let err = store
        .append("chat:a", "not-the-epoch", publication(2), KEEP)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Failed(_)), "{err:?}");
    store
        .append("chat:a", epoch, publication(2), KEEP)
        .await
        .unwrap();
    let again = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!((again.top, offsets(&again)), (2, vec![1, 2]));
    assert_eq!(pending(&store, "bob").await.len(), 1);
}

/// A disk that fails (here: full, through `max_page_count`) fails every request of
/// the batch, acknowledges nothing, and the writer serves again once it is fixed.
#[tokio::test]
async fn a_failing_disk_fails_the_batch_then_recovers() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("store.db")).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let epoch = snapshot.epoch.as_str();
    let sql = |sql: &str| store.call(Op::Sql(sql.to_owned()));
    // No page can be added: the first appends fill the free space, then all fail.
    sql("PRAGMA max_page_count = 1").await.unwrap();
    let big = |offset| {
        Arc::new(Publication {
            data: json(&format!("{:?}", "x".repeat(3000))),
            ..(*publication(offset)).clone()
        })
    };
    let results =
        join_all((1..=20).map(|offset| store.append("chat:a", epoch, big(offset), KEEP))).await;
    let failed: Vec<u64> = (1..=20)
        .filter(|&i| results[i as usize - 1].is_err())
        .collect();
    assert!(!failed.is_empty(), "nothing failed");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(err, StoreError::Failed(why) if why.contains("full")),
                "{err:?}"
            );
        }
    }
    let health = store.health().unwrap_err();
    assert!(health.contains("full"), "{health}");
    sql("PRAGMA max_page_count = 1000000").await.unwrap();
    for &offset in &failed {
        store
            .append("chat:a", epoch, big(offset), KEEP)
            .await
            .unwrap();
    }
    assert_eq!(store.health(), Ok(()));
    // Every offset once: what failed was not half-written.
    let again = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!(offsets(&again), (1..=20).collect::<Vec<_>>());
}

/// Reads run beside the writer, not in its queue: while a long write transaction holds
/// the writer, `channel`, `history` and `mailbox_page` still answer at once, with every
/// acknowledged write, while a write waits its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_complete_while_the_writer_is_busy() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("store.db")).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let epoch = snapshot.epoch.as_str();
    for offset in 1..=3 {
        store
            .append("chat:a", epoch, publication(offset), KEEP)
            .await
            .unwrap();
    }
    let sent = store
        .mailbox_push("bob", Some(alice()), json("1"), LIMITS, false)
        .await
        .unwrap();

    let (started, holding) = std::sync::mpsc::sync_channel(1);
    let (release, released) = std::sync::mpsc::channel();
    let held = store.enqueue(Op::Hold {
        started,
        release: released,
    });
    tokio::task::block_in_place(|| holding.recv_timeout(Duration::from_secs(5)))
        .expect("the writer holds its transaction");
    // The writer is busy: a write waits…
    let mut write = store.append("chat:a", epoch, publication(4), KEEP);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut write)
            .await
            .is_err(),
        "a write went through a held writer"
    );
    // …and reads do not.
    let bound = Duration::from_secs(2);
    let again = tokio::time::timeout(bound, store.channel("chat:a", KEEP, usize::MAX))
        .await
        .expect("channel waited for the writer")
        .unwrap();
    assert_eq!((again.epoch.as_str(), again.top), (epoch, 3));
    assert_eq!(offsets(&again), [1, 2, 3]);
    let query = HistoryQuery {
        after: 1,
        before: None,
        limit: 10,
        newest: false,
    };
    let found = tokio::time::timeout(bound, store.history("chat:a", query))
        .await
        .expect("history waited for the writer")
        .unwrap();
    assert_eq!(found.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3]);
    let page = tokio::time::timeout(bound, store.mailbox_page("bob", 0, PageLimit::ALL))
        .await
        .expect("mailbox_page waited for the writer")
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].id, sent.id);

    release.send(()).unwrap();
    held.await.unwrap();
    write.await.unwrap();
    // And a read made after an acknowledgement sees it.
    let after = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!(after.top, 4);
}

/// The schema of version 1, as that version created it: the fixture of the migration
/// test.
const SCHEMA_V1: &str = r#"
    CREATE TABLE channels (
        name  TEXT PRIMARY KEY NOT NULL,
        epoch TEXT NOT NULL,
        top   INTEGER NOT NULL
    );
    CREATE TABLE publications (
        channel  TEXT NOT NULL,
        "offset" INTEGER NOT NULL,
        data     TEXT NOT NULL,
        info     TEXT,
        time     INTEGER NOT NULL,
        expires  INTEGER NOT NULL,
        PRIMARY KEY (channel, "offset")
    ) WITHOUT ROWID;
    CREATE INDEX publications_expires ON publications (expires);
    CREATE TABLE mailbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        user    TEXT NOT NULL,
        sender  TEXT,
        data    TEXT NOT NULL,
        time    INTEGER NOT NULL,
        expires INTEGER NOT NULL
    );
    CREATE INDEX mailbox_user ON mailbox (user, id);
    CREATE INDEX mailbox_expires ON mailbox (expires);
    PRAGMA user_version = 1;
"#;

/// Every table's columns and every index's columns, to compare two files' schemas.
fn shape(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut names: Vec<(String, String)> = conn
        .prepare(
            "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    names.sort();
    let mut shape = Vec::new();
    for (kind, name) in names {
        let pragma = if kind == "table" {
            "table_xinfo"
        } else {
            "index_xinfo"
        };
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT * FROM pragma_{pragma}('{name}')"))
            .unwrap()
            .query_map([], |row| {
                let cells: Vec<String> = (0..row.as_ref().column_count())
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                Ok(cells.join(","))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        shape.push(format!("{kind} {name}: {}", columns.join(" | ")));
    }
    shape
}

/// A file written by version 1 is migrated in place: channels continue with their epoch
/// and offsets, messages keep their ids and count against the quotas of their senders
/// (through the new `sender_user` column), the mailbox epoch is stored from then on,
/// and the result has the same tables and indexes as a new file.
#[tokio::test]
async fn a_version_1_file_is_migrated_keeping_positions_and_mailboxes() {
    let dir = TempDir::new();
    let path = dir.file("v1.db");
    let far = int(now_ms() + 3_600_000);
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute_batch(&format!(
            r#"
            INSERT INTO channels VALUES ('chat:a', 'e-v1', 5), ('chat:gone', 'e-gone', 7);
            INSERT INTO publications VALUES
                ('chat:a', 4, '{{"n":4}}', NULL, 1, {far}),
                ('chat:a', 5, '{{"n":5}}', NULL, 1, {far});
            INSERT INTO mailbox (user, sender, data, time, expires) VALUES
                ('bob', '{{"user":"alice","client":"c1"}}', '1', 1, {far}),
                ('bob', '{{"user":"alice","client":"c2"}}', '2', 1, {far}),
                ('bob', NULL, '3', 1, {far});
            "#
        ))
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let a = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!(
        (a.epoch.as_str(), a.top, offsets(&a)),
        ("e-v1", 5, vec![4, 5])
    );
    store
        .append("chat:a", "e-v1", publication(6), KEEP)
        .await
        .unwrap();
    let page = pending(&store, "bob").await;
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
    let two = MailboxLimits {
        per_sender: 2,
        server_size: 1,
        ..LIMITS
    };
    let err = store
        .mailbox_push("bob", Some(alice()), json("4"), two, false)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::MailboxFull {
            quota: MailboxQuota::Sender,
            limit: 2
        }
    );
    let err = store
        .mailbox_push("bob", None, json("4"), two, false)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::MailboxFull {
            quota: MailboxQuota::Server,
            limit: 1
        }
    );
    let carol = ClientInfo {
        user: "carol".into(),
        ..alice()
    };
    let next = store
        .mailbox_push("bob", Some(carol), json("4"), two, false)
        .await
        .unwrap();
    assert_eq!(next.id, 4);
    let epoch = store.mailbox_epoch();
    // A channel without publications (left by version 1) is forgotten by the sweep.
    store.sweep().await.unwrap();
    let gone = store.channel("chat:gone", KEEP, usize::MAX).await.unwrap();
    assert_ne!(gone.epoch, "e-gone");
    assert_eq!(gone.top, 0);
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.mailbox_epoch(), epoch, "the mailbox epoch is stored");
    let a = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!((a.epoch.as_str(), a.top), ("e-v1", 6));
    drop(store);
    let version: i64 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let fresh = dir.file("fresh.db");
    drop(SqliteStore::open(&fresh).unwrap());
    assert_eq!(shape(&path), shape(&fresh));
}

/// The mailbox quotas are counted on the `mailbox_sender` index alone (no
/// `json_extract` over every message of the box, no table row read).
#[test]
fn quota_counts_use_the_sender_index() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    for count in [
        sql::COUNT_FROM_SERVER,
        sql::COUNT_FROM_SENDER,
        sql::COUNT_FROM_USERS,
    ] {
        let mut statement = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {count}"))
            .unwrap();
        let values: [&dyn rusqlite::ToSql; 3] = [&"bob", &0, &"alice"];
        let bound = &values[..statement.parameter_count()];
        let plan: Vec<String> = statement
            .query_map(bound, |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(
            plan.contains("USING COVERING INDEX mailbox_sender"),
            "{count}: {plan}"
        );
    }
}

/// The sweep forgets channels whose history expired, so names published once do not
/// keep a row forever; a channel still in use keeps its row, and an append to a
/// forgotten channel (the hub still holds its position) stores it again as given.
#[tokio::test]
async fn the_sweep_forgets_channels_whose_history_expired() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let short = Retention {
        size: 10,
        ttl: Duration::from_millis(50),
    };
    let mut epochs = Vec::new();
    for i in 0..20 {
        let name = format!("chat:once-{i}");
        let snapshot = store.channel(&name, short, usize::MAX).await.unwrap();
        store
            .append(&name, &snapshot.epoch, publication(1), short)
            .await
            .unwrap();
        epochs.push(snapshot.epoch);
    }
    let kept = store.channel("chat:kept", KEEP, usize::MAX).await.unwrap();
    store
        .append("chat:kept", &kept.epoch, publication(1), KEEP)
        .await
        .unwrap();
    assert_eq!(rows(&path, "channels"), 21);
    tokio::time::sleep(Duration::from_millis(80)).await;
    store.sweep().await.unwrap();
    assert_eq!(rows(&path, "channels"), 1);
    let again = store
        .channel("chat:once-0", short, usize::MAX)
        .await
        .unwrap();
    assert_ne!(again.epoch, epochs[0]);
    assert_eq!(again.top, 0);
    // The hub kept chat:once-1 in memory (epoch, offset 1): its next append is stored.
    store
        .append("chat:once-1", &epochs[1], publication(2), KEEP)
        .await
        .unwrap();
    let back = store
        .channel("chat:once-1", KEEP, usize::MAX)
        .await
        .unwrap();
    assert_eq!((back.epoch.as_str(), back.top), (epochs[1].as_str(), 2));
    assert_eq!(offsets(&back), [2]);
    let still = store.channel("chat:kept", KEEP, usize::MAX).await.unwrap();
    assert_eq!((still.epoch.as_str(), still.top), (kept.epoch.as_str(), 1));
}

/// A panic inside a batch (a bug, a logger that panics on a full disk) fails that batch
/// and not the writer: its requests are answered `Failed`, nothing of it is committed,
/// the store says it is unhealthy, and the next write succeeds and makes it healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_batch_fails_the_batch_and_the_writer_goes_on() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.file("store.db")).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let epoch = snapshot.epoch.as_str();
    store
        .append("chat:a", epoch, publication(1), KEEP)
        .await
        .unwrap();
    // Queued while the writer is held, so the three run in one batch.
    let (started, holding) = std::sync::mpsc::sync_channel(1);
    let (release, released) = std::sync::mpsc::channel();
    let held = store.enqueue(Op::Hold {
        started,
        release: released,
    });
    tokio::task::block_in_place(|| holding.recv_timeout(Duration::from_secs(5))).unwrap();
    let append = store.append("chat:a", epoch, publication(2), KEEP);
    let panics = store.enqueue(Op::Panic);
    let push = store.enqueue(Op::Push(Push {
        user: "bob".into(),
        from: None,
        data: json("1"),
        limits: LIMITS,
        online: false,
    }));
    release.send(()).unwrap();
    held.await.unwrap();
    let failed = |result: Result<_, StoreError>| match result {
        Err(StoreError::Failed(why)) => assert!(why.contains("panicked"), "{why}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("answered Ok"),
    };
    failed(append.await.map(|_| ()));
    failed(panics.await.map(|_| ()));
    failed(push.await.map(|_| ()));
    let health = store.health().unwrap_err();
    assert!(health.contains("panicked"), "{health}");
    assert!(pending(&store, "bob").await.is_empty(), "committed");

    store
        .append("chat:a", epoch, publication(2), KEEP)
        .await
        .unwrap();
    assert_eq!(store.health(), Ok(()));
    let again = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!((again.top, offsets(&again)), (2, vec![1, 2]));
}

/// Whether this process runs as root (the effective uid in `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// A tmpfs of `size` mounted on a directory, unmounted when dropped (also when the test
/// panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount: {status}");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file there: detach it now, freed once released.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [64 << 10, 4 << 10, 512, 1] {
        let zeros = vec![0u8; chunk];
        while file.write_all(&zeros).and_then(|()| file.flush()).is_ok() {}
    }
    let _ = file.sync_all();
}

/// On a real full filesystem (a 2 MiB tmpfs, filled), appends fail (`Failed`, or `Full`)
/// without losing anything acknowledged, and `health` says why; once room is made, the
/// periodic sweep's probe write brings health back by itself and appends succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_then_health_comes_back_by_itself() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let dir = TempDir::new();
    let disk = Tmpfs::mount(dir.file("disk"), "2m");
    let path = disk.0.join("store.db");
    // No budget: the point is what the disk itself does.
    let options = Options {
        max_bytes: u64::MAX,
        min_free_bytes: 0,
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let epoch = snapshot.epoch.as_str();
    let all = Retention {
        size: 10_000,
        ..KEEP
    };
    let big = |offset| {
        Arc::new(Publication {
            data: json(&format!("{:?}", "x".repeat(3000))),
            ..(*publication(offset)).clone()
        })
    };
    let mut acked = Vec::new();
    for offset in 1..=20 {
        store
            .append("chat:a", epoch, big(offset), all)
            .await
            .unwrap();
        acked.push(offset);
    }
    let filler = disk.0.join("filler");
    fill(&filler);

    let mut failed = Vec::new();
    for offset in 21..=500 {
        match store.append("chat:a", epoch, big(offset), all).await {
            Ok(()) => acked.push(offset),
            Err(StoreError::Failed(_) | StoreError::Full(_)) => failed.push(offset),
            Err(other) => panic!("{other:?}"),
        }
        if failed.len() >= 5 {
            break;
        }
    }
    assert!(!failed.is_empty(), "the full disk failed nothing");
    let health = store.health().unwrap_err();
    assert!(health.contains("full"), "{health}");
    // Reads still work, and hold everything acknowledged.
    let query = HistoryQuery {
        after: 0,
        before: None,
        limit: 10_000,
        newest: false,
    };
    let stored: Vec<u64> = store
        .history("chat:a", query)
        .await
        .unwrap()
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(stored, acked);

    std::fs::remove_file(&filler).unwrap();
    store.sweep().await.unwrap();
    assert_eq!(store.health(), Ok(()));
    for &offset in &failed {
        store
            .append("chat:a", epoch, big(offset), all)
            .await
            .unwrap();
    }
    let stored: Vec<u64> = store
        .history("chat:a", query)
        .await
        .unwrap()
        .iter()
        .map(|p| p.offset)
        .collect();
    let mut expected = [acked, failed].concat();
    expected.sort_unstable();
    assert_eq!(stored, expected);
    drop(store);
}

/// The log check reads logs as SQLite writes them (its checksums, both fields of a
/// commit frame): a real log is intact with every commit, and 64 bytes overwritten in
/// its middle are damage with commits after them.
#[test]
fn the_log_check_reads_sqlite_logs() {
    let dir = TempDir::new();
    let path = dir.file("plain.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
    for i in 0..20 {
        conn.execute("INSERT INTO t VALUES (?1)", [format!("{i:0>3000}")])
            .unwrap();
    }
    // Read while the connection is open: closing would checkpoint the log away.
    let log = std::fs::read(dir.file("plain.db-wal")).unwrap();
    drop(conn);
    assert_eq!(
        wal::check(&log[..]).unwrap(),
        wal::Verdict::Intact {
            frames: wal_frames(&log),
            commits: 21
        }
    );
    let mut damaged = log.clone();
    let middle = damaged.len() / 2;
    damaged[middle..middle + 64].fill(0x5a);
    match wal::check(&damaged[..]).unwrap() {
        wal::Verdict::Damaged(damage) => {
            assert!(damage.offset <= middle as u64, "{damage:?}");
            assert!(damage.commits_after >= 5, "{damage:?}");
            assert_eq!(
                damage.commits_before + damage.commits_after + 1,
                21,
                "{damage:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Frames in a log of 4096-byte pages.
fn wal_frames(log: &[u8]) -> u64 {
    ((log.len() - 32) / (24 + 4096)) as u64
}

/// Copies the store's files as a `kill -9` would leave them (the log not checkpointed)
/// into `to`; the store must be idle.
fn crash_copy(from: &Path, to: &Path) {
    for suffix in ["", "-wal"] {
        std::fs::copy(
            format!("{}{suffix}", from.display()),
            format!("{}{suffix}", to.display()),
        )
        .unwrap();
    }
}

/// A log damaged in its middle (commits after the damage are dropped by SQLite) gives
/// every channel and the mailbox a new epoch, with offsets continuing from the stored
/// top, so no client sees an offset again under the epoch it knew; a log cut by a crash
/// changes nothing.
#[tokio::test]
async fn a_damaged_log_gives_every_channel_and_the_mailbox_a_new_epoch() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    let quiet = store.channel("chat:quiet", KEEP, usize::MAX).await.unwrap();
    store
        .append("chat:quiet", &quiet.epoch, publication(1), KEEP)
        .await
        .unwrap();
    for offset in 1..=40 {
        store
            .append("chat:a", &snapshot.epoch, publication(offset), KEEP)
            .await
            .unwrap();
    }
    let mailbox_epoch = store.mailbox_epoch();

    // Undamaged: as after any crash, everything continues.
    let intact = dir.file("intact.db");
    crash_copy(&path, &intact);
    let damaged = dir.file("damaged.db");
    crash_copy(&path, &damaged);
    drop(store);
    let copy = SqliteStore::open(&intact).unwrap();
    let a = copy.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!((a.epoch.as_str(), a.top), (snapshot.epoch.as_str(), 40));
    assert_eq!(copy.mailbox_epoch(), mailbox_epoch);
    drop(copy);

    let log = dir.file("damaged.db-wal");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64].fill(0xa5);
    std::fs::write(&log, &bytes).unwrap();
    let copy = SqliteStore::open(&damaged).unwrap();
    let a = copy.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_ne!(a.epoch, snapshot.epoch);
    assert!(a.top < 40, "nothing was lost? top {}", a.top);
    // Offsets continue from the stored top, under the new epoch.
    copy.append("chat:a", &a.epoch, publication(a.top + 1), KEEP)
        .await
        .unwrap();
    let quiet_now = copy.channel("chat:quiet", KEEP, usize::MAX).await.unwrap();
    assert_ne!(quiet_now.epoch, quiet.epoch);
    assert_eq!(quiet_now.top, 1);
    let renewed = copy.mailbox_epoch();
    assert_ne!(renewed, mailbox_epoch);
    drop(copy);
    // Renewed once: the next start finds an intact log and keeps the new epochs.
    let copy = SqliteStore::open(&damaged).unwrap();
    assert_eq!(copy.mailbox_epoch(), renewed);
    let again = copy.channel("chat:a", KEEP, usize::MAX).await.unwrap();
    assert_eq!(
        (again.epoch.as_str(), again.top),
        (a.epoch.as_str(), a.top + 1)
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused_naming_it() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    std::fs::write(
        &path,
        b"this is not a database, just some text ".repeat(200),
    )
    .unwrap();
    let err = open_error(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("not a SQLite database"), "{err}");
}

#[test]
fn a_corrupt_file_is_refused_naming_it() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&path).unwrap();
        let snapshot = store.channel("chat:a", KEEP, usize::MAX).await.unwrap();
        let appends = (1..=300)
            .map(|offset| store.append("chat:a", &snapshot.epoch, publication(offset), KEEP));
        join_all(appends).await;
    });
    // Closing checkpointed the log into the file; now scribble over every page but
    // the first (the header stays valid, so this is a SQLite file with broken pages).
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * 4096, "{} bytes", bytes.len());
    for (i, byte) in bytes[4096..].iter_mut().enumerate() {
        *byte = (i * 7 % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = open_error(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("corrupt") || err.contains("malformed"),
        "{err}"
    );
}

#[test]
fn a_newer_schema_or_a_foreign_database_is_refused() {
    let dir = TempDir::new();
    let newer = dir.file("newer.db");
    drop(SqliteStore::open(&newer).unwrap());
    Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = open_error(&newer);
    assert!(err.contains("newer") && err.contains("99"), "{err}");

    let foreign = dir.file("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let err = open_error(&foreign);
    assert!(err.contains("not a Switchboard store"), "{err}");
}

#[test]
fn an_unusable_directory_is_refused_naming_the_file() {
    let dir = TempDir::new();
    // A "directory" that is a file, and one that does not exist.
    let file = dir.file("plain");
    std::fs::write(&file, b"").unwrap();
    for path in [file.join("store.db"), dir.file("missing/store.db")] {
        let err = open_error(&path);
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("cannot open"), "{err}");
    }
    // A read-only directory (unless we are root, who writes anywhere).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.file("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(locked.join("probe"), b"").is_err() {
            let path = locked.join("store.db");
            let err = open_error(&path);
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn a_second_store_on_one_file_is_refused() {
    let dir = TempDir::new();
    let path = dir.file("store.db");
    let _first = SqliteStore::open(&path).unwrap();
    let err = open_error(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
}

/// Publications/s acknowledged, FULL vs NORMAL, for the fsync policy in the module doc:
/// `tasks` concurrent publishers, each appending a small JSON value with publisher info
/// (history size 100) and awaiting its acknowledgement, round-robin over `channels`,
/// for 3 s.
/// Run: `cargo test --release -p switchboard-server --lib engine::sqlite::tests::throughput
/// -- --ignored --nocapture` (`SWITCHBOARD_BENCH_DIR` picks the disk, default: temp).
///
/// Medians of 3 runs on the 2-core development VM (ext4 on a virtual disk, where one
/// fsync takes ~0.1 ms; the tokio runtime and the writer thread share the 2 cores):
///
/// | in flight | channels | FULL    | NORMAL  |
/// |-----------|----------|---------|---------|
/// | 8         | 1        | 42,000  | 99,000  |
/// | 8         | 1000     | 32,000  | 50,000  |
/// | 256       | 1        | 197,000 | 230,000 |
/// | 256       | 1000     | 62,000  | 63,000  |
///
/// Re-measured for issue 10 (reads beside the writer, which needs the log's index in
/// shared memory instead of `locking_mode = EXCLUSIVE`; the disk budget), interleaved
/// with the build before it, 3 runs each, medians (the virtual disk was slower that day,
/// so compare the columns, not with the table above):
///
/// | in flight | channels | FULL before | FULL after | NORMAL before | NORMAL after |
/// |-----------|----------|-------------|------------|---------------|--------------|
/// | 8         | 1        | 24,700      | 23,000     | 67,900        | 64,300       |
/// | 8         | 1000     | 17,900      | 18,500     | 38,100        | 33,300       |
/// | 256       | 1        | 181,500     | 209,700    | 305,700       | 270,800      |
/// | 256       | 1000     | 51,900      | 52,600     | 61,200        | 56,100       |
///
/// FULL, the server's policy, is unchanged within the noise (0.93–1.16); NORMAL, where
/// no fsync hides it, lost 5–12% to the shared-memory index. Measuring the database at
/// every batch cost another 10–25%, hence the estimate between measures (`budget.rs`).
#[test]
#[ignore = "a measurement, not a check: run by hand in release mode"]
fn throughput() {
    let base = std::env::var_os("SWITCHBOARD_BENCH_DIR").map(PathBuf::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for sync in [Synchronous::Full, Synchronous::Normal] {
        for tasks in [8usize, 256] {
            for channels in [1usize, 1000] {
                let dir = TempDir::new();
                let path = match &base {
                    Some(base) => base.join(format!("bench-{}.db", random_id(6))),
                    None => dir.file("bench.db"),
                };
                let rate = runtime.block_on(measure(&path, sync, tasks, channels));
                if base.is_some() {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                    }
                }
                eprintln!(
                    "{sync:?}: {tasks} tasks, {channels} channel(s): {rate:.0} publications/s"
                );
            }
        }
    }
}

async fn measure(path: &Path, sync: Synchronous, tasks: usize, channels: usize) -> f64 {
    const SECONDS: u64 = 3;
    let options = Options {
        sync,
        ..Options::default()
    };
    let store = Arc::new(SqliteStore::open_with(path, options).unwrap());
    let mut epochs = Vec::new();
    for c in 0..channels {
        epochs.push(
            store
                .channel(&format!("ch{c}"), KEEP, usize::MAX)
                .await
                .unwrap()
                .epoch,
        );
    }
    let epochs = Arc::new(epochs);
    let reserved: Arc<Vec<AtomicU64>> =
        Arc::new((0..channels).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(SECONDS);
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let (store, epochs, reserved) = (store.clone(), epochs.clone(), reserved.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut c = task % channels;
                while Instant::now() < deadline {
                    let offset = reserved[c].fetch_add(1, Ordering::Relaxed) + 1;
                    let name = format!("ch{c}");
                    store
                        .append(&name, &epochs[c], publication(offset), KEEP)
                        .await
                        .unwrap();
                    done += 1;
                    c = (c + tasks) % channels;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop(store);
    rate
}
