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

/// Headers that are protocol plumbing the proxy and the browser own, or opaque credentials:
/// not inspected. Every other header (User-Agent, Referer, custom `X-*` headers an application
/// may log or echo) is.
const PLUMBING_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "dnt",
    "expect",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "pragma",
    "priority",
    "proxy-authorization",
    "range",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "upgrade-insecure-requests",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
];

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
    /// cookies, and headers other than `PLUMBING_HEADERS` and `Sec-*` become fields.
    pub fn add_header(&mut self, name: &'a str, value: &'a [u8]) {
        self.headers
            .push((Cow::Borrowed(name), Cow::Borrowed(value)));
        if name.eq_ignore_ascii_case("cookie") {
            self.add_cookies(value);
        } else if (name.eq_ignore_ascii_case("referer") || name.eq_ignore_ascii_case("origin"))
            && let Some(query) = url_query(value)
        {
            // A URL's path may hold `;` parameters and words; what a page passes on is its
            // query, so that is what is inspected, argument by argument (as CRS does).
            push_urlencoded(&mut self.fields, Location::Header, query);
        } else if !(PLUMBING_HEADERS
            .iter()
            .any(|plumbing| name.eq_ignore_ascii_case(plumbing))
            || name.len() > 4 && name[..4].eq_ignore_ascii_case("sec-"))
        {
            self.fields.push(Field::new(Location::Header, name, value));
        }
    }

    /// Body leaves from [`crate::body::parse`].
    pub fn add_body_leaves(&mut self, leaves: Vec<Field<'a>>) {
        self.fields.extend(leaves);
    }
}

/// The query of an absolute or path-absolute URL (`https://a.example/p?q=1`, `/p?q=1`), or
/// `None` for a value that is not URL-shaped or has no query.
fn url_query(value: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(value).ok()?;
    let scheme_end = text.find("://");
    let url_shaped = text.starts_with('/')
        || scheme_end
            .is_some_and(|end| end > 0 && text[..end].bytes().all(|b| b.is_ascii_alphabetic()));
    if !url_shaped || text.contains(char::is_whitespace) && !text.contains('?') {
        return None;
    }
    let query = &value[memchr::memchr(b'?', value)? + 1..];
    let end = memchr::memchr(b'#', query).unwrap_or(query.len());
    Some(&query[..end])
}

/// Splits `application/x-www-form-urlencoded` bytes into name and value fields.
///
/// Split by hand rather than with `form_urlencoded`, whose pairs are UTF-8 strings: it replaced
/// bytes that are not UTF-8 with U+FFFD, so an overlong `%c0%ae%c0%ae%c0%af` in an argument
/// reached the decoder as replacement characters and its evasion went unseen. A part with
/// neither `+` nor `%` borrows the raw bytes.
pub(crate) fn push_urlencoded<'a>(fields: &mut Vec<Field<'a>>, location: Location, raw: &'a [u8]) {
    let mut start = 0;
    for end in memchr::memchr_iter(b'&', raw).chain([raw.len()]) {
        let pair = &raw[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', pair) {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let name_bytes = form_decode(name);
        let name = match &name_bytes {
            Cow::Borrowed(bytes) => String::from_utf8_lossy(bytes),
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(bytes).into_owned()),
        };
        // An argument with no `=` is a bare value (`?<script>`): inspect it as one.
        if !name_bytes.is_empty() {
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
            value: form_decode(value),
        });
    }
}

