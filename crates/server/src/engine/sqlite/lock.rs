//! The lock file that keeps a second server off a store.
//!
//! SQLite's own locks cannot do the first job any more: readers need WAL with shared
//! memory, which rules out `locking_mode = EXCLUSIVE`, and SQLite's POSIX locks are held
//! only while a transaction runs. So the store takes an `flock` on `<database>.lock` for
//! as long as it is open. `flock`, not `fcntl`: an `fcntl` lock belongs to the process
//! and is dropped when *any* descriptor of the file closes, and two stores in one process
//! would share it; an `flock` belongs to the open file, so a second open (another process
//! or this one) is refused, and the kernel releases it when the holder dies, even by
//! `kill -9`. The file is never deleted: deleting a lock file while others may have it
//! open lets two holders lock two different files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

/// An exclusive `flock` on the store's lock file, released when dropped.
#[derive(Debug)]
pub(super) struct LockFile {
    /// Held open: closing it releases the lock.
    _file: File,
}

/// `<database>.lock`, next to the database.
pub(super) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of the store at `database`, or says who holds it.
pub(super) fn lock(database: &Path) -> Result<LockFile, String> {
    let path = lock_path(database);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|e| {
        format!(
            "cannot open the lock file {}: {e} (does the directory exist, and can this user \
             write to it?)",
            path.display()
        )
    })?;
    // Waits a little before refusing: a previous server may still be exiting, and a
    // process forked (by anyone in this process) between its fork and its exec holds a
    // copy of every descriptor, this lock's included, for a moment.
    let deadline = Instant::now() + super::BUSY_TIMEOUT;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(LockFile { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(RETRY);
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(format!(
                    "in use by another process, probably another server (it holds {})",
                    path.display()
                ));
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
}

/// How often a held lock is tried again while opening waits.
const RETRY: Duration = Duration::from_millis(20);
