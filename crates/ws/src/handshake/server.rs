//! The server side of the opening handshake (RFC 6455 §4.2).
//!
//! [`parse_request`] reads a raw HTTP request from a bounded buffer; [`check`] applies the
//! rules of §4.2.1 to any header list, so an HTTP library's parsed request (hyper) goes
//! through the same checks as a raw socket. [`Upgrade::response`] builds the `101` and
//! [`rejection`] the `400`/`426` answer.

use base64::Engine;

use super::{HandshakeError, MAX_HEADERS, accept_key, has_token, malformed, tokens};

/// An HTTP request line and headers, owned (the handshake is not a hot path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target, e.g. `/ws?x=1`.
    pub path: String,
    /// Whether the request is HTTP/1.1 (httparse parses only 1.0 and 1.1).
    pub http11: bool,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Checks the request as a WebSocket upgrade.
    pub fn check(&self) -> Result<Upgrade, HandshakeError> {
        check(
            &self.method,
            self.http11,
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )
    }
}

/// Parses a request from the start of `buf`. `Ok(None)` means it is incomplete and
/// smaller than `max_size`; otherwise returns the request and its length in bytes.
pub fn parse_request(
    buf: &[u8],
    max_size: usize,
) -> Result<Option<(usize, Request)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf).map_err(malformed)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() >= max_size => {
            return Err(HandshakeError::TooLarge(max_size));
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > max_size {
        return Err(HandshakeError::TooLarge(max_size));
    }
    let request = Request {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        http11: req.version == Some(1),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_owned()))
            .collect(),
    };
    Ok(Some((len, request)))
}

/// A request that passed every check of §4.2.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value to send back.
    pub accept: String,
    /// The version the client asked for: 13, or the hybi drafts 8 and 7, whose framing
    /// is identical.
    pub version: u8,
    /// The subprotocols the client offered, in its order of preference.
    pub protocols: Vec<String>,
    /// The extension offers, as sent (permessage-deflate negotiation reads these).
    pub extensions: Vec<String>,
    /// The `Origin` header, for the caller's cross-site check.
    pub origin: Option<String>,
    /// The `Host` header.
    pub host: String,
}

