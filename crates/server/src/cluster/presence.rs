//! Presence across the group, in Redis: who is subscribed to a channel on any node, and
//! the join and leave events, counted per user over every node so that a user's second
//! connection (on whichever node) announces nothing.
//!
//! Per channel (one hash slot: `P:{CHANNEL}:…`): `presence`, a hash of client id → the
//! client's JSON; `pexp`, a sorted set of client id → expiry (ms), refreshed by the
//! client's node; `pcount`, a hash of presence key (`u:USER`, or `a:CLIENT` for an
//! anonymous connection) → connections. Per node, `P:node:NODE:presence`, the set of its
//! entries (`CHANNEL\nCLIENT`), so that the nodes that outlive it can remove them. The
//! scripts publish the join or leave on the channel's topic in the same step as they
//! count, so every node sees them in one order with the channel's publications.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{Script, ScriptInvocation};

use crate::engine::StoreError;
use crate::engine::redis::Keys;
use crate::protocol::{ClientInfo, Presence, PresenceEntry, now_ms};

/// Adds a client; publishes the join (ARGV[8], if not empty) when its presence key had
/// no connection. Adding a client twice counts it once (a refresh re-adds).
const ADD: &str = r#"
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
if added == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if n == 1 and ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[7], ARGV[8]) end
return n
"#;

/// Removes a client; publishes the leave (ARGV[5], if not empty) when its presence key
/// has no connection left. Removing a client that is not there does nothing.
const REMOVE: &str = r#"
redis.call('SREM', KEYS[4], ARGV[3])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
local n = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[2])
  if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
end
return n
"#;

/// Pushes back the expiry (ARGV[1]) of the clients (ARGV[3..]) still present, and the
/// keys' (ARGV[2]); a client removed meanwhile stays removed.
const REFRESH: &str = r#"
for i = 3, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
  end
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 0
"#;

/// The live entries of a channel (expiry at or after ARGV[1]).
const LIVE: &str = r#"
local clients = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
local out = {}
for _, c in ipairs(clients) do
  local v = redis.call('HGET', KEYS[1], c)
  if v then out[#out + 1] = v end
end
return out
"#;

/// The keys of a channel's presence.
#[derive(Debug, Clone)]
pub(crate) struct ChannelKeys {
    presence: String,
    expiry: String,
    count: String,
}

impl ChannelKeys {
    pub(crate) fn new(keys: &Keys, channel: &str) -> Self {
        ChannelKeys {
            presence: keys.channel_key(channel, "presence"),
            expiry: keys.channel_key(channel, "pexp"),
            count: keys.channel_key(channel, "pcount"),
        }
    }
}

/// The presence key a client counts under.
fn counted_as(info: &ClientInfo) -> String {
    if info.user.is_empty() {
        format!("a:{}", info.client)
    } else {
        format!("u:{}", info.user)
    }
}

/// An entry of a node's index.
pub(crate) fn member(channel: &str, client: &str) -> String {
    format!("{channel}\n{client}")
}

/// Splits an index entry.
pub(crate) fn split_member(member: &str) -> Option<(&str, &str)> {
    member.split_once('\n')
}

/// The presence scripts, loaded once.
#[derive(Debug)]
pub(crate) struct Scripts {
    add: Script,
    remove: Script,
    refresh: Script,
    live: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            add: Script::new(ADD),
            remove: Script::new(REMOVE),
            refresh: Script::new(REFRESH),
            live: Script::new(LIVE),
        }
    }
}

/// One presence change to make.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    pub(crate) keys: &'a ChannelKeys,
    pub(crate) node_index: &'a str,
    pub(crate) channel: &'a str,
    pub(crate) info: &'a ClientInfo,
    /// The channel's topic and the join or leave to publish there (`None`: the namespace
    /// has no join/leave events).
    pub(crate) announce: Option<(&'a str, String)>,
}

fn failed(err: redis::RedisError) -> StoreError {
    StoreError::Failed(err.to_string())
}

