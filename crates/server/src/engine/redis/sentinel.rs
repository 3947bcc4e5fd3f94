//! Following the master through Sentinel. The connection manager reconnects to the
//! address it was made for; after a failover that address is gone, or is a replica that
//! refuses writes (`READONLY`). So when a command fails that way, the Sentinels are asked
//! again (one question at a time, at most once per [`ASK_EVERY`]) and, when they name
//! another master, a new connection manager replaces the engine's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::RedisError;
use redis::aio::ConnectionManager;
use tracing::{info, warn};

use super::settings::{RedisSettings, open_client};
use super::{lock, manager_config};

/// Least time between two questions to the Sentinels: a failover takes seconds, and an
/// outage must not turn every failed command into one.
const ASK_EVERY: Duration = Duration::from_secs(1);

/// The engine's connection, replaced when the Sentinels name a new master.
#[derive(Debug)]
pub(super) struct Master {
    settings: RedisSettings,
    /// Read (cloned) by every command; written only when the master changes.
    conn: Arc<RwLock<ConnectionManager>>,
    /// The current master's address, as the client shows it.
    address: Mutex<String>,
    /// Whether a question to the Sentinels is under way.
    asking: AtomicBool,
    /// When the Sentinels were last asked.
    asked: Mutex<Option<Instant>>,
}

/// Whether `err` may mean the master moved: the connection failed, or the server is now
/// a replica.
pub(super) fn may_have_moved(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.code() == Some("READONLY")
}

impl Master {
    pub(super) fn new(
        settings: RedisSettings,
        conn: Arc<RwLock<ConnectionManager>>,
        address: String,
    ) -> Master {
        Master {
            settings,
            conn,
            address: Mutex::new(address),
            asking: AtomicBool::new(false),
            asked: Mutex::new(None),
        }
    }

    /// Asks the Sentinels, on a task, where the master is now (unless a question is under
    /// way or was asked less than [`ASK_EVERY`] ago).
    pub(super) fn ask(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut asked = lock(&self.asked);
            if asked.is_some_and(|at| at.elapsed() < ASK_EVERY) {
                return;
            }
            if self.asking.swap(true, Ordering::AcqRel) {
                return;
            }
            *asked = Some(Instant::now());
        }
        let master = self.clone();
        runtime.spawn(async move {
            master.follow().await;
            master.asking.store(false, Ordering::Release);
        });
    }

    async fn follow(&self) {
        let client = match open_client(&self.settings).await {
            Ok(client) => client,
            Err(err) => {
                warn!(cause = %err, "redis engine: the sentinels did not name a master");
                return;
            }
        };
        let address = client.get_connection_info().addr().to_string();
        if *lock(&self.address) == address {
            return;
        }
        match ConnectionManager::new_with_config(client, manager_config()).await {
            Ok(conn) => {
                *self.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
                let old = std::mem::replace(&mut *lock(&self.address), address.clone());
                info!(old = %old, new = %address, "redis engine: following the new master");
            }
            Err(err) => {
                warn!(cause = %err, master = %address,
                    "redis engine: cannot connect to the master the sentinels name");
            }
        }
    }
}
