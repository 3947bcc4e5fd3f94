//! Who is subscribed: presence, and the active channels with their subscriber counts.

use std::collections::BTreeMap;

use super::channel::PresenceKey;
use super::{Hub, store_failed};
use crate::error::ClientError;
use crate::protocol::Presence;

impl Hub {
    /// Who is subscribed to a channel (in a group of nodes, on any node).
    pub(crate) async fn presence(&self, channel: &str) -> Result<Presence, ClientError> {
        let opts = self.channel_options(channel)?;
        if !opts.presence {
            return Err(ClientError::not_available(format!(
                "no presence in {channel:?}"
            )));
        }
        if let Some(cluster) = self.cluster.get() {
            return cluster.presence(channel).await.map_err(store_failed);
        }
        let mut presence = Presence {
            presence: BTreeMap::new(),
            anonymous: BTreeMap::new(),
        };
        let shard = self.channels.lock(channel);
        if let Some(ch) = shard.get(channel) {
            for (key, entry) in &ch.presence {
                match key {
                    PresenceKey::User(user) => {
                        presence.presence.insert(user.clone(), entry.clone())
                    }
                    PresenceKey::Anonymous(client) => {
                        presence.anonymous.insert(client.clone(), entry.clone())
                    }
                };
            }
        }
        Ok(presence)
    }

    /// Active channels (with at least one subscriber) and their subscriber counts.
    pub(crate) fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        self.channels.each(|map| {
            out.extend(
                map.iter()
                    .filter(|(_, ch)| !ch.subscribers.is_empty())
                    .map(|(name, ch)| (name.clone(), ch.subscribers.len())),
            );
        });
        out.sort();
        out
    }

    /// In a group of nodes: this node's subscribers of every channel with presence or
    /// join/leave, for the heartbeat that keeps their entries alive in Redis.
    pub(crate) fn members(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        self.channels.each(|map| {
            out.extend(
                map.iter()
                    .filter(|(_, ch)| !ch.members.is_empty())
                    .map(|(name, ch)| {
                        (
                            name.clone(),
                            ch.members.values().map(|i| i.client.clone()).collect(),
                        )
                    }),
            );
        });
        out
    }
}
