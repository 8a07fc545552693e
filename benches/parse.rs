//! Hot path of ingestion: one JSON line into a validated event.
//! Run with `cargo bench --bench parse`; the `bench` script covers the whole pipeline.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use intentflow::parse::parse_event;
use std::hint::black_box;

const LINES: [&str; 4] = [
    r#"{"user":"u1042","type":"page_view","ts":1767225600123,"item":"p17","session":"su1042-3","page":"product","dwell_ms":45000,"scroll":0.62,"device":"mobile"}"#,
    r#"{"user":"u7","type":"click","ts":1767225601000,"item":"p3","session":"su7-1","page":"category","device":"desktop"}"#,
    r#"{"user":"u99","type":"purchase","ts":"2026-01-01T10:00:00.250Z","item":"p5","page":"checkout","value":59.0}"#,
    r#"{"user":"u5","type":"add_to_cart","ts":1767225605000,"item":"p8","session":"su5-2","page":"product"}"#,
];

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_event");
    group.throughput(Throughput::Elements(LINES.len() as u64));
    group.bench_function("mixed lines", |b| {
        b.iter(|| {
            for line in LINES {
                black_box(parse_event(black_box(line)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
