//! Counters behind `/metrics` (Prometheus text format) and the dashboard.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// An extension's metrics: Prometheus text appended to `GET /metrics` on every scrape
/// (see `Server::metrics`).
#[derive(Clone)]
pub struct Source(pub std::sync::Arc<dyn Fn() -> String + Send + Sync>);

impl Source {
    /// The extension's metrics now.
    pub fn render(&self) -> String {
        (self.0)()
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("metrics::Source")
    }
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (negative to subtract).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Lines of log output dropped because stderr could not take them (full, blocked or
/// failing). Process-wide: the binary's log writer counts them here.
pub static LOG_LINES_DROPPED: Counter = Counter(AtomicU64::new(0));

/// Every metric the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open client connections.
    pub connections: Gauge,
    /// Connections and HTTP sessions that have not sent a successful `connect` yet.
    pub pending: Gauge,
    /// Active subscriptions (connection × channel).
    pub subscriptions: Gauge,
    /// Long polls held by the server, waiting for something to deliver.
    pub polls_waiting: Gauge,
    /// Open WebSocket connections (a part of `connections`).
    pub websocket_connections: Gauge,
    /// Open HTTP sessions, SSE and polling (the rest of `connections`).
    pub http_sessions: Gauge,
    /// HTTP sessions with an SSE stream open now.
    pub sse_streams: Gauge,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Commands received from clients.
    pub commands: Counter,
    /// Messages queued to clients (replies and pushes).
    pub messages_out: Counter,
    /// Bytes of messages queued to clients.
    pub bytes_out: Counter,
    /// Bytes of commands received from clients.
    pub bytes_in: Counter,
    /// Publications accepted (clients and server API).
    pub publications: Counter,
    /// Private messages accepted.
    pub private_messages: Counter,
    /// Error replies sent to clients.
    pub client_errors: Counter,
    /// Connections ended as slow consumers.
    pub slow_consumers: Counter,
    /// Server API requests.
    pub api_requests: Counter,
    /// Total time spent in store writes, in microseconds.
    pub store_write_us: Counter,
    /// Store writes.
    pub store_writes: Counter,
    /// New connections refused: every connected slot taken.
    pub refused_full: Counter,
    /// New connections refused: every pending slot taken.
    pub refused_pending: Counter,
    /// New connections refused: the address's pending slots taken.
    pub refused_pending_per_ip: Counter,
    /// `connect`s refused: the user's connection slots taken.
    pub user_limit_refusals: Counter,
    /// Requests refused for their `Host` (421).
    pub refused_host: Counter,
    /// Requests refused for their `Origin` (403).
    pub refused_origin: Counter,
    /// Commands refused for the user's publishing quota (bytes/s).
    pub quota_refusals: Counter,
    /// Requests whose body did not arrive within `limits.body_timeout`.
    pub body_timeouts: Counter,
    /// Connections closed because a write stalled past `limits.write_timeout`.
    pub write_timeouts: Counter,
    /// `accept` failures (out of file descriptors, ...).
    pub accept_errors: Counter,
    /// TLS handshakes that failed or did not finish within `limits.header_timeout`
    /// (plain HTTP on the TLS port, an untrusted certificate, a scanner, a client that
    /// connects and says nothing).
    pub tls_handshake_failures: Counter,
    /// In a group of nodes: publications this node learnt of by their offsets but could
    /// not read back from the history (expired or trimmed before it could), so its
    /// subscribers never got them.
    pub cluster_skipped: Counter,
    /// In a group of nodes: times the pub/sub connection to Redis was lost.
    pub redis_disconnects: Counter,
    /// In a group of nodes: channels whose stream lost continuity on this node (their
    /// subscribers were told to reconnect).
    pub cluster_broken: Counter,
}

/// Values the metrics page reads from elsewhere when it is rendered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Readings {
    /// Bytes of history cached by the hub.
    pub history_cache_bytes: u64,
    /// Channels held in memory.
    pub channels_in_memory: u64,
    /// Bytes the store holds.
    pub store_bytes: u64,
    /// Writes the store refused for its budget.
    pub store_refused: u64,
    /// Whether the store can write.
    pub store_healthy: bool,
    /// In a group of nodes: whether the pub/sub connection to Redis is up.
    pub redis_connected: bool,
    /// In a group of nodes: Redis topics this node is subscribed to.
    pub cluster_topics: u64,
}

