//! Following files as `tail -F` does, by polling.
//!
//! Every `tail_poll` (100 ms) each followed file is checked: the open file's size (less
//! than what was read: it was truncated, in place or by copy-truncate rotation, so
//! reading starts again at 0), then new bytes are read, then the path is looked up again
//! (another file behind it, by device and inode: it was rotated by rename, so the old
//! file is read to its end and the new one from its start). A path that is gone is
//! waited for, the old file still read meanwhile. Polling rather than inotify (the
//! `notify` crate): a stat per file per poll costs next to nothing, works the same on
//! every file system (NFS, overlay) and OS, and needs no watch descriptors; 100 ms is
//! well inside the second a reader expects.
//!
//! Known limits, the same as `tail -F`'s: lines written between the last poll and a
//! copy-truncate are lost with the copy; a file truncated and then written past its old
//! size before the next poll looks as if it had only grown.
//!
//! Nothing here can stop the agent: a file that cannot be opened or read is reported
//! once (until it changes) and tried again at the next poll. Only the paths named in the
//! configuration, or matched by its globs, are ever opened.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{Config, LogSource, Start, make_name};
use crate::lines::LineSplitter;
use crate::outbox::{Item, Outbox};
use crate::sample::now_ms;

/// The most bytes read from one file in one poll, so that one busy file cannot hold
/// the others (and the runtime's one thread) for long; the rest waits for the next poll.
const READ_PER_POLL: u64 = 1 << 20;

/// The most bytes scanned back from the end for `start = "last:N"`.
const LAST_SCAN_MAX: u64 = 8 << 20;

/// Bytes of line text per publication (the contract's 16 KiB; the server's payload
/// limit is 32 KiB).
pub const BATCH_BYTES: usize = 16 << 10;

/// A log as announced in `hello`: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// `NAME`, or `NAME.STEM` for a glob's file.
    pub name: String,
    /// `"file"` or `"command"`.
    pub kind: &'static str,
}

/// A file's identity: device and inode.
type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

// Without inodes, only truncation is seen (not rename rotation).
#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> FileId {
    (0, 0)
}

/// Collects a log's lines into publications: one per poll (or per 100 ms of a
/// command's output), split at [`BATCH_BYTES`], an event starting a new one.
#[derive(Debug)]
pub struct Batcher {
    channel: Arc<str>,
    lines: Vec<String>,
    bytes: usize,
    event: Option<&'static str>,
}

impl Batcher {
    /// A batcher for `channel`.
    pub fn new(channel: Arc<str>) -> Batcher {
        Batcher {
            channel,
            lines: Vec::new(),
            bytes: 0,
            event: None,
        }
    }

    /// Adds a line read now.
    pub fn line(&mut self, text: &str, outbox: &Outbox) {
        let json = format!(
            "{{\"time\":{},\"text\":{}}}",
            now_ms(),
            serde_json::Value::from(text)
        );
        if self.bytes + json.len() > BATCH_BYTES && !self.lines.is_empty() {
            self.flush(outbox);
        }
        self.bytes += json.len();
        self.lines.push(json);
    }

    /// Marks what happened before the next lines (`rotated`, `truncated`, `started`).
    pub fn event(&mut self, event: &'static str, outbox: &Outbox) {
        self.flush(outbox);
        self.event = Some(event);
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.event.is_none()
    }

    /// Publishes what waits.
    pub fn flush(&mut self, outbox: &Outbox) {
        if self.is_empty() {
            return;
        }
        self.bytes = 0;
        outbox.push(Item::lines(
            self.channel.clone(),
            std::mem::take(&mut self.lines),
            self.event.take(),
        ));
    }
}

/// One followed path.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// The log's name.
    name: String,
    file: Option<File>,
    id: Option<FileId>,
    /// Bytes of the open file read so far.
    pos: u64,
    splitter: LineSplitter,
    /// Where to start, until the first poll: afterwards files are read from 0.
    start: Option<Start>,
    /// The last failure said, so that it is said once rather than every poll.
    error: Option<String>,
    batch: Batcher,
    /// Scratch space for reads.
    buf: Vec<u8>,
}

