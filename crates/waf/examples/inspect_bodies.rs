//! `inspect_bodies form|json N`: parses and inspects the latency bench's typical 4 KB body N
//! times, after one warm-up inspection, inside `measured`. `bench/waf/instructions.sh` runs it
//! under callgrind to count the instructions of one inspection: unlike a timing, the count does
//! not move with the load of a shared machine, so it compares two builds exactly.

use std::hint::black_box;

use portcullis_waf::body::{self, BodyKind};
use portcullis_waf::{Engine, RequestParts};

#[path = "../benches/bodies.rs"]
mod bodies;

/// The allocator the gateway runs the engine with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (kind, bytes) = match args.next().as_deref() {
        Some("form") => (BodyKind::UrlEncoded, bodies::form(4096)),
        _ => (BodyKind::Json, bodies::json(4096)),
    };
    let runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let engine = Engine::default();
    // Builds the lazily compiled patterns and tables before the measured part.
    inspect(&engine, &kind, &bytes, 1);
    measured(&engine, &kind, &bytes, runs);
}

#[inline(never)]
fn measured(engine: &Engine, kind: &BodyKind, bytes: &[u8], runs: usize) {
    inspect(engine, kind, bytes, runs);
}

#[inline(never)]
fn inspect(engine: &Engine, kind: &BodyKind, bytes: &[u8], runs: usize) {
    for _ in 0..runs {
        let leaves = body::parse(kind, black_box(bytes), true)
            .map(|parsed| parsed.leaves)
            .unwrap_or_default();
        let mut parts = RequestParts::new();
        parts.add_body_leaves(leaves);
        black_box(engine.inspect(&parts).is_attack());
    }
}
