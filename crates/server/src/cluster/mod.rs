//! Several nodes as one hub, over Redis (`engine = "redis"`).
//!
//! The hub stays what it is on one node (channels with their subscribers, history cache
//! and deliverer), and the [`Cluster`] is its link to the group:
//! - **publishing** goes to Redis, where one script takes the channel's next offset,
//!   appends to its history and publishes it on the channel's topic
//!   ([`RedisEngine::publish`]); publications are sent in batches on one multiplexed
//!   connection, in the order they were made;
//! - **delivery**: each node subscribes (one pub/sub connection, [`pubsub`]) to the topics
//!   of the channels it has subscribers for, and hands every event to the hub in the order
//!   Redis sent it ([`Events`]); the hub releases publications in offset order and fills
//!   a gap from the history;
//! - **presence** and join/leave live in Redis ([`presence`]), refreshed by each node
//!   for its own subscribers, and removed by the surviving nodes for a node that stopped
//!   announcing itself ([`nodes`]);
//! - the **server API** on one node answers for the group ([`control`]), and **HTTP
//!   sessions** answer on any node, their requests forwarded to the node that has them
//!   ([`forward`]).

mod control;
mod forward;
mod nodes;
pub(crate) mod payload;
mod presence;
mod pubsub;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tracing::warn;

use crate::engine::redis::RedisEngine;
use crate::engine::{MailboxLimits, Retention, StoreError};
use crate::protocol::{ClientInfo, Presence, PrivateMessage, Publication};
use crate::util::random_id;
pub(crate) use control::Ask;
pub(crate) use forward::{Forwarded, Returned, SessionHost};
pub(crate) use payload::ChannelEvent;
use presence::{Change, ChannelKeys};

/// Publications sent to Redis in one batch at most.
const BATCH: usize = 256;

/// What the group tells the hub; the hub implements it (the cluster never sees the hub).
pub(crate) trait Events: Send + Sync + 'static {
    /// An event of a channel's topic, in the order Redis sent it.
    fn channel_event(&self, channel: &str, event: ChannelEvent);
    /// A stored publication of an observed namespace (see
    /// [`Cluster::observe`]), from any node, for the extensions observing it.
    fn observed(
        &self,
        channel: &str,
        offset: u64,
        time: u64,
        data: &Arc<serde_json::value::RawValue>,
    );
    /// A request of another node (the server API called there acts on the group): the
    /// answer, from this node alone.
    fn answer(&self, ask: &Ask) -> serde_json::Value;
    /// A private message for a user this node has connections of.
    fn user_message(&self, user: &str, message: Arc<PrivateMessage>);
    /// The pub/sub connection came back: events may have been missed meanwhile.
    fn resubscribed(&self);
    /// The pub/sub connection was lost, or an attempt to make it failed.
    fn lost(&self);
}

/// What `done` of [`Cluster::publish`] gets: the epoch and offset, or why not.
pub(crate) type Published = Result<(String, u64), StoreError>;

struct Job {
    channel: String,
    work: Work,
    /// Told the outcome of a `Work::Store`.
    done: Option<Box<dyn FnOnce(Published) + Send>>,
}

enum Work {
    /// A publication to store and send.
    Store {
        publication: Publication,
        retention: Option<Retention>,
    },
    /// A payload to send as it is on a topic.
    Raw { topic: String, payload: String },
    /// A presence change.
    Presence {
        info: ClientInfo,
        join_leave: bool,
        add: bool,
    },
}

/// The pub/sub connection's messages, sorted by topic.
struct Dispatch {
    channel_topics: String,
    user_topics: String,
    request_topic: String,
    reply_topic: String,
    control: Arc<control::Control>,
    exchanges: Arc<forward::Exchanges>,
    sessions: Arc<std::sync::OnceLock<Arc<dyn SessionHost>>>,
    jobs: mpsc::UnboundedSender<Job>,
    events: Arc<dyn Events>,
}

