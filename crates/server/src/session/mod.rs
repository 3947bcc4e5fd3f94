//! One client session: the protocol state machine, independent of the transport.
//!
//! The transport hands each command frame to [`Session::handle`]; every reply and push goes
//! out through the connection's [`ClientHandle`], so replies and pushes leave in the order
//! the hub queued them. A session is created unauthenticated, holding a pending slot
//! ([`PendingSlot`]); `connect` must come first, and exchanges it for a connected slot.
//!
//! A session needs only its [`Context`]: the hub, the token verifier, the connection slots
//! and the configuration. Its unit tests (`tests.rs`) build one over a memory store and
//! drive it with command frames, reading what it pushed from its outbox.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;
use serde_json::value::RawValue;
use switchboard_ws::PreparedMessage;
use tokio::sync::Semaphore;

use crate::admission::{Admission, ConnectKey, ConnectedSlot, PendingSlot};
use crate::auth::Identity;
use crate::auth::{Verifier, expires_in, is_expired};
use crate::config::Config;
use crate::error::{ClientError, close};
use crate::hub::Hub;
use crate::outbox::{ClientHandle, Disconnect};
use crate::protocol::{ClientInfo, Command, Push, Request, Sent, reply_err, reply_ok};
use crate::rate::TokenBucket;
use crate::rpc::{Caller, Handlers, RpcCall};
use crate::util::random_id;

/// What a session needs from the server.
#[derive(Debug)]
pub(crate) struct Context {
    /// Channels, users and mailboxes.
    pub hub: Arc<Hub>,
    /// Verifies connection tokens.
    pub verifier: Verifier,
    /// Connection slots.
    pub admission: Arc<Admission>,
    /// The configuration in force (the limits, `allow_anonymous`).
    pub config: Arc<Config>,
    /// The `rpc` command's handlers and proxy.
    pub rpc: Arc<Handlers>,
}

/// The connection slot a session holds (see [`crate::admission`]); held for what its
/// drop releases.
#[derive(Debug)]
#[expect(dead_code, reason = "held for its Drop, never read")]
enum Slot {
    Pending(PendingSlot),
    Connected(ConnectedSlot),
}

/// The state of one client connection.
#[derive(Debug)]
pub(crate) struct Session {
    ctx: Arc<Context>,
    handle: ClientHandle,
    /// The client's address (for the anonymous connection cap).
    peer: IpAddr,
    /// Held for the session's whole life, released with it.
    _slot: Slot,
    /// Who this connection is, once connected.
    info: ClientInfo,
    identity: Option<Identity>,
    connected: bool,
    subscriptions: HashSet<String>,
    /// While the mailbox is sent a page at a time: the last id sent.
    mailbox_cursor: Option<u64>,
    /// Commands per second (`limits.commands_per_second`).
    commands: TokenBucket,
    /// Bytes published per second by an anonymous connection; users with a token share
    /// one quota over their connections, in the hub.
    anonymous_quota: TokenBucket,
    /// Commands refused for the rate in a row.
    strikes: u32,
    /// Publications started and not yet acknowledged, at most [`PUBLISHING`].
    publishing: Arc<Semaphore>,
    /// The connection's rpc calls in flight (made by its first call).
    rpc: Option<RpcChain>,
}

/// A connection's rpc calls in flight, answered one at a time in order: each call's task
/// waits for the one before it to be answered. Nothing of it runs, and little of it stays,
/// while the connection makes no call (a task or a queue per connection would cost every
/// idle connection kilobytes).
#[derive(Debug)]
struct RpcChain {
    /// A permit per call not yet answered, at most [`RPC_IN_FLIGHT`].
    waiting: Arc<Semaphore>,
    /// Resolves when the last call made has been answered.
    last: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Cancelled when the connection ends: its calls are dropped, waiting or not, so a
    /// client that leaves with calls queued leaves no work behind.
    ended: tokio_util::sync::CancellationToken,
}

