//! Counters behind `/metrics` (Prometheus text format) and the dashboard.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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

/// Every metric the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open client connections.
    pub connections: Gauge,
    /// Active subscriptions (connection × channel).
    pub subscriptions: Gauge,
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
}

impl Metrics {
    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
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
            "subscriptions",
            "Active subscriptions.",
            self.subscriptions.get(),
        );
        let counters: [(&str, &str, &Counter); 12] = [
            (
                "connections_total",
                "Connections accepted.",
                &self.connections_total,
            ),
            (
                "commands_total",
                "Commands received from clients.",
                &self.commands,
            ),
            (
                "messages_out_total",
                "Messages queued to clients.",
                &self.messages_out,
            ),
            (
                "bytes_out_total",
                "Bytes queued to clients.",
                &self.bytes_out,
            ),
            (
                "bytes_in_total",
                "Bytes of commands received.",
                &self.bytes_in,
            ),
            (
                "publications_total",
                "Publications accepted.",
                &self.publications,
            ),
            (
                "private_messages_total",
                "Private messages accepted.",
                &self.private_messages,
            ),
            (
                "client_errors_total",
                "Error replies sent to clients.",
                &self.client_errors,
            ),
            (
                "slow_consumers_total",
                "Connections ended as slow consumers.",
                &self.slow_consumers,
            ),
            (
                "api_requests_total",
                "Server API requests.",
                &self.api_requests,
            ),
            (
                "store_write_seconds_total",
                "Time spent in store writes.",
                &self.store_write_us,
            ),
            ("store_writes_total", "Store writes.", &self.store_writes),
        ];
        for (name, help, counter) in counters {
            let value = counter.get();
            let _ = if name == "store_write_seconds_total" {
                write!(
                    out,
                    "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} counter\nswitchboard_{name} {}\n",
                    value as f64 / 1e6
                )
            } else {
                write!(
                    out,
                    "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} counter\nswitchboard_{name} {value}\n"
                )
            };
        }
        out
    }
}
