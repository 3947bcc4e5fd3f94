//! The HTTP transports of `bench fanout` and `bench idle` (`--transport sse|longpoll`):
//! subscribers over Server-Sent Events and long polling, on raw tokio TCP streams.
//!
//! - **SSE**: each subscriber holds one keep-alive HTTP/1.1 connection with `GET /sse`,
//!   reads the `session` event, and sends `[connect, subscribe]` with
//!   `POST /sse/send?session=<sid>`. Those commands go over one more connection per task of
//!   the load client ([`Poster`]), closed once every subscriber of the task has opened, so
//!   a held subscriber costs one socket as a WebSocket does.
//! - **Long polling**: `POST /poll` with `[connect, subscribe]` opens the session; then
//!   `POST /poll?session=<sid>&ack=<seq>&wait=1` follow each other on one keep-alive
//!   connection, each acknowledging the last answer.
//!
//! Either way the messages go to the same [`Counter`] as WebSocket frames, so the reports
//! compare. The load client often runs out of CPU first, so a connection has one buffer:
//! the response body is decoded in place in it (chunked, or `Content-Length`), and events
//! and poll messages are handed on as slices of it, without copies or allocations per
//! message.
//!
//! The parsers are sans-IO and tested alone: [`Chunked`] (the chunked transfer coding),
//! [`next_event`] (SSE event splitting) and [`read_poll`] (a poll answer and its messages).

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench_fanout::{Counter, Shared, lossy};
use crate::bench_stats::{find, number_after};

/// Largest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Largest line of the chunked coding (a chunk size with extensions, a trailer).
const MAX_LINE: usize = 1024;
/// Largest body (or partial SSE event) buffered: a poll answer holds at most the session's
/// `limits.outbox_bytes` (4 MiB) of messages.
const MAX_BODY: usize = 16 << 20;
/// Free room made in a connection's buffer before a read.
const READ_ROOM: usize = 4096;
/// Largest error body quoted in a message.
const QUOTE: usize = 300;

// ---------------------------------------------------------------------------------------
// The chunked transfer coding (RFC 9112 §7.1), decoded in place.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CR LF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

/// A decoder of the chunked transfer coding that works in place, in the buffer the bytes
/// were read into.
#[derive(Debug)]
pub(crate) struct Chunked {
    state: ChunkState,
}

impl Chunked {
    pub(crate) fn new() -> Chunked {
        Chunked {
            state: ChunkState::Size,
        }
    }

    /// Whether the last chunk and the trailer were read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// `buf[..*decoded]` is body already decoded and `buf[*decoded..]` raw bytes of the
    /// coding. Decodes what it can: chunk data moves down to follow the decoded body
    /// (`*decoded` grows) and the framing is dropped. What follows is what could not be
    /// decoded yet (a partial chunk-size line), or, once done, what came after the body
    /// (the next response on the connection).
    pub(crate) fn decode(&mut self, buf: &mut Vec<u8>, decoded: &mut usize) -> anyhow::Result<()> {
        let (mut read, mut write) = (*decoded, *decoded);
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some((end, next)) = line(buf, read)? else {
                        break;
                    };
                    let size = buf[read..end]
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(size)
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .with_context(|| {
                            format!("a bad chunk size {:?}", lossy(&buf[read..end]))
                        })?;
                    read = next;
                    self.state = match size {
                        0 => ChunkState::Trailer,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::Data(left) => {
                    let here = buf.len() - read;
                    let take = usize::try_from(left).map_or(here, |left| left.min(here));
                    if take == 0 {
                        break;
                    }
                    buf.copy_within(read..read + take, write);
                    (read, write) = (read + take, write + take);
                    self.state = match left - take as u64 {
                        0 => ChunkState::DataEnd,
                        left => ChunkState::Data(left),
                    };
                }
                ChunkState::DataEnd => match &buf[read..] {
                    [b'\r', b'\n', ..] => {
                        read += 2;
                        self.state = ChunkState::Size;
                    }
                    // A bare LF, as lenient parsers accept.
                    [b'\n', ..] => {
                        read += 1;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => break,
                    _ => bail!("a chunk's data is not followed by CR LF"),
                },
                ChunkState::Trailer => {
                    let Some((end, next)) = line(buf, read)? else {
                        break;
                    };
                    if end == read {
                        self.state = ChunkState::Done;
                    }
                    read = next;
                }
                ChunkState::Done => break,
            }
        }
        buf.copy_within(read.., write);
        buf.truncate(buf.len() - (read - write));
        *decoded = write;
        Ok(())
    }
}

