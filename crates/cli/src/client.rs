//! `switchboard token`, `sub`, `pub` and `config init`.
//!
//! `sub` prints every publication on its channel as one JSON line on stdout,
//! `{"channel","offset","epoch","data","info"}` (`info`: the publisher, `null` when the
//! server API published); joins, leaves and private messages are not printed. `pub` prints
//! the server's answer (`{"offset","epoch"}`).
//!
//! Exit status: 0 on success (for `sub`, also after ctrl-c or SIGTERM, which close with
//! 1000); 1 when the server refused (an error reply, a close frame, a non-2xx HTTP
//! answer), with the code on stderr; 2 for local errors (arguments, configuration, a server
//! that cannot be reached or drops the connection).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use serde_json::value::RawValue;
use switchboard_client::api::{Api, refusal};
use switchboard_client::url::{Endpoint, Scheme};
use switchboard_client::{Stream, Tls};
use switchboard_server::Config;
use switchboard_server::auth::{self, Claims, Verifier};
use switchboard_server::config::TokenAlgorithm;
use switchboard_server::secrets::{self, API_KEY_FILE, Kind, TOKEN_SECRET_FILE};
use switchboard_ws::handshake::HandshakeError;
use switchboard_ws::{CloseCode, CloseState, Message};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::args::{ConfigSource, PubArgs, SubArgs, TokenArgs};

/// The commented example configuration that `config init` writes.
const EXAMPLE_CONFIG: &str = include_str!("../../../docs/switchboard.example.toml");

/// Time to open a TCP connection, and for `pub`, to get the whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the tokens `sub --user` mints; it refreshes them at half that.
const MINTED_TTL: Duration = Duration::from_secs(3600);

/// Something the server refused: printed on stderr, exit status 1.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// `error CODE: MESSAGE` from the server's `{"code", "message"}`.
fn describe(error: &serde_json::Value) -> String {
    let message = error["message"].as_str().unwrap_or_default();
    format!("error {}: {message}", error["code"])
}

/// Exits with status 1 for a [`Refused`]; other errors go back to `main` (status 2).
fn exit_if_refused(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(err) if err.is::<Refused>() => {
            crate::say!("switchboard: {err}");
            std::process::exit(1)
        }
        other => other,
    }
}

pub(crate) fn config_init(path: &Path, force: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Atomic: never overwrites a file that appears meanwhile.
        options.create_new(true);
    }
    let mut file = match options.open(path) {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        }
        opened => opened.with_context(|| format!("cannot create {}", path.display()))?,
    };
    file.write_all(EXAMPLE_CONFIG.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    crate::say!(
        "switchboard: wrote {0}; start the server with `switchboard serve --config {0}`",
        path.display()
    );
    Ok(())
}

pub(crate) fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = crate::serve::load_config(&args.source)?;
    let minter = Minter::new(&config, args.private_key.as_deref(), None)?;
    let ttl_text = args.ttl.as_deref().unwrap_or(match args.agent {
        Some(_) => "365d",
        None => "1h",
    });
    let ttl = switchboard_server::config::duration::parse(ttl_text)
        .with_context(|| format!("invalid --ttl {ttl_text:?}: use 30s, 10m, 1h, 7d…"))?;
    let exp = auth::now_secs() + ttl.as_secs();
    let claims = match (args.agent, args.user) {
        (Some(host), _) => auth::agent_claims(&host, exp)?,
        (None, Some(user)) => {
            check_user(&user)?;
            let info = args
                .info
                .map(|text| RawValue::from_string(text).context("--info must be JSON"))
                .transpose()?;
            Claims {
                sub: user,
                exp,
                info,
                channels: args.channels,
                roles: Vec::new(),
                publish: Vec::new(),
            }
        }
        (None, None) => bail!("name the token's user with --user, or an agent's host with --agent"),
    };
    let token = minter.mint(&claims)?;
    writeln!(std::io::stdout(), "{token}")?;
    Ok(())
}

/// Refuses an empty user id (`--user ''`): the server refuses a token without one.
fn check_user(user: &str) -> anyhow::Result<()> {
    if user.trim().is_empty() {
        bail!(
            "--user is empty: a token names its user (the sub claim), and the server refuses one without"
        );
    }
    Ok(())
}

