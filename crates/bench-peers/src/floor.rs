//! The floor of a fan-out on this machine: what the kernel alone costs.
//!
//! [`send_floor`] opens N TCP connections to a [`serve_sink`] (which reads and discards) and,
//! R times per second, writes one small WebSocket frame to each of them in a tight loop of
//! non-blocking `write`s: no framing work, no queues, no tasks, no JSON. The time one round
//! takes is the least any server on this core can take to hand one publication to N
//! subscribers, and so a floor for the latency of the last ones; the process's CPU time per
//! write is the kernel's send path on loopback (which also runs the receiver's TCP input).

use std::io::{self, ErrorKind, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

use crate::accept_loop;

/// Accepts connections and reads everything they send, until the task is dropped.
pub async fn serve_sink(listener: TcpListener) {
    accept_loop(listener, |mut stream| async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// What [`send_floor`] measured.
#[derive(Debug, Serialize)]
pub struct FloorReport {
    /// Connections written to in each round.
    pub conns: usize,
    /// Rounds measured.
    pub rounds: usize,
    /// Bytes of each write (one WebSocket text frame).
    pub frame_bytes: usize,
    /// Writes the kernel did not take whole (the sink fell behind); 0 in a valid run.
    pub short_writes: u64,
    /// Time of one round (N writes), median, in ms.
    pub round_p50_ms: f64,
    /// Time of one round, 99th percentile, in ms.
    pub round_p99_ms: f64,
    /// Time of the longest round, in ms.
    pub round_max_ms: f64,
    /// This process's CPU time (user + system) over the rounds, per write, in µs.
    pub cpu_us_per_write: f64,
}

/// Connects `conns` sockets to the sink at `to`, then runs `rounds` rounds at `rate` per second,
/// each writing a `size`-byte text frame to every socket. Blocking: run it on its own core.
pub fn send_floor(
    to: SocketAddr,
    conns: usize,
    rounds: usize,
    rate: f64,
    size: usize,
) -> io::Result<FloorReport> {
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        let socket = TcpStream::connect(to)?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        sockets.push(socket);
    }
    let frame = text_frame(size);
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut times = Vec::with_capacity(rounds);
    let mut short_writes = 0;
    let cpu_before = process_cpu()?;
    let start = Instant::now();
    for round in 0..rounds {
        let due = start + interval.mul_f64(round as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let begun = Instant::now();
        for socket in &mut sockets {
            match socket.write(&frame) {
                Ok(n) if n == frame.len() => {}
                Ok(_) => short_writes += 1,
                Err(err) if err.kind() == ErrorKind::WouldBlock => short_writes += 1,
                Err(err) => return Err(err),
            }
        }
        times.push(begun.elapsed());
    }
    let cpu = process_cpu()? - cpu_before;
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
    Ok(FloorReport {
        conns,
        rounds,
        frame_bytes: frame.len(),
        short_writes,
        round_p50_ms: at(0.5),
        round_p99_ms: at(0.99),
        round_max_ms: times.last().map_or(0.0, |d| ms(*d)),
        cpu_us_per_write: cpu.as_secs_f64() * 1e6 / (rounds * conns).max(1) as f64,
    })
}

/// An unmasked text frame (server to client) with `size` bytes of payload.
fn text_frame(size: usize) -> Vec<u8> {
    let mut frame = vec![0x81];
    match size {
        0..=125 => frame.push(size as u8),
        126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => {
            frame.push(127);
            frame.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
    frame.resize(frame.len() + size, b'x');
    frame
}

/// This process's user + system CPU time so far, from `/proc/self/stat` (clock ticks of
/// 10 ms, the value of `CLK_TCK` on Linux).
fn process_cpu() -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may contain spaces; the fields after it are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15, which are the 12th and 13th after the name.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(&text_frame(3)[..], &[0x81, 3, b'x', b'x', b'x']);
        let mid = text_frame(200);
        assert_eq!((&mid[..4], mid.len()), (&[0x81, 126, 0, 200][..], 204));
    }

    #[tokio::test]
    async fn a_round_reaches_every_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = tokio::spawn(serve_sink(listener));
        let report = tokio::task::spawn_blocking(move || send_floor(addr, 8, 3, 100.0, 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (report.conns, report.rounds, report.short_writes),
            (8, 3, 0)
        );
        assert!(report.round_max_ms >= report.round_p50_ms);
        sink.abort();
    }
}
