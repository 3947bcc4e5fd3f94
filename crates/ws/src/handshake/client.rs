//! The client side of the opening handshake (RFC 6455 §4.1).

use base64::Engine;

use super::{HandshakeError, MAX_HEADERS, accept_key, has_token, malformed, tokens};
use crate::deflate::{self, DeflateConfig, Params};

/// A client's upgrade request, with a fresh random key.
#[derive(Debug, Clone)]
pub struct Request {
    key: String,
    protocols: Vec<String>,
    /// The permessage-deflate settings an offer was made from, if one was.
    deflate: Option<DeflateConfig>,
    bytes: Vec<u8>,
}

impl Request {
    /// Builds the request for `path` on `host` (`host[:port]`), offering `protocols` and
    /// sending the extra `headers` (e.g. `Origin`, `Authorization`).
    pub fn new(host: &str, path: &str, protocols: &[&str], headers: &[(&str, &str)]) -> Self {
        Self::with_deflate(host, path, protocols, headers, None)
    }

    /// Like [`Request::new`], and offers permessage-deflate when `deflate` is enabled
    /// (see [`deflate::negotiation::offer`]).
    pub fn with_deflate(
        host: &str,
        path: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
        deflate: Option<&DeflateConfig>,
    ) -> Self {
        let deflate = deflate.filter(|d| d.enabled).cloned();
        // §4.1: a nonce of 16 random bytes, base64-encoded, fresh for each connection.
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let mut text = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if !protocols.is_empty() {
            text.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                protocols.join(", ")
            ));
        }
        if let Some(config) = &deflate {
            text.push_str(&format!(
                "Sec-WebSocket-Extensions: {}\r\n",
                deflate::negotiation::offer(config)
            ));
        }
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        Request {
            key,
            protocols: protocols.iter().map(|p| (*p).to_owned()).collect(),
            deflate,
            bytes: text.into_bytes(),
        }
    }

    /// The request bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Parses and checks the server's response from the start of `buf`. `Ok(None)` means
    /// it is incomplete and smaller than `max_size`; otherwise returns its length and the
    /// subprotocol the server chose.
    pub fn parse_response(
        &self,
        buf: &[u8],
        max_size: usize,
    ) -> Result<Option<(usize, Response)>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf).map_err(malformed)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial if buf.len() >= max_size => {
                return Err(HandshakeError::TooLarge(max_size));
            }
            httparse::Status::Partial => return Ok(None),
        };
        let code = resp.code.unwrap_or(0);
        if code != 101 {
            return Err(HandshakeError::Status(code));
        }
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        if !header("upgrade").is_some_and(|v| has_token(v, "websocket")) {
            return Err(HandshakeError::Upgrade);
        }
        if !header("connection").is_some_and(|v| has_token(v, "upgrade")) {
            return Err(HandshakeError::Connection);
        }
        let expected = accept_key(self.key.as_bytes());
        if header("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(expected.as_bytes()) {
            return Err(HandshakeError::Accept);
        }
        let protocol = match header("sec-websocket-protocol") {
            None => None,
            Some(p) => {
                let p = String::from_utf8_lossy(p.trim_ascii()).into_owned();
                if !self.protocols.contains(&p) {
                    return Err(HandshakeError::Protocol);
                }
                Some(p)
            }
        };
        let extensions: Vec<String> = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .flat_map(|h| tokens(h.value).map(str::to_owned))
            .collect();
        let deflate = deflate::negotiation::check_response(&extensions, self.deflate.as_ref())?;
        Ok(Some((len, Response { protocol, deflate })))
    }
}

/// A server's accepted response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters the server accepted, if it did.
    pub deflate: Option<Params>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::server;

    #[test]
    fn rfc6455_4_1_client_server_round_trip() {
        let req = Request::new(
            "example.com:80",
            "/chat",
            &["chat"],
            &[("Origin", "http://o")],
        );
        let (len, parsed) = server::parse_request(req.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        assert_eq!(len, req.as_bytes().len());
        assert_eq!(parsed.path, "/chat");
        let up = parsed.check().unwrap();
        assert_eq!(up.origin.as_deref(), Some("http://o"));
        let resp = up.response(up.choose_protocol(&["chat"]));
        let (n, r) = req.parse_response(&resp, 8192).unwrap().unwrap();
        assert_eq!(n, resp.len());
        assert_eq!(r.protocol.as_deref(), Some("chat"));
    }

    #[test]
    fn keys_are_fresh() {
        let a = Request::new("h", "/", &[], &[]);
        let b = Request::new("h", "/", &[], &[]);
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn rfc6455_4_1_bad_responses() {
        let req = Request::new("h", "/", &[], &[]);
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(req.key().as_bytes())
        );
        assert!(req.parse_response(ok.as_bytes(), 8192).unwrap().is_some());
        let cases = [
            (
                ok.replace("101 Switching Protocols", "200 OK"),
                HandshakeError::Status(200),
            ),
            (
                ok.replace("Upgrade: websocket", "Upgrade: x"),
                HandshakeError::Upgrade,
            ),
            (
                ok.replace("Connection: Upgrade", "Connection: close"),
                HandshakeError::Connection,
            ),
            (ok.replace("Accept: ", "Accept: x"), HandshakeError::Accept),
            (
                ok.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: y\r\n\r\n"),
                HandshakeError::Protocol,
            ),
        ];
        for (resp, err) in cases {
            assert_eq!(req.parse_response(resp.as_bytes(), 8192), Err(err));
        }
    }
}