/// `script` on a channel's presence keys and a node's index, the four keys every script
/// but `LIVE` takes, in that order.
fn on<'a>(script: &'a Script, keys: &ChannelKeys, node_index: &str) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&keys.presence)
        .key(&keys.expiry)
        .key(&keys.count)
        .key(node_index);
    invocation
}

/// Runs an invocation whose answer says nothing the caller needs.
async fn run(
    invocation: &ScriptInvocation<'_>,
    conn: &mut redis::aio::ConnectionManager,
) -> Result<(), StoreError> {
    invocation
        .invoke_async::<i64>(conn)
        .await
        .map(drop)
        .map_err(failed)
}

impl Scripts {
    /// Adds (or refreshes) a client, expiring after `ttl` unless refreshed.
    pub(crate) async fn add(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        change: Change<'_>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(change.info).map_err(|e| StoreError::Failed(e.to_string()))?;
        let (topic, payload) = change.announce.unwrap_or(("", String::new()));
        let expiry = now_ms() + ttl.as_millis() as u64;
        // The keys outlive a refresh period, so that a quiet channel keeps its entries.
        let keep = ttl.as_millis() as u64 * 3;
        let mut invocation = on(&self.add, change.keys, change.node_index);
        invocation
            .arg(&change.info.client)
            .arg(json)
            .arg(counted_as(change.info))
            .arg(expiry)
            .arg(keep)
            .arg(member(change.channel, &change.info.client))
            .arg(topic)
            .arg(payload);
        run(&invocation, conn).await
    }

    /// Pushes back the expiry of this node's clients of a channel.
    pub(crate) async fn refresh(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        keys: &ChannelKeys,
        node_index: &str,
        clients: &[String],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expiry = now_ms() + ttl.as_millis() as u64;
        let mut invocation = on(&self.refresh, keys, node_index);
        invocation.arg(expiry).arg(ttl.as_millis() as u64 * 3);
        for client in clients {
            invocation.arg(client);
        }
        run(&invocation, conn).await
    }

    /// Removes a client.
    pub(crate) async fn remove(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        let (topic, payload) = change.announce.unwrap_or(("", String::new()));
        let mut invocation = on(&self.remove, change.keys, change.node_index);
        invocation
            .arg(&change.info.client)
            .arg(counted_as(change.info))
            .arg(member(change.channel, &change.info.client))
            .arg(topic)
            .arg(payload);
        run(&invocation, conn).await
    }

    /// Who is subscribed to the channel on any node, by user and anonymous connection.
    pub(crate) async fn live(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        keys: &ChannelKeys,
    ) -> Result<Presence, StoreError> {
        let entries: Vec<String> = self
            .live
            .key(&keys.presence)
            .key(&keys.expiry)
            .arg(now_ms())
            .invoke_async(conn)
            .await
            .map_err(failed)?;
        let mut presence = Presence {
            presence: BTreeMap::new(),
            anonymous: BTreeMap::new(),
        };
        for entry in entries {
            let Ok(info) = serde_json::from_str::<ClientInfo>(&entry) else {
                continue;
            };
            let (map, key) = if info.user.is_empty() {
                (&mut presence.anonymous, info.client.clone())
            } else {
                (&mut presence.presence, info.user.clone())
            };
            map.entry(key)
                .or_insert_with(|| PresenceEntry {
                    user: info.user.clone(),
                    info: info.info.clone(),
                    connections: 0,
                })
                .connections += 1;
        }
        Ok(presence)
    }

    /// The client JSON of one entry, for removing a dead node's entries.
    pub(crate) async fn entry(
        conn: &mut redis::aio::ConnectionManager,
        keys: &ChannelKeys,
        client: &str,
    ) -> Result<Option<ClientInfo>, StoreError> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(&keys.presence)
            .arg(client)
            .query_async(conn)
            .await
            .map_err(failed)?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }
}
