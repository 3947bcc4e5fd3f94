//! The fixtures: a server with the apps mounted, HTTP requests, users that sign up and
//! connect. Every wait is bounded by [`WAIT`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_apps::assets::Asset;
use switchboard_apps::{Apps, AppsOptions, Signup};
use switchboard_client::{Client, Response, http::request};
use switchboard_server::Config;
use switchboard_server::secrets::Secrets;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Upper bound on any one expected event.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Pages the tests serve instead of `web/` (which another part of the work fills).
pub(crate) static FILES: &[Asset] = &[
    (
        "chat/index.html",
        b"<!doctype html><title>Chat</title><script type=module src=/apps/chat/chat.js></script>",
    ),
    ("chat/chat.js", b"import '/apps/lib/dom.js';\n"),
    (
        "home/index.html",
        b"<!doctype html><html lang=en><title>Switchboard</title><h1>Home</h1>\
          <p>A page long enough to be worth compressing: the compression layer leaves \
          bodies under 32 bytes alone, and this one is well over that, repeated, repeated, \
          repeated, repeated, repeated, repeated, repeated.</p></html>",
    ),
    (
        "lib/dom.js",
        b"export function text(el, s) { el.textContent = s; }\n",
    ),
    (
        "signin/index.html",
        b"<!doctype html><title>Sign in</title><form></form>",
    ),
    ("style.css", b":root { color-scheme: light dark; }\n"),
];

/// A running server with the apps.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) apps: Apps,
    pub(crate) data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    /// The server's task, to wait for its end on a restart.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Whether dropping it removes the data directory (not when it restarts).
    remove_data: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.remove_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Test options: open sign-up and the fixture pages, then `tweak`.
pub(crate) async fn start(tweak: impl FnOnce(&mut AppsOptions)) -> Server {
    start_with(|_| {}, tweak).await
}

