//! The `vote.` rpc methods: polls, votes, their live tally on `poll:ID`, exports.
//!
//! The tally is computed in one place: the store, in the transaction that records a vote
//! ([`Store::cast`](crate::store::Store::cast)). What a vote returns is what is pushed;
//! nothing here adds or subtracts. Each change carries the poll's `seq` (it rises with
//! every vote, close and reopen), so of two tallies the newer always wins, whatever
//! order the calls finish in.
//!
//! Pushes are publications on `poll:ID` made by the server (the namespace refuses
//! clients' own `publish`). They are coalesced per poll ([`Pushes`]): the first change
//! after a quiet moment goes out at once, then at most one every [`PUSH_EVERY`] (4 per
//! second), each the newest tally, and the last one is always sent. A burst of a
//! thousand votes costs the watchers a handful of messages.
//!
//! Accounts and guests vote alike: one vote per user id per poll (a guest is one user id
//! for as long as its session lasts; docs/apps.md says what that means for abuse).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_server::error::ClientError;
use switchboard_server::rpc::{RpcCall, RpcHandler};

use crate::calls::{Who, args, store_error};
use crate::store::{NewPoll, Poll, PollView, ResultsShown, StoreError, Tally, Vote as NewVote};
use crate::{Shared, now_ms};

/// The namespace of polls: poll `ID` is channel `poll:ID`.
pub const POLL_NAMESPACE: &str = "poll";
/// Shortest time between two tally pushes of one poll: at most 4 per second.
pub const PUSH_EVERY: Duration = Duration::from_millis(250);
/// Polls one user keeps (open or closed); past it they delete one first.
pub const POLLS_PER_USER: usize = 50;
/// Fewest and most options of a poll.
pub const OPTIONS: (usize, usize) = (2, 20);
/// Longest question, in characters.
pub const QUESTION_CHARS: usize = 300;
/// Longest option, in characters.
pub const OPTION_CHARS: usize = 200;
/// Votes (casts and changes) one user may make per second, over time.
pub const VOTES_PER_SECOND: u32 = 5;
/// Votes one user may make in a burst.
pub const VOTE_BURST: u32 = 20;
/// Furthest closing time, from now.
const CLOSES_WITHIN_MS: i64 = 366 * 86_400_000;
/// Polls `vote.list` shows of each kind.
const LIST: usize = 100;
/// How often closing times are looked at.
const CLOSE_EVERY: Duration = Duration::from_secs(1);
/// How long a poll's push state stays after its last push (so a late, older tally is
/// still recognised as older).
const SLOT_KEEP: Duration = Duration::from_secs(30);

/// The handler registered for `vote.`.
#[derive(Debug)]
pub(crate) struct Vote(pub(crate) Arc<Shared>);

impl RpcHandler for Vote {
    fn call(&self, call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
        let shared = self.0.clone();
        Box::pin(async move {
            let value = dispatch(&shared, call).await?;
            serde_json::value::to_raw_value(&value)
                .map_err(|e| ClientError::internal(e.to_string()))
        })
    }
}

impl Who {
    /// Whether the caller may manage `poll` (its owner, or an administrator).
    fn manages(&self, poll: &Poll) -> bool {
        self.admin || poll.owner == self.id
    }
}

/// The channel of poll `id`.
pub fn channel(id: &str) -> String {
    format!("{POLL_NAMESPACE}:{id}")
}

async fn dispatch(shared: &Arc<Shared>, call: RpcCall) -> Result<Value, ClientError> {
    let who = Who::new(call.caller, "voting")?;
    let data = call.data;
    match call.method.as_str() {
        "vote.create" => create(shared, &who, args(data)?).await,
        "vote.get" => get(shared, &who, args(data)?).await,
        "vote.cast" => cast(shared, &who, args(data)?).await,
        "vote.list" => list(shared, &who).await,
        "vote.close" => set_closed(shared, &who, args(data)?, true).await,
        "vote.reopen" => set_closed(shared, &who, args(data)?, false).await,
        "vote.delete" => delete(shared, &who, args(data)?).await,
        "vote.export" => export(shared, &who, args(data)?).await,
        other => Err(ClientError::unknown_command(format!(
            "no rpc method {other:?}; vote has vote.create, vote.get, vote.cast, vote.list, \
             vote.close, vote.reopen, vote.delete and vote.export"
        ))),
    }
}

