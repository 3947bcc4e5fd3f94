//! `switchboard echo`: every text or binary message comes back as it came (fragmented
//! messages come back whole); pings, pongs and closes follow the protocol.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_ws::Config;
use switchboard_ws::tokio::{WebSocket, accept};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::args::EchoArgs;

pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, "echo server listening");
    // Scripts wait for this line to know the port.
    eprintln!("listening on {addr}");
    let config = Config {
        max_message_size: args.max_message_size,
        max_frame_size: args.max_message_size.min(Config::default().max_frame_size),
        ..Config::default()
    };
    let permits = Arc::new(Semaphore::new(args.max_connections));
    let mut backoff = Duration::from_millis(10);
    let serve = async {
        loop {
            let permit = permits.clone().acquire_owned().await?;
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => {
                    backoff = Duration::from_millis(10);
                    accepted
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(cause = %err, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Err(err) = echo(stream, config).await {
                    debug!(%peer, cause = %err, "connection ended");
                }
                drop(permit);
            });
        }
    };
    tokio::select! {
        result = serve => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn echo(stream: TcpStream, config: Config) -> switchboard_ws::Result<()> {
    stream.set_nodelay(true)?;
    let mut ws: WebSocket<TcpStream> = accept(stream, config).await?;
    while let Some(message) = ws.recv().await? {
        if message.is_data() {
            ws.feed(&message).await?;
        }
    }
    Ok(())
}
