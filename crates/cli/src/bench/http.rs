//! The HTTP transports of `bench fanout` and `bench idle` (`--transport sse|longpoll`):
//! subscribers over Server-Sent Events and long polling, on `switchboard-client`'s HTTP
//! connections (hyper's HTTP/1.1, driven by the subscriber's own future, no task each).
//!
//! - **SSE**: each subscriber holds one keep-alive connection with `GET /sse`, reads the
//!   `session` event, and sends `[connect, subscribe]` with `POST /sse/send?session=<sid>`.
//!   Those commands go over one more connection per task of the load client ([`Poster`]),
//!   closed once every subscriber of the task has opened, so a held subscriber costs one
//!   socket as a WebSocket does.
//! - **Long polling**: `POST /poll` with `[connect, subscribe]` opens the session; then
//!   `POST /poll?session=<sid>&ack=<seq>&wait=1` follow each other on one keep-alive
//!   connection, each acknowledging the last answer.
//!
//! Either way each message goes to a [`Sink`] as the bytes the server wrote (an event's
//! data, an element of a poll answer's `messages`), as WebSocket frames do, so the reports
//! compare.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use switchboard_client::{EventStream, HttpConnection, LongPoll};

use crate::bench::connect::Endpoint;

/// Where a subscriber hands what it receives.
pub(crate) trait Sink {
    /// One message of the session (a reply or a push), as the server wrote it. An error
    /// ends the subscriber (an error reply while opening).
    fn message(&mut self, text: &[u8]) -> anyhow::Result<()>;
    /// Whether the subscribe reply has come (the subscriber is open).
    fn is_subscribed(&self) -> bool;
}

/// The opening commands of a subscriber, as one JSON array.
fn opening_commands(token: &str, channel: &str) -> String {
    json!([
        {"id": 1, "cmd": "connect", "token": token},
        {"id": 2, "cmd": "subscribe", "channel": channel},
    ])
    .to_string()
}

/// Text from the server, for a message.
fn lossy(text: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(text)
}

// ---------------------------------------------------------------------------------------
// SSE subscribers.

/// The connection that the SSE subscribers of one task send their commands over, one at
/// a time; closed once all of them have opened (or failed to).
#[derive(Debug)]
pub(crate) struct Poster {
    conn: tokio::sync::Mutex<Option<HttpConnection>>,
    /// Subscribers of the task still opening.
    opening: AtomicUsize,
}

impl Poster {
    pub(crate) fn new(subscribers: usize) -> Poster {
        Poster {
            conn: tokio::sync::Mutex::new(None),
            opening: AtomicUsize::new(subscribers),
        }
    }

