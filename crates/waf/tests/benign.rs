//! Benign traffic at the default settings (paranoia 1, threshold 5): English prose from the
//! documentation Debian packages install, and realistic form and JSON requests.
#![expect(
    clippy::expect_used,
    reason = "a malformed fixture should fail the test loudly"
)]

use std::io::Read;
use std::path::{Path, PathBuf};

use portcullis_waf::body::{self, BodyKind};
use portcullis_waf::{Engine, EngineConfig, Exclusion, Field, Location, RequestParts};

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

/// A small deterministic generator (xorshift), so the requests are the same on every run.
struct Pick(u64);

impl Pick {
    fn one<'a>(&mut self, options: &[&'a str]) -> &'a str {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        options[(self.0 % options.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &[
    "Siobhán O'Brien",
    "D'Angelo Russell",
    "Jean-Luc Picard",
    "Zoë Saldaña",
    "Mary-Kate O'Neil",
    "José Álvarez",
    "Björk Guðmundsdóttir",
    "Nguyễn Văn An",
    "李小龙",
    "Renée D'Souza",
    "Tom & Jerry Ltd.",
    "Dr. Martin L. King Jr.",
];
const MESSAGES: &[&str] = &[
    "Please select a plan that fits your team and update your billing details.",
    "I'd like to drop my subscription and delete my old photos, then sync the rest.",
    "Can you union the two lists and select the best 5 items for Friday?",
    "Our cat videos & dog videos are 50% off; order by Monday!",
    "The meeting is at 10:30 (room 4B) -- bring your laptop.",
    "Run `ls -la` in the project folder and paste the output here.",
    "My password reset link says \"expired\" -- can you send a new one?",
    "We tried 1 or 2 options, but neither worked; is there a 3rd?",
    "Where is the 'Export' button? It used to be under Settings > Data.",
    "Thanks!!! This is *exactly* what I needed :)",
    "Order #12345 arrived damaged; the box said \"fragile\" & \"this side up\".",
    "Is it true that 2 > 1 and 3 < 4? Asking for my kid's homework.",
    "Use the -v flag for verbose output, or --help to see all options.",
    "The file is at C:\\Users\\anna\\Documents\\report.docx if you need it.",
    "Ping me when the build is green; I'll merge afterwards.",
    "Select all, copy, then paste into the \"Notes\" field.",
    "## Changelog\n- Fixed login bug\n- Added **dark mode**\n- See [docs](https://example.com/docs)",
    "```python\nfor item in items:\n    print(item.name)\n```",
    "```js\nconst total = prices.reduce((sum, p) => sum + p, 0);\n```",
    "I sleep(ish) 6 hours; the doctor said update my routine and drop caffeine.",
    "Where's the script for tomorrow's presentation?",
    "Alert: the server room temperature is 30°C; please check the A/C.",
    "Tim O'Reilly's book 'What's the Future' is on the shelf.",
    "Shipping to: 12 O'Connell St., Dublin 1; phone +353 1 234 5678",
];
const EMAILS: &[&str] = &[
    "anna.o'brien@example.com",
    "bob+news@example.org",
    "li.wei@example.cn",
];
const URLS: &[&str] = &[
    "https://example.com/search?q=union+station&sort=asc",
    "https://shop.example/p/1234-red-shoes?ref=home#reviews",
    "http://localhost:3000/api/v1/users/42",
];
const RICH_TEXT: &[&str] = &[
    "<p>Hello <strong>world</strong>, see <a href=\"https://example.com\">this</a>.</p>",
    "<ul><li>One</li><li>Two</li></ul><p><em>Done</em></p>",
    "<h2>Notes</h2><p>Use <code>select</code> to choose &amp; <br> continue.</p>",
];

fn realistic_requests(count: usize) -> Vec<(BodyKind, String)> {
    let mut pick = Pick(0x9E37_79B9_7F4A_7C15);
    let mut requests = Vec::with_capacity(count);
    for index in 0..count {
        let name = pick.one(NAMES);
        let message = pick.one(MESSAGES);
        let email = pick.one(EMAILS);
        let url = pick.one(URLS);
        let rich = pick.one(RICH_TEXT);
        if index % 2 == 0 {
            let body: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("name", name)
                .append_pair("email", email)
                .append_pair("message", message)
                .append_pair("website", url)
                .append_pair("content_html", rich)
                .append_pair("csrf_token", "q1w2e3r4t5y6u7i8o9p0")
                .finish();
            requests.push((BodyKind::UrlEncoded, body));
        } else {
            let body = serde_json::json!({
                "user": {"name": name, "email": email, "tags": ["vip", "o'reilly fan"]},
                "comment": {"text": message, "content_html": rich, "links": [url]},
                "quantity": 3,
                "gift": false,
            });
            requests.push((BodyKind::Json, body.to_string()));
        }
    }
    requests
}

#[test]
fn realistic_form_and_json_requests_pass() {
    // The rich-text field is where a route allows markup, as an operator would configure it.
    let engine = Engine::new(EngineConfig {
        exclusions: vec![Exclusion {
            rule_ids: vec![941100, 941120, 941170, 941180, 941190, 941390, 941370],
            location: Some(Location::Body),
            field: Some("*content_html".to_owned()),
        }],
        ..EngineConfig::default()
    });
    let requests = realistic_requests(5_000);
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
