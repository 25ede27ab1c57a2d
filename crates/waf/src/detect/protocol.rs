//! Protocol anomalies and encoding evasions.
//!
//! Request smuggling needs two framings (`Content-Length` and `Transfer-Encoding`) or two
//! copies of one; header injection needs a CR or LF inside a value. The gateway's HTTP parser
//! (hyper) rejects most malformed framing before we run, so these rules are the second line
//! for what a lenient parser let through, and the first for other users of this crate. The
//! evasion rules score what the decoding pipeline had to undo: no legitimate client encodes a
//! NUL, an overlong `.` or an IIS `%u` escape.

use crate::decode::Evasions;

use super::{Detector, Hit, Rule, Severity};

pub static AMBIGUOUS_FRAMING: Rule = Rule {
    id: 921110,
    detector: Detector::Protocol,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Request smuggling: both Content-Length and Transfer-Encoding",
};

pub static DUPLICATE_CRITICAL_HEADER: Rule = Rule {
    id: 921120,
    detector: Detector::Protocol,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Request smuggling: a framing or routing header appears twice",
};

pub static INVALID_HEADER_NAME: Rule = Rule {
    id: 920100,
    detector: Detector::Protocol,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Protocol: a header name holds bytes outside the token alphabet",
};

pub static HEADER_INJECTION: Rule = Rule {
    id: 921130,
    detector: Detector::Protocol,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Header injection: a CR or LF followed by a header line inside a value",
};

pub static XML_ENTITY: Rule = Rule {
    id: 921200,
    detector: Detector::Protocol,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XML external entity: the body's DOCTYPE declares entities",
};

pub static NUL_BYTE: Rule = Rule {
    id: 920270,
    detector: Detector::Evasion,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Evasion: a NUL byte in a value",
};

pub static OVERLONG_UTF8: Rule = Rule {
    id: 920250,
    detector: Detector::Evasion,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Evasion: overlong UTF-8 encoding",
};

pub static PERCENT_U: Rule = Rule {
    id: 920260,
    detector: Detector::Evasion,
    severity: Severity::Error,
    paranoia: 1,
    description: "Evasion: IIS %u encoding",
};

pub static FULLWIDTH: Rule = Rule {
    id: 920261,
    detector: Detector::Evasion,
    severity: Severity::Warning,
    paranoia: 2,
    description: "Evasion: fullwidth Unicode forms of ASCII",
};

pub static MULTIPLE_ENCODING: Rule = Rule {
    id: 920230,
    detector: Detector::Evasion,
    severity: Severity::Warning,
    paranoia: 2,
    description: "Evasion: a value percent-encoded more than once",
};

pub static INVALID_UTF8: Rule = Rule {
    id: 920251,
    detector: Detector::Evasion,
    severity: Severity::Warning,
    paranoia: 3,
    description: "Protocol: a value that is not valid UTF-8",
};

pub static RULES: &[&Rule] = &[
    &AMBIGUOUS_FRAMING,
    &DUPLICATE_CRITICAL_HEADER,
    &INVALID_HEADER_NAME,
    &HEADER_INJECTION,
    &XML_ENTITY,
    &NUL_BYTE,
    &OVERLONG_UTF8,
    &PERCENT_U,
    &FULLWIDTH,
    &MULTIPLE_ENCODING,
    &INVALID_UTF8,
];

/// Headers that decide framing or routing: two copies let two parsers disagree.
const CRITICAL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
    "authorization",
];

/// A protocol hit on a header, with the header's name as the field.
pub struct HeaderHit {
    pub header: String,
    pub hit: Hit,
}

/// Checks the request's header list.
pub fn check_headers<N: AsRef<str>, V: AsRef<[u8]>>(headers: &[(N, V)]) -> Vec<HeaderHit> {
    let mut found = Vec::new();
    let has = |wanted: &str| {
        headers
            .iter()
            .any(|(name, _)| name.as_ref().eq_ignore_ascii_case(wanted))
    };
    if has("content-length") && has("transfer-encoding") {
        found.push(HeaderHit {
            header: "Transfer-Encoding".to_owned(),
            hit: Hit::new(&AMBIGUOUS_FRAMING, 0..0, "content-length+transfer-encoding"),
        });
    }
    for critical in CRITICAL_HEADERS {
        let copies = headers
            .iter()
            .filter(|(name, _)| name.as_ref().eq_ignore_ascii_case(critical))
            .count();
        if copies > 1 {
            found.push(HeaderHit {
                header: (*critical).to_owned(),
                hit: Hit::new(
                    &DUPLICATE_CRITICAL_HEADER,
                    0..0,
                    format!("{critical} x{copies}"),
                ),
            });
        }
    }
    for (name, _) in headers {
        let name = name.as_ref();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            found.push(HeaderHit {
                header: name.escape_default().to_string(),
                hit: Hit::new(&INVALID_HEADER_NAME, 0..name.len(), "header-name"),
            });
        }
    }
    found
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Headers whose injection into a response or a forwarded request changes what a browser or
/// an upstream does. Prose lines like `Subject:` or `Regards:` are not among them.
const INJECTABLE_HEADERS: &[&str] = &[
    "location",
    "refresh",
    "set-cookie",
    "cookie",
    "content-type",
    "content-length",
    "transfer-encoding",
    "content-security-policy",
    "host",
    "via",
    "x-forwarded-",
    "x-real-ip",
    "access-control-",
    "x-xss-protection",
    "x-frame-options",
];

