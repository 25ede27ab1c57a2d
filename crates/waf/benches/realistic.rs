//! Realistic form and JSON requests, varied from one to the next: names with apostrophes, prose
//! that uses SQL and shell words, Markdown, code, e-mail addresses, URLs and rich text. The
//! benign-traffic test checks that they pass; the latency bench times the engine on them. Shared
//! by both (`#[path]` from `tests/benign.rs`), so the bench measures the traffic the test checks.

use portcullis_waf::body::BodyKind;
use portcullis_waf::{EngineConfig, Exclusion, Location};

/// The engine's configuration for these requests: the rich-text field is where a route allows
/// markup, as an operator would configure it.
pub(crate) fn engine_config() -> EngineConfig {
    EngineConfig {
        exclusions: vec![Exclusion {
            rule_ids: vec![941100, 941120, 941170, 941180, 941190, 941390, 941370],
            location: Some(Location::Body),
            field: Some("*content_html".to_owned()),
        }],
        ..EngineConfig::default()
    }
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

/// `count` requests, alternately a form and a JSON body, the same on every run.
pub(crate) fn requests(count: usize) -> Vec<(BodyKind, String)> {
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
