//! Publishing: an offset reserved under the channel's lock, the store's write outside it,
//! then the release, in offset order, to the history cache and the channel's deliverer.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::channel::{keeps_history, retention};
use super::{Hub, store_failed};
use crate::engine::StoreError;
use crate::error::ClientError;
use crate::protocol::{ClientInfo, Publication, Push, StreamPosition, now_ms};
use switchboard_ws::PreparedMessage;

impl Hub {
    /// Publishes to a channel. The publication is acknowledged (this returns) only after
    /// the store committed it; it reaches subscribers in offset order.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        channel: &str,
        data: Arc<RawValue>,
        info: Option<ClientInfo>,
    ) -> Result<StreamPosition, ClientError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.publish_then(channel, data, info, move |result| {
            let _ = tx.send(result);
        })
        .await?;
        rx.await
            .unwrap_or_else(|_| Err(ClientError::internal("publication lost")))
    }

    /// Reserves the publication's offset and queues its write to the store, then returns;
    /// `done` is called with the acknowledgement once the store committed it (or with the
    /// error). A connection can go on with its next commands meanwhile: its publications
    /// keep the order in which they were started. The store write and `done` run in one
    /// task of their own, so a publisher that goes away cannot leave an offset unreleased.
    /// When this returns an error, nothing was reserved and `done` is not called.
    pub(crate) async fn publish_then(
        self: &Arc<Self>,
        channel: &str,
        data: Arc<RawValue>,
        info: Option<ClientInfo>,
        done: impl FnOnce(Result<StreamPosition, ClientError>) + Send + 'static,
    ) -> Result<(), ClientError> {
        let opts = self.channel_options(channel)?;
        if let Some(cluster) = self.cluster.get() {
            self.publish_to_group(cluster, channel, opts, data, info, done);
            return Ok(());
        }
        let mut payload = Some((data, info));
        let (epoch, publication, write) = self
            .with_channel(channel, opts, |ch| {
                let (data, info) = payload.take()?;
                ch.reserved += 1;
                let publication = Arc::new(Publication {
                    offset: ch.reserved,
                    data,
                    info,
                    time: now_ms(),
                });
                // Queued under the lock, so the store commits offsets in order.
                let write = keeps_history(opts).then(|| {
                    let retention = retention(opts);
                    self.store
                        .append(channel, &ch.epoch, publication.clone(), retention)
                });
                Some((ch.epoch.clone(), publication, write))
            })
            .await?
            .ok_or_else(|| ClientError::internal("publication lost"))?;
        let hub = self.clone();
        let name = channel.to_owned();
        tokio::spawn(async move {
            // Kept only where an extension observes the namespace.
            let observed = hub
                .observers
                .get()
                .filter(|o| o.watch(&name))
                .map(|o| (o, publication.time, publication.data.clone()));
            let result = hub.commit(&name, publication, write).await;
            done(match result {
                Some(Ok(offset)) => {
                    hub.metrics.publications.inc();
                    if let Some((observers, time, data)) = &observed {
                        observers.tell(&name, offset, *time, data);
                    }
                    Ok(StreamPosition {
                        offset,
                        epoch: epoch.to_string(),
                    })
                }
                Some(Err(err)) => Err(store_failed(err)),
                None => Err(ClientError::internal("publication lost")),
            });
        });
        Ok(())
    }

    /// [`Hub::publish_then`] in a group of nodes: Redis takes the offset, stores the
    /// publication and sends it to every node watching the channel, this one included
    /// (its subscribers get it from there, like everyone else's).
    fn publish_to_group(
        self: &Arc<Self>,
        cluster: &crate::cluster::Cluster,
        channel: &str,
        opts: &crate::config::NamespaceOptions,
        data: Arc<RawValue>,
        info: Option<ClientInfo>,
        done: impl FnOnce(Result<StreamPosition, ClientError>) + Send + 'static,
    ) {
        // Observers are told by the node they run on, from the group's events: see
        // `remote`.
        let publication = Publication {
            offset: 0,
            data,
            info,
            time: now_ms(),
        };
        let retention = keeps_history(opts).then(|| retention(opts));
        let metrics = self.metrics.clone();
        cluster.publish(channel, publication, retention, move |result| {
            done(match result {
                Ok((epoch, offset)) => {
                    metrics.publications.inc();
                    Ok(StreamPosition { offset, epoch })
                }
                Err(err) => Err(store_failed(err)),
            })
        });
    }

    /// Publishes to the channel's subscribers of the moment only: nothing is stored, no
    /// offset is taken (the push says `"ephemeral": true`, `"offset": 0`), and a channel
    /// nobody is subscribed to costs nothing. It goes out behind what the channel's
    /// deliverer already has queued. Typing indicators, cursors, "is online" pings.
    pub(crate) fn publish_ephemeral(
        self: &Arc<Self>,
        channel: &str,
        data: Arc<RawValue>,
        info: Option<ClientInfo>,
    ) -> Result<StreamPosition, ClientError> {
        self.channel_options(channel)?;
        if let Some(cluster) = self.cluster.get() {
            // Every node's subscribers get it from the channel's topic, in order with
            // the channel's publications (the publisher's queue keeps the order).
            let payload = crate::cluster::payload::ephemeral(&data, info.as_ref(), now_ms());
            cluster.publish_raw(channel, payload);
            let shard = self.channels.lock(channel);
            let epoch = shard
                .get(channel)
                .map_or_else(String::new, |ch| ch.epoch.to_string());
            return Ok(StreamPosition { offset: 0, epoch });
        }
        let (epoch, start) = {
            let mut shard = self.channels.lock(channel);
            match shard.get_mut(channel) {
                Some(ch) if !ch.subscribers.is_empty() => {
                    let publication = Publication {
                        offset: 0,
                        data,
                        info,
                        time: now_ms(),
                    };
                    let push = Push::Publication {
                        channel,
                        epoch: &ch.epoch,
                        publication: &publication,
                        ephemeral: true,
                    };
                    let message = PreparedMessage::text(&push.to_json());
                    (ch.epoch.to_string(), ch.announce(message))
                }
                Some(ch) => (ch.epoch.to_string(), false),
                None => (String::new(), false),
            }
        };
        if start {
            self.start_deliverer(channel);
        }
        Ok(StreamPosition { offset: 0, epoch })
    }

    /// Waits for a publication's store write, then releases it (and whatever committed
    /// before it) to the history cache and the channel's deliverer. `None` if the channel
    /// or its namespace went away meanwhile.
    async fn commit(
        self: &Arc<Self>,
        name: &str,
        publication: Arc<Publication>,
        write: Option<impl Future<Output = Result<(), StoreError>>>,
    ) -> Option<Result<u64, StoreError>> {
        let opts = self.channel_options(name).ok()?;
        let stored = write.is_some();
        let result = match write {
            Some(write) => {
                let start = Instant::now();
                let result = write.await;
                self.metrics.store_writes.inc();
                self.metrics
                    .store_write_us
                    .add(start.elapsed().as_micros() as u64);
                result
            }
            None => Ok(()),
        };
        let offset = publication.offset;
        {
            let mut shard = self.channels.lock(name);
            // Present: a channel with an unreleased offset is never dropped.
            let ch = shard.get_mut(name)?;
            if result.is_ok() || !stored {
                ch.stored_top = ch.stored_top.max(offset);
            }
            ch.ready
                .insert(offset, result.is_ok().then_some(publication));
        }
        // Publications committed together (one group commit, or while a fan-out kept this
        // thread busy) are released together: let their tasks record them first, so that
        // one write per subscriber carries all of them.
        tokio::task::yield_now().await;
        let start_deliverer = {
            let mut shard = self.channels.lock(name);
            let ch = shard.get_mut(name)?;
            ch.top < offset && ch.release(name, opts, self.over_budget())
        };
        if start_deliverer {
            self.start_deliverer(name);
        }
        Some(result.map(|()| offset))
    }

    /// Starts the channel's deliverer task (the caller marked it running).
    pub(super) fn start_deliverer(self: &Arc<Self>, name: &str) {
        let (hub, name) = (self.clone(), name.to_owned());
        tokio::spawn(async move { hub.deliver(&name).await });
    }
}
