//! The Redis engine: history positions, publications and mailboxes in Redis, so several
//! nodes serve as one hub (see `docs/deployment.md` once the cluster mode lands).
//!
//! # Publishing
//! [`RedisEngine::publish`] runs ONE Lua script (`publish.lua`): it takes the channel's
//! next offset, appends the publication to the channel's history stream when the
//! namespace keeps history, and `PUBLISH`es it on the channel's topic, which every node
//! with subscribers listens to. Redis runs a script alone, so offsets are allocated in
//! history order whichever node publishes, and a publication is acknowledged only once
//! the script has returned: when Redis cannot run it, the publisher is refused, never
//! acknowledged and then lost. [`Store::append`] (an offset the caller chose: the
//! single-node path, and the behaviour suite) writes the same layout.
//!
//! # Layout
//! See [`Keys`]: per channel a meta hash (`epoch`, `top`, `ttl`) and a history stream
//! with one entry `OFFSET-0` per publication, trimmed to exactly the retention size and
//! expiring with the history TTL, refreshed by every publication; a channel without
//! history keeps its meta (its offsets) for [`NO_HISTORY_TTL`]. When the keys expire the
//! stream is gone, and the next publication starts a new epoch, as the SQLite store does
//! for a channel left without history. Reads skip entries older than the TTL by their
//! `time`. Reads create nothing: a channel Redis does not hold gets a fresh epoch each
//! time, stored by the first publication.
//!
//! Mailboxes: one counter for the whole store, in one hash with the series' epoch (lost
//! or evicted together, so ids never go back under an epoch clients know); per user a
//! stream of messages (entry `ID-0`: the message, its sender's tag, its expiry) and a hash
//! of counts (from users, from the server API, per sender), which `mailbox_push.lua`
//! checks and updates in the step that stores the message. Both expire with the user's
//! newest message; expired messages are skipped by reads and dropped by the next push.
//! Pages read at most what they return (plus one), in bounded chunks.
//!
//! # Failures
//! Commands go through redis-rs' `ConnectionManager`, which reconnects with backoff
//! after the connection drops; a command issued meanwhile fails quickly
//! ([`StoreError::Failed`]) rather than waiting out the outage. [`Store::health`] reports
//! the last failure until a later command succeeds. Past Redis' `maxmemory` writes are
//! refused with its `OOM` error, answered [`StoreError::Full`] and counted in
//! [`Store::usage`]; every script writes in an order that makes such a refusal leave
//! nothing half done (see `scripts.rs`), and deletions still run. A server restarted
//! without persistence comes back empty: every channel then starts a new epoch and the
//! mailbox series too, so clients are told they cannot recover. With Sentinel, a command
//! failing as if the master moved (connection lost, `READONLY`) makes the engine ask the
//! Sentinels again and follow the master they name (`sentinel.rs`).
//!
//! # Files
//! `mod.rs` the engine and its [`Store`] methods; `settings.rs` [`RedisSettings`] and
//! the client they make; `sentinel.rs` following the master after a failover; `keys.rs`
//! the names; `scripts.rs` and `*.lua` the scripts; `history.rs` publishing and history
//! reads; `mailbox.rs` the mailboxes; `tests.rs` the tests,
//! against a real `redis-server`.

mod history;
mod keys;
mod mailbox;
mod scripts;
mod sentinel;
mod settings;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult};
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{
    BoxFuture, ChannelSnapshot, HistoryQuery, MailboxLimits, MailboxPage, PageLimit, Retention,
    Store, StoreError, StoreUsage,
};
use crate::protocol::{ClientInfo, PrivateMessage, Publication};
use crate::util::random_id;
pub use keys::Keys;
use scripts::Scripts;
use sentinel::Master;
pub use settings::RedisSettings;

/// How long the meta of a channel without history (its epoch and last offset) is kept
/// after its last publication: long enough for a node to learn a channel's position from
/// another's publications, short enough that names published once do not stay.
pub const NO_HISTORY_TTL: Duration = Duration::from_secs(10 * 60);

