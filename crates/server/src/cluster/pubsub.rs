//! The node's one pub/sub connection to Redis, multiplexing every topic it needs: the
//! channels it has subscribers for (and the fixed topics of the group).
//!
//! Topics are counted (a channel's subscribers on this node share one Redis
//! subscription), and what Redis is subscribed to follows what is wanted: one task
//! compares the two and sends one `SUBSCRIBE` and one `UNSUBSCRIBE` for all the
//! differences, so a burst of subscriptions costs one round trip, and a topic dropped and
//! wanted again meanwhile costs nothing. [`PubSub::watch`] returns once Redis confirmed
//! the topic, so that whatever is published after it reaches this node. After a lost
//! connection the task reconnects with backoff, subscribes everything wanted again, and
//! tells the node through [`Handler::resubscribed`], because events may have been missed
//! meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::engine::StoreError;
use crate::engine::redis::RedisSettings;

/// How long [`PubSub::watch`] waits for Redis to confirm a subscription.
const WATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest pause between reconnection attempts (doubling, with jitter).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Who receives what the connection brings.
pub(crate) trait Handler: Send + Sync + 'static {
    /// A message on `topic`, in the order Redis sent it; `pattern` when it came through
    /// one of the patterns (a topic matching a pattern and watched too comes twice).
    fn message(&self, topic: &str, payload: &[u8], pattern: bool);
    /// The connection came back after a loss, and every wanted topic is subscribed again.
    fn resubscribed(&self);
    /// The connection was lost (or could not be made).
    fn lost(&self, why: &str);
}

#[derive(Debug, Default)]
struct State {
    /// Topics wanted, with how many holders each.
    wanted: HashMap<String, usize>,
    /// Topics Redis confirmed on the current connection.
    subscribed: HashSet<String>,
    /// Topics an `UNSUBSCRIBE` under way is dropping: still in `subscribed`, but not to be
    /// relied on by a new holder.
    removing: HashSet<String>,
    /// Patterns wanted (the namespaces extensions observe), and those Redis confirmed.
    patterns: Vec<String>,
    psubscribed: HashSet<String>,
    /// Whether a connection is up.
    connected: bool,
}

impl State {
    /// Whether `topic` is subscribed and stays so.
    fn holds(&self, topic: &str) -> bool {
        self.subscribed.contains(topic) && !self.removing.contains(topic)
    }

    /// Whether Redis' subscriptions differ from what is wanted.
    fn unsettled(&self) -> bool {
        self.wanted.keys().any(|t| !self.subscribed.contains(t))
            || self.subscribed.iter().any(|t| !self.wanted.contains_key(t))
            || self.patterns.iter().any(|p| !self.psubscribed.contains(p))
    }
}

/// The node's pub/sub connection (see the module's documentation).
#[derive(Debug)]
pub(crate) struct PubSub {
    state: Mutex<State>,
    /// Wakes the connection task: the wanted topics changed.
    dirty: Notify,
    /// Bumped after each change of `subscribed` or `connected`, waking watchers.
    rounds: watch::Sender<u64>,
}

