//! Reading a command body, and the answers that refuse a request before it reaches its
//! session.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;

use crate::error::ClientError;
use crate::net::error_response;
use crate::transport::Shared;

/// A request refused before it reached its session: a status and an error body.
#[derive(Debug)]
pub(crate) struct Refused(StatusCode, ClientError);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error_response(self.0, &self.1)
    }
}

/// The 404 for a session that does not exist (any more).
pub(crate) fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &ClientError::session_not_found("unknown or expired session; open a new one"),
    )
}

/// Reads a command body (at most `limits.max_message_size` bytes, within
/// `limits.body_timeout`) and splits it into commands: a JSON array gives one command per
/// element; anything else is one command (bad JSON included: the session answers it with
/// the usual error). An empty body has none.
pub(crate) async fn read_commands(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<String>, Refused> {
    let limits = &shared.session.config.limits;
    let bytes = crate::net::body::read(
        headers,
        body,
        limits.max_message_size,
        limits.body_timeout,
        shared.session.hub.metrics(),
    )
    .await
    .map_err(|err| {
        let (status, error) = err.answer();
        Refused(status, error)
    })?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        Refused(
            StatusCode::BAD_REQUEST,
            ClientError::bad_request("the body is not UTF-8"),
        )
    })?;
    Ok(split_commands(text))
}

/// One command, or the elements of a JSON array of commands.
fn split_commands(text: String) -> Vec<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if trimmed.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(trimmed) {
            return items.iter().map(|item| item.get().to_owned()).collect();
        }
    }
    vec![text]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_commands() {
        assert!(split_commands(" \n".into()).is_empty());
        assert!(split_commands("[]".into()).is_empty());
        assert_eq!(
            split_commands(r#"{"cmd":"ping"}"#.into()),
            [r#"{"cmd":"ping"}"#]
        );
        assert_eq!(
            split_commands(r#"[{"id":1,"cmd":"ping"}, {"id":2,"cmd":"ping"}]"#.into()),
            [r#"{"id":1,"cmd":"ping"}"#, r#"{"id":2,"cmd":"ping"}"#]
        );
        // Not JSON, or an array that does not parse: one command, refused by the session.
        assert_eq!(split_commands("[{".into()), ["[{"]);
        assert_eq!(split_commands("nope".into()), ["nope"]);
    }
}
