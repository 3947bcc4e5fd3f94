//! HTTP/1.1 over hyper's client: one keep-alive connection at a time, driven by its caller.
//!
//! hyper splits a client connection in two: a `SendRequest` handle and a `Connection`
//! future that does the I/O, usually spawned as a task of its own. Here the connection
//! future is polled by whoever awaits the connection ([`HttpConnection`],
//! [`ResponseStream`]), beside what they await. So a connection is one future, not two
//! tasks: a load client that polls thousands of streams from a few tasks (`switchboard
//! bench`) pays one wake-up per read, and a connection that nobody awaits does nothing
//! (its bytes wait in the socket, as with a plain `TcpStream`).

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{Error, Result, quote};
use crate::tls::{Stream, Tls};
use crate::url::Endpoint;

/// Largest body [`HttpConnection::request`] reads whole: a poll answer holds at most the
/// session's `limits.outbox_bytes` (4 MiB by default) of messages.
pub const MAX_BODY: usize = 16 << 20;

/// hyper's connection future, which does the I/O.
type Conn = http1::Connection<TokioIo<Stream>, Full<Bytes>>;

/// The connection future and whether it has finished (it must not be polled again then).
struct Driver {
    conn: Pin<Box<Conn>>,
    done: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Awaits `fut` while polling the connection, which moves its bytes. Once the
    /// connection has ended, `fut` (a response, a body frame) resolves on its own, with
    /// the end or an error.
    ///
    /// `fut` is polled again right after the connection: what the connection just read
    /// (a body chunk) is taken in the same poll, not after a wake-up of its own. A load
    /// client that polls many connections from one task saw its SSE latency grow by half
    /// without this.
    async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if self.done {
                return Poll::Pending;
            }
            // Ok or not, the response or body being awaited reports how it ended.
            if self.conn.as_mut().poll(cx).is_ready() {
                self.done = true;
            }
            fut.as_mut().poll(cx)
        })
        .await
    }
}

/// One HTTP/1.1 connection: requests go out one at a time; each answer is read whole
/// ([`request`](Self::request)) or streamed ([`stream`](Self::stream)).
#[derive(Debug)]
pub struct HttpConnection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
    /// The `Host` header of every request, unless the caller names another.
    host: String,
}

