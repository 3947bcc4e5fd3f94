//! Rate limits keyed by address, account or user: a token bucket per key, in a map with a
//! bound on its size.
//!
//! Each bucket starts full (`burst`) and refills at `rate` a second. A bucket that has
//! refilled is the same as no bucket, so the periodic [`Limiter::sweep`] drops those.
//! The map holds at most `max_keys` buckets: when it is full after a sweep, a new key is
//! refused (the limiter fails closed) rather than let a flood of keys grow memory without
//! bound; the refusal is counted by the caller like any other.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets by key.
#[derive(Debug)]
pub(crate) struct Limiter<K> {
    /// `std` Mutex: held for a map look-up, never across an `.await`.
    buckets: Mutex<HashMap<K, Bucket>>,
    rate: f64,
    burst: f64,
    max_keys: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `burst` at once, then `burst` per `period`.
    pub(crate) fn per(burst: u32, period: Duration, max_keys: usize) -> Self {
        let burst = f64::from(burst.max(1));
        Limiter {
            buckets: Mutex::new(HashMap::new()),
            rate: burst / period.as_secs_f64().max(1e-3),
            burst,
            max_keys,
        }
    }

    /// `rate` a second, `burst` at once.
    pub(crate) fn per_second(rate: u32, burst: u32, max_keys: usize) -> Self {
        Limiter {
            buckets: Mutex::new(HashMap::new()),
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            max_keys,
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let refill = now.duration_since(bucket.last).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.last = now;
    }

    /// Takes one token for `key`; `false` (and nothing taken) when there is none.
    pub(crate) fn take(&self, key: &K) -> bool {
        self.apply(key, true)
    }

    /// Whether `key` has a token, taking none.
    pub(crate) fn allows(&self, key: &K) -> bool {
        self.apply(key, false)
    }

    fn apply(&self, key: &K, take: bool) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            self.refill(bucket, now);
            if bucket.tokens < 1.0 {
                return false;
            }
            if take {
                bucket.tokens -= 1.0;
            }
            return true;
        }
        if !take {
            return true;
        }
        if buckets.len() >= self.max_keys {
            self.sweep_locked(&mut buckets, now);
            if buckets.len() >= self.max_keys {
                return false;
            }
        }
        buckets.insert(
            key.clone(),
            Bucket {
                tokens: self.burst - 1.0,
                last: now,
            },
        );
        true
    }

    /// Seconds until `key` has a token again (for `Retry-After`), at least 1.
    pub(crate) fn retry_after(&self, key: &K) -> u64 {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let missing = buckets.get(key).map_or(0.0, |b| (1.0 - b.tokens).max(0.0));
        ((missing / self.rate).ceil() as u64).max(1)
    }

    /// Drops the buckets that have refilled (they say nothing a missing one would not).
    pub(crate) fn sweep(&self) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        self.sweep_locked(&mut buckets, Instant::now());
    }

    fn sweep_locked(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| {
            self.refill(bucket, now);
            bucket.tokens < self.burst
        });
    }

    /// Keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// At most one event per key per `interval` (typing notices): a map of when each key last
/// passed, swept like the buckets.
#[derive(Debug)]
pub(crate) struct Interval<K> {
    last: Mutex<HashMap<K, Instant>>,
    interval: Duration,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Interval<K> {
    pub(crate) fn new(interval: Duration, max_keys: usize) -> Self {
        Interval {
            last: Mutex::new(HashMap::new()),
            interval,
            max_keys,
        }
    }

    /// Whether `key` may pass now (and records it when it does).
    pub(crate) fn pass(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = last.get(key) {
            if now.duration_since(*at) < self.interval {
                return false;
            }
        } else if last.len() >= self.max_keys {
            let interval = self.interval;
            last.retain(|_, at| now.duration_since(*at) < interval);
            if last.len() >= self.max_keys {
                return false;
            }
        }
        last.insert(key.clone(), now);
        true
    }

    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let interval = self.interval;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|_, at| now.duration_since(*at) < interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_then_a_refill() {
        let limiter = Limiter::per(3, Duration::from_millis(30), 100);
        let key = "1.2.3.4".to_string();
        assert!(limiter.allows(&key));
        assert!(limiter.take(&key) && limiter.take(&key) && limiter.take(&key));
        assert!(!limiter.take(&key), "burst used up");
        assert!(!limiter.allows(&key));
        assert!(limiter.take(&"other".to_string()), "keys are apart");
        assert!(limiter.retry_after(&key) >= 1);
        std::thread::sleep(Duration::from_millis(40));
        assert!(limiter.take(&key), "refilled");
        std::thread::sleep(Duration::from_millis(40));
        limiter.sweep();
        assert_eq!(limiter.len(), 0, "full buckets are dropped");
    }

    #[test]
    fn a_full_map_refuses_new_keys() {
        let limiter = Limiter::per(2, Duration::from_secs(3600), 2);
        assert!(limiter.take(&1) && limiter.take(&2));
        assert!(!limiter.take(&3), "fails closed when full of live buckets");
        assert!(limiter.take(&1), "known keys still count");
    }

    #[test]
    fn intervals() {
        let gate = Interval::new(Duration::from_millis(30), 10);
        assert!(gate.pass(&"a"));
        assert!(!gate.pass(&"a"));
        assert!(gate.pass(&"b"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(gate.pass(&"a"));
    }
}
