//! The event stream's format: how a session's messages are written as Server-Sent Events.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::outbox::Disconnect;

/// The sending end of a stream's body: chunks of encoded events.
pub(crate) type StreamTx = mpsc::Sender<Bytes>;
/// How long the browser waits before reconnecting a cut stream, in milliseconds.
pub(crate) const RETRY_MS: u32 = 1000;

/// The keep-alive comment, sent after `limits.ping_interval` without a write.
pub(crate) const PING: &[u8] = b": ping\n\n";

/// The start of a new session's stream: the reconnect delay and the `session` event.
pub(crate) fn opening(sid: &str) -> Bytes {
    Bytes::from(format!(
        "retry: {RETRY_MS}\nid: {sid}:0\nevent: session\ndata: {{\"session\":\"{sid}\"}}\n\n"
    ))
}

/// Appends one message as an event: `id: <sid>:<seq>` and its JSON as data.
pub(crate) fn message(out: &mut BytesMut, sid: &str, seq: u64, payload: &[u8]) {
    out.reserve(payload.len() + sid.len() + 32);
    out.put_slice(b"id: ");
    out.put_slice(sid.as_bytes());
    out.put_slice(format!(":{seq}\n").as_bytes());
    data(out, payload);
    out.put_u8(b'\n');
}

/// Appends the `close` event that ends a stream.
pub(crate) fn close(out: &mut BytesMut, reason: &Disconnect) {
    out.put_slice(b"event: close\n");
    data(out, reason.to_json().as_bytes());
    out.put_u8(b'\n');
}

/// Appends `data:` lines. Published data is passed through as sent, so a message may
/// hold line breaks (JSON whitespace, never inside a string); each line then gets its own
/// `data:` field, which the client joins with `\n` into the same JSON.
fn data(out: &mut BytesMut, payload: &[u8]) {
    if !payload.iter().any(|&b| b == b'\n' || b == b'\r') {
        out.put_slice(b"data: ");
        out.put_slice(payload);
        out.put_u8(b'\n');
        return;
    }
    let mut rest = payload;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            return;
        }
        // A CR LF pair is one line break.
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::close as codes;

    fn event(sid: &str, seq: u64, payload: &str) -> String {
        let mut out = BytesMut::new();
        message(&mut out, sid, seq, payload.as_bytes());
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    #[test]
    fn events() {
        assert_eq!(
            &opening("ab")[..],
            b"retry: 1000\nid: ab:0\nevent: session\ndata: {\"session\":\"ab\"}\n\n"
        );
        assert_eq!(
            event("ab", 7, r#"{"a":1}"#),
            "id: ab:7\ndata: {\"a\":1}\n\n"
        );
        // Line breaks in published data: one data line each, CR LF counted once.
        assert_eq!(
            event("ab", 8, "{\"a\":\r\n1,\n\"b\":\r2}"),
            "id: ab:8\ndata: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n"
        );
        assert_eq!(event("ab", 9, "1\n"), "id: ab:9\ndata: 1\ndata: \n\n");
        let mut out = BytesMut::new();
        close(
            &mut out,
            &Disconnect {
                code: codes::DISCONNECTED,
                reason: "bye \"now\"".into(),
            },
        );
        assert_eq!(
            &out[..],
            b"event: close\ndata: {\"code\":4003,\"reason\":\"bye \\\"now\\\"\"}\n\n"
        );
    }
}
