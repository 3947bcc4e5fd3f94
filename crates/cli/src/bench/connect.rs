//! Where the bench connects and with what: URLs (`ws://`, or `wss://` with TLS on every
//! connection), tokens, and a subscribed WebSocket.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use switchboard_client::url::Scheme;
use switchboard_client::{Client, HttpConnection, Stream, Tls};
use switchboard_server::auth::{self, Claims};
use switchboard_ws::CloseFrame;
use tokio::net::{TcpSocket, TcpStream};

use crate::args::BenchConnArgs;
use crate::client::{Need, server_secret};

/// Time to open one connection: TCP, handshake, connect and subscribe.
pub(crate) const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the minted tokens: longer than any hold.
const TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a bench URL names.
pub(crate) enum Target {
    /// A WebSocket endpoint.
    Ws(Endpoint),
    /// A raw TCP echo (`bench echo` only): the same bytes without WebSocket framing.
    Tcp {
        /// `host:port`.
        addr: String,
    },
}

/// Parses a bench URL: `ws://HOST[:PORT]/PATH`, `wss://` (TLS, trusting `ca`, a PEM file,
/// or else the system's roots), or `tcp://HOST:PORT`.
pub(crate) fn parse_url(url: &str, ca: Option<&Path>) -> anyhow::Result<Target> {
    if let Some(addr) = url.strip_prefix("tcp://") {
        if ca.is_some() {
            bail!("--ca is for wss:// URLs, not {url}");
        }
        let addr = addr.split('/').next().unwrap_or_default();
        return Ok(Target::Tcp {
            addr: addr.to_owned(),
        });
    }
    let url_endpoint = switchboard_client::Endpoint::parse(url)?;
    if url_endpoint.scheme != Scheme::Ws {
        bail!("unsupported scheme in {url}: use ws://, wss:// or tcp://");
    }
    // The roots are read once here, so that a bad --ca fails the bench at its start and
    // not in every connection.
    let tls = match (url_endpoint.tls, ca) {
        (true, Some(ca)) => Some(Tls::from_ca_file(ca).map_err(|err| anyhow!("--ca: {err}"))?),
        (true, None) => Some(Tls::system()?),
        (false, Some(_)) => bail!("--ca is for wss:// URLs, not {url}"),
        (false, None) => None,
    };
    Ok(Target::Ws(Endpoint {
        addr: url_endpoint.addr.clone(),
        host: url_endpoint.authority.clone(),
        path: url_endpoint.path.clone(),
        url: url_endpoint,
        tls,
    }))
}

/// Where the WebSocket endpoint is (and the HTTP transports' endpoints, at the same host).
pub(crate) struct Endpoint {
    /// `host:port`, to connect to.
    pub(crate) addr: String,
    /// For the `Host` header.
    pub(crate) host: String,
    /// The WebSocket path.
    pub(crate) path: String,
    /// The URL as parsed: its host is the name the server's certificate must carry.
    url: switchboard_client::Endpoint,
    /// With a `wss://` URL, the roots the server's certificate must chain to (every
    /// connection, WebSocket or HTTP, does a TLS handshake); `None` for `ws://`.
    tls: Option<Tls>,
}

impl Endpoint {
    /// The endpoint of a `ws://` or `wss://` URL (see [`parse_url`]).
    pub(crate) fn parse(url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
        match parse_url(url, ca)? {
            Target::Ws(endpoint) => Ok(endpoint),
            Target::Tcp { .. } => bail!("this bench needs a ws:// or wss:// URL"),
        }
    }

    /// A TCP connection to the endpoint, with `recv_buffer` as its SO_RCVBUF if given.
    pub(crate) async fn tcp(&self, recv_buffer: Option<u32>) -> anyhow::Result<TcpStream> {
        let stream = match recv_buffer {
            None => TcpStream::connect(self.addr.as_str()).await,
            Some(size) => {
                let addr = tokio::net::lookup_host(self.addr.as_str())
                    .await?
                    .next()
                    .with_context(|| format!("{} has no address", self.addr))?;
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.set_recv_buffer_size(size)?;
                socket.connect(addr).await
            }
        };
        stream.with_context(|| format!("cannot connect to {}", self.addr))
    }

