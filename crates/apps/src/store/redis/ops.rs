//! [`Store`] on [`RedisStore`]: each method is one call of the script (`apps.lua`), its
//! arguments in the order the script's comment lists, its reply read with
//! [`reply::Items`]. The refusals' words are the SQLite store's, so a person sees the
//! same message whichever engine runs.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Duration;

use super::reply::{Items, int, unexpected};
use super::{CLOSE_BATCH, Call, RedisStore, SWEEP_BATCH, VOTES_PAGE};
use crate::store::sqlite::check_choices;
use crate::store::{
    Account, Cast, Conversation, DmMessage, DmState, NewAccount, NewDm, NewPoll, NewSession, Poll,
    PollSummary, PollView, ResultsShown, Room, SecretHash, SessionOwner, SessionUser, Store,
    StoreError, StoreResult, StoredVote, Tally, Vote,
};

/// A count as the script reads it (`usize::MAX`, "no limit", stays the largest).
fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The pair of a conversation, ordered bytewise (as SQLite's `lo`, `hi`).
fn pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}

/// A secret's hash as it appears in keys: 64 lowercase hex digits.
fn hex(hash: &SecretHash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in hash {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

fn encode_choices(choices: &[u32]) -> String {
    let words: Vec<String> = choices.iter().map(u32::to_string).collect();
    words.join(",")
}

fn decode_choices(text: &str) -> Vec<u32> {
    text.split(',').filter_map(|c| c.parse().ok()).collect()
}

/// The reply's status word (its first item).
fn status(items: &mut Items) -> StoreResult<String> {
    items.text()
}

fn other_status(word: &str) -> StoreError {
    unexpected(&format!("the status {word:?}"))
}

/// id, name, admin, created.
fn account(items: &mut Items) -> StoreResult<Account> {
    Ok(Account {
        id: items.text()?,
        name: items.text()?,
        admin: items.flag()?,
        created: items.int()?,
    })
}

/// id and the 8 fields of `DM_FIELDS`.
fn dm(items: &mut Items) -> StoreResult<DmMessage> {
    Ok(DmMessage {
        id: items.int()?,
        from: items.text()?,
        from_name: items.text()?,
        to: items.text()?,
        to_name: items.text()?,
        text: items.text()?,
        time: items.int()?,
        state: if items.flag()? {
            DmState::Delivered
        } else {
            DmState::Stored
        },
        late: items.flag()?,
    })
}

/// A view: the poll's fields, whether the reader voted, their choices. Closed at `now`
/// when closed or past its closing time.
fn view(mut items: Items, now: i64) -> StoreResult<PollView> {
    let f = items.fields()?;
    let voted = items.flag()?;
    let mine = items.text()?;
    let n = usize::try_from(f.count("n")?).unwrap_or(usize::MAX);
    // The rules allow 20 options; the capacity is not trusted beyond that.
    let mut options = Vec::with_capacity(n.min(32));
    let mut counts = Vec::with_capacity(n.min(32));
    for i in 0..n {
        options.push(f.text(&format!("o:{i}"))?.to_owned());
        counts.push(f.count(&format!("c:{i}"))?);
    }
    let closes_at = f.opt_int("closes_at")?;
    Ok(PollView {
        poll: Poll {
            id: f.text("id")?.to_owned(),
            question: f.text("question")?.to_owned(),
            options,
            max_choices: u32::try_from(f.count("max_choices")?).unwrap_or(u32::MAX),
            results: ResultsShown::parse(f.text("results")?).unwrap_or(ResultsShown::Closed),
            changeable: f.flag("changeable")?,
            closes_at,
            anonymous: f.flag("anonymous")?,
            owner: f.text("owner")?.to_owned(),
            owner_name: f.text("owner_name")?.to_owned(),
            closed: f.flag("closed")? || closes_at.is_some_and(|t| t <= now),
            created: f.int("created")?,
        },
        mine: voted.then(|| decode_choices(&mine)),
        tally: Tally {
            counts,
            total: f.count("total")?,
            voters: f.count("voters")?,
        },
        seq: f.count("seq")?,
    })
}

/// Summary lines (9 items each), sorted as SQLite's `ORDER BY created DESC, id` and cut
/// to `limit` (the script returns the ties past the limit).
fn summaries(mut items: Items, limit: usize, now: i64) -> StoreResult<Vec<PollSummary>> {
    let mut out = Vec::with_capacity(items.len() / 9);
    while !items.is_empty() {
        let id = items.text()?;
        let question = items.text()?;
        let owner_name = items.text()?;
        let closed = items.text()? == "1";
        let closes_at = match items.text()?.as_str() {
            "" => None,
            t => Some(
                t.parse::<i64>()
                    .map_err(|_| unexpected("a closing time that is not an integer"))?,
            ),
        };
        out.push(PollSummary {
            id,
            question,
            owner_name,
            closed: closed || closes_at.is_some_and(|t| t <= now),
            closes_at,
            created: items.int()?,
            voters: items.count()?,
            total: items.count()?,
            voted: items.flag()?,
        });
    }
    out.sort_by(|a, b| (Reverse(a.created), &a.id).cmp(&(Reverse(b.created), &b.id)));
    out.truncate(limit);
    Ok(out)
}

/// A stored vote's value: `time|choices|name`.
fn stored_vote(voter: String, value: &str) -> StoreResult<StoredVote> {
    let mut parts = value.splitn(3, '|');
    let (Some(time), Some(choices), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(unexpected("a vote without its three parts"));
    };
    Ok(StoredVote {
        voter,
        name: name.to_owned(),
        choices: decode_choices(choices),
        time: time
            .parse()
            .map_err(|_| unexpected("a vote's time that is not an integer"))?,
    })
}

impl Store for RedisStore {
    fn create_account(&self, new: &NewAccount<'_>, now: i64) -> StoreResult<Account> {
        let id = crate::rules::user_id(new.name);
        let invite = new.invite.as_ref().map(hex).unwrap_or_default();
        let mut r = Items::new(self.call("create_account", Call::WriteOnce, |c| {
            c.arg(&id)
                .arg(new.name)
                .arg(new.hash)
                .arg(new.admin)
                .arg(now)
                .arg(&invite);
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => Ok(Account {
                id,
                name: new.name.to_owned(),
                admin: r.flag()?,
                created: now,
            }),
            "invalid" => Err(StoreError::InvalidInvite),
            "taken" => Err(StoreError::NameTaken),
            word => Err(other_status(word)),
        }
    }

    fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        let mut r = Items::new(self.call("account", Call::Read, |c| {
            c.arg(id);
        })?)?;
        if r.is_empty() {
            return Ok(None);
        }
        account(&mut r).map(Some)
    }

    fn account_with_hash(&self, id: &str) -> StoreResult<Option<(Account, String)>> {
        let mut r = Items::new(self.call("account_with_hash", Call::Read, |c| {
            c.arg(id);
        })?)?;
        if r.is_empty() {
            return Ok(None);
        }
        let found = account(&mut r)?;
        Ok(Some((found, r.text()?)))
    }

    fn accounts(&self) -> StoreResult<Vec<Account>> {
        let mut r = Items::new(self.call("accounts", Call::Read, |_| {})?)?;
        let mut out = Vec::with_capacity(r.len() / 4);
        while !r.is_empty() {
            out.push(account(&mut r)?);
        }
        Ok(out)
    }

    fn account_count(&self) -> StoreResult<u64> {
        Ok(int(self.call("account_count", Call::Read, |_| {})?)?.max(0) as u64)
    }

    fn set_password(&self, id: &str, hash: &str) -> StoreResult<bool> {
        // Running twice sets the same hash and ends no more sessions: a retry is safe.
        let found = int(self.call("set_password", Call::Write, |c| {
            c.arg(id).arg(hash);
        })?)?;
        Ok(found != 0)
    }

    fn remove_account(&self, id: &str) -> StoreResult<bool> {
        let found = int(self.call("remove_account", Call::WriteOnce, |c| {
            c.arg(id);
        })?)?;
        Ok(found != 0)
    }

    fn create_session(&self, session: &NewSession<'_>, now: i64) -> StoreResult<()> {
        let (kind, id, name) = match session.user {
            SessionOwner::Account(id) => ("a", id, ""),
            SessionOwner::Guest { id, name } => ("g", id, name),
        };
        let mut r = Items::new(self.call("create_session", Call::WriteOnce, |c| {
            c.arg(hex(&session.hash))
                .arg(kind)
                .arg(id)
                .arg(name)
                .arg(now)
                .arg(session.expires)
                .arg(clamp(session.max_per_account));
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => Ok(()),
            "noaccount" => Err(StoreError::Backend(format!(
                "a session for {id:?}, which is not an account"
            ))),
            word => Err(other_status(word)),
        }
    }

    fn session(&self, hash: &SecretHash, now: i64) -> StoreResult<Option<SessionUser>> {
        let mut r = Items::new(self.call("session", Call::Read, |c| {
            c.arg(hex(hash)).arg(now);
        })?)?;
        if r.is_empty() {
            return Ok(None);
        }
        match status(&mut r)?.as_str() {
            "a" => Ok(Some(SessionUser::Account(account(&mut r)?))),
            "g" => Ok(Some(SessionUser::Guest {
                id: r.text()?,
                name: r.text()?,
            })),
            word => Err(other_status(word)),
        }
    }

    fn delete_session(&self, hash: &SecretHash) -> StoreResult<()> {
        self.call("delete_session", Call::Write, |c| {
            c.arg(hex(hash));
        })?;
        Ok(())
    }

    fn session_count(&self, account: &str) -> StoreResult<u64> {
        Ok(int(self.call("session_count", Call::Read, |c| {
            c.arg(account);
        })?)?
        .max(0) as u64)
    }

    fn create_invite(
        &self,
        hash: &SecretHash,
        admin: bool,
        bootstrap: bool,
        expires: i64,
        now: i64,
    ) -> StoreResult<()> {
        let mut r = Items::new(self.call("create_invite", Call::WriteOnce, |c| {
            c.arg(hex(hash))
                .arg(admin)
                .arg(bootstrap)
                .arg(expires)
                .arg(now);
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => Ok(()),
            // As SQLite's primary key would.
            "exists" => Err(StoreError::Backend(
                "an invite with this code exists".into(),
            )),
            word => Err(other_status(word)),
        }
    }

    fn invite_valid(&self, hash: &SecretHash, now: i64) -> StoreResult<bool> {
        Ok(int(self.call("invite_valid", Call::Read, |c| {
            c.arg(hex(hash)).arg(now);
        })?)?
            != 0)
    }

    fn create_room(
        &self,
        room: &Room,
        max_total: usize,
        max_per_user: usize,
        now: i64,
    ) -> StoreResult<()> {
        let mut r = Items::new(self.call("create_room", Call::WriteOnce, |c| {
            c.arg(&room.name)
                .arg(&room.topic)
                .arg(&room.creator)
                .arg(now)
                .arg(clamp(max_total))
                .arg(clamp(max_per_user));
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => Ok(()),
            "taken" => Err(StoreError::RoomTaken),
            "total" => Err(StoreError::RoomLimit(format!(
                "this server has {} rooms, its limit",
                r.int()?
            ))),
            "mine" => Err(StoreError::RoomLimit(format!(
                "you have created {} rooms, the limit per user",
                r.int()?
            ))),
            word => Err(other_status(word)),
        }
    }

    fn rooms(&self) -> StoreResult<Vec<Room>> {
        let mut r = Items::new(self.call("rooms", Call::Read, |_| {})?)?;
        let mut out = Vec::with_capacity(r.len() / 3);
        while !r.is_empty() {
            out.push(Room {
                name: r.text()?,
                topic: r.text()?,
                creator: r.text()?,
            });
        }
        Ok(out)
    }

    fn set_topic(&self, room: &str, topic: &str) -> StoreResult<bool> {
        Ok(int(self.call("set_topic", Call::Write, |c| {
            c.arg(room).arg(topic);
        })?)?
            != 0)
    }

    fn set_read(&self, user: &str, room: &str, offset: u64) -> StoreResult<()> {
        self.call("set_read", Call::Write, |c| {
            c.arg(user)
                .arg(room)
                .arg(i64::try_from(offset).unwrap_or(i64::MAX));
        })?;
        Ok(())
    }

    fn reads(&self, user: &str) -> StoreResult<Vec<(String, u64)>> {
        let mut r = Items::new(self.call("reads", Call::Read, |c| {
            c.arg(user);
        })?)?;
        let mut out = Vec::with_capacity(r.len() / 2);
        while !r.is_empty() {
            out.push((r.text()?, r.count()?));
        }
        Ok(out)
    }

    fn forget_read(&self, user: &str, room: &str) -> StoreResult<()> {
        self.call("forget_read", Call::Write, |c| {
            c.arg(user).arg(room);
        })?;
        Ok(())
    }

    fn add_dm(&self, new: &NewDm<'_>, now: i64) -> StoreResult<DmMessage> {
        let (lo, hi) = pair(new.from, new.to);
        let id = int(self.call("add_dm", Call::WriteOnce, |c| {
            c.arg(lo)
                .arg(hi)
                .arg(new.from)
                .arg(new.from_name)
                .arg(new.to)
                .arg(new.to_name)
                .arg(new.text)
                .arg(now)
                .arg(clamp(new.keep.max(1)));
        })?)?;
        Ok(DmMessage {
            id,
            from: new.from.to_owned(),
            from_name: new.from_name.to_owned(),
            to: new.to.to_owned(),
            to_name: new.to_name.to_owned(),
            text: new.text.to_owned(),
            time: now,
            state: DmState::Stored,
            late: false,
        })
    }

    fn dm_delivered_now(&self, id: i64) -> StoreResult<()> {
        self.call("dm_delivered_now", Call::Write, |c| {
            c.arg(id);
        })?;
        Ok(())
    }

    fn delete_dm(&self, id: i64) -> StoreResult<()> {
        self.call("delete_dm", Call::Write, |c| {
            c.arg(id);
        })?;
        Ok(())
    }

    fn dm_mark_delivered(&self, recipient: &str, ids: &[i64]) -> StoreResult<Vec<(i64, String)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut r = Items::new(self.call("dm_mark_delivered", Call::WriteOnce, |c| {
            c.arg(recipient);
            for id in ids {
                c.arg(id);
            }
        })?)?;
        let mut out = Vec::with_capacity(r.len() / 2);
        while !r.is_empty() {
            out.push((r.int()?, r.text()?));
        }
        Ok(out)
    }

    fn dm_history(
        &self,
        a: &str,
        b: &str,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<DmMessage>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (lo, hi) = pair(a, b);
        let before = before.map_or_else(|| "+inf".to_owned(), |id| format!("({id}"));
        let mut r = Items::new(self.call("dm_history", Call::Read, |c| {
            c.arg(lo).arg(hi).arg(&before).arg(clamp(limit));
        })?)?;
        let mut out = Vec::with_capacity(r.len() / 9);
        while !r.is_empty() {
            out.push(dm(&mut r)?);
        }
        // Newest first from Redis; oldest first for the caller.
        out.reverse();
        Ok(out)
    }

    fn conversations(&self, user: &str, limit: usize) -> StoreResult<Vec<Conversation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut r = Items::new(self.call("conversations", Call::Read, |c| {
            c.arg(user).arg(clamp(limit));
        })?)?;
        let mut out = Vec::with_capacity(r.len() / 11);
        while !r.is_empty() {
            let peer = r.text()?;
            let unread = r.count()?;
            let last = dm(&mut r)?;
            let name = last.name_of(&peer);
            out.push(Conversation {
                user: peer,
                name,
                last,
                unread,
            });
        }
        Ok(out)
    }

    fn set_dm_read(&self, user: &str, peer: &str, id: i64) -> StoreResult<()> {
        self.call("set_dm_read", Call::Write, |c| {
            c.arg(user).arg(peer).arg(id);
        })?;
        Ok(())
    }

    fn create_poll(&self, poll: &NewPoll<'_>, max_per_owner: usize, now: i64) -> StoreResult<()> {
        let closes_at = poll.closes_at.map(|t| t.to_string()).unwrap_or_default();
        let mut r = Items::new(self.call("create_poll", Call::WriteOnce, |c| {
            c.arg(poll.id)
                .arg(poll.owner)
                .arg(poll.owner_name)
                .arg(poll.question)
                .arg(poll.max_choices)
                .arg(poll.results.as_str())
                .arg(poll.changeable)
                .arg(&closes_at)
                .arg(poll.anonymous)
                .arg(now)
                .arg(clamp(max_per_owner));
            for option in poll.options {
                c.arg(option);
            }
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => Ok(()),
            "limit" => Err(StoreError::Refused(format!(
                "you have {} polls, the limit per user: delete one first",
                r.int()?
            ))),
            "exists" => Err(StoreError::Backend("a poll with this id exists".into())),
            word => Err(other_status(word)),
        }
    }

    fn poll(&self, id: &str, voter: &str, now: i64) -> StoreResult<Option<PollView>> {
        let r = Items::new(self.call("poll", Call::Read, |c| {
            c.arg(id).arg(voter);
        })?)?;
        if r.is_empty() {
            return Ok(None);
        }
        view(r, now).map(Some)
    }

    fn cast(&self, vote: &Vote<'_>, now: i64) -> StoreResult<Cast> {
        let mut r = Items::new(self.call("cast", Call::WriteOnce, |c| {
            c.arg(vote.poll)
                .arg(vote.voter)
                .arg(vote.voter_name)
                .arg(now)
                .arg(encode_choices(vote.choices));
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => {
                let changed = r.flag()?;
                Ok(Cast {
                    view: view(r.items()?, now)?,
                    changed,
                })
            }
            "nopoll" => Err(StoreError::NoPoll),
            "closed" => Err(StoreError::Refused("the poll is closed".into())),
            "choices" => {
                // The script only knows the choices are wrong; the words are the
                // SQLite store's, from the same check.
                let options = usize::try_from(r.count()?).unwrap_or(usize::MAX);
                let max_choices = u32::try_from(r.count()?).unwrap_or(u32::MAX);
                match check_choices(vote.choices, options, max_choices) {
                    Err(words) => Err(StoreError::Refused(words)),
                    Ok(_) => Err(unexpected("choices refused that the check accepts")),
                }
            }
            "voted" => Err(StoreError::Refused(
                "you have already voted, and votes in this poll cannot be changed".into(),
            )),
            word => Err(other_status(word)),
        }
    }

    fn set_closed(&self, id: &str, closed: bool, now: i64) -> StoreResult<PollView> {
        let mut r = Items::new(self.call("set_closed", Call::WriteOnce, |c| {
            c.arg(id).arg(closed);
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => view(r.items()?, now),
            "nopoll" => Err(StoreError::NoPoll),
            word => Err(other_status(word)),
        }
    }

    fn delete_poll(&self, id: &str) -> StoreResult<bool> {
        Ok(int(self.call("delete_poll", Call::WriteOnce, |c| {
            c.arg(id);
        })?)?
            != 0)
    }

    fn close_due(&self, now: i64) -> StoreResult<Vec<PollView>> {
        let mut r = Items::new(self.call("close_due", Call::WriteOnce, |c| {
            c.arg(now).arg(CLOSE_BATCH);
        })?)?;
        let mut out = Vec::with_capacity(r.len());
        while !r.is_empty() {
            out.push(view(r.items()?, now)?);
        }
        Ok(out)
    }

    fn polls_of(&self, owner: &str, limit: usize, now: i64) -> StoreResult<Vec<PollSummary>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let r = Items::new(self.call("polls_of", Call::Read, |c| {
            c.arg(owner).arg(clamp(limit));
        })?)?;
        summaries(r, limit, now)
    }

    fn open_polls(&self, voter: &str, limit: usize, now: i64) -> StoreResult<Vec<PollSummary>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let r = Items::new(self.call("open_polls", Call::Read, |c| {
            c.arg(voter).arg(clamp(limit)).arg(now);
        })?)?;
        summaries(r, limit, now)
    }

    fn votes(&self, id: &str) -> StoreResult<Vec<StoredVote>> {
        // HSCAN may return a vote twice (and a changed one in either version): one per
        // voter is kept.
        let mut votes = HashMap::new();
        let mut cursor = "0".to_owned();
        loop {
            let mut r = Items::new(self.call("votes_page", Call::Read, |c| {
                c.arg(id).arg(&cursor).arg(VOTES_PAGE);
            })?)?;
            cursor = r.text()?;
            let mut page = r.items()?;
            while !page.is_empty() {
                let voter = page.text()?;
                let vote = stored_vote(voter.clone(), &page.text()?)?;
                votes.insert(voter, vote);
            }
            if cursor == "0" {
                break;
            }
        }
        let mut out: Vec<StoredVote> = votes.into_values().collect();
        out.sort_by(|a, b| (a.time, &a.voter).cmp(&(b.time, &b.voter)));
        Ok(out)
    }

    fn recount(&self, id: &str) -> StoreResult<Tally> {
        let mut r = Items::new(self.call("recount", Call::Read, |c| {
            c.arg(id);
        })?)?;
        match status(&mut r)?.as_str() {
            "ok" => {
                let voters = r.count()?;
                let total = r.count()?;
                let mut counts = Vec::with_capacity(r.len());
                while !r.is_empty() {
                    counts.push(r.count()?);
                }
                Ok(Tally {
                    counts,
                    total,
                    voters,
                })
            }
            "nopoll" => Err(StoreError::NoPoll),
            word => Err(other_status(word)),
        }
    }

    fn users_online(&self, node: &str, users: &[String], ttl: Duration) -> StoreResult<usize> {
        // Replaces the node's set with the same list: running twice changes nothing more.
        let n = int(self.call("online", Call::Write, |c| {
            c.arg(node)
                .arg(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1));
            for user in users {
                c.arg(user);
            }
        })?)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn sweep(&self, now: i64) -> StoreResult<()> {
        loop {
            let mut r = Items::new(self.call("sweep", Call::Write, |c| {
                c.arg(now).arg(SWEEP_BATCH);
            })?)?;
            let sessions = r.count()?;
            let invites = r.count()?;
            if sessions < SWEEP_BATCH as u64 && invites < SWEEP_BATCH as u64 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_hex_in_keys() {
        let mut hash = [0u8; 32];
        hash[0] = 0xab;
        hash[31] = 0x0f;
        let text = hex(&hash);
        assert_eq!(
            text.len(),
            64,
            "the sweep cuts a member after 64 characters"
        );
        assert!(text.starts_with("ab00"));
        assert!(text.ends_with("0f"));
    }

    #[test]
    fn stored_votes_keep_a_name_with_bars() {
        let vote = stored_vote("ann".into(), "12|0,2|A|B").unwrap();
        assert_eq!(
            (vote.time, vote.choices, vote.name),
            (12, vec![0, 2], "A|B".into())
        );
        assert!(stored_vote("ann".into(), "12").is_err());
    }
}
