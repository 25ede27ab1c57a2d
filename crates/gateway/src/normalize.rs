//! Path normalization before routing.
//!
//! Threat: a path that the gateway routes one way and the upstream reads another
//! (`/public/../admin`, `/%2e%2e/admin`, `//admin`, `/public/%2e%2e%2fadmin`) reaches a route it
//! does not name. Defence: decode once, resolve dot segments, collapse empty segments, and
//! forward exactly the path we routed on, re-encoded; anything whose reading depends on the
//! upstream (an encoded `/` or `\`, a `;` path parameter, NUL, a leftover escape that a second
//! decode would change, bytes that are not UTF-8, which includes overlong forms) is rejected.
//!
//! Written by hand because no maintained crate normalizes to these rules: URL parsers resolve
//! dot segments but keep `%2e%2e` and `%2f` as they are, which is exactly the gap exploited.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A path the gateway will route on and forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalizedPath<'a> {
    /// Decoded, for route matching and logs.
    pub(crate) decoded: Cow<'a, str>,
    /// Re-encoded, for the upstream request.
    pub(crate) encoded: Cow<'a, str>,
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("path does not start with /")]
    NotAbsolute,
    #[error("malformed percent escape")]
    BadEscape,
    #[error("encoded path separator")]
    EncodedSeparator,
    #[error("backslash in path")]
    Backslash,
    #[error("path parameter (;) in path")]
    PathParameter,
    #[error("NUL or control character in path")]
    Control,
    #[error("path is not UTF-8 (or uses an overlong encoding)")]
    InvalidUtf8,
    #[error("escape left after decoding (double encoding)")]
    DoubleEncoded,
    #[error("dot segments climb above the root")]
    AboveRoot,
}

pub(crate) fn normalize(raw: &str) -> Result<NormalizedPath<'_>, PathError> {
    if is_already_normal(raw) {
        return Ok(NormalizedPath {
            decoded: Cow::Borrowed(raw),
            encoded: Cow::Borrowed(raw),
        });
    }
    normalize_in_full(raw)
}

/// Whether `raw` is its own normal form, as most request paths are: made only of bytes that
/// decoding and re-encoding leave as they are, with no empty segment but a trailing one and no
/// `.` or `..` segment. Such a path is routed and forwarded as it came, without the copies.
fn is_already_normal(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/');
    let last = segments.next_back().unwrap_or_default();
    raw.bytes().all(|byte| byte == b'/' || is_kept(byte))
        && segments.all(|segment| !matches!(segment, "" | "." | ".."))
        && !matches!(last, "." | "..")
}

