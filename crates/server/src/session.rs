//! One client session: the protocol state machine, independent of the transport.
//!
//! The transport hands each command frame to [`Session::handle`]; every reply and push goes
//! out through the connection's [`ClientHandle`], so replies and pushes leave in the order
//! the hub queued them. A session is created unauthenticated; `connect` must come first.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use serde_json::value::RawValue;
use switchboard_ws::PreparedMessage;
use tokio::sync::Semaphore;

use crate::auth::Identity;
use crate::error::{ClientError, close};
use crate::hub::random_id;
use crate::outbox::{ClientHandle, Disconnect};
use crate::state::AppState;
use crate::wire::{ClientInfo, Command, Request, reply_err, reply_ok};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        Bucket {
            tokens: f64::from(burst),
            last: Instant::now(),
            rate: f64::from(rate),
            burst: f64::from(burst),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The state of one client connection.
#[derive(Debug)]
pub struct Session {
    state: Arc<AppState>,
    handle: ClientHandle,
    /// Who this connection is, once connected.
    info: ClientInfo,
    identity: Option<Identity>,
    connected: bool,
    subscriptions: HashSet<String>,
    /// While the mailbox is sent a page at a time: the last id sent.
    mailbox_cursor: Option<u64>,
    bucket: Bucket,
    /// Commands refused for the rate in a row.
    strikes: u32,
    /// Publications started and not yet acknowledged, at most [`PUBLISHING`].
    publishing: Arc<Semaphore>,
}

/// Publications of one connection in flight at once; the next waits for a commit.
const PUBLISHING: usize = 256;

impl Session {
    /// A new, unauthenticated session pushing through `handle`.
    pub fn new(state: Arc<AppState>, handle: ClientHandle) -> Self {
        let limits = &state.config.limits;
        let bucket = Bucket::new(limits.commands_per_second, limits.command_burst);
        Session {
            info: ClientInfo {
                user: String::new(),
                client: random_id(8),
                info: None,
            },
            state,
            handle,
            identity: None,
            connected: false,
            subscriptions: HashSet::new(),
            mailbox_cursor: None,
            bucket,
            strikes: 0,
            publishing: Arc::new(Semaphore::new(PUBLISHING)),
        }
    }

    /// Whether `connect` succeeded.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The token's expiry (seconds since the Unix epoch), if connected with a token.
    pub fn token_expiry(&self) -> Option<u64> {
        self.identity.as_ref().map(|i| i.exp)
    }

    /// Handles one command frame. Errors are answered and the connection stays; a returned
    /// [`Disconnect`] means the connection must be closed with it.
    pub async fn handle(&mut self, text: &str) -> Result<(), Disconnect> {
        let metrics = &self.state.hub.metrics();
        metrics.commands.inc();
        metrics.bytes_in.add(text.len() as u64);
        if !self.bucket.take() {
            self.strikes += 1;
            if self.strikes >= self.state.config.limits.rate_strikes {
                return Err(Disconnect {
                    code: close::RATE_LIMIT,
                    reason: "too many commands".into(),
                });
            }
            let id = Request::id_of(text);
            self.error(
                id,
                &ClientError::too_many_requests("too many commands; slow down"),
            );
            return Ok(());
        }
        self.strikes = 0;
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err(err) => {
                self.error(Request::id_of(text), &err);
                return Ok(());
            }
        };
        let id = request.id;
        let result = match request.command() {
            Ok(command) => self.dispatch(id, command).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => Ok(()),
            // A bad token on connect ends the connection: retrying it cannot work.
            Err(err) if !self.connected && matches!(err.code, 101 | 109) => {
                self.error(id, &err);
                Err(Disconnect {
                    code: if err.code == 109 {
                        close::TOKEN_EXPIRED
                    } else {
                        close::UNAUTHORIZED
                    },
                    reason: err.message,
                })
            }
            Err(err) => {
                self.error(id, &err);
                Ok(())
            }
        }
    }

    async fn dispatch(&mut self, id: Option<u64>, command: Command<'_>) -> Result<(), ClientError> {
        if !self.connected && !matches!(command, Command::Connect { .. }) {
            return Err(ClientError::not_connected("send connect first"));
        }
        let hub = &self.state.hub;
        match command {
            Command::Connect { token } => self.connect(id, token).await?,
            Command::Subscribe { channel, recover } => {
                self.check_private(channel)?;
                if self.subscriptions.len() >= self.state.config.limits.max_subscriptions {
                    return Err(ClientError::limit_exceeded("too many subscriptions"));
                }
                hub.subscribe(
                    channel,
                    &self.handle,
                    &self.info,
                    recover.as_ref(),
                    |result| reply_ok(id, result),
                )
                .await?;
                self.subscriptions.insert(channel.to_owned());
            }
            Command::Unsubscribe { channel } => {
                if !self.subscriptions.remove(channel) {
                    return Err(ClientError::not_subscribed(format!(
                        "not subscribed to {channel:?}"
                    )));
                }
                hub.unsubscribe(channel, self.handle.id, &self.info);
                self.reply(id, &json!({}));
            }
            Command::Publish { channel, data } => {
                let opts = self.check_private(channel)?;
                if !opts.publish {
                    return Err(ClientError::permission_denied(format!(
                        "clients may not publish to {channel:?}"
                    )));
                }
                let data = self.payload(data)?;
                // Acknowledged when committed; meanwhile the next commands go on, so a
                // publisher is not limited to one commit per round trip.
                let permit = self
                    .publishing
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ClientError::internal("publishing stopped"))?;
                let (handle, metrics) = (self.handle.clone(), hub.metrics().clone());
                hub.publish_then(channel, data, Some(self.info.clone()), move |result| {
                    let reply = match result {
                        Ok(position) => reply_ok(id, &position),
                        Err(err) => {
                            metrics.client_errors.inc();
                            reply_err(id, &err)
                        }
                    };
                    handle.push(PreparedMessage::text(&reply));
                    drop(permit);
                })
                .await?;
            }
            Command::History {
                channel,
                limit,
                since,
            } => {
                self.check_private(channel)?;
                let history = hub.history(channel, limit, since.as_ref()).await?;
                self.reply(id, &history);
            }
            Command::Presence { channel } => {
                if !self.subscriptions.contains(channel) {
                    return Err(ClientError::not_subscribed(format!(
                        "subscribe to {channel:?} to see its presence"
                    )));
                }
                self.reply(id, &hub.presence(channel)?);
            }
            Command::Send { user, data } => {
                if self.info.user.is_empty() {
                    return Err(ClientError::permission_denied(
                        "anonymous users cannot send",
                    ));
                }
                let data = self.payload(data)?;
                let (status, message) = hub.send(&user, data, Some(self.info.clone())).await?;
                self.reply(id, &json!({ "status": status, "mailbox": message }));
            }
            Command::Ack { mailbox } => {
                hub.ack(&self.info.user, mailbox).await?;
                self.reply(id, &json!({}));
                if let Some(after) = self.mailbox_cursor {
                    self.mailbox_cursor = hub
                        .mailbox_page(&self.info.user, &self.handle, after)
                        .await?;
                }
            }
            Command::Ping => self.reply(id, &json!({})),
            Command::Refresh { token } => {
                let identity = self.state.verifier.verify(&token)?;
                if identity.user != self.info.user {
                    return Err(ClientError::unauthorized(
                        "the new token is for another user",
                    ));
                }
                self.reply(id, &json!({ "expires": identity.exp }));
                // Later publications and messages carry the refreshed info.
                self.info.info = identity.info.clone();
                self.identity = Some(identity);
            }
        }
        Ok(())
    }

    async fn connect(&mut self, id: Option<u64>, token: Option<String>) -> Result<(), ClientError> {
        if self.connected {
            return Err(ClientError::already_connected("already connected"));
        }
        match token {
            Some(token) => {
                let identity = self.state.verifier.verify(&token)?;
                self.info.user = identity.user.clone();
                self.info.info = identity.info.clone();
                self.identity = Some(identity);
            }
            None if self.state.config.allow_anonymous => {}
            None => return Err(ClientError::unauthorized("a token is required")),
        }
        let limits = &self.state.config.limits;
        let reply = reply_ok(
            id,
            &json!({
                "client": self.info.client,
                "user": self.info.user,
                "version": env!("CARGO_PKG_VERSION"),
                "ping": limits.ping_interval.as_secs(),
                "expires": self.identity.as_ref().map(|i| i.exp),
            }),
        );
        // Registered with the user (anonymous ones under "") so that shutdown and the
        // server API reach every connection; mailbox messages follow the reply.
        self.mailbox_cursor = self
            .state
            .hub
            .connect_user(&self.info.user, &self.handle, reply)
            .await?;
        self.connected = true;
        Ok(())
    }

    /// The channel's options, after checking that a private channel is in the token's
    /// `channels` claim (for subscribe, publish and history alike).
    fn check_private(
        &self,
        channel: &str,
    ) -> Result<&crate::config::NamespaceOptions, ClientError> {
        let opts = self.state.hub.channel_options(channel)?;
        let allowed = !opts.private
            || self
                .identity
                .as_ref()
                .is_some_and(|i| i.channels.iter().any(|c| c == channel));
        if !allowed {
            return Err(ClientError::permission_denied(format!(
                "{channel:?} is private and not in the token's channels"
            )));
        }
        Ok(opts)
    }

    /// Checks a payload's size and keeps it as raw JSON.
    fn payload(&self, data: &RawValue) -> Result<Arc<RawValue>, ClientError> {
        let limit = self.state.config.limits.max_payload_size;
        if data.get().len() > limit {
            return Err(ClientError::payload_too_large(format!(
                "data is {} bytes; the limit is {limit}",
                data.get().len()
            )));
        }
        Ok(Arc::from(data.to_owned()))
    }

    fn reply<T: serde::Serialize>(&self, id: Option<u64>, result: &T) {
        self.handle
            .push(PreparedMessage::text(&reply_ok(id, result)));
    }

    fn error(&self, id: Option<u64>, error: &ClientError) {
        self.state.hub.metrics().client_errors.inc();
        self.handle
            .push(PreparedMessage::text(&reply_err(id, error)));
    }
}

impl Drop for Session {
    /// Leaves every channel (announcing leaves) and the user's connection list.
    fn drop(&mut self) {
        for channel in self.subscriptions.drain() {
            self.state
                .hub
                .unsubscribe(&channel, self.handle.id, &self.info);
        }
        if self.connected {
            self.state
                .hub
                .disconnect_user(&self.info.user, self.handle.id);
        }
    }
}
