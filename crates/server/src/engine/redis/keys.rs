//! The names of every Redis key and pub/sub topic the engine uses, formatted in one place
//! so that the publish script, the readers and the lead's cluster code agree on them.
//!
//! Every name starts with the configured prefix `P`. A channel's keys carry its name in
//! braces, a Redis Cluster hash tag, so all of them live in one slot and one script may
//! touch them together. Channel names never hold braces (they use only
//! `[A-Za-z0-9_\-.:@/=]`); user ids may, but a user's keys all end with the same user id,
//! so they still share one tag. Nothing is escaped: keys are binary safe, and every
//! layout below is unambiguous because each fixed suffix follows the variable part.

/// Key and topic names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (`switchboard` by default).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix every name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P:{CHANNEL}:SUFFIX`: a key of the channel's slot, for state kept beside its
    /// stream (the cluster code's presence, for one).
    pub fn channel_key(&self, channel: &str, suffix: &str) -> String {
        format!("{}:{{{channel}}}:{suffix}", self.prefix)
    }

    /// `P:{CHANNEL}:meta`, a hash: `epoch` (the stream's epoch), `top` (its last offset)
    /// and `ttl` (the history's TTL in milliseconds, which reads expire entries by).
    pub fn meta(&self, channel: &str) -> String {
        self.channel_key(channel, "meta")
    }

    /// `P:{CHANNEL}:hist`, a stream: one entry `OFFSET-0` per kept publication, with one
    /// field `p`, the publication's JSON.
    pub fn history(&self, channel: &str) -> String {
        self.channel_key(channel, "hist")
    }

    /// `P:ch:CHANNEL`, the pub/sub topic that carries the channel's publications (`P`),
    /// joins (`J`), leaves (`L`) and ephemeral messages (`E`) to every node. Topics are not
    /// keys, so they need no hash tag.
    pub fn topic(&self, channel: &str) -> String {
        format!("{}:ch:{channel}", self.prefix)
    }

    /// `P:user:USER`, the pub/sub topic that carries a user's private messages (`M`) to
    /// the nodes the user has connections on.
    pub fn user_topic(&self, user: &str) -> String {
        format!("{}:user:{user}", self.prefix)
    }

    /// `P:mbox:seq`, a hash: `id`, the last mailbox id given (one counter per store), and
    /// `epoch`, the series those ids belong to. One key, so Redis loses or evicts both
    /// together: ids never start over under the epoch clients already know.
    pub fn mailbox_series(&self) -> String {
        format!("{}:mbox:seq", self.prefix)
    }

    /// `P:mbox:{USER}:q`, a stream: the user's waiting messages, entry `ID-0`, fields `m`
    /// (the message's JSON), `s` (its sender's tag, see [`Keys::sender_tag`]) and `e` (its
    /// expiry, Unix milliseconds).
    pub fn mailbox(&self, user: &str) -> String {
        format!("{}:mbox:{{{user}}}:q", self.prefix)
    }

    /// `P:mbox:{USER}:n`, a hash counting the user's waiting messages: `#users` (from
    /// users), `#server` (from the server API), one field per sender's tag, and `@epoch`,
    /// the series the messages belong to.
    pub fn mailbox_counts(&self, user: &str) -> String {
        format!("{}:mbox:{{{user}}}:n", self.prefix)
    }

    /// How a message's sender is counted: `s` for the server API, `u` and the user id
    /// for a user. No tag starts with `#` or `@`, so none is mistaken for a total.
    pub fn sender_tag(sender: Option<&str>) -> String {
        match sender {
            None => "s".to_owned(),
            Some(user) => format!("u{user}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn names_follow_the_layout() {
        let keys = Keys::new("switchboard");
        assert_eq!(keys.meta("chat:a"), "switchboard:{chat:a}:meta");
        assert_eq!(keys.history("chat:a"), "switchboard:{chat:a}:hist");
        assert_eq!(keys.topic("chat:a"), "switchboard:ch:chat:a");
        assert_eq!(keys.mailbox_series(), "switchboard:mbox:seq");
        assert_eq!(keys.mailbox("bob"), "switchboard:mbox:{bob}:q");
        assert_eq!(keys.mailbox_counts("bob"), "switchboard:mbox:{bob}:n");
        assert_eq!(Keys::sender_tag(None), "s");
        assert_eq!(Keys::sender_tag(Some("sers")), "users");
        assert_ne!(Keys::sender_tag(Some("sers")), "#users");
    }
}
