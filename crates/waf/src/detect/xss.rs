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
use libinjectionrs::xss::Html5Flags;

use super::{ByteSet, Detector, Form, Hit, PatternTable, Rule, Severity, is_pattern_space};

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
    paranoia: 1,
    description: "XSS: a DOM sink or script API named in the value (document.cookie, window.location)",
};

pub static SCRIPT_CALL: Rule = Rule {
    id: 941390,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XSS: a call of a script function attackers use to prove execution (alert(), eval())",
};

pub static OBFUSCATED_SCRIPT: Rule = Rule {
    id: 941370,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XSS: obfuscated script (JSFuck, bracket access to globals, template-literal calls, client-side template injection)",
};

pub static UTF7_MARKUP: Rule = Rule {
    id: 941350,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 1,
    description: "XSS: UTF-7 encoded markup (+ADw-)",
};

pub static RULES: &[&Rule] = &[
    &LIBINJECTION,
    &EVENT_HANDLER,
    &SCRIPT_URL,
    &SCRIPT_BREAKOUT,
    &DOM_SINK,
    &SCRIPT_CALL,
    &OBFUSCATED_SCRIPT,
    &UTF7_MARKUP,
];

/// `(regex, rule)` pairs over the lowercase form. Each pattern is anchored to markup or script
/// syntax, so that prose mentioning "javascript" or "onload" passes.
static PATTERNS: LazyLock<PatternTable> = LazyLock::new(|| {
    let table: [(&str, &'static Rule); 7] = [
        (
            r#"(?:<[a-z!?/][^>]*?|["'`]|^)[\s/]*on[a-z]{3,40}\s*="#,
            &EVENT_HANDLER,
        ),
        (
            r#"(?:^|[\s"'`=(,<:;])(?:java|vb|live)script:\s*(?:[a-z_$][\w$.]*\s*[(`=\[]|[^\sa-z0-9]|$)|(?:^|[\s"'`=(])data:[^,]{0,100}?(?:text/html|image/svg\+xml|[a-z/+-]*script)"#,
            &SCRIPT_URL,
        ),
        (
            r#"(?:["'`]|</[a-z]+>)\s*(?:[;,)+\-*/|&]|\)\s*;?)\s*(?:alert|prompt|confirm|eval|fetch|import|settimeout|setinterval|function|document\.|window\.|top\[|self\[|this\[|constructor)\s*[(`.\[]"#,
            &SCRIPT_BREAKOUT,
        ),
        (
            r"\bdocument\s*(?:/\*[^*]{0,64}\*/\s*)*\.\s*(?:/\*[^*]{0,64}\*/\s*)*(?:cookie|domain|write|location)\b|\bwindow\s*\.\s*location\b|\.\s*(?:inner|outer)html\s*=|fromcharcode\s*\(|\bsrcdoc\s*=|-moz-binding\s*:|\bexpression\s*\(",
            &DOM_SINK,
        ),
        (
            r"\b(?:eval|settimeout|setinterval|alert|prompt|confirm|atob|btoa|execscript|importscripts)\([^)]{0,200}\)|\bnew\s+function\s*\(",
            &SCRIPT_CALL,
        ),
        (
            r#"!\[\]|\[\]\s*\+|\+\s*!\s*\+?\s*\[|\b(?:window|self|top|parent|frames|globalthis|this|document)\s*(?:/\*[^*]{0,64}\*/\s*)*\[\s*(?:/\*[^*]{0,64}\*/\s*)*["'`]|\$\{\s*(?:alert|eval|prompt|confirm)\s*\}|\.\s*(?:call|apply)\s*`|\{\{[^}]{0,100}\bconstructor\b|\(\s*document\s*(?:/\*[^*]{0,64}\*/\s*)*\)\s*\["#,
            &OBFUSCATED_SCRIPT,
        ),
        (r"\+ad[w4]-", &UTF7_MARKUP),
    ];
    PatternTable::new(&table)
});

/// The states libinjection starts the tokenizer in, each with what a value needs to leave
/// it: markup needs a `<`; an attribute value needs its closing quote, or whitespace or `>` when
/// unquoted. A value without the terminator cannot break out of that state, so a hit there is
/// about the value as an attribute (`style=color:red`), not an injection.
const START_STATES: [(Html5Flags, &str, ByteSet); 5] = [
    (Html5Flags::DataState, "html5:data", ByteSet::of(b"<")),
    (
        Html5Flags::ValueNoQuote,
        "html5:unquoted",
        ByteSet::of(b" \t\n\x0c\r>"),
    ),
    (
        Html5Flags::ValueSingleQuote,
        "html5:single-quoted",
        ByteSet::of(b"'"),
    ),
    (
        Html5Flags::ValueDoubleQuote,
        "html5:double-quoted",
        ByteSet::of(b"\""),
    ),
    (
        Html5Flags::ValueBackQuote,
        "html5:back-quoted",
        ByteSet::of(b"`"),
    ),
];

/// Reports XSS in one decoded form. `in_path` leaves out the rules about script APIs, which
/// documentation URLs name (`/javascript-manual/document.cookie`).
pub fn detect(form: &Form<'_>, in_path: bool, hits: &mut Vec<Hit>) {
    if !form.holds_any(ByteSet::of(b"<>=:(`\"'.[")) {
        // XSS needs markup, an attribute, a URL scheme or a script call: a value without any
        // of these bytes cannot hold one.
        return;
    }
    let bytes = form.bytes();
    // libinjection's XSS tokenizer reports only a tag, a comment or a doctype (each opened by
    // `<`) or an attribute's value (reached only through `=`), whatever its start state: a
    // value with neither byte skips its passes. `libinjection_needs_a_tag_or_an_attribute_value`
    // checks this on the XSS corpus.
    if form.holds_any(ByteSet::of(b"<="))
        && let Some((_, state, _)) = START_STATES.iter().find(|(flags, _, terminators)| {
            form.holds_any(*terminators) && XssDetector::is_xss(bytes, *flags)
        })
    {
        hits.push(Hit::new(&LIBINJECTION, 0..bytes.len(), *state));
    }
    if !may_match_pattern(form) {
        return;
    }
    // Browsers drop tabs, newlines and NULs inside a URL scheme (`java\tscript:`); fold them
    // out, and case, before the patterns run. Removing bytes shifts spans, so report spans in
    // the folded text only when nothing was removed.
    let mut folded = bytes.to_ascii_lowercase();
    if form.holds_any(SKIPPED_IN_SCHEMES) {
        folded.retain(|byte| !SKIPPED_IN_SCHEMES.contains(*byte));
    }
    let shifted = folded.len() != bytes.len();
    for (found, rule) in PATTERNS.matches(&folded) {
        if hits.iter().any(|hit| std::ptr::eq(hit.rule, rule))
            || in_path && (std::ptr::eq(rule, &DOM_SINK) || std::ptr::eq(rule, &SCRIPT_CALL))
        {
            continue;
        }
        let span = if shifted {
            0..bytes.len()
        } else {
            found.range()
        };
        let fingerprint = String::from_utf8_lossy(found.as_bytes()).into_owned();
        hits.push(Hit::new(rule, span, fingerprint));
    }
}

/// Bytes browsers skip inside a URL scheme.
const SKIPPED_IN_SCHEMES: ByteSet = ByteSet::of(b"\t\n\r");

/// What each of `PATTERNS` cannot match without, read at the byte it needs and the word
/// before that byte (after spaces, as the patterns' `\s*`):
/// - an event handler, `innerHTML=` and `srcdoc=`: a `=` after `on` and 3 to 40 more letters,
///   or after `html` or `srcdoc`;
/// - a script or `data:` URL and `-moz-binding:`: a `:` after `script`, `data` or `binding`;
/// - a script call, a DOM sink or a breakout into script: a `.` or `(` after one of
///   `SCRIPT_WORDS`, or a comment (`*` and `/`) between them;
/// - the obfuscated forms: `[`, `{` or a backtick; UTF-7: `+ad`.
///
/// Browsers drop tabs and newlines inside a scheme, which can join a word, so a value with
/// them always runs the patterns. Most values, URLs with a query and sentences with a
/// parenthesis among them, need none of this and skip the lowercase copy and the automaton;
/// `the_pattern_gate_passes_every_match` checks it on libinjection's samples.
fn may_match_pattern(form: &Form<'_>) -> bool {
    if form.holds_any(SKIPPED_IN_SCHEMES.union(ByteSet::of(b"[{`"))) {
        return true;
    }
    let bytes = form.bytes();
    let after_word = |delimiter: u8, is_known: &dyn Fn(&[u8]) -> bool| {
        form.holds(delimiter)
            && memchr::memchr_iter(delimiter, bytes).any(|at| is_known(word_before(&bytes[..at])))
    };
    after_word(b'=', &|word| {
        is_event_handler(word) || ends_with_any(word, &["html", "srcdoc"])
    }) || after_word(b':', &|word| {
        ends_with_any(word, &["script", "data", "binding"])
    }) || form.find_ignoring_ascii_case(b"+ad").is_some()
        || form.holds_any(ByteSet::of(b".("))
            && (form.holds(b'*') && form.holds(b'/')
                || after_word(b'.', &|word| ends_with_any(word, &SCRIPT_WORDS))
                || after_word(b'(', &|word| ends_with_any(word, &SCRIPT_WORDS)))
}

/// Whether `word` ends with `on` and 3 to 40 more letters, as an event handler's name does.
fn is_event_handler(word: &[u8]) -> bool {
    (3..=40.min(word.len().saturating_sub(2))).any(|rest| {
        let on = word.len() - rest - 2;
        word[on..on + 2].eq_ignore_ascii_case(b"on")
    })
}

/// Whether `word` ends with one of `suffixes`, ignoring ASCII case. By the end: `fromcharcode`
/// matches after other letters too (it has no `\b`), and so may the breakout's words.
fn ends_with_any(word: &[u8], suffixes: &[&str]) -> bool {
    let last = word.last().map(u8::to_ascii_lowercase);
    suffixes.iter().any(|suffix| {
        let suffix = suffix.as_bytes();
        last == suffix.last().copied()
            && word
                .len()
                .checked_sub(suffix.len())
                .is_some_and(|start| word[start..].eq_ignore_ascii_case(suffix))
    })
}

/// The words of the patterns that match with `.` or `(` and no other syntax: DOM objects, the
/// functions a call names, `function` of `new Function(`, and what a breakout out of a string
/// calls (`';fetch(`, `")constructor.`).
const SCRIPT_WORDS: [&str; 18] = [
    "document",
    "window",
    "fromcharcode",
    "expression",
    "eval",
    "settimeout",
    "setinterval",
    "alert",
    "prompt",
    "confirm",
    "atob",
    "btoa",
    "execscript",
    "importscripts",
    "function",
    "fetch",
    "import",
    "constructor",
];

/// The run of ASCII letters at the end of `text`, before any spaces (as the patterns' `\s`).
fn word_before(text: &[u8]) -> &[u8] {
    let end = text
        .iter()
        .rposition(|byte| !is_pattern_space(byte))
        .map_or(0, |at| at + 1);
    let start = text[..end]
        .iter()
        .rposition(|byte| !byte.is_ascii_alphabetic())
        .map_or(0, |at| at + 1);
    &text[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_ids(input: &str) -> Vec<u32> {
        super::super::rule_ids_of(|form, hits| detect(form, false, hits), input)
    }

    #[test]
    fn every_pattern_compiles() {
        assert!(PATTERNS.complete(7));
    }

    /// `may_match_pattern` never turns away a value one of `PATTERNS` matches: checked on
    /// every line of libinjection's XSS samples and false positives, and on each with its
    /// `(`, `=` and `:` taken out, and with `=`, `:`, `[`, `{`, backticks, `+` and the bytes
    /// browsers skip taken out: which leaves the rarer shapes the gate must still see. Hand
    /// shapes hold what the samples lack, and the narrowest match of each clause.
    #[test]
    fn the_pattern_gate_passes_every_match() {
        // The shapes that match with `.` alone, which the samples lack.
        let mut values: Vec<Vec<u8>> = [
            &b"window . location"[..],
            b"Document.Cookie",
            b"';alert.x",
            b"</b>,prompt.x",
            b"x')alert(1)",
            b"EVAL(x)",
            b"new Function (",
            b"String.fromCharCode (88)",
            b"xfromcharcode(88)",
            b"width: expression(x)",
            b"setTimeout(x)",
            b"document/**/.cookie",
            b"window \x0b. location",
            // The shapes each `=`, `:` and `+` clause stands for, at its narrowest.
            b"ONMOUSEOVER =1",
            b"onxyz=1",
            b"<b xonclick=x",
            b"x.innerHTML = 1",
            b"<iframe srcdoc=x>",
            b"-moz-binding : url(x)",
            b"JavaScript:alert",
            b" data:text/html,x",
            b"+ADw-script",
            b"';fetch(1)",
            b"\")constructor.x",
            b"'-import(x)",
        ]
        .map(<[u8]>::to_vec)
        .to_vec();
        let without = |line: &[u8], bytes: &[u8]| -> Vec<u8> {
            line.iter()
                .copied()
                .filter(|byte| !bytes.contains(byte))
                .collect()
        };
        for line in super::super::libinjection_lines("xss") {
            let dotted = without(&line, b"(=:");
            let parenthesized = without(&line, b"=:[{`+\t\n\r");
            values.extend([line, dotted, parenthesized]);
        }
        let mut matched = 0;
        for value in values {
            let mut folded = value.to_ascii_lowercase();
            folded.retain(|byte| !SKIPPED_IN_SCHEMES.contains(*byte));
            if PATTERNS.matches(&folded).next().is_some() {
                matched += 1;
                assert!(
                    may_match_pattern(&Form::new(&value)),
                    "{}",
                    String::from_utf8_lossy(&value)
                );
            }
        }
        assert!(matched > 1000, "{matched} values matched a pattern");
    }

    /// The premise of the `<`/`=` gate in `detect`: libinjection's XSS tokenizer flags nothing
    /// without `<` or `=`, in any start state. Checked on every line of libinjection's XSS
    /// samples and false positives with those bytes taken out (and, as a control, that the
    /// lines themselves are caught).
    #[test]
    fn libinjection_needs_a_tag_or_an_attribute_value() {
        let (mut lines, mut caught) = (0, 0);
        for line in super::super::libinjection_lines("xss") {
            let stripped: Vec<u8> = line
                .iter()
                .copied()
                .filter(|byte| !matches!(byte, b'<' | b'='))
                .collect();
            for (flags, state, _) in START_STATES {
                caught += usize::from(XssDetector::is_xss(&line, flags));
                assert!(
                    !XssDetector::is_xss(&stripped, flags),
                    "{state}: {}",
                    String::from_utf8_lossy(&stripped)
                );
            }
            lines += 1;
        }
        assert!(
            lines > 2000 && caught > 2000,
            "{lines} lines, {caught} caught"
        );
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
            "window[\"alert\"](document.cookie)",
            "[].sort.call`${alert}1337`",
            "{{constructor.constructor('alert(1)')()}}",
            "+ADw-script+AD4-alert(1)+ADw-/script+AD4-",
            "(![]+[])[+!+[]]",
            "alert(1)",
            "document /*x*/ . cookie",
            "v\nb\ts\nc\nr\ti\tp\nt::",
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
            "Please confirm (by Friday) the order",
            "The document's cookie policy is at /privacy",
            "Use $(this) or [0] + 1 in your code",
            "style=color:red;background:white",
        ] {
            assert_eq!(rule_ids(benign), Vec::<u32>::new(), "{benign}");
        }
    }
}
