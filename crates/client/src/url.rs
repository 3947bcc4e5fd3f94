//! Where a URL points: `ws://HOST[:PORT][/PATH]` or `http://HOST[:PORT][/PATH]`.
//!
//! A Switchboard server answers WebSocket and HTTP on one port, so either scheme names the
//! same server; the path says which endpoint. TLS (`wss://`, `https://`) is left to a
//! front proxy and is not spoken here.

use crate::error::{Error, Result};

/// The scheme of a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`: a WebSocket endpoint.
    Ws,
    /// `http://`: an HTTP endpoint.
    Http,
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL's scheme.
    pub scheme: Scheme,
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    /// `host:port` (port 80 when none is written), to connect to.
    pub addr: String,
    /// The path and query, `/` when the URL has none.
    pub path: String,
}

impl Endpoint {
    /// Parses a `ws://` or `http://` URL.
    pub fn parse(url: &str) -> Result<Endpoint> {
        let bad = |why| Error::Url {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        // Schemes are case-insensitive (RFC 3986, section 3.1).
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" => Scheme::Ws,
            "http" => Scheme::Http,
            "wss" | "https" => return Err(bad("TLS is not supported: use ws:// or http://")),
            _ => return Err(bad("use ws://HOST[:PORT][/PATH] or http://…")),
        };
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            // A colon inside brackets belongs to an IPv6 address, not to a port.
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("invalid port"))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(bad("no host"));
        }
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Endpoint {
            scheme,
            authority: authority.to_owned(),
            addr: format!("{host}:{port}"),
            path,
        })
    }

    /// The same server with another path (e.g. `/sse` beside a `/ws` URL).
    pub fn with_path(&self, path: &str) -> Endpoint {
        Endpoint {
            path: path.to_owned(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_address_the_host_and_the_path() {
        let e = Endpoint::parse("ws://127.0.0.1:8000/ws").unwrap();
        assert_eq!(
            e,
            Endpoint {
                scheme: Scheme::Ws,
                authority: "127.0.0.1:8000".into(),
                addr: "127.0.0.1:8000".into(),
                path: "/ws".into()
            }
        );
        let e = Endpoint::parse("http://example.com").unwrap();
        assert_eq!(
            (e.scheme, e.addr.as_str(), e.path.as_str()),
            (Scheme::Http, "example.com:80", "/")
        );
        let e = Endpoint::parse("ws://[::1]:9000/x/ws?a=b").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.path.as_str()),
            ("[::1]:9000", "/x/ws?a=b")
        );
        assert_eq!(Endpoint::parse("ws://[::1]/").unwrap().addr, "[::1]:80");
        assert_eq!(Endpoint::parse("http://h?x=1").unwrap().path, "/?x=1");
        assert_eq!(Endpoint::parse("WS://h").unwrap().scheme, Scheme::Ws);
        assert_eq!(
            Endpoint::parse("ws://h:1/ws")
                .unwrap()
                .with_path("/sse")
                .path,
            "/sse"
        );
    }

    #[test]
    fn urls_this_client_cannot_use_are_refused() {
        for bad in [
            "wss://h/ws",
            "https://h/",
            "tcp://h/",
            "ws://",
            "ws://h:port/",
            "ws:/h",
            "ws://:80/",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::Url { .. })),
                "{bad}"
            );
        }
    }
}
