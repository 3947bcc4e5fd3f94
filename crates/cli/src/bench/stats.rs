//! Measuring what a load client receives: a fixed log-linear latency histogram, and
//! reading publication pushes without parsing their JSON (the client is often the
//! bottleneck, so it does as little per message as it can).

use std::time::Duration;

/// Microseconds in a duration, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where `needle` starts in `hay`. Candidates are the positions of its first byte.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = hay.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The unsigned integer right after `key` in `text`, if any.
pub(crate) fn number_after(text: &[u8], key: &[u8]) -> Option<(usize, u64)> {
    let at = find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let value = std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()?;
    Some((at + digits, value))
}

/// A publication push, read without parsing the JSON: its `offset`, and the bench's `t`
/// when the data is the bench's (`"data":{"t":…`, as published: the server passes `data`
/// through byte for byte). `None` for anything without an `offset` (replies, joins). The
/// server writes `offset` before `data`, and nothing before `offset` can contain it
/// (channel names have no quotes).
pub(crate) fn parse_publication(text: &[u8]) -> Option<(u64, Option<u64>)> {
    let (end, offset) = number_after(text, br#""offset":"#)?;
    let t = number_after(&text[end..], br#""data":{"t":"#).map(|(_, t)| t);
    Some((offset, t))
}

/// Latencies in µs: exact below 1024 µs, then 64 buckets per power of two (each under
/// 1.6% wide). Fixed size, so recording never allocates.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    /// The largest value recorded.
    pub(crate) max: u64,
}

impl Histogram {
    const EXACT: u64 = 1024;
    const SUB_BITS: u32 = 6;
    /// Values are clamped below 2^MAX_BITS µs (12 days).
    const MAX_BITS: u32 = 40;
    const BUCKETS: usize =
        Self::EXACT as usize + ((Self::MAX_BITS - 10) << Self::SUB_BITS) as usize;

    pub(crate) fn new() -> Histogram {
        Histogram {
            counts: vec![0; Self::BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }

    pub(crate) fn bucket(v: u64) -> usize {
        let v = v.min((1 << Self::MAX_BITS) - 1);
        if v < Self::EXACT {
            return v as usize;
        }
        let bits = 63 - v.leading_zeros(); // >= 10
        let sub = (v >> (bits - Self::SUB_BITS)) & ((1 << Self::SUB_BITS) - 1);
        Self::EXACT as usize + (((bits - 10) << Self::SUB_BITS) as usize) + sub as usize
    }

    /// The middle of a bucket.
    pub(crate) fn value(bucket: usize) -> u64 {
        let i = bucket as u64;
        if i < Self::EXACT {
            return i;
        }
        let i = i - Self::EXACT;
        let bits = 10 + (i >> Self::SUB_BITS) as u32;
        let sub = i & ((1 << Self::SUB_BITS) - 1);
        let shift = bits - Self::SUB_BITS;
        (((1 << Self::SUB_BITS) + sub) << shift) + (1 << shift) / 2
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    pub(crate) fn record(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value(bucket).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn find_locates_needles() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"abcabd", b"abe"), None);
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"", b"a"), None);
        assert_eq!(find(b"abc", b""), None);
    }

    #[test]
    pub(crate) fn publications_are_read_without_parsing() {
        let push = br#"{"push":"publication","channel":"chat:bench","epoch":"4ff04d6da229335e","offset":17,"data":{"t":123456,"pad":"xx"},"info":{"user":"bench-pub-0","client":"5133199db175715b"},"time":1795291295074}"#;
        assert_eq!(parse_publication(push), Some((17, Some(123456))));
        // Someone else's publication: an offset, no `t`.
        let other = br#"{"push":"publication","channel":"chat:bench","epoch":"e","offset":18,"data":{"text":"t"},"time":1}"#;
        assert_eq!(parse_publication(other), Some((18, None)));
        let join = br#"{"push":"join","channel":"chat:bench","info":{"user":"bob","client":"1c"}}"#;
        assert_eq!(parse_publication(join), None);
    }

    #[test]
    pub(crate) fn histogram_buckets_are_exact_then_narrow() {
        for v in 0..1024 {
            assert_eq!(Histogram::value(Histogram::bucket(v)), v);
        }
        let mut last = 0;
        for v in (1024..1 << 30).step_by(997) {
            let bucket = Histogram::bucket(v);
            assert!(bucket >= last && bucket < Histogram::BUCKETS);
            last = bucket;
            let mid = Histogram::value(bucket) as f64;
            assert!(
                (mid - v as f64).abs() / v as f64 <= 1.0 / 64.0,
                "{v} -> {mid}"
            );
        }
        assert_eq!(Histogram::bucket(u64::MAX), Histogram::BUCKETS - 1);
        assert_eq!(Histogram::bucket(1024), 1024);
        assert_eq!(Histogram::bucket(2047), 1024 + 63);
        assert_eq!(Histogram::bucket(2048), 1024 + 64);
    }

    #[test]
    pub(crate) fn histogram_quantiles() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.99), 0);
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.quantile(0.0), 1);
        let mut other = Histogram::new();
        other.record(50_000);
        h.merge(&other);
        assert_eq!(h.total, 1001);
        assert_eq!(h.max, 50_000);
        assert_eq!(h.quantile(1.0), 50_000);
        let p = h.quantile(0.9995) as f64;
        assert!((p - 50_000.0).abs() / 50_000.0 < 0.02, "{p}");
    }
}
