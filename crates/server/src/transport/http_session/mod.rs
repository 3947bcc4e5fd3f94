//! HTTP sessions: what SSE and polling keep on the server between requests.
//!
//! An HTTP session is the same [`Session`] as a WebSocket connection, with its own
//! [`ClientHandle`] and [`Outbox`], so presence, join/leave, the mailbox, the slow-consumer
//! bound, shutdown and the server API's disconnect treat both alike. One actor task owns
//! each session; the HTTP handlers talk to it through a channel (`ToSession`) and never
//! touch the session themselves, so commands run one at a time, in arrival order.
//!
//! Each message taken from the outbox gets the next sequence number (1, 2, 3…) and stays
//! in a replay buffer until the client acknowledges it: a poll with `ack`, or an SSE
//! reconnect with `Last-Event-ID`. A response lost in flight is therefore sent again, and
//! nothing is sent twice once acknowledged. The buffer is bounded like the outbox
//! (`limits.outbox_messages` / `limits.outbox_bytes`). Past the bound, messages already
//! written to an SSE stream are dropped from its front (an SSE stream has no ack of its
//! own); otherwise the session ends as a slow consumer (4004).
//!
//! A session ends like a WebSocket connection (shutdown, server API, slow consumer, rate
//! limit, token expiry, no `connect` in time), or when no SSE stream and no poll has been
//! open for `limits.session_idle`. The client is told why on its stream or in its poll;
//! if neither is open at that moment, the ended session waits (at most `session_idle`) for
//! the next request to tell it. It is then removed: later requests naming it get 404.
//!
//! In a group of nodes (the Redis engine), a session lives on the node that opened it, and
//! a request that lands on another node is forwarded there (`remote`), so a load balancer
//! needs no sticky sessions.
//!
//! Files: `registry` (the sessions by id, and what handlers ask of one), `replay` (the
//! replay buffer, pure bookkeeping), `actor` (the task that owns a session), `feed` (what
//! the actor shares with its SSE stream's body, which takes the messages itself),
//! `request` (reading a command body, and the refusals), `remote` (sessions across the
//! group).

mod actor;
mod feed;
mod registry;
mod remote;
mod replay;
mod request;

pub(crate) use actor::open;
pub(crate) use feed::StreamBody;
pub(crate) use registry::{Registry, ToSession};
pub(crate) use remote::{Host, route};
pub(crate) use request::{not_found, read_commands};