/// The line that starts at `from`: where it ends (before CR LF or LF) and where the next
/// one starts; `None` while incomplete.
fn line(buf: &[u8], from: usize) -> anyhow::Result<Option<(usize, usize)>> {
    match buf[from..].iter().position(|&b| b == b'\n') {
        Some(at) => {
            let end = from + at;
            let content = if end > from && buf[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            Ok(Some((content, end + 1)))
        }
        None if buf.len() - from > MAX_LINE => {
            bail!("a line of the chunked coding is longer than {MAX_LINE} bytes")
        }
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events (the WHATWG HTML event stream format).

/// The type of an event, from its `event:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No `event:` field (EventSource's `message`): a message of the session.
    Message,
    /// `session`: the new session's id.
    Session,
    /// `close`: the session ended.
    Close,
    Other,
}

/// Where an event's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    /// No `data:` field: the event is not dispatched.
    None,
    /// One `data:` line, at this range of the buffer.
    Line(Range<usize>),
    /// Several, joined with `\n` into the scratch buffer.
    Joined,
}

/// One event block of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) kind: Kind,
    data: Data,
    /// Bytes of the stream the block took, blank line included.
    pub(crate) len: usize,
}

impl Event {
    /// The event's data: lines of `buf`, the buffer it was parsed from, or of `scratch`.
    pub(crate) fn data<'a>(&self, buf: &'a [u8], scratch: &'a [u8]) -> Option<&'a [u8]> {
        match &self.data {
            Data::None => None,
            Data::Line(range) => buf.get(range.clone()),
            Data::Joined => Some(scratch),
        }
    }
}

/// The first complete event block of `buf` (up to a blank line), or `None` while
/// incomplete. Comment lines (`: ping`), `id:` and `retry:` are skipped; an event of
/// several `data:` lines has them joined with `\n` into `scratch` (only then is anything
/// copied). Lines end with LF or CR LF (the server writes LF; a bare CR is not taken as
/// a line end).
pub(crate) fn next_event(buf: &[u8], scratch: &mut Vec<u8>) -> Option<Event> {
    let (mut kind, mut data) = (Kind::Message, Data::None);
    let mut from = 0;
    loop {
        let at = from + buf[from..].iter().position(|&b| b == b'\n')?;
        let end = if at > from && buf[at - 1] == b'\r' {
            at - 1
        } else {
            at
        };
        let line = &buf[from..end];
        let next = at + 1;
        if line.is_empty() {
            return Some(Event {
                kind,
                data,
                len: next,
            });
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            // A comment.
            Some(0) => (&b""[..], from..from),
            Some(colon) => {
                let value = from + colon + 1;
                let value = if buf.get(value) == Some(&b' ') {
                    value + 1
                } else {
                    value
                };
                (&line[..colon], value..end)
            }
            None => (line, end..end),
        };
        match name {
            b"data" => {
                data = match data {
                    Data::None => Data::Line(value),
                    Data::Line(first) => {
                        scratch.clear();
                        scratch.extend_from_slice(&buf[first]);
                        scratch.push(b'\n');
                        scratch.extend_from_slice(&buf[value]);
                        Data::Joined
                    }
                    Data::Joined => {
                        scratch.push(b'\n');
                        scratch.extend_from_slice(&buf[value]);
                        Data::Joined
                    }
                }
            }
            b"event" => {
                kind = match &buf[value] {
                    b"" | b"message" => Kind::Message,
                    b"session" => Kind::Session,
                    b"close" => Kind::Close,
                    _ => Kind::Other,
                }
            }
            _ => {}
        }
        from = next;
    }
}

