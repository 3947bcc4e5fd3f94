//! Checks `docs/protocol.md` against the code.
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
//!   error's code is one of [`ErrorCode`]. Every reply answers a client example shown
//!   before it and not yet answered, by the id the server would give it (for a frame
//!   that does not parse, the id it can still read, else `null`); a result has the shape
//!   of that command's reply.
//! - ` ```json jwt `: the claims of a connection token; they round-trip through
//!   [`auth::Claims`](crate::auth::Claims).
//!
//! Any other ` ```json ` block is an error, so an example cannot escape the check by a
//! typo in its tag. The page's tables must list every error code of
//! [`ErrorCode`] (with its name) and every close code of [`close`], and nothing
//! else in those ranges. Every command and every push must have an example.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::results::check_result;
use super::{
    Block, Report, blocks, check_error, check_shell_variables, only_keys, publication, same, string,
};
use crate::auth::Claims;
use crate::error::{ErrorCode, close};
use crate::protocol::{self, ClientInfo, Command, PrivateMessage, Push, Request};

/// The page under test.
const PROTOCOL: &str = include_str!("../../../../docs/protocol.md");

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
    "rpc",
];

/// Every push of the protocol; each needs at least one example.
const PUSHES: &[&str] = &["publication", "join", "leave", "message", "unsubscribe"];

/// What a ```json block is.
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

/// What the page shows, besides its errors.
#[derive(Debug, Default)]
struct Seen {
    commands: BTreeSet<String>,
    pushes: BTreeSet<String>,
}

