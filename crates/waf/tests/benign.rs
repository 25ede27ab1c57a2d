//! Benign traffic at the default settings (paranoia 1, threshold 5): English prose from the
//! documentation Debian packages install, and realistic form and JSON requests.
#![expect(
    clippy::expect_used,
    reason = "a malformed fixture should fail the test loudly"
)]

use std::io::Read;
use std::path::{Path, PathBuf};

use portcullis_waf::body;
use portcullis_waf::{Engine, Field, Location, RequestParts};

#[path = "../benches/realistic.rs"]
mod realistic;

/// Most sentences read, to keep the test fast.
const MAX_SENTENCES: usize = 30_000;

fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_lowercase();
            if path.is_dir() {
                dirs.push(path);
            } else if name.starts_with("readme")
                || name.starts_with("news")
                || name == "copyright"
                || name.ends_with(".txt")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read_text(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    if path.extension().is_some_and(|ext| ext == "gz") {
        let mut text = String::new();
        let _ = flate2::read::GzDecoder::new(bytes.as_slice()).read_to_string(&mut text);
        text
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Sentences of prose: 6 to 60 words, mostly alphabetic words, none of the characters that mark
/// code, commands or markup.
fn sentences(text: &str, out: &mut Vec<String>) {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for sentence in joined.split_inclusive(". ") {
        let sentence = sentence.trim();
        let words: Vec<&str> = sentence.split(' ').collect();
        if !(6..=60).contains(&words.len())
            || sentence.contains([
                '{', '}', '<', '>', '$', '=', ';', '|', '`', '\\', '@', '#', '*', '_',
            ])
        {
            continue;
        }
        let alphabetic = words
            .iter()
            .filter(|word| {
                word.trim_matches(|c: char| c.is_ascii_punctuation())
                    .chars()
                    .all(char::is_alphabetic)
            })
            .count();
        if alphabetic * 10 >= words.len() * 9
            && sentence.chars().next().is_some_and(char::is_uppercase)
        {
            out.push(sentence.to_owned());
        }
    }
}

fn blocked(engine: &Engine, fields: Vec<Field<'_>>) -> Option<Vec<u32>> {
    let mut parts = RequestParts::new();
    parts.add_body_leaves(fields);
    let verdict = engine.inspect(&parts);
    verdict.is_attack().then(|| verdict.rule_ids())
}

#[test]
fn english_prose_from_debian_documentation_passes() {
    let mut prose = Vec::new();
    for file in doc_files(Path::new("/usr/share/doc")) {
        sentences(&read_text(&file), &mut prose);
        if prose.len() >= MAX_SENTENCES {
            break;
        }
    }
    prose.sort();
    prose.dedup();
    if prose.len() < 1_000 {
        let message = format!("only {} sentences under /usr/share/doc", prose.len());
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("SKIPPED: {message}; Debian's documentation is not installed here");
        return;
    }
    let engine = Engine::default();
    let flagged: Vec<(&String, Vec<u32>)> = prose
        .iter()
        .filter_map(|sentence| {
            blocked(
                &engine,
                vec![Field::new(Location::Body, "message", sentence.as_bytes())],
            )
            .map(|rules| (sentence, rules))
        })
        .collect();
    let rate = flagged.len() as f64 / prose.len() as f64;
    println!(
        "English sentences blocked: {}/{} = {:.3}%",
        flagged.len(),
        prose.len(),
        rate * 100.0
    );
    for (sentence, rules) in &flagged {
        println!("  {rules:?} {sentence}");
    }
    assert!(rate <= 0.001, "{:.3}% of sentences blocked", rate * 100.0);
}

#[test]
fn realistic_form_and_json_requests_pass() {
    let engine = Engine::new(realistic::engine_config());
    let requests = realistic::requests(5_000);
    let mut flagged = Vec::new();
    for (kind, body) in &requests {
        let parsed = body::parse(kind, body.as_bytes(), true).expect("well-formed body");
        if let Some(rules) = blocked(&engine, parsed.leaves) {
            flagged.push((rules, body));
        }
    }
    let rate = flagged.len() as f64 / requests.len() as f64;
    println!(
        "realistic requests blocked: {}/{} = {:.2}%",
        flagged.len(),
        requests.len(),
        rate * 100.0
    );
    for (rules, body) in flagged.iter().take(10) {
        println!("  {rules:?} {body}");
    }
    assert!(
        rate <= 0.005,
        "{:.2}% of realistic requests blocked",
        rate * 100.0
    );
}
