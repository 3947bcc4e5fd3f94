//! What the apps keep: accounts, sessions, invites, rooms, read positions, direct
//! message conversations and polls with their votes, behind one trait so another engine (the scale-out one) can
//! hold them later. [`sqlite::SqliteStore`] is the implementation, in its own file
//! (`apps.db`) beside the hub's database.
//!
//! The trait is synchronous: SQLite answers in microseconds and the callers run it on a
//! blocking thread ([`crate::Apps`] does it in one place). Limits the store must apply
//! atomically (sessions per account, rooms per user, messages kept per conversation) are
//! arguments, so the rule and the write are one transaction.
//!
//! Times are milliseconds since the Unix epoch. Secrets (session ids, invite codes) are
//! only ever stored as their SHA-256, so a copy of the database lets nobody sign in.
//!
//! [`redis::RedisStore`] keeps the same on Redis, for several nodes serving one group:
//! each rule above is one Lua script there, atomic across the nodes. `suite` (tests)
//! holds the behaviour tests both engines pass.

pub mod redis;
pub mod sqlite;
#[cfg(test)]
mod suite;

use std::time::Duration;

use serde::Serialize;

/// The SHA-256 of a session id or invite code.
pub type SecretHash = [u8; 32];

/// A store's refusal or failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// An account with this name (case-insensitively) exists.
    #[error("the name is taken")]
    NameTaken,
    /// The invite code is unknown, used or expired.
    #[error("the invite is not valid (unknown, used or expired)")]
    InvalidInvite,
    /// A room with this name exists.
    #[error("the room exists")]
    RoomTaken,
    /// The room limit (total or per user) is reached.
    #[error("{0}")]
    RoomLimit(String),
    /// There is no such poll.
    #[error("there is no such poll")]
    NoPoll,
    /// A vote refused (closed, already cast and not changeable, bad choices), or a poll
    /// limit reached; the words say which, for a person.
    #[error("{0}")]
    Refused(String),
    /// The engine failed.
    #[error("the apps store failed: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(err: ::redis::RedisError) -> Self {
        StoreError::Backend(err.to_string())
    }
}

/// `Result` with [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The user id: the name lowercased ([`crate::rules::user_id`]).
    pub id: String,
    /// The name as written at sign-up.
    pub name: String,
    /// Whether the account is an administrator.
    pub admin: bool,
    /// When it was created.
    pub created: i64,
}

/// Who a session signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionUser {
    /// An account (as it is now: a rename or a new role shows at once).
    Account(Account),
    /// A guest: an id (`guest:…`) and a display name, kept only in the session.
    Guest {
        /// `guest:` and 12 random characters.
        id: String,
        /// The name they chose.
        name: String,
    },
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    /// The name as written ([`crate::rules::check_name`] passed).
    pub name: &'a str,
    /// The Argon2id PHC string.
    pub hash: &'a str,
    /// Whether it is an administrator (an admin invite makes it one too).
    pub admin: bool,
    /// The invite it uses, which it consumes; a bad one refuses the account.
    pub invite: Option<SecretHash>,
}

/// A new session.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// SHA-256 of the id in the cookie.
    pub hash: SecretHash,
    /// An account id, or a guest.
    pub user: SessionOwner<'a>,
    /// Until when it is valid.
    pub expires: i64,
    /// Most sessions one account keeps; the oldest go.
    pub max_per_account: usize,
}

/// Whose a new session is.
#[derive(Debug, Clone, Copy)]
pub enum SessionOwner<'a> {
    /// An account, by id.
    Account(&'a str),
    /// A guest: id and display name.
    Guest {
        /// `guest:…`.
        id: &'a str,
        /// The display name.
        name: &'a str,
    },
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Room {
    /// Its name (the channel is `room:NAME`).
    pub name: String,
    /// Its topic, empty for none.
    pub topic: String,
    /// Who created it (a user id; empty for the built-in `lobby`).
    #[serde(skip)]
    pub creator: String,
}

/// Whether a direct message has reached a device of its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmState {
    /// Kept for a recipient who was offline.
    Stored,
    /// A device of the recipient has it.
    Delivered,
}