/// 10 random base62 characters (59 bits: not guessable, short enough for a QR code).
fn new_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..10)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A poll id as the client wrote it: base62 only, so it is a channel name and a link.
fn check_id(id: &str) -> Result<(), ClientError> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ClientError::bad_request(format!("{id:?} is not a poll id")));
    }
    Ok(())
}

/// A text of 1 to `max` characters, not only white space; `what` names it.
fn check_text(text: &str, max: usize, what: &str) -> Result<(), ClientError> {
    if text.trim().is_empty() {
        return Err(ClientError::bad_request(format!("{what} is empty")));
    }
    if text.chars().count() > max {
        return Err(ClientError::bad_request(format!(
            "{what} has more than {max} characters"
        )));
    }
    Ok(())
}

/// Whether `who` may see the counts of `view` now.
fn visible(view: &PollView, who: &Who) -> bool {
    let poll = &view.poll;
    poll.closed
        || who.manages(poll)
        || match poll.results {
            ResultsShown::Always => true,
            ResultsShown::Voted => view.mine.is_some(),
            ResultsShown::Closed => false,
        }
}

/// Whether the channel's pushes carry the counts (what every watcher may see).
fn public(poll: &Poll) -> bool {
    poll.closed || poll.results == ResultsShown::Always
}

fn poll_json(poll: &Poll) -> Value {
    json!({
        "id": poll.id,
        "question": poll.question,
        "options": poll.options,
        "max_choices": poll.max_choices,
        "results": poll.results,
        "changeable": poll.changeable,
        "closes_at": poll.closes_at,
        "anonymous": poll.anonymous,
        "owner": poll.owner,
        "owner_name": poll.owner_name,
        "closed": poll.closed,
        "created": poll.created,
    })
}

fn tally_json(tally: &Tally) -> Value {
    json!({"counts": tally.counts, "total": tally.total, "voters": tally.voters})
}

