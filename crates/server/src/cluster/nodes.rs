//! The group's membership: each node announces itself in `P:nodes` (a sorted set of node
//! id → expiry, refreshed every third of the presence TTL), and removes the presence
//! entries of nodes whose announcement expired (killed, or cut off from Redis for longer
//! than the TTL), publishing their users' leave events. One node does each removal: it
//! claims the dead node with `SET … NX` first.

use std::time::Duration;

use tracing::{info, warn};

use crate::engine::StoreError;
use crate::protocol::now_ms;

fn failed(err: redis::RedisError) -> StoreError {
    StoreError::Failed(err.to_string())
}

/// Entries read from a dead node's index per round trip.
const REAP_BATCH: usize = 256;

/// The keys of the group's membership.
#[derive(Debug, Clone)]
pub(crate) struct NodeKeys {
    /// `P:nodes`.
    pub(crate) nodes: String,
    prefix: String,
}

impl NodeKeys {
    pub(crate) fn new(prefix: &str) -> Self {
        NodeKeys {
            nodes: format!("{prefix}:nodes"),
            prefix: prefix.to_owned(),
        }
    }

    /// A node's presence index.
    pub(crate) fn index(&self, node: &str) -> String {
        format!("{}:node:{node}:presence", self.prefix)
    }

    fn claim(&self, node: &str) -> String {
        format!("{}:node:{node}:reaper", self.prefix)
    }
}

/// Announces `node` alive for `ttl`.
pub(crate) async fn announce(
    conn: &mut redis::aio::ConnectionManager,
    keys: &NodeKeys,
    node: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    redis::cmd("ZADD")
        .arg(&keys.nodes)
        .arg(now_ms() + ttl.as_millis() as u64)
        .arg(node)
        .query_async::<i64>(conn)
        .await
        .map(drop)
        .map_err(failed)
}

/// Forgets `node` and its index.
async fn withdraw(
    conn: &mut redis::aio::ConnectionManager,
    keys: &NodeKeys,
    node: &str,
) -> Result<(), StoreError> {
    redis::pipe()
        .cmd("ZREM")
        .arg(&keys.nodes)
        .arg(node)
        .ignore()
        .cmd("DEL")
        .arg(keys.index(node))
        .ignore()
        .query_async::<()>(conn)
        .await
        .map_err(failed)
}

/// The live nodes' ids.
pub(crate) async fn live_ids(
    conn: &mut redis::aio::ConnectionManager,
    keys: &NodeKeys,
) -> Result<Vec<String>, StoreError> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.nodes)
        .arg(now_ms())
        .arg("+inf")
        .query_async(conn)
        .await
        .map_err(failed)
}

/// Nodes whose announcement expired, each claimed by this node for `hold` (another node
/// claiming the same one gets nothing).
pub(crate) async fn claim_dead(
    conn: &mut redis::aio::ConnectionManager,
    keys: &NodeKeys,
    me: &str,
    hold: Duration,
) -> Result<Vec<String>, StoreError> {
    let dead: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.nodes)
        .arg("-inf")
        .arg(format!("({}", now_ms()))
        .arg("LIMIT")
        .arg(0)
        .arg(16)
        .query_async(conn)
        .await
        .map_err(failed)?;
    let mut claimed = Vec::new();
    for node in dead {
        if node == me {
            continue;
        }
        let won: Option<String> = redis::cmd("SET")
            .arg(keys.claim(&node))
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(hold.as_millis() as u64)
            .query_async(conn)
            .await
            .map_err(failed)?;
        if won.is_some() {
            info!(node = %node, "a node of the group stopped announcing itself; removing its presence");
            claimed.push(node);
        }
    }
    Ok(claimed)
}

/// Takes up to [`REAP_BATCH`] entries out of a dead node's index; empty when done.
pub(crate) async fn take_entries(
    conn: &mut redis::aio::ConnectionManager,
    keys: &NodeKeys,
    node: &str,
) -> Result<Vec<String>, StoreError> {
    redis::cmd("SPOP")
        .arg(keys.index(node))
        .arg(REAP_BATCH)
        .query_async(conn)
        .await
        .map_err(failed)
}

/// Forgets a dead node once its entries are removed.
pub(crate) async fn forget(conn: &mut redis::aio::ConnectionManager, keys: &NodeKeys, node: &str) {
    if let Err(err) = withdraw(conn, keys, node).await {
        warn!(cause = %err, node = %node, "could not forget a dead node; another node will");
    }
}
