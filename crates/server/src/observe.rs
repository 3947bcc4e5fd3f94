//! Observers: an extension's view of what is published in a namespace, after the store
//! committed it. How the built-in monitoring sees the agents' samples without being one
//! more subscriber of every host's channel.

use std::sync::Arc;

use serde_json::value::RawValue;

/// Told of every publication committed in the namespaces it was registered for (see
/// [`crate::Server::observe`]). Ephemeral publications are not observed.
///
/// Called on the publication's commit task once the store committed it (commits are
/// released in offset order, but two publications' tasks may then run side by side: an
/// observer that needs the order reads `offset`). It must return at once (hand the work
/// to a task of its own, through a bounded queue), or it delays that publication's
/// acknowledgement.
pub trait Observer: Send + Sync + std::fmt::Debug + 'static {
    /// `data` was published to `channel` at `offset`, at `time` (Unix milliseconds).
    fn publication(&self, channel: &str, offset: u64, time: u64, data: &Arc<RawValue>);
}

/// The observers of each namespace, fixed when the server starts.
#[derive(Debug, Default)]
pub(crate) struct Observers(Vec<(String, Arc<dyn Observer>)>);

impl Observers {
    /// Adds `observer` for `namespace`'s channels.
    pub(crate) fn add(&mut self, namespace: &str, observer: Arc<dyn Observer>) {
        self.0.push((namespace.to_owned(), observer));
    }

    /// Whether anyone observes `channel`'s namespace: asked before a publication's
    /// commit, so that an unobserved one keeps nothing for [`Observers::tell`].
    pub(crate) fn watch(&self, channel: &str) -> bool {
        let namespace = namespace(channel);
        self.0.iter().any(|(name, _)| name == namespace)
    }

    /// The namespaces observed (each once).
    pub(crate) fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.iter().map(|(name, _)| name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Tells the observers of `channel`'s namespace.
    pub(crate) fn tell(&self, channel: &str, offset: u64, time: u64, data: &Arc<RawValue>) {
        let namespace = namespace(channel);
        for (name, observer) in &self.0 {
            if name == namespace {
                observer.publication(channel, offset, time, data);
            }
        }
    }
}

/// The part of a channel's name before its first `:` (`""` without one).
fn namespace(channel: &str) -> &str {
    channel.split_once(':').map_or("", |(ns, _)| ns)
}
