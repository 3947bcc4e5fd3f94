//! Masking throughput: the word-at-a-time loop against the byte loop.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_ws::mask::{apply_mask, apply_mask_bytes};

fn bench_mask(c: &mut Criterion) {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut group = c.benchmark_group("mask");
    for size in [32usize, 1024, 64 * 1024] {
        let mut buf = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("word", size), &size, |b, _| {
            b.iter(|| apply_mask(std::hint::black_box(&mut buf), key, 0))
        });
        group.bench_with_input(BenchmarkId::new("byte", size), &size, |b, _| {
            b.iter(|| apply_mask_bytes(std::hint::black_box(&mut buf), key, 0))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_mask);
criterion_main!(benches);
