//! Long polling: `POST /poll`, each answer acknowledging the last.
//!
//! An answer is `{"session":"<sid>","seq":<n>,"messages":[…],"closed":{…}}`.
//! [`Answer::parse`] finds its messages without parsing them: a load client counts
//! publications by a byte search, and parsing every message as JSON would cost it more
//! than the server spends sending them. Each message is handed on as the bytes the
//! server wrote.

use std::ops::Range;

use bytes::Bytes;

use crate::error::{Error, Result, quote};
use crate::http::HttpConnection;

/// A poll answer, split.
#[derive(Debug, Clone)]
pub struct Answer {
    body: Bytes,
    session: Range<usize>,
    /// The seq of the last message in this answer (what the next poll acknowledges).
    pub seq: u64,
    messages: Vec<Range<usize>>,
    closed: Option<Range<usize>>,
}

impl Answer {
    /// Splits an answer. The server writes `session` and `seq` before `messages`, and
    /// `closed` after it, so each is found by its key in its part; the array is split by
    /// a scan that tracks nesting and strings (its elements are not validated).
    pub fn parse(body: Bytes) -> Result<Answer> {
        const MESSAGES: &[u8] = br#""messages":["#;
        let bad = || {
            Error::Unexpected(format!(
                "a poll answer that cannot be read: {}",
                quote(&body)
            ))
        };
        let at = find(&body, MESSAGES).ok_or_else(bad)?;
        let head = &body[..at];
        let seq = number_after(head, br#""seq":"#).ok_or_else(bad)?;
        let session = find(head, br#""session":""#)
            .map(|i| i + 11)
            .and_then(|start| {
                let len = head[start..].iter().position(|&b| b == b'"')?;
                std::str::from_utf8(&head[start..start + len]).ok()?;
                Some(start..start + len)
            })
            .ok_or_else(bad)?;
        let mut messages = Vec::new();
        let mut i = at + MESSAGES.len();
        let end = loop {
            i += whitespace(&body[i..]);
            match body.get(i) {
                Some(b']') => break i,
                Some(_) => {}
                None => return Err(bad()),
            }
            let len = value_len(&body[i..]).ok_or_else(bad)?;
            messages.push(i..i + len);
            i += len;
            i += whitespace(&body[i..]);
            match body.get(i) {
                Some(b',') => i += 1,
                Some(b']') => break i,
                _ => return Err(bad()),
            }
        };
        let closed = find(&body[end..], br#""closed":"#).map(|at| {
            let start = end + at + 9;
            let value = body[start..].trim_ascii();
            let skipped = body[start..].len() - body[start..].trim_ascii_start().len();
            let len = value.strip_suffix(b"}").unwrap_or(value).len();
            start + skipped..start + skipped + len
        });
        Ok(Answer {
            session,
            seq,
            messages,
            closed,
            body,
        })
    }

    /// The session id.
    pub fn session(&self) -> &str {
        // Checked to be UTF-8 by `parse`.
        std::str::from_utf8(&self.body[self.session.clone()]).unwrap_or_default()
    }

    /// The messages, each as the server wrote it.
    pub fn messages(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.messages.iter().map(|range| &self.body[range.clone()])
    }

    /// The `closed` object (`{"code","reason"}`), when the session ended.
    pub fn closed(&self) -> Option<&[u8]> {
        self.closed.clone().map(|range| &self.body[range])
    }

    /// The whole answer.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The unsigned integer right after `key` in `text`.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn whitespace(text: &[u8]) -> usize {
    text.iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

/// The length of the JSON value that `text` starts with, found by tracking nesting and
/// strings. A number or literal ends at a delimiter.
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

/// A long-polling session over one keep-alive connection. The first poll opens the
/// session; each later one names it and acknowledges the last seq received.
#[derive(Debug)]
pub struct LongPoll {
    conn: HttpConnection,
    session: Option<String>,
    ack: u64,
}

impl LongPoll {
    /// A session not opened yet, over a new connection to `addr`.
    pub async fn connect(addr: &str) -> Result<LongPoll> {
        Ok(LongPoll::on(HttpConnection::connect(addr).await?))
    }

    /// A session not opened yet, over `conn`.
    pub fn on(conn: HttpConnection) -> LongPoll {
        LongPoll {
            conn,
            session: None,
            ack: 0,
        }
    }

    /// The session id, once an answer named it.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The seq the next poll acknowledges.
    pub fn ack(&self) -> u64 {
        self.ack
    }

    /// The path of the next poll.
    pub fn path(&self, wait: bool) -> String {
        let wait = u8::from(wait);
        match &self.session {
            Some(sid) => format!("/poll?session={sid}&ack={}&wait={wait}", self.ack),
            None => format!("/poll?wait={wait}"),
        }
    }

    /// One poll with `commands` (a JSON command or array, or nothing) as its body;
    /// with `wait`, held by the server until there is something to deliver. An answer
    /// other than 200 is [`Error::Status`].
    pub async fn poll(&mut self, commands: &str, wait: bool) -> Result<Answer> {
        let path = self.path(wait);
        let headers = [("Content-Type", "application/json")];
        let response = self
            .conn
            .request(
                "POST",
                &path,
                &headers,
                Bytes::copy_from_slice(commands.as_bytes()),
            )
            .await?
            .expect(200)?;
        let answer = Answer::parse(response.body)?;
        if self.session.is_none() {
            self.session = Some(answer.session().to_owned());
        }
        self.ack = self.ack.max(answer.seq);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of a poll answer, and the rest.
    fn poll(body: &str) -> Result<(Vec<String>, u64, String, Option<String>)> {
        let answer = Answer::parse(Bytes::copy_from_slice(body.as_bytes()))?;
        Ok((
            answer
                .messages()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect(),
            answer.seq,
            answer.session().to_owned(),
            answer
                .closed()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        ))
    }

    #[test]
    fn answers_are_split_into_their_messages() {
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
    fn answers_that_end_the_session_or_are_empty() {
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
    fn answers_that_cannot_be_read_are_errors() {
        for bad in [
            r#"{"error":{"code":116,"message":"unknown or expired session"}}"#,
            r#"{"session":"a","messages":[]}"#,
            r#"{"session":"a","seq":1,"messages":[{"a":1}"#,
            r#"{"session":"a","seq":1,"messages":[{"a":"1}]}"#,
            r#"{"session":"a","seq":1,"messages":[{"a":1} {"b":2}]}"#,
            r#"{"session":"a","seq":1,"messages":[,]}"#,
        ] {
            assert!(matches!(poll(bad), Err(Error::Unexpected(_))), "{bad}");
        }
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
