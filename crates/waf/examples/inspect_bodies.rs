//! `inspect_bodies form|json|varied-form|varied-json N`: parses and inspects the latency
//! bench's typical 4 KB body N times, or N of the benign-traffic test's small varied requests in
//! turn, after one warm-up pass, inside `measured`. `bench/waf/instructions.sh` runs it
//! under callgrind to count the instructions of one inspection: unlike a timing, the count does
//! not move with the load of a shared machine, so it compares two builds exactly.

use std::hint::black_box;

use portcullis_waf::body::{self, BodyKind};
use portcullis_waf::{Engine, RequestParts};

#[path = "../benches/bodies.rs"]
mod bodies;
#[path = "../benches/realistic.rs"]
mod realistic;

/// The allocator the gateway runs the engine with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (engine, bodies) = match args.next().as_deref() {
        Some("form") => (
            Engine::default(),
            vec![(BodyKind::UrlEncoded, bodies::form(4096))],
        ),
        Some(varied @ ("varied-form" | "varied-json")) => {
            let kind = if varied == "varied-form" {
                BodyKind::UrlEncoded
            } else {
                BodyKind::Json
            };
            let of_kind = realistic::requests(2_000)
                .into_iter()
                .filter(|(each, _)| *each == kind)
                .map(|(kind, body)| (kind, body.into_bytes()))
                .collect();
            (Engine::new(realistic::engine_config()), of_kind)
        }
        _ => (
            Engine::default(),
            vec![(BodyKind::Json, bodies::json(4096))],
        ),
    };
    let runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    // Builds the lazily compiled patterns and tables before the measured part.
    inspect(&engine, &bodies, bodies.len());
    measured(&engine, &bodies, runs);
}

#[inline(never)]
fn measured(engine: &Engine, bodies: &[(BodyKind, Vec<u8>)], runs: usize) {
    inspect(engine, bodies, runs);
}

#[inline(never)]
fn inspect(engine: &Engine, bodies: &[(BodyKind, Vec<u8>)], runs: usize) {
    for (kind, bytes) in bodies.iter().cycle().take(runs) {
        let leaves = body::parse(kind, black_box(bytes), true)
            .map(|parsed| parsed.leaves)
            .unwrap_or_default();
        let mut parts = RequestParts::new();
        parts.add_body_leaves(leaves);
        black_box(engine.inspect(&parts).is_attack());
    }
}