/// How tokens are signed: as the server that reads the same configuration verifies them.
enum Signer {
    /// HS256 with the token secret.
    Secret(String),
    /// RS256 or ES256 with the private key (PEM) read from `path`.
    Key {
        algorithm: TokenAlgorithm,
        pem: Vec<u8>,
        path: PathBuf,
    },
}

/// Mints tokens for `token` and `sub --user`, and checks each with the server's own
/// verifier, so a token the server would refuse is an error here, with the reason.
pub(crate) struct Minter {
    signer: Signer,
    verifier: Verifier,
}

impl Minter {
    /// From the configuration: its algorithm says whether the token secret or a private
    /// key signs. `hint` says what else the command takes instead (`--token`).
    pub(crate) fn new(
        config: &Config,
        private_key: Option<&Path>,
        hint: Option<&str>,
    ) -> anyhow::Result<Minter> {
        let algorithm = config.auth.token_algorithm;
        let signer = match (algorithm, private_key) {
            (TokenAlgorithm::HS256, None) => {
                Signer::Secret(configured_secret(config, Need::TokenSecret, hint)?)
            }
            (TokenAlgorithm::HS256, Some(path)) => bail!(
                "--private-key {}: this server's auth.token_algorithm is HS256, whose tokens \
                 are signed with its token secret; leave --private-key out, or configure \
                 RS256 or ES256 with the public key",
                path.display()
            ),
            (_, None) => bail!(
                "this server's auth.token_algorithm is {algorithm:?}: it verifies tokens with \
                 the public key in auth.token_public_key_file, so only its private half can \
                 sign one; pass --private-key FILE (PEM){}",
                hint.map_or_else(String::new, |h| format!(", or {h}"))
            ),
            (_, Some(path)) => Signer::Key {
                algorithm,
                pem: std::fs::read(path)
                    .with_context(|| format!("cannot read the private key {}", path.display()))?,
                path: path.to_owned(),
            },
        };
        let secret = match &signer {
            Signer::Secret(secret) => secret.as_str(),
            Signer::Key { .. } => "",
        };
        let verifier = Verifier::new(&config.auth, secret)?;
        Ok(Minter { signer, verifier })
    }

    pub(crate) fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        let token = match &self.signer {
            Signer::Secret(secret) => auth::mint(secret, claims)?,
            Signer::Key {
                algorithm,
                pem,
                path,
            } => auth::mint_with_key(*algorithm, pem, claims)
                .map_err(|err| anyhow!("--private-key {}: {err}", path.display()))?,
        };
        if let Err(refusal) = self.verifier.verify(&token) {
            match &self.signer {
                Signer::Key { path, .. } => bail!(
                    "--private-key {}: the server would refuse its tokens ({refusal}); is it \
                     the private half of auth.token_public_key_file?",
                    path.display()
                ),
                Signer::Secret(_) => bail!("the server would refuse this token: {refusal}"),
            }
        }
        Ok(token)
    }
}

/// Which secret a command needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need {
    ApiKey,
    TokenSecret,
}

/// One secret of a server on this machine, from its configuration, environment or data
/// directory. Unlike `serve`, never generates it: a fresh secret could not be the running
/// server's. `hint` says what to pass instead.
pub(crate) fn server_secret(
    source: &ConfigSource,
    need: Need,
    hint: &str,
) -> anyhow::Result<String> {
    configured_secret(&crate::serve::load_config(source)?, need, Some(hint))
}

