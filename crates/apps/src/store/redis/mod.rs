//! The apps' store on Redis, for several nodes serving one group: accounts, sessions,
//! invites, rooms, read positions, direct messages and polls under the keys `P:app:…`
//! (`P` the configured prefix).
//!
//! # Design
//! - **One script, one call per method.** Every [`Store`](super::Store) method is one run of
//!   `apps.lua` (loaded once, then called by its SHA1; redis-rs loads it again after a
//!   Redis restart), which dispatches on the operation's name. Reads run a copy flagged
//!   `no-writes` (see [`READS`]: they keep working while Redis is full, where writes are
//!   refused whole), which needs Redis 7. Redis runs one script at a
//!   time, so each rule the trait makes atomic (unique names case-insensitively, sessions
//!   per account, rooms in total and per user, messages kept per conversation, one vote
//!   per voter unless changeable, polls per owner, a poll closed once by `close_due`)
//!   holds across every node: two nodes racing for a name run one after the other, and
//!   the second sees the first's account. One script rather than one per operation so
//!   every key is named in one place (the Lua file's `K` table) and the Rust side never
//!   formats a key; the cost is defining the operations' functions on each run, a few
//!   microseconds.
//! - **Expiry.** A session or invite expires when the caller's `now` passes its
//!   `expires`, as in SQLite; `sweep` deletes the expired ones through a sorted set
//!   indexed by expiry, in batches. Each also gets a Redis TTL an hour past its expiry,
//!   which collects what no sweep reached (every node down) without ever firing before
//!   the store says it expired, even when a node's clock runs ahead of Redis'.
//! - **Bounds.** Lists are bounded as the SQLite store's: `limit` where the trait has
//!   one, the rules' caps elsewhere (sessions per account, messages per conversation,
//!   rooms). A poll's votes (the export) are read in pages with `HSCAN`, so a large poll
//!   never holds Redis for one long reply; `close_due` closes at most
//!   [`CLOSE_BATCH`] polls a call (the next upkeep closes the rest; until then they read
//!   closed already, by their closing time).
//! - **Connections.** The trait is synchronous and runs on blocking threads, so this
//!   uses redis-rs' synchronous connections: a small pool of idle ones, taken by a call
//!   and given back after it. One idle for over a second is checked with a PING first,
//!   so the first write after a Redis restart goes out on a live connection. A connection
//!   that failed (I/O, timeout, a replica that turned read-only) is dropped and so is the
//!   pool, since the other idle ones are most likely dead too; the next call connects
//!   again. A read that failed on a pooled connection is retried once on a fresh one; a
//!   write is not (it may have run before the reply was lost, and running it twice could
//!   refuse what it did: a name taken by its own account), so it fails with
//!   [`StoreError::Backend`](super::StoreError::Backend) and the person retries.
//! - **Redis Cluster** is not supported: rules span records (an account and its
//!   invite), so all the apps' keys would have to share one hash tag. The hub's client
//!   is a plain or Sentinel one.
//!
//! Secrets stay SHA-256 only: session and invite keys hold the hash in hex.

mod ops;
mod reply;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{Connection, ErrorKind, RedisError, ScriptInvocation, Value};

use super::StoreResult;

