//! The `chat.` rpc methods: rooms, posts, typing, read positions, direct messages.
//!
//! Room messages are publications on `room:ROOM` made by the server for the caller (the
//! namespace refuses clients' own `publish`), so every rule (a signed-in caller, an
//! existing room, the text's length, the post rate) is checked here first. Direct
//! messages are kept in the apps' store, one conversation per pair of users, so they show
//! on every device of both and survive reloads; each is also sent through the hub
//! (`Node::send`), which delivers it live or keeps it in the recipient's mailbox while
//! they are offline. Guests (ephemeral identities) take part in rooms but have no
//! conversations.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_server::error::ClientError;
use switchboard_server::protocol::SendStatus;
use switchboard_server::rpc::{RpcCall, RpcHandler};
use switchboard_server::{HistoryRequest, PublishOptions};

use crate::calls::{Who, args, raw, store_error};
use crate::store::{DmState, NewDm, Room, StoreError};
use crate::{Shared, now_ms, rules};

/// Rooms the built-in `lobby` is; it exists from the start.
pub(crate) const LOBBY: &str = "lobby";

/// Most messages one `chat.dm.history` returns.
const DM_PAGE_MAX: usize = 200;
/// Messages `chat.dm.history` returns by default.
const DM_PAGE: usize = 50;
/// Most ids one `chat.dm.delivered` takes.
const DELIVERED_MAX: usize = 500;
/// Conversations `chat.rooms` lists.
const CONVERSATIONS: usize = 200;

/// The handler registered for `chat.`.
#[derive(Debug)]
pub(crate) struct Chat(pub(crate) Arc<Shared>);

impl RpcHandler for Chat {
    fn call(&self, call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
        let shared = self.0.clone();
        Box::pin(async move {
            let value = dispatch(&shared, call).await?;
            serde_json::value::to_raw_value(&value)
                .map_err(|e| ClientError::internal(e.to_string()))
        })
    }
}

fn channel(room: &str) -> String {
    format!("{}:{room}", crate::ROOM_NAMESPACE)
}

async fn dispatch(shared: &Arc<Shared>, call: RpcCall) -> Result<Value, ClientError> {
    let who = Who::new(call.caller, "chat")?;
    let data = call.data;
    match call.method.as_str() {
        "chat.rooms" => rooms(shared, &who).await,
        "chat.create" => create(shared, &who, args(data)?).await,
        "chat.topic" => topic(shared, &who, args(data)?).await,
        "chat.post" => post(shared, &who, args(data)?).await,
        "chat.typing" => typing(shared, &who, args(data)?).await,
        "chat.read" => read(shared, &who, args(data)?).await,
        "chat.leave" => leave(shared, &who, args(data)?).await,
        "chat.dm.send" => dm_send(shared, &who, args(data)?).await,
        "chat.dm.history" => dm_history(shared, &who, args(data)?).await,
        "chat.dm.delivered" => dm_delivered(shared, &who, args(data)?).await,
        other => Err(ClientError::unknown_command(format!(
            "no rpc method {other:?}; chat has chat.rooms, chat.create, chat.topic, \
             chat.post, chat.typing, chat.read, chat.dm.send, chat.dm.history and \
             chat.dm.delivered"
        ))),
    }
}

/// Takes one post from the caller's bucket.
fn post_allowed(shared: &Shared, who: &Who) -> Result<(), ClientError> {
    if shared.limits.posts.take(&who.id) {
        Ok(())
    } else {
        shared.metrics.posts_limited.inc();
        Err(ClientError::too_many_requests(
            "you are posting too fast; wait a moment",
        ))
    }
}

async fn known_room(shared: &Shared, room: &str) -> Result<(), ClientError> {
    if shared.room_exists(room) {
        return Ok(());
    }
    // Another node of a group may have created it: the store knows every room.
    if let Ok(rooms) = shared.db(|s| s.rooms()).await {
        for known in rooms {
            shared.add_room(&known.name);
        }
    }
    if shared.room_exists(room) {
        Ok(())
    } else {
        Err(ClientError::rpc_failed(format!(
            "there is no room {room:?}"
        )))
    }
}