impl Drop for RpcChain {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

/// Publications of one connection in flight at once; the next waits for a commit.
const PUBLISHING: usize = 256;
/// `rpc` calls of one connection waiting for their answers; one more is refused with
/// error 111.
const RPC_IN_FLIGHT: usize = 16;

impl Session {
    /// A new, unauthenticated session of a client at `peer`, holding `slot` and pushing
    /// through `handle`.
    pub(crate) fn new(
        ctx: Arc<Context>,
        handle: ClientHandle,
        slot: PendingSlot,
        peer: IpAddr,
    ) -> Self {
        let limits = &ctx.config.limits;
        let commands = TokenBucket::new(
            f64::from(limits.commands_per_second),
            f64::from(limits.command_burst),
        );
        let anonymous_quota = TokenBucket::new(
            limits.publish_bytes_per_second as f64,
            limits.publish_bytes_burst as f64,
        );
        Session {
            info: ClientInfo {
                user: String::new(),
                client: random_id(8),
                info: None,
            },
            ctx,
            handle,
            peer,
            _slot: Slot::Pending(slot),
            identity: None,
            connected: false,
            subscriptions: HashSet::new(),
            mailbox_cursor: None,
            commands,
            anonymous_quota,
            strikes: 0,
            publishing: Arc::new(Semaphore::new(PUBLISHING)),
            rpc: None,
        }
    }

    /// Whether `connect` succeeded.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// The token's expiry (seconds since the Unix epoch), if connected with a token.
    pub(crate) fn token_expiry(&self) -> Option<u64> {
        self.identity.as_ref().map(|i| i.exp)
    }

    /// Time until the token expires (a millisecond past it, so a check after waking sees
    /// it expired), at most a year: how long a transport's timer may sleep for it.
    pub(crate) fn expires_in(&self) -> std::time::Duration {
        expires_in(self.token_expiry().unwrap_or(u64::MAX))
    }

    /// Whether the session's token has expired (close 4002).
    pub(crate) fn token_expired(&self) -> bool {
        self.token_expiry().is_some_and(is_expired)
    }

