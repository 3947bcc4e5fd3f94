//! Following files: every line once and in order through rename rotation,
//! copy-truncate and truncation; long lines and invalid UTF-8; globs; the paths read.

use std::collections::BTreeSet;
use std::time::Duration;

use switchboard_agent::config::{LogSource, Start};

use crate::util::{Agent, Hub, TempDir, append, events, fast_config, texts};

fn numbered(range: std::ops::Range<u32>) -> impl Iterator<Item = String> {
    range.map(|n| format!("line {n:05}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_arrives_once_and_in_order_through_rotations() {
    let hub = Hub::start().await;
    let dir = TempDir::new("tail");
    let log = dir.path().join("app.log");
    // Already there at the start: `start = "end"` skips it.
    append(&log, ["written before the agent".to_owned()]);
    let mut config = fast_config();
    config.max_line_bytes = 100;
    config.logs.push(LogSource {
        name: "app".into(),
        path: log.clone(),
        start: Start::End,
    });
    let channel = "logs:t1:app";
    let mut admin = hub.admin().await;
    admin.subscribe(channel).await;
    let agent = Agent::on(&hub, "t1", config);

    let mut batches = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    // Reads pushes until the lines seen are all that is expected.
    macro_rules! until_all_seen {
        () => {
            while texts(&batches).len() < expected.len() {
                batches.push(admin.next_publication(channel).await);
            }
            assert_eq!(texts(&batches), expected);
        };
    }
    // The agent has the file open before anything is written.
    while !events(&batches).contains(&"started".to_owned()) {
        batches.push(admin.next_publication(channel).await);
    }

    append(&log, numbered(0..50));
    expected.extend(numbered(0..50));
    until_all_seen!();

    // Rotation by rename: lines written to the old file just before, then a new file.
    append(&log, numbered(50..70));
    std::fs::rename(&log, dir.path().join("app.log.1")).expect("rename");
    append(&log, numbered(70..90));
    expected.extend(numbered(50..90));
    until_all_seen!();
    assert!(events(&batches).contains(&"rotated".to_owned()));

    // Copy-truncate: the file is copied, then emptied in place, and written on.
    std::fs::copy(&log, dir.path().join("app.log.2")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    append(&log, numbered(90..95));
    expected.extend(numbered(90..95));
    until_all_seen!();
    assert_eq!(
        events(&batches)
            .iter()
            .filter(|e| *e == "truncated")
            .count(),
        1
    );

    // Truncation by a writer opening with O_TRUNC.
    std::fs::write(&log, "after truncation\n").expect("truncate and write");
    expected.push("after truncation".into());
    until_all_seen!();
    assert_eq!(
        events(&batches)
            .iter()
            .filter(|e| *e == "truncated")
            .count(),
        2
    );

    // A long line is cut with the marker; invalid UTF-8 is replaced.
    let long = "x".repeat(250);
    append(&log, [long]);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"bad \xff byte\nlast\n").unwrap();
    }
    expected.push(format!("{} […150 bytes cut]", "x".repeat(100)));
    expected.push("bad \u{fffd} byte".into());
    expected.push("last".into());
    until_all_seen!();

    // Each line carries the time the agent read it.
    let now = switchboard_agent::sample::now_ms();
    for batch in &batches {
        for line in batch["lines"].as_array().unwrap() {
            let t = line["time"].as_u64().expect("time");
            assert!(t <= now && t + 60_000 > now, "{line}");
        }
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_lines_and_files_that_appear_later() {
    let hub = Hub::start().await;
    let dir = TempDir::new("glob");
    append(&dir.path().join("a.log"), numbered(0..20));
    let mut config = fast_config();
    config.logs.push(LogSource {
        name: "app".into(),
        path: dir.path().join("*.log"),
        start: Start::Last(3),
    });
    let mut admin = hub.admin().await;
    let agent = Agent::on(&hub, "t2", config);

    let a = admin
        .history_until("logs:t2:app.a", "the last 3 lines of a.log", |h| {
            texts(h).len() >= 3
        })
        .await;
    assert_eq!(texts(&a), numbered(17..20).collect::<Vec<_>>());

    // A file created later is followed from its beginning, and announced.
    append(&dir.path().join("b.log"), numbered(0..5));
    let b = admin
        .history_until("logs:t2:app.b", "b.log, created later", |h| {
            texts(h).len() >= 5
        })
        .await;
    assert_eq!(texts(&b), numbered(0..5).collect::<Vec<_>>());
    admin
        .history_until("metrics:t2", "a hello that lists app.b", |h| {
            h.iter().any(|d| {
                d["type"] == "hello"
                    && d["logs"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|l| l["name"] == "app.b"))
            })
        })
        .await;
    agent.stop().await;
}

/// The files this process has open under `dir` (the agent runs in the test's process).
fn open_files_under(dir: &std::path::Path) -> BTreeSet<String> {
    let mut open = BTreeSet::new();
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if let Ok(rest) = target.strip_prefix(dir) {
                    open.insert(rest.display().to_string());
                }
            }
        }
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_configuration_are_never_read() {
    // A path that is not absolute, or climbs out with `..`, is refused at the start.
    for bad in ["var/log/syslog", "/var/log/../../etc/shadow"] {
        let text = format!("[[logs]]\nname = \"x\"\npath = \"{bad}\"\n");
        let err = switchboard_agent::Config::from_toml(&text).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{bad}: {err}");
    }

    let hub = Hub::start().await;
    let dir = TempDir::new("paths");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    append(&dir.path().join("a.log"), ["public".to_owned()]);
    append(&dir.path().join("secret.txt"), ["secret".to_owned()]);
    append(&dir.path().join("sub/b.log"), ["secret".to_owned()]);
    let mut config = fast_config();
    config.logs.push(LogSource {
        name: "app".into(),
        path: dir.path().join("*.log"),
        start: Start::Last(10),
    });
    let mut admin = hub.admin().await;
    let agent = Agent::on(&hub, "t3", config);
    admin
        .history_until("logs:t3:app.a", "a.log's line", |h| !texts(h).is_empty())
        .await;
    // While it runs, the only file of the directory it has open is the configured one.
    for _ in 0..5 {
        let open = open_files_under(dir.path());
        assert!(
            open.iter().all(|f| f == "a.log"),
            "the agent opened {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert!(open_files_under(dir.path()).contains("a.log"));
    // And it announces that file only.
    let metrics = admin.history("metrics:t3").await;
    let hello = metrics
        .iter()
        .rev()
        .find(|d| d["type"] == "hello")
        .expect("a hello");
    assert_eq!(
        hello["logs"],
        serde_json::json!([{"name": "app.a", "kind": "file"}])
    );
    for channel in ["logs:t3:app.secret", "logs:t3:app.b", "logs:t3:secret"] {
        assert!(admin.history(channel).await.is_empty(), "{channel}");
    }
    agent.stop().await;
}
