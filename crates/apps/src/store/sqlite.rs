//! The apps' store in SQLite: one file (`apps.db` in the data directory), one connection
//! behind a mutex, WAL so the CLI (`switchboard user add`) can write while the server
//! runs.
//!
//! The apps' writes are few and small (a sign-in, a message of a conversation), unlike
//! the hub's publications, so there is no group commit here: each write is its own
//! transaction with `synchronous = NORMAL` (durable at the next checkpoint of the WAL, and
//! never corrupt). Every call runs on a blocking thread of the caller's choosing.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Account, Cast, Conversation, DmMessage, DmState, NewAccount, NewDm, NewPoll, NewSession, Poll,
    PollSummary, PollView, ResultsShown, Room, SecretHash, SessionOwner, SessionUser, Store,
    StoreError, StoreResult, StoredVote, Tally, Vote,
};
use crate::error::{Error, Result};

/// Name of the database file in the data directory.
pub const FILE: &str = "apps.db";

/// The schema's version in `PRAGMA user_version`; a newer file is refused.
const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id      TEXT PRIMARY KEY,          -- the name lowercased
    name    TEXT NOT NULL,
    hash    TEXT NOT NULL,             -- Argon2id, PHC string
    admin   INTEGER NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    hash       BLOB PRIMARY KEY,       -- SHA-256 of the cookie's id
    account    TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    guest_id   TEXT,
    guest_name TEXT,
    created    INTEGER NOT NULL,
    expires    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_account ON sessions(account, created);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires);
CREATE TABLE IF NOT EXISTS invites (
    hash      BLOB PRIMARY KEY,        -- SHA-256 of the code
    admin     INTEGER NOT NULL,
    bootstrap INTEGER NOT NULL,
    created   INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    used_by   TEXT
);
CREATE TABLE IF NOT EXISTS rooms (
    name    TEXT PRIMARY KEY,
    topic   TEXT NOT NULL,
    creator TEXT NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reads (
    user   TEXT NOT NULL,
    room   TEXT NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (user, room)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dms (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    lo        TEXT NOT NULL,           -- the pair, ordered, so a conversation is one range
    hi        TEXT NOT NULL,
    sender    TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_name TEXT NOT NULL,
    text      TEXT NOT NULL,
    time      INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    late      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dms_pair ON dms(lo, hi, id);
CREATE INDEX IF NOT EXISTS dms_hi ON dms(hi, id);
CREATE INDEX IF NOT EXISTS dms_recipient ON dms(recipient, delivered);
CREATE TABLE IF NOT EXISTS dm_reads (
    user TEXT NOT NULL,
    peer TEXT NOT NULL,
    id   INTEGER NOT NULL,
    PRIMARY KEY (user, peer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS polls (
    id          TEXT PRIMARY KEY,      -- 10 base62 characters
    owner       TEXT NOT NULL,
    owner_name  TEXT NOT NULL,
    question    TEXT NOT NULL,
    max_choices INTEGER NOT NULL,
    results     TEXT NOT NULL,         -- always, voted, closed
    changeable  INTEGER NOT NULL,
    closes_at   INTEGER,
    anonymous   INTEGER NOT NULL,
    closed      INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    voters      INTEGER NOT NULL,      -- the tally's, kept with every vote
    total       INTEGER NOT NULL,
    seq         INTEGER NOT NULL       -- rises with every change of counts or state
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS polls_owner ON polls(owner, created);
CREATE INDEX IF NOT EXISTS polls_open ON polls(closed, created);
CREATE TABLE IF NOT EXISTS poll_options (
    poll  TEXT NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
    idx   INTEGER NOT NULL,
    text  TEXT NOT NULL,
    count INTEGER NOT NULL,            -- voters who chose it, kept with every vote
    PRIMARY KEY (poll, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS votes (
    poll    TEXT NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
    voter   TEXT NOT NULL,
    name    TEXT NOT NULL,
    choices TEXT NOT NULL,             -- option indexes, rising, comma-separated
    time    INTEGER NOT NULL,
    PRIMARY KEY (poll, voter)
) WITHOUT ROWID;
";

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    /// `std` Mutex: held for one statement or transaction on a blocking thread, never
    /// across an `.await`.
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating) `DATA_DIR/apps.db`.
    pub fn open_in(data_dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::Open {
            path: data_dir.to_owned(),
            cause: e.to_string(),
        })?;
        SqliteStore::open(&data_dir.join(FILE))
    }

    /// Opens (creating) the database at `path`. It holds password hashes: a new file is
    /// readable by its owner only.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let fail = |cause: String| Error::Open {
            path: path.to_owned(),
            cause,
        };
        let mut create = std::fs::OpenOptions::new();
        create.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
        match create.open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        // The CLI and the server may write at once: wait for the other's transaction.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| fail(e.to_string()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| fail(e.to_string()))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| fail(e.to_string()))?;
        if version > VERSION {
            return Err(fail(format!(
                "written by a newer Switchboard (schema {version}; this one knows {VERSION})"
            )));
        }
        conn.execute_batch(SCHEMA)
            .map_err(|e| fail(e.to_string()))?;
        conn.execute_batch(&format!("PRAGMA user_version = {VERSION}"))
            .map_err(|e| fail(e.to_string()))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding it leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        admin: r.get(2)?,
        created: r.get(3)?,
    })
}

const DM_COLUMNS: &str =
    "id, sender, sender_name, recipient, recipient_name, text, time, delivered, late";

fn dm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DmMessage> {
    Ok(DmMessage {
        id: r.get(0)?,
        from: r.get(1)?,
        from_name: r.get(2)?,
        to: r.get(3)?,
        to_name: r.get(4)?,
        text: r.get(5)?,
        time: r.get(6)?,
        state: if r.get::<_, bool>(7)? {
            DmState::Delivered
        } else {
            DmState::Stored
        },
        late: r.get(8)?,
    })
}

/// A count as SQLite's integer (`usize::MAX`, "no limit", stays the largest).
fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Option indexes as stored: rising, comma-separated.
fn encode_choices(choices: &[u32]) -> String {
    let mut out = String::new();
    for (i, c) in choices.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&c.to_string());
    }
    out
}

