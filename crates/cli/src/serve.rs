//! `switchboard serve`, and configuration loading shared by the commands that need it.

use anyhow::Context;
use switchboard_server::Config;
use switchboard_server::secrets::{self, Kind, Secrets};
use tokio::net::TcpListener;
use tracing::info;

use crate::args::{ConfigSource, ServeArgs};

/// Defaults, then the file, then the environment and flags that `source` carries.
pub(crate) fn load_config(source: &ConfigSource) -> anyhow::Result<Config> {
    let mut config = match &source.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &source.data_dir {
        config.data_dir = dir.clone();
    }
    // Secrets may come from the environment so they stay out of files and process lists.
    // A variable that is set counts, even empty: checked here, so the error names it.
    for (variable, kind, slot) in [
        (
            "SWITCHBOARD_API_KEY",
            Kind::ApiKey,
            &mut config.auth.api_key,
        ),
        (
            "SWITCHBOARD_TOKEN_SECRET",
            Kind::TokenSecret,
            &mut config.auth.token_secret,
        ),
    ] {
        if let Some(value) = std::env::var_os(variable) {
            let value = value
                .into_string()
                .map_err(|_| anyhow::anyhow!("{variable} is not UTF-8"))?;
            secrets::check(kind, &value, variable)?;
            *slot = Some(value);
        }
    }
    Ok(config)
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

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.source)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // Flags and environment replace the file's list, like every other setting.
    if !args.allowed_origins.is_empty() {
        config.allowed_origins = args.allowed_origins;
    }
    config.allow_anonymous |= args.allow_anonymous;
    if let Some(store) = args.store {
        config.store = store;
    }
    config.validate()?;
    let shutdown = crate::shutdown_signal();
    let secrets = load_secrets(&config)?;
    let store = switchboard_server::open_store(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, data_dir = %config.data_dir.display(), "serving");
    crate::say!("listening on {addr}");
    crate::say!(
        "switchboard: API key in {}, token secret in {}",
        config.data_dir.join(secrets::API_KEY_FILE).display(),
        config.data_dir.join(secrets::TOKEN_SECRET_FILE).display()
    );
    switchboard_server::run_with_store(listener, config, secrets, store, shutdown).await?;
    Ok(())
}
