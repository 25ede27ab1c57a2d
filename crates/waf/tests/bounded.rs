//! No input makes the engine take more than linear time: hostile bodies of 64 KiB and of 512 KiB
//! (8 times more) are inspected, and the larger must take well under 64 times as long (what
//! quadratic work would cost). A 1 MiB hostile body is inspected too.

use std::time::{Duration, Instant};

use portcullis_waf::body::{self, BodyKind};
use portcullis_waf::{Engine, EngineConfig, Field, Location, RequestParts};

/// Hostile shapes: long runs of what tokenizers, decoders and patterns branch on.
fn hostile(size: usize) -> Vec<(&'static str, BodyKind, Vec<u8>)> {
    let repeat = |unit: &[u8]| unit.iter().copied().cycle().take(size).collect::<Vec<u8>>();
    let field = |unit: &[u8]| {
        let mut body = b"f=".to_vec();
        body.extend(repeat(unit));
        body
    };
    vec![
        ("quotes", BodyKind::UrlEncoded, field(b"%27")),
        ("percent layers", BodyKind::UrlEncoded, field(b"%2525")),
        ("markup", BodyKind::UrlEncoded, field(b"%3Ca%20")),
        ("entities", BodyKind::UrlEncoded, field(b"%26%23x3c")),
        ("quote-or", BodyKind::UrlEncoded, field(b"a%27or%27")),
        ("shell", BodyKind::UrlEncoded, field(b"%3Bcat%24IFS")),
        ("comments", BodyKind::UrlEncoded, field(b"%2F*")),
        ("dot segments", BodyKind::UrlEncoded, field(b"..%2F")),
        ("backticks", BodyKind::UrlEncoded, field(b"%60a")),
        ("json string", BodyKind::Json, {
            let mut body = b"{\"a\":\"".to_vec();
            body.extend(repeat(b"\\u0027<"));
            body.extend(b"\"}");
            body
        }),
        ("xml attributes", BodyKind::Xml, {
            let mut body = b"<a b=\"".to_vec();
            body.extend(repeat(b"&lt;"));
            body.extend(b"\"/>");
            body
        }),
    ]
}

fn time_to_inspect(engine: &Engine, kind: &BodyKind, bytes: &[u8]) -> Duration {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let leaves = body::parse(kind, bytes, true)
                .map(|parsed| parsed.leaves)
                .unwrap_or_else(|_| vec![Field::new(Location::Body, "raw", bytes)]);
            let mut parts = RequestParts::new();
            parts.add_body_leaves(leaves);
            let _ = engine.inspect(&parts);
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

#[test]
fn inspection_time_grows_linearly_with_hostile_input() {
    let engine = Engine::new(EngineConfig {
        paranoia: 4,
        detection_paranoia: 4,
        ..EngineConfig::default()
    });
    let small = hostile(64 * 1024);
    let large = hostile(512 * 1024);
    for ((name, kind, small), (_, _, large)) in small.iter().zip(&large) {
        let short = time_to_inspect(&engine, kind, small).max(Duration::from_micros(200));
        let long = time_to_inspect(&engine, kind, large);
        let ratio = long.as_secs_f64() / short.as_secs_f64();
        println!("{name:<16} 64 KiB {short:>10.2?}  512 KiB {long:>10.2?}  ratio {ratio:5.1}");
        assert!(
            ratio < 24.0,
            "{name}: 8x the input took {ratio:.1}x the time"
        );
    }
}

#[test]
fn a_one_mebibyte_hostile_body_is_handled() {
    let engine = Engine::default();
    for (name, kind, bytes) in hostile(1024 * 1024) {
        let took = time_to_inspect(&engine, &kind, &bytes);
        println!("{name:<16} 1 MiB {took:>10.2?}");
        assert!(took < Duration::from_secs(10), "{name} took {took:?}");
    }
}