/// [`server_secret`] from a loaded configuration; `hint`, if any, says what the command
/// takes instead.
fn configured_secret(config: &Config, need: Need, hint: Option<&str>) -> anyhow::Result<String> {
    let (configured, file, kind) = match need {
        Need::ApiKey => (&config.auth.api_key, API_KEY_FILE, Kind::ApiKey),
        Need::TokenSecret => (
            &config.auth.token_secret,
            TOKEN_SECRET_FILE,
            Kind::TokenSecret,
        ),
    };
    if let Some(value) = configured {
        return Ok(value.clone());
    }
    let path = config.data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value = text.trim();
            secrets::check(kind, value, &path.display().to_string())?;
            Ok(value.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist: point --data-dir (or --config) at the server's data directory{}",
            path.display(),
            hint.map_or_else(String::new, |h| format!(", or pass {h}"))
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The server a command talks to: `--url`, or where the configuration says it listens
/// (over TLS when it has `[tls]`). Either scheme names the server for either command: a
/// `ws://` (`wss://`) URL is its WebSocket endpoint, an `http://` (`https://`) URL its
/// base URL.
fn target(url: Option<&str>, config: &Config) -> anyhow::Result<Endpoint> {
    let Some(url) = url else {
        let addr = crate::serve::connect_addr(config.listen);
        let scheme = if config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        return Ok(Endpoint::parse(&format!("{scheme}://{addr}"))?);
    };
    Ok(Endpoint::parse(url)?)
}

/// What a TLS server's certificate must chain to: `--ca FILE`, else the system's roots
/// (`None`).
fn trust(ca: Option<&Path>) -> anyhow::Result<Option<Tls>> {
    ca.map(|path| Tls::from_ca_file(path).map_err(|err| anyhow!("--ca: {err}")))
        .transpose()
}

/// The WebSocket endpoint's path: a `ws://` URL's own (`/ws` when it has none), or `/ws`
/// under an `http://` base, without its query (unless the base already ends with `/ws`).
fn ws_path(target: &Endpoint) -> String {
    if target.scheme == Scheme::Ws {
        return match target.path.as_str() {
            "/" => "/ws".to_owned(),
            query if query.starts_with("/?") => format!("/ws{}", &query[1..]),
            path => path.to_owned(),
        };
    }
    let base = target.path.split('?').next().unwrap_or_default();
    let base = base.trim_end_matches('/');
    if base.ends_with("/ws") {
        base.to_owned()
    } else {
        format!("{base}/ws")
    }
}

/// The server API's base URL: the URL's path without its query, a final `/` and a final
/// `/ws` (a URL ending in `/ws` names the WebSocket endpoint, in either form).
fn api_base(target: &Endpoint) -> String {
    let path = target.path.split('?').next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix("/ws").unwrap_or(path);
    let scheme = if target.tls { "https" } else { "http" };
    format!("{scheme}://{}{path}", target.authority)
}

/// Connects to the server, with the TLS handshake for a `wss://`/`https://` target, all
/// within [`CONNECT_TIMEOUT`].
async fn connect(target: &Endpoint, url: &str, tls: Option<&Tls>) -> anyhow::Result<Stream> {
    timeout(CONNECT_TIMEOUT, async {
        let tcp = TcpStream::connect(&target.addr)
            .await
            .map_err(|err| anyhow!("cannot connect to {url}: {err}"))?;
        target
            .secure(tcp, tls)
            .await
            .map_err(|err| anyhow!("cannot connect to {url}: {err}"))
    })
    .await
    .map_err(|_| anyhow!("cannot connect to {url}: timed out"))?
}

/// A JSON object with its values kept as the server wrote them: `data` is printed
/// byte for byte, never re-encoded.
type Object = HashMap<String, Box<RawValue>>;

fn field<'a>(object: &'a Object, name: &str) -> anyhow::Result<&'a str> {
    object
        .get(name)
        .map(|raw| raw.get())
        .with_context(|| format!("the server sent an object without {name:?}"))
}

/// One output line of `sub`. `channel` and `epoch` are JSON strings.
fn publication_line(channel: &str, epoch: &str, publication: &Object) -> anyhow::Result<String> {
    let info = publication.get("info").map_or("null", |raw| raw.get());
    Ok(format!(
        r#"{{"channel":{channel},"offset":{},"epoch":{epoch},"data":{},"info":{info}}}"#,
        field(publication, "offset")?,
        field(publication, "data")?,
    ))
}

fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Prints the publications of a history or recovery result.
fn print_publications(channel: &str, result: &Object) -> anyhow::Result<()> {
    let Some(publications) = result.get("publications") else {
        return Ok(());
    };
    let epoch = field(result, "epoch")?;
    let publications: Vec<Object> = serde_json::from_str(publications.get())?;
    for publication in &publications {
        print_line(&publication_line(channel, epoch, publication)?)?;
    }
    Ok(())
}

/// How `sub` authenticates.
enum Auth {
    Token(String),
    /// Minted locally (and refreshed) for a user, as the server's configuration says.
    Mint {
        user: String,
        minter: Box<Minter>,
    },
    Anonymous,
}