// ---------------------------------------------------------------------------------------
// Poll answers: `{"session":"<sid>","seq":<n>,"messages":[…],"closed":{…}}`.

/// A poll answer, apart from its messages.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PollAnswer<'a> {
    pub(crate) session: &'a str,
    pub(crate) seq: u64,
    /// The `closed` object, when the session ended.
    pub(crate) closed: Option<&'a [u8]>,
}

/// Reads a poll answer without parsing its JSON: hands each element of `messages` to
/// `each`, as the bytes the server wrote, and returns the rest. The server writes
/// `session` and `seq` before `messages` and `closed` after it, so each is found by its
/// key in its part; the array is split by a scan that tracks nesting and strings.
pub(crate) fn read_poll(
    body: &[u8],
    mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<PollAnswer<'_>> {
    const MESSAGES: &[u8] = br#""messages":["#;
    let bad = || format!("a poll answer that cannot be read: {}", quote(body));
    let at = find(body, MESSAGES).with_context(bad)?;
    let head = &body[..at];
    let (_, seq) = number_after(head, br#""seq":"#).with_context(bad)?;
    let session = find(head, br#""session":""#)
        .map(|i| &head[i + 11..])
        .and_then(|rest| rest.iter().position(|&b| b == b'"').map(|end| &rest[..end]))
        .and_then(|sid| std::str::from_utf8(sid).ok())
        .with_context(bad)?;
    let mut i = at + MESSAGES.len();
    let end = loop {
        i += whitespace(&body[i..]);
        match body.get(i) {
            Some(b']') => break i,
            Some(_) => {}
            None => bail!(bad()),
        }
        let len = value_len(&body[i..]).with_context(bad)?;
        each(&body[i..i + len])?;
        i += len;
        i += whitespace(&body[i..]);
        match body.get(i) {
            Some(b',') => i += 1,
            Some(b']') => break i,
            _ => bail!(bad()),
        }
    };
    let rest = &body[end + 1..];
    let closed = find(rest, br#""closed":"#).map(|i| {
        let value = rest[i + 9..].trim_ascii();
        value.strip_suffix(b"}").unwrap_or(value)
    });
    Ok(PollAnswer {
        session,
        seq,
        closed,
    })
}

fn whitespace(text: &[u8]) -> usize {
    text.iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

/// The length of the JSON value that `text` starts with, found by tracking nesting and
/// strings (it is not validated). A number or literal ends at a delimiter.
fn value_len(text: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return (i > 0).then_some(i),
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return (i > 0).then_some(i),
            _ => {}
        }
    }
    None
}

