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
    Account, Conversation, DmMessage, DmState, NewAccount, NewDm, NewSession, Room, SecretHash,
    SessionOwner, SessionUser, Store, StoreError, StoreResult,
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
            let name = if last.from == peer {
                last.from_name.clone()
            } else {
                last.to_name.clone()
            };
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

    /// A fresh database file in a directory of its own, removed at the end.
    struct Temp(std::path::PathBuf, SqliteStore);

    impl Temp {
        fn new(name: &str) -> Temp {
            let dir = std::env::temp_dir().join(format!(
                "switchboard-apps-{name}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            let store = SqliteStore::open_in(&dir).unwrap();
            Temp(dir, store)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn account<'a>(name: &'a str, invite: Option<SecretHash>) -> NewAccount<'a> {
        NewAccount {
            name,
            hash: "$argon2id$fake",
            admin: false,
            invite,
        }
    }

    #[test]
    fn accounts_are_unique_case_insensitively() {
        let t = Temp::new("accounts");
        let s = &t.1;
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(t.0.join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "password hashes: owner only");
        }
    }

    #[test]
    fn invites_are_used_once_and_can_make_admins() {
        let t = Temp::new("invites");
        let s = &t.1;
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

    #[test]
    fn sessions_expire_end_and_are_capped() {
        let t = Temp::new("sessions");
        let s = &t.1;
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

    #[test]
    fn rooms_and_their_limits() {
        let t = Temp::new("rooms");
        let s = &t.1;
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

    #[test]
    fn direct_messages_states_history_and_conversations() {
        let t = Temp::new("dms");
        let s = &t.1;
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
}
