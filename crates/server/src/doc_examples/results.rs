//! The shapes of command results, as both pages show them: a client's reply in
//! `docs/protocol.md`, the server API's answer in `docs/api.md` (`publish`, `send`,
//! `presence` and `history` answer alike on both).

use serde_json::Value;

use super::{number, only_keys, publications, same, string};
use crate::protocol::{History, Sent, StreamPosition, Subscribed};

/// Checks a command's `result` against the shape the server gives it.
pub(super) fn check_result(command: &str, result: &Value) -> Result<(), String> {
    let object = result.as_object().ok_or("a result must be an object")?;
    match command {
        "connect" => {
            only_keys(
                object,
                &[
                    "client",
                    "user",
                    "version",
                    "ping",
                    "expires",
                    "mailbox_epoch",
                ],
            )?;
            string(object, "client")?;
            string(object, "user")?;
            string(object, "version")?;
            string(object, "mailbox_epoch")?;
            number(object, "ping")?;
            match object.get("expires") {
                Some(Value::Null) => Ok(()),
                Some(v) if v.is_u64() => Ok(()),
                _ => Err("\"expires\" must be an unsigned integer or null".into()),
            }
        }
        "subscribe" => {
            let recovered = match object.get("recovered") {
                None => None,
                Some(v) => Some(v.as_bool().ok_or("\"recovered\" must be a boolean")?),
            };
            let subscribed = Subscribed {
                epoch: string(object, "epoch")?,
                offset: number(object, "offset")?,
                recoverable: object
                    .get("recoverable")
                    .and_then(Value::as_bool)
                    .ok_or("\"recoverable\" must be a boolean")?,
                recovered,
                publications: publications(object.get("publications"))?,
            };
            same(
                result,
                &serde_json::to_string(&subscribed).map_err(|e| e.to_string())?,
            )
        }
        "publish" => {
            let position: StreamPosition = serde_json::from_value(result.clone())
                .map_err(|e| format!("not a position: {e}"))?;
            same(
                result,
                &serde_json::to_string(&position).map_err(|e| e.to_string())?,
            )
        }
        "history" => {
            let complete = match object.get("complete") {
                None => None,
                Some(v) => Some(v.as_bool().ok_or("\"complete\" must be a boolean")?),
            };
            let history = History {
                epoch: string(object, "epoch")?,
                offset: number(object, "offset")?,
                publications: publications(Some(
                    object
                        .get("publications")
                        .ok_or("a history needs \"publications\"")?,
                ))?,
                complete,
            };
            same(
                result,
                &serde_json::to_string(&history).map_err(|e| e.to_string())?,
            )
        }
        "presence" => {
            only_keys(object, &["presence", "anonymous"])?;
            let users = object
                .get("presence")
                .and_then(Value::as_object)
                .ok_or("\"presence\" must be an object")?;
            let anonymous = match object.get("anonymous") {
                None => None,
                Some(v) => Some(v.as_object().ok_or("\"anonymous\" must be an object")?),
            };
            let entries = users
                .iter()
                .map(|e| (e, false))
                .chain(anonymous.into_iter().flatten().map(|e| (e, true)));
            for ((key, entry), is_anonymous) in entries {
                let entry = entry
                    .as_object()
                    .ok_or("a presence entry must be an object")?;
                only_keys(entry, &["user", "info", "connections"])?;
                let user = string(entry, "user")?;
                if is_anonymous != user.is_empty() || (!is_anonymous && &user != key) {
                    return Err(format!("presence entry {key:?} is for user {user:?}"));
                }
                if number(entry, "connections")? == 0 {
                    return Err("a presence entry has at least one connection".into());
                }
            }
            Ok(())
        }
        "send" => {
            let sent: Sent = serde_json::from_value(result.clone())
                .map_err(|e| format!("not a send result: {e}"))?;
            same(
                result,
                &serde_json::to_string(&sent).map_err(|e| e.to_string())?,
            )
        }
        "refresh" => {
            only_keys(object, &["expires"])?;
            number(object, "expires").map(drop)
        }
        // Whatever the method's handler answers.
        "rpc" => Ok(()),
        "unsubscribe" | "ack" | "ping" | "close" => {
            if object.is_empty() {
                Ok(())
            } else {
                Err(format!("the result of {command} is {{}}"))
            }
        }
        other => Err(format!("no result shape known for {other:?}")),
    }
}