/// [`start`] with the server's configuration changed too.
pub(crate) async fn start_with(
    config_tweak: impl FnOnce(&mut Config),
    tweak: impl FnOnce(&mut AppsOptions),
) -> Server {
    let data_dir =
        std::env::temp_dir().join(format!("sb-apps-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&data_dir).expect("create the data dir");
    start_in(data_dir, config_tweak, tweak).await
}

/// [`start_with`] on an existing data directory.
async fn start_in(
    data_dir: PathBuf,
    config_tweak: impl FnOnce(&mut Config),
    tweak: impl FnOnce(&mut AppsOptions),
) -> Server {
    let mut config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    switchboard_apps::configure(&mut config);
    config_tweak(&mut config);
    let mut options = AppsOptions {
        signup: Signup::Open,
        assets: FILES,
        ..AppsOptions::default()
    };
    tweak(&mut options);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let store = switchboard_server::open_store(&config).expect("open the store");
    let secrets = Secrets {
        api_key: "test-api-key-0123456789".into(),
        token_secret: "test-token-secret-0123456789abcdef".into(),
        generated: vec![],
    };
    let mut server =
        switchboard_server::Server::new(config, secrets, store).expect("build the server");
    let apps = switchboard_apps::mount(&mut server, options).expect("mount the apps");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .run(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    Server {
        addr,
        apps,
        data_dir,
        shutdown: Some(tx),
        task: Some(task),
        remove_data: true,
    }
}

impl Server {
    /// Stops this server (waiting for its end) and starts a new one on the same data
    /// directory, with the default test options: a restart.
    pub(crate) async fn restart(mut self) -> Server {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            bounded("the server's end", task)
                .await
                .expect("the server's task");
        }
        self.remove_data = false;
        let data_dir = self.data_dir.clone();
        drop(self);
        start_in(data_dir, |_| {}, |_| {}).await
    }

    /// A request with the headers a same-origin page's `fetch` sends (JSON, its Origin).
    pub(crate) async fn post(&self, path: &str, body: Value, cookie: Option<&str>) -> Response {
        let origin = format!("http://{}", self.addr);
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Origin", origin.as_str()),
        ];
        let cookie_header;
        if let Some(cookie) = cookie {
            cookie_header = format!("sb_session={cookie}");
            headers.push(("Cookie", cookie_header.as_str()));
        }
        self.request("POST", path, &headers, body.to_string()).await
    }

    /// Any request.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Response {
        let addr = self.addr.to_string();
        tokio::time::timeout(WAIT, request(&addr, method, path, headers, body))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` with `headers`.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, String::new()).await
    }

    /// `GET /auth/me` with a session.
    pub(crate) async fn me(&self, cookie: Option<&str>) -> Value {
        let header;
        let mut headers = vec![];
        if let Some(cookie) = cookie {
            header = format!("sb_session={cookie}");
            headers.push(("Cookie", header.as_str()));
        }
        let response = self.get("/auth/me", &headers).await;
        assert_eq!(response.status, 200, "{}", response.text());
        body(&response)
    }

    /// Signs up `name`; returns the session cookie's value.
    pub(crate) async fn signup(&self, name: &str) -> String {
        let response = self
            .post(
                "/auth/signup",
                json!({"name": name, "password": password(name)}),
                None,
            )
            .await;
        assert_eq!(response.status, 200, "sign-up {name}: {}", response.text());
        session_of(&response)
    }

    /// A connection token for a session.
    pub(crate) async fn token(&self, cookie: &str) -> String {
        let response = self.post("/auth/token", json!({}), Some(cookie)).await;
        assert_eq!(response.status, 200, "{}", response.text());
        body(&response)["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    /// A WebSocket connected with `cookie`'s token.
    pub(crate) async fn connect(&self, cookie: &str) -> Ws {
        let token = self.token(cookie).await;
        let url = format!("ws://{}/ws", self.addr);
        let mut client = bounded("open", Client::open(&url)).await.expect("open");
        bounded("connect", client.connect(Some(&token)))
            .await
            .expect("connect");
        Ws(client)
    }

    /// A user: signed up and connected.
    pub(crate) async fn user(&self, name: &str) -> (String, Ws) {
        let cookie = self.signup(name).await;
        let ws = self.connect(&cookie).await;
        (cookie, ws)
    }
}

/// The test password of `name`.
pub(crate) fn password(name: &str) -> String {
    format!("{name}-secret-password")
}

/// The JSON body of a response.
pub(crate) fn body(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.text()))
}

/// The `error.code` of a JSON error.
pub(crate) fn code(response: &Response) -> String {
    body(response)["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code: {}", response.text()))
        .to_owned()
}

/// The session id a response sets.
pub(crate) fn session_of(response: &Response) -> String {
    let cookie = response
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {response:?}"));
    let value = cookie
        .strip_prefix("sb_session=")
        .and_then(|rest| rest.split(';').next())
        .expect("sb_session=…");
    assert!(!value.is_empty(), "{cookie}");
    value.to_owned()
}

/// `fut`, or a panic naming `what` after [`WAIT`].
pub(crate) async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// A connected WebSocket session.
pub(crate) struct Ws(pub(crate) Client);

impl Ws {
    /// A command's whole reply.
    pub(crate) async fn cmd(&mut self, command: Value) -> Value {
        bounded("a reply", self.0.call(command))
            .await
            .expect("a reply")
    }

    /// A command's result; panics on an error.
    pub(crate) async fn ok(&mut self, command: Value) -> Value {
        let reply = self.cmd(command.clone()).await;
        assert!(reply.get("error").is_none(), "{command} -> {reply}");
        reply["result"].clone()
    }

    /// An rpc call's result.
    pub(crate) async fn rpc(&mut self, method: &str, data: Value) -> Value {
        self.ok(json!({"cmd": "rpc", "method": method, "data": data}))
            .await
    }

    /// An rpc call's error (code, message); panics on success.
    pub(crate) async fn rpc_err(&mut self, method: &str, data: Value) -> (u64, String) {
        let reply = self
            .cmd(json!({"cmd": "rpc", "method": method, "data": data}))
            .await;
        let error = &reply["error"];
        assert!(!error.is_null(), "{method} {data} succeeded: {reply}");
        (
            error["code"].as_u64().expect("code"),
            error["message"].as_str().expect("message").to_owned(),
        )
    }

    /// The next push that `keep` accepts (others are skipped).
    pub(crate) async fn push_where(&mut self, what: &str, keep: impl Fn(&Value) -> bool) -> Value {
        loop {
            let push = bounded(what, self.0.next_push()).await.expect("a push");
            if keep(&push) {
                return push;
            }
        }
    }
}