impl pubsub::Handler for Dispatch {
    fn message(&self, topic: &str, payload: &[u8], pattern: bool) {
        if topic == self.request_topic {
            if let Some((ask, reply)) = self.control.incoming(payload) {
                let (topic, payload) = reply(self.events.answer(&ask));
                let work = Work::Raw { topic, payload };
                let _ = self.jobs.send(Job {
                    channel: String::new(),
                    work,
                    done: None,
                });
            }
            return;
        }
        if topic == self.reply_topic {
            match serde_json::from_slice::<forward::Inbox>(payload) {
                Ok(forward::Inbox::Answer { id, answer }) => self.control.answered(id, answer),
                Ok(forward::Inbox::Returned { id, returned }) => {
                    self.exchanges.returned(id, returned);
                }
                Ok(forward::Inbox::Forward { from, id, request }) => {
                    if let Some(host) = self.sessions.get() {
                        host.forwarded(from, id, request);
                    }
                }
                Err(_) => {}
            }
            return;
        }
        if let Some(user) = topic.strip_prefix(&self.user_topics) {
            if let Some(message) = payload::decode_message(payload) {
                self.events.user_message(user, Arc::new(message));
            }
            return;
        }
        let Some(channel) = topic.strip_prefix(&self.channel_topics) else {
            return;
        };
        match payload::decode(payload) {
            Some(ChannelEvent::Publication { publication, .. }) if pattern => {
                let Publication {
                    offset, time, data, ..
                } = publication;
                self.events.observed(channel, offset, time, &data);
            }
            Some(_) if pattern => {}
            Some(event) => self.events.channel_event(channel, event),
            None => {}
        }
    }

    fn resubscribed(&self) {
        self.events.resubscribed();
    }

    fn lost(&self, _why: &str) {
        self.events.lost();
    }
}

/// This node's membership of the group (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Cluster {
    engine: Arc<RedisEngine>,
    /// This node's id in the group (random at each start).
    node: String,
    presence_ttl: Duration,
    pubsub: Arc<pubsub::PubSub>,
    scripts: presence::Scripts,
    node_keys: nodes::NodeKeys,
    node_index: String,
    control: Arc<control::Control>,
    exchanges: Arc<forward::Exchanges>,
    sessions: Arc<std::sync::OnceLock<Arc<dyn SessionHost>>>,
    /// The live nodes as of the last heartbeat (and those found live since).
    live: std::sync::Mutex<std::collections::HashSet<String>>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("channel", &self.channel)
            .finish()
    }
}

impl Cluster {
    /// Joins the group through `engine`; `events` receives what other nodes (and this one)
    /// publish on the topics this node watches. Call within a Tokio runtime.
    pub(crate) fn start(
        engine: Arc<RedisEngine>,
        presence_ttl: Duration,
        events: Arc<dyn Events>,
    ) -> Arc<Cluster> {
        let prefix = engine.settings().prefix.clone();
        let channel_topics = engine.keys().topic("");
        let user_topics = engine.keys().user_topic("");
        let node = random_id(8);
        let control = Arc::new(control::Control::new(&prefix, &node));
        let (request_topic, reply_topic) = (control.request_topic(), control.reply_topic(&node));
        let (jobs, queue) = mpsc::unbounded_channel();
        let exchanges = Arc::new(forward::Exchanges::default());
        let sessions = Arc::new(std::sync::OnceLock::new());
        let pubsub = pubsub::PubSub::start(
            engine.settings().clone(),
            vec![request_topic.clone(), reply_topic.clone()],
            Arc::new(Dispatch {
                channel_topics,
                user_topics,
                request_topic,
                reply_topic,
                control: control.clone(),
                exchanges: exchanges.clone(),
                sessions: sessions.clone(),
                jobs: jobs.clone(),
                events,
            }),
        );
        let node_keys = nodes::NodeKeys::new(&prefix);
        let cluster = Arc::new(Cluster {
            node_index: node_keys.index(&node),
            node_keys,
            node,
            presence_ttl,
            pubsub,
            scripts: presence::Scripts::default(),
            control,
            exchanges,
            sessions,
            live: std::sync::Mutex::default(),
            engine,
            jobs,
        });
        tokio::spawn(publisher(Arc::downgrade(&cluster), queue));
        cluster
    }

    /// Receives every publication of these namespaces, from any node, for the extensions
    /// observing them ([`Events::observed`]).
    pub(crate) fn observe(&self, namespaces: &[String]) {
        let topics = self.engine.keys().topic("");
        let patterns: Vec<String> = namespaces
            .iter()
            .map(|namespace| {
                if namespace.is_empty() {
                    // The namespace "" holds the names without a colon.
                    format!("{topics}[^:]*")
                } else {
                    format!("{topics}{namespace}:*")
                }
            })
            .collect();
        self.pubsub.add_patterns(&patterns);
    }

    /// This node's id in the group.
    pub(crate) fn node_id(&self) -> &str {
        &self.node
    }

    /// Whether the pub/sub connection is up.
    pub(crate) fn connected(&self) -> bool {
        self.pubsub.connected()
    }

    /// Topics this node is subscribed to.
    pub(crate) fn topics(&self) -> usize {
        self.pubsub.wanted()
    }

