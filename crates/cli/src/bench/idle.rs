//! `switchboard bench idle`: opens N subscribed connections and holds them, so the caller
//! can read the server's memory per idle connection (printed with `--server-pid`). With
//! `--transport sse|longpoll`, a connection is an HTTP session: an open event stream, or a
//! long poll held by the server.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::args::BenchIdleArgs;
use crate::bench::measure;
use crate::bench::sink::{Shared, Subscribers};

pub(crate) async fn idle(args: BenchIdleArgs) -> anyhow::Result<()> {
    let pid = args.conn.server_pid;
    let rss_before = pid.map(measure::rss_kib).transpose()?;
    let shared = Shared::new(&args.conn, &[], &args.channel, 0)?;
    let subscribers = Subscribers::spawn(shared, args.conns, args.conn.conns_per_task);
    subscribers.wait_ready().await?;
    let rss_after = pid.map(measure::rss_kib).transpose()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {}", args.conns)?;
        if let (Some(before), Some(after)) = (rss_before, rss_after) {
            // Signed: memory freed by an earlier run may be reused, and RSS can shrink.
            let grown_kib = after as f64 - before as f64;
            let per_conn = grown_kib * 1024.0 / args.conns.max(1) as f64;
            let json = json!({
                "url": args.conn.url, "transport": args.conn.transport.name(),
                "channel": args.channel, "conns": args.conns,
                "rss_before_kib": before, "rss_after_kib": after,
                "rss_per_conn_bytes": per_conn.round(),
            });
            writeln!(out, "{json}")?;
        }
        out.flush()?;
    }
    match args.hold {
        Some(secs) => {
            let hold = Duration::try_from_secs_f64(secs).context("invalid --hold")?;
            tokio::select! {
                () = tokio::time::sleep(hold) => {}
                () = crate::shutdown_signal() => {}
            }
        }
        None => crate::shutdown_signal().await,
    }
    let tally = subscribers.stop().await;
    if tally.ended > 0 {
        eprintln!(
            "switchboard: {} of {} connections ended while held; the first: {}",
            tally.ended,
            args.conns,
            tally.first_end.unwrap_or_default()
        );
    }
    Ok(())
}