/// A direct message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmMessage {
    /// Its id: unique on this server, rising.
    pub id: i64,
    /// The sender's user id.
    pub from: String,
    /// The sender's display name when sent.
    pub from_name: String,
    /// The recipient's user id.
    pub to: String,
    /// The recipient's display name when sent.
    #[serde(skip)]
    pub to_name: String,
    /// The text.
    pub text: String,
    /// When it was sent.
    pub time: i64,
    /// Stored or delivered.
    pub state: DmState,
    /// Delivered after waiting for its recipient (they were offline when it was sent).
    pub late: bool,
}

impl DmMessage {
    /// The display name of `peer`, one of the message's two sides.
    pub fn name_of(&self, peer: &str) -> String {
        if self.from == peer {
            self.from_name.clone()
        } else {
            self.to_name.clone()
        }
    }
}

/// A new direct message.
#[derive(Debug, Clone)]
pub struct NewDm<'a> {
    /// Sender id.
    pub from: &'a str,
    /// Sender display name.
    pub from_name: &'a str,
    /// Recipient id.
    pub to: &'a str,
    /// Recipient display name.
    pub to_name: &'a str,
    /// The text.
    pub text: &'a str,
    /// Messages a conversation keeps: older ones are deleted as new ones come.
    pub keep: usize,
}

/// One conversation of a user's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The other user's id.
    pub user: String,
    /// Their display name (from the newest message that names them).
    pub name: String,
    /// The newest message.
    pub last: DmMessage,
    /// Messages from them after this user's read position.
    pub unread: u64,
}