fn decode_choices(text: &str) -> Vec<u32> {
    text.split(',').filter_map(|c| c.parse().ok()).collect()
}

/// The SQL condition "this poll (row alias `p`) is closed at `?now`".
const CLOSED_AT: &str = "(p.closed = 1 OR (p.closes_at IS NOT NULL AND p.closes_at <= ?1))";

/// A poll, `voter`'s choices and the tally, read within one connection (and so within
/// the caller's transaction, when it has one).
fn poll_view(
    conn: &Connection,
    id: &str,
    voter: &str,
    now: i64,
) -> rusqlite::Result<Option<PollView>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT p.id, p.question, p.max_choices, p.results, p.changeable, p.closes_at,
                        p.anonymous, p.owner, p.owner_name, {CLOSED_AT}, p.created, p.voters,
                        p.total, p.seq
                 FROM polls p WHERE p.id = ?2"
        ))?
        .query_row(params![now, id], |r| {
            let results: String = r.get(3)?;
            Ok((
                Poll {
                    id: r.get(0)?,
                    question: r.get(1)?,
                    options: Vec::new(),
                    max_choices: r.get(2)?,
                    results: ResultsShown::parse(&results).unwrap_or(ResultsShown::Closed),
                    changeable: r.get(4)?,
                    closes_at: r.get(5)?,
                    anonymous: r.get(6)?,
                    owner: r.get(7)?,
                    owner_name: r.get(8)?,
                    closed: r.get(9)?,
                    created: r.get(10)?,
                },
                r.get::<_, i64>(11)?,
                r.get::<_, i64>(12)?,
                r.get::<_, i64>(13)?,
            ))
        })
        .optional()?;
    let Some((mut poll, voters, total, seq)) = row else {
        return Ok(None);
    };
    let mut counts = Vec::new();
    let mut statement =
        conn.prepare_cached("SELECT text, count FROM poll_options WHERE poll = ?1 ORDER BY idx")?;
    let rows = statement.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (text, count) = row?;
        poll.options.push(text);
        counts.push(count.max(0) as u64);
    }
    let mine = conn
        .prepare_cached("SELECT choices FROM votes WHERE poll = ?1 AND voter = ?2")?
        .query_row(params![id, voter], |r| r.get::<_, String>(0))
        .optional()?
        .map(|c| decode_choices(&c));
    Ok(Some(PollView {
        poll,
        mine,
        tally: Tally {
            counts,
            total: total.max(0) as u64,
            voters: voters.max(0) as u64,
        },
        seq: seq.max(0) as u64,
    }))
}

