//! The host registry: what the agents announced (`hello`) and last reported (`sample`,
//! `custom`, `dropped`) on `metrics:HOST`, each figure's level against the thresholds,
//! and whether the host still reports. Pure: it is told of publications and of the
//! time, and answers with the events they caused; the task in [`super`] does the I/O.
//!
//! Times: "last seen" is the hub's time of the publication, never the agent's clock, so a
//! host whose clock is off is not stale for it. A sample sent late (`"late": true`, from
//! the agent's buffer after a reconnection) proves the host is back, but its figures are
//! old: they do not move the levels (no alert for a peak already over).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::options::{Limit, MonitorOptions, Thresholds};

/// Most logs one host's `hello` may list; the rest are left out.
const MAX_LOGS: usize = 256;
/// Most custom metrics kept per host (ingest takes at most 64 per request).
const MAX_CUSTOM: usize = 64;
/// Most mounts evaluated per sample.
const MAX_DISKS: usize = 64;
/// The metric name of a host's reporting (stale or back) in events.
pub(crate) const REPORTING: &str = "reporting";

/// How a figure stands against its thresholds, or a host that stopped reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Ok,
    Warn,
    Crit,
    Stale,
}

impl Level {
    fn of(value: f64, limit: Limit) -> Level {
        if value >= limit.crit {
            Level::Crit
        } else if value >= limit.warn {
            Level::Warn
        } else {
            Level::Ok
        }
    }
}

/// A threshold crossed, or a host gone stale or back: published on `metrics:@events`
/// and POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Event {
    #[serde(rename = "type")]
    kind: &'static str,
    /// The hub's time, Unix milliseconds.
    pub(crate) time: u64,
    pub(crate) host: String,
    /// `cpu`, `mem`, `swap`, `load`, `disk:MOUNT`, or [`REPORTING`].
    pub(crate) metric: String,
    pub(crate) level: Level,
    /// The figure (percent; load per core; for [`REPORTING`], seconds since the host was
    /// last seen).
    pub(crate) value: f64,
    /// The threshold of the new level (for `ok`, the warning one it fell below; for
    /// [`REPORTING`], `stale_after` in seconds).
    pub(crate) threshold: f64,
}

impl Event {
    fn new(time: u64, host: &str, metric: &str, level: Level, value: f64, threshold: f64) -> Event {
        Event {
            kind: "event",
            time,
            host: host.to_owned(),
            metric: metric.to_owned(),
            level,
            value: round(value),
            threshold,
        }
    }
}

/// Two decimals are plenty for people and keep the JSON short.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A log a host announced.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub(crate) struct LogInfo {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
}

/// What the registry knows of one host.
#[derive(Debug, Default)]
pub(crate) struct Host {
    version: Option<String>,
    os: Option<String>,
    cores: Option<u64>,
    interval_ms: Option<Value>,
    logs: Vec<LogInfo>,
    /// The hub's time of the first and the latest publication.
    first_seen: u64,
    last_seen: u64,
    stale: bool,
    /// The newest sample as published (the pages draw a card from it at once).
    sample: Option<Arc<RawValue>>,
    /// Each figure's level; a figure absent is fine.
    levels: BTreeMap<String, Level>,
    custom: BTreeMap<String, f64>,
    custom_time: Option<u64>,
    dropped_samples: u64,
    dropped_lines: u64,
}

/// A publication the registry did not take.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A new host past `max_hosts`.
    TooManyHosts,
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Registry {
    hosts: BTreeMap<String, Host>,
    thresholds: Thresholds,
    stale_after_ms: u64,
    max_hosts: usize,
}

/// The parts of a publication on `metrics:HOST` the registry reads. Anything else (a
/// type of a later agent, a field it does not know) passes unread.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Message {
    Hello(Hello),
    Sample(Sample),
    Dropped(Dropped),
    Custom(Custom),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Hello {
    version: Option<String>,
    os: Option<String>,
    cores: Option<u64>,
    interval_ms: Option<Value>,
    #[serde(default)]
    logs: Vec<LogInfo>,
}

#[derive(Deserialize, Default)]
struct Sample {
    #[serde(default)]
    late: bool,
    cpu: Option<Cpu>,
    load: Option<Vec<f64>>,
    mem: Option<Memory>,
    swap: Option<Memory>,
    #[serde(default)]
    disks: Vec<Disk>,
}

