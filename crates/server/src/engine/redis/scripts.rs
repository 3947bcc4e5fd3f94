//! The engine's Lua scripts, one `.lua` file beside this one each. Redis runs a script
//! alone, so each is one atomic step across the keys it names; scripts are sent by their
//! SHA1 (`EVALSHA`) and loaded again when a restarted server no longer knows them.
//!
//! Past `maxmemory` (with the `noeviction` policy) Redis refuses a script's first write
//! command if nothing was written before it, and never checks again once something was:
//! every script that adds data makes a growing write first (or only deletes before it),
//! so a refused script changed nothing, and deletions still run when memory is full.

use redis::Script;

/// The compiled scripts (their text and SHA1).
#[derive(Debug)]
pub(super) struct Scripts {
    /// `publish.lua`: offset, history and `PUBLISH` in one step.
    pub(super) publish: Script,
    /// `append.lua`: [`crate::engine::Store::append`], an offset the caller chose.
    pub(super) append: Script,
    /// `mailbox_push.lua`: bounds checked and the message stored in one step.
    pub(super) mailbox_push: Script,
    /// `mailbox_ack.lua`: messages removed with their counts.
    pub(super) mailbox_ack: Script,
    /// `mailbox_epoch.lua`: the mailbox series' epoch, started if missing.
    pub(super) mailbox_epoch: Script,
    /// `read.lua`: a channel's meta and a chunk of its history, in one step.
    pub(super) read: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            publish: Script::new(include_str!("publish.lua")),
            append: Script::new(include_str!("append.lua")),
            mailbox_push: Script::new(include_str!("mailbox_push.lua")),
            mailbox_ack: Script::new(include_str!("mailbox_ack.lua")),
            mailbox_epoch: Script::new(include_str!("mailbox_epoch.lua")),
            read: Script::new(include_str!("read.lua")),
        }
    }
}
