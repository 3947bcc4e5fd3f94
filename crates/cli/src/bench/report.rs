//! The report of `bench fanout`: one human line and one JSON line on stdout. The JSON
//! fields are read by scripts/bench-fanout and quoted in the README: keep them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::json;

use crate::args::BenchFanoutArgs;
use crate::bench::publishers::PubTally;
use crate::bench::sink::Tally;

pub(crate) struct FanoutReport<'a> {
    pub(crate) args: &'a BenchFanoutArgs,
    pub(crate) publishers: usize,
    pub(crate) planned: u64,
    pub(crate) published: PubTally,
    pub(crate) expected: u64,
    /// Acknowledged publications that subscribers did not receive.
    pub(crate) lost: u64,
    pub(crate) received: Tally,
    pub(crate) slow_closes: BTreeMap<String, u64>,
    pub(crate) server_cpu_s: Option<f64>,
    /// The part of `server_cpu_s` spent in the kernel (system calls, the network stack).
    pub(crate) server_sys_s: Option<f64>,
    pub(crate) server_rss_kib: Option<u64>,
}

impl FanoutReport<'_> {
    /// Prints the human line and the JSON line (and the first errors on stderr).
    pub(crate) fn print(&self) {
        let (args, published, received) = (self.args, &self.published, &self.received);
        let lost = self.lost;
        let per_s = received.in_window as f64 / args.duration;
        let ms = |q: f64| received.latency_us.quantile(q) as f64 / 1000.0;
        let (p50, p99, max) = (ms(0.5), ms(0.99), received.latency_us.max as f64 / 1000.0);
        let slow_disconnected: u64 = self
            .slow_closes
            .iter()
            .filter(|(end, _)| end.as_str() != "open")
            .map(|(_, n)| n)
            .sum();
        if let Some(error) = &published.first_error {
            eprintln!("switchboard: first publish error: {error}");
        }
        for why in &published.lost {
            eprintln!("switchboard: {why}");
        }
        if let Some(why) = &received.first_end {
            eprintln!(
                "switchboard: {} subscribers ended early; the first: {why}",
                received.ended
            );
        }
        let mut human = format!(
            "{} {}: {} {} subscribers, {}/s for {} s ({} publishers, {} B pad): {} acked, {} errors; \
             delivered {} (acked x subscribers: {}), lost {lost}, duplicates {}; {per_s:.0} deliveries/s in the window; \
             latency p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
            args.conn.url,
            args.channel,
            args.subscribers,
            args.conn.transport.name(),
            args.rate,
            args.duration,
            self.publishers,
            args.size,
            published.acked,
            published.errors,
            received.delivered,
            self.expected,
            received.duplicates,
        );
        if args.slow > 0 {
            let _ = write!(
                human,
                "; slow disconnected {slow_disconnected}/{} {:?}",
                args.slow, self.slow_closes
            );
        }
        if let (Some(cpu), Some(rss)) = (self.server_cpu_s, self.server_rss_kib) {
            let _ = write!(
                human,
                "; server CPU {cpu:.2} s, RSS {:.1} MiB",
                rss as f64 / 1024.0
            );
        }
        let json = json!({
            "url": args.conn.url, "transport": args.conn.transport.name(),
            "channel": args.channel, "channels": args.channels.max(1),
            "subscribers": args.subscribers,
            "publishers": self.publishers, "rate": args.rate, "duration_s": args.duration,
            "size": args.size, "planned": self.planned, "published": published.sent,
            "acked": published.acked, "publish_errors": published.errors,
            "acked_per_s": (published.acked as f64 / args.duration).round(),
            "expected": self.expected, "delivered": received.delivered, "lost": lost,
            "duplicates": received.duplicates, "gaps": received.gaps,
            "delivered_per_s": per_s.round(),
            "p50_ms": p50, "p99_ms": p99, "max_ms": max,
            "subscribers_ended": received.ended,
            "slow": args.slow, "slow_disconnected": slow_disconnected,
            "slow_ends": self.slow_closes,
            "server_cpu_s": self.server_cpu_s, "server_sys_s": self.server_sys_s,
            "server_rss_kib": self.server_rss_kib,
        });
        // A closed stdout (`| head`) is not an error worth a panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{human}\n{json}");
    }
}
