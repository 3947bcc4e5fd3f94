//! A server on `127.0.0.1:0` with known secrets, and tokens for it.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_server::auth::{Claims, mint, now_secs};
use switchboard_server::secrets::Secrets;
use switchboard_server::{Config, run};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The bound on every wait in these tests.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// The server API key.
pub(crate) const API_KEY: &str = "client-test-api-key-0123456789";
const TOKEN_SECRET: &str = "client-test-token-secret-0123456789abcdef";

/// A running server, stopped when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    data_dir: std::path::PathBuf,
}

impl Server {
    pub(crate) async fn start() -> Server {
        let data_dir = std::env::temp_dir().join(format!("sb-client-test-{:016x}", rand_u64()));
        std::fs::create_dir_all(&data_dir).expect("create the data dir");
        let config = Config {
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let secrets = Secrets {
            api_key: API_KEY.into(),
            token_secret: TOKEN_SECRET.into(),
            generated: vec![],
        };
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(run(listener, config, secrets, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            _stop: tx,
            data_dir,
        }
    }

    pub(crate) fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A token for `user`, valid for `ttl` seconds.
pub(crate) fn token(user: &str, ttl: i64) -> String {
    let claims = Claims {
        sub: user.into(),
        exp: now_secs().saturating_add_signed(ttl),
        info: None,
        channels: vec![],
        roles: Vec::new(),
        publish: Vec::new(),
    };
    mint(TOKEN_SECRET, &claims).expect("mint")
}

/// Awaits `fut`, panicking after [`WAIT`].
pub(crate) async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