/// Applies the rules of RFC 6455 §4.2.1 to a request's method, version and headers.
pub fn check<'a>(
    method: &str,
    http11: bool,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Upgrade, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::Method);
    }
    if !http11 {
        return Err(HandshakeError::HttpVersion);
    }
    let (mut host, mut upgrade, mut connection, mut key, mut version) =
        (None, false, false, None, None);
    let (mut protocols, mut extensions, mut origin) = (Vec::new(), Vec::new(), None);
    for (name, value) in headers {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("host") {
            host = Some(String::from_utf8_lossy(value).into_owned());
        } else if is("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if is("connection") {
            connection |= has_token(value, "upgrade");
        } else if is("sec-websocket-key") {
            key = Some(value);
        } else if is("sec-websocket-version") {
            version = Some(value);
        } else if is("sec-websocket-protocol") {
            protocols.extend(tokens(value).map(str::to_owned));
        } else if is("sec-websocket-extensions") {
            extensions.extend(tokens(value).map(str::to_owned));
        } else if is("origin") || is("sec-websocket-origin") {
            // Sec-WebSocket-Origin is what the hybi-07/08 drafts called it.
            origin = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    let host = host.ok_or(HandshakeError::MissingHost)?;
    if !upgrade {
        return Err(HandshakeError::Upgrade);
    }
    if !connection {
        return Err(HandshakeError::Connection);
    }
    let key = key.map(<[u8]>::trim_ascii).ok_or(HandshakeError::Key)?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    let version = match version.map(<[u8]>::trim_ascii) {
        None => return Err(HandshakeError::MissingVersion),
        Some(b"13") => 13,
        Some(b"8") => 8,
        Some(b"7") => 7,
        Some(_) => return Err(HandshakeError::UnsupportedVersion),
    };
    Ok(Upgrade {
        accept: accept_key(key),
        version,
        protocols,
        extensions,
        origin,
        host,
    })
}

impl Upgrade {
    /// Picks the subprotocol: the first one the client offered that `supported` contains
    /// (the client lists them by preference, §4.1).
    pub fn choose_protocol<'s>(&self, supported: &[&'s str]) -> Option<&'s str> {
        self.protocols
            .iter()
            .find_map(|offered| supported.iter().find(|s| **s == offered.as_str()).copied())
    }

    /// The `101 Switching Protocols` response, with `protocol` if one was chosen. The
    /// chosen protocol must be one the client offered (§4.2.2).
    pub fn response(&self, protocol: Option<&str>) -> Vec<u8> {
        self.response_with(protocol, None)
    }

    /// [`Upgrade::response`] with a `Sec-WebSocket-Extensions` value, e.g. the
    /// [`crate::deflate::Params::to_header`] of a negotiated permessage-deflate.
    pub fn response_with(&self, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            self.accept
        );
        if let Some(p) = protocol.filter(|p| self.protocols.iter().any(|o| o == p)) {
            out.push_str("Sec-WebSocket-Protocol: ");
            out.push_str(p);
            out.push_str("\r\n");
        }
        if let Some(extensions) = extensions {
            out.push_str("Sec-WebSocket-Extensions: ");
            out.push_str(extensions);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// The HTTP response refusing a handshake: `426` with `Sec-WebSocket-Version: 13` for an
/// unsupported version (§4.4), `400` otherwise; the body names the rule that failed.
pub fn rejection(err: &HandshakeError) -> Vec<u8> {
    let body = format!("{err}\n");
    let (status, extra) = match err.status() {
        426 => ("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n"),
        _ => ("400 Bad Request", ""),
    };
    format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn check_bytes(bytes: &[u8]) -> Result<Upgrade, HandshakeError> {
        let (_, req) = parse_request(bytes, 8192)?.ok_or(HandshakeError::Malformed("partial"))?;
        req.check()
    }

    fn replace(from: &str, to: &str) -> Vec<u8> {
        String::from_utf8_lossy(SAMPLE)
            .replace(from, to)
            .into_bytes()
    }

    #[test]
    fn rfc6455_1_3_sample_request() {
        let up = check_bytes(SAMPLE).unwrap();
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.protocols, ["chat", "superchat"]);
        assert_eq!(up.origin.as_deref(), Some("http://example.com"));
        assert_eq!(up.choose_protocol(&["superchat", "chat"]), Some("chat"));
        let resp = String::from_utf8(up.response(Some("chat"))).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: chat\r\n"));
        // A protocol that was not offered is never echoed.
        assert!(
            !String::from_utf8(up.response(Some("x")))
                .unwrap()
                .contains("Sec-WebSocket-Protocol")
        );
    }

    #[test]
    fn rfc6455_4_2_1_each_rule() {
        let cases: &[(&str, &str, HandshakeError)] = &[
            ("GET /chat", "POST /chat", HandshakeError::Method),
            (
                "HTTP/1.1\r\nHost",
                "HTTP/1.0\r\nHost",
                HandshakeError::HttpVersion,
            ),
            (
                "Host: server.example.com\r\n",
                "",
                HandshakeError::MissingHost,
            ),
            (
                "Upgrade: websocket",
                "Upgrade: h2c",
                HandshakeError::Upgrade,
            ),
            (
                "Connection: Upgrade",
                "Connection: keep-alive",
                HandshakeError::Connection,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "dGhlIHNhbXBsZQ==",
                HandshakeError::Key,
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "not base64!!",
                HandshakeError::Key,
            ),
            (
                "Sec-WebSocket-Version: 13\r\n",
                "",
                HandshakeError::MissingVersion,
            ),
            (
                "Version: 13",
                "Version: 12",
                HandshakeError::UnsupportedVersion,
            ),
        ];
        for (from, to, expected) in cases {
            assert_eq!(
                check_bytes(&replace(from, to)).as_ref(),
                Err(expected),
                "{to}"
            );
        }
    }

    #[test]
    fn tokens_and_case() {
        let up = check_bytes(&replace(
            "Connection: Upgrade",
            "connection: keep-alive, UPGRADE",
        ))
        .unwrap();
        assert_eq!(up.version, 13);
        let up = check_bytes(&replace("Upgrade: websocket", "upgrade: WebSocket")).unwrap();
        assert_eq!(up.version, 13);
    }

    #[test]
    fn hybi_drafts_8_and_7_are_accepted() {
        assert_eq!(
            check_bytes(&replace("Version: 13", "Version: 8"))
                .unwrap()
                .version,
            8
        );
        assert_eq!(
            check_bytes(&replace("Version: 13", "Version: 7"))
                .unwrap()
                .version,
            7
        );
    }

    #[test]
    fn rfc6455_4_4_unsupported_version_gets_426() {
        let resp = rejection(&HandshakeError::UnsupportedVersion);
        let resp = String::from_utf8(resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
        let resp = String::from_utf8(rejection(&HandshakeError::Key)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(resp.ends_with("Sec-WebSocket-Key must be the base64 encoding of 16 bytes\n"));
    }

    #[test]
    fn partial_and_oversized_requests() {
        assert_eq!(parse_request(&SAMPLE[..40], 8192), Ok(None));
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 9000]].concat();
        assert_eq!(
            parse_request(&huge, 8192),
            Err(HandshakeError::TooLarge(8192))
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&many, 8192),
            Err(HandshakeError::TooManyHeaders)
        );
    }
}
