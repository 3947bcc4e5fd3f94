//! Server-Sent Events: the event stream format (WHATWG HTML, "Server-sent events"), and
//! `GET /sse` read block by block.
//!
//! [`Parser`] is sans-IO: bytes in, [`Event`]s out, at any split of the input. An event's
//! fields are slices of the bytes it arrived in ([`Bytes`], no copy) unless its data
//! spans several `data:` lines, which are joined with `\n` as EventSource does. Every
//! block is returned, also those without data (a comment, a lone `retry:`), because the
//! server's keep-alives and the start of a resumed stream are such blocks.

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result, quote};
use crate::http::{HttpConnection, ResponseStream};

/// Largest event buffered while its end has not arrived: larger than any message the
/// server sends (`max_message_size`, 64 KiB by default) with room to spare.
pub const MAX_EVENT: usize = 16 << 20;

/// One block of an event stream: the fields of an event, or a comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `id:` field.
    pub id: Option<Bytes>,
    /// The `event:` field (the event's type; none means `message`).
    pub event: Option<Bytes>,
    /// The `data:` lines, joined with `\n`; `None` when there were none (EventSource
    /// dispatches nothing then).
    pub data: Option<Bytes>,
    /// The `retry:` field, when it is a number.
    pub retry: Option<u64>,
    /// The text of the last comment line (`: ping` gives `ping`).
    pub comment: Option<Bytes>,
    /// Names of fields the format does not define (ignored by EventSource; a test may
    /// want none).
    pub unknown: Vec<String>,
}

impl Event {
    /// The `id:` field as text.
    pub fn id(&self) -> Option<&str> {
        text(&self.id)
    }

    /// The `event:` field as text.
    pub fn kind(&self) -> Option<&str> {
        text(&self.event)
    }

    /// The data as text.
    pub fn data_text(&self) -> Option<&str> {
        text(&self.data)
    }

    /// The comment as text.
    pub fn comment_text(&self) -> Option<&str> {
        text(&self.comment)
    }

    /// The data as JSON; an error when there is none or it is not JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        let data = self
            .data
            .as_deref()
            .ok_or_else(|| Error::Unexpected("an event without data".into()))?;
        serde_json::from_slice(data).map_err(|e| {
            Error::Unexpected(format!(
                "event data that is not JSON ({e}): {}",
                quote(data)
            ))
        })
    }
}

fn text(field: &Option<Bytes>) -> Option<&str> {
    std::str::from_utf8(field.as_deref()?).ok()
}

/// Splits an event stream into [`Event`]s. Lines end with LF or CR LF.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes received and not yet returned as an event.
    buf: BytesMut,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered that do not make a whole block yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The next whole block, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<Event> {
        let len = block_len(&self.buf)?;
        Some(parse_block(self.buf.split_to(len).freeze()))
    }
}

/// The length of the first block of `buf`, blank line included; `None` while incomplete.
fn block_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let at = from + buf[from..].iter().position(|&b| b == b'\n')?;
        if at == from || (at == from + 1 && buf[from] == b'\r') {
            return Some(at + 1);
        }
        from = at + 1;
    }
}

/// The fields of one whole block.
fn parse_block(block: Bytes) -> Event {
    let mut event = Event::default();
    let mut joined: Option<BytesMut> = None;
    let mut from = 0;
    while let Some(at) = block[from..].iter().position(|&b| b == b'\n') {
        let at = from + at;
        let end = if at > from && block[at - 1] == b'\r' {
            at - 1
        } else {
            at
        };
        let line = &block[from..end];
        let next = at + 1;
        if line.is_empty() {
            break;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let start = from + colon + 1;
                let start = if block.get(start) == Some(&b' ') {
                    start + 1
                } else {
                    start
                };
                (&line[..colon], block.slice(start.min(end)..end))
            }
            // A line without a colon is a field name with an empty value.
            None => (line, Bytes::new()),
        };
        match name {
            b"" => event.comment = Some(value),
            b"data" => match (&event.data, &mut joined) {
                (None, _) => event.data = Some(value),
                (Some(first), None) => {
                    let mut all = BytesMut::from(&first[..]);
                    all.extend_from_slice(b"\n");
                    all.extend_from_slice(&value);
                    joined = Some(all);
                }
                (Some(_), Some(all)) => {
                    all.extend_from_slice(b"\n");
                    all.extend_from_slice(&value);
                }
            },
            b"id" => event.id = Some(value),
            b"event" => event.event = Some(value),
            b"retry" => {
                event.retry = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
            }
            other => event
                .unknown
                .push(String::from_utf8_lossy(other).into_owned()),
        }
        from = next;
    }
    if let Some(all) = joined {
        event.data = Some(all.freeze());
    }
    event
}

/// An event stream (`GET /sse`) read as it arrives.
#[derive(Debug)]
pub struct EventStream {
    response: ResponseStream,
    parser: Parser,
    ended: bool,
}

impl EventStream {
    /// `GET path` with `Accept: text/event-stream` and the extra `headers`, on a new
    /// connection to `addr`; returns once the answer's head has arrived. An answer other
    /// than 200 is [`Error::Status`], with its body.
    pub async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<EventStream> {
        let conn = HttpConnection::connect(addr).await?;
        EventStream::open_on(conn, path, headers).await
    }

