//! `switchboard token`, `sub`, `pub` and `config init`.

use std::path::Path;

use anyhow::Context;

use crate::args::{PubArgs, SubArgs, TokenArgs};

pub(crate) fn config_init(_path: &Path, _force: bool) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub(crate) fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = crate::serve::load_config(&args.source)?;
    let secrets = crate::serve::load_secrets(&config)?;
    let ttl = switchboard_server::config::duration::parse(&args.ttl)
        .with_context(|| format!("invalid --ttl {:?}: use 30s, 10m, 1h, 7d…", args.ttl))?;
    let info = args
        .info
        .map(|text| {
            serde_json::value::RawValue::from_string(text).context("--info must be JSON")
        })
        .transpose()?;
    let claims = switchboard_server::auth::Claims {
        sub: args.user,
        exp: switchboard_server::auth::now_secs() + ttl.as_secs(),
        info,
        channels: args.channels,
    };
    let token = switchboard_server::auth::mint(&secrets.token_secret, &claims)?;
    use std::io::Write;
    writeln!(std::io::stdout(), "{token}")?;
    Ok(())
}

pub(crate) async fn sub(_args: SubArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub(crate) async fn publish(_args: PubArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
