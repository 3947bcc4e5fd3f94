//! Checks `docs/api.md` against the code.
//!
//! Its examples are `curl` lines in ```sh blocks, each followed by the ```json blocks that
//! are its possible answers:
//!
//! - the request: `POST $SB/api/<command>` with the body after `-d '…'` (none counts as
//!   `{}`) and the key in `-H "X-API-Key: …"`;
//! - an answer to a request with another key than `$KEY` must be exactly the refusal the
//!   server sends; to a body the command cannot take, exactly the error it gets
//!   ([`ApiCommand::parse`]); otherwise an error body with a known code, or a result of
//!   the command's shape (the protocol's result types, and the API's own in `http::api`).
//!
//! Any ```json block without a request before it is an error. Every command needs a
//! request with a result; `docs/openapi.yaml` must list exactly these commands. The
//! status table must give each error code the HTTP status the server answers it with,
//! and the metrics table must list every metric `/metrics` shows, with its type.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::results::check_result;
use super::{Block, Report, blocks, check_error, check_shell_variables, only_keys, same, string};
use crate::error::ErrorCode;
use crate::http::api::{
    ApiCommand, BroadcastOutcome, Broadcasted, Channels, Disconnected, Info, wrong_key,
};
use crate::metrics::{Metrics, Readings};
use crate::protocol::{self, StreamPosition};

/// The page under test.
const API: &str = include_str!("../../../../docs/api.md");
/// The machine-readable description of the same API.
const OPENAPI: &str = include_str!("../../../../docs/openapi.yaml");

/// A `curl` line of a shell block.
#[derive(Debug, Clone, PartialEq)]
struct Curl {
    line: usize,
    /// The API command, or `None` for another path (`/health`).
    command: Option<String>,
    body: String,
    /// Sent with `$KEY`, the page's right key.
    right_key: bool,
}

/// The `curl` lines of a shell block (continuation lines joined).
fn curls(block: &Block) -> Vec<Curl> {
    let joined = block.text.replace("\\\n", " ");
    let mut out = Vec::new();
    for (i, line) in joined.lines().enumerate() {
        let Some(at) = line.find("curl ") else {
            continue;
        };
        let line_text = &line[at..];
        let command = line_text.split("/api/").nth(1).map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        });
        let body = line_text
            .split_once("-d '")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map_or_else(String::new, |(body, _)| body.to_owned());
        let right_key = line_text
            .split_once("X-API-Key: ")
            .is_some_and(|(_, rest)| rest.starts_with("$KEY\""));
        out.push(Curl {
            line: block.line + 1 + i,
            command,
            body,
            right_key,
        });
    }
    out
}

/// `example` round-trips through `T`.
fn round_trip<T: Serialize + DeserializeOwned>(example: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(example.clone()).map_err(|e| e.to_string())?;
    same(
        example,
        &serde_json::to_string(&typed).map_err(|e| e.to_string())?,
    )
}

/// A `broadcast` result: each outcome a position or an error, as the server writes them.
fn check_broadcast(example: &Value) -> Result<(), String> {
    let object = example.as_object().ok_or("a result must be an object")?;
    only_keys(object, &["results"])?;
    let items = object
        .get("results")
        .and_then(Value::as_array)
        .ok_or("\"results\" must be an array")?;
    let mut results = Vec::new();
    for item in items {
        let item = item.as_object().ok_or("a result must be an object")?;
        let channel = string(item, "channel")?;
        results.push(match item.get("error") {
            Some(error) => BroadcastOutcome::Failed {
                channel,
                error: check_error(error)?,
            },
            None => {
                let mut rest = item.clone();
                rest.remove("channel");
                let position: StreamPosition = serde_json::from_value(Value::Object(rest))
                    .map_err(|e| format!("not a position: {e}"))?;
                BroadcastOutcome::Published { channel, position }
            }
        });
    }
    same(
        example,
        &serde_json::to_string(&Broadcasted { results }).map_err(|e| e.to_string())?,
    )
}

