//! Checks the examples of `docs/protocol.md` and `docs/api.md` against the code, so that
//! the pages and the wire cannot drift apart.
//!
//! - `protocol`: the client protocol's commands, replies, pushes and tables;
//! - `api`: the server API's requests (the `curl` lines), their answers, the status
//!   table and the metrics table;
//! - `results`: the shapes of command results, which both pages show.
//!
//! Both pages' shell sessions must define every variable they use before using it (a
//! reader pastes them in order).

mod api;
mod protocol;
mod results;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::protocol::Publication;

/// What checking a page found.
#[derive(Debug, Default)]
struct Report {
    page: &'static str,
    errors: Vec<String>,
    examples: usize,
}

impl Report {
    fn new(page: &'static str) -> Report {
        Report {
            page,
            ..Report::default()
        }
    }

    fn fail(&mut self, line: usize, message: impl std::fmt::Display) {
        self.errors
            .push(format!("docs/{}:{line}: {message}", self.page));
    }
}

/// A fenced code block: its language and tag (the info string's first two words), the
/// line of its opening fence, and its text without the last newline.
#[derive(Debug)]
struct Block {
    lang: String,
    tag: Option<String>,
    /// Words after the tag, which no block may have.
    extra: bool,
    line: usize,
    text: String,
}

/// The fenced code blocks of a Markdown page.
fn blocks(doc: &str, report: &mut Report) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start();
        match &mut open {
            Some(block) => {
                if fence.trim_end() == "```" {
                    let mut block = open.take().expect("open");
                    block.text.pop();
                    out.push(block);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
            None => {
                let Some(info) = fence.strip_prefix("```") else {
                    continue;
                };
                let mut words = info.split_whitespace();
                open = Some(Block {
                    lang: words.next().unwrap_or_default().to_owned(),
                    tag: words.next().map(str::to_owned),
                    extra: words.next().is_some(),
                    line: i + 1,
                    text: String::new(),
                });
            }
        }
    }
    if let Some(block) = open {
        report.fail(block.line, "code block never closed");
    }
    out
}

/// Every `$NAME` a ```sh block uses must be set (`NAME=`) in that block or an earlier
/// one: the reader pastes them in order.
fn check_shell_variables(blocks: &[Block], report: &mut Report) {
    let mut defined: BTreeSet<String> = BTreeSet::new();
    for block in blocks.iter().filter(|b| b.lang == "sh") {
        for (i, line) in block.text.lines().enumerate() {
            let code = line.split(" #").next().unwrap_or_default();
            for name in used_variables(code) {
                if !defined.contains(&name) {
                    report.fail(
                        block.line + 1 + i,
                        format!("${name} is used before a shell block sets it"),
                    );
                }
            }
            let assignment = code.trim_start().trim_start_matches("export ");
            if let Some((name, _)) = assignment.split_once('=') {
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    defined.insert(name.to_owned());
                }
            }
        }
    }
}

/// The upper-case shell variables a line expands (`$NAME`, `${NAME}`).
fn used_variables(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
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

/// An error object `{"code", "message"}` with a code the server has.
fn check_error(error: &Value) -> Result<crate::error::ClientError, String> {
    let error = error.as_object().ok_or("\"error\" must be an object")?;
    only_keys(error, &["code", "message"])?;
    let number = u16::try_from(number(error, "code")?).map_err(|e| e.to_string())?;
    let Some(&code) = crate::error::ErrorCode::ALL.iter().find(|c| **c == number) else {
        return Err(format!("error code {number} is not in error::ErrorCode"));
    };
    Ok(crate::error::ClientError {
        code,
        message: string(error, "message")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_variables_must_be_set_first() {
        let mut report = Report::new("x.md");
        let doc = "```sh\nSB=http://h\ncurl $SB/a -H \"K: ${KEY}\"   # $NOTE\n```\n\
                   ```sh\nKEY=1\ncurl $SB/$KEY $(echo $HOME)\n```\n";
        let found = blocks(doc, &mut report);
        check_shell_variables(&found, &mut report);
        assert_eq!(
            report.errors,
            vec![
                "docs/x.md:3: $KEY is used before a shell block sets it",
                "docs/x.md:7: $HOME is used before a shell block sets it",
            ]
        );
    }
}
