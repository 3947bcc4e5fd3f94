//! `switchboard agent`: the host agent of crates/agent, from the command line; and the
//! agent that `serve --local-agent` runs inside the server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use switchboard_agent::config::machine_host;
use switchboard_agent::{Config, Options, Token};
use switchboard_server::auth::{agent_claims, now_secs};
use tokio_util::sync::CancellationToken;

use crate::args::AgentArgs;

/// How long the tokens that `serve --local-agent` mints for its agent live; a new one is
/// minted for every connection, and the expiry of one ends its connection (4002).
const LOCAL_TOKEN_TTL: u64 = 24 * 3600;

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let host = args
        .host
        .or_else(|| config.host.clone())
        .unwrap_or_else(machine_host);
    let token = args.token.trim().to_owned();
    if token.is_empty() {
        bail!(
            "the token is empty: give --token or SWITCHBOARD_AGENT_TOKEN (switchboard token --agent {host})"
        );
    }
    let url = switchboard_agent::websocket_url(&args.server)?;
    // Said once for the person starting it; the token is never written anywhere.
    crate::say!(
        "switchboard agent: host {host}, server {url}, {} log(s), {} command(s)",
        config.logs.len(),
        config.commands.len()
    );
    let options = Options {
        server: url,
        token: Token::Fixed(token),
        host,
        config,
    };
    switchboard_agent::run(options, crate::shutdown_signal()).await?;
    Ok(())
}

/// Starts the agent of `serve --local-agent` as a task: for this machine, against the
/// server listening on `addr`, with tokens minted by `node`. It stops when `stop` is
/// cancelled.
pub(crate) fn spawn_local(
    node: switchboard_server::Node,
    addr: SocketAddr,
    config: Config,
    stop: CancellationToken,
) -> anyhow::Result<String> {
    let host = config.host.clone().unwrap_or_else(machine_host);
    let claims = agent_claims(&host, now_secs() + LOCAL_TOKEN_TTL)?;
    // Minted once now so that a server that cannot (RS256, ES256) says so at start-up.
    node.mint_token(&claims)
        .context("--local-agent needs a server that signs its own tokens (HS256)")?;
    let minted_for = host.clone();
    let mint = move || {
        agent_claims(&minted_for, now_secs() + LOCAL_TOKEN_TTL)
            .and_then(|claims| node.mint_token(&claims))
            .unwrap_or_else(|e| {
                tracing::error!(cause = %e, "cannot mint the local agent's token");
                String::new()
            })
    };
    let options = Options {
        server: format!("ws://{}/ws", crate::serve::connect_addr(addr)),
        token: Token::Mint(Arc::new(mint)),
        host: host.clone(),
        config,
    };
    tokio::spawn(async move {
        if let Err(e) = switchboard_agent::run(options, stop.cancelled_owned()).await {
            tracing::error!(cause = %e, "the local agent cannot run");
        }
    });
    Ok(host)
}