    /// Starts receiving a channel's events; returns once Redis confirmed, so everything
    /// published after it reaches this node. Paired with [`Cluster::unwatch`].
    pub(crate) async fn watch(&self, channel: &str) -> Result<(), StoreError> {
        self.pubsub.watch(&self.engine.keys().topic(channel)).await
    }

    /// Stops receiving a channel's events (when the last hold is released).
    pub(crate) fn unwatch(&self, channel: &str) {
        self.pubsub.unwatch(&self.engine.keys().topic(channel));
    }

    /// Gives forwarded session requests to `host` (the first call wins).
    pub(crate) fn set_session_host(&self, host: Arc<dyn SessionHost>) {
        let _ = self.sessions.set(host);
    }

    /// An HTTP session id for this node: its id, a dot, then `random`.
    pub(crate) fn session_id(&self, random: &str) -> String {
        format!("{}.{random}", self.node)
    }

    /// The node that owns an HTTP session, when it is another one.
    pub(crate) fn owner_of<'a>(&self, sid: &'a str) -> Option<&'a str> {
        let (node, _) = sid.split_once('.')?;
        let valid =
            !node.is_empty() && node.len() <= 32 && node.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && node != self.node).then_some(node)
    }

    /// Whether `node` is a live member of the group (from the last heartbeat's list, else
    /// asked of Redis: a node that just started may not be in the list yet).
    pub(crate) async fn is_live(&self, node: &str) -> bool {
        if self.live_nodes().contains(node) {
            return true;
        }
        let score: Option<u64> = redis::cmd("ZSCORE")
            .arg(&self.node_keys.nodes)
            .arg(node)
            .query_async(&mut self.engine.connection())
            .await
            .unwrap_or(None);
        let live = score.is_some_and(|expires| expires >= crate::protocol::now_ms());
        if live {
            self.live_nodes().insert(node.to_owned());
        }
        live
    }

    fn live_nodes(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a request for a session to its node; what comes back arrives on the
    /// receiver, until [`Cluster::end_exchange`].
    pub(crate) fn forward(
        &self,
        owner: &str,
        request: Forwarded,
    ) -> (u64, mpsc::UnboundedReceiver<Returned>) {
        let (id, rx) = self.exchanges.open();
        self.forward_more(owner, id, request);
        (id, rx)
    }

    /// Sends another request within an exchange (a stream's end).
    pub(crate) fn forward_more(&self, owner: &str, id: u64, request: Forwarded) {
        let message = forward::Inbox::Forward {
            from: self.node.clone(),
            id,
            request,
        };
        self.send_inbox(owner, message.to_json());
    }

    /// Forgets an exchange this node started.
    pub(crate) fn end_exchange(&self, id: u64) {
        self.exchanges.close(id);
    }

    /// Sends what a forwarded request produced back to the node that asked.
    pub(crate) fn send_back(&self, to: &str, id: u64, returned: Returned) {
        self.send_inbox(to, forward::Inbox::Returned { id, returned }.to_json());
    }

    /// Queues a message for a node's inbox, in order with this node's other messages.
    fn send_inbox(&self, node: &str, payload: String) {
        let job = Job {
            channel: String::new(),
            work: Work::Raw {
                topic: self.control.reply_topic(node),
                payload,
            },
            done: None,
        };
        let _ = self.jobs.send(job);
    }

    /// Starts receiving a user's private messages (one hold per connection of the user);
    /// returns once Redis confirmed. Paired with [`Cluster::unwatch_user`].
    pub(crate) async fn watch_user(&self, user: &str) -> Result<(), StoreError> {
        self.pubsub
            .watch(&self.engine.keys().user_topic(user))
            .await
    }

    /// Releases a hold of [`Cluster::watch_user`].
    pub(crate) fn unwatch_user(&self, user: &str) {
        self.pubsub.unwatch(&self.engine.keys().user_topic(user));
    }

    /// Sends a private message: Redis gives it its id, sends it to the nodes watching the
    /// user, and keeps it in the mailbox, in one step. Returns it and whether a node had
    /// the user online (then a full mailbox does not refuse it: it is delivered unkept).
    pub(crate) async fn send(
        &self,
        user: &str,
        from: Option<ClientInfo>,
        data: Arc<serde_json::value::RawValue>,
        limits: MailboxLimits,
    ) -> Result<(Arc<PrivateMessage>, bool), StoreError> {
        self.engine.mailbox_send(user, from, data, limits).await
    }

    /// Publishes (offset and history in Redis, then the topic); `done` gets the position
    /// once Redis ran it. Publications are sent in the order this is called.
    pub(crate) fn publish(
        &self,
        channel: &str,
        publication: Publication,
        retention: Option<Retention>,
        done: impl FnOnce(Published) + Send + 'static,
    ) {
        let job = Job {
            channel: channel.to_owned(),
            work: Work::Store {
                publication,
                retention,
            },
            done: Some(Box::new(done)),
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            if let Some(done) = job.done {
                done(Err(StoreError::Failed("the publisher stopped".into())));
            }
        }
    }

    /// Publishes a payload on a channel's topic as it is (an ephemeral publication), in
    /// order with [`Cluster::publish`]; lost if Redis cannot take it.
    pub(crate) fn publish_raw(&self, channel: &str, payload: String) {
        let job = Job {
            channel: channel.to_owned(),
            work: Work::Raw {
                topic: self.engine.keys().topic(channel),
                payload,
            },
            done: None,
        };
        let _ = self.jobs.send(job);
    }

    /// Asks every other live node; returns their answers (those that came within
    /// [`control::ANSWER_TIMEOUT`]).
    pub(crate) async fn ask_all(&self, ask: Ask) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut conn = self.engine.connection();
        let others = nodes::live_ids(&mut conn, &self.node_keys)
            .await?
            .into_iter()
            .filter(|id| *id != self.node)
            .count();
        if others == 0 {
            return Ok(Vec::new());
        }
        let (payload, waiting) = self.control.request(ask);
        redis::cmd("PUBLISH")
            .arg(self.control.request_topic())
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        Ok(waiting.collect(others).await)
    }

    fn change<'a>(
        &'a self,
        keys: &'a ChannelKeys,
        topic: &'a str,
        channel: &'a str,
        info: &'a ClientInfo,
        announce: Option<String>,
    ) -> Change<'a> {
        Change {
            keys,
            node_index: &self.node_index,
            channel,
            info,
            announce: announce.map(|payload| (topic, payload)),
        }
    }

    /// Adds a subscriber to the channel's presence; with `join_leave`, the user's first
    /// connection in the group announces the join. Queued in order with this node's
    /// publications and removals, so a quick subscribe and unsubscribe cannot swap.
    pub(crate) fn presence_add(&self, channel: &str, info: &ClientInfo, join_leave: bool) {
        self.queue_presence(channel, info, join_leave, true);
    }

    /// Removes a subscriber; with `join_leave`, the user's last connection in the group
    /// announces the leave. Queued like [`Cluster::presence_add`].
    pub(crate) fn presence_remove(&self, channel: &str, info: &ClientInfo, join_leave: bool) {
        self.queue_presence(channel, info, join_leave, false);
    }

    fn queue_presence(&self, channel: &str, info: &ClientInfo, join_leave: bool, add: bool) {
        let job = Job {
            channel: channel.to_owned(),
            work: Work::Presence {
                info: info.clone(),
                join_leave,
                add,
            },
            done: None,
        };
        let _ = self.jobs.send(job);
    }

    /// Runs a queued presence change.
    async fn change_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        join_leave: bool,
        add: bool,
    ) -> Result<(), StoreError> {
        let keys = ChannelKeys::new(self.engine.keys(), channel);
        let topic = self.engine.keys().topic(channel);
        let mut conn = self.engine.connection();
        if add {
            let join = join_leave.then(|| payload::join(info));
            let change = self.change(&keys, &topic, channel, info, join);
            self.scripts.add(&mut conn, change, self.presence_ttl).await
        } else {
            let leave = join_leave.then(|| payload::leave(info));
            let change = self.change(&keys, &topic, channel, info, leave);
            self.scripts.remove(&mut conn, change).await
        }
    }

    /// Who is subscribed to a channel anywhere in the group.
    pub(crate) async fn presence(&self, channel: &str) -> Result<Presence, StoreError> {
        let keys = ChannelKeys::new(self.engine.keys(), channel);
        self.scripts
            .live(&mut self.engine.connection(), &keys)
            .await
    }

    /// The heartbeat, every third of the presence TTL: announces this node, keeps the
    /// positions of the streams it has subscribers for (`streams`, with their history
    /// TTL), refreshes its subscribers' presence (`subscribers`: each channel with its
    /// clients here), and removes the presence of nodes that stopped announcing themselves
    /// (`join_leave` tells whether a channel announces leaves).
    pub(crate) async fn heartbeat(
        &self,
        subscribers: Vec<(String, Vec<String>)>,
        streams: Vec<(String, Duration)>,
        join_leave: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.engine.connection();
        nodes::announce(&mut conn, &self.node_keys, &self.node, self.presence_ttl).await?;
        // A stream with subscribers here keeps its position (epoch and offset) however
        // long it stays quiet, as a channel in a node's memory does: its meta's expiry is
        // pushed back (a stream Redis no longer has stays gone).
        for chunk in streams.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (channel, keep) in chunk {
                pipe.cmd("PEXPIRE")
                    .arg(self.engine.keys().meta(channel))
                    .arg(keep.as_millis() as u64)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| StoreError::Failed(e.to_string()))?;
        }
        // Concurrent on the one multiplexed connection: the refreshes go out pipelined, a
        // bounded number at a time.
        for chunk in subscribers.chunks(BATCH) {
            let refreshes = chunk.iter().map(|(channel, clients)| {
                let mut conn = self.engine.connection();
                async move {
                    let keys = ChannelKeys::new(self.engine.keys(), channel);
                    self.scripts
                        .refresh(
                            &mut conn,
                            &keys,
                            &self.node_index,
                            clients,
                            self.presence_ttl,
                        )
                        .await
                }
            });
            for refreshed in join_all(refreshes).await {
                refreshed?;
            }
        }
        let live = nodes::live_ids(&mut conn, &self.node_keys).await?;
        *self.live_nodes() = live.into_iter().collect();
        let hold = self.presence_ttl * 4;
        for dead in nodes::claim_dead(&mut conn, &self.node_keys, &self.node, hold).await? {
            let index = self.node_keys.index(&dead);
            loop {
                let entries = nodes::take_entries(&mut conn, &self.node_keys, &dead).await?;
                if entries.is_empty() {
                    break;
                }
                for entry in entries {
                    let Some((channel, client)) = presence::split_member(&entry) else {
                        continue;
                    };
                    let keys = ChannelKeys::new(self.engine.keys(), channel);
                    let Some(info) = presence::Scripts::entry(&mut conn, &keys, client).await?
                    else {
                        continue;
                    };
                    let topic = self.engine.keys().topic(channel);
                    let leave = join_leave(channel).then(|| payload::leave(&info));
                    let change = Change {
                        keys: &keys,
                        node_index: &index,
                        channel,
                        info: &info,
                        announce: leave.map(|p| (topic.as_str(), p)),
                    };
                    self.scripts.remove(&mut conn, change).await?;
                }
            }
            nodes::forget(&mut conn, &self.node_keys, &dead).await;
        }
        Ok(())
    }

    /// Leaves the group on a clean shutdown: the others stop listing this node at once,
    /// and the next of them to beat removes whatever presence it still has.
    pub(crate) async fn leave(&self) {
        let left = nodes::announce(
            &mut self.engine.connection(),
            &self.node_keys,
            &self.node,
            Duration::ZERO,
        )
        .await;
        if let Err(err) = left {
            warn!(cause = %err, "could not withdraw this node from the group");
        }
    }
}