impl Auth {
    fn token(&self, channel: &str) -> anyhow::Result<Option<String>> {
        Ok(match self {
            Auth::Token(token) => Some(token.clone()),
            Auth::Mint { user, minter } => Some(minter.mint(&Claims {
                sub: user.clone(),
                exp: auth::now_secs() + MINTED_TTL.as_secs(),
                info: None,
                // Whoever holds the secret may mint anything; this lets `sub` reach
                // private channels too.
                channels: vec![channel.to_owned()],
                roles: Vec::new(),
                publish: Vec::new(),
            })?),
            Auth::Anonymous => None,
        })
    }
}

/// A client error as one message. Its text already holds its cause, so it is not kept as
/// a source as well: printed with `{:#}`, the cause would be said twice.
fn lost(err: &switchboard_client::Error) -> anyhow::Error {
    anyhow!("connection lost: {err}")
}

/// A client connection of `sub`. It reads raw frames rather than the library's parsed
/// replies and pushes: `data` is printed byte for byte, and parsing it into a JSON value
/// would re-encode its numbers.
struct Subscriber {
    ws: switchboard_client::Client,
    /// The channel as a JSON string, for the output lines.
    channel: String,
}

impl Subscriber {
    /// Sends a command; returns its id.
    async fn send(&mut self, command: serde_json::Value) -> anyhow::Result<u64> {
        self.ws
            .send_command(command)
            .await
            .map_err(|err| lost(&err))
    }

    /// Handles the next frame: prints a publication, returns a reply, fails on an error
    /// reply or a close.
    async fn next(&mut self) -> anyhow::Result<Option<(u64, Object)>> {
        let text = match self.ws.recv().await.map_err(|err| lost(&err))? {
            Some(Message::Text(text)) => text,
            Some(Message::Close(frame)) => {
                let why = frame.map_or_else(
                    || format!("{} (no status)", CloseCode::NO_STATUS.0),
                    |f| format!("{} {}", f.code.0, f.reason),
                );
                return Err(Refused(format!("the server closed the connection: {why}")).into());
            }
            Some(_) => return Ok(None),
            None => bail!("the connection closed"),
        };
        let frame: Object = serde_json::from_str(&text).with_context(|| {
            format!("the server sent something else than a JSON object: {text}")
        })?;
        if let Some(error) = frame.get("error") {
            let error: serde_json::Value = serde_json::from_str(error.get())?;
            return Err(Refused(describe(&error)).into());
        }
        if let Some(result) = frame.get("result") {
            let id: u64 = serde_json::from_str(field(&frame, "id")?)?;
            return Ok(Some((id, serde_json::from_str(result.get())?)));
        }
        if frame.get("push").map(|p| p.get()) == Some(r#""publication""#) {
            let line =
                publication_line(field(&frame, "channel")?, field(&frame, "epoch")?, &frame)?;
            print_line(&line)?;
        }
        // Joins, leaves and private messages are not printed (private messages stay
        // in the mailbox: `sub` does not acknowledge them).
        Ok(None)
    }

    /// Sends a command and waits for its result.
    async fn call(&mut self, command: serde_json::Value) -> anyhow::Result<Object> {
        let id = self.send(command).await?;
        loop {
            if let Some((reply, result)) = self.next().await? {
                if reply == id {
                    return Ok(result);
                }
            }
        }
    }

    /// Connects, prints the history asked for, subscribes, then prints publications until
    /// the connection ends.
    async fn run(&mut self, args: &SubArgs, auth: &Auth) -> anyhow::Result<()> {
        let channel = &args.channel;
        self.call(json!({"cmd": "connect", "token": auth.token(channel)?}))
            .await?;
        let mut subscribe = json!({"cmd": "subscribe", "channel": channel});
        if let Some(limit) = args.history {
            let history = self
                .call(json!({"cmd": "history", "channel": channel, "limit": limit}))
                .await?;
            print_publications(&self.channel, &history)?;
            // Recovering from the history's position makes the server send what was
            // published in between: no gap, no duplicate.
            let epoch: String = serde_json::from_str(field(&history, "epoch")?)?;
            if !epoch.is_empty() {
                let offset: u64 = serde_json::from_str(field(&history, "offset")?)?;
                subscribe["recover"] = json!({"offset": offset, "epoch": epoch});
            }
        }
        let subscribed = self.call(subscribe).await?;
        if subscribed.get("recovered").map(|r| r.get()) == Some("false") {
            crate::say!(
                "switchboard: warning: publications between the history and the subscription were lost"
            );
        }
        print_publications(&self.channel, &subscribed)?;
        crate::say!("switchboard: subscribed to {channel}");
        let mut refresh = tokio::time::interval(MINTED_TTL / 2);
        refresh.tick().await;
        loop {
            tokio::select! {
                frame = self.next() => {
                    frame?;
                }
                _ = refresh.tick(), if matches!(auth, Auth::Mint { .. }) => {
                    self.send(json!({"cmd": "refresh", "token": auth.token(channel)?})).await?;
                }
            }
        }
    }
}

