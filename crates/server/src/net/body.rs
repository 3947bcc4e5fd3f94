//! Reading a request body with a size limit and a deadline.
//!
//! Only the head of a request is bounded by hyper (`limits.header_timeout`); a client that
//! declares a body and sends it slowly, or never, would hold its connection (and
//! whatever the handler holds) forever. Every handler that reads a body does it here:
//! within `limits.body_timeout`, and refused past its size limit from the declared
//! length before anything is buffered.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::ClientError;
use crate::metrics::Metrics;

/// Bytes of a body read (and discarded) past the size limit before answering 413, so the
/// client reads the answer instead of a connection reset; a larger body is cut short.
const DRAIN_CAP: usize = 1 << 20;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Larger than the limit (413).
    TooLarge(usize),
    /// Not all there within the deadline (408).
    Timeout(Duration),
    /// The connection failed while reading it (400).
    Broken(String),
}

impl BodyError {
    /// The HTTP status and the client error that answer it.
    pub(crate) fn answer(&self) -> (StatusCode, ClientError) {
        match self {
            BodyError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ClientError::payload_too_large(format!(
                    "the body is larger than the limit ({limit} bytes)"
                )),
            ),
            BodyError::Timeout(after) => (
                StatusCode::REQUEST_TIMEOUT,
                ClientError::bad_request(format!(
                    "the body did not arrive within {} s (limits.body_timeout)",
                    after.as_secs_f64()
                )),
            ),
            BodyError::Broken(why) => (
                StatusCode::BAD_REQUEST,
                ClientError::bad_request(format!("the body could not be read: {why}")),
            ),
        }
    }
}

/// Reads a body of at most `limit` bytes within `timeout`.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    metrics: &Metrics,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // Refused from the declared length alone when it could not be drained either.
    if declared.is_some_and(|n| n > DRAIN_CAP.max(limit)) {
        return Err(BodyError::TooLarge(limit));
    }
    let reading = async {
        let mut stream = body.into_data_stream();
        // Grown as bytes arrive: a declared length alone (a body that never comes) makes
        // no allocation of its size.
        let mut read = BytesMut::with_capacity(declared.unwrap_or(0).min(limit).min(8 << 10));
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| BodyError::Broken(err.to_string()))?;
            seen += chunk.len();
            if seen > DRAIN_CAP.max(limit) {
                return Err(BodyError::TooLarge(limit));
            }
            if seen <= limit {
                read.extend_from_slice(&chunk);
            }
        }
        if seen > limit {
            return Err(BodyError::TooLarge(limit));
        }
        Ok(read.freeze())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(result) => result,
        Err(_) => {
            metrics.body_timeouts.inc();
            Err(BodyError::Timeout(timeout))
        }
    }
}
