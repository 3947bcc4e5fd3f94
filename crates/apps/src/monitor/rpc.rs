//! The `monitor.` rpc methods, for `/monitor` and `/logs`; callers need the `admin` role
//! (error 103 otherwise), as for `admin.`.
//!
//! - `monitor.hosts {}`: the registry: `{"time", "stale_after", "hosts": [{host, version,
//!   os, cores, interval_ms, logs, first_seen, last_seen, stale, levels, sample, custom,
//!   custom_time, dropped}]}`, sorted by name.
//! - `monitor.config {}`: `{"stale_after", "hub_interval", "thresholds", "webhook"}`
//!   (seconds; `webhook` says whether one is set, never its URL).
//! - `monitor.token {host, server?}`: a new agent token for `host` (365 days) and the
//!   command that runs the agent with it (`server`: the URL the agent reaches the hub
//!   at, by default the listen address).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use switchboard_server::auth::{agent_claims, valid_host};
use switchboard_server::error::ClientError;
use switchboard_server::rpc::{RpcCall, RpcHandler};

use crate::Shared;
use crate::calls::{args, raw};

/// How long a token from `monitor.token` lasts (what `switchboard token --agent` gives).
const AGENT_TOKEN_DAYS: u64 = 365;

/// The handler registered for `monitor.`.
#[derive(Debug)]
pub(crate) struct MonitorRpc(pub(crate) Arc<Shared>);

impl RpcHandler for MonitorRpc {
    fn call(&self, call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
        let shared = self.0.clone();
        Box::pin(async move {
            if !call.caller.has_role("admin") {
                return Err(ClientError::permission_denied(
                    "monitor methods need the admin role",
                ));
            }
            let data = call.data;
            match call.method.as_str() {
                "monitor.hosts" => {
                    let _: serde::de::IgnoredAny = args(data)?;
                    let monitor = &shared.monitor;
                    raw(&json!({
                        "time": crate::now_ms(),
                        "stale_after": monitor.options.stale_after.as_secs_f64(),
                        "hosts": monitor.hosts(),
                    }))
                }
                "monitor.config" => {
                    let _: serde::de::IgnoredAny = args(data)?;
                    let o = &shared.monitor.options;
                    let thresholds: serde_json::Map<String, serde_json::Value> = o
                        .thresholds
                        .named()
                        .into_iter()
                        .map(|(name, l)| (name.to_owned(), json!({"warn": l.warn, "crit": l.crit})))
                        .collect();
                    raw(&json!({
                        "stale_after": o.stale_after.as_secs_f64(),
                        "hub_interval": o.hub_interval.as_secs_f64(),
                        "thresholds": thresholds,
                        "webhook": o.webhook_url.is_some(),
                    }))
                }
                "monitor.token" => token(&shared, args(data)?),
                other => Err(ClientError::unknown_command(format!(
                    "no rpc method {other:?}; monitor has monitor.hosts, monitor.config and \
                     monitor.token"
                ))),
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenArgs {
    host: String,
    #[serde(default)]
    server: Option<String>,
}

/// `monitor.token {host, server?}`.
fn token(shared: &Shared, args: TokenArgs) -> Result<Box<RawValue>, ClientError> {
    if !valid_host(&args.host) {
        return Err(ClientError::bad_request(
            "data: host must be 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    let server = match args.server {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => url,
        Some(_) => {
            return Err(ClientError::bad_request(
                "data: server must be an http(s) URL",
            ));
        }
        None => format!("http://{}", shared.node.config().listen),
    };
    // Server URLs and hosts never hold a quote or a space to escape: a valid host is
    // [A-Za-z0-9._-], and the URL is checked above only for its scheme, so quote it.
    if server.contains(['\'', ' ', '\n']) {
        return Err(ClientError::bad_request(
            "data: server holds a quote or a space",
        ));
    }
    let exp = crate::now_ms() as u64 / 1000 + AGENT_TOKEN_DAYS * 86_400;
    let claims =
        agent_claims(&args.host, exp).map_err(|e| ClientError::bad_request(e.to_string()))?;
    let token = shared
        .node
        .mint_token(&claims)
        .map_err(|e| ClientError::rpc_failed(e.to_string()))?;
    tracing::info!(host = %args.host, "apps: an administrator minted an agent token");
    // The token goes in the environment, not the arguments, which `ps` shows everyone.
    let command = format!(
        "SWITCHBOARD_AGENT_TOKEN='{token}' switchboard agent --server '{server}' --host {}",
        args.host
    );
    raw(&json!({"host": args.host, "token": token, "expires": exp, "command": command}))
}
