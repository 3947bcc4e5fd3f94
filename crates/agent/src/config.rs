//! `agent.toml`: what the agent samples, which files it tails, which commands it runs.
//!
//! Every key has a default, so an empty file (or none) is a working agent that sends
//! samples only. Unknown keys are refused rather than ignored: a misspelt `[[logs]]` key
//! would otherwise silently tail nothing. The paths and commands written here are the
//! only ones the agent ever opens or runs; nothing it receives from the server adds to
//! them.
//!
//! ```toml
//! host = "web-1"               # default: --host, else the machine's name
//! buffer_bytes = 4194304       # kept while disconnected (4 MiB)
//! max_line_bytes = 4096        # longer lines are cut, with a marker
//!
//! [interval]
//! watched = "1s"               # someone has metrics:HOST open
//! idle = "10s"                 # nobody does
//!
//! [[logs]]
//! name = "syslog"
//! path = "/var/log/syslog"
//! start = "last:100"           # or "end" (the default)
//!
//! [[logs]]
//! name = "nginx"               # one channel per file: logs:HOST:nginx.access, …
//! path = "/var/log/nginx/*.log"
//!
//! [[commands]]
//! name = "vmstat"
//! run = ["vmstat", "1"]        # argv, no shell
//! ```

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// The longest `max_line_bytes`: a line of that many control characters, escaped as
/// JSON (`\u0001`, six bytes each), stays under the server's default 32 KiB payload
/// limit, so a single line can always be published.
pub const MAX_LINE_BYTES_LIMIT: usize = 5000;

/// The agent's configuration. See the module documentation for the file format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The host name used in channel names; `--host` wins over it, and the machine's
    /// name (made valid) is used when neither is given.
    pub host: Option<String>,
    /// How often samples are taken.
    pub interval: Intervals,
    /// Bytes of samples and log lines kept while the server cannot be reached (or is
    /// slower than what is produced); past it the oldest are dropped and counted.
    /// Default 4 MiB.
    pub buffer_bytes: usize,
    /// A log line longer than this is cut and ends with ` […N bytes cut]`. Default 4096,
    /// at most [`MAX_LINE_BYTES_LIMIT`].
    pub max_line_bytes: usize,
    /// How often followed files are checked for new lines, rotation and truncation.
    /// Default 100 ms (a stat and, when the file grew, a read: cheap).
    #[serde(deserialize_with = "duration")]
    pub tail_poll: Duration,
    /// How often globs are expanded again to find files created later. Default 1 s.
    #[serde(deserialize_with = "duration")]
    pub glob_rescan: Duration,
    /// How fast the agent publishes, kept under the server's per-connection limits so
    /// that emptying a full buffer after a reconnection is not refused (error 111).
    pub send: SendLimits,
    /// Files to follow.
    pub logs: Vec<LogSource>,
    /// Commands whose output lines are published as a log.
    pub commands: Vec<CommandSource>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            host: None,
            interval: Intervals::default(),
            buffer_bytes: 4 << 20,
            max_line_bytes: 4096,
            tail_poll: Duration::from_millis(100),
            glob_rescan: Duration::from_secs(1),
            send: SendLimits::default(),
            logs: Vec::new(),
            commands: Vec::new(),
        }
    }
}

/// Sampling intervals.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Intervals {
    /// While someone is subscribed to `metrics:HOST`. Default 1 s.
    #[serde(deserialize_with = "duration")]
    pub watched: Duration,
    /// While nobody is (or the server cannot be reached). Default 10 s.
    #[serde(deserialize_with = "duration")]
    pub idle: Duration,
}

impl Default for Intervals {
    fn default() -> Intervals {
        Intervals {
            watched: Duration::from_secs(1),
            idle: Duration::from_secs(10),
        }
    }
}

/// The agent's own publishing rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendLimits {
    /// Publications per second. Default 50 (the server allows 100 commands a second on
    /// a connection by default).
    pub commands_per_second: u32,
    /// Bytes of data per second. Default 192 KiB (the server allows 256 KiB a second per
    /// user by default).
    pub bytes_per_second: usize,
}