/// The start of a server's answer, for an error message.
fn quote(text: &[u8]) -> String {
    let text = lossy(text);
    match text.char_indices().nth(QUOTE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// A keep-alive HTTP/1.1 client connection.

/// How the body of the response being read ends.
#[derive(Debug)]
enum Framing {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    Chunked(Chunked),
    /// Neither: the body runs to the end of the connection.
    Close,
}

/// One connection: requests go out one at a time, each response is read whole (polling)
/// or as a stream (SSE).
struct Conn {
    stream: TcpStream,
    /// `buf[start..decoded]`: body not yet taken; `buf[decoded..]`: bytes read but not
    /// decoded yet (the body's framing, or the next response).
    buf: Vec<u8>,
    start: usize,
    decoded: usize,
    framing: Framing,
    eof: bool,
    /// The request being written.
    out: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Conn {
    async fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            start: 0,
            decoded: 0,
            framing: Framing::Length(0),
            eof: false,
            out: String::new(),
        })
    }

    /// The request buffer, emptied: write the request into it, then [`send`](Self::send).
    fn request(&mut self) -> &mut String {
        self.out.clear();
        &mut self.out
    }

    async fn send(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(self.out.as_bytes()).await?;
        Ok(())
    }

    /// Reads more bytes and decodes them; `false` at the end of the connection.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.decoded -= self.start;
            self.start = 0;
        }
        if self.buf.len() >= MAX_BODY {
            bail!("more than {MAX_BODY} bytes of one response are buffered");
        }
        if self.buf.capacity() - self.buf.len() < READ_ROOM / 4 {
            self.buf.reserve(READ_ROOM);
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.decode()?;
        Ok(true)
    }

    /// Moves what the body's framing allows from the raw bytes into the body.
    fn decode(&mut self) -> anyhow::Result<()> {
        match &mut self.framing {
            Framing::Length(left) => {
                let here = self.buf.len() - self.decoded;
                let take = usize::try_from(*left).map_or(here, |left| left.min(here));
                self.decoded += take;
                *left -= take as u64;
            }
            Framing::Chunked(chunked) => chunked.decode(&mut self.buf, &mut self.decoded)?,
            Framing::Close => self.decoded = self.buf.len(),
        }
        Ok(())
    }

    /// Whether the whole body of the current response has been read.
    fn body_complete(&self) -> bool {
        match &self.framing {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(chunked) => chunked.is_done(),
            Framing::Close => self.eof,
        }
    }

    /// The body read and not yet taken.
    fn body(&self) -> &[u8] {
        &self.buf[self.start..self.decoded]
    }

    fn take(&mut self, n: usize) {
        self.start = (self.start + n).min(self.decoded);
    }

    /// Reads the next response's head; its status. The previous body must have been
    /// read to its end (what is left of it is dropped).
    async fn read_head(&mut self) -> anyhow::Result<u16> {
        self.buf.drain(..self.decoded);
        (self.start, self.decoded) = (0, 0);
        // Nothing is body until the head says how it ends.
        self.framing = Framing::Length(0);
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = response
                .parse(&self.buf)
                .context("an invalid HTTP response")?
            {
                let status = response.code.context("an HTTP response without status")?;
                let mut framing = match status {
                    204 | 304 => Framing::Length(0),
                    _ => Framing::Close,
                };
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        if lossy(header.value).to_ascii_lowercase().contains("chunked") {
                            framing = Framing::Chunked(Chunked::new());
                        }
                    } else if header.name.eq_ignore_ascii_case("content-length")
                        && !matches!(framing, Framing::Chunked(_))
                    {
                        let length = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .context("an invalid Content-Length")?;
                        framing = Framing::Length(length);
                    }
                }
                self.buf.drain(..len);
                self.framing = framing;
                self.decode()?;
                return Ok(status);
            }
            if self.buf.len() > MAX_HEAD {
                bail!("an HTTP response head longer than {MAX_HEAD} bytes");
            }
            if !self.fill().await? {
                bail!("the server closed the connection");
            }
        }
    }

    /// Reads the rest of the current response's body.
    async fn read_body(&mut self) -> anyhow::Result<()> {
        while !self.body_complete() {
            if !self.fill().await? {
                bail!("the connection closed in the middle of a response");
            }
        }
        Ok(())
    }

    /// Sends the request written, and reads the whole answer: its status.
    async fn exchange(&mut self) -> anyhow::Result<u16> {
        self.send().await?;
        let status = self.read_head().await?;
        self.read_body().await?;
        Ok(status)
    }
}

/// The opening commands of a subscriber, as one JSON array.
fn opening_commands(token: &str, channel: &str) -> String {
    json!([
        {"id": 1, "cmd": "connect", "token": token},
        {"id": 2, "cmd": "subscribe", "channel": channel},
    ])
    .to_string()
}

// ---------------------------------------------------------------------------------------
// SSE subscribers.

/// The connection that the SSE subscribers of one task send their commands over, one at
/// a time; closed once all of them have opened (or failed to).
#[derive(Debug)]
pub(crate) struct Poster {
    conn: tokio::sync::Mutex<Option<Conn>>,
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

