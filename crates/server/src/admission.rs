//! Connection slots: who may hold a connection, and how many.
//!
//! A connection (a WebSocket, or an SSE or polling session) starts **pending**: it holds
//! one of `limits.max_pending` slots, and one of its address's `limits.pending_per_ip`,
//! until it sends a successful `connect` (or ends; it must connect within
//! `limits.connect_timeout`). Only then does it take one of `limits.max_connections`
//! **connected** slots, and one of its user's `limits.connections_per_user`. Clients that
//! never authenticate therefore cannot take the slots of those that do, and one address
//! cannot take all the pending slots. Each slot is released when its guard is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::error::ClientError;
use crate::metrics::Metrics;

/// Why a new connection was refused before it could send `connect` (answered 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `limits.max_connections` clients are connected.
    Full,
    /// `limits.max_pending` connections are waiting to connect.
    PendingFull,
    /// `limits.pending_per_ip` connections from this address are waiting to connect.
    PendingPerIp,
}

impl Refusal {
    /// Counts it in its metric.
    fn count(self, metrics: &Metrics) {
        match self {
            Refusal::Full => metrics.refused_full.inc(),
            Refusal::PendingFull => metrics.refused_pending.inc(),
            Refusal::PendingPerIp => metrics.refused_pending_per_ip.inc(),
        }
    }

    /// The text of the 503 answer.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Full => "too many connections\n",
            Refusal::PendingFull => "too many connections waiting to authenticate\n",
            Refusal::PendingPerIp => {
                "too many connections from this address waiting to authenticate\n"
            }
        }
    }
}

/// Counts of held slots by key (an address, or a user).
#[derive(Debug)]
struct Counts<K>(Mutex<HashMap<K, usize>>);

impl<K: std::hash::Hash + Eq + Clone> Counts<K> {
    fn new() -> Self {
        Counts(Mutex::new(HashMap::new()))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Plain counters: a panic elsewhere while holding the lock leaves them usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more for `key` unless it has `max` already.
    fn take(&self, key: &K, max: usize) -> bool {
        let mut counts = self.lock();
        let held = counts.entry(key.clone()).or_insert(0);
        if *held >= max {
            if *held == 0 {
                counts.remove(key);
            }
            return false;
        }
        *held += 1;
        true
    }

    fn release(&self, key: &K) {
        let mut counts = self.lock();
        if let Some(held) = counts.get_mut(key) {
            *held -= 1;
            if *held == 0 {
                counts.remove(key);
            }
        }
    }
}

/// The slots of one server (see the module doc).
#[derive(Debug)]
pub(crate) struct Admission {
    pending: Arc<Semaphore>,
    connected: Arc<Semaphore>,
    per_ip: Counts<IpAddr>,
    per_user: Counts<ConnectKey>,
    pending_per_ip: usize,
    connections_per_user: usize,
    metrics: Arc<Metrics>,
}

/// A pending connection's slots; released when dropped.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

/// A connected client's slots; released when dropped.
#[derive(Debug)]
pub(crate) struct ConnectedSlot {
    admission: Arc<Admission>,
    key: ConnectKey,
    _permit: OwnedSemaphorePermit,
}

/// Whose share of `limits.connections_per_user` a connected client takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ConnectKey {
    /// A user with a token.
    User(String),
    /// Anonymous clients, counted per address.
    Anonymous(IpAddr),
}

impl Admission {
    /// The slots `limits` allows.
    pub(crate) fn new(limits: &Limits, metrics: Arc<Metrics>) -> Arc<Admission> {
        Arc::new(Admission {
            pending: Arc::new(Semaphore::new(limits.max_pending)),
            connected: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: Counts::new(),
            per_user: Counts::new(),
            pending_per_ip: limits.pending_per_ip,
            connections_per_user: limits.connections_per_user,
            metrics,
        })
    }

    /// A slot for a new connection from `ip`, before it authenticates. Refused while
    /// every connected slot is taken too: the client could not connect anyway.
    pub(crate) fn pending(self: &Arc<Self>, ip: IpAddr) -> Result<PendingSlot, Refusal> {
        let refused = |refusal: Refusal| {
            refusal.count(&self.metrics);
            Err(refusal)
        };
        if self.connected.available_permits() == 0 {
            return refused(Refusal::Full);
        }
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            return refused(Refusal::PendingFull);
        };
        if !self.per_ip.take(&ip, self.pending_per_ip) {
            return refused(Refusal::PendingPerIp);
        }
        self.metrics.pending.add(1);
        Ok(PendingSlot {
            admission: self.clone(),
            ip,
            _permit: permit,
        })
    }

    /// A connected slot for a client of `key`. Error 118 when the server or the user has
    /// no slot left.
    pub(crate) fn connect(self: &Arc<Self>, key: ConnectKey) -> Result<ConnectedSlot, ClientError> {
        let Ok(permit) = self.connected.clone().try_acquire_owned() else {
            Refusal::Full.count(&self.metrics);
            return Err(ClientError::connection_limit(
                "the server has as many connections as it allows; try again later",
            ));
        };
        if !self.per_user.take(&key, self.connections_per_user) {
            self.metrics.user_limit_refusals.inc();
            return Err(ClientError::connection_limit(format!(
                "this user has {} connections, as many as allowed (limits.connections_per_user)",
                self.connections_per_user
            )));
        }
        Ok(ConnectedSlot {
            admission: self.clone(),
            key,
            _permit: permit,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.admission.per_ip.release(&self.ip);
        self.admission.metrics.pending.add(-1);
    }
}

impl Drop for ConnectedSlot {
    fn drop(&mut self) {
        self.admission.per_user.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 3,
            max_pending: 4,
            pending_per_ip: 2,
            connections_per_user: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn pending_slots_are_bounded_in_all_and_per_address() {
        let admission = Admission::new(&limits(), Arc::default());
        let (a, b, c) = (
            IpAddr::from([127, 0, 0, 2]),
            IpAddr::from([127, 0, 0, 3]),
            IpAddr::from([127, 0, 0, 4]),
        );
        let a1 = admission.pending(a).unwrap();
        let _a2 = admission.pending(a).unwrap();
        assert_eq!(admission.pending(a).unwrap_err(), Refusal::PendingPerIp);
        let _b1 = admission.pending(b).unwrap();
        let _b2 = admission.pending(b).unwrap();
        assert_eq!(admission.pending(c).unwrap_err(), Refusal::PendingFull);
        drop(a1);
        assert!(admission.pending(c).is_ok(), "a slot came back");
    }

    #[test]
    fn connected_slots_are_bounded_in_all_and_per_user() {
        let admission = Admission::new(&limits(), Arc::default());
        let user = |name: &str| ConnectKey::User(name.into());
        let alice1 = admission.connect(user("alice")).unwrap();
        let _alice2 = admission.connect(user("alice")).unwrap();
        assert_eq!(admission.connect(user("alice")).unwrap_err().code, 118);
        let _bob = admission.connect(user("bob")).unwrap();
        assert_eq!(admission.connect(user("carol")).unwrap_err().code, 118);
        assert_eq!(
            admission.pending(IpAddr::from([127, 0, 0, 1])).unwrap_err(),
            Refusal::Full
        );
        drop(alice1);
        assert!(admission.connect(user("alice")).is_ok());
    }
}
