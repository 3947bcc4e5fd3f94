//! Checks `docs/protocol.md` against the code, so that the page and the protocol cannot
//! drift apart.
//!
//! The page's examples are fenced code blocks with one of these info strings:
//!
//! - ` ```json client `: a command a client sends. It must parse with
//!   [`Request::parse`], [`Request::command`] must accept it, and every field it shows must
//!   be one the command uses (a misspelt optional field would otherwise pass unnoticed).
//! - ` ```json client-invalid `: a command that must be refused. If a ` ```json server `
//!   block follows before the next client block, it must be exactly the error reply the
//!   server sends for it (same id, code and message).
//! - ` ```json server `: one reply or push, as the server sends it. Pushes round-trip
//!   through [`protocol::Publication`], [`protocol::PrivateMessage`] and [`protocol::ClientInfo`]
//!   via [`protocol::Push`]; replies carry `id` and exactly one of `result` / `error`; an
//!   error's code is one of [`ErrorCode`]; a result answering the client example
//!   with the same id (the latest one) has the shape that command's reply has.
//! - ` ```json jwt `: the claims of a connection token; they round-trip through
//!   [`auth::Claims`](crate::auth::Claims).
//!
//! Any other ` ```json ` block is an error, so an example cannot escape the check by a
//! typo in its tag. The page's tables must list every error code of
//! [`ErrorCode`] (with its name) and every close code of [`close`], and nothing
//! else in those ranges. Every command and every push must have an example.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::Claims;
use crate::error::{ClientError, ErrorCode, close};
use crate::protocol::{
    self, ClientInfo, Command, PrivateMessage, Publication, Push, Request, StreamPosition,
};
use crate::protocol::{History, SendStatus, Subscribed};

/// The page under test.
const PROTOCOL: &str = include_str!("../../../docs/protocol.md");

/// Every command of the protocol; each needs at least one example.
const COMMANDS: &[&str] = &[
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "history",
    "presence",
    "send",
    "ack",
    "ping",
    "refresh",
    "close",
];

/// Every push of the protocol; each needs at least one example.
const PUSHES: &[&str] = &["publication", "join", "leave", "message", "unsubscribe"];

/// What a fenced block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    ClientInvalid,
    Server,
    Jwt,
}

/// One example: its kind, the line of its opening fence, its text.
#[derive(Debug)]
struct Example {
    kind: Kind,
    line: usize,
    text: String,
}

/// What checking a page found.
#[derive(Debug, Default)]
struct Report {
    errors: Vec<String>,
    commands: BTreeSet<String>,
    pushes: BTreeSet<String>,
    examples: usize,
}

impl Report {
    fn fail(&mut self, line: usize, message: impl std::fmt::Display) {
        self.errors
            .push(format!("docs/protocol.md:{line}: {message}"));
    }
}

