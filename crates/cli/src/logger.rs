//! Log output that can never stop or kill the server.
//!
//! tracing's formatter writes each event to stderr from the thread that logged it. If
//! stderr is a file on a full disk, the write fails, and the formatter reports that with
//! `eprintln!`, which panics: a warning in the accept loop then ended the process (exit
//! 101), and one in the SQLite writer killed the writer thread. If stderr is a pipe nobody
//! reads, the write blocks, and with it whatever task logged.
//!
//! Here each formatted event is handed to a bounded queue without waiting, and one thread
//! of its own writes the queue to stderr. A full queue (stderr slower than the logging)
//! drops the line; a failed write drops it too. Dropped lines are counted in the
//! `switchboard_log_lines_dropped_total` metric. Nothing here panics or blocks a caller.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use switchboard_server::metrics::LOG_LINES_DROPPED;
use tracing_subscriber::fmt::MakeWriter;

/// Formatted events waiting for the writer thread. At ~200 bytes a line, about 2 MiB.
const QUEUE: usize = 10_000;

/// Where events go: the sending side of the queue.
#[derive(Debug, Clone)]
pub(crate) struct Logger {
    lines: SyncSender<Vec<u8>>,
}

impl Logger {
    /// Starts the thread that writes to stderr. Without a thread (the system refused
    /// one), lines are dropped and counted, and the server still runs.
    pub(crate) fn stderr() -> Logger {
        let (lines, queue) = sync_channel(QUEUE);
        let started = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_all(queue, io::stderr()));
        if started.is_err() {
            LOG_LINES_DROPPED.inc();
        }
        Logger { lines }
    }
}

/// Writes every queued line, dropping (and counting) those the output refuses.
fn write_all(queue: Receiver<Vec<u8>>, mut out: impl Write) {
    while let Ok(line) = queue.recv() {
        if out.write_all(&line).is_err() {
            LOG_LINES_DROPPED.inc();
        }
    }
}

/// One event's writer: what the formatter writes is queued as one line.
#[derive(Debug)]
pub(crate) struct Line<'a>(&'a Logger);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lines.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => LOG_LINES_DROPPED.inc(),
        }
        // Always "written": a failure here would only make the formatter complain.
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logger {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that always fails, like stderr on a full disk: lines are counted as
    /// dropped, and nothing panics.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
    }

    #[test]
    fn failed_writes_are_counted_not_fatal() {
        let (lines, queue) = sync_channel(4);
        let logger = Logger { lines };
        let before = LOG_LINES_DROPPED.get();
        for _ in 0..3 {
            assert_eq!(logger.make_writer().write(b"a line\n").unwrap(), 7);
        }
        drop(logger);
        write_all(queue, Full);
        assert!(LOG_LINES_DROPPED.get() >= before + 3);
    }

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let (lines, _queue) = sync_channel(2);
        let logger = Logger { lines };
        let before = LOG_LINES_DROPPED.get();
        // Nobody reads the queue: the third line would block a plain pipe writer.
        for _ in 0..5 {
            logger.make_writer().write_all(b"x\n").unwrap();
        }
        assert!(LOG_LINES_DROPPED.get() >= before + 3);
    }
}
