//! The body parsers (urlencoded, strict multipart, JSON, XML), complete and cut at the limit:
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_waf::body::{self, BodyKind};

fuzz_target!(|data: &[u8]| {
    let kinds = [
        BodyKind::UrlEncoded,
        BodyKind::Multipart { boundary: "XyZ".to_owned() },
        BodyKind::Json,
        BodyKind::Xml,
        BodyKind::Unlabelled,
    ];
    for kind in &kinds {
        let _ = body::parse(kind, data, true);
        let _ = body::parse(kind, data, false);
    }
});
