//! The parts of a request the engine inspects, as named fields.
//!
//! The engine never sees a socket or a framework type: a caller (the gateway, a test, another
//! Rust project) lists the path, arguments, cookies, headers and body leaves, and gets a verdict
//! whose evidence names the same fields back.

use std::borrow::Cow;
use std::fmt;

/// Where in the request a field was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// The request path, as the client sent it (before the gateway's normalization).
    Path,
    /// A query-string argument.
    Query,
    /// A body leaf: a form or multipart value, a JSON string, an XML text or attribute.
    Body,
    /// A cookie value.
    Cookie,
    /// A request header value.
    Header,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Body => "body",
            Location::Cookie => "cookie",
            Location::Header => "header",
        }
    }

    /// Parses the names `waf check --location` and `waf eval` files use.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "path" => Location::Path,
            "query" | "args" => Location::Query,
            "body" => Location::Body,
            "cookie" => Location::Cookie,
            "header" => Location::Header,
            _ => return None,
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the inspected bytes are a field's value or its name (attackers put payloads in
/// argument names too, e.g. `?1'or'1'='1=x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Value,
    Name,
}

/// One inspected input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub location: Location,
    pub part: Part,
    /// The field's name: argument name, JSON pointer, header name; the path's is empty.
    pub name: Cow<'a, str>,
    pub value: Cow<'a, [u8]>,
}

impl<'a> Field<'a> {
    pub fn new(
        location: Location,
        name: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, [u8]>>,
    ) -> Self {
        Field {
            location,
            part: Part::Value,
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A request as the engine sees it. Build it with the `add_*` methods; the body is added as
/// leaves that [`crate::body`] produced.
#[derive(Debug, Default, Clone)]
pub struct RequestParts<'a> {
    pub fields: Vec<Field<'a>>,
    /// Header names and values as received, for the protocol checks (duplicates, framing).
    pub headers: Vec<(Cow<'a, str>, Cow<'a, [u8]>)>,
}

/// Headers whose values reach applications and logs, and so carry attacks in practice
/// (CRS inspects the same set at PL1). Other headers are protocol plumbing the proxy owns.
const INSPECTED_HEADERS: &[&str] = &["user-agent", "referer", "x-forwarded-host", "origin"];

impl<'a> RequestParts<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The raw path, percent-encoded as received. Inspected as one field.
    pub fn add_path(&mut self, raw_path: &'a str) {
        self.fields
            .push(Field::new(Location::Path, "", raw_path.as_bytes()));
    }

    /// A raw query string (without `?`). Arguments are split on `&`, `+` is a space and values
    /// are percent-decoded once, as every form parser does; the decoding pipeline goes on from
    /// there.
    pub fn add_query(&mut self, raw_query: &'a str) {
        push_urlencoded(&mut self.fields, Location::Query, raw_query.as_bytes());
    }

    /// A `Cookie` header value: `name=value` pairs separated by `;`.
    pub fn add_cookies(&mut self, header: &'a [u8]) {
        for pair in header.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let (name, value) = match memchr::memchr(b'=', pair) {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (&b""[..], pair),
            };
            let name = String::from_utf8_lossy(name);
            self.fields
                .push(Field::new(Location::Cookie, name.clone(), value));
            if !name.is_empty() {
                self.fields.push(Field {
                    location: Location::Cookie,
                    part: Part::Name,
                    value: Cow::Owned(name.as_bytes().to_vec()),
                    name,
                });
            }
        }
    }

    /// One request header. Every header is kept for the protocol checks; `Cookie` is split into
    /// cookies, and the headers in `INSPECTED_HEADERS` become fields.
    pub fn add_header(&mut self, name: &'a str, value: &'a [u8]) {
        self.headers
            .push((Cow::Borrowed(name), Cow::Borrowed(value)));
        if name.eq_ignore_ascii_case("cookie") {
            self.add_cookies(value);
        } else if INSPECTED_HEADERS
            .iter()
            .any(|inspected| name.eq_ignore_ascii_case(inspected))
        {
            self.fields.push(Field::new(Location::Header, name, value));
        }
    }

    /// Body leaves from [`crate::body::parse`].
    pub fn add_body_leaves(&mut self, leaves: Vec<Field<'a>>) {
        self.fields.extend(leaves);
    }
}

/// Splits `application/x-www-form-urlencoded` bytes into name and value fields.
pub(crate) fn push_urlencoded<'a>(fields: &mut Vec<Field<'a>>, location: Location, raw: &'a [u8]) {
    for (name, value) in form_urlencoded::parse(raw) {
        // An argument with no `=` is a bare value (`?<script>`): inspect it as one.
        let name_bytes = Cow::Owned(name.as_bytes().to_vec());
        if !name.is_empty() {
            fields.push(Field {
                location,
                part: Part::Name,
                name: name.clone(),
                value: name_bytes,
            });
        }
        fields.push(Field {
            location,
            part: Part::Value,
            name,
            value: match value {
                Cow::Borrowed(text) => Cow::Owned(text.as_bytes().to_vec()),
                Cow::Owned(text) => Cow::Owned(text.into_bytes()),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_arguments_are_split_and_decoded_once() {
        let mut parts = RequestParts::new();
        parts.add_query("a=1+2&b=%2527&c");
        let values: Vec<_> = parts
            .fields
            .iter()
            .filter(|field| field.part == Part::Value)
            .map(|field| (field.name.to_string(), field.value.to_vec()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("a".to_owned(), b"1 2".to_vec()),
                ("b".to_owned(), b"%27".to_vec()),
                ("c".to_owned(), b"".to_vec()),
            ]
        );
    }

    #[test]
    fn cookies_and_selected_headers_become_fields() {
        let mut parts = RequestParts::new();
        parts.add_header("Cookie", b"sid=abc; theme=dark");
        parts.add_header("User-Agent", b"curl/8");
        parts.add_header("Accept", b"*/*");
        let names: Vec<_> = parts
            .fields
            .iter()
            .filter(|field| field.part == Part::Value)
            .map(|field| (field.location, field.name.to_string()))
            .collect();
        assert_eq!(
            names,
            vec![
                (Location::Cookie, "sid".to_owned()),
                (Location::Cookie, "theme".to_owned()),
                (Location::Header, "User-Agent".to_owned()),
            ]
        );
        assert_eq!(parts.headers.len(), 3);
    }
}