    /// `POST target` with a JSON `body`; the status, and the answer's body when it is not
    /// 202. A connection that was kept from an earlier command and fails is replaced once
    /// (the server may have closed it meanwhile).
    async fn post(
        &self,
        shared: &Shared,
        target: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let mut conn = self.conn.lock().await;
        loop {
            let kept = conn.is_some();
            let http = match &mut *conn {
                Some(http) => http,
                None => conn.insert(Conn::connect(&shared.endpoint.addr).await?),
            };
            let request = http.request();
            write!(
                request,
                "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                shared.endpoint.host,
                body.len()
            )?;
            match http.exchange().await {
                Ok(status) => {
                    let answer = if status == 202 {
                        String::new()
                    } else {
                        quote(http.body())
                    };
                    http.take(usize::MAX);
                    return Ok((status, answer));
                }
                Err(_) if kept => *conn = None,
                Err(err) => return Err(err),
            }
        }
    }
}

/// An SSE subscriber: its stream, and the scratch buffer for events of several lines.
#[derive(Debug)]
pub(crate) struct SseSub {
    conn: Conn,
    scratch: Vec<u8>,
}

impl SseSub {
    /// The next event with data, reading as needed; `None` when the stream ends. The
    /// caller takes its bytes with `self.conn.take(event.len)` once done with it.
    async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = next_event(self.conn.body(), &mut self.scratch) {
                if event.data != Data::None {
                    return Ok(Some(event));
                }
                self.conn.take(event.len);
                continue;
            }
            if self.conn.body_complete() || !self.conn.fill().await? {
                return Ok(None);
            }
        }
    }

    fn data(&self, event: &Event) -> &[u8] {
        event
            .data(self.conn.body(), &self.scratch)
            .unwrap_or_default()
    }

    /// Hands each message to `counter` until the stream ends or the session closes (why,
    /// as `Some`), or, with `opening`, until the subscribe reply (`None`).
    async fn read(
        &mut self,
        counter: &mut Counter<'_>,
        opening: bool,
    ) -> anyhow::Result<Option<String>> {
        while !(opening && counter.is_subscribed()) {
            let Some(event) = self.next().await? else {
                return Ok(Some("the stream ended".to_owned()));
            };
            match event.kind {
                Kind::Message => counter.message(self.data(&event))?,
                Kind::Close => {
                    return Ok(Some(format!(
                        "closed by the server: {}",
                        quote(self.data(&event))
                    )));
                }
                Kind::Session | Kind::Other => {}
            }
            self.conn.take(event.len);
        }
        Ok(None)
    }

    /// Counts publications until the stream ends; why it did.
    pub(crate) async fn run(mut self, counter: &mut Counter<'_>) -> String {
        match self.read(counter, false).await {
            Ok(why) => why.unwrap_or_default(),
            Err(err) => format!("connection lost: {err:#}"),
        }
    }
}