/// The ```json blocks of a Markdown page. Blocks in other languages are skipped.
fn examples(doc: &str, report: &mut Report) -> Vec<Example> {
    let mut out = Vec::new();
    let mut open: Option<(Option<Kind>, usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let line_no = i + 1;
        let fence = line.trim_start();
        match &mut open {
            Some((kind, start, text)) => {
                if fence.trim_end() == "```" {
                    if let Some(kind) = kind {
                        // The text as a client would send it: without the last newline.
                        let mut text = std::mem::take(text);
                        text.pop();
                        out.push(Example {
                            kind: *kind,
                            line: *start,
                            text,
                        });
                    }
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            None => {
                let Some(info) = fence.strip_prefix("```") else {
                    continue;
                };
                let mut words = info.split_whitespace();
                let kind = if words.next() == Some("json") {
                    let tag = words.next();
                    let kind = match tag {
                        Some("client") => Some(Kind::Client),
                        Some("client-invalid") => Some(Kind::ClientInvalid),
                        Some("server") => Some(Kind::Server),
                        Some("jwt") => Some(Kind::Jwt),
                        _ => None,
                    };
                    if kind.is_none() || words.next().is_some() {
                        report.fail(
                            line_no,
                            format!(
                                "a json block must be tagged exactly `json client`, `json client-invalid`, \
                                 `json server` or `json jwt`, not {info:?}"
                            ),
                        );
                    }
                    kind
                } else {
                    None
                };
                open = Some((kind, line_no, String::new()));
            }
        }
    }
    if let Some((_, start, _)) = open {
        report.fail(start, "code block never closed");
    }
    out
}

/// The command's name and the fields (besides `id` and `cmd`) it takes from the frame.
fn fields(command: &Command<'_>) -> (&'static str, Vec<&'static str>) {
    let some = |present: bool, name: &'static str| present.then_some(name);
    match command {
        Command::Connect { token } => (
            "connect",
            some(token.is_some(), "token").into_iter().collect(),
        ),
        Command::Subscribe { recover, .. } => (
            "subscribe",
            ["channel"]
                .into_iter()
                .chain(some(recover.is_some(), "recover"))
                .collect(),
        ),
        Command::Unsubscribe { .. } => ("unsubscribe", vec!["channel"]),
        Command::Publish { .. } => ("publish", vec!["channel", "data"]),
        Command::History { limit, since, .. } => (
            "history",
            ["channel"]
                .into_iter()
                .chain(some(limit.is_some(), "limit"))
                .chain(some(since.is_some(), "since"))
                .collect(),
        ),
        Command::Presence { .. } => ("presence", vec!["channel"]),
        Command::Send { .. } => ("send", vec!["user", "data"]),
        Command::Ack { .. } => ("ack", vec!["mailbox"]),
        Command::Ping => ("ping", vec![]),
        Command::Refresh { .. } => ("refresh", vec!["token"]),
        Command::Close => ("close", vec![]),
    }
}

/// Parses a client example. Returns the command's name and its id.
fn check_client(ex: &Example, report: &mut Report) -> Option<(Option<u64>, &'static str)> {
    let object: Map<String, Value> = match serde_json::from_str(&ex.text) {
        Ok(object) => object,
        Err(e) => {
            report.fail(
                ex.line,
                format!("a client example must be one JSON object: {e}"),
            );
            return None;
        }
    };
    let request = match Request::parse(&ex.text) {
        Ok(request) => request,
        Err(e) => {
            report.fail(
                ex.line,
                format!("Request::parse refuses the client example: {e}"),
            );
            return None;
        }
    };
    let command = match request.command() {
        Ok(command) => command,
        Err(e) => {
            report.fail(
                ex.line,
                format!("the client example is not a valid command: {e}"),
            );
            return None;
        }
    };
    let (name, used) = fields(&command);
    let shown: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = used
        .into_iter()
        .chain(["cmd"])
        .chain(request.id.map(|_| "id"))
        .collect();
    if shown != expected {
        report.fail(
            ex.line,
            format!("`{name}` example shows fields {shown:?}, but the command uses {expected:?}"),
        );
    }
    report.commands.insert(name.to_owned());
    Some((request.id, name))
}

/// Checks that a client-invalid example is refused; returns the error reply the server
/// sends for it.
fn check_client_invalid(ex: &Example, report: &mut Report) -> Option<Value> {
    let (id, error) = match Request::parse(&ex.text) {
        Err(e) => (None, e),
        Ok(request) => match request.command() {
            Err(e) => (request.id, e),
            Ok(command) => {
                report.fail(
                    ex.line,
                    format!("tagged client-invalid, but it is a valid command: {command:?}"),
                );
                return None;
            }
        },
    };
    serde_json::from_str(&protocol::reply_err(id, &error)).ok()
}

/// A publication from its JSON object.
fn publication(value: &Value) -> Result<Arc<Publication>, String> {
    serde_json::from_str(&value.to_string()).map_err(|e| format!("not a publication: {e}"))
}

fn publications(value: Option<&Value>) -> Result<Vec<Arc<Publication>>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(publication).collect(),
        Some(other) => Err(format!("publications must be an array, not {other}")),
    }
}

fn string(object: &Map<String, Value>, key: &str) -> Result<String, String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{key:?} must be a string"))
}

fn number(object: &Map<String, Value>, key: &str) -> Result<u64, String> {
    object
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{key:?} must be an unsigned integer"))
}

fn only_keys(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(format!(
            "unexpected field {extra:?} (expected some of {allowed:?})"
        )),
        None => Ok(()),
    }
}