/// Checks one answer to `curl`.
fn check_answer(curl: &Curl, answer: &Value) -> Result<(), String> {
    let object = answer
        .as_object()
        .ok_or("an answer must be a JSON object")?;
    let Some(command) = &curl.command else {
        return Ok(());
    };
    if !curl.right_key {
        return same(answer, &protocol::error_body(&wrong_key()))
            .map_err(|e| format!("without the key: {e}"));
    }
    if let Err(error) = ApiCommand::parse(command, curl.body.as_bytes()) {
        return same(answer, &protocol::error_body(&error))
            .map_err(|e| format!("the request is refused: {e}"));
    }
    if let Some(error) = object.get("error") {
        only_keys(object, &["error"])?;
        return check_error(error).map(drop);
    }
    match command.as_str() {
        "publish" | "send" | "presence" | "history" => check_result(command, answer),
        "broadcast" => check_broadcast(answer),
        "channels" => round_trip::<Channels>(answer),
        "disconnect" => round_trip::<Disconnected>(answer),
        "info" => round_trip::<Info>(answer),
        other => Err(format!("no result shape known for {other:?}")),
    }
    .map_err(|e| format!("{command} result: {e}"))
}

/// Checks the requests and their answers; returns the commands shown with a result.
fn check_examples(doc: &str, report: &mut Report) -> BTreeSet<String> {
    let blocks = blocks(doc, report);
    check_shell_variables(&blocks, report);
    let mut with_result = BTreeSet::new();
    let mut last: Option<Curl> = None;
    for block in &blocks {
        match block.lang.as_str() {
            "sh" => {
                if let Some(curl) = curls(block).pop() {
                    if let Some(command) = &curl.command {
                        if ApiCommand::parse(command, b"{}")
                            .is_err_and(|e| e.code == ErrorCode::UnknownCommand)
                        {
                            report.fail(curl.line, format!("no API command {command:?}"));
                        }
                    }
                    last = Some(curl);
                }
            }
            "json" => {
                report.examples += 1;
                if block.tag.is_some() {
                    report.fail(block.line, "an answer is a plain ```json block");
                }
                let Some(curl) = &last else {
                    report.fail(block.line, "an answer without a curl request before it");
                    continue;
                };
                let checked = serde_json::from_str::<Value>(&block.text)
                    .map_err(|e| format!("not JSON: {e}"))
                    .and_then(|answer| {
                        check_answer(curl, &answer)?;
                        Ok(answer)
                    });
                match checked {
                    Ok(answer) if answer.get("error").is_none() => {
                        with_result.extend(curl.command.clone());
                    }
                    Ok(_) => {}
                    Err(e) => report.fail(
                        block.line,
                        format!("answer to the request of line {}: {e}", curl.line),
                    ),
                }
            }
            _ => {}
        }
    }
    with_result
}

/// The cells of the page's table rows.
fn rows(doc: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    doc.lines().enumerate().filter_map(|(i, line)| {
        let cells = line.trim().strip_prefix('|')?.strip_suffix('|')?;
        Some((i + 1, cells.split('|').map(str::trim).collect()))
    })
}