/// The apps' storage engine.
pub trait Store: Send + Sync + 'static {
    // Accounts.
    /// Creates an account (consuming its invite, in the same transaction).
    fn create_account(&self, account: &NewAccount<'_>, now: i64) -> StoreResult<Account>;
    /// An account by id.
    fn account(&self, id: &str) -> StoreResult<Option<Account>>;
    /// An account by id with its password hash.
    fn account_with_hash(&self, id: &str) -> StoreResult<Option<(Account, String)>>;
    /// Every account, by name.
    fn accounts(&self) -> StoreResult<Vec<Account>>;
    /// How many accounts there are.
    fn account_count(&self) -> StoreResult<u64>;
    /// Sets a password hash; `false` when there is no such account. Ends its sessions.
    fn set_password(&self, id: &str, hash: &str) -> StoreResult<bool>;
    /// Removes an account and its sessions; `false` when there was none.
    fn remove_account(&self, id: &str) -> StoreResult<bool>;

    // Sessions.
    /// Stores a session, evicting the account's oldest past the cap.
    fn create_session(&self, session: &NewSession<'_>, now: i64) -> StoreResult<()>;
    /// Who a live session signs in.
    fn session(&self, hash: &SecretHash, now: i64) -> StoreResult<Option<SessionUser>>;
    /// Ends a session (signing out).
    fn delete_session(&self, hash: &SecretHash) -> StoreResult<()>;
    /// Sessions of an account (for tests and the CLI).
    fn session_count(&self, account: &str) -> StoreResult<u64>;

    // Invites.
    /// Stores an invite. A `bootstrap` invite (the first admin's) replaces the previous
    /// unused one.
    fn create_invite(
        &self,
        hash: &SecretHash,
        admin: bool,
        bootstrap: bool,
        expires: i64,
        now: i64,
    ) -> StoreResult<()>;
    /// Whether an invite is usable now.
    fn invite_valid(&self, hash: &SecretHash, now: i64) -> StoreResult<bool>;

    // Rooms.
    /// Creates a room unless one has its name or a limit is reached.
    fn create_room(
        &self,
        room: &Room,
        max_total: usize,
        max_per_user: usize,
        now: i64,
    ) -> StoreResult<()>;
    /// Every room, by name.
    fn rooms(&self) -> StoreResult<Vec<Room>>;
    /// Sets a room's topic; `false` when there is no such room.
    fn set_topic(&self, room: &str, topic: &str) -> StoreResult<bool>;

    // Read positions.
    /// Moves a user's read position in a room forward (never back).
    fn set_read(&self, user: &str, room: &str, offset: u64) -> StoreResult<()>;
    /// A user's read positions, by room.
    fn reads(&self, user: &str) -> StoreResult<Vec<(String, u64)>>;
    /// Forgets a user's read position in a room: the user left it (a room the user has a
    /// position in is one they joined, on every device).
    fn forget_read(&self, user: &str, room: &str) -> StoreResult<()>;

    // Direct messages.
    /// Stores a message (state `stored`), and trims its conversation to `keep`.
    fn add_dm(&self, dm: &NewDm<'_>, now: i64) -> StoreResult<DmMessage>;
    /// Marks a message delivered as it is sent (its recipient was online).
    fn dm_delivered_now(&self, id: i64) -> StoreResult<()>;
    /// Deletes a message the hub refused to deliver or keep.
    fn delete_dm(&self, id: i64) -> StoreResult<()>;
    /// Marks stored messages to `recipient` delivered (late); returns those that changed,
    /// as (id, sender).
    fn dm_mark_delivered(&self, recipient: &str, ids: &[i64]) -> StoreResult<Vec<(i64, String)>>;
    /// A conversation's messages before `before` (an id), the newest `limit`, oldest
    /// first.
    fn dm_history(
        &self,
        a: &str,
        b: &str,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<DmMessage>>;
    /// A user's conversations, the most recent first, at most `limit`.
    fn conversations(&self, user: &str, limit: usize) -> StoreResult<Vec<Conversation>>;
    /// Moves a user's read position in a conversation forward.
    fn set_dm_read(&self, user: &str, peer: &str, id: i64) -> StoreResult<()>;

    // Polls.
    /// Creates a poll unless its owner already has `max_per_owner`.
    fn create_poll(&self, poll: &NewPoll<'_>, max_per_owner: usize, now: i64) -> StoreResult<()>;
    /// A poll, with `voter`'s choices (`None` when they have not voted) and the tally.
    /// A poll whose closing time has passed reads as closed.
    fn poll(&self, id: &str, voter: &str, now: i64) -> StoreResult<Option<PollView>>;
    /// Casts or changes `voter`'s vote and returns the tally that includes it, computed
    /// in the same transaction (the one place counts change). Refused
    /// ([`StoreError::Refused`]) when the poll is closed, when the voter has voted and the
    /// poll is not changeable, or when the choices are not 1 to `max_choices` distinct
    /// option indexes.
    fn cast(&self, vote: &Vote<'_>, now: i64) -> StoreResult<Cast>;
    /// Closes (`true`) or reopens a poll; reopening clears a closing time. Returns the
    /// poll as it is now and its tally.
    fn set_closed(&self, id: &str, closed: bool, now: i64) -> StoreResult<PollView>;
    /// Deletes a poll and its votes; `false` when there was none.
    fn delete_poll(&self, id: &str) -> StoreResult<bool>;
    /// Closes the open polls whose closing time has come; returns them.
    fn close_due(&self, now: i64) -> StoreResult<Vec<PollView>>;
    /// Polls owned by `owner` (newest first, at most `limit`); `voted` is the owner's.
    fn polls_of(&self, owner: &str, limit: usize, now: i64) -> StoreResult<Vec<PollSummary>>;
    /// Open polls of everyone (newest first, at most `limit`); `voted` is `voter`'s.
    fn open_polls(&self, voter: &str, limit: usize, now: i64) -> StoreResult<Vec<PollSummary>>;
    /// Every vote of a poll, oldest first (for the export).
    fn votes(&self, id: &str) -> StoreResult<Vec<StoredVote>>;
    /// Counts the stored votes again from scratch (what the tally must equal).
    fn recount(&self, id: &str) -> StoreResult<Tally>;

    /// Deletes expired sessions and invites.
    fn sweep(&self, now: i64) -> StoreResult<()>;

    // Users online.
    /// Records `users`, the users with a connection on node `node` now, for `ttl`, and
    /// answers how many users are online over every node that recorded within its `ttl`
    /// (each user once). A store that serves one node answers `users.len()`, which is the
    /// default: only a store shared by a group of nodes has others to count.
    fn users_online(&self, node: &str, users: &[String], ttl: Duration) -> StoreResult<usize> {
        let _ = (node, ttl);
        Ok(users.len())
    }
}

/// Who may see a poll's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultsShown {
    /// Everyone, at any time.
    Always,
    /// Those who voted (and the owner), and everyone once the poll is closed.
    Voted,
    /// The owner until the poll is closed, then everyone.
    Closed,
}

impl ResultsShown {
    /// Its name in the store and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultsShown::Always => "always",
            ResultsShown::Voted => "voted",
            ResultsShown::Closed => "closed",
        }
    }

    /// The value named `s`.
    pub fn parse(s: &str) -> Option<ResultsShown> {
        match s {
            "always" => Some(ResultsShown::Always),
            "voted" => Some(ResultsShown::Voted),
            "closed" => Some(ResultsShown::Closed),
            _ => None,
        }
    }
}

/// A new poll (its texts already checked).
#[derive(Debug, Clone)]
pub struct NewPoll<'a> {
    /// 10 random base62 characters.
    pub id: &'a str,
    /// The owner's user id.
    pub owner: &'a str,
    /// The owner's display name.
    pub owner_name: &'a str,
    /// The question.
    pub question: &'a str,
    /// 2 to 20 option texts.
    pub options: &'a [String],
    /// Most options one voter may choose (1: single choice).
    pub max_choices: u32,
    /// Who sees the counts.
    pub results: ResultsShown,
    /// Whether a voter may change their vote.
    pub changeable: bool,
    /// When it closes by itself.
    pub closes_at: Option<i64>,
    /// Whether the owner cannot see who chose what.
    pub anonymous: bool,
}

/// A poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Poll {
    /// Its id (channel `poll:ID`).
    pub id: String,
    /// The question.
    pub question: String,
    /// The option texts, in order.
    pub options: Vec<String>,
    /// Most options one voter may choose.
    pub max_choices: u32,
    /// Who sees the counts.
    pub results: ResultsShown,
    /// Whether a vote may be changed.
    pub changeable: bool,
    /// When it closes by itself.
    pub closes_at: Option<i64>,
    /// Whether votes are anonymous.
    pub anonymous: bool,
    /// The owner's user id.
    pub owner: String,
    /// The owner's display name.
    pub owner_name: String,
    /// Whether it is closed (by its owner, or its closing time passed).
    pub closed: bool,
    /// When it was created.
    pub created: i64,
}

