//! `switchboard serve`, and configuration loading shared by the commands that need it.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, anyhow, bail};
use switchboard_apps::AppsOptions;
use switchboard_server::Config;
use switchboard_server::config::{StoreKind, TokenAlgorithm, address};
use switchboard_server::secrets::{self, Kind, Secrets};
use tokio::net::TcpListener;

use crate::args::{ConfigSource, ServeArgs};

/// Variables read here rather than through clap, whose errors would name a flag.
const LISTEN: &str = "SWITCHBOARD_LISTEN";
const ALLOW_ANONYMOUS: &str = "SWITCHBOARD_ALLOW_ANONYMOUS";
const API_KEY: &str = "SWITCHBOARD_API_KEY";
const TOKEN_SECRET: &str = "SWITCHBOARD_TOKEN_SECRET";

/// An environment variable, `None` when unset. One that is set counts, even empty.
pub(crate) fn env_var(name: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not UTF-8"),
    }
}

/// A boolean variable: the words people and container platforms write for yes and no.
fn env_bool(name: &str) -> anyhow::Result<Option<bool>> {
    let Some(value) = env_var(name)? else {
        return Ok(None);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" => Ok(Some(false)),
        _ => bail!("{name} is {value:?}: use true or false (or 1/0, yes/no, on/off)"),
    }
}

/// Defaults, then the file, then the environment and flags that `source` carries.
/// SWITCHBOARD_LISTEN is applied here, so `sub` and `pub` find the server too.
pub(crate) fn load_config(source: &ConfigSource) -> anyhow::Result<Config> {
    let mut config = match &source.config {
        // `[apps]` and `[agent]` belong to the apps and to `serve --local-agent`, not to
        // the server's configuration, which refuses keys it does not know: the rest is
        // read without them.
        Some(path) => match split_tables(path)? {
            Some(split) => {
                let rest = toml::to_string(&split.rest)
                    .with_context(|| format!("{}: cannot read it", path.display()))?;
                Config::from_toml(&rest).map_err(|e| anyhow!("{}: {e}", path.display()))?
            }
            None => Config::from_file(path)?,
        },
        None => Config::default(),
    };
    if let Some(dir) = &source.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(text) = env_var(LISTEN)? {
        config.listen = address::parse(&text).map_err(|err| anyhow!("{LISTEN}: {err}"))?;
    }
    // Secrets may come from the environment so they stay out of files and process lists.
    // Checked here, so the error names the variable.
    for (variable, kind, slot) in [
        (API_KEY, Kind::ApiKey, &mut config.auth.api_key),
        (
            TOKEN_SECRET,
            Kind::TokenSecret,
            &mut config.auth.token_secret,
        ),
    ] {
        if let Some(value) = env_var(variable)? {
            secrets::check(kind, &value, variable)?;
            *slot = Some(value);
        }
    }
    Ok(config)
}

/// A configuration file's tables that are not the server's.
struct Split {
    /// `[apps]`: the built-in apps' settings.
    apps: Option<toml::Value>,
    /// `[agent]`: the agent of `serve --local-agent` (the format of agent.toml).
    agent: Option<toml::Value>,
    /// Everything else: the server's configuration.
    rest: toml::Table,
}

/// Splits `[apps]` and `[agent]` from a configuration file; `None` when it has neither.
fn split_tables(path: &std::path::Path) -> anyhow::Result<Option<Split>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    // Not TOML at all: the server's own reading says what is wrong, with the line.
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return Ok(None);
    };
    let apps = table.remove("apps");
    let agent = table.remove("agent");
    if apps.is_none() && agent.is_none() {
        return Ok(None);
    }
    Ok(Some(Split {
        apps,
        agent,
        rest: table,
    }))
}

/// The built-in apps' settings: `[apps]` in the configuration file, else the defaults.
pub(crate) fn load_apps(source: &ConfigSource) -> anyhow::Result<AppsOptions> {
    let Some(path) = &source.config else {
        return Ok(AppsOptions::default());
    };
    match split_tables(path)? {
        Some(Split {
            apps: Some(apps), ..
        }) => AppsOptions::from_value(apps).map_err(|e| anyhow!("{}: {e}", path.display())),
        _ => Ok(AppsOptions::default()),
    }
}

/// The local agent's configuration: `[agent]` in the configuration file, else the
/// defaults (samples only).
fn load_agent(source: &ConfigSource) -> anyhow::Result<switchboard_agent::Config> {
    let Some(path) = &source.config else {
        return Ok(switchboard_agent::Config::default());
    };
    match split_tables(path)? {
        Some(Split {
            agent: Some(agent), ..
        }) => {
            let text = toml::to_string(&agent)
                .with_context(|| format!("{}: cannot read [agent]", path.display()))?;
            switchboard_agent::Config::from_toml(&text)
                .map_err(|e| anyhow!("{}: [agent]: {e}", path.display()))
        }
        _ => Ok(switchboard_agent::Config::default()),
    }
}