/// Re-serializes `rebuilt` and compares it with the example.
fn same(example: &Value, rebuilt: &str) -> Result<(), String> {
    let rebuilt: Value = serde_json::from_str(rebuilt).map_err(|e| e.to_string())?;
    if &rebuilt == example {
        Ok(())
    } else {
        Err(format!(
            "does not round-trip: the code serializes it as {rebuilt}"
        ))
    }
}

/// Checks a push against the types that serialize it.
fn check_push(kind: &str, object: &Map<String, Value>, example: &Value) -> Result<(), String> {
    let mut rest = object.clone();
    rest.remove("push");
    match kind {
        "publication" => {
            let channel = string(object, "channel")?;
            let epoch = string(object, "epoch")?;
            rest.remove("channel");
            rest.remove("epoch");
            let publication = publication(&Value::Object(rest))?;
            let push = Push::Publication {
                channel: &channel,
                epoch: &epoch,
                publication: &publication,
            };
            same(example, &push.to_json())
        }
        "join" | "leave" => {
            let channel = string(object, "channel")?;
            let info: ClientInfo = serde_json::from_str(
                &object
                    .get("info")
                    .ok_or("a join/leave push needs \"info\"")?
                    .to_string(),
            )
            .map_err(|e| format!("\"info\" is not a ClientInfo: {e}"))?;
            let push = if kind == "join" {
                Push::Join {
                    channel: &channel,
                    info: &info,
                }
            } else {
                Push::Leave {
                    channel: &channel,
                    info: &info,
                }
            };
            same(example, &push.to_json())
        }
        "message" => {
            let message: PrivateMessage = serde_json::from_str(&Value::Object(rest).to_string())
                .map_err(|e| format!("not a private message: {e}"))?;
            same(example, &Push::Message { message: &message }.to_json())
        }
        "unsubscribe" => {
            let channel = string(object, "channel")?;
            let reason = string(object, "reason")?;
            let push = Push::Unsubscribe {
                channel: &channel,
                reason: &reason,
            };
            same(example, &push.to_json())
        }
        other => Err(format!("unknown push {other:?}")),
    }
}

/// Checks a command's `result` against the shape the server gives it.
fn check_result(command: &str, result: &Value) -> Result<(), String> {
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
            only_keys(object, &["status", "mailbox"])?;
            number(object, "mailbox")?;
            let statuses =
                [SendStatus::Delivered, SendStatus::Stored].map(|s| serde_json::to_value(s).ok());
            if statuses
                .iter()
                .flatten()
                .any(|s| Some(s) == object.get("status"))
            {
                Ok(())
            } else {
                Err(format!("\"status\" must be one of {statuses:?}"))
            }
        }
        "refresh" => {
            only_keys(object, &["expires"])?;
            number(object, "expires").map(drop)
        }
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

/// Checks a reply: `id`, and exactly one of `result` and `error`.
fn check_reply(
    object: &Map<String, Value>,
    example: &Value,
    commands: &BTreeMap<Option<u64>, &'static str>,
) -> Result<(), String> {
    only_keys(object, &["id", "result", "error"])?;
    let id = match object.get("id") {
        Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("\"id\" must be an unsigned integer or null")?,
        ),
        None => return Err("a reply must carry \"id\" (null when the command had none)".into()),
    };
    match (object.get("result"), object.get("error")) {
        (Some(result), None) => match commands.get(&id) {
            Some(command) => {
                check_result(command, result).map_err(|e| format!("{command} result: {e}"))
            }
            None => Err(format!(
                "no client example with id {id:?} before this reply"
            )),
        },
        (None, Some(error)) => {
            let error = error.as_object().ok_or("\"error\" must be an object")?;
            let number = u16::try_from(number(error, "code")?).map_err(|e| e.to_string())?;
            let Some(&code) = ErrorCode::ALL.iter().find(|c| **c == number) else {
                return Err(format!("error code {number} is not in error::ErrorCode"));
            };
            let error = ClientError {
                code,
                message: string(error, "message")?,
            };
            same(example, &protocol::reply_err(id, &error))
        }
        _ => Err("a reply has exactly one of \"result\" and \"error\"".into()),
    }
}

