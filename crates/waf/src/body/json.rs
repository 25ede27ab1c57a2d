//! JSON bodies: every string value and every object key is a leaf, named by its path
//! (`user.addresses[0].street`). A key of letters, digits and `_` alone is counted toward the
//! leaf limit but not made a leaf: no detector reads such a word as an attack
//! (`detect::may_hit`), most keys are one, and a leaf costs an allocation and a pass of the
//! decoder. Numbers, booleans and nulls cannot carry a payload and are skipped. serde_json
//! bounds nesting at 128 levels.
//!
//! The body is walked as serde_json parses it, without building a `Value`: leaves borrow the
//! body's bytes where the JSON string has no escapes, members are read in document order, and
//! a key that appears twice is inspected twice (applications disagree on which one wins, so an
//! attacker could hide a payload in the one a `Value` would drop).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::BodyError;
use crate::request::{Field, Location, Part};

/// Pushes the leaves of `body`; returns how many keys were words, counted and not made leaves.
pub(super) fn parse<'a>(
    body: &'a [u8],
    complete: bool,
    leaves: &mut Vec<Field<'a>>,
) -> Result<usize, BodyError> {
    if !complete {
        strings_of_prefix(body, leaves);
        return Ok(0);
    }
    // Room for a leaf per 16 bytes at once, where growing the list copied it each time: a
    // leaf is a string of its own, with its quotes and key (bounded by the limit, past which
    // the body is refused anyway).
    leaves.reserve((body.len() / 16 + 1).min(super::MAX_LEAVES + 1));
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // Most paths fit, and each growth would copy the path.
    let mut path = String::with_capacity(64);
    let mut word_keys = 0;
    Walker {
        path: &mut path,
        leaves,
        word_keys: &mut word_keys,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end())
    .map_err(|_| BodyError::Malformed("invalid JSON"))?;
    Ok(word_keys)
}

/// Pushes the leaves of one JSON value found at `path`.
struct Walker<'w, 'a> {
    path: &'w mut String,
    leaves: &'w mut Vec<Field<'a>>,
    /// Keys that are words, counted and not made leaves.
    word_keys: &'w mut usize,
}

impl<'de> DeserializeSeed<'de> for Walker<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<(), E> {
        self.leaves
            .push(leaf(Part::Value, self.path, Cow::Borrowed(text.as_bytes())));
        Ok(())
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        self.leaves.push(leaf(
            Part::Value,
            self.path,
            Cow::Owned(text.as_bytes().to_vec()),
        ));
        Ok(())
    }

    fn visit_string<E>(self, text: String) -> Result<(), E> {
        self.leaves
            .push(leaf(Part::Value, self.path, Cow::Owned(text.into_bytes())));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        for index in 0usize.. {
            let len = self.path.len();
            push_index(self.path, index);
            let item = Walker {
                path: &mut *self.path,
                leaves: &mut *self.leaves,
                word_keys: &mut *self.word_keys,
            };
            let more = items.next_element_seed(item)?;
            self.path.truncate(len);
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        while let Some(key) = members.next_key_seed(Key)? {
            let len = self.path.len();
            if len > 0 {
                self.path.push('.');
            }
            self.path.push_str(&key);
            if crate::detect::is_word(key.as_bytes()) {
                *self.word_keys += 1;
            } else {
                self.leaves
                    .push(leaf(Part::Name, self.path, cow_bytes(key)));
            }
            let member = Walker {
                path: &mut *self.path,
                leaves: &mut *self.leaves,
                word_keys: &mut *self.word_keys,
            };
            members.next_value_seed(member)?;
            self.path.truncate(len);
        }
        Ok(())
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

fn cow_bytes(text: Cow<'_, str>) -> Cow<'_, [u8]> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
        Cow::Owned(text) => Cow::Owned(text.into_bytes()),
    }
}

/// Appends `[index]` to `path`, the number written by `itoa` (as the gateway writes its
/// numbers): `write!` through `fmt` cost more than the rest of a short array's walk.
fn push_index(path: &mut String, index: usize) {
    path.push('[');
    path.push_str(itoa::Buffer::new().format(index));
    path.push(']');
}

fn leaf<'a>(part: Part, path: &str, value: Cow<'a, [u8]>) -> Field<'a> {
    Field {
        location: Location::Body,
        part,
        name: Cow::Owned(path.to_owned()),
        value,
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
        leaves.push(leaf(Part::Value, "$prefix", Cow::Owned(text.into_bytes())));
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
            .map(|_| {
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
            r#"{"user-1":{"name":"O'Brien","tag s":["a\"b", 3]},"o.k":true}"#,
            true,
        );
        assert_eq!(
            found,
            vec![
                (Part::Name, "user-1".to_owned(), "user-1".to_owned()),
                (Part::Value, "user-1.name".to_owned(), "O'Brien".to_owned()),
                (Part::Name, "user-1.tag s".to_owned(), "tag s".to_owned()),
                (Part::Value, "user-1.tag s[0]".to_owned(), "a\"b".to_owned()),
                (Part::Name, "o.k".to_owned(), "o.k".to_owned()),
            ]
        );
    }

    #[test]
    fn word_keys_are_counted_not_listed() {
        let mut sink = Vec::new();
        let body = r#"{"user":{"name":"x","Tag_2":[{"":"y"}]},"<k>":1}"#;
        assert_eq!(parse(body.as_bytes(), true, &mut sink), Ok(4));
        let values: Vec<_> = sink.iter().map(|leaf| leaf.value.as_ref()).collect();
        assert_eq!(values, [&b"x"[..], b"y", b"<k>"]);
    }

    #[test]
    fn an_index_is_written_as_format_writes_it() {
        for index in [0, 1, 9, 10, 99, 100, 12_345, usize::MAX] {
            let mut path = "items".to_owned();
            push_index(&mut path, index);
            assert_eq!(path, format!("items[{index}]"));
        }
    }

    #[test]
    fn a_repeated_key_is_inspected_each_time() {
        let found = leaves(
            r#"{"role":"user","role":"<script>","a\u0041":[[],{}]}"#,
            true,
        );
        let values: Vec<_> = found.iter().map(|(_, _, value)| value.as_str()).collect();
        assert_eq!(values, ["user", "<script>"]);
    }

    #[test]
    fn trailing_bytes_and_deep_nesting_are_refused() {
        let mut sink = Vec::new();
        assert!(parse(br#"{"a":"b"} x"#, true, &mut sink).is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse(deep.as_bytes(), true, &mut sink).is_err());
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