    /// A connection to the endpoint (TCP, then the TLS handshake with a `wss://` URL),
    /// with `recv_buffer` as its socket's SO_RCVBUF if given.
    pub(crate) async fn connect(&self, recv_buffer: Option<u32>) -> anyhow::Result<Stream> {
        let tcp = self.tcp(recv_buffer).await?;
        self.secure(tcp).await
    }

    /// With a `wss://` URL, the TLS handshake on a TCP connection the caller opened (from
    /// a chosen source address…); otherwise the connection as it is.
    pub(crate) async fn secure(&self, tcp: TcpStream) -> anyhow::Result<Stream> {
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => Ok(self.url.secure(tcp, Some(tls)).await?),
        }
    }

    /// An HTTP connection to the endpoint's host (HTTPS with a `wss://` URL).
    pub(crate) async fn http(&self) -> anyhow::Result<HttpConnection> {
        Ok(HttpConnection::open(self.connect(None).await?, &self.host).await?)
    }
}

/// How every connection gets its token.
pub(crate) enum Auth {
    /// The same given token for all.
    Token(String),
    /// Minted per connection from the server's token secret.
    Secret(String),
}

impl Auth {
    pub(crate) fn new(args: &BenchConnArgs) -> anyhow::Result<Auth> {
        Ok(match &args.token {
            Some(token) => Auth::Token(token.clone()),
            None => Auth::Secret(server_secret(&args.source, Need::TokenSecret, "--token")?),
        })
    }

    pub(crate) fn token(&self, user: &str, channel: &str) -> anyhow::Result<String> {
        match self {
            Auth::Token(token) => Ok(token.clone()),
            Auth::Secret(secret) => Ok(auth::mint(
                secret,
                &Claims {
                    sub: user.to_owned(),
                    exp: auth::now_secs() + TOKEN_TTL.as_secs(),
                    info: None,
                    // So that a private channel works too.
                    channels: vec![channel.to_owned()],
                    roles: Vec::new(),
                    publish: Vec::new(),
                },
            )?),
        }
    }
}

/// Why a connection was closed, for a message.
pub(crate) fn close_reason(frame: &Option<CloseFrame>) -> String {
    frame.as_ref().map_or_else(
        || "no status".to_owned(),
        |f| format!("{} {}", f.code.0, f.reason),
    )
}

/// Opens a WebSocket and sends `connect`, then `subscribe` when a channel is given
/// (pipelined: commands are handled in order). Returns the subscribe reply's offset, the
/// channel's latest (0 without a channel). `recv_buffer` sets the socket's SO_RCVBUF.
pub(crate) async fn open_ws(
    endpoint: &Endpoint,
    token: &str,
    channel: Option<&str>,
    recv_buffer: Option<u32>,
) -> anyhow::Result<(Client, u64)> {
    open_ws_with(endpoint, token, channel, recv_buffer, false).await
}

/// [`open_ws`], offering permessage-deflate when `deflate` is set.
pub(crate) async fn open_ws_with(
    endpoint: &Endpoint,
    token: &str,
    channel: Option<&str>,
    recv_buffer: Option<u32>,
    deflate: bool,
) -> anyhow::Result<(Client, u64)> {
    let opening = async {
        let stream = endpoint.connect(recv_buffer).await?;
        let (host, path) = (&endpoint.host, &endpoint.path);
        let mut client = Client::handshake_with(stream, host, path, &[], deflate)
            .await
            .context("WebSocket handshake failed")?;
        let connect = json!({"id": 1, "cmd": "connect", "token": token});
        client.feed_command(connect).await?;
        if let Some(channel) = channel {
            let subscribe = json!({"id": 2, "cmd": "subscribe", "channel": channel});
            client.feed_command(subscribe).await?;
        }
        client.flush().await?;
        client.reply_result(1).await.context("connect failed")?;
        let offset = match channel {
            Some(channel) => client
                .reply_result(2)
                .await
                .with_context(|| format!("subscribe to {channel} failed"))?["offset"]
                .as_u64()
                .context("a subscribe reply without offset")?,
            None => 0,
        };
        anyhow::Ok((client, offset))
    };
    tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .map_err(|_| anyhow!("timed out opening a connection"))?
}