pub(crate) async fn sub(args: SubArgs) -> anyhow::Result<()> {
    exit_if_refused(subscribe(args).await)
}

async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    let config = crate::serve::load_config(&args.source)?;
    let auth = match (&args.token, &args.user) {
        (Some(token), _) => Auth::Token(token.clone()),
        (None, Some(user)) => {
            check_user(user)?;
            Auth::Mint {
                user: user.clone(),
                minter: Box::new(Minter::new(
                    &config,
                    args.private_key.as_deref(),
                    Some("--token"),
                )?),
            }
        }
        (None, None) => Auth::Anonymous,
    };
    let target = target(args.url.as_deref(), &config)?;
    let tls = trust(args.ca.as_deref())?;
    let path = ws_path(&target);
    let scheme = if target.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}{path}", target.authority);
    let stream = connect(&target, &url, tls.as_ref()).await?;
    let ws = switchboard_client::Client::handshake(stream, &target.authority, &path, &[])
        .await
        .map_err(|err| match err {
            switchboard_client::Error::Ws(switchboard_ws::Error::Handshake(
                HandshakeError::Status(status),
            )) => Refused(format!(
                "{url} refused the WebSocket upgrade with HTTP {status}"
            ))
            .into(),
            // The error's text holds its cause: not a source too (see `lost`).
            err => anyhow!("WebSocket handshake with {url} failed: {err}"),
        })?;
    let mut client = Subscriber {
        ws,
        channel: serde_json::to_string(&args.channel)?,
    };
    let ended = tokio::select! {
        result = client.run(&args, &auth) => result,
        _ = crate::shutdown_signal() => Ok(()),
    };
    let ended = match ended {
        // The reader went away (`sub … | head -1`): a normal end.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    };
    if client.ws.close_state() == CloseState::Open {
        // Best effort, bounded by the close timeout.
        let _ = client.ws.close(CloseCode::NORMAL, "").await;
    }
    ended
}

