//! Every detector, through the engine, on every location: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_waf::{Engine, EngineConfig, Field, Location, RequestParts};

fuzz_target!(|data: &[u8]| {
    let engine = Engine::new(EngineConfig { paranoia: 4, detection_paranoia: 4, ..EngineConfig::default() });
    for location in [Location::Path, Location::Query, Location::Body, Location::Cookie, Location::Header] {
        let mut parts = RequestParts::new();
        parts.add_body_leaves(vec![Field::new(location, "f", data)]);
        let _ = engine.inspect(&parts);
    }
    let mut parts = RequestParts::new();
    if let Ok(text) = std::str::from_utf8(data) {
        parts.add_query(text);
        parts.add_path(text);
    }
    parts.add_header("Cookie", data);
    parts.add_header("Referer", data);
    let _ = engine.inspect(&parts);
});