/// Checks a vote's choices against its poll; the words are for the voter (the Redis
/// store's too).
pub(super) fn check_choices(
    choices: &[u32],
    options: usize,
    max_choices: u32,
) -> Result<Vec<u32>, String> {
    if choices.is_empty() {
        return Err("bad choices: choose at least one option".into());
    }
    let mut sorted = choices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != choices.len() {
        return Err("bad choices: an option is chosen twice".into());
    }
    if sorted.len() > max_choices as usize {
        return Err(if max_choices == 1 {
            "bad choices: this poll takes one choice".into()
        } else {
            format!("bad choices: this poll takes at most {max_choices} choices")
        });
    }
    if let Some(bad) = sorted.iter().find(|&&c| c as usize >= options) {
        return Err(format!(
            "bad choices: there is no option {bad} (the poll has {options})"
        ));
    }
    Ok(sorted)
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PollSummary> {
    Ok(PollSummary {
        id: r.get(0)?,
        question: r.get(1)?,
        owner_name: r.get(2)?,
        closed: r.get(3)?,
        closes_at: r.get(4)?,
        created: r.get(5)?,
        voters: r.get::<_, i64>(6)?.max(0) as u64,
        total: r.get::<_, i64>(7)?.max(0) as u64,
        voted: r.get(8)?,
    })
}

const SUMMARY_COLUMNS: &str = "p.id, p.question, p.owner_name, (p.closed = 1 OR (p.closes_at IS NOT NULL AND p.closes_at <= ?1)), p.closes_at, p.created, p.voters, p.total, EXISTS (SELECT 1 FROM votes v WHERE v.poll = p.id AND v.voter = ?2)";

impl Store for SqliteStore {
    fn create_account(&self, account: &NewAccount<'_>, now: i64) -> StoreResult<Account> {
        let id = crate::rules::user_id(account.name);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut admin = account.admin;
        if let Some(invite) = &account.invite {
            let found: Option<bool> = tx
                .query_row(
                    "SELECT admin FROM invites WHERE hash = ?1 AND used_by IS NULL AND expires > ?2",
                    params![&invite[..], now],
                    |r| r.get(0),
                )
                .optional()?;
            match found {
                Some(invite_admin) => admin |= invite_admin,
                None => return Err(StoreError::InvalidInvite),
            }
        }
        let inserted = tx.execute(
            "INSERT INTO accounts (id, name, hash, admin, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO NOTHING",
            params![id, account.name, account.hash, admin, now],
        )?;
        if inserted == 0 {
            return Err(StoreError::NameTaken);
        }
        if let Some(invite) = &account.invite {
            tx.execute(
                "UPDATE invites SET used_by = ?2 WHERE hash = ?1",
                params![&invite[..], id],
            )?;
        }
        tx.commit()?;
        Ok(Account {
            id,
            name: account.name.to_owned(),
            admin,
            created: now,
        })
    }

    fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, admin, created FROM accounts WHERE id = ?1",
                [id],
                account_row,
            )
            .optional()?)
    }

    fn account_with_hash(&self, id: &str) -> StoreResult<Option<(Account, String)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, admin, created, hash FROM accounts WHERE id = ?1",
                [id],
                |r| Ok((account_row(r)?, r.get(4)?)),
            )
            .optional()?)
    }

    fn accounts(&self) -> StoreResult<Vec<Account>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, name, admin, created FROM accounts ORDER BY id")?;
        let rows = stmt.query_map([], account_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn account_count(&self) -> StoreResult<u64> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn set_password(&self, id: &str, hash: &str) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE accounts SET hash = ?2 WHERE id = ?1",
            params![id, hash],
        )?;
        // A new password ends every session: whoever had the old one is out.
        tx.execute("DELETE FROM sessions WHERE account = ?1", [id])?;
        tx.commit()?;
        Ok(changed > 0)
    }

    fn remove_account(&self, id: &str) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM sessions WHERE account = ?1", [id])?;
        tx.execute("DELETE FROM reads WHERE user = ?1", [id])?;
        tx.execute("DELETE FROM dm_reads WHERE user = ?1", [id])?;
        let changed = tx.execute("DELETE FROM accounts WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(changed > 0)
    }

    fn create_session(&self, session: &NewSession<'_>, now: i64) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match session.user {
            SessionOwner::Account(id) => {
                // Room for this one: the oldest beyond the cap go.
                let keep = clamp(session.max_per_account.saturating_sub(1));
                tx.execute(
                    "DELETE FROM sessions WHERE account = ?1 AND hash NOT IN
                       (SELECT hash FROM sessions WHERE account = ?1
                        ORDER BY created DESC, rowid DESC LIMIT ?2)",
                    params![id, keep],
                )?;
                tx.execute(
                    "INSERT INTO sessions (hash, account, created, expires) VALUES (?1, ?2, ?3, ?4)",
                    params![&session.hash[..], id, now, session.expires],
                )?;
            }
            SessionOwner::Guest { id, name } => {
                tx.execute(
                    "INSERT INTO sessions (hash, guest_id, guest_name, created, expires)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![&session.hash[..], id, name, now, session.expires],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn session(&self, hash: &SecretHash, now: i64) -> StoreResult<Option<SessionUser>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT a.id, a.name, a.admin, a.created, s.guest_id, s.guest_name
                 FROM sessions s LEFT JOIN accounts a ON a.id = s.account
                 WHERE s.hash = ?1 AND s.expires > ?2",
                params![&hash[..], now],
                |r| {
                    let id: Option<String> = r.get(0)?;
                    Ok(match id {
                        Some(_) => Some(SessionUser::Account(account_row(r)?)),
                        None => match (r.get::<_, Option<String>>(4)?, r.get(5)?) {
                            (Some(id), Some(name)) => Some(SessionUser::Guest { id, name }),
                            _ => None,
                        },
                    })
                },
            )
            .optional()?;
        Ok(row.flatten())
    }

    fn delete_session(&self, hash: &SecretHash) -> StoreResult<()> {
        self.conn()
            .execute("DELETE FROM sessions WHERE hash = ?1", [&hash[..]])?;
        Ok(())
    }

    fn session_count(&self, account: &str) -> StoreResult<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM sessions WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn create_invite(
        &self,
        hash: &SecretHash,
        admin: bool,
        bootstrap: bool,
        expires: i64,
        now: i64,
    ) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if bootstrap {
            tx.execute(
                "DELETE FROM invites WHERE bootstrap = 1 AND used_by IS NULL",
                [],
            )?;
        }
        tx.execute(
            "INSERT INTO invites (hash, admin, bootstrap, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&hash[..], admin, bootstrap, now, expires],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn invite_valid(&self, hash: &SecretHash, now: i64) -> StoreResult<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM invites WHERE hash = ?1 AND used_by IS NULL AND expires > ?2",
                params![&hash[..], now],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn create_room(
        &self,
        room: &Room,
        max_total: usize,
        max_per_user: usize,
        now: i64,
    ) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists = tx
            .query_row("SELECT 1 FROM rooms WHERE name = ?1", [&room.name], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        if exists {
            return Err(StoreError::RoomTaken);
        }
        let total: i64 = tx.query_row("SELECT COUNT(*) FROM rooms", [], |r| r.get(0))?;
        if total >= clamp(max_total) {
            return Err(StoreError::RoomLimit(format!(
                "this server has {total} rooms, its limit"
            )));
        }
        if !room.creator.is_empty() {
            let mine: i64 = tx.query_row(
                "SELECT COUNT(*) FROM rooms WHERE creator = ?1",
                [&room.creator],
                |r| r.get(0),
            )?;
            if mine >= clamp(max_per_user) {
                return Err(StoreError::RoomLimit(format!(
                    "you have created {mine} rooms, the limit per user"
                )));
            }
        }
        tx.execute(
            "INSERT INTO rooms (name, topic, creator, created) VALUES (?1, ?2, ?3, ?4)",
            params![room.name, room.topic, room.creator, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn rooms(&self) -> StoreResult<Vec<Room>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, topic, creator FROM rooms ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Room {
                name: r.get(0)?,
                topic: r.get(1)?,
                creator: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn set_topic(&self, room: &str, topic: &str) -> StoreResult<bool> {
        Ok(self.conn().execute(
            "UPDATE rooms SET topic = ?2 WHERE name = ?1",
            params![room, topic],
        )? > 0)
    }

    fn set_read(&self, user: &str, room: &str, offset: u64) -> StoreResult<()> {
        self.conn().execute(
            "INSERT INTO reads (user, room, offset) VALUES (?1, ?2, ?3)
             ON CONFLICT (user, room) DO UPDATE SET offset = MAX(offset, excluded.offset)",
            params![user, room, i64::try_from(offset).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    fn reads(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT room, offset FROM reads WHERE user = ?1")?;
        let rows = stmt.query_map([user], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn forget_read(&self, user: &str, room: &str) -> StoreResult<()> {
        self.conn().execute(
            "DELETE FROM reads WHERE user = ?1 AND room = ?2",
            params![user, room],
        )?;
        Ok(())
    }

    fn add_dm(&self, dm: &NewDm<'_>, now: i64) -> StoreResult<DmMessage> {
        let (lo, hi) = pair(dm.from, dm.to);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO dms (lo, hi, sender, sender_name, recipient, recipient_name, text, time,
                              delivered, late)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0)",
            params![
                lo,
                hi,
                dm.from,
                dm.from_name,
                dm.to,
                dm.to_name,
                dm.text,
                now
            ],
        )?;
        let id = tx.last_insert_rowid();
        // The conversation keeps its newest `keep`.
        tx.execute(
            "DELETE FROM dms WHERE lo = ?1 AND hi = ?2 AND id <= (
                 SELECT id FROM dms WHERE lo = ?1 AND hi = ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3)",
            params![lo, hi, clamp(dm.keep.max(1))],
        )?;
        tx.commit()?;
        Ok(DmMessage {
            id,
            from: dm.from.to_owned(),
            from_name: dm.from_name.to_owned(),
            to: dm.to.to_owned(),
            to_name: dm.to_name.to_owned(),
            text: dm.text.to_owned(),
            time: now,
            state: DmState::Stored,
            late: false,
        })
    }

    fn dm_delivered_now(&self, id: i64) -> StoreResult<()> {
        self.conn()
            .execute("UPDATE dms SET delivered = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    fn delete_dm(&self, id: i64) -> StoreResult<()> {
        self.conn().execute("DELETE FROM dms WHERE id = ?1", [id])?;
        Ok(())
    }

    fn dm_mark_delivered(&self, recipient: &str, ids: &[i64]) -> StoreResult<Vec<(i64, String)>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut changed = Vec::new();
        {
            let mut update = tx.prepare(
                "UPDATE dms SET delivered = 1, late = 1
                 WHERE id = ?1 AND recipient = ?2 AND delivered = 0 RETURNING sender",
            )?;
            for &id in ids {
                let sender: Option<String> = update
                    .query_row(params![id, recipient], |r| r.get(0))
                    .optional()?;
                if let Some(sender) = sender {
                    changed.push((id, sender));
                }
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    fn dm_history(
        &self,
        a: &str,
        b: &str,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<DmMessage>> {
        let (lo, hi) = pair(a, b);
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DM_COLUMNS} FROM dms WHERE lo = ?1 AND hi = ?2 AND id < ?3
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![lo, hi, before.unwrap_or(i64::MAX), clamp(limit)],
            dm_row,
        )?;
        let mut messages: Vec<DmMessage> = rows.collect::<rusqlite::Result<_>>()?;
        messages.reverse();
        Ok(messages)
    }

    fn conversations(&self, user: &str, limit: usize) -> StoreResult<Vec<Conversation>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT peer, MAX(id) AS last FROM (
                 SELECT hi AS peer, id FROM dms WHERE lo = ?1
                 UNION ALL
                 SELECT lo AS peer, id FROM dms WHERE hi = ?1 AND lo != ?1)
             GROUP BY peer ORDER BY last DESC LIMIT ?2",
        )?;
        let heads: Vec<(String, i64)> = stmt
            .query_map(params![user, clamp(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut last_stmt = conn.prepare(&format!("SELECT {DM_COLUMNS} FROM dms WHERE id = ?1"))?;
        let mut unread_stmt = conn.prepare(
            "SELECT COUNT(*) FROM dms WHERE lo = ?1 AND hi = ?2 AND sender = ?3 AND id > ?4",
        )?;
        let mut read_stmt =
            conn.prepare("SELECT id FROM dm_reads WHERE user = ?1 AND peer = ?2")?;
        let mut out = Vec::with_capacity(heads.len());
        for (peer, last_id) in heads {
            let last = last_stmt.query_row([last_id], dm_row)?;
            let read: i64 = read_stmt
                .query_row(params![user, peer], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let (lo, hi) = pair(user, &peer);
            let unread: i64 = unread_stmt.query_row(params![lo, hi, peer, read], |r| r.get(0))?;
            let name = last.name_of(&peer);
            out.push(Conversation {
                user: peer,
                name,
                last,
                unread: unread.max(0) as u64,
            });
        }
        Ok(out)
    }

    fn set_dm_read(&self, user: &str, peer: &str, id: i64) -> StoreResult<()> {
        self.conn().execute(
            "INSERT INTO dm_reads (user, peer, id) VALUES (?1, ?2, ?3)
             ON CONFLICT (user, peer) DO UPDATE SET id = MAX(id, excluded.id)",
            params![user, peer, id],
        )?;
        Ok(())
    }

    fn create_poll(&self, poll: &NewPoll<'_>, max_per_owner: usize, now: i64) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mine: i64 = tx.query_row(
            "SELECT COUNT(*) FROM polls WHERE owner = ?1",
            [poll.owner],
            |r| r.get(0),
        )?;
        if mine >= clamp(max_per_owner) {
            return Err(StoreError::Refused(format!(
                "you have {mine} polls, the limit per user: delete one first"
            )));
        }
        tx.execute(
            "INSERT INTO polls (id, owner, owner_name, question, max_choices, results, changeable,
                                closes_at, anonymous, closed, created, voters, total, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, 0, 0, 0)",
            params![
                poll.id,
                poll.owner,
                poll.owner_name,
                poll.question,
                poll.max_choices,
                poll.results.as_str(),
                poll.changeable,
                poll.closes_at,
                poll.anonymous,
                now
            ],
        )?;
        for (idx, text) in poll.options.iter().enumerate() {
            tx.execute(
                "INSERT INTO poll_options (poll, idx, text, count) VALUES (?1, ?2, ?3, 0)",
                params![poll.id, idx as i64, text],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn poll(&self, id: &str, voter: &str, now: i64) -> StoreResult<Option<PollView>> {
        Ok(poll_view(&self.conn(), id, voter, now)?)
    }

    fn cast(&self, vote: &Vote<'_>, now: i64) -> StoreResult<Cast> {
        let mut conn = self.conn();
        // IMMEDIATE: the write lock from the start, so the counts read are the ones
        // written over (the CLI may hold the file too).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(before) = poll_view(&tx, vote.poll, vote.voter, now)? else {
            return Err(StoreError::NoPoll);
        };
        if before.poll.closed {
            return Err(StoreError::Refused("the poll is closed".into()));
        }
        let choices = check_choices(
            vote.choices,
            before.poll.options.len(),
            before.poll.max_choices,
        )
        .map_err(StoreError::Refused)?;
        let changed = before.mine.is_some();
        if let Some(old) = &before.mine {
            if !before.poll.changeable {
                return Err(StoreError::Refused(
                    "you have already voted, and votes in this poll cannot be changed".into(),
                ));
            }
            for c in old {
                tx.prepare_cached(
                    "UPDATE poll_options SET count = count - 1 WHERE poll = ?1 AND idx = ?2",
                )?
                .execute(params![vote.poll, c])?;
            }
        }
        for c in &choices {
            tx.execute(
                "UPDATE poll_options SET count = count + 1 WHERE poll = ?1 AND idx = ?2",
                params![vote.poll, c],
            )?;
        }
        let old_len = before.mine.as_ref().map_or(0, Vec::len) as i64;
        tx.prepare_cached(
            "UPDATE polls SET voters = voters + ?2, total = total + ?3, seq = seq + 1
             WHERE id = ?1",
        )?
        .execute(params![
            vote.poll,
            i64::from(!changed),
            choices.len() as i64 - old_len
        ])?;
        tx.prepare_cached(
            "INSERT INTO votes (poll, voter, name, choices, time) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (poll, voter) DO UPDATE SET name = ?3, choices = ?4, time = ?5",
        )?
        .execute(params![
            vote.poll,
            vote.voter,
            vote.voter_name,
            encode_choices(&choices),
            now
        ])?;
        let view = poll_view(&tx, vote.poll, vote.voter, now)?.ok_or(StoreError::NoPoll)?;
        tx.commit()?;
        Ok(Cast { view, changed })
    }

    fn set_closed(&self, id: &str, closed: bool, now: i64) -> StoreResult<PollView> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = if closed {
            tx.execute(
                "UPDATE polls SET closed = 1, seq = seq + 1 WHERE id = ?1",
                [id],
            )?
        } else {
            tx.execute(
                "UPDATE polls SET closed = 0, closes_at = NULL, seq = seq + 1 WHERE id = ?1",
                [id],
            )?
        };
        if n == 0 {
            return Err(StoreError::NoPoll);
        }
        let view = poll_view(&tx, id, "", now)?.ok_or(StoreError::NoPoll)?;
        tx.commit()?;
        Ok(view)
    }

    fn delete_poll(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM polls WHERE id = ?1", [id])?
            > 0)
    }

    fn close_due(&self, now: i64) -> StoreResult<Vec<PollView>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids: Vec<String> = {
            let mut statement = tx.prepare(
                "SELECT id FROM polls WHERE closed = 0 AND closes_at IS NOT NULL
                 AND closes_at <= ?1",
            )?;
            let rows = statement.query_map([now], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            tx.execute(
                "UPDATE polls SET closed = 1, seq = seq + 1 WHERE id = ?1",
                [&id],
            )?;
            if let Some(view) = poll_view(&tx, &id, "", now)? {
                views.push(view);
            }
        }
        tx.commit()?;
        Ok(views)
    }

    fn polls_of(&self, owner: &str, limit: usize, now: i64) -> StoreResult<Vec<PollSummary>> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM polls p WHERE p.owner = ?2
             ORDER BY p.created DESC, p.id LIMIT ?3"
        ))?;
        let rows = statement.query_map(params![now, owner, clamp(limit)], summary_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn open_polls(&self, voter: &str, limit: usize, now: i64) -> StoreResult<Vec<PollSummary>> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM polls p
             WHERE p.closed = 0 AND (p.closes_at IS NULL OR p.closes_at > ?1)
             ORDER BY p.created DESC, p.id LIMIT ?3"
        ))?;
        let rows = statement.query_map(params![now, voter, clamp(limit)], summary_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn votes(&self, id: &str) -> StoreResult<Vec<StoredVote>> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT voter, name, choices, time FROM votes WHERE poll = ?1 ORDER BY time, voter",
        )?;
        let rows = statement.query_map([id], |r| {
            Ok(StoredVote {
                voter: r.get(0)?,
                name: r.get(1)?,
                choices: decode_choices(&r.get::<_, String>(2)?),
                time: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn recount(&self, id: &str) -> StoreResult<Tally> {
        let conn = self.conn();
        let options: i64 = conn.query_row(
            "SELECT COUNT(*) FROM poll_options WHERE poll = ?1",
            [id],
            |r| r.get(0),
        )?;
        if options == 0 {
            return Err(StoreError::NoPoll);
        }
        let mut tally = Tally {
            counts: vec![0; options as usize],
            total: 0,
            voters: 0,
        };
        let mut statement = conn.prepare("SELECT choices FROM votes WHERE poll = ?1")?;
        let rows = statement.query_map([id], |r| r.get::<_, String>(0))?;
        for choices in rows {
            tally.voters += 1;
            for c in decode_choices(&choices?) {
                if let Some(n) = tally.counts.get_mut(c as usize) {
                    *n += 1;
                    tally.total += 1;
                }
            }
        }
        Ok(tally)
    }

    fn sweep(&self, now: i64) -> StoreResult<()> {
        let conn = self.conn();
        conn.execute("DELETE FROM sessions WHERE expires <= ?1", [now])?;
        conn.execute(
            "DELETE FROM invites WHERE expires <= ?1 AND used_by IS NULL",
            [now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The behaviour tests are in `store::suite`, run against every engine.

    #[test]
    #[cfg(unix)]
    fn a_new_file_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "switchboard-apps-mode-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        SqliteStore::open_in(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(mode & 0o777, 0o600, "password hashes: owner only");
    }
}