#[derive(Deserialize)]
struct Cpu {
    total: Option<f64>,
    #[serde(default)]
    cores: Vec<f64>,
}

#[derive(Deserialize)]
struct Memory {
    total: Option<f64>,
    used: Option<f64>,
    available: Option<f64>,
}

#[derive(Deserialize)]
struct Disk {
    mount: String,
    total: f64,
    used: f64,
}

#[derive(Deserialize)]
struct Dropped {
    #[serde(default)]
    samples: u64,
    #[serde(default)]
    lines: u64,
}

#[derive(Deserialize)]
struct Custom {
    time: Option<u64>,
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
}

/// `part` of `total` in percent, when both are there and `total` is positive.
fn percent(part: Option<f64>, total: Option<f64>) -> Option<f64> {
    match (part, total) {
        (Some(part), Some(total)) if total > 0.0 => Some(part / total * 100.0),
        _ => None,
    }
}

impl Registry {
    pub(crate) fn new(options: &MonitorOptions) -> Registry {
        Registry {
            hosts: BTreeMap::new(),
            thresholds: options.thresholds,
            stale_after_ms: options.stale_after.as_millis() as u64,
            max_hosts: options.max_hosts,
        }
    }

    /// `data` was published on `metrics:HOST` at `time` (the hub's): the host is seen,
    /// and what it says is recorded. Returns the events it caused.
    pub(crate) fn publication(
        &mut self,
        host: &str,
        time: u64,
        data: &Arc<RawValue>,
    ) -> Result<Vec<Event>, Refused> {
        if !self.hosts.contains_key(host) && self.hosts.len() >= self.max_hosts {
            return Err(Refused::TooManyHosts);
        }
        let thresholds = self.thresholds;
        let stale_after = self.stale_after_ms as f64 / 1000.0;
        let entry = self.hosts.entry(host.to_owned()).or_insert_with(|| Host {
            first_seen: time,
            ..Host::default()
        });
        let mut events = Vec::new();
        if entry.stale {
            entry.stale = false;
            let gone = time.saturating_sub(entry.last_seen) as f64 / 1000.0;
            events.push(Event::new(
                time,
                host,
                REPORTING,
                Level::Ok,
                gone,
                stale_after,
            ));
        }
        entry.last_seen = entry.last_seen.max(time);
        // A message that does not parse still shows the host is alive.
        let message = serde_json::from_str(data.get()).unwrap_or(Message::Other);
        match message {
            Message::Hello(hello) => {
                entry.version = hello.version;
                entry.os = hello.os;
                entry.cores = hello.cores;
                entry.interval_ms = hello.interval_ms;
                entry.logs = hello
                    .logs
                    .into_iter()
                    .filter(|l| switchboard_server::auth::valid_host(&l.name))
                    .take(MAX_LOGS)
                    .collect();
            }
            Message::Sample(sample) => {
                if !sample.late {
                    entry.sample = Some(data.clone());
                    for (metric, value, limit) in figures(&sample, entry.cores, &thresholds) {
                        let level = Level::of(value, limit);
                        let before = entry.levels.get(&metric).copied().unwrap_or(Level::Ok);
                        if level != before {
                            let threshold = match level {
                                Level::Crit => limit.crit,
                                _ => limit.warn,
                            };
                            events.push(Event::new(time, host, &metric, level, value, threshold));
                        }
                        if level == Level::Ok {
                            entry.levels.remove(&metric);
                        } else {
                            entry.levels.insert(metric, level);
                        }
                    }
                }
            }
            Message::Dropped(dropped) => {
                entry.dropped_samples = entry.dropped_samples.saturating_add(dropped.samples);
                entry.dropped_lines = entry.dropped_lines.saturating_add(dropped.lines);
            }
            Message::Custom(custom) => {
                for (name, value) in custom.metrics {
                    if entry.custom.len() < MAX_CUSTOM || entry.custom.contains_key(&name) {
                        entry.custom.insert(name, value);
                    }
                }
                entry.custom_time = Some(custom.time.unwrap_or(time));
            }
            Message::Other => {}
        }
        Ok(events)
    }