/// The push of a tally, as every watcher of the channel receives it.
fn tally_push(view: &PollView) -> Value {
    if public(&view.poll) {
        json!({
            "type": "tally",
            "counts": view.tally.counts,
            "total": view.tally.total,
            "voters": view.tally.voters,
            "seq": view.seq,
        })
    } else {
        json!({
            "type": "tally",
            "total": view.tally.total,
            "voters": view.tally.voters,
            "hidden": true,
            "seq": view.seq,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    question: String,
    options: Vec<String>,
    #[serde(default = "one")]
    max_choices: u32,
    #[serde(default = "always")]
    results: String,
    #[serde(default)]
    changeable: bool,
    #[serde(default)]
    closes_at: Option<i64>,
    #[serde(default)]
    anonymous: bool,
}

fn one() -> u32 {
    1
}

fn always() -> String {
    "always".into()
}

/// `vote.create {question, options, max_choices, results, changeable, closes_at,
/// anonymous}` → `{poll}`.
async fn create(shared: &Arc<Shared>, who: &Who, args: Create) -> Result<Value, ClientError> {
    check_text(&args.question, QUESTION_CHARS, "the question")?;
    let (min, max) = OPTIONS;
    if args.options.len() < min || args.options.len() > max {
        return Err(ClientError::bad_request(format!(
            "a poll has {min} to {max} options, not {}",
            args.options.len()
        )));
    }
    for (i, option) in args.options.iter().enumerate() {
        check_text(option, OPTION_CHARS, &format!("option {}", i + 1))?;
    }
    if args.max_choices == 0 || args.max_choices as usize > args.options.len() {
        return Err(ClientError::bad_request(format!(
            "max_choices is 1 (single choice) to {} (every option)",
            args.options.len()
        )));
    }
    let results = ResultsShown::parse(&args.results).ok_or_else(|| {
        ClientError::bad_request("results is \"always\", \"voted\" or \"closed\"")
    })?;
    let now = now_ms();
    if let Some(at) = args.closes_at
        && (at <= now || at > now + CLOSES_WITHIN_MS)
    {
        return Err(ClientError::bad_request(
            "closes_at is a time in the next 366 days (ms since the epoch), or null",
        ));
    }
    if !shared.limits.posts.take(&who.id) {
        return Err(ClientError::too_many_requests(
            "you are creating polls too fast; wait a moment",
        ));
    }
    let id = new_id();
    let (poll_id, owner, owner_name) = (id.clone(), who.id.clone(), who.name.clone());
    shared
        .db(move |s| {
            s.create_poll(
                &NewPoll {
                    id: &poll_id,
                    owner: &owner,
                    owner_name: &owner_name,
                    question: args.question.trim(),
                    options: &args.options,
                    max_choices: args.max_choices,
                    results,
                    changeable: args.changeable,
                    closes_at: args.closes_at,
                    anonymous: args.anonymous,
                },
                POLLS_PER_USER,
                now,
            )
        })
        .await
        .map_err(|e| match e {
            StoreError::Refused(words) => ClientError::limit_exceeded(words),
            other => store_error(other),
        })?;
    Ok(json!({"poll": id}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollArg {
    poll: String,
}

async fn view(shared: &Arc<Shared>, who: &Who, poll: &str) -> Result<PollView, ClientError> {
    check_id(poll)?;
    let (id, voter) = (poll.to_owned(), who.id.clone());
    shared
        .db(move |s| s.poll(&id, &voter, now_ms()))
        .await
        .map_err(store_error)?
        .ok_or_else(|| ClientError::rpc_failed(format!("there is no poll {poll:?}")))
}

/// `vote.get {poll}` → `{poll, mine, tally, visible, watchers, seq}`.
async fn get(shared: &Arc<Shared>, who: &Who, args: PollArg) -> Result<Value, ClientError> {
    let view = view(shared, who, &args.poll).await?;
    let visible = visible(&view, who);
    let watchers = shared
        .node
        .presence(&channel(&args.poll))
        .await
        // People, as the page counts them: a user once however many tabs they have open.
        .map_or(0, |p| p.presence.len() + p.anonymous.len());
    Ok(json!({
        "poll": poll_json(&view.poll),
        "mine": view.mine,
        "tally": visible.then(|| tally_json(&view.tally)),
        "visible": visible,
        "watchers": watchers,
        "seq": view.seq,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CastArgs {
    poll: String,
    choices: Vec<u32>,
}

/// `vote.cast {poll, choices}` → `{tally, seq}` (`tally` null while hidden from the
/// caller).
async fn cast(shared: &Arc<Shared>, who: &Who, args: CastArgs) -> Result<Value, ClientError> {
    check_id(&args.poll)?;
    if args.choices.len() > OPTIONS.1 {
        return Err(ClientError::rpc_failed("bad choices: too many"));
    }
    if !shared.limits.votes.take(&who.id) {
        return Err(ClientError::too_many_requests(
            "you are voting too fast; wait a moment",
        ));
    }
    let (poll, voter, name) = (args.poll.clone(), who.id.clone(), who.name.clone());
    let cast = shared
        .db(move |s| {
            s.cast(
                &NewVote {
                    poll: &poll,
                    voter: &voter,
                    voter_name: &name,
                    choices: &args.choices,
                },
                now_ms(),
            )
        })
        .await
        .map_err(|e| match e {
            StoreError::NoPoll => {
                ClientError::rpc_failed(format!("there is no poll {:?}", args.poll))
            }
            other => store_error(other),
        })?;
    shared.metrics.votes.inc();
    shared.pushes.tally(shared, &cast.view);
    let visible = visible(&cast.view, who);
    Ok(json!({
        "tally": visible.then(|| tally_json(&cast.view.tally)),
        "seq": cast.view.seq,
    }))
}

/// `vote.list {}` → `{mine, open}`.
async fn list(shared: &Arc<Shared>, who: &Who) -> Result<Value, ClientError> {
    let id = who.id.clone();
    let (mine, open) = shared
        .db(move |s| {
            let now = now_ms();
            Ok((s.polls_of(&id, LIST, now)?, s.open_polls(&id, LIST, now)?))
        })
        .await
        .map_err(store_error)?;
    Ok(json!({"mine": mine, "open": open}))
}

/// The poll `id` if `who` may manage it (else 103).
async fn managed(shared: &Arc<Shared>, who: &Who, id: &str) -> Result<PollView, ClientError> {
    let view = view(shared, who, id).await?;
    if !who.manages(&view.poll) {
        return Err(ClientError::permission_denied(
            "only the poll's owner or an administrator may do this",
        ));
    }
    Ok(view)
}

/// `vote.close {poll}` and `vote.reopen {poll}`.
async fn set_closed(
    shared: &Arc<Shared>,
    who: &Who,
    args: PollArg,
    closed: bool,
) -> Result<Value, ClientError> {
    managed(shared, who, &args.poll).await?;
    let id = args.poll.clone();
    let view = shared
        .db(move |s| s.set_closed(&id, closed, now_ms()))
        .await
        .map_err(store_error)?;
    announce_state(shared, &view).await;
    Ok(json!({"closed": view.poll.closed}))
}

/// Pushes a poll's new state, then its tally (which a close may reveal).
async fn announce_state(shared: &Arc<Shared>, view: &PollView) {
    shared
        .publish_best_effort(
            &channel(&view.poll.id),
            &json!({"type": "state", "closed": view.poll.closed}),
        )
        .await;
    shared.pushes.tally(shared, view);
}

/// `vote.delete {poll}`: the poll and its votes go; watchers get `{"type":"deleted"}`.
async fn delete(shared: &Arc<Shared>, who: &Who, args: PollArg) -> Result<Value, ClientError> {
    managed(shared, who, &args.poll).await?;
    let id = args.poll.clone();
    shared
        .db(move |s| s.delete_poll(&id))
        .await
        .map_err(store_error)?;
    shared
        .publish_best_effort(&channel(&args.poll), &json!({"type": "deleted"}))
        .await;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportArgs {
    poll: String,
    format: String,
}

/// `vote.export {poll, format}` → `{filename, content}`. Named polls list who chose what.
async fn export(shared: &Arc<Shared>, who: &Who, args: ExportArgs) -> Result<Value, ClientError> {
    if args.format != "csv" && args.format != "json" {
        return Err(ClientError::bad_request("format is \"csv\" or \"json\""));
    }
    let view = managed(shared, who, &args.poll).await?;
    let votes = if view.poll.anonymous {
        Vec::new()
    } else {
        let id = args.poll.clone();
        shared
            .db(move |s| s.votes(&id))
            .await
            .map_err(store_error)?
    };
    let poll = &view.poll;
    let chosen = |choices: &[u32]| -> Vec<String> {
        choices
            .iter()
            .filter_map(|&c| poll.options.get(c as usize).cloned())
            .collect()
    };
    let content = if args.format == "json" {
        let votes: Vec<Value> = votes
            .iter()
            .map(|v| {
                json!({
                    "voter": v.voter,
                    "name": v.name,
                    "choices": v.choices,
                    "chosen": chosen(&v.choices),
                    "time": v.time,
                })
            })
            .collect();
        let mut value = json!({"poll": poll_json(poll), "tally": tally_json(&view.tally)});
        if !poll.anonymous {
            value["votes"] = Value::Array(votes);
        }
        serde_json::to_string_pretty(&value).map_err(|e| ClientError::internal(e.to_string()))?
    } else {
        let mut out = String::from("option,votes\r\n");
        for (text, count) in poll.options.iter().zip(&view.tally.counts) {
            out.push_str(&format!("{},{count}\r\n", csv_field(text)));
        }
        if !poll.anonymous {
            out.push_str("\r\nvoter,name,choices,time\r\n");
            for v in &votes {
                out.push_str(&format!(
                    "{},{},{},{}\r\n",
                    csv_field(&v.voter),
                    csv_field(&v.name),
                    csv_field(&chosen(&v.choices).join(" | ")),
                    v.time
                ));
            }
        }
        out
    };
    Ok(json!({
        "filename": format!("poll-{}.{}", poll.id, args.format),
        "content": content,
    }))
}

/// A CSV field (RFC 4180 quoting). A text a spreadsheet would run as a formula (`=`,
/// `+`, `-`, `@` first) gets a `'` before it: an export is opened by people.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The coalesced tally pushes, per poll.
#[derive(Debug, Default)]
pub(crate) struct Pushes {
    /// `std` Mutex: held to read or replace a slot, never across an `.await`.
    slots: Mutex<HashMap<String, Slot>>,
}

/// One poll's pushes.
#[derive(Debug)]
struct Slot {
    /// The newest tally not yet sent, with its `seq`.
    newest: Option<(u64, Value)>,
    /// The `seq` of the last tally sent: anything not newer is dropped.
    sent: u64,
    /// Whether a task is sending this poll's pushes.
    running: bool,
    /// When the task last ended.
    idle_since: Instant,
}

impl Pushes {
    /// Queues `view`'s tally for its poll's watchers: sent at once when the poll's last
    /// push is [`PUSH_EVERY`] old, else with the next one (only the newest is kept).
    pub(crate) fn tally(&self, shared: &Arc<Shared>, view: &PollView) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(view.poll.id.clone()).or_insert_with(|| Slot {
            newest: None,
            sent: 0,
            running: false,
            idle_since: Instant::now(),
        });
        let newer = view.seq > slot.sent && slot.newest.as_ref().is_none_or(|(s, _)| view.seq > *s);
        if !newer {
            return;
        }
        slot.newest = Some((view.seq, tally_push(view)));
        if !slot.running {
            slot.running = true;
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                slot.running = false;
                return;
            };
            runtime.spawn(send_pushes(Arc::downgrade(shared), view.poll.id.clone()));
        }
    }

    /// Drops the state of polls quiet for [`SLOT_KEEP`].
    fn sweep(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, slot| slot.running || slot.idle_since.elapsed() < SLOT_KEEP);
    }

    /// The newest unsent push of `poll`, or `None` (and the task ends) when there is none.
    fn next(&self, poll: &str) -> Option<Value> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get_mut(poll)?;
        match slot.newest.take() {
            Some((seq, value)) => {
                slot.sent = seq;
                Some(value)
            }
            None => {
                slot.running = false;
                slot.idle_since = Instant::now();
                None
            }
        }
    }
}

/// Sends one poll's pushes, one per [`PUSH_EVERY`] at most, until none is waiting (the
/// wait after the last one keeps the rate when the next vote comes soon after).
async fn send_pushes(shared: Weak<Shared>, poll: String) {
    let channel = channel(&poll);
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(value) = shared.pushes.next(&poll) else {
            return;
        };
        shared.publish_best_effort(&channel, &value).await;
        shared.metrics.tally_pushes.inc();
        drop(shared);
        tokio::time::sleep(PUSH_EVERY).await;
    }
}

/// Closes polls whose closing time came, and tells their watchers. Ends when the server
/// that holds the apps is gone.
pub(crate) async fn closer(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(CLOSE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.pushes.sweep();
        match shared.db(|s| s.close_due(now_ms())).await {
            Ok(views) => {
                for view in views {
                    announce_state(&shared, &view).await;
                }
            }
            Err(err) => tracing::warn!(cause = %err, "apps: closing polls failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_base62_and_ten_long() {
        for _ in 0..100 {
            let id = new_id();
            assert_eq!(id.len(), 10);
            assert!(check_id(&id).is_ok());
        }
        assert!(check_id("a:b").is_err());
        assert!(check_id("").is_err());
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
