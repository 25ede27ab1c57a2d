//! JSON bodies: every string value and every object key is a leaf, named by its path
//! (`user.addresses[0].street`). Numbers, booleans and nulls cannot carry a payload and are
//! skipped. serde_json bounds nesting at 128 levels.

use std::borrow::Cow;

use serde_json::Value;

use super::BodyError;
use crate::request::{Field, Location, Part};

pub(super) fn parse<'a>(
    body: &'a [u8],
    complete: bool,
    leaves: &mut Vec<Field<'a>>,
) -> Result<(), BodyError> {
    if !complete {
        strings_of_prefix(body, leaves);
        return Ok(());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|_| BodyError::Malformed("invalid JSON"))?;
    walk(&value, &mut String::new(), leaves);
    Ok(())
}

fn walk(value: &Value, path: &mut String, leaves: &mut Vec<Field<'_>>) {
    match value {
        Value::String(text) => leaves.push(leaf(Part::Value, path, text)),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                walk(item, path, leaves);
                path.truncate(len);
            }
        }
        Value::Object(members) => {
            for (key, member) in members {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                leaves.push(leaf(Part::Name, path, key));
                walk(member, path, leaves);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn leaf<'a>(part: Part, path: &str, text: &str) -> Field<'a> {
    Field {
        location: Location::Body,
        part,
        name: Cow::Owned(path.to_owned()),
        value: Cow::Owned(text.as_bytes().to_vec()),
    }
}

/// The string tokens of a JSON prefix cut at the inspection limit, decoded. Their paths are
/// unknown, so each is named `$prefix`.
fn strings_of_prefix(body: &[u8], leaves: &mut Vec<Field<'_>>) {
    let mut i = 0;
    while let Some(open) = memchr::memchr(b'"', &body[i..]).map(|at| i + at) {
        let mut end = open + 1;
        while end < body.len() && body[end] != b'"' {
            end += if body[end] == b'\\' { 2 } else { 1 };
        }
        let token = &body[open..(end + 1).min(body.len())];
        let text = serde_json::from_slice::<String>(token)
            .unwrap_or_else(|_| String::from_utf8_lossy(&token[1..]).into_owned());
        leaves.push(leaf(Part::Value, "$prefix", &text));
        i = end + 1;
        if i >= body.len() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(body: &str, complete: bool) -> Vec<(Part, String, String)> {
        let mut leaves = Vec::new();
        parse(body.as_bytes(), complete, &mut leaves)
            .map(|()| {
                leaves
                    .into_iter()
                    .map(|field| {
                        (
                            field.part,
                            field.name.into_owned(),
                            String::from_utf8_lossy(&field.value).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn strings_and_keys_are_leaves_named_by_path() {
        let found = leaves(
            r#"{"user":{"name":"O'Brien","tags":["a\"b", 3]},"ok":true}"#,
            true,
        );
        assert_eq!(
            found,
            vec![
                (Part::Name, "ok".to_owned(), "ok".to_owned()),
                (Part::Name, "user".to_owned(), "user".to_owned()),
                (Part::Name, "user.name".to_owned(), "name".to_owned()),
                (Part::Value, "user.name".to_owned(), "O'Brien".to_owned()),
                (Part::Name, "user.tags".to_owned(), "tags".to_owned()),
                (Part::Value, "user.tags[0]".to_owned(), "a\"b".to_owned()),
            ]
        );
    }

    #[test]
    fn malformed_json_is_refused_but_a_prefix_is_read() {
        let mut sink = Vec::new();
        assert!(parse(b"{\"a\": ", true, &mut sink).is_err());
        let found = leaves(r#"{"a": "1' or '1'='1", "b": "unterminat"#, false);
        let values: Vec<_> = found.into_iter().map(|(_, _, value)| value).collect();
        assert!(values.contains(&"1' or '1'='1".to_owned()), "{values:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let mut sink = Vec::new();
        assert!(parse(deep.as_bytes(), true, &mut sink).is_err());
    }
}
