//! `multipart/form-data`, parsed strictly.
//!
//! Multipart is where WAF bypasses live: a part the WAF skips but the application reads
//! (a second `Content-Disposition`, an unquoted name with `;`, data before the first boundary,
//! a missing final boundary). So a complete body must be exactly: optional CRLFs, then parts
//! each opened by `--boundary CRLF`, headers (parsed by `httparse`), a blank line and content,
//! then `--boundary--` and nothing but whitespace. Anything else is refused.
//!
//! The boundary scan is hand-written because the maintained multipart crates are async stream
//! parsers for servers, not strict validators over a buffered body; the part headers go through
//! httparse.

use std::borrow::Cow;

use super::BodyError;
use crate::request::{Field, Location, Part};

/// Most headers one part may carry.
const MAX_PART_HEADERS: usize = 8;

/// Content types of file parts whose bytes are text an application may process; other files
/// are not inspected (their names still are).
fn is_text_upload(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|value| {
        let value = value.to_ascii_lowercase();
        value.starts_with("text/")
            || value.contains("json")
            || value.contains("xml")
            || value.starts_with("application/x-www-form-urlencoded")
    })
}

pub(super) fn parse<'a>(
    boundary: &[u8],
    body: &'a [u8],
    complete: bool,
    leaves: &mut Vec<Field<'a>>,
) -> Result<(), BodyError> {
    let delimiter = [b"--", boundary].concat();
    let finder = memchr::memmem::Finder::new(&delimiter);
    let start = finder
        .find(body)
        .ok_or(BodyError::Malformed("multipart without its boundary"))?;
    if complete
        && !body[..start]
            .iter()
            .all(|&byte| byte == b'\r' || byte == b'\n')
    {
        return Err(BodyError::Malformed(
            "data before the first multipart boundary",
        ));
    }
    let mut at = start + delimiter.len();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            let epilogue = &rest[2..];
            if complete && !epilogue.iter().all(u8::is_ascii_whitespace) {
                return Err(BodyError::Malformed(
                    "data after the final multipart boundary",
                ));
            }
            return Ok(());
        }
        let Some(rest) = rest.strip_prefix(b"\r\n") else {
            if !complete {
                return Ok(());
            }
            return Err(BodyError::Malformed(
                "multipart boundary not followed by CRLF",
            ));
        };
        let part_start = body.len() - rest.len();
        let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
        let (header_len, headers) = match httparse::parse_headers(rest, &mut headers) {
            Ok(httparse::Status::Complete((len, headers))) => (len, headers),
            Ok(httparse::Status::Partial) if !complete => return Ok(()),
            _ => return Err(BodyError::Malformed("invalid multipart part headers")),
        };
        let content_start = part_start + header_len;
        let (content_end, next) = match finder.find(&body[content_start..]) {
            Some(found) => {
                let end = content_start + found;
                let content_end = end
                    .checked_sub(2)
                    .filter(|&end| end >= content_start && &body[end..end + 2] == b"\r\n")
                    .ok_or(BodyError::Malformed(
                        "multipart boundary not preceded by CRLF",
                    ))?;
                (content_end, Some(end + delimiter.len()))
            }
            None if complete => {
                return Err(BodyError::Malformed("multipart without its final boundary"));
            }
            None => (body.len(), None),
        };
        add_part(headers, &body[content_start..content_end], leaves)?;
        match next {
            Some(next) => at = next,
            None => return Ok(()),
        }
    }
}

fn add_part<'a>(
    headers: &[httparse::Header<'_>],
    content: &'a [u8],
    leaves: &mut Vec<Field<'a>>,
) -> Result<(), BodyError> {
    let mut dispositions = headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("content-disposition"));
    let disposition = dispositions.next().ok_or(BodyError::Malformed(
        "multipart part without Content-Disposition",
    ))?;
    if dispositions.next().is_some() {
        return Err(BodyError::Malformed(
            "multipart part with two Content-Disposition headers",
        ));
    }
    let disposition = std::str::from_utf8(disposition.value)
        .map_err(|_| BodyError::Malformed("non-UTF-8 Content-Disposition"))?;
    let params = disposition_params(disposition)?;
    let name = params
        .iter()
        .find(|(key, _)| key == "name")
        .map(|(_, value)| value.clone())
        .ok_or(BodyError::Malformed("multipart part without a name"))?;
    let filename = params
        .iter()
        .find(|(key, _)| key == "filename")
        .map(|(_, value)| value.clone());
    let content_type = headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-type"))
        .and_then(|header| std::str::from_utf8(header.value).ok());
    leaves.push(Field {
        location: Location::Body,
        part: Part::Name,
        name: Cow::Owned(name.clone()),
        value: Cow::Owned(name.clone().into_bytes()),
    });
    if let Some(filename) = &filename {
        leaves.push(Field {
            location: Location::Body,
            part: Part::Value,
            name: Cow::Owned(format!("{name}.filename")),
            value: Cow::Owned(filename.clone().into_bytes()),
        });
    }
    if filename.is_none() || is_text_upload(content_type) {
        leaves.push(Field {
            location: Location::Body,
            part: Part::Value,
            name: Cow::Owned(name),
            value: Cow::Borrowed(content),
        });
    }
    Ok(())
}

