//! The opening handshake parsers on arbitrary bytes.
//!
//! Server: `handshake::server::parse_request(data, 8192)`, then `Request::check()`.
//! Client: `handshake::client::Request::new(..).parse_response(data', 8192)`, where
//! `data'` is the input with every `@ACCEPT@` replaced by the accept key of the request's
//! random `Sec-WebSocket-Key`, so the fuzzer can get past the accept check (the key is
//! random, hence unguessable otherwise).
//!
//! Checked:
//! - no panic;
//! - a parsed length is <= the input length and <= the size limit; `Ok(None)` only for
//!   inputs shorter than the limit;
//! - parsing exactly the reported prefix gives the same request;
//! - an accepted request yields a `101` response that parses as one complete HTTP
//!   response with the expected accept key and protocol; a rejected one yields a 400/426
//!   response that parses completely with a matching Content-Length;
//! - a client-accepted response names only an offered subprotocol.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_ws::handshake::server::{self, rejection};
use switchboard_ws::handshake::{accept_key, client};

const MAX: usize = 8192;
const PROTOCOLS: &[&str] = &["chat", "superchat"];
const PLACEHOLDER: &[u8] = b"@ACCEPT@";

fn parse_response(bytes: &[u8]) -> (usize, u16, Vec<(String, Vec<u8>)>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("our own response does not parse: {other:?}\n{bytes:?}"),
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    (len, resp.code.unwrap_or(0), headers)
}

fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn server_side(data: &[u8]) {
    match server::parse_request(data, MAX) {
        Ok(Some((len, req))) => {
            assert!(len <= data.len(), "length {len} beyond the input");
            assert!(len <= MAX, "length {len} beyond the limit");
            assert_eq!(
                server::parse_request(&data[..len], MAX),
                Ok(Some((len, req.clone()))),
                "the reported prefix parses differently"
            );
            match req.check() {
                Ok(up) => {
                    assert!(req.method == "GET" && req.http11);
                    let protocol = up.protocols.first().map(String::as_str);
                    let chosen = protocol.and_then(|p| up.choose_protocol(&[p]));
                    assert_eq!(chosen, protocol);
                    let resp = up.response(chosen);
                    let (n, code, headers) = parse_response(&resp);
                    assert_eq!(n, resp.len());
                    assert_eq!(code, 101);
                    assert_eq!(
                        header(&headers, "sec-websocket-accept"),
                        Some(up.accept.as_bytes())
                    );
                    assert_eq!(
                        header(&headers, "sec-websocket-protocol"),
                        chosen.map(str::as_bytes)
                    );
                }
                Err(e) => {
                    let resp = rejection(&e);
                    let (n, code, headers) = parse_response(&resp);
                    assert_eq!(code, e.status());
                    let body_len = resp.len() - n;
                    assert_eq!(
                        header(&headers, "content-length"),
                        Some(body_len.to_string().as_bytes())
                    );
                }
            }
        }
        Ok(None) => assert!(data.len() < MAX, "Ok(None) at or above the limit"),
        Err(_) => {}
    }
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

fn client_side(data: &[u8]) {
    let req = client::Request::new("server.example.com", "/chat", PROTOCOLS, &[]);
    let accept = accept_key(req.key().as_bytes());
    let data = replace_all(data, PLACEHOLDER, accept.as_bytes());
    match req.parse_response(&data, MAX) {
        Ok(Some((len, resp))) => {
            assert!(len <= data.len(), "length {len} beyond the input");
            if let Some(p) = resp.protocol {
                assert!(
                    PROTOCOLS.contains(&p.as_str()),
                    "protocol {p:?} was not offered"
                );
            }
        }
        Ok(None) => assert!(data.len() < MAX, "Ok(None) at or above the limit"),
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    server_side(data);
    client_side(data);
});
