//! permessage-deflate costs: compressing a publication once for a fan-out (against
//! framing it plain), and a server reading a compressed client message (against a plain
//! one), for chat-, log- and metrics-sized JSON.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_ws::deflate::Params;
use switchboard_ws::{Config, Connection, DeflateConfig, Message, PreparedMessage, Role};

fn samples() -> [(&'static str, String); 3] {
    let chat = r#"{"push":"publication","channel":"chat:lobby","offset":1234,"data":{"user":"alice","text":"Has anyone tried the new build? It starts twice as fast here."}}"#;
    let log = r#"{"push":"publication","channel":"logs:web-1","offset":98765,"data":{"ts":"2026-12-06T10:00:00.123Z","level":"info","line":"GET /api/v1/items?page=3 200 12.3ms 4.1KiB ua=Mozilla/5.0 (X11; Linux x86_64)"}}"#;
    let metrics = format!(
        r#"{{"push":"publication","channel":"ops:host-7","data":{{"cpu":[{}],"mem":{{"used":123456789,"free":987654321}}}}}}"#,
        (0..64)
            .map(|i| format!("{}.{}", i % 100, i % 7))
            .collect::<Vec<_>>()
            .join(",")
    );
    [
        ("chat", chat.to_owned()),
        ("log", log.to_owned()),
        ("metrics", metrics),
    ]
}

fn bench_publication(c: &mut Criterion) {
    let mut group = c.benchmark_group("publication");
    for (name, text) in samples() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("plain", name), &text, |b, text| {
            b.iter(|| PreparedMessage::text(std::hint::black_box(text)))
        });
        group.bench_with_input(
            BenchmarkId::new("compressed-once", name),
            &text,
            |b, text| {
                b.iter(|| {
                    PreparedMessage::text(std::hint::black_box(text))
                        .compressed(6, 15)
                        .as_bytes()
                        .len()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("compressed-once-level1", name),
            &text,
            |b, text| {
                b.iter(|| {
                    PreparedMessage::text(std::hint::black_box(text))
                        .compressed(1, 15)
                        .as_bytes()
                        .len()
                })
            },
        );
        let p = PreparedMessage::text(&text);
        eprintln!(
            "{name}: {} bytes plain frame, {} compressed",
            p.as_bytes().len(),
            p.compressed(6, 15).as_bytes().len()
        );
    }
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("server-read");
    let deflate = DeflateConfig::enabled();
    let params = Params {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..Params::default()
    };
    let config = Config::default();
    for (name, text) in samples() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        for compressed in [false, true] {
            let mut client = Connection::new(Role::Client, &config);
            let mut server = Connection::new(Role::Server, &config);
            if compressed {
                client.set_deflate(&params, &deflate);
                server.set_deflate(&params, &deflate);
            }
            let mut wire = BytesMut::new();
            client
                .encode(&Message::text(text.as_str()), &mut wire)
                .expect("encode");
            let id = BenchmarkId::new(if compressed { "compressed" } else { "plain" }, name);
            group.bench_with_input(id, &wire, |b, wire| {
                b.iter(|| {
                    let mut buf = wire.clone();
                    server.read(&mut buf).expect("read").expect("a message")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_publication, bench_read);
criterion_main!(benches);