/// Loads the secrets and tells the operator about any that were just generated.
pub(crate) fn load_secrets(config: &Config) -> anyhow::Result<Secrets> {
    let secrets = secrets::load(config)?;
    for path in &secrets.generated {
        // On stderr, for a person reading the first start's output.
        crate::say!("switchboard: generated {} (mode 0600)", path.display());
    }
    Ok(secrets)
}

/// Where a client on this machine reaches a server listening on `listen`: the loopback
/// address of its family when it listens on every interface (0.0.0.0, ::).
pub(crate) fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], listen.port()))
        }
        _ => listen,
    }
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.source)?;
    if let Some(listen) = &args.listen {
        config.listen = address::parse(listen).map_err(|err| anyhow!("--listen: {err}"))?;
    }
    // Flags and environment replace the file's list, like every other setting.
    if !args.allowed_origins.is_empty() {
        config.allowed_origins = args.allowed_origins;
    }
    // The variable wins over the file, and the flag over both.
    if let Some(allow) = env_bool(ALLOW_ANONYMOUS)? {
        config.allow_anonymous = allow;
    }
    config.allow_anonymous |= args.allow_anonymous;
    if let Some(store) = args.store {
        config.store = store;
    }
    if let Some(url) = args.redis_url {
        config.engine.redis_url = url;
    }
    // Both or neither (clap makes each require the other).
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
    }
    let apps = load_apps(&args.source)?;
    // Read before anything starts, so a wrong `[agent]` stops the start.
    let local_agent = match args.local_agent {
        true => Some(load_agent(&args.source)?),
        false => None,
    };
    if apps.enabled {
        switchboard_apps::configure(&mut config);
    }
    config.validate()?;
    let shutdown = crate::shutdown_signal();
    // Said before the placeholder below takes the token secret's place.
    let mut block = StartUp::new(&args.source, &config, apps.enabled);
    // RS256 and ES256 verify with a public key and use no token secret, but the server
    // crate would generate one into the data directory: a random value that is never
    // written takes its place, so no unused secret file appears or is named.
    if config.auth.token_algorithm != TokenAlgorithm::HS256 && config.auth.token_secret.is_none() {
        config.auth.token_secret = Some(unused_secret());
    }
    let secrets = load_secrets(&config)?;
    // Reads the token key file now: a missing one stops the start before `listening on`.
    switchboard_server::auth::Verifier::new(&config.auth, &secrets.token_secret)?;
    let engine = switchboard_server::open_engine(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    block.addr = Some(addr);
    // Reads the certificate and key: a missing, unreadable or mismatched one stops the
    // start here, before `listening on`.
    let mut server = switchboard_server::Server::with_engine(config, secrets, engine)?;
    if let Some(tls) = server.tls() {
        reload_on_sighup(tls)?;
    }
    if apps.enabled {
        let store = switchboard_apps::open_store(server.node().config()).await?;
        let mounted = switchboard_apps::mount_with_store(&mut server, apps, store)?;
        block.apps(&mounted);
    }
    // The local agent stops with the server.
    let stop_agent = tokio_util::sync::CancellationToken::new();
    if let Some(agent) = local_agent {
        let host = crate::agent::spawn_local(server.node(), addr, agent, stop_agent.clone())?;
        block
            .lines
            .push(("local agent", format!("host {host} (metrics:{host})")));
    }
    crate::say!("{block}");
    let shutdown = async move {
        shutdown.await;
        stop_agent.cancel();
    };
    server.run(listener, shutdown).await?;
    Ok(())
}

/// Reads the certificate and key again on each SIGHUP (what certbot's deploy hook or
/// `systemctl reload` sends). The handler is installed before `listening on` is said: until
/// then a SIGHUP would end the process. A reload that fails keeps the certificate in use.
fn reload_on_sighup(tls: switchboard_server::Tls) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(err) => {
                    tracing::warn!(cause = %err, "SIGHUP: TLS reload failed; the certificate in use stays")
                }
            }
        }
    });
    Ok(())
}

