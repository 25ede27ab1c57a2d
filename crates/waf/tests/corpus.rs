//! The engine on libinjection's sample data, at the default settings (paranoia 1, threshold 5).
//!
//! Each line is URL-encoded once, as libinjection's own test driver reads it; it reaches the
//! engine as a query argument would, decoded once by the form parser.

use std::path::Path;

use portcullis_waf::{Engine, Field, Location, RequestParts};

fn corpus_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/libinjection"
    ))
}

fn lines(prefix: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read(&file).unwrap_or_default();
        for line in text.split(|&byte| byte == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let spaced: Vec<u8> = line
                .iter()
                .map(|&byte| if byte == b'+' { b' ' } else { byte })
                .collect();
            lines.push(percent_encoding::percent_decode(&spaced).collect());
        }
    }
    assert!(!lines.is_empty(), "no corpus lines for {prefix}");
    lines
}

/// Share of `inputs` the default engine calls an attack, with up to five examples of the
/// other kind for the failure message.
fn attack_rate(inputs: &[Vec<u8>], want_attack: bool) -> (f64, Vec<String>) {
    let engine = Engine::default();
    let mut attacks = 0;
    let mut examples = Vec::new();
    for input in inputs {
        let mut parts = RequestParts::new();
        parts.add_body_leaves(vec![Field::new(Location::Query, "q", input.as_slice())]);
        let attack = engine.inspect(&parts).is_attack();
        attacks += usize::from(attack);
        if attack != want_attack && std::env::var_os("CORPUS_VERBOSE").is_some() {
            eprintln!(
                "{:?} {}",
                engine.inspect(&parts).rule_ids(),
                String::from_utf8_lossy(input)
            );
        }
        if attack != want_attack && examples.len() < 5 {
            examples.push(String::from_utf8_lossy(input).chars().take(100).collect());
        }
    }
    (attacks as f64 / inputs.len() as f64, examples)
}

#[test]
fn sqli_samples_are_detected() {
    let (rate, missed) = attack_rate(&lines("sqli-"), true);
    println!("libinjection SQLi samples detected: {:.2}%", rate * 100.0);
    assert!(
        rate >= 0.99,
        "{:.2}% detected; missed e.g. {missed:#?}",
        rate * 100.0
    );
}

#[test]
fn xss_samples_are_detected() {
    let (rate, missed) = attack_rate(&lines("xss-"), true);
    println!("libinjection XSS samples detected: {:.2}%", rate * 100.0);
    assert!(
        rate >= 0.99,
        "{:.2}% detected; missed e.g. {missed:#?}",
        rate * 100.0
    );
}

#[test]
fn false_positive_samples_mostly_pass() {
    let (rate, flagged) = attack_rate(&lines("false_positives"), false);
    println!("libinjection false positives flagged: {:.2}%", rate * 100.0);
    assert!(
        rate < 0.02,
        "{:.2}% flagged, e.g. {flagged:#?}",
        rate * 100.0
    );
}