impl Metrics {
    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self, readings: &Readings) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: i64| {
            let _ = write!(
                out,
                "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} gauge\nswitchboard_{name} {value}\n"
            );
        };
        gauge(
            "connections",
            "Open client connections.",
            self.connections.get(),
        );
        gauge(
            "pending_connections",
            "Connections and HTTP sessions not yet authenticated.",
            self.pending.get(),
        );
        gauge(
            "subscriptions",
            "Active subscriptions.",
            self.subscriptions.get(),
        );
        gauge(
            "polls_waiting",
            "Long polls held, waiting for something to deliver.",
            self.polls_waiting.get(),
        );
        gauge(
            "websocket_connections",
            "Open WebSocket connections.",
            self.websocket_connections.get(),
        );
        gauge(
            "http_sessions",
            "Open HTTP sessions (SSE and polling).",
            self.http_sessions.get(),
        );
        gauge(
            "sse_streams",
            "HTTP sessions with an SSE stream open.",
            self.sse_streams.get(),
        );
        gauge(
            "history_cache_bytes",
            "Bytes of recent history cached in memory.",
            readings.history_cache_bytes as i64,
        );
        gauge(
            "channels_in_memory",
            "Channels held in memory.",
            readings.channels_in_memory as i64,
        );
        gauge(
            "store_bytes",
            "Bytes the store holds (storage.max_bytes bounds it).",
            readings.store_bytes as i64,
        );
        gauge(
            "store_healthy",
            "1 while the store can write, 0 otherwise.",
            i64::from(readings.store_healthy),
        );
        gauge(
            "redis_connected",
            "In a group of nodes, 1 while the pub/sub connection to Redis is up (0 on a node alone).",
            i64::from(readings.redis_connected),
        );
        gauge(
            "cluster_topics",
            "In a group of nodes, the Redis topics this node is subscribed to.",
            readings.cluster_topics as i64,
        );
        let counters: [(&str, &str, u64); 24] = [
            (
                "connections_total",
                "Connections accepted.",
                self.connections_total.get(),
            ),
            (
                "commands_total",
                "Commands received from clients.",
                self.commands.get(),
            ),
            (
                "messages_out_total",
                "Messages queued to clients.",
                self.messages_out.get(),
            ),
            (
                "bytes_out_total",
                "Bytes queued to clients.",
                self.bytes_out.get(),
            ),
            (
                "bytes_in_total",
                "Bytes of commands received.",
                self.bytes_in.get(),
            ),
            (
                "publications_total",
                "Publications accepted.",
                self.publications.get(),
            ),
            (
                "private_messages_total",
                "Private messages accepted.",
                self.private_messages.get(),
            ),
            (
                "client_errors_total",
                "Error replies sent to clients.",
                self.client_errors.get(),
            ),
            (
                "slow_consumers_total",
                "Connections ended as slow consumers.",
                self.slow_consumers.get(),
            ),
            (
                "api_requests_total",
                "Server API requests.",
                self.api_requests.get(),
            ),
            (
                "store_writes_total",
                "Store writes.",
                self.store_writes.get(),
            ),
            (
                "store_refused_total",
                "Writes the store refused for its storage budget.",
                readings.store_refused,
            ),
            (
                "quota_refusals_total",
                "Commands refused for the publishing quota (bytes/s).",
                self.quota_refusals.get(),
            ),
            (
                "user_limit_refusals_total",
                "Connects refused for limits.connections_per_user.",
                self.user_limit_refusals.get(),
            ),
            (
                "refused_host_total",
                "Requests refused for their Host (421).",
                self.refused_host.get(),
            ),
            (
                "refused_origin_total",
                "Requests refused for their Origin (403).",
                self.refused_origin.get(),
            ),
            (
                "body_timeouts_total",
                "Request bodies not received within limits.body_timeout.",
                self.body_timeouts.get(),
            ),
            (
                "write_timeouts_total",
                "Connections closed for a write stalled past limits.write_timeout.",
                self.write_timeouts.get(),
            ),
            (
                "accept_errors_total",
                "Failed accepts (e.g. out of file descriptors).",
                self.accept_errors.get(),
            ),
            (
                "tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
                self.tls_handshake_failures.get(),
            ),
            (
                "redis_disconnects_total",
                "In a group of nodes, times the pub/sub connection to Redis was lost.",
                self.redis_disconnects.get(),
            ),
            (
                "cluster_skipped_total",
                "In a group of nodes, publications seen by offset but gone from the history before this node could read them.",
                self.cluster_skipped.get(),
            ),
            (
                "cluster_broken_total",
                "In a group of nodes, channels whose stream lost continuity here (their subscribers were told to reconnect).",
                self.cluster_broken.get(),
            ),
            (
                "log_lines_dropped_total",
                "Log lines dropped because stderr could not take them.",
                LOG_LINES_DROPPED.get(),
            ),
        ];
        for (name, help, value) in counters {
            let _ = write!(
                out,
                "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} counter\nswitchboard_{name} {value}\n"
            );
        }
        // New connections refused before they could authenticate, by reason.
        out.push_str(
            "# HELP switchboard_refused_connections_total New connections refused (503), by reason.\n\
             # TYPE switchboard_refused_connections_total counter\n",
        );
        for (reason, value) in [
            ("connections_full", self.refused_full.get()),
            ("pending_full", self.refused_pending.get()),
            ("pending_per_ip", self.refused_pending_per_ip.get()),
        ] {
            let _ = writeln!(
                out,
                "switchboard_refused_connections_total{{reason=\"{reason}\"}} {value}"
            );
        }
        let _ = write!(
            out,
            "# HELP switchboard_store_write_seconds_total Time spent in store writes.\n# TYPE switchboard_store_write_seconds_total counter\nswitchboard_store_write_seconds_total {}\n",
            self.store_write_us.get() as f64 / 1e6
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operations page lists every metric and every limit: a new one cannot be left
    /// out of it.
    #[test]
    fn docs_operations_lists_every_metric_and_limit() {
        let page = include_str!("../../../docs/operations.md");
        let rendered = Metrics::default().render(&Readings::default());
        for line in rendered.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap_or_default();
            assert!(
                page.contains(&format!("`{name}")),
                "{name} is not in docs/operations.md"
            );
        }
        let config = crate::Config::default();
        let sections = [
            ("limits", format!("{:#?}", config.limits)),
            ("mailbox", format!("{:#?}", config.mailbox)),
            ("storage", format!("{:#?}", config.storage)),
            ("rpc", format!("{:#?}", config.rpc)),
        ];
        for (section, debug) in sections {
            for field in debug
                .lines()
                .filter_map(|l| l.trim_start().split_once(": ").map(|(name, _)| name))
            {
                let named = page.contains(&format!("`{section}.{field}`"))
                    || page.contains(&format!("{section}.{field}`,"))
                    || page.contains(&format!(", `{section}.{field}`"));
                assert!(named, "{section}.{field} is not in docs/operations.md");
            }
        }
    }
}
