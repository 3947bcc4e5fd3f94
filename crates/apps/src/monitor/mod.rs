//! Monitoring: the hosts that report on `metrics:HOST` (agents, `POST /api/ingest`, and
//! the hub itself as `@hub`), for `/monitor` and `/logs`.
//!
//! An [`Observer`] on the `metrics` namespace hands every committed publication to one
//! task through a bounded queue (the observer runs on the publisher's commit path and
//! must return at once; when the queue is full the publication is not tracked, and
//! counted). The task keeps the [`Registry`](registry::Registry) (what each host
//! announced, its latest figures, their levels against the thresholds, whether it still
//! reports), sweeps it for stale hosts, and publishes what changed as events on
//! `metrics:@events`, also handed to the webhook's own task through a bounded queue. The
//! pages read the registry with `monitor.hosts`, and subscribe to the hosts' channels
//! themselves for the live figures and lines.
//!
//! # Layout
//! - [`options`], the `[apps.monitor]` settings;
//! - `registry`: the hosts, levels and events (pure, unit-tested);
//! - `webhook`: POSTing events; `hub`: the `@hub` samples;
//! - `rpc`: the `monitor.` methods; `ingest`: `POST /api/ingest`.

mod hub;
mod ingest;
pub mod options;
mod registry;
mod rpc;
mod webhook;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use switchboard_server::Server;
use switchboard_server::observe::Observer;
use tokio::sync::mpsc;

pub(crate) use ingest::ingest;
use options::MonitorOptions;
use registry::{Event, Refused, Registry};

use crate::Shared;

/// The namespace of the hosts' samples and announcements (`metrics:HOST`).
pub const NAMESPACE: &str = "metrics";
/// The namespace of the hosts' logs (`logs:HOST:NAME`).
pub const LOGS_NAMESPACE: &str = "logs";
/// Where the events go.
pub const EVENTS_CHANNEL: &str = "metrics:@events";
/// Publications waiting for the registry's task: 100 hosts at 1 s fill a tenth of it in
/// a second, so it overflows only when the task is stuck.
const QUEUE: usize = 4096;

/// The monitor's state, in [`Shared`].
#[derive(Debug)]
pub(crate) struct Monitor {
    pub(crate) options: MonitorOptions,
    registry: Mutex<Registry>,
    /// The webhook's queue, when one is set.
    webhook: Option<mpsc::Sender<Event>>,
}

/// The receiving ends of the queues, for the tasks [`start`] spawns.
#[derive(Debug)]
pub(crate) struct Queues {
    webhook: Option<(switchboard_client::Endpoint, mpsc::Receiver<Event>)>,
}

impl Monitor {
    /// The state, and the queues' ends for [`start`].
    pub(crate) fn new(options: MonitorOptions) -> (Monitor, Queues) {
        let endpoint = options
            .webhook_url
            .as_deref()
            .and_then(|url| switchboard_client::Endpoint::parse(url).ok());
        let (webhook, queues) = match endpoint {
            Some(endpoint) => {
                let (tx, rx) = mpsc::channel(webhook::QUEUE);
                (
                    Some(tx),
                    Queues {
                        webhook: Some((endpoint, rx)),
                    },
                )
            }
            None => (None, Queues { webhook: None }),
        };
        let monitor = Monitor {
            registry: Mutex::new(Registry::new(&options)),
            options,
            webhook,
        };
        (monitor, queues)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry as `monitor.hosts` lists it.
    pub(crate) fn hosts(&self) -> Value {
        self.registry().list()
    }
}

/// Registers the observer, the `monitor.` methods, and starts the tasks (the registry's,
/// the hub's samples, the webhook's). They end when the apps are gone.
pub(crate) fn start(server: &mut Server, shared: &Arc<Shared>, queues: Queues) {
    let (tx, rx) = mpsc::channel(QUEUE);
    server.observe(
        NAMESPACE,
        Arc::new(Watcher {
            queue: tx,
            shared: Arc::downgrade(shared),
        }),
    );
    server.rpc("monitor.", Arc::new(rpc::MonitorRpc(shared.clone())));
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let options = &shared.monitor.options;
    runtime.spawn(watch(Arc::downgrade(shared), rx, sweep_every(options)));
    runtime.spawn(hub::run(Arc::downgrade(shared), options.hub_interval));
    if let Some((endpoint, events)) = queues.webhook {
        runtime.spawn(webhook::run(
            Arc::downgrade(shared),
            endpoint,
            options.webhook_timeout,
            events,
        ));
    }
}

/// How often stale hosts are looked for: a quarter of `stale_after`, between 100 ms and
/// a second, so a host is marked at most that late.
fn sweep_every(options: &MonitorOptions) -> Duration {
    (options.stale_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// A publication on `metrics:HOST`, for the registry's task.
#[derive(Debug)]
struct Seen {
    host: String,
    time: u64,
    data: Arc<RawValue>,
}

/// The observer: queues what it is told, never waits.
#[derive(Debug)]
struct Watcher {
    queue: mpsc::Sender<Seen>,
    /// Weak: the hub holds the observer, and [`Shared`] holds the hub.
    shared: Weak<Shared>,
}

impl Observer for Watcher {
    fn publication(&self, channel: &str, _offset: u64, time: u64, data: &Arc<RawValue>) {
        let Some(host) = channel.strip_prefix("metrics:") else {
            return;
        };
        // The events are the monitor's own words, not a host.
        if channel == EVENTS_CHANNEL {
            return;
        }
        let seen = Seen {
            host: host.to_owned(),
            time,
            data: data.clone(),
        };
        if self.queue.try_send(seen).is_err() {
            if let Some(shared) = self.shared.upgrade() {
                shared.metrics.monitor_dropped.inc();
            }
        }
    }
}

/// The registry's task: publications in, stale sweeps on a tick, events out.
async fn watch(shared: Weak<Shared>, mut seen: mpsc::Receiver<Seen>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let events = tokio::select! {
            next = seen.recv() => {
                let Some(next) = next else { return };
                let Some(shared) = shared.upgrade() else { return };
                let result = shared.monitor.registry().publication(&next.host, next.time, &next.data);
                match result {
                    Ok(events) => events,
                    Err(Refused::TooManyHosts) => {
                        shared.metrics.monitor_hosts_refused.inc();
                        Vec::new()
                    }
                }
            }
            _ = tick.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                let now = crate::now_ms() as u64;
                let mut registry = shared.monitor.registry();
                registry.sweep(now)
            }
        };
        if events.is_empty() {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for event in events {
            tell(&shared, event).await;
        }
    }
}

/// Publishes `event` on `metrics:@events` and hands it to the webhook.
async fn tell(shared: &Shared, event: Event) {
    shared.metrics.monitor_events.inc();
    tracing::info!(host = %event.host, metric = %event.metric, level = ?event.level, value = event.value, "monitor: event");
    if let Ok(value) = serde_json::to_value(&event) {
        shared.publish_best_effort(EVENTS_CHANNEL, &value).await;
    }
    if let Some(webhook) = &shared.monitor.webhook {
        if webhook.try_send(event).is_err() {
            shared.metrics.monitor_webhook_dropped.inc();
        }
    }
}