/// The ```json blocks of the page, each with its kind. Blocks in other languages are
/// skipped; a ```json block without one of the four tags is an error.
fn examples(blocks: &[Block], report: &mut Report) -> Vec<Example> {
    let mut out = Vec::new();
    for block in blocks.iter().filter(|b| b.lang == "json") {
        let kind = match block.tag.as_deref() {
            Some("client") => Some(Kind::Client),
            Some("client-invalid") => Some(Kind::ClientInvalid),
            Some("server") => Some(Kind::Server),
            Some("jwt") => Some(Kind::Jwt),
            _ => None,
        };
        match kind {
            Some(kind) if !block.extra => out.push(Example {
                kind,
                line: block.line,
                text: block.text.clone(),
            }),
            _ => report.fail(
                block.line,
                format!(
                    "a json block must be tagged exactly `json client`, `json client-invalid`, \
                     `json server` or `json jwt`, not {:?}",
                    block.tag.as_deref().unwrap_or_default()
                ),
            ),
        }
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
        Command::Publish { ephemeral, .. } => (
            "publish",
            ["channel", "data"]
                .into_iter()
                .chain(some(*ephemeral, "ephemeral"))
                .collect(),
        ),
        Command::History {
            limit,
            since,
            before,
            ..
        } => (
            "history",
            ["channel"]
                .into_iter()
                .chain(some(limit.is_some(), "limit"))
                .chain(some(since.is_some(), "since"))
                .chain(some(before.is_some(), "before"))
                .collect(),
        ),
        Command::Rpc { data, .. } => (
            "rpc",
            ["method"]
                .into_iter()
                .chain(some(data.is_some(), "data"))
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
fn check_client(
    ex: &Example,
    report: &mut Report,
    seen: &mut Seen,
) -> Option<(Option<u64>, &'static str)> {
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
    seen.commands.insert(name.to_owned());
    Some((request.id, name))
}

/// Checks that a client-invalid example is refused; returns the id and the error reply
/// the server sends for it (the id as the session reads it: from a frame that does not
/// parse, the `id` it can still read).
fn check_client_invalid(ex: &Example, report: &mut Report) -> Option<(Option<u64>, Value)> {
    let (id, error) = match Request::parse(&ex.text) {
        Err(e) => (Request::id_of(&ex.text), e),
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
    let reply = serde_json::from_str(&protocol::reply_err(id, &error)).ok()?;
    Some((id, reply))
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
            let ephemeral = match rest.remove("ephemeral") {
                None => false,
                Some(Value::Bool(true)) => true,
                Some(other) => return Err(format!("\"ephemeral\" is true or absent, not {other}")),
            };
            let publication = publication(&Value::Object(rest))?;
            let push = Push::Publication {
                channel: &channel,
                epoch: &epoch,
                publication: &publication,
                ephemeral,
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

/// Checks a reply: `id`, and exactly one of `result` and `error`. The id must be one a
/// client example shown before asked and no reply has answered yet.
fn check_reply(
    object: &Map<String, Value>,
    example: &Value,
    commands: &BTreeMap<Option<u64>, &'static str>,
    unanswered: &mut BTreeMap<Option<u64>, usize>,
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
    match unanswered.get_mut(&id) {
        Some(count) if *count > 0 => *count -= 1,
        _ => {
            return Err(format!(
                "a reply with id {id:?}, but no client example before it is waiting for one \
                 (the server replies with the command's id)"
            ));
        }
    }
    match (object.get("result"), object.get("error")) {
        (Some(result), None) => match commands.get(&id) {
            Some(command) => {
                check_result(command, result).map_err(|e| format!("{command} result: {e}"))
            }
            None => Err(format!(
                "a result for id {id:?}, which was an invalid command"
            )),
        },
        (None, Some(error)) => {
            let error = check_error(error)?;
            same(example, &protocol::reply_err(id, &error))
        }
        _ => Err("a reply has exactly one of \"result\" and \"error\"".into()),
    }
}

/// The commands in a shell block's request bodies (`-d '[{"id":1,"cmd":…}]'`), by id. A
/// token spliced in by the shell (`"'"$TOKEN"'"`) reads as a string.
fn shell_commands(text: &str) -> BTreeMap<Option<u64>, &'static str> {
    let text = text.replace(r#""'"$TOKEN"'""#, r#""token""#);
    let mut commands = BTreeMap::new();
    for (at, _) in text.match_indices(r#"{"id":"#) {
        let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<Value>();
        let Some(Ok(value)) = values.next() else {
            continue;
        };
        if let Ok(request) = Request::parse(&value.to_string()) {
            if let Ok(command) = request.command() {
                commands.insert(request.id, fields(&command).0);
            }
        }
    }
    commands
}

/// Checks one message of a transcript: a push, or a reply to a command the shell block
/// before sent.
fn check_message(
    message: &Value,
    commands: &BTreeMap<Option<u64>, &'static str>,
) -> Result<(), String> {
    let object = message
        .as_object()
        .ok_or("a message must be a JSON object")?;
    if let Some(kind) = object.get("push").and_then(Value::as_str) {
        return check_push(kind, object, message).map_err(|e| format!("{kind} push: {e}"));
    }
    let id = object.get("id").and_then(Value::as_u64);
    match (object.get("result"), object.get("error")) {
        (Some(result), None) => match commands.get(&id) {
            Some(command) => {
                check_result(command, result).map_err(|e| format!("{command} result: {e}"))
            }
            None => Err(format!(
                "a result for id {id:?}, which no request above sent"
            )),
        },
        (None, Some(error)) => check_error(error).map(drop),
        _ => Err("neither a push nor a reply".into()),
    }
}

/// Checks the transcripts of the `curl` sessions: every reply or push on a `data:` line
/// of an event stream, or in the `messages` of a poll answer, has its shape (replies
/// answer the commands of the shell block before).
fn check_transcripts(blocks: &[Block], report: &mut Report) {
    let mut commands = BTreeMap::new();
    for block in blocks {
        match block.lang.as_str() {
            "sh" => commands.extend(shell_commands(&block.text)),
            "text" => {
                for (i, line) in block.text.lines().enumerate() {
                    let json = line.strip_prefix("data: ").unwrap_or(line);
                    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(json) else {
                        continue;
                    };
                    let messages = match object.get("messages") {
                        Some(Value::Array(messages)) => messages.clone(),
                        Some(_) => vec![],
                        None if object.contains_key("push") || object.contains_key("id") => {
                            vec![Value::Object(object)]
                        }
                        None => vec![],
                    };
                    for message in &messages {
                        if let Err(e) = check_message(message, &commands) {
                            report.fail(block.line + 1 + i, e);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Checks every example of a page.
fn check_examples(doc: &str) -> (Report, Seen) {
    let mut report = Report::new("protocol.md");
    let mut seen = Seen::default();
    let blocks = blocks(doc, &mut report);
    check_shell_variables(&blocks, &mut report);
    check_transcripts(&blocks, &mut report);
    // Latest valid client command per id, for the results that follow it.
    let mut commands: BTreeMap<Option<u64>, &'static str> = BTreeMap::new();
    // How many replies each id is still owed.
    let mut unanswered: BTreeMap<Option<u64>, usize> = BTreeMap::new();
    // The error reply owed to the latest client-invalid example, if one is.
    let mut owed: Option<(usize, Value)> = None;
    for ex in examples(&blocks, &mut report) {
        report.examples += 1;
        match ex.kind {
            Kind::Client => {
                owed = None;
                if let Some((id, name)) = check_client(&ex, &mut report, &mut seen) {
                    commands.insert(id, name);
                    *unanswered.entry(id).or_default() += 1;
                }
            }
            Kind::ClientInvalid => {
                owed = check_client_invalid(&ex, &mut report).map(|(id, reply)| {
                    commands.remove(&id);
                    *unanswered.entry(id).or_default() += 1;
                    (ex.line, reply)
                });
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
                            seen.pushes.insert(kind.to_owned());
                            check_push(kind, object, &value)
                                .map_err(|e| format!("{kind} push: {e}"))
                        }
                        None => Err("\"push\" must be a string".to_owned()),
                    },
                    None => check_reply(object, &value, &commands, &mut unanswered),
                };
                if let Err(e) = checked {
                    report.fail(ex.line, e);
                }
            }
        }
    }
    (report, seen)
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
    let (report, seen) = check_examples(PROTOCOL);
    let mut errors = report.errors;
    errors.extend(check_tables(PROTOCOL));
    for command in COMMANDS {
        if !seen.commands.contains(*command) {
            errors.push(format!("no ```json client example of `{command}`"));
        }
    }
    for push in PUSHES {
        if !seen.pushes.contains(*push) {
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
    let errors = |doc: &str| check_examples(doc).0.errors;
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
        // A reply with another id than its command's; two replies to one command.
        fence("client", r#"{"id":1,"cmd":"ping"}"#) + &fence("server", r#"{"id":2,"result":{}}"#),
        fence("client", r#"{"id":1,"cmd":"ping"}"#)
            + &fence("server", r#"{"id":1,"result":{}}"#)
            + &fence("server", r#"{"id":1,"result":{}}"#),
        // A frame that does not parse, but whose id the server still reads.
        fence(
            "client-invalid",
            r#"{"id":3,"cmd":"subscribe","channel":"a","recover":{"offset":1}}"#,
        ) + &fence(
            "server",
            r#"{"error":{"code":107,"message":"invalid JSON: missing field `epoch` at line 1 column 63"},"id":null}"#,
        ),
        // A transcript whose connect result lacks fields; a shell variable never set.
        concat!(
            "```sh\nTOKEN=x\n",
            r#"curl -d '[{"id":1,"cmd":"connect","token":"'"$TOKEN"'"}]'"#,
            "\n```\n```text\n",
            r#"data: {"id":1,"result":{"client":"c"}}"#,
            "\n```\n"
        )
        .to_owned(),
        "```sh\ncurl \"$SB/api/info\"\n```\n".to_owned(),
    ];
    for doc in &bad {
        assert!(!errors(doc).is_empty(), "not caught:\n{doc}");
    }
    // Caught for the right reasons.
    let why = |doc: &str| errors(doc).join("\n");
    let transcript = why(&bad[bad.len() - 2]);
    assert!(transcript.contains("connect result"), "{transcript}");
    let id = why(&bad[bad.len() - 3]);
    assert!(id.contains("\"id\":3"), "{id}");
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
