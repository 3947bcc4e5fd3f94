//! The `admin.` rpc methods, for the console's API tab and the `/admin` page: the server
//! API run in process, the live figures, and disconnecting a user. Callers need the
//! `admin` role in their token (error 103 otherwise); the role comes from the account
//! (`switchboard user add --admin`, or the first administrator's invite).
//!
//! - `admin.api {command, body}`: what `POST /api/{command}` with `body` returns (`body`
//!   absent counts as `{}`), through [`Node::api`](switchboard_server::Node::api); its
//!   errors are the API's (104 unknown command, 107 a body it cannot take, …).
//! - `admin.overview {}`: the hub's figures of the moment (the page turns the counters into
//!   rates per second by difference) and the users online with their connection counts.
//! - `admin.disconnect {user, reconnect?}`: closes every connection of `user` (4003, or
//!   4008 with `reconnect`): `{"disconnected": N}`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_server::error::ClientError;
use switchboard_server::rpc::{RpcCall, RpcHandler};

use crate::Shared;
use crate::calls::{args, raw};

/// Most users `admin.overview` lists (the busiest first when there are more).
const USERS_LISTED: usize = 500;

/// The handler registered for `admin.`.
#[derive(Debug)]
pub(crate) struct Ops(pub(crate) Arc<Shared>);

impl RpcHandler for Ops {
    fn call(&self, call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
        let shared = self.0.clone();
        Box::pin(async move {
            if !call.caller.has_role("admin") {
                return Err(ClientError::permission_denied(
                    "admin methods need the admin role",
                ));
            }
            let data = call.data;
            match call.method.as_str() {
                "admin.api" => api(&shared, args(data)?).await,
                "admin.overview" => {
                    let _: serde::de::IgnoredAny = args(data)?;
                    raw(&overview(&shared))
                }
                "admin.disconnect" => disconnect(&shared, args(data)?),
                other => Err(ClientError::unknown_command(format!(
                    "no rpc method {other:?}; admin has admin.api, admin.overview and \
                     admin.disconnect"
                ))),
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiArgs {
    command: String,
    /// The request body as `POST /api/{command}` takes it; kept raw, so published data
    /// passes through exactly as written.
    #[serde(default)]
    body: Option<Box<RawValue>>,
}

/// `admin.api {command, body}`.
async fn api(shared: &Shared, args: ApiArgs) -> Result<Box<RawValue>, ClientError> {
    let body = args.body.as_ref().map_or("{}", |b| b.get());
    let body = if body == "null" { "{}" } else { body };
    let answer = shared.node.api(&args.command, body.as_bytes()).await?;
    tracing::info!(command = %args.command, "apps: an administrator ran an API command");
    RawValue::from_string(answer).map_err(|e| ClientError::internal(e.to_string()))
}

/// `admin.overview {}`.
fn overview(shared: &Shared) -> Value {
    let node = &shared.node;
    let m = node.metrics();
    let mut users = node.users_connections();
    let users_online = users.len();
    if users.len() > USERS_LISTED {
        users.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        users.truncate(USERS_LISTED);
    }
    let writes = m.store_writes.get();
    let write_us = m.store_write_us.get();
    json!({
        "time": crate::now_ms(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": node.uptime().as_secs(),
        "connections": m.connections.get(),
        // An HTTP session without an open stream is polling, or an SSE client between
        // two streams: the hub cannot tell them apart until the next request.
        "transports": {
            "websocket": m.websocket_connections.get(),
            "sse": m.sse_streams.get(),
            "polling": (m.http_sessions.get() - m.sse_streams.get()).max(0),
        },
        "polls_waiting": m.polls_waiting.get(),
        "pending": m.pending.get(),
        "subscriptions": m.subscriptions.get(),
        "channels": node.channels().len(),
        "users_online": users_online,
        "counters": {
            "connections": m.connections_total.get(),
            "commands": m.commands.get(),
            "publications": m.publications.get(),
            "private_messages": m.private_messages.get(),
            "deliveries": m.messages_out.get(),
            "bytes_in": m.bytes_in.get(),
            "bytes_out": m.bytes_out.get(),
            "client_errors": m.client_errors.get(),
            "slow_consumers": m.slow_consumers.get(),
            "api_requests": m.api_requests.get(),
            "store_writes": writes,
            "store_write_us": write_us,
        },
        // Since start; the page shows the mean of the last second from the counters.
        "store_write_ms": if writes == 0 { 0.0 } else { write_us as f64 / writes as f64 / 1000.0 },
        "rss_bytes": rss_bytes(),
        "users": users
            .into_iter()
            .map(|(user, connections)| json!({"user": user, "connections": connections}))
            .collect::<Vec<_>>(),
    })
}

/// The process's resident set size, from `/proc/self/status` (`None` elsewhere).
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_rss(&status)
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectArgs {
    user: String,
    #[serde(default)]
    reconnect: bool,
}

/// `admin.disconnect {user, reconnect?}`.
fn disconnect(shared: &Shared, args: DisconnectArgs) -> Result<Box<RawValue>, ClientError> {
    if args.user.is_empty() {
        return Err(ClientError::bad_request("data: user is empty"));
    }
    let disconnected = shared.node.disconnect(&args.user, args.reconnect);
    tracing::info!(user = %args.user, disconnected, "apps: an administrator disconnected a user");
    raw(&json!({ "disconnected": disconnected }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_from_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t4\n";
        assert_eq!(parse_rss(status), Some(1234 * 1024));
        assert_eq!(parse_rss("Name: x\n"), None);
    }
}
