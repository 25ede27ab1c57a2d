//! Portcullis' request inspection engine.
//!
//! A pure library: no I/O, no async, no global state beyond compiled patterns. Give it the
//! parts of a request ([`RequestParts`]: path, arguments, cookies, selected headers, body
//! leaves from [`body::parse`]) and it answers with a [`Verdict`]: each finding names the
//! detector, the rule, the field, the byte span, the fingerprint and the score.
//!
//! ```
//! use portcullis_waf::{Engine, RequestParts};
//!
//! let mut parts = RequestParts::new();
//! parts.add_query("id=1%27%20UNION%20SELECT%20password%20FROM%20users--");
//! let verdict = Engine::default().inspect(&parts);
//! assert!(verdict.is_attack());
//! assert_eq!(verdict.rule_ids(), vec![942100]);
//! ```
//!
//! Every step is linear in the input: decoding rounds are capped, the tokenizers are single
//! passes, and patterns come from the `regex` crate, which never backtracks.

pub mod body;
pub mod decode;
pub mod detect;
mod engine;
pub mod memo;
mod request;

/// Every string of up to `max_len` bytes drawn from `alphabet`, shortest first: for tests that
/// check a fast path against the slow one it skips, exhaustively on short inputs.
#[cfg(test)]
fn every_string(alphabet: &[u8], max_len: u32, mut check: impl FnMut(&[u8])) {
    let mut value = Vec::new();
    for len in 0..=max_len {
        for mut index in 0..alphabet.len().pow(len) {
            value.clear();
            for _ in 0..len {
                value.push(alphabet[index % alphabet.len()]);
                index /= alphabet.len();
            }
            check(&value);
        }
    }
}

pub use engine::{Engine, EngineConfig, Exclusion, Finding, MATCH_EXCERPT, Verdict};
pub use memo::CleanValues;
pub use request::{Field, Location, Part, RequestParts};
