//! The built-in apps at the binary's level: the first start of a server whose sign-up is
//! by invitation prints a one-time link that creates the first administrator, and
//! `switchboard user` manages accounts that then sign in over HTTP.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{Server, TempDir, run};

const PASSWORD: &str = "correct horse battery";

/// `POST path` with a JSON `body` to the server at `addr`: the status and the answer.
async fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = switchboard_client::http::request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string(),
    )
    .await
    .expect("the server answers");
    let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, value)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn a_first_start_by_invitation_prints_a_one_time_link_for_the_first_admin() {
    let tmp = TempDir::new("apps-invite");
    let config = tmp.join("switchboard.toml");
    std::fs::write(&config, "[apps]\nsignup = \"invite\"\n").expect("write the config");
    let config = config.to_string_lossy().into_owned();
    let server = Server::serve_with(&tmp.0, &["--config", &config]);
    let said = server.proc.stderr.seen();
    assert!(said.contains("by invitation"), "{said}");
    let line = said
        .lines()
        .find(|l| l.contains("first admin"))
        .unwrap_or_else(|| panic!("no first-admin link in:\n{said}"));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL");
    assert!(
        url.starts_with(&format!("http://{}/signin?invite=", server.addr)),
        "{url}"
    );
    let code = url.rsplit_once("invite=").expect("a code").1;

    let rt = runtime();
    rt.block_on(async {
        // Without the invitation, nobody signs up.
        let (status, answer) = post(
            &server.addr,
            "/auth/signup",
            &json!({"name": "mallory", "password": PASSWORD}),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (403, json!("signup_closed"))
        );
        // With it, the first account is an administrator; the link is then used up.
        let (status, answer) = post(
            &server.addr,
            "/auth/signup",
            &json!({"name": "root", "password": PASSWORD, "invite": code}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["user"]["roles"], json!(["admin"]), "{answer}");
        let (status, _) = post(
            &server.addr,
            "/auth/signup",
            &json!({"name": "second", "password": PASSWORD, "invite": code}),
        )
        .await;
        assert_eq!(status, 403);
    });
    server.stop();
    // An administrator exists: the next start prints no link.
    let again = Server::serve_with(&tmp.0, &["--config", &config]);
    let said = again.proc.stderr.seen();
    assert!(!said.contains("first admin"), "{said}");
    again.stop();
}

/// `switchboard user add NAME` with the password on standard input, as a script runs it.
fn add_user(data: &str, name: &str, admin: bool) {
    let mut args = vec!["user", "add", name, "--data-dir", data];
    if admin {
        args.push("--admin");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchboard user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn accounts_made_with_the_cli_sign_in_and_removed_ones_do_not() {
    let tmp = TempDir::new("apps-users");
    let data = tmp.path().to_owned();
    add_user(&data, "Maya", true);
    add_user(&data, "tom", false);
    let (status, stdout, stderr) = run(&["user", "list", "--data-dir", &data]);
    assert!(status.success(), "{stderr}");
    let listed: Vec<(String, String)> = stdout
        .lines()
        .map(|l| {
            let mut parts = l.split('\t');
            let name = parts.next().unwrap_or_default().to_owned();
            (name, parts.next().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("Maya".into(), "admin".into()),
            ("tom".into(), "member".into())
        ]
    );
    // A name is unique whatever its case.
    let mut dup = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["user", "add", "maya", "--data-dir", &data])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    dup.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write");
    assert!(!dup.wait_with_output().expect("wait").status.success());

    let server = Server::serve(&tmp.0);
    let rt = runtime();
    rt.block_on(async {
        let (status, answer) = post(
            &server.addr,
            "/auth/signin",
            &json!({"name": "maya", "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["user"]["roles"], json!(["admin"]));
        let (status, answer) = post(
            &server.addr,
            "/auth/signin",
            &json!({"name": "tom", "password": "not the password"}),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (401, json!("bad_credentials"))
        );
    });
    let (status, _, stderr) = run(&["user", "remove", "tom", "--data-dir", &data]);
    assert!(status.success(), "{stderr}");
    rt.block_on(async {
        let (status, _) = post(
            &server.addr,
            "/auth/signin",
            &json!({"name": "tom", "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, 401, "a removed account does not sign in");
    });
    server.stop();
}