impl Default for SendLimits {
    fn default() -> SendLimits {
        SendLimits {
            commands_per_second: 50,
            bytes_per_second: 192 << 10,
        }
    }
}

/// A `[[logs]]` entry: a file, or the files a glob matches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// The log's name (`logs:HOST:NAME`); a glob's files are `NAME.STEM`.
    pub name: String,
    /// An absolute path, or a glob (`*`, `?`, `[…]`) over absolute paths.
    pub path: PathBuf,
    /// Where reading starts in the files present when the agent starts. Files that
    /// appear later, or replace a rotated one, are read from their beginning.
    #[serde(default)]
    pub start: Start,
}

impl LogSource {
    /// Whether `path` is a pattern rather than one file.
    pub fn is_glob(&self) -> bool {
        self.path
            .to_str()
            .is_some_and(|p| p.contains(['*', '?', '[']))
    }
}

/// Where reading starts in a file that exists when the agent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// At its end: only lines written from now on (`"end"`, the default).
    #[default]
    End,
    /// With its last N lines (`"last:N"`).
    Last(usize),
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Start, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || {
            <D::Error as serde::de::Error>::custom(format!(
                "invalid start {text:?}: use \"end\" or \"last:N\""
            ))
        };
        match text.as_str() {
            "end" => Ok(Start::End),
            other => {
                let n = other.strip_prefix("last:").ok_or_else(bad)?;
                n.parse().map(Start::Last).map_err(|_| bad())
            }
        }
    }
}

/// A `[[commands]]` entry: a program whose output lines are published as a log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    /// The log's name (`logs:HOST:NAME`).
    pub name: String,
    /// The program and its arguments, run as they are: no shell, no expansion.
    pub run: Vec<String>,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::Read {
            path: path.to_owned(),
            cause,
        })?;
        Config::from_toml(&text).map_err(|err| match err {
            Error::Config { message, .. } => Error::Config {
                origin: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Reads and checks a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config {
            origin: "the configuration".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: names, paths, ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                origin: "the configuration".into(),
                message,
            })
        };
        if let Some(host) = &self.host {
            if !valid_name(host) {
                return Err(Error::Host(host.clone()));
            }
        }
        if self.interval.watched.is_zero() || self.interval.idle.is_zero() {
            return bad("interval.watched and interval.idle must be above 0".into());
        }
        if !(1..=MAX_LINE_BYTES_LIMIT).contains(&self.max_line_bytes) {
            return bad(format!(
                "max_line_bytes is {}: use 1 to {MAX_LINE_BYTES_LIMIT}",
                self.max_line_bytes
            ));
        }
        // Room for at least one batch of the longest lines.
        if self.buffer_bytes < 64 << 10 {
            return bad(format!(
                "buffer_bytes is {}: use at least 65536",
                self.buffer_bytes
            ));
        }
        if self.tail_poll.is_zero() || self.glob_rescan.is_zero() {
            return bad("tail_poll and glob_rescan must be above 0".into());
        }
        if self.send.commands_per_second == 0 || self.send.bytes_per_second < 32 << 10 {
            return bad(
                "send.commands_per_second must be above 0 and send.bytes_per_second at least 32768"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        let all = self
            .logs
            .iter()
            .map(|l| &l.name)
            .chain(self.commands.iter().map(|c| &c.name));
        for name in all {
            if !valid_name(name) {
                return bad(format!(
                    "invalid log name {name:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'"
                ));
            }
            if !names.insert(name) {
                return bad(format!("the log name {name:?} is used twice"));
            }
        }
        for log in &self.logs {
            // Only absolute paths without `..`: the list in the file is then exactly the
            // set of places the agent may read, whatever its working directory.
            if !log.path.is_absolute()
                || log.path.components().any(|c| c == Component::ParentDir)
                || log.path.to_str().is_none()
            {
                return bad(format!(
                    "log {:?}: the path {} must be absolute, UTF-8, and without '..'",
                    log.name,
                    log.path.display()
                ));
            }
            if log.is_glob() {
                if let Err(e) = glob::Pattern::new(log.path.to_str().unwrap_or_default()) {
                    return bad(format!("log {:?}: invalid glob: {e}", log.name));
                }
            }
        }
        for command in &self.commands {
            if command.run.first().is_none_or(|p| p.is_empty()) {
                return bad(format!(
                    "command {:?}: run must name a program",
                    command.name
                ));
            }
        }
        Ok(())
    }
}

/// Whether `name` can be a host or a log name: 1 to 64 ASCII letters, digits, `.`, `_`
/// or `-` (the server's `auth::valid_host`; a test checks that they agree).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `text` made into a valid name: other characters become `-`, cut to `max` bytes;
/// `fallback` when nothing is left.
pub fn make_name(text: &str, max: usize, fallback: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(max.min(64))
        .collect();
    if name.trim_matches('-').is_empty() {
        name = fallback.to_owned();
    }
    name
}

/// The machine's host name made valid (`localhost` when it has none).
pub fn machine_host() -> String {
    let name = sysinfo::System::host_name().unwrap_or_default();
    make_name(&name, 64, "localhost")
}

/// serde: a duration written `"250ms"`, `"1s"`, `"5m"`, `"1h"`, or a number of seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {t:?}: use a number with ms, s, m or h"
            ))
        }),
    }
}