    /// [`open`](Self::open) on a connection the caller made.
    pub async fn open_on(
        conn: HttpConnection,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<EventStream> {
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let response = conn.stream("GET", path, &all, Bytes::new()).await?;
        if response.status != 200 {
            let status = response.status;
            let body = response.read_to_end().await.unwrap_or_default();
            return Err(Error::Status {
                status,
                body: quote(&body),
            });
        }
        Ok(EventStream {
            response,
            parser: Parser::new(),
            ended: false,
        })
    }

    /// A header of the answer.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.header(name)
    }

    /// The answer's headers.
    pub fn headers(&self) -> &hyper::HeaderMap {
        &self.response.headers
    }

    /// The next block (an event or a comment), `None` once the answer has ended. A
    /// partial event at the end, or a connection that breaks, is an error.
    pub async fn next_block(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            match self.response.next_chunk().await? {
                Some(chunk) => {
                    if self.parser.pending().len() + chunk.len() > MAX_EVENT {
                        return Err(Error::Unexpected(format!(
                            "an event of more than {MAX_EVENT} bytes"
                        )));
                    }
                    self.parser.push(&chunk);
                }
                None if self.parser.pending().is_empty() => self.ended = true,
                None => {
                    return Err(Error::Unexpected(format!(
                        "the stream ended inside an event: {}",
                        quote(self.parser.pending())
                    )));
                }
            }
        }
    }

    /// The next block that has data (comments and lone fields skipped); `None` at the end.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            match self.next_block().await? {
                Some(event) if event.data.is_some() => return Ok(Some(event)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block of `stream` fed in pieces that end at `cuts`, and the bytes left.
    fn blocks(stream: &[u8], cuts: &[usize]) -> (Vec<Event>, usize) {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            parser.push(&stream[from..cut]);
            from = cut;
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
        }
        (out, parser.pending().len())
    }

    const STREAM: &[u8] = b"retry: 1000\nid: ab:0\nevent: session\ndata: {\"session\":\"ab\"}\n\n\
        : ping\n\n\
        id: ab:1\ndata: {\"id\":1,\"result\":{}}\n\n\
        id: ab:8\ndata: {\"a\":\ndata: 1,\ndata:\"b\":2}\n\n\
        event: close\r\ndata: {\"code\":4003,\"reason\":\"bye\"}\r\n\r\n\
        id: ab:9\ndata: {\"par";

    #[test]
    fn events_are_split_as_the_server_writes_them_at_any_cut() {
        let (events, left) = blocks(STREAM, &[]);
        assert_eq!(left, b"id: ab:9\ndata: {\"par".len());
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.id(), e.kind(), e.data_text(), e.retry, e.comment_text()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    Some("ab:0"),
                    Some("session"),
                    Some(r#"{"session":"ab"}"#),
                    Some(1000),
                    None
                ),
                (None, None, None, None, Some("ping")),
                (
                    Some("ab:1"),
                    None,
                    Some(r#"{"id":1,"result":{}}"#),
                    None,
                    None
                ),
                (
                    Some("ab:8"),
                    None,
                    Some("{\"a\":\n1,\n\"b\":2}"),
                    None,
                    None
                ),
                (
                    None,
                    Some("close"),
                    Some(r#"{"code":4003,"reason":"bye"}"#),
                    None,
                    None
                ),
            ]
        );
        for cut in 0..=STREAM.len() {
            assert_eq!(
                blocks(STREAM, &[cut]),
                (events.clone(), left),
                "cut at {cut}"
            );
        }
        let every: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(blocks(STREAM, &every), (events, left));
    }

    #[test]
    fn fields_follow_the_format() {
        // No space after the colon; a field without a colon; an unknown field; `data` alone
        // is an empty line of data; a retry that is not a number is ignored.
        let (events, left) = blocks(
            b"data:x\nid\nfoo: 1\n\nevent: other\ndata\nretry: soon\n\n",
            &[],
        );
        assert_eq!(left, 0);
        assert_eq!(events[0].data_text(), Some("x"));
        assert_eq!(events[0].id(), Some(""));
        assert_eq!(events[0].unknown, vec!["foo".to_owned()]);
        assert_eq!(
            (events[1].kind(), events[1].data_text()),
            (Some("other"), Some(""))
        );
        assert_eq!(events[1].retry, None);
        // A resumed stream starts with a block that only says `retry`.
        let (events, _) = blocks(b"retry: 1000\n\n", &[]);
        assert_eq!(
            (events[0].retry, events[0].data.is_none()),
            (Some(1000), true)
        );
    }

    #[test]
    fn event_data_as_json() {
        let (events, _) = blocks(b"data: {\"a\":1}\n\ndata: nope\n\n: c\n\n", &[]);
        assert_eq!(events[0].json().unwrap(), serde_json::json!({"a": 1}));
        assert!(matches!(events[1].json(), Err(Error::Unexpected(_))));
        assert!(matches!(events[2].json(), Err(Error::Unexpected(_))));
    }
}