impl Follower {
    /// Follows `path` as the log `name`, publishing to `channel`.
    pub fn new(
        path: PathBuf,
        name: String,
        channel: Arc<str>,
        start: Start,
        max_line: usize,
    ) -> Follower {
        Follower {
            path,
            name,
            file: None,
            id: None,
            pos: 0,
            splitter: LineSplitter::new(max_line),
            start: Some(start),
            error: None,
            batch: Batcher::new(channel),
            buf: Vec::new(),
        }
    }

    /// The log's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the file once: truncation, new lines, rotation. Lines and events go to
    /// `outbox`, one batch per poll.
    pub fn poll(&mut self, outbox: &Outbox) {
        let first = self.start.take();
        if self.file.is_none() {
            self.open(first, outbox);
        }
        if self.file.is_some() {
            self.check_truncated(outbox);
            self.read(outbox);
            self.check_rotated(outbox);
        }
        self.batch.flush(outbox);
    }

    /// Whether the path no longer exists and the old file (if any) has been read to its
    /// end: a glob's follower that can go.
    fn finished(&self) -> bool {
        let at_end = match &self.file {
            Some(f) => f.metadata().map_or(true, |m| m.len() <= self.pos),
            None => true,
        };
        at_end && std::fs::metadata(&self.path).is_err()
    }

    fn fail(&mut self, what: &str, cause: &std::io::Error) {
        let text = format!("{what}: {cause}");
        if self.error.as_deref() != Some(&text) {
            warn!(log = %self.name, path = %self.path.display(), cause = %text, "cannot follow the file; trying again");
            self.error = Some(text);
        }
    }

    /// Opens the path; `start` says where to begin (None: at 0).
    fn open(&mut self, start: Option<Start>, outbox: &Outbox) {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                // A path that does not exist yet is normal for `tail -F`: said once.
                self.fail("cannot open", &e);
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.fail("cannot stat", &e),
        };
        if !meta.is_file() {
            let e = std::io::Error::other("not a regular file");
            return self.fail("cannot follow", &e);
        }
        let pos = match start {
            None => 0,
            Some(Start::End) => meta.len(),
            Some(Start::Last(n)) => match last_lines_offset(&mut file, meta.len(), n) {
                Ok(pos) => pos,
                Err(e) => return self.fail("cannot read", &e),
            },
        };
        if let Err(e) = file.seek(SeekFrom::Start(pos)) {
            return self.fail("cannot seek", &e);
        }
        if self.error.take().is_some() || start.is_some() {
            info!(log = %self.name, path = %self.path.display(), "following");
        }
        self.id = Some(file_id(&meta));
        self.pos = pos;
        self.file = Some(file);
        self.batch.event("started", outbox);
    }

    fn check_truncated(&mut self, outbox: &Outbox) {
        let Some(file) = &mut self.file else { return };
        let len = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return self.fail("cannot stat", &e),
        };
        if len >= self.pos {
            return;
        }
        if let Err(e) = file.seek(SeekFrom::Start(0)) {
            return self.fail("cannot seek", &e);
        }
        self.pos = 0;
        if let Some(line) = self.splitter.finish() {
            self.batch.line(&line, outbox);
        }
        self.batch.event("truncated", outbox);
    }

    /// Reads what was appended (at most [`READ_PER_POLL`]).
    fn read(&mut self, outbox: &Outbox) {
        let Some(file) = &mut self.file else { return };
        self.buf.resize(64 << 10, 0);
        let mut total = 0;
        while total < READ_PER_POLL {
            match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    self.pos += n as u64;
                    let batch = &mut self.batch;
                    self.splitter
                        .push(&self.buf[..n], &mut |line| batch.line(&line, outbox));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail("cannot read", &e);
                    break;
                }
            }
        }
        if total > 0 {
            tracing::debug!(log = %self.name, bytes = total, "read");
        }
        // The scratch buffer is not kept between polls: memory stays small with many
        // quiet files.
        self.buf = Vec::new();
    }

    fn check_rotated(&mut self, outbox: &Outbox) {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Renamed away and not replaced yet: keep reading the old file.
            Err(_) => return,
        };
        if Some(file_id(&meta)) == self.id {
            return;
        }
        // Lines written to the old file just before the rename: read them first.
        self.read(outbox);
        if let Some(line) = self.splitter.finish() {
            self.batch.line(&line, outbox);
        }
        self.batch.flush(outbox);
        self.file = None;
        self.id = None;
        self.pos = 0;
        self.open(None, outbox);
        // `open` marks `started`; a rotation is the one event to show.
        self.batch.event = Some("rotated");
        self.read(outbox);
    }
}

