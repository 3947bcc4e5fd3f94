//! A map split into independently locked shards, so that unrelated channels (or users)
//! rarely wait for one another.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;

/// A map split into independently locked shards. `std::sync::Mutex`: no lock is ever
/// held across an `.await`.
#[derive(Debug)]
pub(super) struct Sharded<V> {
    shards: Vec<Mutex<HashMap<String, V>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<V> Sharded<V> {
    pub(super) fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    /// The shard holding `key`, locked.
    pub(super) fn lock(&self, key: &str) -> MutexGuard<'_, HashMap<String, V>> {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        // A panic while holding a shard lock leaves plain data behind; keep serving.
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on each shard in turn, each locked while `f` runs.
    pub(super) fn each(&self, mut f: impl FnMut(&mut HashMap<String, V>)) {
        for shard in &self.shards {
            f(&mut shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}