/// Checks every example of a page.
fn check_examples(doc: &str) -> Report {
    let mut report = Report::default();
    // Latest client command per id, for the replies that follow it.
    let mut commands: BTreeMap<Option<u64>, &'static str> = BTreeMap::new();
    // The error reply owed to the latest client-invalid example, if one is.
    let mut owed: Option<(usize, Value)> = None;
    for ex in examples(doc, &mut report) {
        report.examples += 1;
        match ex.kind {
            Kind::Client => {
                owed = None;
                if let Some((id, name)) = check_client(&ex, &mut report) {
                    commands.insert(id, name);
                }
            }
            Kind::ClientInvalid => {
                owed = check_client_invalid(&ex, &mut report).map(|reply| (ex.line, reply));
            }
            Kind::Jwt => {
                let checked = serde_json::from_str::<Value>(&ex.text)
                    .map_err(|e| e.to_string())
                    .and_then(|value| {
                        let claims: Claims = serde_json::from_str(&ex.text)
                            .map_err(|e| format!("not token claims: {e}"))?;
                        same(
                            &value,
                            &serde_json::to_string(&claims).map_err(|e| e.to_string())?,
                        )
                    });
                if let Err(e) = checked {
                    report.fail(ex.line, e);
                }
            }
            Kind::Server => {
                let value: Value = match serde_json::from_str(&ex.text) {
                    Ok(value) => value,
                    Err(e) => {
                        report.fail(
                            ex.line,
                            format!("a server example must be one JSON value: {e}"),
                        );
                        continue;
                    }
                };
                let Some(object) = value.as_object() else {
                    report.fail(ex.line, "a server example must be a JSON object");
                    continue;
                };
                if let Some((line, reply)) = owed.take() {
                    if reply != value {
                        report.fail(
                            ex.line,
                            format!(
                                "the server answers the client-invalid example of line {line} with {reply}, not this"
                            ),
                        );
                    }
                }
                let checked = match object.get("push") {
                    Some(push) => match push.as_str() {
                        Some(kind) => {
                            report.pushes.insert(kind.to_owned());
                            check_push(kind, object, &value)
                                .map_err(|e| format!("{kind} push: {e}"))
                        }
                        None => Err("\"push\" must be a string".to_owned()),
                    },
                    None => check_reply(object, &value, &commands),
                };
                if let Err(e) = checked {
                    report.fail(ex.line, e);
                }
            }
        }
    }
    report
}

/// The rows of the page's Markdown tables whose first cell is a number: number → row.
fn numbered_rows(doc: &str) -> BTreeMap<u16, Vec<(usize, &str)>> {
    let mut rows: BTreeMap<u16, Vec<(usize, &str)>> = BTreeMap::new();
    for (i, line) in doc.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = rest
            .split('|')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('`');
        if let Ok(n) = first.parse::<u16>() {
            rows.entry(n).or_default().push((i + 1, line));
        }
    }
    rows
}

/// Checks the error code and close code tables against the code.
fn check_tables(doc: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let rows = numbered_rows(doc);
    for (code, name) in ErrorCode::ALL.iter().map(|c| (c.number(), c.name())) {
        match rows.get(&code) {
            None => errors.push(format!("error code {code} ({name}) has no row in a table")),
            Some(found) => {
                if !found
                    .iter()
                    .any(|(_, row)| row.contains(&format!("`{name}`")))
                {
                    errors.push(format!(
                        "the row of error code {code} does not name it `{name}`"
                    ));
                }
            }
        }
    }
    // 1000 is the echo of a client's close; the others are the server's own.
    let mut closes = vec![switchboard_ws::CloseCode::NORMAL];
    closes.extend_from_slice(close::ALL);
    for &code in &closes {
        if !rows.contains_key(&code.0) {
            errors.push(format!("close code {} has no row in a table", code.0));
        }
    }
    for (n, found) in &rows {
        let (line, _) = found[0];
        let known_error = ErrorCode::ALL.iter().any(|c| c == n);
        let known_close = closes.iter().any(|c| c.0 == *n);
        if (100..1000).contains(n) && !known_error {
            errors.push(format!(
                "docs/protocol.md:{line}: error code {n} is not in error::ErrorCode"
            ));
        }
        if (4000..5000).contains(n) && !known_close {
            errors.push(format!(
                "docs/protocol.md:{line}: close code {n} is not one of error::close"
            ));
        }
    }
    errors
}