fn normalize_in_full(raw: &str) -> Result<NormalizedPath<'_>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = percent_decode(raw.as_bytes())?;
    let text = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    if has_escape(&text) {
        return Err(PathError::DoubleEncoded);
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in text.split('/').skip(1) {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            name => segments.push(name),
        }
    }
    let mut decoded = String::with_capacity(text.len());
    let mut encoded = String::with_capacity(raw.len());
    for segment in &segments {
        decoded.push('/');
        decoded.push_str(segment);
        encoded.push('/');
        encode_segment(segment, &mut encoded);
    }
    if trailing_slash || segments.is_empty() {
        decoded.push('/');
        encoded.push('/');
    }
    Ok(NormalizedPath {
        decoded: Cow::Owned(decoded),
        encoded: Cow::Owned(encoded),
    })
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = match raw[i] {
            b'%' => {
                let hi = raw.get(i + 1).and_then(|b| hex_value(*b));
                let lo = raw.get(i + 2).and_then(|b| hex_value(*b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                i += 3;
                match hi << 4 | lo {
                    b'/' => return Err(PathError::EncodedSeparator),
                    decoded => decoded,
                }
            }
            raw_byte => {
                i += 1;
                raw_byte
            }
        };
        match byte {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            0..=0x1f | 0x7f => return Err(PathError::Control),
            _ => out.push(byte),
        }
    }
    Ok(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// `%` followed by two hex digits: a second decode by the upstream would change the path.
fn has_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .windows(3)
        .any(|w| w[0] == b'%' && hex_value(w[1]).is_some() && hex_value(w[2]).is_some())
}

/// Keeps RFC 3986 `pchar`s except `;` and `%`; escapes everything else.
fn encode_segment(segment: &str, out: &mut String) {
    for byte in segment.bytes() {
        if is_kept(byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The RFC 3986 `pchar`s but `;` and `%`: the bytes a segment keeps as they are.
fn is_kept(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(raw: &str) -> Result<String, PathError> {
        normalize(raw).map(|p| p.decoded.into_owned())
    }

    #[test]
    fn a_path_taken_as_already_normal_is_what_full_normalization_makes_of_it() {
        for normal in ["/", "/bench", "/a/b/", "/a.b/c~d/...", "/@:!$&'()*+,="] {
            assert!(is_already_normal(normal), "{normal}");
        }
        for not_normal in [
            "", "a", "//a", "/a//", "/a/./b", "/a/..", "/.", "/a%20b", "/a;b",
        ] {
            assert!(!is_already_normal(not_normal), "{not_normal}");
        }
        // Every path of up to 7 bytes over slashes, dots, a letter, an unreserved mark and
        // bytes that need decoding or are refused.
        let alphabet = b"/.a~%;";
        let mut taken = 0;
        for len in 0..=7u32 {
            for mut index in 0..alphabet.len().pow(len) {
                let mut raw = String::new();
                for _ in 0..len {
                    raw.push(char::from(alphabet[index % alphabet.len()]));
                    index /= alphabet.len();
                }
                taken += usize::from(is_already_normal(&raw));
                assert_eq!(normalize(&raw), normalize_in_full(&raw), "{raw}");
            }
        }
        assert!(taken > 1000, "{taken}");
    }

    #[test]
    fn resolves_dot_segments_and_empty_segments() {
        assert_eq!(decoded("/public/../admin"), Ok("/admin".into()));
        assert_eq!(decoded("/%2e%2e/admin"), Err(PathError::AboveRoot));
        assert_eq!(decoded("/a/%2e%2e/admin"), Ok("/admin".into()));
        assert_eq!(decoded("/a/%2E/b"), Ok("/a/b".into()));
        assert_eq!(decoded("//admin"), Ok("/admin".into()));
        assert_eq!(decoded("/a//b/"), Ok("/a/b/".into()));
        assert_eq!(decoded("/a/b/.."), Ok("/a/".into()));
        assert_eq!(decoded("/"), Ok("/".into()));
        assert_eq!(decoded("/.."), Err(PathError::AboveRoot));
    }

    #[test]
    fn rejects_what_upstreams_read_differently() {
        assert_eq!(
            decoded("/public/%2e%2e%2fadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(decoded("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(decoded("/a\\..\\admin"), Err(PathError::Backslash));
        assert_eq!(decoded("/a%5c..%5cadmin"), Err(PathError::Backslash));
        assert_eq!(decoded("/admin;x=1"), Err(PathError::PathParameter));
        assert_eq!(decoded("/public/..;/admin"), Err(PathError::PathParameter));
        assert_eq!(decoded("/a%00.txt"), Err(PathError::Control));
        assert_eq!(decoded("/%c0%ae%c0%ae/admin"), Err(PathError::InvalidUtf8));
        assert_eq!(decoded("/%252e%252e/admin"), Err(PathError::DoubleEncoded));
        assert_eq!(decoded("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(decoded("/a%2"), Err(PathError::BadEscape));
        assert_eq!(decoded("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn forwards_a_reencoded_path_that_decodes_to_the_routed_one() {
        let path = normalize("/caf%C3%A9/a%20b/100%25off").ok();
        let path = path.as_ref();
        assert_eq!(path.map(|p| p.decoded.as_ref()), Some("/café/a b/100%off"));
        assert_eq!(
            path.map(|p| p.encoded.as_ref()),
            Some("/caf%C3%A9/a%20b/100%25off")
        );
    }

    #[test]
    fn normalization_is_idempotent_on_its_own_output() {
        for raw in ["/a/./b/../c//d/", "/x%20y/%7Euser", "/caf%C3%A9", "/a/b/.."] {
            let Ok(once) = normalize(raw) else {
                panic!("{raw} rejected")
            };
            assert_eq!(normalize(&once.encoded), Ok(once.clone()), "{raw}");
        }
    }
}