/// The script: every key and every operation.
const SCRIPT: &str = include_str!("apps.lua");
/// Redis 7 script flags (the shebang line). A script that declares flags is refused
/// whole when Redis is out of memory, before it runs, unless it declares `no-writes`;
/// one without them would fail at its first write and leave what it wrote before (Redis
/// does not roll a script back). So the reads run as a `no-writes` copy of the script
/// (and keep working while Redis is full), the writes as a flagged one (refused whole).
const READS: &str = "#!lua flags=no-writes\n";
const WRITES: &str = "#!lua\n";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may wait for Redis: a stuck server fails the call (and frees its
/// blocking thread) instead of holding it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A pooled connection idle longer than this is checked with a PING before a call: after
/// a Redis restart (which takes longer) every idle connection is dead, and a write sent on
/// one fails without knowing whether it ran. Busy connections skip the round trip.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Idle connections kept. The apps run at most a few store calls at once (a semaphore in
/// `Shared`), so a few suffice; more are opened when needed and closed after.
const MAX_IDLE: usize = 8;
/// Expired sessions (and invites) one sweep script deletes before the next run.
const SWEEP_BATCH: usize = 500;
/// Polls one `close_due` call closes at most.
pub const CLOSE_BATCH: usize = 1000;
/// Votes read by one page of the export.
const VOTES_PAGE: usize = 500;

/// The apps' store on Redis.
pub struct RedisStore {
    client: redis::Client,
    /// `P:app:`, the start of every key (ARGV[1] of every call).
    base: String,
    /// The script for reads (`no-writes`).
    reads: redis::Script,
    /// The script for writes.
    writes: redis::Script,
    /// Idle connections and since when. `std` Mutex: held only to push or pop one, never
    /// during a call.
    idle: Mutex<Vec<(Connection, Instant)>>,
}

impl std::fmt::Debug for RedisStore {
    // Not the client: its connection info holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What a call does, which says the script it runs and whether it may run again on a
/// fresh connection after its connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Reads only: the `no-writes` script; retried.
    Read,
    /// Writes, and a second run changes nothing more: retried.
    Write,
    /// Writes that must not run twice (a second run could refuse what the first did).
    WriteOnce,
}

impl RedisStore {
    /// A store on the Redis `client` connects to (the caller resolved Sentinel), with
    /// keys under `PREFIX:app:`. Connects once and loads the script, so a wrong address
    /// or a Redis without Lua fails here rather than at the first sign-in.
    pub fn open(client: redis::Client, prefix: &str) -> StoreResult<RedisStore> {
        let store = RedisStore {
            client,
            base: format!("{prefix}:app:"),
            reads: redis::Script::new(&format!("{READS}{SCRIPT}")),
            writes: redis::Script::new(&format!("{WRITES}{SCRIPT}")),
            idle: Mutex::new(Vec::new()),
        };
        let mut conn = store.connect()?;
        store.reads.prepare_invoke().load(&mut conn)?;
        store.writes.prepare_invoke().load(&mut conn)?;
        store.give_back(conn);
        Ok(store)
    }

    /// The start of every key: `PREFIX:app:`.
    pub fn key_base(&self) -> &str {
        &self.base
    }

    fn connect(&self) -> StoreResult<Connection> {
        let conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(Connection, Instant)>> {
        // A panic while holding it leaves a valid list of connections.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection (`true`) or a new one (`false`).
    fn take(&self) -> StoreResult<(Connection, bool)> {
        // Bind first: the guard must be gone before `clear` below locks again.
        let pooled = self.idle().pop();
        if let Some((mut conn, since)) = pooled {
            if since.elapsed() < IDLE_CHECK {
                return Ok((conn, true));
            }
            match redis::cmd("PING").query::<()>(&mut conn) {
                Ok(()) => return Ok((conn, true)),
                Err(err) => {
                    tracing::debug!(cause = %err, "apps store: an idle Redis connection is dead");
                    self.idle().clear();
                }
            }
        }
        Ok((self.connect()?, false))
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    /// Runs operation `op` with the arguments `args` adds.
    fn call(
        &self,
        op: &'static str,
        call: Call,
        args: impl FnOnce(&mut ScriptInvocation<'_>),
    ) -> StoreResult<Value> {
        let script = match call {
            Call::Read => &self.reads,
            Call::Write | Call::WriteOnce => &self.writes,
        };
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.base).arg(op);
        args(&mut invocation);
        let mut second_try = false;
        loop {
            let (mut conn, pooled) = self.take()?;
            match invocation.invoke::<Value>(&mut conn) {
                Ok(value) => {
                    self.give_back(conn);
                    return Ok(value);
                }
                Err(err) if connection_is_fine(&err) => {
                    self.give_back(conn);
                    tracing::warn!(op, cause = %err, "apps store: Redis refused a call");
                    return Err(err.into());
                }
                Err(err) => {
                    // Dead connections come in groups (Redis restarted, or failed over):
                    // drop the idle ones too, so the next calls connect afresh.
                    self.idle().clear();
                    if pooled && call != Call::WriteOnce && !second_try {
                        tracing::debug!(op, cause = %err, "apps store: retrying on a new connection");
                        second_try = true;
                        continue;
                    }
                    tracing::warn!(op, cause = %err, "apps store: a Redis call failed");
                    return Err(err.into());
                }
            }
        }
    }
}

/// Whether the server answered with an error and the connection can serve again. A
/// replica's READONLY after a failover, or a master that is down, means the connection
/// points at the wrong server.
fn connection_is_fine(err: &RedisError) -> bool {
    match err.kind() {
        ErrorKind::Server(kind) => !matches!(
            kind,
            redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
        ),
        ErrorKind::Extension => true,
        _ => false,
    }
}
