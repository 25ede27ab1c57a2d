//! The decoding pipeline: never panics, never grows its input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = portcullis_waf::decode::decode(data, false);
    assert!(decoded.text.len() <= data.len());
    if let Some(markup) = &decoded.markup {
        assert!(markup.len() <= data.len());
    }
});