/// `form-data; name="a"; filename="b.txt"`. Parameter values are quoted strings with `\`
/// escapes, or tokens; anything else is refused rather than guessed at.
fn disposition_params(value: &str) -> Result<Vec<(String, String)>, BodyError> {
    let malformed = BodyError::Malformed("invalid Content-Disposition");
    let (kind, mut rest) = value.split_once(';').unwrap_or((value, ""));
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(malformed);
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(params);
        }
        let (key, after) = rest.split_once('=').ok_or(malformed.clone())?;
        let key = key.trim().to_ascii_lowercase();
        if params.iter().any(|(seen, _)| *seen == key) {
            return Err(BodyError::Malformed(
                "repeated Content-Disposition parameter",
            ));
        }
        let after = after.trim_start();
        let (param, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut param = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((index, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            param.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(index + 1);
                        break;
                    }
                    _ => param.push(ch),
                }
            }
            let end = end.ok_or(malformed.clone())?;
            (param, &quoted[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            let token = after[..end].trim();
            if token.is_empty() || token.contains(['"', '\'', ' ']) {
                return Err(malformed);
            }
            (token.to_owned(), &after[end..])
        };
        params.push((key, param));
        let remaining = remaining.trim_start();
        rest = match remaining.strip_prefix(';') {
            Some(next) => next,
            None if remaining.is_empty() => "",
            None => return Err(malformed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_body(body: &str, complete: bool) -> Result<Vec<(Part, String, String)>, BodyError> {
        let mut leaves = Vec::new();
        parse(b"XyZ", body.as_bytes(), complete, &mut leaves)?;
        Ok(leaves
            .into_iter()
            .map(|field| {
                (
                    field.part,
                    field.name.into_owned(),
                    String::from_utf8_lossy(&field.value).into_owned(),
                )
            })
            .collect())
    }

    const VALID: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nO'Brien\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";

    #[test]
    fn valid_multipart_gives_names_values_and_filenames() {
        let values: Vec<_> = parse_body(VALID, true)
            .unwrap_or_default()
            .into_iter()
            .filter(|(part, _, _)| *part == Part::Value)
            .map(|(_, name, value)| (name, value))
            .collect();
        assert_eq!(
            values,
            vec![
                ("title".to_owned(), "O'Brien".to_owned()),
                ("file.filename".to_owned(), "../../a.txt".to_owned()),
                ("file".to_owned(), "hello".to_owned()),
            ]
        );
    }

    #[test]
    fn bypass_shapes_are_refused() {
        for (why, body) in [
            ("preamble", format!("junk\r\n{VALID}")),
            ("no final boundary", VALID.replace("--XyZ--\r\n", "")),
            ("epilogue", format!("{VALID}<script>")),
            (
                "two dispositions",
                VALID.replacen(
                    "Content-Disposition: form-data; name=\"title\"",
                    "Content-Disposition: form-data; name=\"title\"\r\nContent-Disposition: form-data; name=\"x\"",
                    1,
                ),
            ),
            ("unquoted name with a quote", VALID.replacen("name=\"title\"", "name=ti\"tle", 1)),
            ("repeated name", VALID.replacen("name=\"title\"", "name=\"title\"; name=\"x\"", 1)),
            ("no disposition", VALID.replacen("Content-Disposition: form-data; name=\"title\"", "X-A: b", 1)),
            ("LF only", VALID.replace("\r\n", "\n")),
        ] {
            assert!(parse_body(&body, true).is_err(), "{why} accepted");
        }
    }

    #[test]
    fn a_prefix_is_read_as_far_as_it_goes() {
        let prefix = &VALID[..VALID.find("hello").unwrap_or(0) + 3];
        let values = parse_body(prefix, false).unwrap_or_default();
        assert!(values.iter().any(|(_, _, value)| value == "O'Brien"));
        assert!(values.iter().any(|(_, _, value)| value == "hel"));
    }
}