/// Parses `"250ms"`, `"1s"`, `"5m"`, `"1h"` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn a_full_file_is_read() {
        let config = Config::from_toml(
            r#"
            host = "web-1"
            buffer_bytes = 100000
            max_line_bytes = 200
            tail_poll = "50ms"
            [interval]
            watched = "300ms"
            idle = 5
            [send]
            commands_per_second = 10
            bytes_per_second = 40000
            [[logs]]
            name = "syslog"
            path = "/var/log/syslog"
            start = "last:10"
            [[logs]]
            name = "nginx"
            path = "/var/log/nginx/*.log"
            [[commands]]
            name = "vmstat"
            run = ["vmstat", "1"]
            "#,
        )
        .unwrap();
        assert_eq!(config.host.as_deref(), Some("web-1"));
        assert_eq!(config.interval.watched, Duration::from_millis(300));
        assert_eq!(config.interval.idle, Duration::from_secs(5));
        assert_eq!(config.tail_poll, Duration::from_millis(50));
        assert_eq!(config.logs[0].start, Start::Last(10));
        assert_eq!(config.logs[1].start, Start::End);
        assert!(!config.logs[0].is_glob());
        assert!(config.logs[1].is_glob());
        assert_eq!(config.commands[0].run, ["vmstat", "1"]);
    }

    #[test]
    fn wrong_files_are_refused_with_a_reason() {
        for (text, says) in [
            ("hots = \"x\"", "unknown field"),
            ("host = \"a b\"", "invalid host"),
            ("[[logs]]\nname = \"x\"\npath = \"var/log/x\"", "absolute"),
            (
                "[[logs]]\nname = \"x\"\npath = \"/var/log/../../etc/shadow\"",
                "'..'",
            ),
            (
                "[[logs]]\nname = \"x y\"\npath = \"/var/log/x\"",
                "invalid log name",
            ),
            (
                "[[logs]]\nname = \"x\"\npath = \"/a\"\n[[commands]]\nname = \"x\"\nrun = [\"ls\"]",
                "used twice",
            ),
            (
                "[[logs]]\nname = \"x\"\npath = \"/a\"\nstart = \"first:3\"",
                "last:N",
            ),
            (
                "[[logs]]\nname = \"x\"\npath = \"/a\"\nmode = 1",
                "unknown field",
            ),
            ("[[commands]]\nname = \"x\"\nrun = []", "program"),
            ("max_line_bytes = 100000", "max_line_bytes"),
            ("[interval]\nidle = \"0s\"", "above 0"),
            ("[interval]\nidle = \"soon\"", "invalid duration"),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(make_name("web 1.example", 64, "x"), "web-1.example");
        assert_eq!(make_name("", 64, "localhost"), "localhost");
        assert_eq!(make_name("ééé", 64, "localhost"), "localhost");
        assert_eq!(make_name(&"a".repeat(100), 64, "x").len(), 64);
        assert!(valid_name(&machine_host()));
    }
}