impl HttpConnection {
    /// Connects to `addr` (`host:port`); requests name it as their `Host`.
    pub async fn connect(addr: &str) -> Result<HttpConnection> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|cause| Error::Connect {
                addr: addr.to_owned(),
                cause,
            })?;
        HttpConnection::open(stream, addr).await
    }

    /// Connects to the server of an `http://` or `https://` endpoint (trusting `tls`, or
    /// the system's roots); requests name its authority as their `Host`.
    pub async fn connect_to(endpoint: &Endpoint, tls: Option<&Tls>) -> Result<HttpConnection> {
        let stream = endpoint.connect(tls).await?;
        HttpConnection::open(stream, &endpoint.authority).await
    }

    /// Speaks HTTP on a stream the caller connected (to bind a source address, size the
    /// buffers…; a `TcpStream` or a TLS [`Stream`]), naming `host` as the `Host` of every
    /// request.
    pub async fn open(stream: impl Into<Stream>, host: &str) -> Result<HttpConnection> {
        let stream = stream.into();
        stream.no_delay(host)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(HttpConnection {
            sender,
            driver: Driver {
                conn: Box::pin(conn),
                done: false,
            },
            host: host.to_owned(),
        })
    }

    /// Whether the connection can take no more requests (the server closed it, or an
    /// exchange failed).
    pub fn is_closed(&self) -> bool {
        self.driver.done || self.sender.is_closed()
    }

    /// Sends a request and reads the whole answer (at most [`MAX_BODY`] bytes of body).
    /// `headers` are sent as given; `Host` is added unless among them.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response> {
        let response = self.send(method, path, headers, body.into()).await?;
        let (parts, body) = response.into_parts();
        let body = self.driver.drive(read_to_end(body, MAX_BODY)).await?;
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request and returns as soon as the answer's head has arrived; its body is
    /// read piece by piece from the [`ResponseStream`], which keeps the connection.
    pub async fn stream(
        mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<ResponseStream> {
        let response = self.send(method, path, headers, body.into()).await?;
        let (parts, body) = response.into_parts();
        Ok(ResponseStream {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            conn: self,
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>> {
        let request = build(&self.host, method, path, headers, body)?;
        self.driver.drive(self.sender.ready()).await?;
        Ok(self.driver.drive(self.sender.send_request(request)).await?)
    }
}

/// A request as hyper takes it.
fn build(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>> {
    let invalid =
        |what: &str, err: &dyn std::fmt::Display| Error::Request(format!("{what}: {err}"));
    let mut request = hyper::Request::new(Full::new(body));
    *request.method_mut() =
        hyper::Method::from_bytes(method.as_bytes()).map_err(|e| invalid(method, &e))?;
    *request.uri_mut() = path.parse().map_err(|e| invalid(path, &e))?;
    let map = request.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(name, &e))?;
        let value = HeaderValue::from_str(value).map_err(|e| invalid(value, &e))?;
        map.append(name, value);
    }
    if !map.contains_key(hyper::header::HOST) {
        let value = HeaderValue::from_str(host).map_err(|e| invalid(host, &e))?;
        map.insert(hyper::header::HOST, value);
    }
    Ok(request)
}

/// Reads a body to its end, at most `max` bytes. One frame is kept as it came (no copy).
async fn read_to_end(mut body: Incoming, max: usize) -> Result<Bytes> {
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // Trailers.
        };
        let len = first.as_ref().map_or(0, Bytes::len) + more.len() + data.len();
        if len > max {
            return Err(Error::Unexpected(format!(
                "an HTTP body of more than {max} bytes"
            )));
        }
        match &first {
            None => first = Some(data),
            Some(head) => {
                if more.is_empty() {
                    more.extend_from_slice(head);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    Ok(match (first, more.is_empty()) {
        (first, true) => first.unwrap_or_default(),
        (_, false) => more.freeze(),
    })
}

/// A whole HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, de-chunked.
    pub body: Bytes,
}

impl Response {
    /// A header's value (the first of that name), when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as text (lossy: invalid UTF-8 becomes U+FFFD).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::Unexpected(format!(
                "HTTP {}: a body that is not JSON ({e}): {}",
                self.status,
                quote(&self.body)
            ))
        })
    }

    /// `Err(Error::Status)` with the start of the body unless the status is `expected`.
    pub fn expect(self, expected: u16) -> Result<Response> {
        if self.status == expected {
            Ok(self)
        } else {
            Err(Error::Status {
                status: self.status,
                body: quote(&self.body),
            })
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// An answer whose body is read as it arrives (an event stream). It owns its connection.
#[derive(Debug)]
pub struct ResponseStream {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    body: Incoming,
    conn: HttpConnection,
}

impl ResponseStream {
    /// A header's value (the first of that name), when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The next piece of the body as it arrived, de-chunked; `None` at its end. An error
    /// when the connection breaks before the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let frame = self.conn.driver.drive(self.body.frame()).await;
            match frame {
                None => return Ok(None),
                Some(frame) => match frame?.into_data() {
                    Ok(data) if !data.is_empty() => return Ok(Some(data)),
                    _ => {} // Trailers, or an empty frame.
                },
            }
        }
    }

    /// Reads the rest of the body (at most [`MAX_BODY`] bytes) and gives the connection
    /// back, for the next request (check [`HttpConnection::is_closed`] first).
    pub async fn finish(mut self) -> Result<(Bytes, HttpConnection)> {
        let body = self
            .conn
            .driver
            .drive(read_to_end(self.body, MAX_BODY))
            .await?;
        Ok((body, self.conn))
    }

    /// Reads the rest of the body (at most [`MAX_BODY`] bytes).
    pub async fn read_to_end(mut self) -> Result<Bytes> {
        self.conn
            .driver
            .drive(read_to_end(self.body, MAX_BODY))
            .await
    }
}

/// One request on a connection of its own (`Connection: close`), the whole answer.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response> {
    let mut conn = HttpConnection::connect(addr).await?;
    let mut all = headers.to_vec();
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        all.push(("Connection", "close"));
    }
    conn.request(method, path, &all, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_host_unless_given_one() {
        let r = build(
            "h:1",
            "POST",
            "/api/x?y=1",
            &[("X-API-Key", "k")],
            Bytes::new(),
        )
        .unwrap();
        assert_eq!(r.method(), "POST");
        assert_eq!(r.uri(), "/api/x?y=1");
        assert_eq!(r.headers()["host"], "h:1");
        assert_eq!(r.headers()["x-api-key"], "k");
        let r = build("h:1", "GET", "/", &[("Host", "other")], Bytes::new()).unwrap();
        assert_eq!(r.headers().get_all("host").iter().count(), 1);
        assert_eq!(r.headers()["host"], "other");
    }

    #[test]
    fn bad_requests_are_refused_before_sending() {
        for (method, path, header) in [
            ("GE T", "/", ("a", "b")),
            ("GET", "no space allowed", ("a", "b")),
            ("GET", "/", ("bad name", "b")),
            ("GET", "/", ("a", "line\nbreak")),
        ] {
            let built = build("h", method, path, &[header], Bytes::new());
            assert!(matches!(built, Err(Error::Request(_))), "{method} {path}");
        }
    }
}