/// The status table: each error code listed under the status the server answers it with.
fn check_status_table(doc: &str, report: &mut Report) {
    let mut listed = 0;
    for (line, cells) in rows(doc) {
        let Some(status) = cells
            .first()
            .and_then(|c| c.split(' ').next())
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (200..600).contains(s))
        else {
            continue;
        };
        for code in cells.get(1).unwrap_or(&"").split(',').map(str::trim) {
            let Ok(number) = code.parse::<u16>() else {
                report.fail(line, format!("{code:?} is not an error code"));
                continue;
            };
            listed += 1;
            match ErrorCode::ALL.iter().find(|c| **c == number) {
                None => report.fail(line, format!("error code {number} is not in ErrorCode")),
                Some(c) if c.http_status() != status => report.fail(
                    line,
                    format!(
                        "error {number} is answered with HTTP {}, not {status}",
                        c.http_status()
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    if listed == 0 {
        report.fail(1, "no status table found");
    }
}

/// The metrics table: exactly the metrics `/metrics` shows, each with its type.
fn check_metrics_table(doc: &str, report: &mut Report) {
    let rendered = Metrics::default().render(&Readings::default());
    let shown: BTreeMap<String, String> = rendered
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect();
    let mut documented = BTreeMap::new();
    for (line, cells) in rows(doc) {
        let Some(name) = cells
            .first()
            .and_then(|c| c.strip_prefix("`switchboard_"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let name = format!("switchboard_{name}");
        let kind = cells.get(1).copied().unwrap_or_default();
        match shown.get(&name) {
            None => report.fail(line, format!("{name} is not a metric /metrics shows")),
            Some(real) if real != kind => {
                report.fail(line, format!("{name} is a {real}, not a {kind}"));
            }
            Some(_) => {}
        }
        documented.insert(name, line);
    }
    for name in shown.keys().filter(|n| !documented.contains_key(*n)) {
        report.fail(1, format!("{name} has no row in the metrics table"));
    }
}

/// The commands `docs/openapi.yaml` describes (`  /api/<name>:`).
fn openapi_commands(yaml: &str) -> BTreeSet<String> {
    yaml.lines()
        .filter_map(|line| line.strip_prefix("  /api/"))
        .filter_map(|rest| rest.strip_suffix(':'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn api_page_agrees_with_the_code() {
    let mut report = Report::new("api.md");
    let with_result = check_examples(API, &mut report);
    check_status_table(API, &mut report);
    check_metrics_table(API, &mut report);
    let names: BTreeSet<String> = ApiCommand::NAMES.iter().map(|n| n.to_string()).collect();
    for name in names.difference(&with_result) {
        report.fail(1, format!("no curl example of `{name}` with a result"));
    }
    let described = openapi_commands(OPENAPI);
    if described != names {
        report.fail(
            1,
            format!("docs/openapi.yaml describes {described:?}, the server has {names:?}"),
        );
    }
    assert!(report.errors.is_empty(), "\n{}\n", report.errors.join("\n"));
    assert!(
        report.examples > 10,
        "only {} examples found",
        report.examples
    );
}

/// The checker fails on the mistakes it is there to catch.
#[test]
fn checker_catches_drift() {
    let errors = |doc: &str| {
        let mut report = Report::new("api.md");
        check_examples(doc, &mut report);
        report.errors
    };
    let setup = "```sh\nSB=http://h\nKEY=k\n```\n";
    let request = |command: &str, body: &str, answer: &str| {
        format!(
            "{setup}```sh\ncurl -s -X POST $SB/api/{command} -H \"X-API-Key: $KEY\" \\\n     -d '{body}'\n```\n```json\n{answer}\n```\n"
        )
    };
    assert_eq!(
        errors(&request(
            "send",
            r#"{"user":"bob","data":1}"#,
            r#"{"mailbox":4,"status":"stored"}"#
        )),
        Vec::<String>::new()
    );
    let bad = [
        // The send result with `id` for `mailbox`; an unknown status.
        request(
            "send",
            r#"{"user":"bob","data":1}"#,
            r#"{"id":4,"status":"stored"}"#,
        ),
        request(
            "send",
            r#"{"user":"bob","data":1}"#,
            r#"{"mailbox":4,"status":"sent"}"#,
        ),
        // A body the command refuses, shown with a result; with another error.
        request(
            "send",
            r#"{"usr":"bob","data":1}"#,
            r#"{"mailbox":4,"status":"stored"}"#,
        ),
        request(
            "publish",
            r#"{"channel":"a"}"#,
            r#"{"error":{"code":107,"message":"missing data"}}"#,
        ),
        // Unknown commands and results of the wrong shape.
        request("publsh", "{}", "{}"),
        request("channels", "{}", r#"{"channels":[{"channel":"a"}]}"#),
        request("info", "{}", r#"{"nodes":[{"version":"1"}]}"#),
        request(
            "broadcast",
            r#"{"channels":["a"],"data":1}"#,
            r#"{"results":[{"channel":"a","offset":1}]}"#,
        ),
        // An answer with no request; an undefined variable.
        "```json\n{}\n```\n".to_owned(),
        "```sh\ncurl $SB/api/info\n```\n".to_owned(),
    ];
    for doc in &bad {
        assert!(!errors(doc).is_empty(), "not caught:\n{doc}");
    }
    let wrong_key = format!(
        "{setup}```sh\ncurl -X POST $SB/api/info -H \"X-API-Key: nope\"\n```\n```json\n{{\"nodes\":[]}}\n```\n"
    );
    assert!(!errors(&wrong_key).is_empty());

    let mut report = Report::new("api.md");
    check_status_table("| 400 Bad Request | 102, 101 | x |\n", &mut report);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let mut report = Report::new("api.md");
    check_metrics_table(
        "| `switchboard_connections` | counter | x |\n| `switchboard_nope` | gauge | x |\n",
        &mut report,
    );
    let found = report.errors.join("\n");
    assert!(found.contains("is a gauge, not a counter"), "{found}");
    assert!(found.contains("switchboard_nope is not"), "{found}");
    assert!(
        found.contains("switchboard_commands_total has no row"),
        "{found}"
    );
}
