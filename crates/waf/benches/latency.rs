//! Added latency of inspecting one 4 KB body (parse and all detectors), as a distribution:
//! `cargo bench -p portcullis-waf --bench latency`. Prints p50, p99 and max of 20,000 runs on
//! one core, and the throughput on typical form and JSON bodies, then on small bodies that vary
//! from one request to the next (the benign-traffic test's); then the cost of inspecting a
//! request head without a body, which every proxied request pays, with and without the memory
//! of clean values (`CleanValues`) that spares a client's repeated values.

use std::hint::black_box;
use std::time::{Duration, Instant};

use portcullis_waf::body::{self, BodyKind};
use portcullis_waf::{CleanValues, Engine, RequestParts};

mod bodies;
mod realistic;

/// The allocator the gateway runs the engine with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn inspect(engine: &Engine, kind: &BodyKind, bytes: &[u8]) -> bool {
    let parsed = body::parse(kind, bytes, true)
        .map(|parsed| parsed.leaves)
        .unwrap_or_default();
    let mut parts = RequestParts::new();
    parts.add_body_leaves(parsed);
    engine.inspect(&parts).is_attack()
}

/// A browser's GET of a page: path, query, the headers that become fields, and cookies.
const BROWSER_HEADERS: &[(&str, &[u8])] = &[
    ("Host", b"shop.example"),
    (
        "User-Agent",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", b"en-GB,en;q=0.9"),
    ("Referer", b"https://shop.example/search?q=red+shoes&page=2"),
    ("Cookie", b"theme=dark; __Host-portcullis_session=Zm9vYmFyYmF6cXV4; consent=1"),
];

fn inspect_head(
    engine: &Engine,
    memo: Option<&mut CleanValues>,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &[u8])],
) -> bool {
    let mut parts = RequestParts::new();
    parts.add_path(path);
    if let Some(query) = query {
        parts.add_query(query);
    }
    for (name, value) in headers {
        parts.add_header(name, value);
    }
    match memo {
        Some(memo) => engine.inspect_remembering(&parts, memo).is_attack(),
        None => engine.inspect(&parts).is_attack(),
    }
}

/// Inspects `bodies` in turn, `runs` times in all after a warm-up, and prints the distribution
/// of one inspection's time and the throughput.
fn measure(name: &str, engine: &Engine, bodies: &[(BodyKind, Vec<u8>)], runs: usize) {
    for (kind, bytes) in bodies.iter().cycle().take(200.max(bodies.len())) {
        black_box(inspect(engine, kind, bytes));
    }
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut inspected = 0;
    let started = Instant::now();
    for (kind, bytes) in bodies.iter().cycle().take(runs) {
        let one = Instant::now();
        black_box(inspect(engine, kind, black_box(bytes)));
        times.push(one.elapsed());
        inspected += bytes.len();
    }
    let total = started.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let size = inspected / runs;
    println!(
        "{name:<11} {size:>5} bytes: p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>7.1} µs  {:>6.1} MB/s",
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6,
        inspected as f64 / total.as_secs_f64() / 1e6,
    );
}

fn main() {
    const RUNS: usize = 20_000;
    let engine = Engine::default();
    for (name, kind, bytes) in [
        ("form 4 KB", BodyKind::UrlEncoded, bodies::form(4096)),
        ("json 4 KB", BodyKind::Json, bodies::json(4096)),
        ("form 64 KB", BodyKind::UrlEncoded, bodies::form(64 * 1024)),
        ("json 64 KB", BodyKind::Json, bodies::json(64 * 1024)),
    ] {
        let runs = if bytes.len() > 8192 { RUNS / 10 } else { RUNS };
        measure(name, &engine, &[(kind, bytes)], runs);
    }
    // The benign-traffic test's requests, each unlike the one before, so that no branch or
    // cache learns one body; they are small (about 0.4 KB), so each request's fixed cost weighs
    // more than on the bodies above. The size printed is their mean.
    let requests: Vec<(BodyKind, Vec<u8>)> = realistic::requests(5_000)
        .into_iter()
        .map(|(kind, body)| (kind, body.into_bytes()))
        .collect();
    let realistic_engine = Engine::new(realistic::engine_config());
    for (name, kind) in [
        ("varied form", BodyKind::UrlEncoded),
        ("varied json", BodyKind::Json),
    ] {
        let of_kind: Vec<(BodyKind, Vec<u8>)> = requests
            .iter()
            .filter(|(each, _)| *each == kind)
            .cloned()
            .collect();
        measure(name, &realistic_engine, &of_kind, RUNS * 2);
    }
    for (name, path, query, headers) in [
        (
            "GET /bench",
            "/bench",
            None,
            &[("Host", &b"127.0.0.1:8080"[..])][..],
        ),
        (
            "GET page",
            "/products/red-shoes/reviews",
            Some("sort=newest&page=2&utm_source=newsletter"),
            BROWSER_HEADERS,
        ),
    ] {
        // First every value inspected, then with the memory of clean values a worker keeps,
        // in which a client's repeated values are found.
        let mut memo = CleanValues::default();
        for remembering in [false, true] {
            let mut run = || {
                let memo = remembering.then_some(&mut memo);
                black_box(inspect_head(&engine, memo, black_box(path), query, headers))
            };
            for _ in 0..1000 {
                run();
            }
            let runs = RUNS * 10;
            let started = Instant::now();
            for _ in 0..runs {
                run();
            }
            let mean = started.elapsed().as_secs_f64() / runs as f64;
            let seen = if remembering {
                ", values seen before"
            } else {
                ""
            };
            println!("{name:<11} head: mean {:>7.2} µs{seen}", mean * 1e6);
        }
    }
}