/// `chat.rooms {}`.
async fn rooms(shared: &Arc<Shared>, who: &Who) -> Result<Value, ClientError> {
    let user = who.id.clone();
    let guest = who.guest;
    let (rooms, reads, conversations) = shared
        .db(move |s| {
            let rooms = s.rooms()?;
            let reads = s.reads(&user)?;
            let conversations = if guest {
                Vec::new()
            } else {
                s.conversations(&user, CONVERSATIONS)?
            };
            Ok((rooms, reads, conversations))
        })
        .await
        .map_err(store_error)?;
    let reads: std::collections::HashMap<String, u64> = reads.into_iter().collect();
    let mut list = Vec::with_capacity(rooms.len());
    for room in rooms {
        let channel = channel(&room.name);
        let online = shared
            .node
            .presence(&channel)
            .await
            .map_or(0, |p| p.presence.len());
        let offset = top_offset(shared, &channel).await;
        let read = reads.get(&room.name).copied();
        list.push(json!({
            "name": room.name,
            "topic": room.topic,
            "online": online,
            "offset": offset,
            "read": read,
            // A room never opened counts nothing unread: it is not the user's yet.
            "unread": read.map_or(0, |r| offset.saturating_sub(r)),
        }));
    }
    let dms: Vec<Value> = conversations
        .into_iter()
        .map(|c| {
            json!({
                "user": c.user,
                "name": c.name,
                "last": c.last,
                "unread": c.unread,
            })
        })
        .collect();
    Ok(json!({"rooms": list, "dms": dms}))
}

/// The channel's newest offset (0 when it has none, or no history).
async fn top_offset(shared: &Shared, channel: &str) -> u64 {
    let request = HistoryRequest {
        limit: Some(0),
        ..HistoryRequest::default()
    };
    shared
        .node
        .history(channel, request)
        .await
        .map_or(0, |h| h.offset)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    #[serde(default)]
    topic: String,
}