pub(crate) async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let config = crate::serve::load_config(&args.source)?;
    let target = target(args.url.as_deref(), &config)?;
    let api_key = match args.api_key {
        Some(key) => key,
        None => configured_secret(&config, Need::ApiKey, Some("--api-key"))?,
    };
    // JSON as given (numbers and spacing kept); any other text as a JSON string.
    let data = match serde_json::from_str::<Box<RawValue>>(&args.data) {
        Ok(json) => json,
        Err(_) => RawValue::from_string(serde_json::to_string(&args.data)?)?,
    };
    let body = format!(
        r#"{{"channel":{},"data":{}}}"#,
        serde_json::to_string(&args.channel)?,
        data.get()
    );
    let base = api_base(&target);
    let mut api = Api::new(&base, &api_key)?;
    if let Some(tls) = trust(args.ca.as_deref())? {
        api = api.with_tls(tls);
    }
    let answer = timeout(HTTP_TIMEOUT, api.post("publish", &body))
        .await
        .map_err(|_| anyhow!("{base} did not answer within {} s", HTTP_TIMEOUT.as_secs()))?
        .map_err(|err| anyhow!("{base}: {err}"))?;
    let text = answer.text();
    let text = text.trim();
    if (200..300).contains(&answer.status) {
        return print_line(text);
    }
    let error = match refusal(&answer.body) {
        Some(refused) => refused.to_string(),
        None => text.to_owned(),
    };
    exit_if_refused(Err(
        Refused(format!("HTTP {}: {error}", answer.status)).into()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_server::Config;

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let example = Config::from_toml(EXAMPLE_CONFIG).expect("the example parses");
        // Debug shows every field: the example cannot drift from `Config::default()`.
        assert_eq!(format!("{example:#?}"), format!("{:#?}", Config::default()));
    }

    #[test]
    fn the_example_config_documents_every_field() {
        // Every field name that Debug shows, as a key (`name =`, perhaps commented out) or a
        // table (`[name]`, `[[name]]`). `options` is flattened into its namespace.
        let debug = format!("{:#?}", Config::default());
        let fields: std::collections::BTreeSet<&str> = debug
            .lines()
            .filter_map(|line| line.trim_start().split_once(": "))
            .map(|(name, _)| name)
            .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .filter(|name| *name != "options")
            .collect();
        assert!(fields.len() > 25, "{fields:?}");
        for name in fields {
            let found = EXAMPLE_CONFIG.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&format!("{name} ="))
                    || line == format!("[{name}]")
                    || line == format!("[[{name}]]")
            });
            assert!(found, "{name} is not in the example");
        }
        // Those without a default are documented commented out; secrets are generated
        // into the data directory instead.
        for secret in ["api_key", "token_secret", "token_public_key_file"] {
            assert!(
                EXAMPLE_CONFIG.contains(&format!("\n# {secret} = ")),
                "{secret} should be commented out"
            );
        }
    }

    /// Either form of URL names the server for either command: its WebSocket endpoint
    /// and its API's base.
    #[test]
    fn either_url_form_gives_both_endpoints() {
        let config = Config::default();
        for (url, ws, api) in [
            ("ws://h:1/ws", "/ws", "http://h:1"),
            ("ws://h:1", "/ws", "http://h:1"),
            ("ws://h:1/", "/ws", "http://h:1"),
            ("ws://h:1?t=1", "/ws?t=1", "http://h:1"),
            ("ws://h:1/x/ws/?t=1", "/x/ws/?t=1", "http://h:1/x"),
            ("ws://h:1/other", "/other", "http://h:1/other"),
            ("http://h:1", "/ws", "http://h:1"),
            ("http://h:1/", "/ws", "http://h:1"),
            ("http://h:1/x/", "/x/ws", "http://h:1/x"),
            ("http://h:1/ws", "/ws", "http://h:1"),
            ("http://h:1/x?y", "/x/ws", "http://h:1/x"),
        ] {
            let t = target(Some(url), &config).unwrap();
            assert_eq!(
                (ws_path(&t).as_str(), api_base(&t).as_str()),
                (ws, api),
                "{url}"
            );
        }
        // Without --url: where the configuration listens (0.0.0.0 is reached on loopback).
        let local = target(None, &config).unwrap();
        assert_eq!(ws_path(&local), "/ws");
        assert_eq!(
            local.authority,
            crate::serve::connect_addr(config.listen).to_string()
        );
        // TLS URLs keep TLS in both endpoints.
        for (url, ws, api) in [
            ("wss://h/ws", "/ws", "https://h"),
            ("HTTPS://h:8443/x", "/x/ws", "https://h:8443/x"),
        ] {
            let t = target(Some(url), &config).unwrap();
            assert!(t.tls, "{url}");
            assert_eq!((ws_path(&t).as_str(), api_base(&t).as_str()), (ws, api));
        }
        // Without --url, a configuration with [tls] is reached over TLS.
        let mut secure = Config::default();
        secure.tls.cert = Some("c.pem".into());
        secure.tls.key = Some("k.pem".into());
        let local = target(None, &secure).unwrap();
        assert!(local.tls);
        assert!(api_base(&local).starts_with("https://"));
    }

    #[test]
    fn publication_lines_keep_data_as_sent() {
        let push: Object = serde_json::from_str(
            r#"{"push":"publication","channel":"chat:a","epoch":"e1","offset":3,"data":{"b": [1, 2.50]},"time":1}"#,
        )
        .unwrap();
        let line = publication_line(r#""chat:a""#, r#""e1""#, &push).unwrap();
        assert_eq!(
            line,
            r#"{"channel":"chat:a","offset":3,"epoch":"e1","data":{"b": [1, 2.50]},"info":null}"#
        );
        serde_json::from_str::<serde_json::Value>(&line).unwrap();
    }
}