/// Sends queued publications and presence changes to Redis, in batches, in the order
/// they were queued: the futures of a batch are polled in order, so their commands go out
/// in order on the one multiplexed connection.
async fn publisher(cluster: std::sync::Weak<Cluster>, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let (works, dones): (Vec<(String, Work)>, Vec<_>) = batch
            .drain(..)
            .map(|job| ((job.channel, job.work), job.done))
            .unzip();
        let results = join_all(works.iter().map(|(channel, work)| {
            let (cluster, engine) = (&cluster, &cluster.engine);
            async move {
                match work {
                    Work::Store {
                        publication,
                        retention,
                    } => Some(engine.publish(channel, publication, *retention).await),
                    Work::Raw { topic, payload } => {
                        let sent = redis::cmd("PUBLISH")
                            .arg(topic)
                            .arg(payload)
                            .query_async::<i64>(&mut engine.connection())
                            .await;
                        if let Err(err) = sent {
                            warn!(cause = %err, "a message to the group could not reach Redis");
                        }
                        None
                    }
                    Work::Presence {
                        info,
                        join_leave,
                        add,
                    } => {
                        let changed = cluster
                            .change_presence(channel, info, *join_leave, *add)
                            .await;
                        if let Err(err) = changed {
                            warn!(cause = %err, channel = %channel, "a presence change could not reach Redis");
                        }
                        None
                    }
                }
            }
        }))
        .await;
        for (done, result) in dones.into_iter().zip(results) {
            if let (Some(done), Some(result)) = (done, result) {
                done(result);
            }
        }
    }
}
