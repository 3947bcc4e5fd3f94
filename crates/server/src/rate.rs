//! A token bucket: the rate limits (commands per connection, bytes per user) share it.

use std::time::Instant;

/// `rate` tokens a second, at most `burst` saved up; starts full.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if there are that many; otherwise takes none.
    pub(crate) fn take(&mut self, n: f64) -> bool {
        self.refill();
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether it has refilled to its burst.
    pub(crate) fn is_full(&mut self) -> bool {
        self.refill();
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_until_empty_and_refills() {
        let mut bucket = TokenBucket::new(1000.0, 10.0);
        assert!(bucket.is_full());
        assert!(bucket.take(6.0));
        assert!(!bucket.take(6.0), "only 4 left");
        assert!(bucket.take(4.0));
        assert!(!bucket.is_full());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(bucket.is_full(), "1000/s refills 10 within 20 ms");
    }
}
