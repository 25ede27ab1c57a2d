//! Cross-site scripting: an HTML5 tokenizer run from every state a value can land in.
//!
//! libinjection's XSS detector (through `libinjectionrs`) tokenizes the input as HTML5 does,
//! starting in the data state and inside unquoted, single-, double- and back-quoted attribute
//! values, and reports tags, attributes and URLs that execute script: `<script>`, event
//! handlers, `javascript:`/`vbscript:`/`data:` URLs, SVG and MathML vectors, and the parser
//! quirks (`<x '="foo">` comments, `<!`, `<?`) that hide them.
//!
//! Our rules cover what a tokenizer of markup cannot see: values that break out of a JavaScript
//! string into a call (`';alert(1)//`), URL schemes split by the tabs and newlines browsers
//! skip, and DOM sinks named in a payload. They run on the lowercase form, with the `regex`
//! crate (finite automata, linear time).

use std::sync::LazyLock;

use libinjectionrs::XssDetector;
use regex::bytes::Regex;

use super::{Detector, Hit, Rule, Severity};

pub static LIBINJECTION: Rule = Rule {
    id: 941100,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XSS: HTML5 tokenization finds a script-executing tag, attribute or URL",
};

pub static EVENT_HANDLER: Rule = Rule {
    id: 941120,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XSS: an event-handler attribute after a tag or a quote",
};

pub static SCRIPT_URL: Rule = Rule {
    id: 941170,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XSS: a javascript:, vbscript: or scriptable data: URL",
};

pub static SCRIPT_BREAKOUT: Rule = Rule {
    id: 941180,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XSS: a quote or tag closes its context and a script call follows",
};

pub static DOM_SINK: Rule = Rule {
    id: 941190,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 2,
    description: "XSS: a DOM sink or script API named in the value",
};

pub static RULES: &[&Rule] = &[
    &LIBINJECTION,
    &EVENT_HANDLER,
    &SCRIPT_URL,
    &SCRIPT_BREAKOUT,
    &DOM_SINK,
];

/// `(regex, rule)` pairs over the lowercase form. Each pattern is anchored to markup or script
/// syntax, so that prose mentioning "javascript" or "onload" passes.
static PATTERNS: LazyLock<Vec<(Regex, &'static Rule)>> = LazyLock::new(|| {
    let table: [(&str, &'static Rule); 4] = [
        (
            r#"(?:<[a-z!?/][^>]*?|["'`]|^)[\s/]*on[a-z]{3,40}\s*="#,
            &EVENT_HANDLER,
        ),
        (
            r#"(?:^|[\s"'`=(,<:;])(?:java|vb|live)script:\s*(?:[a-z_$][\w$.]*\s*[(`=\[]|//|/\*|['"{%\\<]|$)|(?:^|[\s"'`=(])data:[^,]{0,100}?(?:text/html|image/svg\+xml|[a-z/+-]*script)"#,
            &SCRIPT_URL,
        ),
        (
            r#"(?:["'`]|</[a-z]+>)\s*(?:[;,)+\-*/|&]|\)\s*;?)\s*(?:alert|prompt|confirm|eval|fetch|import|settimeout|setinterval|function|document\.|window\.|top\[|self\[|this\[|constructor)\s*[(`.\[]"#,
            &SCRIPT_BREAKOUT,
        ),
        (
            r"document\s*\.\s*(?:cookie|domain|write|location)|window\s*\.\s*(?:location|name|open)|\.innerhtml|\.outerhtml|fromcharcode|\bsrcdoc\s*=|-moz-binding|expression\s*\(",
            &DOM_SINK,
        ),
    ];
    table
        .into_iter()
        .filter_map(|(pattern, rule)| Some((Regex::new(pattern).ok()?, rule)))
        .collect()
});

/// Reports XSS in one decoded form.
pub fn detect(form: &[u8], hits: &mut Vec<Hit>) {
    if !may_hold_markup(form) {
        return;
    }
    if XssDetector::new().detect(form).is_injection() {
        hits.push(Hit::new(&LIBINJECTION, 0..form.len(), "html5"));
    }
    // Browsers drop tabs, newlines and NULs inside a URL scheme (`java\tscript:`); fold them
    // out, and case, before the patterns run. Removing bytes shifts spans, so report spans in
    // the folded text only when nothing was removed.
    let folded: Vec<u8> = form
        .iter()
        .filter(|&&byte| !matches!(byte, b'\t' | b'\n' | b'\r'))
        .map(u8::to_ascii_lowercase)
        .collect();
    let shifted = folded.len() != form.len();
    for (regex, rule) in PATTERNS.iter() {
        if hits.iter().any(|hit| std::ptr::eq(hit.rule, *rule)) {
            continue;
        }
        if let Some(found) = regex.find(&folded) {
            let span = if shifted {
                0..form.len()
            } else {
                found.range()
            };
            let fingerprint = String::from_utf8_lossy(found.as_bytes()).into_owned();
            hits.push(Hit::new(rule, span, fingerprint));
        }
    }
}

/// XSS needs markup, an attribute, a URL scheme or a script call: a value without any of
/// `< > = : ( ) \``, quotes or `.` cannot hold one. This skips the tokenizer for most values.
fn may_hold_markup(form: &[u8]) -> bool {
    form.iter().any(|byte| {
        matches!(
            byte,
            b'<' | b'>' | b'=' | b':' | b'(' | b'`' | b'"' | b'\'' | b'.' | b'['
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_ids(input: &str) -> Vec<u32> {
        let mut hits = Vec::new();
        detect(input.as_bytes(), &mut hits);
        hits.iter().map(|hit| hit.rule.id).collect()
    }

    #[test]
    fn vectors_fire() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\" onmouseover=\"alert(1)",
            "javascript:alert(document.domain)",
            "java\tscript:alert(1)",
            "<svg/onload=alert(1)>",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
            "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
            "';alert(1)//",
            "</script><script>alert(1)</script>",
        ] {
            let ids = rule_ids(attack);
            assert!(
                ids.iter()
                    .any(|id| super::super::rule(*id).is_some_and(|rule| rule.paranoia == 1)),
                "{attack}: {ids:?}"
            );
        }
    }

    #[test]
    fn prose_and_plain_markup_words_pass() {
        for benign in [
            "I love JavaScript: it runs everywhere",
            "turn the light on=off switch",
            "x < y and y > z",
            "Meet me at 10:30; bring the onion rings.",
            "<b>bold</b> and <i>italic</i>",
            "It's O'Brien's \"special\" offer",
            "see https://example.com/a?b=c",
        ] {
            assert_eq!(rule_ids(benign), Vec::<u32>::new(), "{benign}");
        }
    }
}
