//! Request bodies parsed into typed leaves.
//!
//! Detectors read the values an application will read (a form field, a JSON string, an XML text
//! node), never the syntax around them: `{"q": "a"}` is not SQL, and a JSON body must not be
//! blocked because its braces and quotes tokenize like an injection. A body whose declared type
//! does not parse is an error the caller answers with 400: an application's lenient parser
//! might read it differently from ours, which is how WAF bypasses through malformed multipart
//! work.
//!
//! A body larger than the inspection limit arrives here as a prefix (`complete = false`). The
//! prefix is parsed as far as it goes; only a complete body is held to the strict rules.

mod json;
mod multipart;
mod xml;

use crate::detect::Hit;
use crate::request::{Field, Location, push_urlencoded};

/// Most leaves one body may have; more is a parser-exhaustion attempt (CRS caps arguments the
/// same way).
pub const MAX_LEAVES: usize = 10_000;

/// How a body is parsed, from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    UrlEncoded,
    Multipart {
        boundary: String,
    },
    Json,
    Xml,
    /// No `Content-Type` at all. Some frameworks read such a body as JSON anyway (FastAPI
    /// does), others as a form: it is read as JSON when it parses as JSON, else as a form.
    Unlabelled,
    /// Anything else (binary uploads, images): not inspected.
    Opaque,
}

impl BodyKind {
    pub fn from_content_type(content_type: &str) -> Result<Self, BodyError> {
        let mut params = content_type.split(';');
        let essence = params.next().unwrap_or("").trim().to_ascii_lowercase();
        Ok(match essence.as_str() {
            "application/x-www-form-urlencoded" => BodyKind::UrlEncoded,
            "multipart/form-data" => {
                let boundary = params
                    .filter_map(|param| param.split_once('='))
                    .find(|(key, _)| key.trim().eq_ignore_ascii_case("boundary"))
                    .map(|(_, value)| value.trim().trim_matches('"').to_owned())
                    .filter(|boundary| (1..=70).contains(&boundary.len()))
                    .ok_or(BodyError::Malformed("multipart without a valid boundary"))?;
                BodyKind::Multipart { boundary }
            }
            "application/json" | "text/json" => BodyKind::Json,
            "application/xml" | "text/xml" => BodyKind::Xml,
            other if other.ends_with("+json") => BodyKind::Json,
            other if other.ends_with("+xml") => BodyKind::Xml,
            _ => BodyKind::Opaque,
        })
    }

    pub fn is_inspected(&self) -> bool {
        !matches!(self, BodyKind::Opaque)
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("malformed body: {0}")]
    Malformed(&'static str),
    #[error("the body has more than {MAX_LEAVES} fields")]
    TooManyLeaves,
}

/// A parsed body: the leaves to inspect, and anomalies found in its structure (an XML external
/// entity declaration).
#[derive(Debug, Default)]
pub struct ParsedBody<'a> {
    pub leaves: Vec<Field<'a>>,
    pub anomalies: Vec<(String, Hit)>,
}

/// Parses `body` as `kind`. `complete` is false when `body` is a prefix cut at the inspection
/// limit.
pub fn parse<'a>(
    kind: &BodyKind,
    body: &'a [u8],
    complete: bool,
) -> Result<ParsedBody<'a>, BodyError> {
    let mut parsed = ParsedBody::default();
    // JSON keys that are words: not leaves, but counted toward the limit.
    let mut word_keys = 0;
    match kind {
        BodyKind::UrlEncoded => push_urlencoded(&mut parsed.leaves, Location::Body, body),
        BodyKind::Multipart { boundary } => {
            multipart::parse(boundary.as_bytes(), body, complete, &mut parsed.leaves)?
        }
        BodyKind::Json => word_keys = json::parse(body, complete, &mut parsed.leaves)?,
        BodyKind::Xml => xml::parse(body, complete, &mut parsed)?,
        BodyKind::Unlabelled => match json::parse(body, complete, &mut parsed.leaves) {
            Ok(words) => word_keys = words,
            Err(_) => {
                parsed.leaves.clear();
                push_urlencoded(&mut parsed.leaves, Location::Body, body);
            }
        },
        BodyKind::Opaque => {}
    }
    if parsed.leaves.len() + word_keys > MAX_LEAVES {
        return Err(BodyError::TooManyLeaves);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON keys that are words are not leaves, but a body is refused past the limit all the
    /// same: the count is of keys and values, as before.
    #[test]
    fn the_leaf_limit_counts_word_keys() {
        let members = |count: usize| {
            let members: Vec<String> = (0..count).map(|n| format!("\"k{n}\":1")).collect();
            format!("{{{}}}", members.join(","))
        };
        let at_limit = members(MAX_LEAVES);
        let parsed = parse(&BodyKind::Json, at_limit.as_bytes(), true);
        assert!(parsed.is_ok_and(|parsed| parsed.leaves.is_empty()));
        let over = members(MAX_LEAVES + 1);
        for kind in [BodyKind::Json, BodyKind::Unlabelled] {
            assert_eq!(
                parse(&kind, over.as_bytes(), true).err(),
                Some(BodyError::TooManyLeaves)
            );
        }
    }

    #[test]
    fn content_types_pick_parsers() {
        assert_eq!(
            BodyKind::from_content_type("application/x-www-form-urlencoded; charset=utf-8"),
            Ok(BodyKind::UrlEncoded)
        );
        assert_eq!(
            BodyKind::from_content_type("multipart/form-data; boundary=\"abc\""),
            Ok(BodyKind::Multipart {
                boundary: "abc".to_owned()
            })
        );
        assert_eq!(
            BodyKind::from_content_type("application/vnd.api+json"),
            Ok(BodyKind::Json)
        );
        assert_eq!(
            BodyKind::from_content_type("image/png"),
            Ok(BodyKind::Opaque)
        );
        assert!(BodyKind::from_content_type("multipart/form-data").is_err());
    }

    #[test]
    fn unlabelled_bodies_are_read_as_json_or_as_a_form() {
        let values = |body: &'static [u8]| -> Vec<Vec<u8>> {
            parse(&BodyKind::Unlabelled, body, true)
                .map(|parsed| parsed.leaves)
                .unwrap_or_default()
                .into_iter()
                .filter(|field| field.part == crate::Part::Value)
                .map(|field| field.value.to_vec())
                .collect()
        };
        assert_eq!(
            values(br#"{"q": "1' OR '1'='1"}"#),
            vec![b"1' OR '1'='1".to_vec()]
        );
        assert_eq!(values(b"q=a+b"), vec![b"a b".to_vec()]);
    }

    #[test]
    fn form_bodies_become_leaves() {
        let parsed = parse(&BodyKind::UrlEncoded, b"name=O%27Brien&note=hi+there", true)
            .map(|parsed| parsed.leaves)
            .unwrap_or_default();
        let values: Vec<_> = parsed
            .iter()
            .filter(|field| field.part == crate::Part::Value)
            .map(|field| field.value.to_vec())
            .collect();
        assert_eq!(values, vec![b"O'Brien".to_vec(), b"hi there".to_vec()]);
    }
}