/// Most entries one read asks Redis for: larger reads go in chunks, so one big history
/// or mailbox never stalls Redis (single-threaded) for the others.
const CHUNK: usize = 128;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a command may wait for its answer. Bounds a publication's wait when Redis
/// hangs rather than closing the connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnection attempts behind one failed command, backing off from
/// [`RECONNECT_MIN_DELAY`] to [`RECONNECT_MAX_DELAY`]. Few: a command issued during an
/// outage should fail within a second or so (the hub then refuses the publication), and
/// every later command starts a new attempt, so reconnecting goes on as long as the hub
/// works.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// Longest TTL written, in milliseconds (about 35 years): Redis refuses expiry times
/// past what its clock can hold, and a `Duration` may say anything.
const MAX_TTL_MS: u64 = 1 << 40;

/// How the connection manager connects, times out and backs off.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
}

/// A TTL in whole milliseconds, as Redis takes it.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.min(MAX_TTL_MS))
}

/// A namespace whose publications are not kept (as the SQLite store judges it).
fn keeps_nothing(retention: Retention) -> bool {
    retention.size == 0 || retention.ttl.is_zero()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while holding the lock leaves it usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the engine learned from its commands, shared with `append`'s tasks.
#[derive(Debug, Default)]
struct Status {
    /// Whether `failure` holds a reason: read by every command, so the healthy path takes
    /// no lock.
    failing: AtomicBool,
    /// Why the last command failed, until one succeeds.
    failure: Mutex<Option<String>>,
    /// Redis' `used_memory`, as the last sweep read it.
    bytes: AtomicU64,
    /// Writes refused for Redis' `maxmemory` since start.
    refused: AtomicU64,
    /// The mailbox series' epoch, as the last mailbox script answered it
    /// ([`Store::mailbox_epoch`] is synchronous).
    mailbox_epoch: Mutex<String>,
    /// With Sentinel: asked where the master is when a command fails as if it moved.
    master: OnceLock<Arc<Master>>,
}

impl Status {
    /// A command's result, noted for [`Store::health`] and mapped to [`StoreError`].
    fn check<T>(&self, result: RedisResult<T>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                if self.failing.load(Ordering::Relaxed) {
                    self.recovered();
                }
                Ok(value)
            }
            Err(err) => Err(self.failed(&err)),
        }
    }

    fn recovered(&self) {
        let mut failure = lock(&self.failure);
        if let Some(reason) = failure.take() {
            info!(was = %reason, "redis engine: commands succeed again");
        }
        self.failing.store(false, Ordering::Relaxed);
    }

    fn failed(&self, err: &RedisError) -> StoreError {
        // `OOM`: past `maxmemory` with the `noeviction` policy, Redis refuses writes.
        let full = err.code() == Some("OOM");
        let reason = if full {
            format!("redis is out of memory (its maxmemory): {err}")
        } else {
            format!("redis: {err}")
        };
        if let Some(master) = self.master.get() {
            if sentinel::may_have_moved(err) {
                master.ask();
            }
        }
        {
            let mut failure = lock(&self.failure);
            // Logged when the failures start, not at every command of an outage.
            if failure.is_none() {
                warn!(cause = %err, "redis engine: a command failed");
            }
            *failure = Some(reason.clone());
            self.failing.store(true, Ordering::Relaxed);
        }
        if full {
            self.refused.fetch_add(1, Ordering::Relaxed);
            StoreError::Full(reason)
        } else {
            StoreError::Failed(reason)
        }
    }

    /// Keeps the epoch a mailbox script answered ('' when the series has none yet).
    fn note_mailbox_epoch(&self, epoch: &str) {
        if epoch.is_empty() {
            return;
        }
        let mut cached = lock(&self.mailbox_epoch);
        if *cached != epoch {
            if !cached.is_empty() {
                warn!(old = %cached, new = %epoch,
                    "redis engine: the mailbox series has a new epoch (Redis lost its data?)");
            }
            epoch.clone_into(&mut cached);
        }
    }
}

/// History and mailboxes in Redis, shared by every node of a group; see the module doc.
pub struct RedisEngine {
    settings: RedisSettings,
    keys: Keys,
    /// Multiplexed: one connection carries every command of the node, pipelined. Cloned
    /// by every command (the lock is never held across an await); replaced only when
    /// Sentinel names a new master.
    conn: Arc<RwLock<ConnectionManager>>,
    scripts: Arc<Scripts>,
    status: Arc<Status>,
    /// Completes when the last `append` has finished: the next one waits for it, so
    /// appends reach Redis in the order the hub made them (see [`Store::append`]).
    last_append: Mutex<Option<oneshot::Receiver<()>>>,
}