    /// One subscriber of the task is done opening; the last one closes the connection.
    pub(crate) async fn opened(&self) {
        if self.opening.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.conn.lock().await = None;
        }
    }

    /// `POST path` with a JSON `body`; the status, and the answer's body when it is not
    /// 202. A connection that was kept from an earlier command and fails is replaced once
    /// (the server may have closed it meanwhile).
    async fn post(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let mut conn = self.conn.lock().await;
        loop {
            let kept = conn.as_ref().is_some_and(|c| !c.is_closed());
            let http = match &mut *conn {
                Some(http) if kept => http,
                _ => conn.insert(endpoint.http().await?),
            };
            let headers = [("Content-Type", "application/json")];
            match http.request("POST", path, &headers, body.to_owned()).await {
                Ok(answer) => {
                    let text = if answer.status == 202 {
                        String::new()
                    } else {
                        answer.text()
                    };
                    return Ok((answer.status, text));
                }
                Err(_) if kept => *conn = None,
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// An SSE subscriber: its event stream.
#[derive(Debug)]
pub(crate) struct SseSub {
    stream: EventStream,
}

impl SseSub {
    /// Hands each message to `sink` until the stream ends or the session closes (why, as
    /// `Some`), or, with `opening`, until the subscribe reply (`None`).
    async fn read(
        &mut self,
        sink: &mut impl Sink,
        opening: bool,
    ) -> anyhow::Result<Option<String>> {
        while !(opening && sink.is_subscribed()) {
            let Some(event) = self.stream.next_event().await? else {
                return Ok(Some("the stream ended".to_owned()));
            };
            let data = event.data.as_deref().unwrap_or_default();
            match event.kind() {
                None | Some("message") => sink.message(data)?,
                Some("close") => {
                    return Ok(Some(format!("closed by the server: {}", lossy(data))));
                }
                Some(_) => {}
            }
        }
        Ok(None)
    }

    /// Counts publications until the stream ends; why it did.
    pub(crate) async fn run(mut self, sink: &mut impl Sink) -> String {
        match self.read(sink, false).await {
            Ok(why) => why.unwrap_or_default(),
            Err(err) => format!("connection lost: {err:#}"),
        }
    }
}

/// Opens an SSE subscriber: the stream, its `session` event, then `connect` and
/// `subscribe` through `poster`, and their replies on the stream.
pub(crate) async fn open_sse(
    endpoint: &Endpoint,
    channel: &str,
    token: &str,
    poster: &Poster,
    sink: &mut impl Sink,
) -> anyhow::Result<SseSub> {
    let conn = endpoint.http().await?;
    let stream = EventStream::open_on(conn, "/sse", &[])
        .await
        .map_err(|err| anyhow!("GET /sse: {err}"))?;
    let mut sse = SseSub { stream };
    let sid = loop {
        let event = sse
            .stream
            .next_event()
            .await?
            .context("the stream ended before its session event")?;
        match event.kind() {
            Some("session") => {
                let sid = event.json()?["session"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("a session event without id: {event:?}"))?;
                break sid;
            }
            Some("close") => bail!("the stream closed at once: {:?}", event.data_text()),
            _ => {}
        }
    };
    let commands = opening_commands(token, channel);
    let (status, answer) = poster
        .post(endpoint, &format!("/sse/send?session={sid}"), &commands)
        .await
        .context("POST /sse/send failed")?;
    if status != 202 {
        bail!("POST /sse/send: HTTP {status}: {answer}");
    }
    if let Some(why) = sse.read(sink, true).await? {
        bail!("before the subscribe reply: {why}");
    }
    Ok(sse)
}

// ---------------------------------------------------------------------------------------
// Long-polling subscribers.

/// A long-polling subscriber: its session.
#[derive(Debug)]
pub(crate) struct PollSub {
    poll: LongPoll,
}

impl PollSub {
    /// Sends one poll (with `body`, the commands, on the first), and hands the answer's
    /// messages to `sink`; the reason when the session ended.
    async fn poll(&mut self, body: &str, sink: &mut impl Sink) -> anyhow::Result<Option<String>> {
        let answer = match self.poll.poll(body, true).await {
            Ok(answer) => answer,
            Err(err @ switchboard_client::Error::Status { .. }) => {
                return Ok(Some(err.to_string()));
            }
            Err(err) => return Err(err.into()),
        };
        for message in answer.messages() {
            sink.message(message)?;
        }
        Ok(answer
            .closed()
            .map(|closed| format!("closed by the server: {}", lossy(closed))))
    }

    /// Polls and counts publications until the session ends; why it did.
    pub(crate) async fn run(mut self, sink: &mut impl Sink) -> String {
        loop {
            match self.poll("", sink).await {
                Ok(None) => {}
                Ok(Some(why)) => return why,
                Err(err) => return format!("connection lost: {err:#}"),
            }
        }
    }
}

/// Opens a long-polling subscriber: the first poll carries `connect` and `subscribe`, and
/// polls follow until the subscribe reply.
pub(crate) async fn open_poll(
    endpoint: &Endpoint,
    channel: &str,
    token: &str,
    sink: &mut impl Sink,
) -> anyhow::Result<PollSub> {
    let mut poll = PollSub {
        poll: LongPoll::on(endpoint.http().await?),
    };
    let mut body = opening_commands(token, channel);
    while !sink.is_subscribed() {
        if let Some(why) = poll.poll(&body, sink).await? {
            bail!("before the subscribe reply: {why}");
        }
        body.clear();
    }
    Ok(poll)
}