/// A CR or LF followed by a header line that changes behaviour (`Set-Cookie: x`,
/// `Location:`): HTTP response splitting or request-header injection.
pub fn detect_header_injection(form: &[u8], hits: &mut Vec<Hit>) {
    for at in memchr::memchr2_iter(b'\r', b'\n', form) {
        let line = &form[at + 1..];
        let line = line.strip_prefix(b"\n").unwrap_or(line);
        let name_len = line.iter().take_while(|&&byte| is_token_byte(byte)).count();
        let name = &line[..name_len];
        let injectable = INJECTABLE_HEADERS.iter().any(|known| {
            let known = known.as_bytes();
            if known.ends_with(b"-") {
                name.len() > known.len() && name[..known.len()].eq_ignore_ascii_case(known)
            } else {
                name.eq_ignore_ascii_case(known)
            }
        });
        let after = &line[name_len..];
        let colon = after.iter().position(|&byte| byte != b' ' && byte != b'\t');
        if injectable && colon.is_some_and(|at| after[at] == b':') {
            let end = (at + 1 + name_len + 1).min(form.len());
            let header = String::from_utf8_lossy(&line[..name_len]).into_owned();
            hits.push(Hit::new(&HEADER_INJECTION, at..end, header));
            return;
        }
    }
}

/// Hits for the evasions the decoding pipeline undid in one field.
pub fn evasion_hits(evasions: Evasions, len: usize, hits: &mut Vec<Hit>) {
    if evasions.is_empty() {
        // Nearly every field: skip building the table.
        return;
    }
    let table: [(Evasions, &'static Rule); 6] = [
        (Evasions::NUL, &NUL_BYTE),
        (Evasions::FULLWIDTH, &FULLWIDTH),
        (Evasions::OVERLONG_UTF8, &OVERLONG_UTF8),
        (Evasions::PERCENT_U, &PERCENT_U),
        (Evasions::MULTIPLE_ENCODING, &MULTIPLE_ENCODING),
        (Evasions::INVALID_UTF8, &INVALID_UTF8),
    ];
    for (flag, rule) in table {
        if evasions.contains(flag) {
            hits.push(Hit::new(rule, 0..len, flag.names().join(",")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_rules(headers: &[(&str, &str)]) -> Vec<u32> {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_bytes()))
            .collect();
        check_headers(&headers)
            .iter()
            .map(|found| found.hit.rule.id)
            .collect()
    }

    #[test]
    fn framing_and_duplicates_fire() {
        assert_eq!(
            header_rules(&[("Content-Length", "5"), ("Transfer-Encoding", "chunked")]),
            vec![921110]
        );
        assert_eq!(header_rules(&[("Host", "a"), ("host", "b")]), vec![921120]);
        assert_eq!(header_rules(&[("Bad Header", "x")]), vec![920100]);
        assert_eq!(
            header_rules(&[
                ("Host", "a"),
                ("Accept", "*/*"),
                ("Cookie", "a=b"),
                ("Cookie", "c=d")
            ]),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn header_injection_needs_a_header_line() {
        let mut hits = Vec::new();
        detect_header_injection(b"en\r\nSet-Cookie: admin=1", &mut hits);
        assert_eq!(hits.len(), 1);
        hits.clear();
        detect_header_injection(b"line one\nline two: with a colon", &mut hits);
        assert!(hits.is_empty(), "prose with a colon on a later line");
        detect_header_injection(b"first\nsecond", &mut hits);
        detect_header_injection(b"Dear team,\r\nRegards: Bob", &mut hits);
        assert!(hits.is_empty());
    }
}