/// Opens an SSE subscriber: the stream, its `session` event, then `connect` and
/// `subscribe` through `poster`, and their replies on the stream.
pub(crate) async fn open_sse(
    shared: &Shared,
    token: &str,
    poster: &Poster,
    counter: &mut Counter<'_>,
) -> anyhow::Result<SseSub> {
    let mut conn = Conn::connect(&shared.endpoint.addr).await?;
    let request = conn.request();
    write!(
        request,
        "GET /sse HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        shared.endpoint.host
    )?;
    conn.send().await?;
    let status = conn.read_head().await?;
    if status != 200 {
        // Best effort: the answer's body says why.
        let _ = conn.read_body().await;
        bail!("GET /sse: HTTP {status}: {}", quote(conn.body()));
    }
    let mut sse = SseSub {
        conn,
        scratch: Vec::new(),
    };
    let sid = loop {
        let event = sse
            .next()
            .await?
            .context("the stream ended before its session event")?;
        let data = sse.data(&event);
        match event.kind {
            Kind::Session => {
                let sid = find(data, br#""session":""#)
                    .map(|at| &data[at + 11..])
                    .and_then(|rest| rest.iter().position(|&b| b == b'"').map(|end| &rest[..end]))
                    .with_context(|| format!("a session event without id: {}", quote(data)))?;
                let sid = lossy(sid).into_owned();
                sse.conn.take(event.len);
                break sid;
            }
            Kind::Close => bail!("the stream closed at once: {}", quote(data)),
            Kind::Message | Kind::Other => sse.conn.take(event.len),
        }
    };
    let commands = opening_commands(token, &shared.channel);
    let (status, answer) = poster
        .post(shared, &format!("/sse/send?session={sid}"), &commands)
        .await
        .context("POST /sse/send failed")?;
    if status != 202 {
        bail!("POST /sse/send: HTTP {status}: {answer}");
    }
    if let Some(why) = sse.read(counter, true).await? {
        bail!("before the subscribe reply: {why}");
    }
    Ok(sse)
}

// ---------------------------------------------------------------------------------------
// Long-polling subscribers.

/// A long-polling subscriber: its connection, session, and the last `seq` received.
#[derive(Debug)]
pub(crate) struct PollSub {
    conn: Conn,
    sid: String,
    seq: u64,
}

impl PollSub {
    /// Sends one poll (with `body`, the commands, on the first), reads its answer and hands
    /// its messages to `counter`; the reason when the session ended.
    async fn poll(
        &mut self,
        shared: &Shared,
        body: &str,
        counter: &mut Counter<'_>,
    ) -> anyhow::Result<Option<String>> {
        let request = self.conn.request();
        request.push_str("POST /poll");
        if !self.sid.is_empty() {
            write!(request, "?session={}&ack={}&wait=1", self.sid, self.seq)?;
        }
        write!(
            request,
            " HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            shared.endpoint.host,
            body.len()
        )?;
        let status = self.conn.exchange().await?;
        let answer = self.conn.body();
        if status != 200 {
            return Ok(Some(format!("HTTP {status}: {}", quote(answer))));
        }
        let read = read_poll(answer, |message| counter.message(message))?;
        if self.sid.is_empty() {
            self.sid = read.session.to_owned();
        }
        self.seq = self.seq.max(read.seq);
        let closed = read
            .closed
            .map(|closed| format!("closed by the server: {}", quote(closed)));
        self.conn.take(usize::MAX);
        Ok(closed)
    }

    /// Polls and counts publications until the session ends; why it did.
    pub(crate) async fn run(mut self, shared: &Shared, counter: &mut Counter<'_>) -> String {
        loop {
            match self.poll(shared, "", counter).await {
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
    shared: &Shared,
    token: &str,
    counter: &mut Counter<'_>,
) -> anyhow::Result<PollSub> {
    let mut poll = PollSub {
        conn: Conn::connect(&shared.endpoint.addr).await?,
        sid: String::new(),
        seq: 0,
    };
    let mut body = opening_commands(token, &shared.channel);
    while !counter.is_subscribed() {
        if let Some(why) = poll.poll(shared, &body, counter).await? {
            bail!("before the subscribe reply: {why}");
        }
        body.clear();
    }
    Ok(poll)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `encoded` fed in pieces that end at `cuts`; the body and what follows it.
    fn dechunk(encoded: &[u8], cuts: &[usize]) -> anyhow::Result<(Vec<u8>, Vec<u8>, bool)> {
        let mut chunked = Chunked::new();
        let (mut buf, mut decoded) = (Vec::new(), 0);
        let mut from = 0;
        for &cut in cuts.iter().chain([&encoded.len()]) {
            buf.extend_from_slice(&encoded[from..cut]);
            from = cut;
            chunked.decode(&mut buf, &mut decoded)?;
        }
        Ok((
            buf[..decoded].to_vec(),
            buf[decoded..].to_vec(),
            chunked.is_done(),
        ))
    }

    const ENCODED: &[u8] =
        b"7\r\nid: a:1\r\n15;ext=1\r\n\ndata: {\"offset\":1}\n\n\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1";

    #[test]
    fn chunked_bodies_are_decoded_in_place_at_any_split() {
        let body = b"id: a:1\ndata: {\"offset\":1}\n\n".to_vec();
        let rest = b"HTTP/1.1".to_vec();
        assert_eq!(
            dechunk(ENCODED, &[]).unwrap(),
            (body.clone(), rest.clone(), true)
        );
        for cut in 0..=ENCODED.len() {
            assert_eq!(
                dechunk(ENCODED, &[cut]).unwrap(),
                (body.clone(), rest.clone(), true),
                "cut at {cut}"
            );
        }
        let every: Vec<usize> = (1..ENCODED.len()).collect();
        assert_eq!(dechunk(ENCODED, &every).unwrap(), (body, rest, true));
    }

    #[test]
    fn a_chunked_body_in_progress_keeps_what_it_cannot_decode_yet() {
        // The first chunk whole, the second's size line cut.
        let (body, rest, done) = dechunk(b"3\r\nabc\r\n1", &[]).unwrap();
        assert_eq!(
            (&body[..], &rest[..], done),
            (&b"abc"[..], &b"1"[..], false)
        );
        // In the middle of a chunk's data.
        let (body, rest, done) = dechunk(b"5\r\nab", &[]).unwrap();
        assert_eq!((&body[..], &rest[..], done), (&b"ab"[..], &b""[..], false));
        // Bare LFs, as lenient servers write them.
        let (body, _, done) = dechunk(b"2\nab\n0\n\n", &[]).unwrap();
        assert_eq!((&body[..], done), (&b"ab"[..], true));
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        assert!(dechunk(b"zz\r\nab\r\n", &[]).is_err());
        assert!(dechunk(b"\r\n", &[]).is_err());
        assert!(dechunk(b"-1\r\n", &[]).is_err());
        assert!(dechunk(b"2\r\nabX\r\n", &[]).is_err());
        assert!(dechunk(&[b'1'; MAX_LINE + 2], &[]).is_err());
        // A size that does not fit 64 bits.
        assert!(dechunk(b"10000000000000000\r\n", &[]).is_err());
    }

    /// Every event of `stream` with data: (kind, data), and the bytes left.
    fn events(stream: &[u8]) -> (Vec<(Kind, String)>, usize) {
        let (mut out, mut scratch, mut at) = (Vec::new(), Vec::new(), 0);
        while let Some(event) = next_event(&stream[at..], &mut scratch) {
            if let Some(data) = event.data(&stream[at..], &scratch) {
                out.push((event.kind, String::from_utf8(data.to_vec()).unwrap()));
            }
            at += event.len;
        }
        (out, stream.len() - at)
    }

    #[test]
    fn sse_events_are_split_as_the_server_writes_them() {
        let stream = b"retry: 1000\nid: ab:0\nevent: session\ndata: {\"session\":\"ab\"}\n\n\
            : ping\n\n\
            id: ab:1\ndata: {\"id\":1,\"result\":{}}\n\n\
            id: ab:8\ndata: {\"a\":\ndata: 1,\ndata:\"b\":2}\n\n\
            event: close\r\ndata: {\"code\":4003,\"reason\":\"bye\"}\r\n\r\n\
            id: ab:9\ndata: {\"par";
        let (events, left) = events(stream);
        assert_eq!(
            events,
            vec![
                (Kind::Session, r#"{"session":"ab"}"#.into()),
                (Kind::Message, r#"{"id":1,"result":{}}"#.into()),
                (Kind::Message, "{\"a\":\n1,\n\"b\":2}".into()),
                (Kind::Close, r#"{"code":4003,"reason":"bye"}"#.into()),
            ]
        );
        assert_eq!(left, b"id: ab:9\ndata: {\"par".len());
    }

    #[test]
    fn sse_blocks_without_data_are_skipped_and_fields_follow_the_spec() {
        // A resumed stream starts with a block that only says `retry`.
        let mut scratch = Vec::new();
        let block = next_event(b"retry: 1000\n\nid: x", &mut scratch).unwrap();
        assert_eq!((block.data, block.len), (Data::None, 13));
        // No space after the colon; a field without colon; an unknown type; `data` alone is
        // an empty line of data.
        let (events, left) = events(b"data:x\nid\n\nevent: other\ndata\n\n");
        assert_eq!(
            events,
            vec![(Kind::Message, "x".into()), (Kind::Other, String::new())]
        );
        assert_eq!(left, 0);
        assert_eq!(next_event(b"data: x\n", &mut scratch), None);
        assert_eq!(next_event(b"", &mut scratch), None);
    }

    /// The messages of a poll answer, and the rest.
    fn poll(body: &str) -> anyhow::Result<(Vec<String>, u64, String, Option<String>)> {
        let mut messages = Vec::new();
        let answer = read_poll(body.as_bytes(), |m| {
            messages.push(String::from_utf8(m.to_vec())?);
            Ok(())
        })?;
        Ok((
            messages,
            answer.seq,
            answer.session.to_owned(),
            answer
                .closed
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        ))
    }

    #[test]
    fn poll_answers_are_split_into_their_messages() {
        let body = r#"{"session":"98ab","seq":4,"messages":[{"id":1,"result":{"client":"aa","user":"bob"}},{"push":"publication","channel":"c","epoch":"e","offset":3,"data":{"t":5,"s":"}],\"{[","n":[1,{"x":[]}]},"time":1}]}"#;
        let (messages, seq, session, closed) = poll(body).unwrap();
        assert_eq!((seq, session.as_str(), closed), (4, "98ab", None));
        assert_eq!(
            messages,
            vec![
                r#"{"id":1,"result":{"client":"aa","user":"bob"}}"#.to_owned(),
                r#"{"push":"publication","channel":"c","epoch":"e","offset":3,"data":{"t":5,"s":"}],\"{[","n":[1,{"x":[]}]},"time":1}"#.to_owned(),
            ]
        );
        for message in &messages {
            serde_json::from_str::<serde_json::Value>(message).unwrap();
        }
        // Whitespace between elements (inside published data it is passed through).
        let (messages, ..) =
            poll(r#"{"session":"a","seq":2,"messages":[ {"a": 1} ,	{"b":"x"} ]}"#).unwrap();
        assert_eq!(messages, vec![r#"{"a": 1}"#, r#"{"b":"x"}"#]);
    }

    #[test]
    fn poll_answers_that_end_the_session_or_are_empty() {
        let (messages, seq, _, closed) = poll(
            r#"{"session":"9888","seq":4,"messages":[],"closed":{"code":4003,"reason":"disconnected by the server"}}"#,
        )
        .unwrap();
        assert!(messages.is_empty());
        assert_eq!(seq, 4);
        assert_eq!(
            closed.as_deref(),
            Some(r#"{"code":4003,"reason":"disconnected by the server"}"#)
        );
        // A publication whose data mentions `closed` does not close anything.
        let (messages, _, _, closed) =
            poll(r#"{"session":"a","seq":1,"messages":[{"data":{"closed":1}}]}"#).unwrap();
        assert_eq!((messages.len(), closed), (1, None));
    }

    #[test]
    fn poll_answers_that_cannot_be_read_are_errors() {
        for bad in [
            r#"{"error":{"code":116,"message":"unknown or expired session"}}"#,
            r#"{"session":"a","messages":[]}"#,
            r#"{"session":"a","seq":1,"messages":[{"a":1}"#,
            r#"{"session":"a","seq":1,"messages":[{"a":"1}]}"#,
            r#"{"session":"a","seq":1,"messages":[{"a":1} {"b":2}]}"#,
            r#"{"session":"a","seq":1,"messages":[,]}"#,
        ] {
            assert!(poll(bad).is_err(), "{bad}");
        }
        // What `each` refuses ends the reading.
        let refused = read_poll(br#"{"session":"a","seq":1,"messages":[{}]}"#, |_| {
            bail!("no")
        });
        assert!(refused.is_err());
    }

    #[test]
    fn json_values_are_measured_by_nesting_and_strings() {
        assert_eq!(value_len(br#"{"a":"}\"{"}, 1"#), Some(12));
        assert_eq!(value_len(br#"[1,[2]],"#), Some(7));
        assert_eq!(value_len(br#""a\\"x"#), Some(5));
        assert_eq!(value_len(b"123,"), Some(3));
        assert_eq!(value_len(b"true]"), Some(4));
        assert_eq!(value_len(b"123"), None);
        assert_eq!(value_len(b"{\"a\":1"), None);
        assert_eq!(value_len(b",1"), None);
    }
}
