//! [`Node`]: the hub seen from the server's own extensions (the built-in apps, a user's
//! Rust code embedding the server). It offers what the server API offers a backend over
//! HTTP (publish, send, presence, history, channels, disconnect), in process, plus the
//! few things an extension serving its own pages needs (minting tokens, the client's
//! address, the Origin rule).

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, header, request::Parts};
use serde_json::value::RawValue;

use crate::auth::Claims;
use crate::config::{Config, TokenAlgorithm};
use crate::error::{ClientError, Error, Result, close};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::{ClientInfo, History, Presence, Sent, StreamPosition};

/// What a publication from an extension carries besides its data.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Shown to subscribers as the publisher (e.g. the user an `rpc` call came from);
    /// `None` as for the server API.
    pub info: Option<ClientInfo>,
    /// Delivered to the subscribers of the moment only: not stored, no offset.
    pub ephemeral: bool,
}

/// Which history to read (see the protocol's `history`).
#[derive(Debug, Clone, Default)]
pub struct HistoryRequest {
    /// Most publications returned (at most the namespace's `history_size`).
    pub limit: Option<usize>,
    /// Only what followed this position.
    pub since: Option<StreamPosition>,
    /// Only offsets below this one, the newest first chosen (paging backwards).
    pub before: Option<u64>,
}

/// A handle on the running hub, cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Arc<Config>,
    /// The HS256 token secret in force.
    pub(crate) token_secret: Arc<str>,
    /// The server API's key in force.
    pub(crate) api_key: Arc<str>,
}

// By hand: the derived one would print the token secret, the API key and the whole hub.
impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

impl Node {
    /// Publishes `data` to `channel`; returns once it is committed (or, ephemeral, once
    /// it is queued to the subscribers), with its position (offset 0 when ephemeral).
    pub async fn publish(
        &self,
        channel: &str,
        data: Box<RawValue>,
        options: PublishOptions,
    ) -> Result<StreamPosition, ClientError> {
        let data = Arc::from(data);
        if options.ephemeral {
            self.hub.publish_ephemeral(channel, data, options.info)
        } else {
            self.hub.publish(channel, data, options.info).await
        }
    }

    /// Sends a private message to `user`: delivered live, or kept in their mailbox while
    /// they are offline. `from` is shown as the sender (`None`: from the server).
    pub async fn send(
        &self,
        user: &str,
        data: Box<RawValue>,
        from: Option<ClientInfo>,
    ) -> Result<Sent, ClientError> {
        let (status, mailbox) = self.hub.send(user, Arc::from(data), from).await?;
        Ok(Sent { status, mailbox })
    }

    /// Who is subscribed to `channel` (its namespace must keep presence).
    pub async fn presence(&self, channel: &str) -> Result<Presence, ClientError> {
        self.hub.presence(channel).await
    }

    /// A channel's history.
    pub async fn history(
        &self,
        channel: &str,
        request: HistoryRequest,
    ) -> Result<History, ClientError> {
        if request.since.is_some() && request.before.is_some() {
            return Err(ClientError::bad_request(
                "history takes since or before, not both",
            ));
        }
        self.hub
            .history(
                channel,
                request.limit,
                request.since.as_ref(),
                request.before,
            )
            .await
    }

    /// Channels with subscribers, and how many each has.
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.hub.channels()
    }

    /// Users with at least one connected connection.
    pub fn users_online(&self) -> usize {
        self.hub.users_online()
    }

    /// Whether `user` has a connected connection.
    pub fn is_online(&self, user: &str) -> bool {
        self.hub.is_online(user)
    }

    /// Closes every connection of `user`: with 4008 (come back) when `reconnect`, else
    /// 4003. Returns how many there were.
    pub fn disconnect(&self, user: &str, reconnect: bool) -> usize {
        let (code, reason) = if reconnect {
            (close::RECONNECT, "disconnected by the server; reconnect")
        } else {
            (close::DISCONNECTED, "disconnected by the server")
        };
        self.hub.disconnect(user, code, reason)
    }

    /// Runs a server API command in process: what `POST /api/{command}` with `body`
    /// answers (JSON text), without the key (the caller checked who asks). Errors as the
    /// API's: 104 for an unknown command, 107 for a body it cannot take.
    pub async fn api(&self, command: &str, body: &[u8]) -> Result<String, ClientError> {
        crate::http::api::dispatch(&self.hub, &self.config, command, body).await
    }

    /// The users with a connected connection and how many each has, sorted by id
    /// (anonymous connections not counted).
    pub fn users_connections(&self) -> Vec<(String, usize)> {
        self.hub.users_connections()
    }

    /// How long the node has been running.
    pub fn uptime(&self) -> std::time::Duration {
        self.hub.uptime()
    }

    /// This node's id in its group (the Redis engine), random at each start; `None` on a
    /// node alone.
    pub fn group_id(&self) -> Option<String> {
        self.hub.cluster().map(|c| c.node_id().to_owned())
    }

    /// Mints a connection token this server accepts: HS256 with its token secret. A
    /// server configured for RS256 or ES256 holds only the public key: an error then.
    pub fn mint_token(&self, claims: &Claims) -> Result<String> {
        if self.config.auth.token_algorithm != TokenAlgorithm::HS256 {
            return Err(Error::Key(format!(
                "this server verifies {:?} tokens, whose private key it does not hold",
                self.config.auth.token_algorithm
            )));
        }
        crate::auth::mint(&self.token_secret, claims)
    }

    /// Whether `given` is the server API's key (compared in constant time), for an
    /// extension's own endpoints that the API key opens. The key itself never leaves the
    /// server.
    pub fn api_key_matches(&self, given: &str) -> bool {
        crate::auth::api_key_matches(&self.api_key, given)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.hub.metrics()
    }

    /// The client's address: the TCP peer, or what `X-Forwarded-For` says when the peer
    /// is one of `trusted_proxies`.
    pub fn client_ip(&self, parts: &Parts) -> IpAddr {
        crate::net::client_ip(
            &parts.extensions,
            &parts.headers,
            &self.config.trusted_proxies,
        )
    }

    /// Whether a request's `Origin` (if it has one) is the server's own (its `Host`) or
    /// one listed in `allowed_origins`. Stricter than the rule for `/ws`: `*` does not
    /// count, since this guards requests that carry a session cookie (cross-site request
    /// forgery), not only token-authenticated ones.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let listed: Vec<String> = self
            .config
            .allowed_origins
            .iter()
            .filter(|o| o.as_str() != "*")
            .cloned()
            .collect();
        crate::transport::origin::origin_allowed(Some(origin), host, &listed)
    }
}
