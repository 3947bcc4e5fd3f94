//! Opening connections: the writer's (checks, pragmas, the schema and its migrations) and
//! the readers'.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, CACHE_KIB, CHECKPOINT_PAGES, SCHEMA_VERSION, Synchronous};

/// Opens and checks the connection, creating or checking the schema.
pub(super) fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, String> {
    let sql = plain_words;
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
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
    migrate(&conn)?;
    // A write transaction now, so a file that another process (not a server: the lock
    // file keeps those off) is writing is reported at start-up, not at the first
    // publication.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(sql("cannot lock for writing (is another server using it?)"))?;
    Ok(conn)
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

/// Creates the schema in a new file, or checks the version of an existing one.
pub(super) fn migrate(conn: &Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| format!("cannot create the schema: {e}");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql)?;
    match version {
        SCHEMA_VERSION => Ok(()),
        0 => {
            // Version 0 is a new file, unless it holds someone else's tables.
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(sql)?;
            if tables > 0 {
                return Err("not a Switchboard store (it holds other tables)".into());
            }
            // One transaction: a crash leaves either no schema or all of it.
            conn.execute_batch(&format!(
                r#"
                BEGIN IMMEDIATE;
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
                PRAGMA user_version = {SCHEMA_VERSION};
                COMMIT;
                "#
            ))
            .map_err(sql)
        }
        newer => Err(format!(
            "written by a newer Switchboard (schema version {newer}; this one knows {SCHEMA_VERSION})"
        )),
    }
}