#[test]
fn protocol_page_agrees_with_the_code() {
    let report = check_examples(PROTOCOL);
    let mut errors = report.errors;
    errors.extend(check_tables(PROTOCOL));
    for command in COMMANDS {
        if !report.commands.contains(*command) {
            errors.push(format!("no ```json client example of `{command}`"));
        }
    }
    for push in PUSHES {
        if !report.pushes.contains(*push) {
            errors.push(format!("no ```json server example of the `{push}` push"));
        }
    }
    assert!(
        report.examples > 40,
        "only {} examples found",
        report.examples
    );
    assert!(errors.is_empty(), "\n{}\n", errors.join("\n"));
}

/// The checker itself fails on the mistakes it is there to catch.
#[test]
fn checker_catches_drift() {
    let errors = |doc: &str| check_examples(doc).errors;
    let fence = |tag: &str, body: &str| format!("```json {tag}\n{body}\n```\n");
    let publication = r#"{"push":"publication","channel":"chat:a","epoch":"e1","offset":1,"data":{"t":1},"time":5}"#;
    assert_eq!(errors(&fence("server", publication)), Vec::<String>::new());
    let bad = [
        // A publication without its time; with an unknown field.
        fence("server", &publication.replace(r#","time":5"#, "")),
        fence(
            "server",
            &publication.replace(r#""time":5"#, r#""time":5,"seq":1"#),
        ),
        // An unknown push; a message with its id as a string.
        fence("server", r#"{"push":"typing","channel":"chat:a"}"#),
        fence(
            "server",
            r#"{"push":"message","mailbox":"1","data":1,"time":5}"#,
        ),
        // Replies: no id; both result and error; an unknown error code; an extra key.
        fence("server", r#"{"result":{}}"#),
        fence(
            "server",
            r#"{"id":1,"result":{},"error":{"code":107,"message":"x"}}"#,
        ),
        fence("server", r#"{"error":{"code":199,"message":"x"},"id":1}"#),
        fence(
            "server",
            r#"{"error":{"code":107,"message":"x","hint":"y"},"id":1}"#,
        ),
        // A misspelt optional field; a missing required one; a valid "invalid" one.
        fence(
            "client",
            r#"{"id":1,"cmd":"subscribe","channel":"chat:a","recovr":{"offset":1,"epoch":"e"}}"#,
        ),
        fence("client", r#"{"id":1,"cmd":"publish","channel":"chat:a"}"#),
        fence("client-invalid", r#"{"id":1,"cmd":"ping"}"#),
        // The error shown for an invalid command is not the one the server sends.
        fence(
            "client-invalid",
            r#"{"id":1,"cmd":"publish","channel":"chat:a"}"#,
        ) + &fence(
            "server",
            r#"{"error":{"code":107,"message":"missing field \"channel\""},"id":1}"#,
        ),
        // A result that does not fit its command.
        fence(
            "client",
            r#"{"id":2,"cmd":"publish","channel":"chat:a","data":1}"#,
        ) + &fence("server", r#"{"id":2,"result":{"offset":1}}"#),
        // A tag with a typo; token claims without sub.
        fence("Server", r#"{"id":1,"result":{}}"#),
        fence("jwt", r#"{"exp":1}"#),
    ];
    for doc in bad {
        assert!(!errors(&doc).is_empty(), "not caught:\n{doc}");
    }
    let table = "| 4001 | x |\n| 107 | `bad_request` |\n";
    let table_errors = check_tables(table);
    assert!(
        table_errors.iter().any(|e| e.contains("error code 100")),
        "{table_errors:?}"
    );
    assert!(
        table_errors.iter().any(|e| e.contains("close code 4002")),
        "{table_errors:?}"
    );
    assert!(
        !check_tables("| 120 | `x` |\n")
            .iter()
            .any(|e| e.contains("120") && e.contains("has no row"))
    );
    assert!(
        check_tables("| 120 | `x` |\n")
            .iter()
            .any(|e| e.contains("error code 120 is not"))
    );
}
