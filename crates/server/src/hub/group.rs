//! The server API over the whole group of nodes: `channels`, `info` and `disconnect`
//! called on one node answer for (and act on) every node, each node answering for itself
//! (see `cluster::control`). On one node they are that node's answers. And the node's
//! heartbeat, with what it keeps alive in Redis.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use switchboard_ws::CloseCode;
use tracing::warn;

use super::Hub;
use super::channel::keeps_history;
use crate::cluster::Ask;
use crate::engine::StoreError;

impl Hub {
    /// In a group: the heartbeat (every third of `engine.presence_ttl`): this node alive,
    /// its subscribers' presence, and the positions of the streams it has subscribers for.
    pub(crate) async fn heartbeat(&self) -> Result<(), StoreError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        let streams = self
            .channels()
            .into_iter()
            .filter_map(|(name, _)| {
                let opts = self.config.channel_options(&name)?;
                keeps_history(opts).then_some((name, opts.history_ttl))
            })
            .collect();
        let join_leave = |channel: &str| {
            self.config
                .channel_options(channel)
                .is_some_and(|o| o.join_leave)
        };
        cluster.heartbeat(self.members(), streams, join_leave).await
    }

    /// This node's answer to another node's request.
    pub(crate) fn answer(&self, ask: &Ask) -> Value {
        match ask {
            Ask::Channels => json!(self.channels()),
            Ask::Info => self.node_info(),
            Ask::Disconnect { user, code, reason } => {
                json!(self.disconnect(user, CloseCode(*code), reason))
            }
        }
    }

    /// This node as `info` lists it.
    pub(crate) fn node_info(&self) -> Value {
        let m = &self.metrics;
        let mut info = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime": self.uptime().as_secs(),
            "connections": m.connections.get(),
            "subscriptions": m.subscriptions.get(),
            "channels": self.channels().len(),
        });
        if let Some(cluster) = self.cluster() {
            info["id"] = json!(cluster.node_id());
        }
        info
    }

    /// Asks every other node; what they answered (none on one node, or when Redis
    /// cannot be reached: the API then answers for this node, and the log says so).
    async fn ask_others(&self, ask: Ask) -> Vec<Value> {
        let Some(cluster) = self.cluster() else {
            return Vec::new();
        };
        match cluster.ask_all(ask).await {
            Ok(answers) => answers,
            Err(err) => {
                warn!(cause = %err, "could not ask the other nodes; answering for this one");
                Vec::new()
            }
        }
    }

    /// Channels with subscribers on any node, and how many on all of them, by name.
    pub(crate) async fn channels_in_group(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = self.channels().into_iter().collect();
        for answer in self.ask_others(Ask::Channels).await {
            let Ok(list) = serde_json::from_value::<Vec<(String, usize)>>(answer) else {
                continue;
            };
            for (channel, n) in list {
                *counts.entry(channel).or_default() += n;
            }
        }
        counts.into_iter().collect()
    }

    /// Every node's `info`, this one first.
    pub(crate) async fn nodes_in_group(&self) -> Vec<Value> {
        let mut nodes = vec![self.node_info()];
        nodes.extend(self.ask_others(Ask::Info).await);
        nodes
    }

    /// Ends a user's connections on every node; returns how many were ended.
    pub(crate) async fn disconnect_in_group(
        &self,
        user: &str,
        code: CloseCode,
        reason: &str,
    ) -> usize {
        let here = self.disconnect(user, code, reason);
        let ask = Ask::Disconnect {
            user: user.to_owned(),
            code: code.0,
            reason: reason.to_owned(),
        };
        let there: usize = self
            .ask_others(ask)
            .await
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as usize)
            .sum();
        here + there
    }
}