/// Written by hand: the settings' own Debug hides the password, and the connection's
/// internals are of no use in a log.
impl fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngine")
            .field("settings", &self.settings)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects (through Sentinel when configured), checks the server answers (PING), and
    /// returns an engine whose commands reconnect with backoff (redis-rs ConnectionManager).
    pub async fn connect(settings: &RedisSettings) -> Result<RedisEngine, StoreError> {
        let client = settings::open_client(settings).await?;
        let address = client.get_connection_info().addr().to_string();
        let shown = settings::redacted(&settings.url);
        let conn = ConnectionManager::new_with_config(client, manager_config())
            .await
            .map_err(|e| StoreError::Failed(format!("redis: cannot connect to {shown}: {e}")))?;
        let conn = Arc::new(RwLock::new(conn));
        let status = Arc::new(Status::default());
        if !settings.sentinels.is_empty() {
            let master = Master::new(settings.clone(), conn.clone(), address);
            let _ = status.master.set(Arc::new(master));
        }
        let engine = RedisEngine {
            settings: settings.clone(),
            keys: Keys::new(&settings.prefix),
            conn,
            scripts: Arc::new(Scripts::new()),
            status,
            last_append: Mutex::new(None),
        };
        let pong: String = engine.status.check(
            redis::cmd("PING")
                .query_async(&mut engine.connection())
                .await,
        )?;
        if pong != "PONG" {
            return Err(StoreError::Failed(format!(
                "redis: {shown} answered PING with {pong:?}"
            )));
        }
        engine.refresh().await?;
        info!(settings = ?engine.settings, bytes = engine.status.bytes.load(Ordering::Relaxed),
            mailbox_epoch = %engine.mailbox_epoch(), "redis engine connected");
        Ok(engine)
    }

    /// The settings it was made with (the lead opens the pub/sub connection from them).
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// A clone of the multiplexed command connection (cheap), for the lead's presence and
    /// node-registry code. With Sentinel the engine replaces its connection after a
    /// failover: take a fresh clone for each use rather than keeping one.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key/topic names, so nobody formats them twice.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Reads the mailbox series' epoch (starting one if Redis has none) and Redis' memory
    /// in use: at connect, and at every sweep, so both follow a Redis that restarted
    /// empty even while nobody sends messages.
    async fn refresh(&self) -> Result<(), StoreError> {
        let mut conn = self.connection();
        let epoch: String = self.status.check(
            self.scripts
                .mailbox_epoch
                .key(self.keys.mailbox_series())
                .arg(random_id(8))
                .invoke_async(&mut conn)
                .await,
        )?;
        self.status.note_mailbox_epoch(&epoch);
        let info: String = self.status.check(
            redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await,
        )?;
        if let Some(bytes) = used_memory(&info) {
            self.status.bytes.store(bytes, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// `used_memory` from the text of `INFO memory`.
fn used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
}

impl Store for RedisEngine {
    fn channel<'a>(
        &'a self,
        channel: &'a str,
        retention: Retention,
        recent_bytes: usize,
    ) -> BoxFuture<'a, Result<ChannelSnapshot, StoreError>> {
        Box::pin(self.snapshot(channel, retention, recent_bytes))
    }

    /// Sent from a task spawned now, after the previous append finished: appends reach
    /// Redis in call order even if the futures are polled in another (one round trip
    /// each; the cluster mode publishes through [`RedisEngine::publish`] instead).
    fn append(
        &self,
        channel: &str,
        epoch: &str,
        publication: Arc<Publication>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        if keeps_nothing(retention) {
            return Box::pin(async { Ok(()) });
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Box::pin(async {
                Err(StoreError::Failed(
                    "redis: append called outside a Tokio runtime".into(),
                ))
            });
        };
        let write = self.append_write(channel, epoch, &publication, retention);
        let (done, next) = oneshot::channel::<()>();
        let previous = lock(&self.last_append).replace(next);
        let task = runtime.spawn(async move {
            if let Some(previous) = previous {
                // Err: the previous append's task ended (its sender dropped), as wanted.
                let _ = previous.await;
            }
            let result = write.await;
            drop(done);
            result
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|err| {
                Err(StoreError::Failed(format!(
                    "redis: the append task failed: {err}"
                )))
            })
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<Vec<Arc<Publication>>, StoreError>> {
        Box::pin(self.read_history(channel, query))
    }

    fn mailbox_push<'a>(
        &'a self,
        user: &'a str,
        from: Option<ClientInfo>,
        data: Arc<RawValue>,
        limits: MailboxLimits,
        online: bool,
    ) -> BoxFuture<'a, Result<Arc<PrivateMessage>, StoreError>> {
        Box::pin(self.push_message(user, from, data, limits, online))
    }

    fn mailbox_page<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: PageLimit,
    ) -> BoxFuture<'a, Result<MailboxPage, StoreError>> {
        Box::pin(self.read_page(user, after, limit))
    }

    fn mailbox_ack<'a>(
        &'a self,
        user: &'a str,
        upto: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.ack_messages(user, upto))
    }

    fn mailbox_epoch(&self) -> String {
        lock(&self.status.mailbox_epoch).clone()
    }

    /// Redis expires keys itself (histories, metas, abandoned mailboxes); the sweep reads
    /// the mailbox epoch and the memory in use, and, as any command does, brings health
    /// back once Redis answers again.
    fn sweep(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.refresh())
    }

    fn health(&self) -> Result<(), String> {
        if !self.status.failing.load(Ordering::Relaxed) {
            return Ok(());
        }
        lock(&self.status.failure).clone().map_or(Ok(()), Err)
    }

    fn usage(&self) -> StoreUsage {
        StoreUsage {
            bytes: self.status.bytes.load(Ordering::Relaxed),
            refused: self.status.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;

/// A stream entry as XRANGE returns it: its id, and its fields and values, flat.
type Entry = (String, Vec<String>);

/// A range of a stream: `XRANGE key LOW-0 HIGH-0 COUNT count` (oldest first), or
/// `XREVRANGE` from `high` down (newest first). Both ends included; every entry id of this
/// engine is `NUMBER-0`.
#[derive(Debug, Clone, Copy)]
struct Range {
    newest_first: bool,
    low: u64,
    high: u64,
    count: usize,
}

impl Range {
    /// The command's name and its start and end ids.
    fn parts(&self) -> (&'static str, String, String) {
        let (low, high) = (format!("{}-0", self.low), format!("{}-0", self.high));
        if self.newest_first {
            ("XREVRANGE", high, low)
        } else {
            ("XRANGE", low, high)
        }
    }

    fn cmd(&self, key: &str) -> redis::Cmd {
        let (name, start, end) = self.parts();
        let mut cmd = redis::cmd(name);
        cmd.arg(key)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(self.count);
        cmd
    }
}

impl RedisEngine {
    /// `fields` of the hash `hash` and the first chunk of `stream`, in one step
    /// (`read.lua`).
    async fn read_with(
        &self,
        hash: &str,
        fields: &[&str],
        stream: &str,
        range: Range,
    ) -> Result<(Vec<Option<String>>, Vec<Entry>), StoreError> {
        let (name, start, end) = range.parts();
        let mut invocation = self.scripts.read.key(hash);
        invocation
            .key(stream)
            .arg(name)
            .arg(start)
            .arg(end)
            .arg(range.count)
            .arg(fields);
        let mut conn = self.connection();
        self.status.check(invocation.invoke_async(&mut conn).await)
    }
}

/// The number of an entry id `NUMBER-0` (an offset, or a mailbox id).
fn entry_number(id: &str) -> Result<u64, StoreError> {
    id.split_once('-')
        .and_then(|(number, _)| number.parse().ok())
        .ok_or_else(|| StoreError::Failed(format!("redis: unexpected stream entry id {id:?}")))
}

/// The value of an entry's field.
fn field<'a>(fields: &'a [String], name: &str) -> Option<&'a str> {
    fields
        .chunks_exact(2)
        .find(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str())
}

/// `value`'s JSON without its opening `{"FIELD":N`, where a script writes the number it
/// allocates: the JSON is made here, once, and never parsed in Lua (which would round
/// numbers in the user's data).
fn json_after<T: serde::Serialize>(
    value: &T,
    field: &str,
    number: u64,
) -> Result<String, StoreError> {
    let json = serde_json::to_string(value)
        .map_err(|e| StoreError::Failed(format!("redis: cannot serialise: {e}")))?;
    let head = format!("{{\"{field}\":{number}");
    json.strip_prefix(&head)
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Failed(format!("redis: the JSON does not start with {head}")))
}
