//! Where a URL points: `ws://HOST[:PORT][/PATH]` or `http://HOST[:PORT][/PATH]`, or their
//! TLS forms `wss://` and `https://`.
//!
//! A Switchboard server answers WebSocket and HTTP on one port, so either scheme names the
//! same server; the path says which endpoint, and `wss`/`https` that it speaks TLS.

use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::tls::{Stream, Tls};

/// The scheme of a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://` or `wss://`: a WebSocket endpoint.
    Ws,
    /// `http://` or `https://`: an HTTP endpoint.
    Http,
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL's scheme.
    pub scheme: Scheme,
    /// Whether it is `wss://` or `https://`.
    pub tls: bool,
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    /// `host:port` (port 80, or 443 with TLS, when none is written), to connect to.
    pub addr: String,
    /// The path and query, `/` when the URL has none.
    pub path: String,
}

impl Endpoint {
    /// Parses a `ws://`, `wss://`, `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Endpoint> {
        let bad = |why| Error::Url {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        // Schemes are case-insensitive (RFC 3986, section 3.1).
        let (scheme, tls) = match scheme.to_ascii_lowercase().as_str() {
            "ws" => (Scheme::Ws, false),
            "http" => (Scheme::Http, false),
            "wss" => (Scheme::Ws, true),
            "https" => (Scheme::Http, true),
            _ => return Err(bad("use ws[s]://HOST[:PORT][/PATH] or http[s]://…")),
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            // A colon inside brackets belongs to an IPv6 address, not to a port.
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("invalid port"))?)
            }
            _ => (authority, default_port),
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
            tls,
            authority: authority.to_owned(),
            addr: format!("{host}:{port}"),
            path,
        })
    }

    /// The host, without port or IPv6 brackets: the name a TLS certificate must carry.
    pub fn host(&self) -> &str {
        let host = match self.authority.rsplit_once(':') {
            Some((host, _)) if !host.contains(':') || host.ends_with(']') => host,
            _ => &self.authority,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Opens a connection to the server: TCP, then with a TLS URL the handshake, trusting
    /// `tls` (the system's roots when `None`).
    pub async fn connect(&self, tls: Option<&Tls>) -> Result<Stream> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|cause| Error::Connect {
                addr: self.addr.clone(),
                cause,
            })?;
        self.secure(tcp, tls).await
    }

    /// With a TLS URL, does the handshake on a stream the caller connected (trusting
    /// `tls`, or the system's roots); otherwise the stream as it is.
    pub async fn secure(&self, tcp: TcpStream, tls: Option<&Tls>) -> Result<Stream> {
        if !self.tls {
            return Ok(Stream::Plain(tcp));
        }
        // Small writes that must leave at once, as over plain TCP (set before the
        // handshake, whose flights are small writes too).
        tcp.set_nodelay(true).map_err(|cause| Error::Connect {
            addr: self.addr.clone(),
            cause,
        })?;
        match tls {
            Some(tls) => tls.connect(tcp, self.host()).await,
            None => Tls::system()?.connect(tcp, self.host()).await,
        }
    }

    /// The URL of this endpoint (its scheme, authority and path).
    pub fn url(&self) -> String {
        let scheme = match (self.scheme, self.tls) {
            (Scheme::Ws, false) => "ws",
            (Scheme::Ws, true) => "wss",
            (Scheme::Http, false) => "http",
            (Scheme::Http, true) => "https",
        };
        format!("{scheme}://{}{}", self.authority, self.path)
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
                tls: false,
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
    fn tls_urls_default_to_port_443_and_name_their_host() {
        let e = Endpoint::parse("wss://example.com/ws").unwrap();
        assert_eq!(
            (e.scheme, e.tls, e.addr.as_str(), e.host()),
            (Scheme::Ws, true, "example.com:443", "example.com")
        );
        let e = Endpoint::parse("HTTPS://[::1]:8443/x").unwrap();
        assert_eq!(
            (e.scheme, e.tls, e.addr.as_str(), e.host()),
            (Scheme::Http, true, "[::1]:8443", "::1")
        );
        assert_eq!(e.url(), "https://[::1]:8443/x");
        assert_eq!(Endpoint::parse("ws://h:9/ws").unwrap().host(), "h");
        assert!(!Endpoint::parse("http://h").unwrap().tls);
    }

    #[test]
    fn urls_this_client_cannot_use_are_refused() {
        for bad in ["tcp://h/", "ws://", "ws://h:port/", "ws:/h", "ws://:80/"] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::Url { .. })),
                "{bad}"
            );
        }
    }
}
