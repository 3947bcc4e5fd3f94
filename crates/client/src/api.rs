//! The server API: `POST /api/{command}` with `X-API-Key` and a JSON body, one request
//! per connection.

use bytes::Bytes;
use serde_json::Value;

use crate::error::{Error, Result, quote};
use crate::http::{HttpConnection, Response};
use crate::tls::Tls;
use crate::url::{Endpoint, Scheme};

/// A server's API, with its key.
#[derive(Debug, Clone)]
pub struct Api {
    /// The server (its path is not used: see `prefix`).
    endpoint: Endpoint,
    /// What an `https://` server's certificate must chain to (`None`: the system's roots).
    tls: Option<Tls>,
    /// The path before `/api/…`: an `http://` URL's path, so a server behind a proxy at
    /// `http://h/switchboard/` is reached at `/switchboard/api/…`.
    prefix: String,
    key: String,
}

impl Api {
    /// The API of the server at `url`. With `http://HOST[/PREFIX]`, the API is at
    /// `PREFIX/api/…`; with `ws://HOST/PATH` (the same server's WebSocket), at `/api/…`.
    /// `https://` and `wss://` speak TLS, trusting the system's roots unless
    /// [`with_tls`](Self::with_tls) says otherwise.
    pub fn new(url: &str, key: &str) -> Result<Api> {
        let endpoint = Endpoint::parse(url)?;
        let prefix = match endpoint.scheme {
            Scheme::Http => endpoint
                .path
                .split('?')
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            Scheme::Ws => String::new(),
        };
        Ok(Api {
            endpoint,
            tls: None,
            prefix,
            key: key.to_owned(),
        })
    }

    /// The API of the server listening at `addr` (`host:port`), over plain HTTP.
    pub fn at(addr: &str, key: &str) -> Api {
        Api {
            endpoint: Endpoint {
                scheme: Scheme::Http,
                tls: false,
                authority: addr.to_owned(),
                addr: addr.to_owned(),
                path: "/".to_owned(),
            },
            tls: None,
            prefix: String::new(),
            key: key.to_owned(),
        }
    }

    /// Trusts `tls` (a CA file…) for an `https://` server, instead of the system's roots.
    pub fn with_tls(mut self, tls: Tls) -> Api {
        self.tls = Some(tls);
        self
    }

    /// Posts `body` (JSON text, sent as is) to `command`; the answer, whatever its status.
    pub async fn post(&self, command: &str, body: &str) -> Result<Response> {
        let path = format!("{}/api/{command}", self.prefix);
        let headers = [
            ("X-API-Key", self.key.as_str()),
            ("Content-Type", "application/json"),
            // One request per connection.
            ("Connection", "close"),
        ];
        let body = Bytes::copy_from_slice(body.as_bytes());
        let mut conn = HttpConnection::connect_to(&self.endpoint, self.tls.as_ref()).await?;
        conn.request("POST", &path, &headers, body).await
    }

    /// Posts `body` to `command`; the status and the answer's JSON, whatever the status.
    pub async fn call(&self, command: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self.post(command, &body.to_string()).await?;
        Ok((response.status, response.json()?))
    }

    /// Posts `body` to `command` and expects 200; its JSON. An error answer
    /// (`{"error":{"code","message"}}`) is [`Error::Refused`]; another status without one
    /// is [`Error::Status`].
    pub async fn ok(&self, command: &str, body: &Value) -> Result<Value> {
        let response = self.post(command, &body.to_string()).await?;
        if response.status == 200 {
            return response.json();
        }
        match refusal(&response.body) {
            Some(refused) => Err(refused),
            None => Err(Error::Status {
                status: response.status,
                body: quote(&response.body),
            }),
        }
    }
}

/// The [`Error::Refused`] in an error body `{"error":{"code","message"}}`, if it is one.
pub fn refusal(body: &[u8]) -> Option<Error> {
    let value: Value = serde_json::from_slice(body).ok()?;
    error_of(&value)
}

/// The [`Error::Refused`] of a reply or answer that carries `"error"`.
pub(crate) fn error_of(value: &Value) -> Option<Error> {
    let error = value.get("error")?;
    Some(Error::Refused {
        code: error["code"].as_u64()?,
        message: error["message"].as_str().unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_path_follows_the_url() {
        let api = Api::new("http://h:8000/prefix/", "k").unwrap();
        assert_eq!(
            (api.endpoint.addr.as_str(), api.prefix.as_str()),
            ("h:8000", "/prefix")
        );
        assert_eq!(Api::new("http://h:8000", "k").unwrap().prefix, "");
        assert_eq!(Api::new("ws://h:8000/ws", "k").unwrap().prefix, "");
        let secure = Api::new("https://h/p", "k").unwrap();
        assert_eq!(
            (
                secure.endpoint.tls,
                secure.endpoint.addr.as_str(),
                secure.prefix.as_str()
            ),
            (true, "h:443", "/p")
        );
    }

    #[test]
    fn error_bodies_become_refusals() {
        let refused = refusal(br#"{"error":{"code":103,"message":"permission denied"}}"#);
        assert!(
            matches!(refused, Some(Error::Refused { code: 103, ref message }) if message == "permission denied"),
            "{refused:?}"
        );
        assert!(refusal(b"{}").is_none());
        assert!(refusal(b"not json").is_none());
    }
}