impl PubSub {
    /// Starts the connection task; `topics` are always held.
    pub(crate) fn start(
        settings: RedisSettings,
        topics: Vec<String>,
        handler: Arc<dyn Handler>,
    ) -> Arc<PubSub> {
        let pubsub = Arc::new(PubSub {
            state: Mutex::new(State {
                wanted: topics.into_iter().map(|t| (t, 1)).collect(),
                ..State::default()
            }),
            dirty: Notify::new(),
            rounds: watch::channel(0).0,
        });
        tokio::spawn(connection(Arc::downgrade(&pubsub), settings, handler));
        pubsub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection is up.
    pub(crate) fn connected(&self) -> bool {
        self.lock().connected
    }

    /// Holds `topic` and returns once Redis confirmed it. On an error the hold is
    /// released again.
    pub(crate) async fn watch(&self, topic: &str) -> Result<(), StoreError> {
        let mut rounds = self.rounds.subscribe();
        {
            let mut state = self.lock();
            *state.wanted.entry(topic.to_owned()).or_default() += 1;
            if state.holds(topic) {
                return Ok(());
            }
        }
        self.dirty.notify_one();
        let confirmed = tokio::time::timeout(WATCH_TIMEOUT, async {
            loop {
                if rounds.changed().await.is_err() {
                    return false;
                }
                let state = self.lock();
                if state.holds(topic) {
                    return true;
                }
                if !state.connected {
                    return false;
                }
            }
        })
        .await;
        if confirmed == Ok(true) {
            return Ok(());
        }
        self.unwatch(topic);
        Err(StoreError::Failed(format!(
            "Redis did not confirm the subscription to {topic}"
        )))
    }

    /// Adds patterns to subscribe to (on this connection and every later one).
    pub(crate) fn add_patterns(&self, patterns: &[String]) {
        let mut state = self.lock();
        for pattern in patterns {
            if !state.patterns.contains(pattern) {
                state.patterns.push(pattern.clone());
            }
        }
        drop(state);
        self.dirty.notify_one();
    }

    /// Releases a hold taken by [`PubSub::watch`]; the last one unsubscribes.
    pub(crate) fn unwatch(&self, topic: &str) {
        let mut state = self.lock();
        if let Some(refs) = state.wanted.get_mut(topic) {
            *refs -= 1;
            if *refs == 0 {
                state.wanted.remove(topic);
                drop(state);
                self.dirty.notify_one();
            }
        }
    }

    /// The topics held, for tests and metrics.
    pub(crate) fn wanted(&self) -> usize {
        self.lock().wanted.len()
    }

    /// Brings Redis' subscriptions in line with what is wanted. What changed while it ran
    /// (a topic dropped, then wanted again before its `UNSUBSCRIBE` went out) is put right
    /// by another round, which it asks for.
    async fn reconcile(&self, sink: &mut redis::aio::PubSubSink) -> redis::RedisResult<()> {
        let (patterns, add, remove) = {
            let mut state = self.lock();
            let patterns: Vec<String> = state
                .patterns
                .iter()
                .filter(|p| !state.psubscribed.contains(*p))
                .cloned()
                .collect();
            let add: Vec<String> = state
                .wanted
                .keys()
                .filter(|t| !state.subscribed.contains(*t))
                .cloned()
                .collect();
            let remove: Vec<String> = state
                .subscribed
                .iter()
                .filter(|t| !state.wanted.contains_key(*t))
                .cloned()
                .collect();
            state.removing = remove.iter().cloned().collect();
            (patterns, add, remove)
        };
        if !patterns.is_empty() {
            sink.psubscribe(&patterns).await?;
        }
        if !add.is_empty() {
            sink.subscribe(&add).await?;
        }
        if !remove.is_empty() {
            sink.unsubscribe(&remove).await?;
        }
        let mut state = self.lock();
        state.psubscribed.extend(patterns);
        state.subscribed.extend(add);
        for topic in remove {
            state.subscribed.remove(&topic);
        }
        state.removing.clear();
        let again = state.unsettled();
        drop(state);
        self.rounds.send_modify(|r| *r += 1);
        if again {
            self.dirty.notify_one();
        }
        Ok(())
    }

    fn set_connected(&self, connected: bool) {
        let mut state = self.lock();
        state.connected = connected;
        if !connected {
            state.subscribed.clear();
            state.removing.clear();
            state.psubscribed.clear();
        }
        drop(state);
        self.rounds.send_modify(|r| *r += 1);
    }
}

/// The connection task: connects (asking the Sentinels for the master each time, when
/// there are some), subscribes, reads; reconnects after a loss. Ends when the [`PubSub`]
/// is dropped.
async fn connection(
    pubsub: std::sync::Weak<PubSub>,
    settings: RedisSettings,
    handler: Arc<dyn Handler>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut lost_before = false;
    loop {
        let connected = match settings.client().await {
            Ok(client) => client.get_async_pubsub().await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        let Some(this) = pubsub.upgrade() else { return };
        let (mut sink, mut stream) = match connected {
            Ok(conn) => conn.split(),
            Err(err) => {
                handler.lost(&err);
                drop(this);
                lost_before = true;
                sleep_backoff(&mut backoff).await;
                continue;
            }
        };
        this.set_connected(true);
        let mut failure = this.reconcile(&mut sink).await.err();
        if failure.is_none() {
            backoff = BACKOFF_MIN;
            if lost_before {
                info!("Redis pub/sub connection restored");
                handler.resubscribed();
            }
            failure = loop {
                tokio::select! {
                    message = stream.next() => match message {
                        Some(message) => {
                            handler.message(
                                message.get_channel_name(),
                                message.get_payload_bytes(),
                                message.from_pattern(),
                            );
                        }
                        None => break None,
                    },
                    () = this.dirty.notified() => {
                        if let Err(err) = this.reconcile(&mut sink).await {
                            break Some(err);
                        }
                    }
                }
            };
        }
        this.set_connected(false);
        let why = failure.map_or_else(|| "connection closed".to_owned(), |e| e.to_string());
        warn!(cause = %why, "Redis pub/sub connection lost; reconnecting");
        handler.lost(&why);
        lost_before = true;
        drop(this);
        sleep_backoff(&mut backoff).await;
    }
}

async fn sleep_backoff(backoff: &mut Duration) {
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    tokio::time::sleep(backoff.mul_f64(jitter)).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Count(AtomicUsize);

    impl Handler for Count {
        fn message(&self, _topic: &str, _payload: &[u8], _pattern: bool) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn resubscribed(&self) {}
        fn lost(&self, _why: &str) {}
    }

    /// A topic dropped and wanted again at once, while the round that drops it is under
    /// way, must end subscribed: a holder is never left with a topic Redis no longer sends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_topic_wanted_again_while_being_dropped_stays_subscribed() {
        let Some(redis) = switchboard_redis_fixture::RedisServer::start() else {
            return;
        };
        let settings = RedisSettings {
            url: redis.url(),
            ..RedisSettings::default()
        };
        let count = Arc::new(Count::default());
        let pubsub = PubSub::start(settings.clone(), Vec::new(), count.clone());
        let mut conn = settings
            .client()
            .await
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for round in 0..200 {
            pubsub.watch("t").await.unwrap();
            pubsub.unwatch("t");
            pubsub.watch("t").await.unwrap();
            let before = count.0.load(Ordering::Relaxed);
            let receivers: i64 = redis::cmd("PUBLISH")
                .arg("t")
                .arg("x")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(
                receivers, 1,
                "round {round}: the topic was dropped under its holder"
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while count.0.load(Ordering::Relaxed) == before {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: nothing came"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            pubsub.unwatch("t");
        }
    }
}