/// The offset where the last `n` lines of a file of `len` bytes start.
fn last_lines_offset(file: &mut File, len: u64, n: usize) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    let mut newlines = 0;
    let mut end = len;
    let mut buf = vec![0; 64 << 10];
    let floor = len.saturating_sub(LAST_SCAN_MAX);
    while end > floor {
        let start = end.saturating_sub(buf.len() as u64).max(floor);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, &b) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            // The newline that ends the last line does not start a line.
            if b == b'\n' && at + 1 != len {
                newlines += 1;
                if newlines == n {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(floor)
}

/// A `[[logs]]` entry being followed.
#[derive(Debug)]
enum Source {
    /// One path.
    File(Follower),
    /// The files a pattern matches, by path.
    Glob {
        log: LogSource,
        followers: BTreeMap<PathBuf, Follower>,
        /// Whether the first expansion was done (its files take `start`, later ones
        /// are read from 0).
        scanned: bool,
        /// The last failure said.
        error: Option<String>,
    },
}

/// Every file of the configuration.
#[derive(Debug)]
pub struct Tails {
    sources: Vec<Source>,
    host: String,
    max_line: usize,
    rescan: Duration,
    last_scan: Option<Instant>,
}

impl Tails {
    /// The files of `config`'s `[[logs]]`, for `host`'s channels. Nothing is opened yet.
    pub fn new(config: &Config, host: &str) -> Tails {
        let sources = config
            .logs
            .iter()
            .map(|log| {
                if log.is_glob() {
                    Source::Glob {
                        log: log.clone(),
                        followers: BTreeMap::new(),
                        scanned: false,
                        error: None,
                    }
                } else {
                    Source::File(Follower::new(
                        log.path.clone(),
                        log.name.clone(),
                        log_channel(host, &log.name),
                        log.start,
                        config.max_line_bytes,
                    ))
                }
            })
            .collect();
        Tails {
            sources,
            host: host.to_owned(),
            max_line: config.max_line_bytes,
            rescan: config.glob_rescan,
            last_scan: None,
        }
    }

    /// The logs as announced: each file, each file a glob matches now.
    pub fn list(&self) -> Vec<LogInfo> {
        let mut list = Vec::new();
        for source in &self.sources {
            match source {
                Source::File(f) => list.push(LogInfo {
                    name: f.name.clone(),
                    kind: "file",
                }),
                Source::Glob { followers, .. } => {
                    list.extend(followers.values().map(|f| LogInfo {
                        name: f.name.clone(),
                        kind: "file",
                    }));
                }
            }
        }
        list
    }

    /// Checks every file once (and expands the globs again when due).
    pub fn poll(&mut self, outbox: &Outbox) {
        let now = Instant::now();
        if self
            .last_scan
            .is_none_or(|at| now.duration_since(at) >= self.rescan)
        {
            self.last_scan = Some(now);
            self.scan();
        }
        for source in &mut self.sources {
            match source {
                Source::File(f) => f.poll(outbox),
                Source::Glob { followers, .. } => {
                    for f in followers.values_mut() {
                        f.poll(outbox);
                    }
                }
            }
        }
    }

    /// Expands the globs: new files are followed, files gone (and read to their end)
    /// are dropped.
    fn scan(&mut self) {
        for source in &mut self.sources {
            let Source::Glob {
                log,
                followers,
                scanned,
                error,
            } = source
            else {
                continue;
            };
            let pattern = log.path.to_string_lossy();
            let paths = match glob::glob(&pattern) {
                Ok(paths) => paths,
                Err(e) => {
                    // Checked when the configuration was read; said once all the same.
                    let text = e.to_string();
                    if error.as_deref() != Some(&text) {
                        warn!(log = %log.name, cause = %text, "invalid glob");
                        *error = Some(text);
                    }
                    continue;
                }
            };
            let start = if *scanned { None } else { Some(log.start) };
            *scanned = true;
            followers.retain(|_, f| !f.finished());
            // Files already followed, by identity: a file renamed to another matching
            // name is not read again from its start.
            let open: Vec<FileId> = followers.values().filter_map(|f| f.id).collect();
            for path in paths.filter_map(|p| p.ok()) {
                if followers.contains_key(&path) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name = make_name(&format!("{}.{stem}", log.name), 64, &log.name);
                if followers.values().any(|f| f.name == name) {
                    let text = format!("{} and another file are both {name}", path.display());
                    if error.as_deref() != Some(&text) {
                        warn!(log = %log.name, cause = %text, "two files of a glob have one name; the second is not followed");
                        *error = Some(text);
                    }
                    continue;
                }
                let start = if open.contains(&file_id(&meta)) {
                    Some(Start::End)
                } else {
                    start
                };
                let mut follower = Follower::new(
                    path.clone(),
                    name.clone(),
                    log_channel(&self.host, &name),
                    start.unwrap_or(Start::End),
                    self.max_line,
                );
                if start.is_none() {
                    // Appeared after the agent started: read it all.
                    follower.start = None;
                }
                followers.insert(path, follower);
            }
        }
    }
}

/// `logs:HOST:NAME`.
pub fn log_channel(host: &str, name: &str) -> Arc<str> {
    Arc::from(format!("logs:{host}:{name}"))
}

/// Follows the configured files until `cancel`, telling `list` when the set of logs
/// changes (a glob matched a new file).
pub async fn run(
    config: Config,
    host: String,
    outbox: Arc<Outbox>,
    list: tokio::sync::watch::Sender<Vec<LogInfo>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let commands: Vec<LogInfo> = config
        .commands
        .iter()
        .map(|c| LogInfo {
            name: c.name.clone(),
            kind: "command",
        })
        .collect();
    let mut tails = Tails::new(&config, &host);
    let mut tick = tokio::time::interval(config.tail_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        tails.poll(&outbox);
        let mut now = tails.list();
        now.extend(commands.iter().cloned());
        list.send_if_modified(|old| {
            let changed = *old != now;
            if changed {
                *old = now;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(text: &[u8]) -> (PathBuf, File) {
        let path =
            std::env::temp_dir().join(format!("sb-agent-last-{:016x}", rand::random::<u64>()));
        let mut f = File::create(&path).unwrap();
        f.write_all(text).unwrap();
        (path.clone(), File::open(&path).unwrap())
    }

    #[test]
    fn last_lines_start_where_they_should() {
        let (path, mut f) = temp_file(b"a\nb\nc\n");
        assert_eq!(last_lines_offset(&mut f, 6, 1).unwrap(), 4);
        assert_eq!(last_lines_offset(&mut f, 6, 2).unwrap(), 2);
        assert_eq!(last_lines_offset(&mut f, 6, 3).unwrap(), 0);
        assert_eq!(last_lines_offset(&mut f, 6, 10).unwrap(), 0);
        assert_eq!(last_lines_offset(&mut f, 6, 0).unwrap(), 6);
        std::fs::remove_file(path).unwrap();
        // Without a final newline, the unfinished line counts as one.
        let (path, mut f) = temp_file(b"a\nb\nc");
        assert_eq!(last_lines_offset(&mut f, 5, 1).unwrap(), 4);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn batches_are_split_by_size_and_events() {
        let outbox = Outbox::new(1 << 20);
        let mut batch = Batcher::new("logs:h:a".into());
        let line = "x".repeat(1000);
        for _ in 0..40 {
            batch.line(&line, &outbox);
        }
        batch.event("rotated", &outbox);
        batch.line("after", &outbox);
        batch.flush(&outbox);
        let items: Vec<_> = std::iter::from_fn(|| outbox.pop()).collect();
        let counts: Vec<_> = items.iter().map(|i| i.line_count()).collect();
        assert_eq!(counts.iter().sum::<usize>(), 41);
        assert!(items.iter().all(|i| i.data().len() <= BATCH_BYTES + 64));
        let last = items.last().unwrap().data();
        assert!(last.contains("\"event\":\"rotated\"") && last.contains("after"));
    }
}
