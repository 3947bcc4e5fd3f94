//! `[apps.monitor]`: when a host counts as stale, the thresholds that colour its figures
//! and raise events, the webhook told of them, and how often the hub reports itself.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `[apps.monitor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorOptions {
    /// A host that has published nothing for this long is marked stale (an event, and
    /// the pages grey its card). Agents send a sample every `interval.idle` (10 s) at
    /// worst, so three missed samples. Default 30 s.
    #[serde(deserialize_with = "duration")]
    pub stale_after: Duration,
    /// How often the hub publishes its own figures on `metrics:@hub`. Default 1 s.
    #[serde(deserialize_with = "duration")]
    pub hub_interval: Duration,
    /// Told of every event (a threshold crossed, a host stale or back) with a `POST` of
    /// the event's JSON, when set: `http://`, or `https://` checked against the system's
    /// roots. Default none.
    pub webhook_url: Option<String>,
    /// How long one webhook call may take (connecting, sending, the answer) before it
    /// counts as failed. Default 5 s.
    #[serde(deserialize_with = "duration")]
    pub webhook_timeout: Duration,
    /// Hosts the registry keeps; publications of a new host past this are not tracked
    /// (counted in `switchboard_apps_monitor_hosts_refused_total`). Default 1000.
    pub max_hosts: usize,
    /// When a figure turns amber (`warn`) and red (`crit`).
    pub thresholds: Thresholds,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            stale_after: Duration::from_secs(30),
            hub_interval: Duration::from_secs(1),
            webhook_url: None,
            webhook_timeout: Duration::from_secs(5),
            max_hosts: 1000,
            thresholds: Thresholds::default(),
        }
    }
}

/// `[apps.monitor.thresholds]`: each a `{warn, crit}` pair; a value at or above `crit` is
/// critical, else at or above `warn` a warning, else fine.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// CPU use, percent of all cores. Default 85 / 95.
    pub cpu: Limit,
    /// Memory in use (total minus available), percent. Default 85 / 95.
    pub mem: Limit,
    /// Swap in use, percent. Default 50 / 80.
    pub swap: Limit,
    /// Each mount's space in use, percent. Default 85 / 95.
    pub disk: Limit,
    /// The 1-minute load average per core. Default 1.5 / 3.
    pub load: Limit,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu: Limit::new(85.0, 95.0),
            mem: Limit::new(85.0, 95.0),
            swap: Limit::new(50.0, 80.0),
            disk: Limit::new(85.0, 95.0),
            load: Limit::new(1.5, 3.0),
        }
    }
}

/// A warning and a critical threshold.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Amber from here.
    pub warn: f64,
    /// Red from here.
    pub crit: f64,
}

impl Limit {
    /// A pair.
    pub const fn new(warn: f64, crit: f64) -> Limit {
        Limit { warn, crit }
    }
}

impl Thresholds {
    /// Each threshold with the name the events and `monitor.config` give it.
    pub fn named(&self) -> [(&'static str, Limit); 5] {
        [
            ("cpu", self.cpu),
            ("mem", self.mem),
            ("swap", self.swap),
            ("disk", self.disk),
            ("load", self.load),
        ]
    }
}

impl MonitorOptions {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("stale_after", self.stale_after),
            ("hub_interval", self.hub_interval),
            ("webhook_timeout", self.webhook_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("apps.monitor.{name} must be longer than 0"));
            }
        }
        if self.max_hosts == 0 {
            return Err("apps.monitor.max_hosts must be at least 1".into());
        }
        for (name, limit) in self.thresholds.named() {
            if !(limit.warn.is_finite() && limit.crit.is_finite() && limit.warn <= limit.crit) {
                return Err(format!(
                    "apps.monitor.thresholds.{name}: warn ({}) must be a number no larger than crit ({})",
                    limit.warn, limit.crit
                ));
            }
        }
        if let Some(url) = &self.webhook_url {
            let endpoint = switchboard_client::Endpoint::parse(url)
                .map_err(|e| format!("apps.monitor.webhook_url: {e}"))?;
            if endpoint.scheme != switchboard_client::url::Scheme::Http {
                return Err("apps.monitor.webhook_url: use an http:// or https:// URL".into());
            }
        }
        Ok(())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    switchboard_server::config::duration::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_a_table_and_refusals() {
        let options: MonitorOptions = serde_json::from_value(serde_json::json!({
            "stale_after": "5s",
            "thresholds": {"cpu": {"warn": 50, "crit": 60}},
            "webhook_url": "http://127.0.0.1:9/hook"
        }))
        .unwrap();
        options.validate().unwrap();
        assert_eq!(options.stale_after, Duration::from_secs(5));
        assert_eq!(options.thresholds.cpu, Limit::new(50.0, 60.0));
        assert_eq!(options.thresholds.swap, Limit::new(50.0, 80.0));
        assert_eq!(options.hub_interval, Duration::from_secs(1));
        let bad = MonitorOptions {
            thresholds: Thresholds {
                load: Limit::new(3.0, 1.0),
                ..Thresholds::default()
            },
            ..MonitorOptions::default()
        };
        assert!(bad.validate().unwrap_err().contains("thresholds.load"));
        let https = MonitorOptions {
            webhook_url: Some("https://hooks.example/monitor".into()),
            ..MonitorOptions::default()
        };
        https.validate().unwrap();
        let bad = MonitorOptions {
            webhook_url: Some("ws://127.0.0.1:9/hook".into()),
            ..MonitorOptions::default()
        };
        assert!(bad.validate().unwrap_err().contains("webhook_url"));
    }
}
