//! The rpc proxy: a call no extension claims is POSTed to the application's backend
//! (`rpc.proxy_url`) as `{"method", "data", "user", "client", "info", "roles"}`, and the
//! backend answers `{"result": …}` or `{"error": {"message": …}}` (error 119 with its
//! message).
//!
//! The caller's identity comes from its verified token, so the backend trusts it as it
//! trusts its own session. Connections to the backend are kept alive and reused (a pool
//! as large as `rpc.max_concurrent`, the bound on calls in flight).

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_client::{Endpoint, HttpConnection};
use tokio::sync::Semaphore;

use super::{Caller, RpcCall};
use crate::config::RpcConfig;
use crate::error::{ClientError, Error};

/// Posts calls to the application's backend.
#[derive(Debug, Clone)]
pub struct Proxy {
    endpoint: Arc<Endpoint>,
    /// Idle keep-alive connections to the backend.
    idle: Arc<Mutex<Vec<HttpConnection>>>,
    /// Calls in flight (`rpc.max_concurrent`).
    in_flight: Arc<Semaphore>,
    max_response: usize,
}

/// The request body the backend reads.
#[derive(Serialize)]
struct Body<'a> {
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(flatten)]
    caller: &'a Caller,
}

/// The backend's answer.
#[derive(Deserialize)]
struct Answer {
    result: Option<Box<RawValue>>,
    error: Option<Refusal>,
}

#[derive(Deserialize)]
struct Refusal {
    message: String,
}

impl Proxy {
    /// A proxy to `url` (an `http://` URL, checked by [`crate::Config::validate`]).
    pub fn new(url: &str, config: &RpcConfig) -> crate::Result<Proxy> {
        let endpoint =
            Endpoint::parse(url).map_err(|e| Error::Config(format!("rpc.proxy_url: {e}")))?;
        Ok(Proxy {
            endpoint: Arc::new(endpoint),
            idle: Arc::default(),
            in_flight: Arc::new(Semaphore::new(config.max_concurrent)),
            max_response: config.max_response_bytes,
        })
    }

    /// Posts one call and reads the backend's answer.
    pub(super) async fn call(&self, call: RpcCall) -> Result<Box<RawValue>, ClientError> {
        let failed = |why: String| {
            tracing::warn!(method = %call.method, url = %self.endpoint.addr, %why, "rpc proxy failed");
            ClientError::internal(format!("the application's backend failed ({why})"))
        };
        let body = serde_json::to_vec(&Body {
            method: &call.method,
            data: call.data.as_deref(),
            caller: &call.caller,
        })
        .map_err(|e| failed(e.to_string()))?;
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| failed("closed".into()))?;
        let (status, text) = self.post(body).await.map_err(failed)?;
        if !(200..300).contains(&status) {
            return Err(failed(format!("HTTP {status}")));
        }
        let answer: Answer = serde_json::from_slice(&text).map_err(|e| {
            failed(format!(
                "its answer is not {{\"result\"}} or {{\"error\"}}: {e}"
            ))
        })?;
        match (answer.result, answer.error) {
            (_, Some(refusal)) => Err(ClientError::rpc_failed(refusal.message)),
            (Some(result), None) => Ok(result),
            (None, None) => Err(failed("its answer has neither result nor error".into())),
        }
    }

    /// One POST, on an idle connection when there is one (a fresh one if that fails at
    /// once: the backend may have closed it meanwhile).
    async fn post(&self, body: Vec<u8>) -> Result<(u16, BytesMut), String> {
        let reused = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        if let Some(conn) = reused.filter(|c| !c.is_closed()) {
            if let Ok(answer) = self.exchange(conn, body.clone()).await {
                return Ok(answer);
            }
        }
        let conn = HttpConnection::connect(&self.endpoint.addr)
            .await
            .map_err(|e| e.to_string())?;
        self.exchange(conn, body).await
    }

    async fn exchange(
        &self,
        conn: HttpConnection,
        body: Vec<u8>,
    ) -> Result<(u16, BytesMut), String> {
        let headers = [
            ("Host", self.endpoint.authority.as_str()),
            ("Content-Type", "application/json"),
        ];
        let mut answer = conn
            .stream("POST", &self.endpoint.path, &headers, body)
            .await
            .map_err(|e| e.to_string())?;
        let mut text = BytesMut::new();
        while let Some(chunk) = answer.next_chunk().await.map_err(|e| e.to_string())? {
            if text.len() + chunk.len() > self.max_response {
                return Err(format!(
                    "its answer is longer than rpc.max_response_bytes ({})",
                    self.max_response
                ));
            }
            text.extend_from_slice(&chunk);
        }
        let status = answer.status;
        if let Ok((_, conn)) = answer.finish().await {
            if !conn.is_closed() {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(conn);
                }
            }
        }
        Ok((status, text))
    }
}
