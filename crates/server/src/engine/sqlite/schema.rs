//! Opening connections: the writer's (checks, pragmas, the schema and its migrations) and
//! the readers'.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tracing::info;

use super::{BUSY_TIMEOUT, CACHE_KIB, CHECKPOINT_PAGES, SCHEMA_VERSION, Synchronous};
use crate::util::random_id;

/// The writer's connection, open and checked, and what opening read from the file.
pub(super) struct Opened {
    pub(super) conn: Connection,
    /// See [`Store::mailbox_epoch`](super::super::Store::mailbox_epoch): kept in `meta`.
    pub(super) mailbox_epoch: String,
    /// Channels given a new epoch (when asked to renew them).
    pub(super) renewed: usize,
}

/// Opens and checks the writer's connection, creating, migrating or checking the schema.
/// With `renew`, every channel and the mailbox get a new epoch (see [`migrate`]).
pub(super) fn open_connection(
    path: &Path,
    sync: Synchronous,
    renew: bool,
) -> Result<Opened, String> {
    let sql = plain_words;
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| {
        format!("cannot open: {e} (does the directory exist, and can this user write to it?)")
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("busy_timeout"))?;
    // The first statement that reads the file: a file that is not a database fails here.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql("cannot enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("cannot enable WAL (journal_mode is {mode})"));
    }
    let level = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(sql("cannot set synchronous"))?;
    // A larger page cache than SQLite's 2 MiB default: with many channels, every append
    // lands on a different page of `publications`, and a miss costs a read. Allocated only
    // as pages are used.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(sql("cannot set cache_size"))?;
    // Checkpoint every ~40 MB of log instead of SQLite's ~4 MB: a page written by many
    // commits is copied into the file once per checkpoint, not once per 1000 frames
    // (measured: about +20% publications/s across 1000 channels).
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
        .map_err(sql("cannot set wal_autocheckpoint"))?;
    quick_check(&conn)?;
    let (mailbox_epoch, renewed) = migrate(&mut conn, renew)?;
    Ok(Opened {
        conn,
        mailbox_epoch,
        renewed,
    })
}

/// Errors of a statement `what`: the two failures an operator meets most get plain
/// words, whatever the statement.
fn plain_words(what: &str) -> impl Fn(rusqlite::Error) -> String {
    let what = what.to_owned();
    move |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            format!("not a SQLite database ({e}); move it away or point to another file")
        }
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            format!("in use by another process ({e})")
        }
        _ => format!("{what}: {e}"),
    }
}

/// A read-only connection for the readers, opened once the writer has set the file up
/// (WAL mode is a property of the file, so a reader needs no pragma for it).
pub(super) fn open_reader(path: &Path) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| format!("cannot open a reader: {e}"))?;
    // Rarely waits: in WAL mode the writer never blocks a reader, except for the moment
    // a connection recovers the log or rebuilds its index.
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(plain_words("busy_timeout"))?;
    Ok(conn)
}

/// `PRAGMA quick_check`: a structural check of every page, much cheaper than
/// `integrity_check` (no index-content cross-check) but it finds torn or overwritten pages.
pub(super) fn quick_check(conn: &Connection) -> Result<(), String> {
    let problems = (|| {
        let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })()
    .map_err(|e| format!("cannot check the file: {e}"))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(format!(
        "the file is corrupt (PRAGMA quick_check: {}); restore it from a backup or move it away",
        problems.join("; ").replace('\n', "; ")
    ))
}

/// The schema of a new file. Columns added by a migration come last, as `ALTER TABLE`
/// adds them, so that a migrated file and a new one have the same tables.
const SCHEMA: &str = r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
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
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user        TEXT NOT NULL,
        sender      TEXT,
        data        TEXT NOT NULL,
        time        INTEGER NOT NULL,
        expires     INTEGER NOT NULL,
        sender_user TEXT
    );
    CREATE INDEX mailbox_user ON mailbox (user, id);
    CREATE INDEX mailbox_expires ON mailbox (expires);
    CREATE INDEX mailbox_sender ON mailbox (user, sender_user, expires);
"#;

/// Version 1 to 2: the `meta` table (the mailbox epoch), `mailbox.sender_user` with its
/// index (quota counts without `json_extract`), and the channels left without
/// publications forgotten (version 1 also made rows on reads; the sweep now forgets a
/// channel when it deletes its last publication).
const V1_TO_V2: &str = r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    DELETE FROM channels WHERE NOT EXISTS
        (SELECT 1 FROM publications WHERE channel = channels.name);
    ALTER TABLE mailbox ADD COLUMN sender_user TEXT;
    UPDATE mailbox SET sender_user = json_extract(sender, '$.user') WHERE sender IS NOT NULL;
    CREATE INDEX mailbox_sender ON mailbox (user, sender_user, expires);
"#;

/// The `meta` key of the mailbox epoch.
const MAILBOX_EPOCH: &str = "mailbox_epoch";

/// Creates the schema in a new file, or brings an older one up to [`SCHEMA_VERSION`];
/// returns the mailbox epoch (made and stored on first use) and how many channels were
/// renewed. With `renew` (the log lost commits that may have been acknowledged), every
/// channel gets a new epoch, its offsets continuing from its stored top, and so does the
/// mailbox: clients are told they cannot recover instead of being handed offsets or ids
/// they already saw under the same epoch. One transaction, the first write after SQLite
/// replayed the log: a crash leaves the file as it was (and the damage still in the log,
/// found again at the next start) or fully done. Its `BEGIN IMMEDIATE` also reports, at
/// start-up rather than at the first publication, a file that another process is
/// writing.
fn migrate(conn: &mut Connection, renew: bool) -> Result<(String, usize), String> {
    let sql = |e: rusqlite::Error| format!("cannot create or migrate the schema: {e}");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(plain_words("cannot lock for writing"))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    match version {
        SCHEMA_VERSION => {}
        0 => {
            // Version 0 is a new file, unless it holds someone else's tables.
            let tables: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(sql)?;
            if tables > 0 {
                return Err("not a Switchboard store (it holds other tables)".into());
            }
            tx.execute_batch(SCHEMA).map_err(sql)?;
        }
        1 => {
            tx.execute_batch(V1_TO_V2).map_err(sql)?;
            info!(
                from = 1,
                to = SCHEMA_VERSION,
                "sqlite store schema migrated"
            );
        }
        newer => {
            return Err(format!(
                "written by a newer Switchboard (schema version {newer}; this one knows {SCHEMA_VERSION})"
            ));
        }
    }
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql)?;
    }
    let mut renewed = 0;
    if renew {
        let names: Vec<String> = tx
            .prepare("SELECT name FROM channels")
            .and_then(|mut names| names.query_map([], |row| row.get(0))?.collect())
            .map_err(sql)?;
        let mut update = tx
            .prepare("UPDATE channels SET epoch = ?2 WHERE name = ?1")
            .map_err(sql)?;
        for name in &names {
            update.execute(params![name, random_id(8)]).map_err(sql)?;
        }
        drop(update);
        renewed = names.len();
        tx.execute("DELETE FROM meta WHERE key = ?1", params![MAILBOX_EPOCH])
            .map_err(sql)?;
    }
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            params![MAILBOX_EPOCH],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql)?;
    let epoch = match stored {
        Some(epoch) => epoch,
        None => {
            let epoch = random_id(8);
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![MAILBOX_EPOCH, epoch],
            )
            .map_err(sql)?;
            epoch
        }
    };
    tx.commit()
        .map_err(plain_words("cannot commit the schema"))?;
    Ok((epoch, renewed))
}