/// One name or value of a form: `+` is a space, then one round of percent-decoding. It decodes
/// as `percent_encoding::percent_decode` after a `+` replacement did (a `%` without two hex
/// digits stays as it is, and `%2B` is a `+`, not a space), but in place in the one copy, and
/// from `%` to `%`: its iterator took a seventh of the cost of inspecting a form body.
fn form_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'+', b'%', raw).is_none() {
        return Cow::Borrowed(raw);
    }
    let mut decoded: Vec<u8> = raw
        .iter()
        .map(|&byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    let hex = |byte: Option<&u8>| byte.and_then(|&byte| char::from(byte).to_digit(16));
    // Decoding never lengthens: `write` never passes `read`.
    let (mut read, mut write) = (0, 0);
    while let Some(percent) = memchr::memchr(b'%', &decoded[read..]).map(|at| read + at) {
        decoded.copy_within(read..percent, write);
        write += percent - read;
        match (hex(decoded.get(percent + 1)), hex(decoded.get(percent + 2))) {
            (Some(high), Some(low)) => {
                decoded[write] = (high * 16 + low) as u8;
                read = percent + 3;
            }
            _ => {
                decoded[write] = b'%';
                read = percent + 1;
            }
        }
        write += 1;
    }
    let len = decoded.len();
    decoded.copy_within(read..len, write);
    decoded.truncate(write + len - read);
    Cow::Owned(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(parts: &RequestParts<'_>) -> Vec<(String, Vec<u8>)> {
        fields_of(parts, Part::Value)
    }

    /// The (name, value) of the fields of one part.
    fn fields_of(parts: &RequestParts<'_>, part: Part) -> Vec<(String, Vec<u8>)> {
        parts
            .fields
            .iter()
            .filter(|field| field.part == part)
            .map(|field| (field.name.to_string(), field.value.to_vec()))
            .collect()
    }

    /// `form_decode` decodes as `+` replaced by a space and then `percent_encoding` did, on
    /// every string of up to six bytes from an alphabet of `+`, `%`, hex digits in both cases,
    /// a letter that is not one, and a byte that is not ASCII.
    #[test]
    fn form_decoding_matches_percent_encoding() {
        let mut checked = 0;
        crate::every_string(b"+%2bFx\xC3", 6, |value| {
            let spaced: Vec<u8> = value
                .iter()
                .map(|&byte| if byte == b'+' { b' ' } else { byte })
                .collect();
            let expected: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
            assert_eq!(*form_decode(value), expected, "{value:?}");
            checked += 1;
        });
        assert_eq!(checked, (0..=6).map(|len| 7usize.pow(len)).sum::<usize>());
    }

    #[test]
    fn arguments_keep_bytes_that_are_not_utf8() {
        let mut parts = RequestParts::new();
        parts.add_query("file=%c0%ae%c0%af&&n%ffame=Jos%e9");
        assert_eq!(
            values(&parts),
            vec![
                ("file".to_owned(), b"\xc0\xae\xc0\xaf".to_vec()),
                ("n\u{FFFD}ame".to_owned(), b"Jos\xe9".to_vec()),
            ]
        );
        let names: Vec<Vec<u8>> = fields_of(&parts, Part::Name)
            .into_iter()
            .map(|(_, value)| value)
            .collect();
        assert_eq!(names, [&b"file"[..], b"n\xffame"]);
    }

    #[test]
    fn query_arguments_are_split_and_decoded_once() {
        let mut parts = RequestParts::new();
        parts.add_query("a=1+2&b=%2527&c");
        assert_eq!(
            values(&parts),
            vec![
                ("a".to_owned(), b"1 2".to_vec()),
                ("b".to_owned(), b"%27".to_vec()),
                ("c".to_owned(), b"".to_vec()),
            ]
        );
    }

    #[test]
    fn a_referer_url_is_inspected_by_its_query_arguments() {
        let mut parts = RequestParts::new();
        parts.add_header(
            "Referer",
            b"https://shop.example/a;jsessionid=1/list?q=1%27+or+1%3D1&page=2",
        );
        assert_eq!(
            values(&parts),
            vec![
                ("q".to_owned(), b"1' or 1=1".to_vec()),
                ("page".to_owned(), b"2".to_vec())
            ]
        );
        let mut parts = RequestParts::new();
        parts.add_header("Referer", b"'; DROP TABLE users--");
        assert_eq!(
            parts.fields.len(),
            1,
            "a value that is not a URL is inspected whole"
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
