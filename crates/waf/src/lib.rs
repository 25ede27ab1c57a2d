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

pub use engine::{Engine, EngineConfig, Exclusion, Finding, MATCH_EXCERPT, Verdict};
pub use memo::CleanValues;
pub use request::{Field, Location, Part, RequestParts};
