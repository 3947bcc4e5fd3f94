//! `switchboard echo`: every text or binary message comes back as it came (fragmented
//! messages come back whole); pings, pongs and closes follow the protocol.
//! permessage-deflate is negotiated unless `--no-deflate`: messages come back compressed
//! when the client offered it (and are long enough to gain from it).
//!
//! On SIGINT or SIGTERM it stops accepting, closes every connection with 1001 (going
//! away), and waits for the close handshakes, each bounded by the close timeout.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_ws::tokio::{WebSocket, accept_with};
use switchboard_ws::{CloseCode, Config, DeflateConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::args::EchoArgs;

pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let signal = crate::shutdown_signal();
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
        deflate: DeflateConfig {
            enabled: !args.no_deflate,
            ..DeflateConfig::default()
        },
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::select! {
        result = serve(listener, config, args.max_connections, Arc::new(args.protocols), &shutdown, &tracker) => result?,
        _ = signal => info!("shutting down"),
    }
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn serve(
    listener: TcpListener,
    config: Config,
    max_connections: usize,
    protocols: Arc<Vec<String>>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut backoff = Duration::from_millis(10);
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
        let protocols = protocols.clone();
        let shutdown = shutdown.child_token();
        tracker.spawn(async move {
            if let Err(err) = echo(stream, config, &protocols, shutdown).await {
                debug!(%peer, cause = %err, "connection ended");
            }
            drop(permit);
        });
    }
}

async fn echo(
    stream: TcpStream,
    config: Config,
    protocols: &[String],
    shutdown: CancellationToken,
) -> switchboard_ws::Result<()> {
    stream.set_nodelay(true)?;
    let supported: Vec<&str> = protocols.iter().map(String::as_str).collect();
    let handshake = accept_with(stream, config, |_, upgrade| {
        Ok(upgrade.choose_protocol(&supported).map(str::to_owned))
    });
    let mut ws: WebSocket<TcpStream> = tokio::select! {
        ws = handshake => ws?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    // Created once: a fresh `cancelled()` per message would register with (and leave) the
    // token's waiter list every time, a tenth of the server's CPU in the echo benchmark.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        // `recv` is cancel-safe while it waits, so shutdown can interrupt it.
        let message = tokio::select! {
            biased;
            message = ws.recv() => message?,
            _ = &mut cancelled => {
                return ws.close_with(CloseCode::GOING_AWAY, "server shutting down").await;
            }
        };
        match message {
            Some(message) if message.is_data() => ws.feed(&message).await?,
            Some(_) => {}
            None => return Ok(()),
        }
    }
}
