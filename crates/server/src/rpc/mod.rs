//! The `rpc` command: a client calls a method, one handler answers.
//!
//! Handlers are registered by method prefix ([`Handlers::add`]; the longest registered
//! prefix of a method wins), in-process by the server's extensions (the built-in apps
//! register `chat.`), the way a user's own Rust code would. A method no handler claims goes
//! to the application's backend over HTTP when `rpc.proxy_url` is set ([`proxy`]), so a
//! Flask or Django backend answers client calls without hosting WebSockets; otherwise it
//! is error 104.
//!
//! A connection's calls are answered one at a time in the order they came (two posts keep
//! their order), each by a task that waits for the one before and pushes its reply when it
//! is ready: a slow handler or backend holds up neither the connection's pushes nor its
//! other commands. A connection has at most 16 calls waiting (one more is error 111), and
//! every call is bounded by `rpc.timeout`.

mod proxy;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::RpcConfig;
use crate::error::ClientError;

pub use proxy::Proxy;

/// Who calls: taken from the connection's verified token.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    /// The user id (`sub`); empty for an anonymous connection.
    pub user: String,
    /// The connection id, as presence and publications show it.
    pub client: String,
    /// The token's `info` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<RawValue>>,
    /// The token's `roles` claim.
    pub roles: Vec<String>,
}

impl Caller {
    /// Whether the caller's token lists `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the connection is anonymous (no token).
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
    }
}

/// One call.
#[derive(Debug)]
pub struct RpcCall {
    /// The method, as the client named it.
    pub method: String,
    /// The call's `data`, as the client sent it (`None` when absent).
    pub data: Option<Box<RawValue>>,
    /// Who calls.
    pub caller: Caller,
}

/// Answers the calls of the methods it was registered for.
///
/// The future is `'static`: a handler clones what it needs (an `Arc` of its state) into
/// it. Return [`ClientError::rpc_failed`] for a refusal in the handler's own words, or
/// another [`ClientError`] where one fits (`bad_request`, `permission_denied`…).
pub trait RpcHandler: Send + Sync + 'static {
    /// Answers one call with the JSON value of the reply's `result`.
    fn call(&self, call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>>;
}

/// The registered handlers, and the proxy for the rest.
#[derive(Default)]
pub struct Handlers {
    /// Longest prefix first, so the first match is the most specific.
    by_prefix: Vec<(String, Arc<dyn RpcHandler>)>,
    proxy: Option<Proxy>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefixes: Vec<&str> = self.by_prefix.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("Handlers")
            .field("prefixes", &prefixes)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// Longest method name accepted, in bytes.
pub const MAX_METHOD_LEN: usize = 128;

impl Handlers {
    /// Handlers with the proxy the configuration asks for (none without
    /// `rpc.proxy_url`).
    pub fn new(config: &RpcConfig) -> crate::Result<Handlers> {
        Ok(Handlers {
            by_prefix: Vec::new(),
            proxy: config
                .proxy_url
                .as_deref()
                .map(|url| Proxy::new(url, config))
                .transpose()?,
        })
    }

    /// Registers `handler` for every method that starts with `prefix`; a prefix
    /// registered again replaces the earlier handler.
    pub fn add(&mut self, prefix: &str, handler: Arc<dyn RpcHandler>) {
        self.by_prefix.retain(|(p, _)| p != prefix);
        self.by_prefix.push((prefix.to_owned(), handler));
        self.by_prefix
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    }

    /// Answers a call: its handler's answer, the backend's, or error 104.
    pub async fn call(
        &self,
        call: RpcCall,
        timeout: std::time::Duration,
    ) -> Result<Box<RawValue>, ClientError> {
        if call.method.is_empty()
            || call.method.len() > MAX_METHOD_LEN
            || call.method.chars().any(|c| c.is_control())
        {
            return Err(ClientError::bad_request(format!(
                "an rpc method is 1 to {MAX_METHOD_LEN} bytes without control characters"
            )));
        }
        let handler = self
            .by_prefix
            .iter()
            .find(|(prefix, _)| call.method.starts_with(prefix.as_str()))
            .map(|(_, h)| h.clone());
        let answer = match (handler, &self.proxy) {
            (Some(handler), _) => tokio::time::timeout(timeout, handler.call(call)).await,
            (None, Some(proxy)) => tokio::time::timeout(timeout, proxy.call(call)).await,
            (None, None) => {
                return Err(ClientError::unknown_command(format!(
                    "no rpc method {:?} here (no handler claims it, and rpc.proxy_url is not set)",
                    call.method
                )));
            }
        };
        answer.unwrap_or_else(|_| {
            Err(ClientError::internal(format!(
                "the rpc call took longer than rpc.timeout ({timeout:?})"
            )))
        })
    }
}

/// A result from any serializable value (what most handlers return).
pub fn result<T: Serialize>(value: &T) -> Result<Box<RawValue>, ClientError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| ClientError::internal(format!("cannot encode the rpc result: {e}")))
}

/// Reads a call's `data` into `T`; a missing `data` reads as `{}`. A body that does not
/// fit is error 107, naming the field.
pub fn data<T: serde::de::DeserializeOwned>(call: &RpcCall) -> Result<T, ClientError> {
    let text = call.data.as_deref().map_or("{}", RawValue::get);
    serde_json::from_str(text)
        .map_err(|e| ClientError::bad_request(format!("{} data: {e}", call.method)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    impl RpcHandler for Named {
        fn call(&self, _call: RpcCall) -> BoxFuture<'static, Result<Box<RawValue>, ClientError>> {
            let name = self.0;
            Box::pin(async move { result(&name) })
        }
    }

    fn call(method: &str) -> RpcCall {
        RpcCall {
            method: method.into(),
            data: None,
            caller: Caller {
                user: "alice".into(),
                client: "c1".into(),
                info: None,
                roles: vec![],
            },
        }
    }

    #[tokio::test]
    async fn the_longest_prefix_wins_and_unclaimed_methods_are_104() {
        let mut handlers = Handlers::new(&RpcConfig::default()).unwrap();
        handlers.add("chat.", Arc::new(Named("chat")));
        handlers.add("chat.dm.", Arc::new(Named("dm")));
        let t = std::time::Duration::from_secs(1);
        let answer = |m: &'static str| {
            let handlers = &handlers;
            async move { handlers.call(call(m), t).await }
        };
        assert_eq!(answer("chat.post").await.unwrap().get(), "\"chat\"");
        assert_eq!(answer("chat.dm.send").await.unwrap().get(), "\"dm\"");
        assert_eq!(answer("vote.cast").await.unwrap_err().code, 104);
        assert_eq!(answer("").await.unwrap_err().code, 107);
    }
}