/// 256 random bits in hex: a token secret that is never written nor used.
fn unused_secret() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The start-up block on stderr, said once: where the server is, what it serves, where
/// its secrets are and how to mint a token. It ends with `listening on ADDR`, the line
/// that scripts and tests wait for, so that whoever reads it has read the whole block.
#[derive(Debug)]
struct StartUp {
    /// Once bound.
    addr: Option<SocketAddr>,
    /// `data directory` and the lines after it, in order.
    lines: Vec<(&'static str, String)>,
    /// Whether the port speaks TLS (https://, wss://).
    tls: bool,
}

impl StartUp {
    fn new(source: &ConfigSource, config: &Config, apps: bool) -> StartUp {
        let dir = config.data_dir.display();
        let file = source.config.as_ref().map(|f| f.display().to_string());
        // Where a secret comes from: the variable, the file, or the data directory.
        let origin = |variable: &str, setting: &str, configured: bool, name: &str| {
            if env_var(variable).ok().flatten().is_some() {
                format!("from {variable}")
            } else if configured {
                format!(
                    "from {setting} in {}",
                    file.as_deref().unwrap_or("the configuration")
                )
            } else {
                config.data_dir.join(name).display().to_string()
            }
        };
        let mut lines = Vec::new();
        lines.push((
            "data directory",
            match config.store {
                StoreKind::Sqlite => format!("{dir} (the database: switchboard.db)"),
                StoreKind::Memory => format!("{dir} (history in memory: --engine memory)"),
                StoreKind::Redis => format!("{dir} (secrets only: the group's state is in Redis)"),
            },
        ));
        if config.store == StoreKind::Redis {
            let e = &config.engine;
            let at = if e.sentinels.is_empty() {
                switchboard_server::config::redact_url(&e.redis_url)
            } else {
                format!(
                    "master {} of Sentinels {}",
                    e.master,
                    e.sentinels.join(", ")
                )
            };
            lines.push(("engine", format!("redis at {at}, keys under {}:", e.prefix)));
        }
        lines.push((
            "API key",
            origin(
                API_KEY,
                "auth.api_key",
                config.auth.api_key.is_some(),
                secrets::API_KEY_FILE,
            ),
        ));
        let mut mint = String::from("switchboard token --user alice");
        if let Some(file) = &file {
            mint += &format!(" --config {file}");
        }
        match config.auth.token_algorithm {
            TokenAlgorithm::HS256 => {
                let secret = origin(
                    TOKEN_SECRET,
                    "auth.token_secret",
                    config.auth.token_secret.is_some(),
                    secrets::TOKEN_SECRET_FILE,
                );
                lines.push(("token secret", format!("{secret} (HS256 tokens)")));
                if config.auth.token_secret.is_none() {
                    mint += &format!(" --data-dir {dir}");
                }
            }
            algorithm => {
                let public = config
                    .auth
                    .token_public_key_file
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string());
                lines.push((
                    "tokens",
                    format!("{algorithm:?}, verified with the public key in {public}"),
                ));
                mint += " --private-key PRIVATE-KEY.pem";
            }
        }
        let t = &config.transports;
        let mut served = vec!["/switchboard.js (the browser library)"];
        for (on, path) in [(t.websocket, "/ws"), (t.sse, "/sse"), (t.polling, "/poll")] {
            if on {
                served.push(path);
            }
        }
        served.extend(["/api/* (X-API-Key)", "/health", "/metrics"]);
        let pages = if apps {
            "; the apps at / (home), /signin, /chat, /vote, /console, /admin, /logs, /monitor"
        } else {
            "; nothing at / (apps.enabled = false)"
        };
        lines.push(("serves", format!("{}{pages}", served.join(", "))));
        lines.push(("a token", mint));
        if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
            let hsts = match config.tls.hsts {
                Some(max_age) => format!("HSTS max-age={}", max_age.as_secs()),
                None => "no HSTS (tls.hsts)".to_owned(),
            };
            lines.push((
                "TLS",
                format!(
                    "{} with {} (TLS 1.2/1.3; SIGHUP reloads them); {hsts}",
                    cert.display(),
                    key.display()
                ),
            ));
        }
        StartUp {
            addr: None,
            lines,
            tls: config.tls.enabled(),
        }
    }
}

impl StartUp {
    /// What the apps say at start-up: who may sign up, and the first admin's link.
    fn apps(&mut self, apps: &switchboard_apps::Apps) {
        let accounts = if apps.external_tokens() {
            "tokens from your backend only (apps.external_tokens_only or RS256/ES256)".into()
        } else {
            let signup = if apps.signup_open() {
                "open sign-up (a loopback address, or apps.signup = \"open\")"
            } else {
                "by invitation (switchboard invite create)"
            };
            format!("{signup}; apps.db in the data directory")
        };
        self.lines.push(("accounts", accounts));
        if let (Some(code), Some(addr)) = (apps.first_admin_invite(), self.addr) {
            let scheme = if self.tls { "https" } else { "http" };
            self.lines.push((
                "first admin",
                format!(
                    "{scheme}://{}{} (one use: it creates the first administrator)",
                    connect_addr(addr),
                    switchboard_apps::invite_path(code)
                ),
            ));
        }
    }
}

impl std::fmt::Display for StartUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(addr) = self.addr else {
            return Ok(());
        };
        let to = connect_addr(addr);
        let (http, ws) = if self.tls {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        write!(f, "switchboard: serving {http}://{to} and {ws}://{to}/ws")?;
        if to != addr {
            write!(f, " (on every interface)")?;
        }
        for (name, value) in &self.lines {
            write!(f, "\n  {name:<15} {value}")?;
        }
        write!(f, "\nlistening on {addr}")
    }
}