/// `chat.create {name, topic?}`.
async fn create(shared: &Arc<Shared>, who: &Who, args: Create) -> Result<Value, ClientError> {
    who.no_guests("creating a room")?;
    rules::check_room(&args.name).map_err(ClientError::bad_request)?;
    rules::check_topic(&args.topic).map_err(ClientError::bad_request)?;
    post_allowed(shared, who)?;
    let limits = &shared.options.limits;
    let (total, per_user) = (limits.rooms_total, limits.rooms_per_user);
    let room = Room {
        name: args.name,
        topic: args.topic,
        creator: who.id.clone(),
    };
    let stored = room.clone();
    let created = shared
        .db(move |s| s.create_room(&stored, total, per_user, now_ms()))
        .await;
    match created {
        Ok(()) => {}
        Err(StoreError::RoomTaken) => {
            return Err(ClientError::rpc_failed(format!(
                "the room {:?} exists",
                room.name
            )));
        }
        Err(StoreError::RoomLimit(message)) => {
            shared.metrics.rooms_refused.inc();
            return Err(ClientError::limit_exceeded(message));
        }
        Err(err) => return Err(store_error(err)),
    }
    shared.add_room(&room.name);
    shared.metrics.rooms_created.inc();
    let value = json!({"name": room.name, "topic": room.topic});
    shared
        .announce_rooms(json!({"type": "room", "room": value}))
        .await;
    Ok(json!({"room": value}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Topic {
    room: String,
    topic: String,
}

/// `chat.topic {room, topic}`.
async fn topic(shared: &Arc<Shared>, who: &Who, args: Topic) -> Result<Value, ClientError> {
    who.no_guests("setting a topic")?;
    known_room(shared, &args.room).await?;
    rules::check_topic(&args.topic).map_err(ClientError::bad_request)?;
    post_allowed(shared, who)?;
    let (room, topic) = (args.room.clone(), args.topic.clone());
    shared
        .db(move |s| s.set_topic(&room, &topic))
        .await
        .map_err(store_error)?;
    let data = raw(&json!({"type": "topic", "topic": args.topic}))?;
    shared
        .node
        .publish(
            &channel(&args.room),
            data,
            PublishOptions {
                info: Some(who.client_info()),
                ephemeral: false,
            },
        )
        .await?;
    shared
        .announce_rooms(json!({"type": "topic", "room": args.room, "topic": args.topic}))
        .await;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Post {
    room: String,
    text: String,
}

/// `chat.post {room, text}`.
async fn post(shared: &Arc<Shared>, who: &Who, args: Post) -> Result<Value, ClientError> {
    known_room(shared, &args.room).await?;
    rules::check_text(&args.text, shared.options.limits.text_max)
        .map_err(ClientError::bad_request)?;
    post_allowed(shared, who)?;
    let data = raw(&json!({"type": "message", "text": args.text}))?;
    let position = shared
        .node
        .publish(
            &channel(&args.room),
            data,
            PublishOptions {
                info: Some(who.client_info()),
                ephemeral: false,
            },
        )
        .await?;
    shared.metrics.posts.inc();
    Ok(json!({"offset": position.offset}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typing {
    room: String,
}

/// `chat.leave {room}`: the room leaves the caller's list on every device (its read
/// position goes; reading or posting there joins it again). The lobby cannot be left.
async fn leave(shared: &Arc<Shared>, who: &Who, args: Typing) -> Result<Value, ClientError> {
    known_room(shared, &args.room).await?;
    if args.room == LOBBY {
        return Err(ClientError::rpc_failed("everyone stays in the lobby"));
    }
    let user = who.id.clone();
    shared
        .db(move |s| s.forget_read(&user, &args.room))
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

/// `chat.typing {room}`: at most one per user per `typing_interval`; the ones in between
/// are dropped without an error (the notice already showing says the same).
async fn typing(shared: &Arc<Shared>, who: &Who, args: Typing) -> Result<Value, ClientError> {
    known_room(shared, &args.room).await?;
    if !shared.limits.typing.pass(&who.id) {
        shared.metrics.typing_dropped.inc();
        return Ok(json!({}));
    }
    let data = raw(&json!({"type": "typing"}))?;
    shared
        .node
        .publish(
            &channel(&args.room),
            data,
            PublishOptions {
                info: Some(who.client_info()),
                ephemeral: true,
            },
        )
        .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Read {
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    dm: Option<String>,
    #[serde(default)]
    id: Option<i64>,
}

/// `chat.read {room, offset}` or `chat.read {dm: USER, id}`.
async fn read(shared: &Arc<Shared>, who: &Who, args: Read) -> Result<Value, ClientError> {
    let user = who.id.clone();
    match args {
        Read {
            room: Some(room),
            offset: Some(offset),
            dm: None,
            id: None,
        } => {
            known_room(shared, &room).await?;
            shared
                .db(move |s| s.set_read(&user, &room, offset))
                .await
                .map_err(store_error)?;
        }
        Read {
            room: None,
            offset: None,
            dm: Some(peer),
            id: Some(id),
        } => {
            who.no_guests("a direct conversation")?;
            let peer = rules::user_id(&peer);
            shared
                .db(move |s| s.set_dm_read(&user, &peer, id))
                .await
                .map_err(store_error)?;
        }
        _ => {
            return Err(ClientError::bad_request(
                "chat.read takes {room, offset} or {dm, id}",
            ));
        }
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DmSend {
    to: String,
    text: String,
}

/// `chat.dm.send {to, text}`.
async fn dm_send(shared: &Arc<Shared>, who: &Who, args: DmSend) -> Result<Value, ClientError> {
    who.no_guests("a direct message")?;
    let to = rules::user_id(args.to.trim());
    if to.is_empty() || to.len() > 128 || rules::is_guest(&to) {
        return Err(ClientError::rpc_failed(
            "direct messages go to users with an account",
        ));
    }
    if to == who.id {
        return Err(ClientError::rpc_failed("a direct message to yourself"));
    }
    rules::check_text(&args.text, shared.options.limits.text_max)
        .map_err(ClientError::bad_request)?;
    // The recipient: an account here, or (tokens from the application's backend) any
    // user id, whose name the apps do not know.
    let to_name = if shared.external {
        to.clone()
    } else {
        let id = to.clone();
        match shared
            .db(move |s| s.account(&id))
            .await
            .map_err(store_error)?
        {
            Some(account) => account.name,
            None => {
                return Err(ClientError::rpc_failed(format!(
                    "there is no user {:?}",
                    args.to
                )));
            }
        }
    };
    post_allowed(shared, who)?;
    let keep = shared.options.limits.dm_keep;
    let (from, from_name, text, recipient) =
        (who.id.clone(), who.name.clone(), args.text, to.clone());
    let mut message = shared
        .db(move |s| {
            s.add_dm(
                &NewDm {
                    from: &from,
                    from_name: &from_name,
                    to: &recipient,
                    to_name: &to_name,
                    text: &text,
                    keep,
                },
                now_ms(),
            )
        })
        .await
        .map_err(store_error)?;
    let data = raw(&json!({
        "type": "dm",
        "id": message.id,
        "from": message.from,
        "from_name": message.from_name,
        "to": message.to,
        "text": message.text,
        "time": message.time,
    }))?;
    let sent = match shared
        .node
        .send(&to, data.clone(), Some(who.client_info()))
        .await
    {
        Ok(sent) => sent,
        Err(err) => {
            // Neither delivered nor kept by the hub: the conversation does not keep it
            // either, so what the sender sees is what happened.
            let id = message.id;
            let _ = shared.db(move |s| s.delete_dm(id)).await;
            return Err(err);
        }
    };
    shared.metrics.dms.inc();
    if sent.status == SendStatus::Delivered {
        let id = message.id;
        shared
            .db(move |s| s.dm_delivered_now(id))
            .await
            .map_err(store_error)?;
        message.state = DmState::Delivered;
    } else {
        shared.metrics.dms_stored.inc();
    }
    // The sender's other devices show it too (this one drops the copy by its id).
    if let Err(err) = shared
        .node
        .send(&who.id, data, Some(who.client_info()))
        .await
    {
        tracing::debug!(cause = %err, "apps: a DM's copy to its sender was not sent");
    }
    Ok(json!({"id": message.id, "time": message.time, "state": message.state}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DmHistory {
    with: String,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `chat.dm.history {with, before?, limit?}`.
async fn dm_history(
    shared: &Arc<Shared>,
    who: &Who,
    args: DmHistory,
) -> Result<Value, ClientError> {
    who.no_guests("a direct conversation")?;
    let limit = args.limit.unwrap_or(DM_PAGE).clamp(1, DM_PAGE_MAX);
    let (me, peer) = (who.id.clone(), rules::user_id(&args.with));
    let messages = shared
        .db(move |s| s.dm_history(&me, &peer, args.before, limit))
        .await
        .map_err(store_error)?;
    Ok(json!({"messages": messages}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivered {
    ids: Vec<i64>,
}

/// `chat.dm.delivered {ids}`: the recipient's device has these; their senders hear of it.
async fn dm_delivered(
    shared: &Arc<Shared>,
    who: &Who,
    args: Delivered,
) -> Result<Value, ClientError> {
    who.no_guests("a direct conversation")?;
    if args.ids.len() > DELIVERED_MAX {
        return Err(ClientError::bad_request(format!(
            "at most {DELIVERED_MAX} ids at once"
        )));
    }
    let me = who.id.clone();
    let changed = shared
        .db(move |s| s.dm_mark_delivered(&me, &args.ids))
        .await
        .map_err(store_error)?;
    for (id, sender) in changed {
        let data = raw(&json!({"type": "dm.state", "id": id, "state": "delivered"}))?;
        if let Err(err) = shared.node.send(&sender, data, None).await {
            tracing::debug!(cause = %err, "apps: a DM's state was not sent to its sender");
        }
    }
    Ok(json!({}))
}