/// A poll's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Voters who chose each option, by index.
    pub counts: Vec<u64>,
    /// Choices made (the sum of `counts`; more than `voters` in multiple choice).
    pub total: u64,
    /// People who voted.
    pub voters: u64,
}

/// A poll as one reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollView {
    /// The poll.
    pub poll: Poll,
    /// The reader's choices, when they voted.
    pub mine: Option<Vec<u32>>,
    /// The counts.
    pub tally: Tally,
    /// Rises with every change of the counts or of the state: of two tallies the newer
    /// is the one with the larger `seq`.
    pub seq: u64,
}

/// A vote.
#[derive(Debug, Clone)]
pub struct Vote<'a> {
    /// The poll's id.
    pub poll: &'a str,
    /// The voter's user id (an account or a guest).
    pub voter: &'a str,
    /// Their display name (kept for named polls' exports).
    pub voter_name: &'a str,
    /// Option indexes.
    pub choices: &'a [u32],
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cast {
    /// The poll, its tally with this vote, and the vote.
    pub view: PollView,
    /// Whether the vote replaced an earlier one of the same voter.
    pub changed: bool,
}

/// One line of a list of polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollSummary {
    /// Its id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The owner's display name.
    pub owner_name: String,
    /// Closed or open.
    pub closed: bool,
    /// When it closes by itself.
    pub closes_at: Option<i64>,
    /// When it was created.
    pub created: i64,
    /// People who voted.
    pub voters: u64,
    /// Choices made.
    pub total: u64,
    /// Whether the reader has voted.
    pub voted: bool,
}

/// A stored vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredVote {
    /// The voter's user id.
    pub voter: String,
    /// Their display name when they voted.
    pub name: String,
    /// Option indexes, rising.
    pub choices: Vec<u32>,
    /// When they last voted.
    pub time: i64,
}