    /// Handles one command frame. Errors are answered and the connection stays; a returned
    /// [`Disconnect`] means the connection must be closed with it (after the replies
    /// already queued).
    pub(crate) async fn handle(&mut self, text: &str) -> Result<(), Disconnect> {
        let metrics = &self.ctx.hub.metrics();
        metrics.commands.inc();
        metrics.bytes_in.add(text.len() as u64);
        if !self.commands.take(1.0) {
            self.strikes += 1;
            if self.strikes >= self.ctx.config.limits.rate_strikes {
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
            Ok(None) => Ok(()),
            Ok(Some(end)) => Err(end),
            // A refused connect ends the connection when retrying cannot help at once: a
            // bad token, or no connection slot (the client backs off, then retries).
            Err(err) if !self.connected && err.code.closes_connect().is_some() => {
                self.error(id, &err);
                Err(Disconnect {
                    code: err.code.closes_connect().unwrap_or(close::UNAUTHORIZED),
                    reason: err.message,
                })
            }
            Err(err) => {
                self.error(id, &err);
                Ok(())
            }
        }
    }

    async fn dispatch(
        &mut self,
        id: Option<u64>,
        command: Command<'_>,
    ) -> Result<Option<Disconnect>, ClientError> {
        if !self.connected && !matches!(command, Command::Connect { .. } | Command::Close) {
            return Err(ClientError::not_connected("send connect first"));
        }
        let hub = &self.ctx.hub.clone();
        match command {
            Command::Connect { token } => self.connect(id, token).await?,
            Command::Subscribe { channel, recover } => {
                self.check_private(channel)?;
                if self.subscriptions.len() >= self.ctx.config.limits.max_subscriptions {
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
            Command::Publish {
                channel,
                data,
                ephemeral,
            } => {
                // A publish scope in the token stands for both checks: an agent
                // publishes to its host's channels and may read none of them.
                let scoped = self
                    .identity
                    .as_ref()
                    .is_some_and(|i| i.may_publish(channel));
                if scoped {
                    // Still a channel of a known namespace (102 before any quota is spent).
                    hub.channel_options(channel)?;
                } else if !self.check_private(channel)?.publish {
                    return Err(ClientError::permission_denied(format!(
                        "clients may not publish to {channel:?}"
                    )));
                }
                let data = self.payload(data)?;
                if ephemeral {
                    let position = hub.publish_ephemeral(channel, data, Some(self.info.clone()))?;
                    self.reply(id, &position);
                    return Ok(None);
                }
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
                before,
            } => {
                self.check_private(channel)?;
                let history = hub.history(channel, limit, since.as_ref(), before).await?;
                self.reply(id, &history);
            }
            Command::Rpc { method, data } => {
                let identity = self.identity.as_ref();
                let call = RpcCall {
                    method: method.to_owned(),
                    data: data.map(|d| d.to_owned()),
                    caller: Caller {
                        user: self.info.user.clone(),
                        client: self.info.client.clone(),
                        info: self.info.info.clone(),
                        roles: identity.map(|i| i.roles.clone()).unwrap_or_default(),
                    },
                };
                // Answered one call at a time in the order they came (two posts keep
                // their order), each in a task of its own, while this connection goes on:
                // a slow handler or backend holds up neither its pushes nor its commands.
                let chain = self.rpc.get_or_insert_with(|| RpcChain {
                    waiting: Arc::new(Semaphore::new(RPC_IN_FLIGHT)),
                    last: None,
                    ended: tokio_util::sync::CancellationToken::new(),
                });
                let permit = chain.waiting.clone().try_acquire_owned().map_err(|_| {
                    ClientError::too_many_requests(format!(
                        "{RPC_IN_FLIGHT} rpc calls are already waiting for their answers"
                    ))
                })?;
                let (done, answered) = tokio::sync::oneshot::channel();
                let before = chain.last.replace(answered);
                let (rpc, handle) = (self.ctx.rpc.clone(), self.handle.clone());
                let (timeout, metrics) = (self.ctx.config.rpc.timeout, hub.metrics().clone());
                let ended = chain.ended.clone();
                tokio::spawn(async move {
                    let answer = async {
                        if let Some(before) = before {
                            // Answered, or its task is gone: either way, this one's turn.
                            let _ = before.await;
                        }
                        match rpc.call(call, timeout).await {
                            Ok(result) => reply_ok(id, &result),
                            Err(err) => {
                                metrics.client_errors.inc();
                                reply_err(id, &err)
                            }
                        }
                    };
                    tokio::select! {
                        // First: the one before ends when cancelled too, and this call
                        // must not start then.
                        biased;
                        () = ended.cancelled() => return,
                        reply = answer => {
                            handle.push(PreparedMessage::text(&reply));
                        }
                    }
                    drop(permit);
                    let _ = done.send(());
                });
            }
            Command::Presence { channel } => {
                if !self.subscriptions.contains(channel) {
                    return Err(ClientError::not_subscribed(format!(
                        "subscribe to {channel:?} to see its presence"
                    )));
                }
                self.reply(id, &hub.presence(channel).await?);
            }
            Command::Send { user, data } => {
                if self.info.user.is_empty() {
                    return Err(ClientError::permission_denied(
                        "anonymous users cannot send",
                    ));
                }
                let data = self.payload(data)?;
                let (status, message) = hub.send(&user, data, Some(self.info.clone())).await?;
                self.reply(
                    id,
                    &Sent {
                        status,
                        mailbox: message,
                    },
                );
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
            Command::Refresh { token } => self.refresh(id, &token)?,
            Command::Close => {
                self.reply(id, &json!({}));
                return Ok(Some(Disconnect {
                    code: close::NORMAL,
                    reason: "closed by the client".into(),
                }));
            }
        }
        Ok(None)
    }

    async fn connect(&mut self, id: Option<u64>, token: Option<String>) -> Result<(), ClientError> {
        if self.connected {
            return Err(ClientError::already_connected("already connected"));
        }
        let identity = match token {
            Some(token) => Some(self.ctx.verifier.verify(&token)?),
            None if self.ctx.config.allow_anonymous => None,
            None => return Err(ClientError::unauthorized("a token is required")),
        };
        let key = match &identity {
            Some(identity) => ConnectKey::User(identity.user.clone()),
            None => ConnectKey::Anonymous(self.peer),
        };
        let slot = self.ctx.admission.connect(key)?;
        if let Some(identity) = &identity {
            self.info.user = identity.user.clone();
            self.info.info = identity.info.clone();
        }
        let ping = self.ctx.config.limits.ping_interval.as_secs();
        let expires = identity.as_ref().map(|i| i.exp);
        let (client, user) = (self.info.client.clone(), self.info.user.clone());
        // Registered with the user (anonymous ones under "") so that the server API
        // reaches every connection; mailbox messages follow the reply. If the mailbox
        // cannot be read, nothing was sent and the error is the one reply.
        let connected = self
            .ctx
            .hub
            .connect_user(&self.info.user, &self.handle, |mailbox_epoch| {
                reply_ok(
                    id,
                    &json!({
                        "client": client,
                        "user": user,
                        "version": env!("CARGO_PKG_VERSION"),
                        "ping": ping,
                        "expires": expires,
                        "mailbox_epoch": mailbox_epoch,
                    }),
                )
            })
            .await;
        match connected {
            Ok(cursor) => {
                self.mailbox_cursor = cursor;
                self.identity = identity;
                self._slot = Slot::Connected(slot);
                self.connected = true;
                Ok(())
            }
            Err(err) => {
                self.info.user.clear();
                self.info.info = None;
                Err(err)
            }
        }
    }

    /// `refresh`: a new token for the same user. Its `channels` claim applies at once:
    /// subscriptions to private channels it no longer lists end, with an `unsubscribe`
    /// push each. The user `info` shown to others stays the one from `connect`.
    fn refresh(&mut self, id: Option<u64>, token: &str) -> Result<(), ClientError> {
        let identity = self.ctx.verifier.verify(token)?;
        if identity.user != self.info.user {
            return Err(ClientError::unauthorized(
                "the new token is for another user",
            ));
        }
        self.reply(id, &json!({ "expires": identity.exp }));
        let revoked: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|channel| {
                self.ctx
                    .hub
                    .channel_options(channel)
                    .is_ok_and(|opts| !may_read(Some(&identity), opts, channel))
            })
            .cloned()
            .collect();
        self.identity = Some(identity);
        for channel in revoked {
            self.subscriptions.remove(&channel);
            self.ctx
                .hub
                .unsubscribe(&channel, self.handle.id, &self.info);
            let push = Push::Unsubscribe {
                channel: &channel,
                reason: "the refreshed token no longer allows this private channel",
            };
            self.handle.push(PreparedMessage::text(&push.to_json()));
        }
        Ok(())
    }

    /// The channel's options, after checking that a private channel is in the token's
    /// `channels` claim or that the token has one of the namespace's `roles` (for
    /// subscribe, publish and history alike).
    fn check_private(
        &self,
        channel: &str,
    ) -> Result<&crate::config::NamespaceOptions, ClientError> {
        let opts = self.ctx.hub.channel_options(channel)?;
        if !may_read(self.identity.as_ref(), opts, channel) {
            return Err(ClientError::permission_denied(format!(
                "{channel:?} is private and not in the token's channels"
            )));
        }
        Ok(opts)
    }

    /// Checks a payload's size and the publishing quota, and keeps it as raw JSON.
    fn payload(&mut self, data: &RawValue) -> Result<Arc<RawValue>, ClientError> {
        let limit = self.ctx.config.limits.max_payload_size;
        let len = data.get().len();
        if len > limit {
            return Err(ClientError::payload_too_large(format!(
                "data is {len} bytes; the limit is {limit}"
            )));
        }
        if self.info.user.is_empty() {
            if !self.anonymous_quota.take(len as f64) {
                self.ctx.hub.metrics().quota_refusals.inc();
                return Err(ClientError::too_many_requests(format!(
                    "publishing quota spent ({} bytes/s); slow down",
                    self.ctx.config.limits.publish_bytes_per_second
                )));
            }
        } else {
            self.ctx.hub.charge(&self.info.user, len)?;
        }
        Ok(Arc::from(data.to_owned()))
    }

    fn reply<T: serde::Serialize>(&self, id: Option<u64>, result: &T) {
        self.handle
            .push(PreparedMessage::text(&reply_ok(id, result)));
    }

    fn error(&self, id: Option<u64>, error: &ClientError) {
        self.ctx.hub.metrics().client_errors.inc();
        self.handle
            .push(PreparedMessage::text(&reply_err(id, error)));
    }
}

impl Drop for Session {
    /// Leaves every channel (announcing leaves) and the user's connection list.
    fn drop(&mut self) {
        for channel in self.subscriptions.drain() {
            self.ctx
                .hub
                .unsubscribe(&channel, self.handle.id, &self.info);
        }
        if self.connected {
            self.ctx
                .hub
                .disconnect_user(&self.info.user, self.handle.id);
        }
    }
}

/// Whether a token (`None`: anonymous) may read `channel`: any channel of a public
/// namespace; a private one when the `channels` claim names it or the token has one of
/// the namespace's `roles`.
fn may_read(
    identity: Option<&crate::auth::Identity>,
    opts: &crate::config::NamespaceOptions,
    channel: &str,
) -> bool {
    !opts.private
        || identity.is_some_and(|i| {
            i.channels.iter().any(|c| c == channel)
                || i.roles.iter().any(|r| opts.roles.contains(r))
        })
}

#[cfg(test)]
mod tests;
