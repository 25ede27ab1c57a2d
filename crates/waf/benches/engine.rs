//! Engine throughput on typical bodies, parsing included: `cargo bench -p portcullis-waf --bench engine`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_waf::body::{self, BodyKind};
use portcullis_waf::{Engine, RequestParts};

mod bodies;

/// The allocator the gateway runs the engine with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn inspect(engine: &Engine, kind: &BodyKind, bytes: &[u8]) -> bool {
    let parsed = body::parse(kind, bytes, true)
        .map(|parsed| parsed.leaves)
        .unwrap_or_default();
    let mut parts = RequestParts::new();
    parts.add_path("/api/orders");
    parts.add_header("User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36");
    parts.add_body_leaves(parsed);
    engine.inspect(&parts).is_attack()
}

fn throughput(c: &mut Criterion) {
    let engine = Engine::default();
    let mut group = c.benchmark_group("inspect");
    for (name, kind, bytes) in [
        ("form_1k", BodyKind::UrlEncoded, bodies::form(1024)),
        ("form_16k", BodyKind::UrlEncoded, bodies::form(16 * 1024)),
        ("json_4k", BodyKind::Json, bodies::json(4 * 1024)),
        ("json_64k", BodyKind::Json, bodies::json(64 * 1024)),
    ] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| inspect(&engine, &kind, black_box(&bytes)))
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
