//! `switchboard echo`, `bench echo`, `sub`, `pub`, `token`, `config init` and `serve`'s
//! start-up, run as a user runs them: over real sockets on 127.0.0.1; and what
//! `scripts/test` says when the Autobahn tools are missing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use switchboard_ws::tokio::connect;
use switchboard_ws::{CloseCode, Config, Message};
use tokio::net::TcpStream;

use crate::util::{Proc, Server, TempDir, json, run};

#[tokio::test]
async fn echo_returns_text_and_binary_then_closes_with_1001_on_sigterm() {
    let echo = Server::echo();
    let stream = TcpStream::connect(&echo.addr).await.unwrap();
    let (mut ws, _) = connect(stream, &echo.addr, "/", &[], &[], Config::default())
        .await
        .unwrap();
    for message in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(&message).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(message));
    }

    echo.proc.signal("TERM");
    let close = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("close within 5 s")
        .unwrap();
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    // The server exits once its connections have closed.
    let (exited, _, _) = tokio::task::spawn_blocking(move || echo.proc.finish())
        .await
        .unwrap();
    assert!(exited.success(), "exit status {exited}");
}

#[test]
fn bench_echo_ends_with_one_json_line() {
    let echo = Server::echo();
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", "echo", "--url", &format!("ws://{}/", echo.addr)])
        .args([
            "--conns",
            "4",
            "--size",
            "32",
            "--duration",
            "0.5",
            "--pipeline",
            "2",
        ])
        .args(["--server-pid", &echo.proc.child.id().to_string()])
        .output()
        .expect("run bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last = stdout.lines().last().expect("some output");
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert!(json["msgs_per_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["p99_us"].as_u64().unwrap() >= json["p50_us"].as_u64().unwrap());
    assert!(json["server_cpu_us_per_msg"].is_number(), "{json}");
}

#[test]
fn echo_refuses_a_port_it_cannot_bind_with_a_clear_error() {
    let echo = Server::echo();
    let (status, _, stderr) = run(&["echo", "--listen", &echo.addr]);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains(&format!("cannot listen on {}", echo.addr)),
        "{stderr}"
    );
}

/// `pub` to a server: the answer's JSON, after checking that it succeeded.
fn publish(server: &Server, data_dir: &str, channel: &str, data: &str) -> serde_json::Value {
    let url = server.http_url();
    let (status, stdout, stderr) =
        run(&["pub", channel, data, "--data-dir", data_dir, "--url", &url]);
    assert!(status.success(), "pub {data}: {status}: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    json(&stdout)
}

#[test]
fn sub_prints_each_publication_as_one_json_line_and_pub_publishes() {
    let tmp = TempDir::new("pubsub");
    let data = tmp.path();
    let server = Server::serve(tmp.0.as_path());
    let url = server.ws_url();
    let sub = Proc::start(&[
        "sub",
        "chat:lobby",
        "--user",
        "alice",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    sub.stderr.until("switchboard: subscribed to chat:lobby");

    let first = publish(&server, data, "chat:lobby", r#"{"n":1}"#);
    assert_eq!(first["offset"], 1, "{first}");
    assert_eq!(
        publish(&server, data, "chat:lobby", r#"{"n":1}"#)["offset"],
        2
    );
    assert_eq!(publish(&server, data, "chat:lobby", "hello")["offset"], 3);
    let epoch = first["epoch"].as_str().unwrap();
    assert!(!epoch.is_empty());
    for (offset, expected) in [(1, r#"{"n":1}"#), (2, r#"{"n":1}"#), (3, r#""hello""#)] {
        let line = sub.stdout.next();
        let got = json(&line);
        assert_eq!(got["channel"], "chat:lobby", "{line}");
        assert_eq!(got["offset"], offset, "{line}");
        assert_eq!(got["epoch"], epoch, "{line}");
        assert_eq!(got["data"], json(expected), "{line}");
        assert!(got["info"].is_null(), "the server API published it: {line}");
        assert_eq!(got.as_object().unwrap().len(), 5, "{line}");
    }

    // ctrl-c: a clean close, status 0.
    sub.signal("INT");
    let (status, stdout, stderr) = sub.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");

    // A token from `switchboard token`; --history replays the latest publications, then
    // live ones follow without a gap.
    let (status, token, stderr) = run(&["token", "--user", "bob", "--data-dir", data]);
    assert!(status.success(), "{stderr}");
    let token = token.trim();
    let sub = Proc::start(&[
        "sub",
        "chat:lobby",
        "--history",
        "2",
        "--token",
        token,
        "--url",
        &url,
    ]);
    sub.stderr.until("switchboard: subscribed to chat:lobby");
    assert_eq!(json(&sub.stdout.next())["offset"], 2);
    assert_eq!(json(&sub.stdout.next())["data"], "hello");
    publish(&server, data, "chat:lobby", "[1, 2.50]");
    let line = sub.stdout.next();
    assert!(
        line.contains(r#""offset":4"#) && line.contains(r#""data":[1, 2.50]"#),
        "data kept as sent: {line}"
    );
}

#[test]
fn refusals_go_to_stderr_with_their_code_and_exit_status_1() {
    let tmp = TempDir::new("refusals");
    let data = tmp.path();
    let server = Server::serve(tmp.0.as_path());
    let url = server.ws_url();
    let http = server.http_url();

    // No token, and the server does not allow anonymous connections.
    let (status, _, stderr) = run(&["sub", "chat:lobby", "--url", &url]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error 101"), "{stderr}");
    // A namespace the server does not have.
    let (status, _, stderr) = run(&[
        "sub",
        "nope:x",
        "--user",
        "a",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error 102"), "{stderr}");
    // History where the namespace keeps none.
    let (status, _, stderr) = run(&[
        "sub",
        "lobby",
        "--history",
        "5",
        "--user",
        "a",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error 108"), "{stderr}");
    // A wrong path: the upgrade is refused.
    let (status, _, stderr) = run(&[
        "sub",
        "chat:x",
        "--url",
        &format!("ws://{}/nope", server.addr),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    // A wrong API key.
    let (status, stdout, stderr) =
        run(&["pub", "chat:x", "1", "--api-key", "wrong", "--url", &http]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("error 101"),
        "{stderr}"
    );
    // Clients may not publish to logs:, but the server API may.
    assert_eq!(publish(&server, data, "logs:web-1:x", "line")["offset"], 1);

    // Local errors: status 2, and no secret is generated where the server has none.
    let elsewhere = format!("{data}/elsewhere");
    let (status, _, stderr) = run(&[
        "pub",
        "chat:x",
        "1",
        "--data-dir",
        &elsewhere,
        "--url",
        &http,
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("api-key does not exist"), "{stderr}");
    assert!(!Path::new(&elsewhere).exists());
    let (status, _, stderr) = run(&[
        "sub",
        "chat:x",
        "--url",
        &format!("wss://{}/ws", server.addr),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");

    // The server going away ends a subscription with its close code.
    let sub = Proc::start(&[
        "sub",
        "chat:lobby",
        "--user",
        "a",
        "--data-dir",
        data,
        "--url",
        &url,
    ]);
    sub.stderr.until("switchboard: subscribed to chat:lobby");
    server.proc.signal("TERM");
    let (status, _, stderr) = sub.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("closed the connection: 1001"), "{stderr}");
}

#[test]
fn config_init_writes_an_example_that_serve_accepts_and_refuses_to_overwrite() {
    let tmp = TempDir::new("config");
    let file = format!("{}/switchboard.toml", tmp.path());
    let (status, _, stderr) = run(&["config", "init", &file]);
    assert!(status.success(), "{stderr}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("[[namespaces]]"));

    let data = format!("{}/data", tmp.path());
    let server = Server::start(&[
        "serve",
        "--config",
        &file,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--log-level",
        "warn",
    ]);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);

    std::fs::write(&file, "# mine\n").unwrap();
    let (status, _, stderr) = run(&["config", "init", &file]);
    assert!(!status.success());
    assert!(
        stderr.contains(&file) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "# mine\n",
        "left alone"
    );
    let (status, _, stderr) = run(&["config", "init", &file, "--force"]);
    assert!(status.success(), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
}

#[test]
fn token_prints_a_jwt() {
    let tmp = TempDir::new("token");
    // Without a server's secret it refuses rather than invent one the server won't know.
    let (status, _, stderr) = run(&["token", "--user", "alice", "--data-dir", tmp.path()]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("token-secret does not exist"), "{stderr}");
    assert!(!std::path::Path::new(&format!("{}/token-secret", tmp.path())).exists());
    std::fs::create_dir_all(tmp.path()).unwrap();
    std::fs::write(
        format!("{}/token-secret", tmp.path()),
        "a-secret-of-at-least-thirty-two-bytes\n",
    )
    .unwrap();
    let (status, stdout, stderr) = run(&[
        "token",
        "--user",
        "alice",
        "--info",
        r#"{"name":"Alice"}"#,
        "--ttl",
        "10m",
        "--data-dir",
        tmp.path(),
    ]);
    assert!(status.success(), "{stderr}");
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    for part in parts {
        assert!(!part.is_empty());
        assert!(
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{token}"
        );
    }
    let (status, _, stderr) = run(&[
        "token",
        "--user",
        "alice",
        "--ttl",
        "1y",
        "--data-dir",
        tmp.path(),
    ]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--ttl"), "{stderr}");
}

#[test]
fn serve_generates_private_secrets_on_first_start_and_says_where() {
    let tmp = TempDir::new("secrets");
    let data = tmp.0.join("data");
    let server = Server::serve(&data);
    // The start-up block ends with `listening on`, which `Server::serve` waited for.
    let stderr = || server.proc.stderr.seen();
    for file in ["api-key", "token-secret"] {
        let path = data.join(file);
        assert!(
            stderr().contains(&format!("generated {} (mode 0600)", path.display())),
            "{}",
            stderr()
        );
        assert!(stderr().contains(&path.display().to_string()));
        let meta = std::fs::metadata(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        }
        assert!(meta.len() > 32, "{file} holds a long random secret");
    }
    let key = std::fs::read_to_string(data.join("api-key")).unwrap();
    drop(server);

    // The next start reuses them and generates nothing.
    let server = Server::serve(&data);
    assert!(
        !server.proc.stderr.seen().contains("generated"),
        "{}",
        server.proc.stderr.seen()
    );
    assert_eq!(std::fs::read_to_string(data.join("api-key")).unwrap(), key);
}

// Issue 11 ("first hour"): what a newcomer tripped over. Helpers first, then one test per
// point.

/// Environment variables for [`start_env`].
type Env<'a> = &'a [(&'a str, &'a str)];

/// `switchboard ARGS` with `env` set through env(1): `Proc` clears every `SWITCHBOARD_*`
/// variable of the test's own environment, and env(1) then sets only these.
fn start_env(env: &[(&str, &str)], args: &[&str]) -> Proc {
    let mut all: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    all.push(env!("CARGO_BIN_EXE_switchboard").to_owned());
    all.extend(args.iter().map(|a| a.to_string()));
    Proc::start_program("env", &all)
}

fn run_env(env: &[(&str, &str)], args: &[&str]) -> (std::process::ExitStatus, String, String) {
    start_env(env, args).finish()
}

/// `serve` with `env` and `args`, once it has said where it listens.
fn serve_env(env: &[(&str, &str)], args: &[&str]) -> Server {
    let proc = start_env(env, args);
    let addr = proc.stderr.until("listening on ");
    Server { proc, addr }
}

/// A file of the server crate's test keys (crates/server/tests/data).
fn test_key(name: &str) -> String {
    format!("{}/../server/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every `switchboard: …` line says each part of its cause once: no `: `-separated part
/// is repeated (as in `…: Broken pipe (os error 32): Broken pipe (os error 32)`).
fn says_each_cause_once(stderr: &str) {
    let mut lines = 0;
    for line in stderr.lines().filter(|l| l.starts_with("switchboard: ")) {
        lines += 1;
        let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
        for (i, part) in parts.iter().enumerate() {
            assert!(
                !parts[i + 1..].contains(part),
                "{part:?} is said twice in: {line}"
            );
        }
    }
    assert!(lines > 0, "no error line in:\n{stderr}");
}

/// `sub` until it says it subscribed; it is killed when dropped.
fn subscribed(env: &[(&str, &str)], args: &[&str]) -> Proc {
    let sub = start_env(env, args);
    sub.stderr.until("switchboard: subscribed to ");
    sub
}

/// Point 2: with no --url, `sub` and `pub` go where the configuration (`listen` in the
/// file, or SWITCHBOARD_LISTEN) says the server listens; --url takes a ws:// or an
/// http:// URL, with or without a path, for either command.
#[test]
fn sub_and_pub_find_the_configured_server_and_take_either_url_form() {
    let tmp = TempDir::new("either-url");
    let data = tmp.join("data");
    let data = data.to_str().unwrap();
    let server = Server::serve(&tmp.join("data"));
    let addr = server.addr.as_str();
    let file = tmp.join("switchboard.toml");
    std::fs::write(&file, format!("listen = \"{addr}\"\n")).unwrap();
    let file = file.to_str().unwrap();
    let listen = [("SWITCHBOARD_LISTEN", addr)];

    let by_file = subscribed(
        &[],
        &[
            "sub",
            "chat:a",
            "--user",
            "al",
            "--config",
            file,
            "--data-dir",
            data,
        ],
    );
    let by_env = subscribed(
        &listen,
        &["sub", "chat:a", "--user", "al", "--data-dir", data],
    );
    let http = format!("http://{addr}");
    let by_http = subscribed(
        &[],
        &[
            "sub",
            "chat:a",
            "--user",
            "al",
            "--data-dir",
            data,
            "--url",
            &http,
        ],
    );
    let urls = [
        format!("ws://{addr}/ws"),
        format!("ws://{addr}"),
        format!("http://{addr}/"),
    ];
    let pubs: [(Env, Vec<&str>); 5] = [
        (&[], vec!["--config", file]),
        (&listen, vec![]),
        (&[], vec!["--url", &urls[0]]),
        (&[], vec!["--url", &urls[1]]),
        (&[], vec!["--url", &urls[2]]),
    ];
    for (offset, (env, extra)) in (1..).zip(pubs) {
        let mut args = vec!["pub", "chat:a", "7", "--data-dir", data];
        args.extend(extra.iter().copied());
        let (status, stdout, stderr) = run_env(env, &args);
        assert!(status.success(), "{args:?}: {stderr}");
        assert_eq!(json(&stdout)["offset"], offset, "{args:?}: {stdout}");
        for sub in [&by_file, &by_env, &by_http] {
            assert_eq!(json(&sub.stdout.next())["offset"], offset, "{args:?}");
        }
    }
    // wss:// and https:// are served: crates/cli/tests/tls.rs.
}

/// Point 3: with RS256 or ES256 configured, `token` signs with the configured algorithm
/// given the private key, and the server accepts the token; without the key, or with a
/// key that the server's public key does not verify, it refuses and says why. `serve`
/// then names no token secret (and generates none).
#[test]
fn token_mints_with_the_configured_algorithm_or_says_why_not() {
    for (algorithm, name, other) in [("RS256", "rs256", "es256"), ("ES256", "es256", "rs256")] {
        let tmp = TempDir::new(&format!("token-{name}"));
        let data = tmp.join("data");
        let data = data.to_str().unwrap();
        let file = tmp.join("switchboard.toml");
        std::fs::write(
            &file,
            format!(
                "[auth]\ntoken_algorithm = \"{algorithm}\"\ntoken_public_key_file = \"{}\"\n",
                test_key(&format!("{name}-public.pem"))
            ),
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let token = [
            "token",
            "--user",
            "alice",
            "--config",
            file,
            "--data-dir",
            data,
        ];

        let (status, stdout, stderr) = run(&token);
        assert_eq!(status.code(), Some(2), "{algorithm}: {stdout}{stderr}");
        assert!(
            stderr.contains(algorithm) && stderr.contains("--private-key"),
            "{stderr}"
        );
        let wrong = test_key(&format!("{other}-private.pem"));
        let (status, _, stderr) = run(&[&token[..], &["--private-key", &wrong]].concat());
        assert_eq!(status.code(), Some(2), "{algorithm}: {stderr}");
        assert!(stderr.contains(&wrong), "{stderr}");

        let key = test_key(&format!("{name}-private.pem"));
        let (status, minted, stderr) = run(&[&token[..], &["--private-key", &key]].concat());
        assert!(status.success(), "{algorithm}: {stderr}");
        let server = Server::serve_with(&tmp.join("data"), &["--config", file]);
        let url = server.ws_url();
        let sub = subscribed(
            &[],
            &["sub", "chat:a", "--token", minted.trim(), "--url", &url],
        );
        drop(sub);
        let stderr = server.stop();
        assert!(
            !stderr.contains("token secret") && !stderr.contains("token-secret"),
            "{algorithm}: no token secret is used, none is named:\n{stderr}"
        );
        assert!(!tmp.join("data/token-secret").exists(), "{algorithm}");
        assert!(stderr.contains("--private-key"), "how to mint: {stderr}");
    }

    // HS256 signs with the token secret: a private key is a mistake.
    let tmp = TempDir::new("token-hs256-key");
    std::fs::write(
        tmp.join("token-secret"),
        "a-secret-of-at-least-thirty-two-bytes\n",
    )
    .unwrap();
    let key = test_key("rs256-private.pem");
    let (status, _, stderr) = run(&[
        "token",
        "--user",
        "alice",
        "--data-dir",
        tmp.path(),
        "--private-key",
        &key,
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HS256"), "{stderr}");
}

/// Point 3: a token key file that cannot be read stops `serve` with the server crate's
/// KeyFile error, before it says `listening on`.
#[test]
fn serve_refuses_an_unreadable_token_key_before_listening() {
    let tmp = TempDir::new("no-key");
    let file = tmp.join("switchboard.toml");
    let missing = tmp.join("nowhere.pem");
    std::fs::write(
        &file,
        format!(
            "[auth]\ntoken_algorithm = \"RS256\"\ntoken_public_key_file = \"{}\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let data = tmp.join("data");
    let (status, _, stderr) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read the token key file {}",
            missing.display()
        )),
        "{stderr}"
    );
    says_each_cause_once(&stderr);
}

/// Point 4: each error path of the binary prints its cause once.
#[test]
fn errors_say_their_cause_once() {
    let tmp = TempDir::new("causes");
    let missing = tmp.join("missing.toml");
    let (status, _, stderr) = run(&["serve", "--config", missing.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    says_each_cause_once(&stderr);

    // The API key is a directory: it cannot be read.
    std::fs::create_dir_all(tmp.join("data/api-key")).unwrap();
    let (status, _, stderr) = run(&[
        "pub",
        "chat:a",
        "1",
        "--data-dir",
        &format!("{}/data", tmp.path()),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("api-key"), "{stderr}");
    says_each_cause_once(&stderr);

    // The private key does not exist.
    std::fs::write(
        tmp.join("key.toml"),
        "[auth]\ntoken_algorithm = \"RS256\"\n",
    )
    .unwrap();
    let (status, _, stderr) = run(&[
        "token",
        "--user",
        "a",
        "--config",
        tmp.join("key.toml").to_str().unwrap(),
        "--private-key",
        tmp.join("none.pem").to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("none.pem"), "{stderr}");
    says_each_cause_once(&stderr);

    // A "server" that accepts and hangs up during the WebSocket handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hang_up = std::thread::spawn(move || drop(listener.accept()));
    let (status, _, stderr) = run(&["sub", "chat:a", "--url", &format!("ws://{addr}/ws")]);
    hang_up.join().unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    says_each_cause_once(&stderr);
}

/// Point 5: an empty user id is refused (the server would refuse the token).
#[test]
fn token_refuses_an_empty_user() {
    let tmp = TempDir::new("empty-user");
    std::fs::write(
        tmp.join("token-secret"),
        "a-secret-of-at-least-thirty-two-bytes\n",
    )
    .unwrap();
    for user in ["", "  "] {
        let (status, stdout, stderr) = run(&["token", "--user", user, "--data-dir", tmp.path()]);
        assert_eq!(status.code(), Some(2), "{user:?}: {stdout}{stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains("--user"), "{stderr}");
        let (status, _, stderr) = run(&["sub", "chat:a", "--user", user, "--data-dir", tmp.path()]);
        assert_eq!(status.code(), Some(2), "{user:?}: {stderr}");
        assert!(stderr.contains("--user"), "{stderr}");
    }
}

/// Point 6: SWITCHBOARD_ALLOW_ANONYMOUS takes the usual words for true and false, a bad
/// value is an error that names the variable, and `--help` says how lists are separated.
#[test]
fn environment_booleans_take_the_usual_words_and_errors_name_the_variable() {
    let tmp = TempDir::new("booleans");
    let data = tmp.join("data");
    let data = data.to_str().unwrap();
    let file = tmp.join("anonymous.toml");
    std::fs::write(&file, "allow_anonymous = true\n").unwrap();
    let file = file.to_str().unwrap();
    // (value, configuration file, anonymous allowed): the variable wins over the file.
    for (value, config, allowed) in [
        ("yes", None, true),
        ("1", None, true),
        ("ON", None, true),
        ("off", Some(file), false),
        ("False", Some(file), false),
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--store", "memory"];
        args.extend(["--log-level", "warn", "--data-dir", data]);
        if let Some(file) = config {
            args.extend(["--config", file]);
        }
        let server = serve_env(&[("SWITCHBOARD_ALLOW_ANONYMOUS", value)], &args);
        let anonymous = ["sub", "chat:a", "--url", &server.ws_url()];
        if allowed {
            drop(subscribed(&[], &anonymous));
        } else {
            let (status, _, stderr) = run(&anonymous);
            assert_eq!(status.code(), Some(1), "{value}: {stderr}");
            assert!(stderr.contains("error 101"), "{value}: {stderr}");
        }
    }
    let (status, _, stderr) = run_env(
        &[("SWITCHBOARD_ALLOW_ANONYMOUS", "maybe")],
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SWITCHBOARD_ALLOW_ANONYMOUS") && stderr.contains("\"maybe\""),
        "{stderr}"
    );
    assert!(!stderr.contains("--allow-anonymous"), "{stderr}");

    let (status, help, _) = run(&["serve", "--help"]);
    assert!(status.success());
    assert!(
        help.contains("SWITCHBOARD_ALLOWED_ORIGINS") && help.contains("comma-separated"),
        "{help}"
    );
    assert!(help.contains("SWITCHBOARD_ALLOW_ANONYMOUS"), "{help}");
}

/// Point 7: `--listen`, SWITCHBOARD_LISTEN and the file's `listen` take a host name
/// (resolved at start-up; `localhost` is 127.0.0.1), and a bad address is an error that
/// names where it came from.
#[test]
fn listen_takes_host_names_and_a_bad_address_names_its_source() {
    let tmp = TempDir::new("host-names");
    let data = tmp.join("data");
    let data = data.to_str().unwrap();
    let file = tmp.join("switchboard.toml");
    std::fs::write(&file, "listen = \"localhost:0\"\n").unwrap();
    let file = file.to_str().unwrap();
    let serve = [
        "serve",
        "--store",
        "memory",
        "--log-level",
        "warn",
        "--data-dir",
        data,
    ];
    let listen: [(Env, &[&str]); 3] = [
        (&[], &["--listen", "localhost:0"]),
        (&[("SWITCHBOARD_LISTEN", "localhost:0")], &[]),
        (&[], &["--config", file]),
    ];
    for (env, extra) in listen {
        let server = serve_env(env, &[&serve[..], extra].concat());
        assert!(
            server.addr.starts_with("127.0.0.1:"),
            "{env:?} {extra:?}: {}",
            server.addr
        );
    }
    let echo = Server::start(&["echo", "--listen", "localhost:0"]);
    assert!(echo.addr.starts_with("127.0.0.1:"), "{}", echo.addr);

    std::fs::write(file, "listen = \"localhost\"\n").unwrap();
    let bad: [(Env, &[&str], &str); 3] = [
        (&[], &["--listen", "localhost"], "--listen"),
        (
            &[("SWITCHBOARD_LISTEN", "localhost")],
            &[],
            "SWITCHBOARD_LISTEN",
        ),
        (&[], &["--config", file], file),
    ];
    for (env, extra, source) in bad {
        let (status, _, stderr) = run_env(env, &[&serve[..], extra].concat());
        assert_eq!(status.code(), Some(2), "{source}: {stderr}");
        assert!(
            stderr.contains(source) && stderr.contains("HOST:PORT"),
            "{source}: {stderr}"
        );
    }
}

/// Point 8: one start-up block on stderr (the URLs, the data directory, where the secrets
/// are, what is served, how to mint a token) ending with `listening on ADDR`, and no
/// colour codes in the logs when stderr is not a terminal.
#[test]
fn serve_says_one_start_up_block_and_logs_without_colours_to_a_pipe() {
    let tmp = TempDir::new("start-up");
    let data = tmp.join("data");
    let server = Server::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "info",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let addr = server.addr.clone();
    let stderr = server.stop();
    assert!(!stderr.contains('\u{1b}'), "colour codes:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let end = lines
        .iter()
        .position(|l| *l == format!("listening on {addr}"))
        .unwrap_or_else(|| panic!("no listening on:\n{stderr}"));
    let start = lines
        .iter()
        .position(|l| l.starts_with("switchboard: serving "))
        .unwrap_or_else(|| panic!("no block:\n{stderr}"));
    let block = lines[start..=end].join("\n");
    let dir = data.display();
    for said in [
        format!("http://{addr}"),
        format!("ws://{addr}/ws"),
        format!("{dir}"),
        format!("{dir}/api-key"),
        format!("{dir}/token-secret"),
        "/switchboard.js".into(),
        "/health".into(),
        "/metrics".into(),
        format!("switchboard token --user alice --data-dir {dir}"),
    ] {
        assert!(
            block.contains(&said),
            "the block does not say {said}:\n{block}"
        );
    }
    // The binary's own log does not announce the address again.
    assert!(!stderr.contains("switchboard::serve"), "{stderr}");
    assert_eq!(stderr.matches("listening on").count(), 1, "{stderr}");
}

/// Point 10: `scripts/test` says where the Autobahn tools come from and how to point
/// elsewhere, before installing anything; the README's `serve` leaves nothing to commit.
#[test]
fn scripts_test_says_where_autobahn_comes_from_and_secrets_are_ignored() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("bash")
        .arg(root.join("scripts/test"))
        .env("AUTOBAHN_DIR", "/nonexistent/autobahn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/test");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/autobahn")
            && stderr.contains("../shared/tools/autobahn")
            && stderr.contains("AUTOBAHN_DIR="),
        "{stderr}"
    );
    let ignored = std::fs::read_to_string(root.join(".gitignore")).unwrap();
    for entry in ["/switchboard-data/", "/switchboard.toml"] {
        assert!(ignored.lines().any(|l| l == entry), "{entry}:\n{ignored}");
    }
}

#[test]
fn an_agent_token_reaches_its_host_channels_only() {
    let tmp = TempDir::new("agent-token");
    let data = tmp.path();
    let server = Server::serve(tmp.0.as_path());
    let url = server.ws_url();
    let (status, token, stderr) = run(&["token", "--agent", "web1", "--data-dir", data]);
    assert!(status.success(), "{stderr}");
    let token = token.trim();
    // It may watch its metrics channel (to know whether anyone looks)…
    let sub = Proc::start(&["sub", "metrics:web1", "--token", token, "--url", &url]);
    sub.stderr.until("switchboard: subscribed to metrics:web1");
    sub.signal("INT");
    let (status, _, stderr) = sub.finish();
    assert!(status.success(), "{status}: {stderr}");
    // …and read nothing else.
    for channel in ["logs:web1:syslog", "metrics:web2"] {
        let (status, _, stderr) = run(&["sub", channel, "--token", token, "--url", &url]);
        assert_eq!(status.code(), Some(1), "{channel}: {stderr}");
        assert!(stderr.contains("error 103"), "{channel}: {stderr}");
    }
    // A host that cannot be part of a channel name is refused before any token exists.
    let (status, stdout, stderr) = run(&["token", "--agent", "a:b", "--data-dir", data]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stdout.is_empty() && stderr.contains("invalid host"),
        "{stderr}"
    );
}
