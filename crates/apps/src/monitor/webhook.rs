//! The webhook: every event is POSTed as JSON to `[apps.monitor] webhook_url`, one at a
//! time, from a task of its own. The registry hands events over through a bounded queue
//! and never waits: when the webhook is slower than the events come, the newest are
//! dropped and counted, so a dead endpoint costs the hub a full queue and nothing else.

use std::sync::Weak;
use std::time::Duration;

use switchboard_client::{Endpoint, HttpConnection};
use tokio::sync::mpsc;

use super::registry::Event;
use crate::Shared;

/// Events waiting for the webhook.
pub(crate) const QUEUE: usize = 256;

/// Posts the queue's events to `endpoint` until the apps are gone. `timeout` bounds each
/// call (connect, send, answer); a call that fails, times out or answers other than 2xx
/// is counted in `monitor_webhook_failures` and logged, and not retried (the event is
/// also on `metrics:@events`, the record).
pub(crate) async fn run(
    shared: Weak<Shared>,
    endpoint: Endpoint,
    timeout: Duration,
    mut events: mpsc::Receiver<Event>,
) {
    while let Some(event) = events.recv().await {
        let Ok(body) = serde_json::to_vec(&event) else {
            continue;
        };
        let answer = tokio::time::timeout(timeout, post(&endpoint, body)).await;
        let failure = match answer {
            Ok(Ok(status)) if (200..300).contains(&status) => None,
            Ok(Ok(status)) => Some(format!("it answered {status}")),
            Ok(Err(err)) => Some(err),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match failure {
            None => shared.metrics.monitor_webhook_calls.inc(),
            Some(cause) => {
                shared.metrics.monitor_webhook_failures.inc();
                tracing::warn!(url = %endpoint.authority, %cause, "monitor: the webhook call failed");
            }
        }
    }
}

/// One POST on a fresh connection (events are rare: no pool to keep).
async fn post(endpoint: &Endpoint, body: Vec<u8>) -> Result<u16, String> {
    // An https:// webhook is checked against the system's roots.
    let mut conn = HttpConnection::connect_to(endpoint, None)
        .await
        .map_err(|e| e.to_string())?;
    let headers = [
        ("Host", endpoint.authority.as_str()),
        ("Content-Type", "application/json"),
        (
            "User-Agent",
            concat!("switchboard/", env!("CARGO_PKG_VERSION")),
        ),
    ];
    let answer = conn
        .request("POST", &endpoint.path, &headers, body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.status)
}