    /// Marks the hosts not seen for `stale_after` by `now` stale: an event each.
    pub(crate) fn sweep(&mut self, now: u64) -> Vec<Event> {
        let stale_after = self.stale_after_ms;
        let mut events = Vec::new();
        for (name, host) in &mut self.hosts {
            let quiet = now.saturating_sub(host.last_seen);
            if !host.stale && quiet > stale_after {
                host.stale = true;
                events.push(Event::new(
                    now,
                    name,
                    REPORTING,
                    Level::Stale,
                    quiet as f64 / 1000.0,
                    stale_after as f64 / 1000.0,
                ));
            }
        }
        events
    }

    /// Every host, sorted by name, as `monitor.hosts` answers.
    pub(crate) fn list(&self) -> Value {
        let hosts: Vec<Value> = self
            .hosts
            .iter()
            .map(|(name, h)| {
                json!({
                    "host": name,
                    "version": h.version,
                    "os": h.os,
                    "cores": h.cores,
                    "interval_ms": h.interval_ms,
                    "logs": h.logs,
                    "first_seen": h.first_seen,
                    "last_seen": h.last_seen,
                    "stale": h.stale,
                    "levels": h.levels,
                    "sample": h.sample.as_deref(),
                    "custom": h.custom,
                    "custom_time": h.custom_time,
                    "dropped": {"samples": h.dropped_samples, "lines": h.dropped_lines},
                })
            })
            .collect();
        Value::Array(hosts)
    }
}

