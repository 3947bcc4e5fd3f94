//! Tests only: a real `redis-server` on a free loopback port, in a directory of its own,
//! stopped when dropped.
//!
//! Tests that need Redis call [`RedisServer::start`]. Where `redis-server` is not
//! installed it returns `None` after printing that the test is skipped, so plain
//! `cargo test` passes with nothing but Rust; `scripts/test` installs Redis and sets
//! `SWITCHBOARD_REQUIRE_REDIS=1`, under which a missing server fails the test instead of
//! skipping it. `REDIS_SERVER` names another binary.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or stopped, to be restarted) `redis-server` owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    binary: String,
    port: u16,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A server that keeps nothing on disk: a restart empties it.
    pub fn start() -> Option<RedisServer> {
        Self::launch(false)
    }

    /// A server with an append-only file synced on every write, so a restart keeps
    /// everything it acknowledged (as a production Redis set up for durability would).
    pub fn start_persistent() -> Option<RedisServer> {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Option<RedisServer> {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let installed = Command::new(&binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var_os("SWITCHBOARD_REQUIRE_REDIS").is_some() {
                panic!("{binary} is not installed, and SWITCHBOARD_REQUIRE_REDIS is set");
            }
            eprintln!(
                "SKIPPED: this test needs redis-server, which is not installed \
                 (scripts/test installs it)"
            );
            return None;
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-redis-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut server = RedisServer {
            binary,
            port: free_port(),
            dir,
            persistent,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"]);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it runs (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server with SIGKILL and waits for it: nothing is flushed beyond what the
    /// append-only file already holds.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nobody listens on at the moment.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_its_port() {
        let Some(mut server) = RedisServer::start_persistent() else {
            return;
        };
        let port = server.port();
        assert!(server.answers_ping());
        server.kill();
        assert!(!server.answers_ping());
        server.restart();
        assert_eq!(server.port(), port);
        assert!(server.answers_ping());
    }
}
