//! XML bodies: text nodes, CDATA sections and attribute values are leaves, named by element path
//! (`order/item@sku`). A `<!DOCTYPE>` that declares entities is an XML external entity (XXE) or
//! entity-expansion attempt and is reported as an anomaly: no API request needs one.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::{BodyError, ParsedBody};
use crate::detect::Hit;
use crate::detect::protocol::XML_ENTITY;
use crate::request::{Field, Location, Part};

/// Deepest element nesting we follow; deeper is a parser-exhaustion attempt.
const MAX_DEPTH: usize = 256;

pub(super) fn parse<'a>(
    body: &'a [u8],
    complete: bool,
    parsed: &mut ParsedBody<'a>,
) -> Result<(), BodyError> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().check_end_names = complete;
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(_) if !complete => break,
            Err(_) => return Err(BodyError::Malformed("invalid XML")),
        };
        match event {
            Event::Start(start) => {
                flush(&mut text, &path, parsed);
                path.push(String::from_utf8_lossy(start.name().as_ref()).into_owned());
                if path.len() > MAX_DEPTH {
                    return Err(BodyError::Malformed("XML nested too deeply"));
                }
                attributes(&start, &path, parsed, complete)?;
            }
            Event::Empty(start) => {
                flush(&mut text, &path, parsed);
                path.push(String::from_utf8_lossy(start.name().as_ref()).into_owned());
                attributes(&start, &path, parsed, complete)?;
                path.pop();
            }
            Event::End(_) => {
                flush(&mut text, &path, parsed);
                path.pop();
            }
            Event::Text(content) => text.push_str(&String::from_utf8_lossy(&content)),
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(ch)) => Some(ch),
                    _ => match reference.as_ref() {
                        b"lt" => Some('<'),
                        b"gt" => Some('>'),
                        b"amp" => Some('&'),
                        b"apos" => Some('\''),
                        b"quot" => Some('"'),
                        _ => None,
                    },
                };
                match resolved {
                    Some(ch) => text.push(ch),
                    None => {
                        text.push('&');
                        text.push_str(&String::from_utf8_lossy(&reference));
                        text.push(';');
                    }
                }
            }
            Event::CData(data) => {
                flush(&mut text, &path, parsed);
                text.push_str(&String::from_utf8_lossy(&data));
                flush(&mut text, &path, parsed);
            }
            Event::DocType(doctype) => {
                let declaration = String::from_utf8_lossy(&doctype).into_owned();
                if declaration.contains("<!ENTITY") {
                    let end = declaration.len().min(120);
                    let excerpt = declaration.get(..end).unwrap_or("").to_owned();
                    parsed.anomalies.push((
                        "!DOCTYPE".to_owned(),
                        Hit::new(&XML_ENTITY, 0..declaration.len(), excerpt),
                    ));
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    flush(&mut text, &path, parsed);
    if complete && !path.is_empty() {
        return Err(BodyError::Malformed("unclosed XML element"));
    }
    Ok(())
}

fn element_path(path: &[String]) -> String {
    path.join("/")
}

fn flush(text: &mut String, path: &[String], parsed: &mut ParsedBody<'_>) {
    if !text.trim().is_empty() {
        parsed.leaves.push(Field {
            location: Location::Body,
            part: Part::Value,
            name: Cow::Owned(element_path(path)),
            value: Cow::Owned(std::mem::take(text).into_bytes()),
        });
    }
    text.clear();
}

fn attributes(
    start: &BytesStart<'_>,
    path: &[String],
    parsed: &mut ParsedBody<'_>,
    complete: bool,
) -> Result<(), BodyError> {
    for attribute in start.attributes() {
        let attribute = match attribute {
            Ok(attribute) => attribute,
            Err(_) if !complete => break,
            Err(_) => return Err(BodyError::Malformed("invalid XML attribute")),
        };
        let value = attribute
            .unescape_value()
            .map(Cow::into_owned)
            .unwrap_or_else(|_| String::from_utf8_lossy(&attribute.value).into_owned());
        let name = format!(
            "{}@{}",
            element_path(path),
            String::from_utf8_lossy(attribute.key.as_ref())
        );
        parsed.leaves.push(Field {
            location: Location::Body,
            part: Part::Value,
            name: Cow::Owned(name),
            value: Cow::Owned(value.into_bytes()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(body: &str) -> Vec<(String, String)> {
        let mut parsed = ParsedBody::default();
        parse(body.as_bytes(), true, &mut parsed)
            .map(|()| {
                parsed
                    .leaves
                    .into_iter()
                    .map(|field| {
                        (
                            field.name.into_owned(),
                            String::from_utf8_lossy(&field.value).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn text_cdata_and_attributes_are_leaves() {
        assert_eq!(
            leaves(
                r#"<?xml version="1.0"?><order id="7&amp;8"><note>a &lt;b&gt; c</note><raw><![CDATA[<x>]]></raw></order>"#
            ),
            vec![
                ("order@id".to_owned(), "7&8".to_owned()),
                ("order/note".to_owned(), "a <b> c".to_owned()),
                ("order/raw".to_owned(), "<x>".to_owned()),
            ]
        );
    }

    #[test]
    fn entity_declarations_are_anomalies() {
        let mut parsed = ParsedBody::default();
        let body = br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert!(parse(body, true, &mut parsed).is_ok());
        assert_eq!(parsed.anomalies.len(), 1);
    }

    #[test]
    fn malformed_xml_is_refused() {
        let mut parsed = ParsedBody::default();
        assert!(parse(b"<a><b></a>", true, &mut parsed).is_err());
        assert!(parse(b"<a>", true, &mut parsed).is_err());
    }
}