/// A sample's figures that have thresholds: (metric, value, limit). Figures the agent
/// could not read are absent from the sample, so absent here (never a fake zero).
fn figures(sample: &Sample, cores: Option<u64>, t: &Thresholds) -> Vec<(String, f64, Limit)> {
    let mut out = Vec::new();
    if let Some(total) = sample.cpu.as_ref().and_then(|c| c.total) {
        out.push(("cpu".to_owned(), total, t.cpu));
    }
    if let Some(mem) = &sample.mem {
        // In use is what is not available (caches can be given back); `used` otherwise.
        let used = match (mem.total, mem.available) {
            (Some(total), Some(available)) => Some(total - available),
            _ => mem.used,
        };
        if let Some(p) = percent(used, mem.total) {
            out.push(("mem".to_owned(), p, t.mem));
        }
    }
    if let Some(p) = sample.swap.as_ref().and_then(|s| percent(s.used, s.total)) {
        out.push(("swap".to_owned(), p, t.swap));
    }
    let cores = cores.filter(|&n| n > 0).or_else(|| {
        let n = sample.cpu.as_ref().map_or(0, |c| c.cores.len() as u64);
        (n > 0).then_some(n)
    });
    if let (Some(load), Some(cores)) = (sample.load.as_ref().and_then(|l| l.first()), cores) {
        out.push(("load".to_owned(), load / cores as f64, t.load));
    }
    for disk in sample.disks.iter().take(MAX_DISKS) {
        if let Some(p) = percent(Some(disk.used), Some(disk.total)) {
            out.push((format!("disk:{}", disk.mount), p, t.disk));
        }
    }
    out.retain(|(_, v, _)| v.is_finite());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raw(v: Value) -> Arc<RawValue> {
        Arc::from(serde_json::value::to_raw_value(&v).unwrap())
    }

    fn registry() -> Registry {
        Registry::new(&MonitorOptions {
            stale_after: Duration::from_secs(30),
            max_hosts: 2,
            ..MonitorOptions::default()
        })
    }

    #[test]
    fn hello_and_samples_fill_the_registry() {
        let mut r = registry();
        let hello = json!({"type": "hello", "time": 1, "host": "web1", "version": "0.1.0",
            "os": "Debian 12", "cores": 4, "interval_ms": {"watched": 1000, "idle": 10000},
            "logs": [{"name": "syslog", "kind": "file"}, {"name": "../etc", "kind": "file"}]});
        assert_eq!(r.publication("web1", 1000, &raw(hello)), Ok(vec![]));
        let sample = json!({"type": "sample", "time": 2, "cpu": {"total": 12.5, "cores": [10, 15]},
            "load": [0.5, 0.4, 0.3], "mem": {"total": 100, "used": 40, "available": 50}});
        assert_eq!(r.publication("web1", 2000, &raw(sample)), Ok(vec![]));
        let list = r.list();
        let host = &list[0];
        assert_eq!(host["host"], "web1");
        assert_eq!(host["version"], "0.1.0");
        assert_eq!(host["cores"], 4);
        assert_eq!(host["logs"], json!([{"name": "syslog", "kind": "file"}]));
        assert_eq!(host["first_seen"], 1000);
        assert_eq!(host["last_seen"], 2000);
        assert_eq!(host["sample"]["cpu"]["total"], 12.5);
        assert_eq!(host["stale"], false);
        // Not JSON it knows: still seen.
        r.publication("web1", 2500, &raw(json!("hi"))).unwrap();
        assert_eq!(r.list()[0]["last_seen"], 2500);
        // A bounded registry.
        r.publication("web2", 1, &raw(json!({}))).unwrap();
        assert_eq!(
            r.publication("web3", 1, &raw(json!({}))),
            Err(Refused::TooManyHosts)
        );
        assert_eq!(r.hosts.len(), 2);
    }

    #[test]
    fn crossings_become_events_once() {
        let mut r = registry();
        let cpu = |v: f64| raw(json!({"type": "sample", "cpu": {"total": v, "cores": [v, v]}}));
        assert!(r.publication("h", 1, &cpu(50.0)).unwrap().is_empty());
        let events = r.publication("h", 2, &cpu(90.0)).unwrap();
        assert_eq!(
            events,
            vec![Event::new(2, "h", "cpu", Level::Warn, 90.0, 85.0)]
        );
        assert!(
            r.publication("h", 3, &cpu(91.0)).unwrap().is_empty(),
            "still warn: no event"
        );
        let events = r.publication("h", 4, &cpu(99.0)).unwrap();
        assert_eq!(events[0].level, Level::Crit);
        assert_eq!(events[0].threshold, 95.0);
        assert_eq!(r.list()[0]["levels"], json!({"cpu": "crit"}));
        // A late sample's old peak moves nothing.
        let late = raw(json!({"type": "sample", "late": true, "cpu": {"total": 10.0}}));
        assert!(r.publication("h", 5, &late).unwrap().is_empty());
        let events = r.publication("h", 6, &cpu(10.0)).unwrap();
        assert_eq!(
            events,
            vec![Event::new(6, "h", "cpu", Level::Ok, 10.0, 85.0)]
        );
        assert_eq!(r.list()[0]["levels"], json!({}));
        // Memory from available, load per core, each mount, swap.
        let sample = raw(
            json!({"type": "sample", "load": [7.0, 1, 1], "cpu": {"cores": [1, 1]},
            "mem": {"total": 1000, "used": 100, "available": 20},
            "swap": {"total": 0, "used": 0},
            "disks": [{"mount": "/", "total": 100, "used": 90}, {"mount": "/data", "total": 100, "used": 1}]}),
        );
        let events = r.publication("h", 7, &sample).unwrap();
        let got: Vec<(&str, Level)> = events
            .iter()
            .map(|e| (e.metric.as_str(), e.level))
            .collect();
        assert_eq!(
            got,
            vec![
                ("mem", Level::Crit),
                ("load", Level::Crit),
                ("disk:/", Level::Warn)
            ]
        );
    }

    #[test]
    fn stale_after_silence_and_back() {
        let mut r = registry();
        r.publication("h", 1_000, &raw(json!({"type": "sample"})))
            .unwrap();
        assert!(r.sweep(31_000).is_empty(), "exactly stale_after: not yet");
        let events = r.sweep(31_001);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].metric.as_str(), events[0].level),
            (REPORTING, Level::Stale)
        );
        assert_eq!(events[0].threshold, 30.0);
        assert!(r.sweep(40_000).is_empty(), "once");
        assert_eq!(r.list()[0]["stale"], true);
        let back = r
            .publication("h", 41_000, &raw(json!({"type": "sample"})))
            .unwrap();
        assert_eq!(
            back,
            vec![Event::new(41_000, "h", REPORTING, Level::Ok, 40.0, 30.0)]
        );
        assert_eq!(r.list()[0]["stale"], false);
    }

    #[test]
    fn dropped_and_custom() {
        let mut r = registry();
        r.publication(
            "h",
            1,
            &raw(json!({"type": "dropped", "samples": 3, "lines": 7})),
        )
        .unwrap();
        r.publication(
            "h",
            2,
            &raw(json!({"type": "custom", "time": 5, "metrics": {"queue": 12}})),
        )
        .unwrap();
        let host = &r.list()[0];
        assert_eq!(host["dropped"], json!({"samples": 3, "lines": 7}));
        assert_eq!(host["custom"], json!({"queue": 12.0}));
        assert_eq!(host["custom_time"], 5);
    }
}
