//! SQL injection: libinjection's tokenizer and folded-token fingerprints.
//!
//! The input is tokenized as SQL three ways: as-is (a number or keyword context), as if it
//! followed an opening `'`, and as if it followed an opening `"`, in ANSI and MySQL dialects.
//! The tokens are folded (`UN/**/ION`, `1+1`, `'a' 'b'` concatenation) into a fingerprint of at
//! most five token classes, which is looked up in libinjection's list of fingerprints that real
//! injections produce. We use `libinjectionrs`, a pure-Rust port, measured on libinjection's
//! own corpus before adoption (see `tests/corpus.rs`).
//!
//! What we own on top: libinjection's shortest fingerprints (`sos`, `1&1`, `1c`: a string, an
//! operator, a string) also describe prose with quotes (`CHRISTMAS STOCKING "NOT" STUFFER`,
//! `80% ACRYLIC AND 20% WOOL`). A short fingerprint counts at paranoia 1 only when the input
//! also holds SQL syntax that prose does not: a comparison, a comment, a parenthesis, a
//! statement separator. Otherwise it counts from paranoia 2.

use std::sync::LazyLock;

use libinjectionrs::sqli::{Prescan, SqliTokenizer, TokenType};
use libinjectionrs::{SqliFlags, SqliState};

use regex::bytes::Regex;

use super::{
    ByteSet, Detector, Form, Hit, PatternTable, Rule, Severity, is_pattern_space, may_hit, pattern,
};

pub static LIBINJECTION: Rule = Rule {
    id: 942100,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 1,
    description: "SQL injection: the input tokenizes to a fingerprint of known injections",
};

pub static SHORT_FINGERPRINT: Rule = Rule {
    id: 942101,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 2,
    description: "SQL injection: an injection fingerprint in input that reads as prose (a short fingerprint without other SQL syntax, or mostly words)",
};

pub static UNION_SELECT: Rule = Rule {
    id: 942190,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 1,
    description: "SQL injection: UNION followed by SELECT",
};

pub static FILE_WRITE: Rule = Rule {
    id: 942480,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 1,
    description: "SQL injection: INTO OUTFILE or DUMPFILE",
};

pub static ORDER_BY_PROBE: Rule = Rule {
    id: 942150,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 1,
    description: "SQL injection: a column-count probe (ORDER BY or GROUP BY a number list)",
};

pub static QUOTE_BREAKOUT: Rule = Rule {
    id: 942180,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 1,
    description: "SQL injection: a string closed, then a glued boolean operator or a comment",
};

pub static STACKED_QUERY: Rule = Rule {
    id: 942350,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 1,
    description: "SQL injection: a statement separator followed by a data-changing or reading statement",
};

pub static POSTGRES_CAST: Rule = Rule {
    id: 942550,
    detector: Detector::Sqli,
    severity: Severity::Critical,
    paranoia: 1,
    description: "SQL injection: a PostgreSQL cast (::) after a function call or a string",
};

pub static RULES: &[&Rule] = &[
    &LIBINJECTION,
    &SHORT_FINGERPRINT,
    &UNION_SELECT,
    &FILE_WRITE,
    &ORDER_BY_PROBE,
    &QUOTE_BREAKOUT,
    &STACKED_QUERY,
    &POSTGRES_CAST,
];

/// Statement shapes libinjection's five-token fingerprints miss: a bare `union select`
/// fragment, `INTO OUTFILE` after a string, and `ORDER BY 1,2,3` column counting.
static PATTERNS: LazyLock<PatternTable> = LazyLock::new(|| {
    let table: [(&str, &'static Rule); 6] = [
        (
            r"(?i)\bunion\b(?:\s|/\*[^*]{0,64}\*/|\(|\ball\b|\bdistinct\b)*\bselect\b",
            &UNION_SELECT,
        ),
        (r"(?i)\binto\s+(?:out|dump)file\b", &FILE_WRITE),
        (
            r#"(?i)(?:^|['"`\d)])\s*(?:order|group)\s+by\s+\d+(?:\s*,\s*\d+)*\s*(?:--|#|/\*|;|$)"#,
            &ORDER_BY_PROBE,
        ),
        (
            r#"(?i)^[\w@.-]*['`]\s*[;)]*\s*(?:--(?:\s|-|$)|#(?:[^0-9]|$)|/\*)"#,
            &QUOTE_BREAKOUT,
        ),
        (
            r#"(?i)(?:\w|['"`)])\s*;\s*(?:insert\s+(?:/\*[^*]{0,64}\*/\s*)*into\b|(?:drop|truncate|alter)\s+(?:table|database|schema|user|view)\b|delete\s+from\b|update\s+[\w.`"]+\s+set\b|(?:exec|execute)\s+(?:xp_|sp_|master\.)|shutdown\b|declare\s+@|select\s+[\w*,\s()@.`]{1,80}?\s+from\s+[\w.`]+)"#,
            &STACKED_QUERY,
        ),
        (
            r#"(?i)[)'"]\s*::\s*(?:int|integer|bigint|smallint|text|bool|boolean|varchar|char|regclass|oid|jsonb?|numeric|bytea)\b"#,
            &POSTGRES_CAST,
        ),
    ];
    PatternTable::new(&table)
});

/// Fingerprints this short are whole expressions like `s&s`; longer ones carry structure.
const SHORT_FINGERPRINT_LEN: usize = 3;

/// Typographic apostrophes and quotes that some databases and collations read as `'` and `"`
/// (and their UTF-8-read-as-Windows-1252 mojibake), which attackers use to slip quotes past
/// filters.
const QUOTE_LOOKALIKES: &[(&str, &str)] = &[
    ("\u{2018}", "'"),
    ("\u{2019}", "'"),
    ("\u{02BC}", "'"),
    ("\u{FF07}", "'"),
    ("\u{201C}", "\""),
    ("\u{201D}", "\""),
    ("\u{E2}\u{80}\u{99}", "'"),
    ("\u{E2}\u{20AC}\u{2122}", "'"),
];

/// Every entry of `QUOTE_LOOKALIKES` holds the byte 0xE2, 0xCA or 0xEF, or `â` (C3 A2): a value
/// with none of them, like most non-English names (`José`), skips the eight searches.
fn may_hold_quote_lookalike(form: &Form<'_>) -> bool {
    form.holds_any(ByteSet::of(&[0xE2, 0xCA, 0xEF])) || form.holds_pair([0xC3, 0xA2])
}

const QUOTES: ByteSet = ByteSet::of(b"'\"`");

/// Reports SQL injection in one decoded form.
pub fn detect(form: &Form<'_>, hits: &mut Vec<Hit>) {
    if form.bytes().is_empty() || !may_hit(form) {
        return;
    }
    if may_hold_quote_lookalike(form)
        && let Ok(text) = std::str::from_utf8(form.bytes())
        && QUOTE_LOOKALIKES
            .iter()
            .any(|(lookalike, _)| text.contains(lookalike))
    {
        let mut folded = text.to_owned();
        for (lookalike, quote) in QUOTE_LOOKALIKES {
            folded = folded.replace(lookalike, quote);
        }
        return detect_form(&Form::new(folded.as_bytes()), hits);
    }
    detect_form(form, hits);
}

fn detect_form(form: &Form<'_>, hits: &mut Vec<Hit>) {
    let bytes = form.bytes();
    if detect_windowed(bytes, Some(prescan(form)), hits) {
        return;
    }
    if form.holds_pair(*b"/*") && detect_windowed(&strip_comments(bytes), None, hits) {
        // Filters and some applications delete comments, which joins `UN/**/ION` into
        // `UNION`: read the form that way too.
        return;
    }
    if let Some(span) = form
        .holds_any(QUOTES)
        .then(|| quote_then_operator(bytes))
        .flatten()
    {
        let fingerprint = String::from_utf8_lossy(&bytes[span.clone()]).to_ascii_lowercase();
        hits.push(Hit::new(&QUOTE_BREAKOUT, span, fingerprint));
        return;
    }
    if may_match_pattern(form)
        && let Some((found, rule)) = PATTERNS.matches(bytes).next()
    {
        let fingerprint = String::from_utf8_lossy(found.as_bytes()).to_ascii_lowercase();
        hits.push(Hit::new(rule, found.range(), fingerprint));
    }
}

/// What each of `PATTERNS` cannot match without: a `;` before one of `STACKED_STATEMENTS` (a
/// stacked query), `::` (a cast), a quote and `#`, `-` or `*` (a breakout into a comment), the
/// word UNION or INTO, or BY and a digit. Most values hold none of them, a sentence with a
/// semicolon among them, and skip the automaton; `the_pattern_gate_passes_every_match` checks
/// this on libinjection's samples.
fn may_match_pattern(form: &Form<'_>) -> bool {
    form.holds(b';')
        && word_follows(
            form.bytes(),
            memchr::memchr_iter(b';', form.bytes()),
            &STACKED_STATEMENTS,
        )
        || form.holds_pair(*b"::")
        || form.holds_any(ByteSet::of(b"'`"))
            && form.holds_any(ByteSet::of(b"#-*"))
            && may_break_into_comment(form.bytes())
        || form.holds_any(ByteSet::range(b'0', b'9'))
            && form.find_ignoring_ascii_case(b"by").is_some()
        || [&b"union"[..], b"into"]
            .iter()
            .any(|word| form.find_ignoring_ascii_case(word).is_some())
}

/// Whether `bytes` begins as `QUOTE_BREAKOUT` needs: a run of word bytes, `@`, `.` and `-`
/// (an e-mail address, a number, a name), a quote or backtick, spaces, `;` and `)`, then a
/// comment's first byte. A name or sentence with an apostrophe after a space (`Mary-Kate
/// O'Neil`) does not.
fn may_break_into_comment(bytes: &[u8]) -> bool {
    fn skip(bytes: &[u8], skipped: impl Fn(&u8) -> bool) -> &[u8] {
        &bytes[bytes.iter().take_while(|byte| skipped(byte)).count()..]
    }
    let is_prefix =
        |byte: &u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'@' | b'.' | b'-');
    let Some(quote) = bytes.iter().position(|byte| !is_prefix(byte)) else {
        return false;
    };
    if !matches!(bytes[quote], b'\'' | b'`') {
        return false;
    }
    let rest = skip(&bytes[quote + 1..], is_pattern_space);
    let rest = skip(rest, |byte| matches!(byte, b';' | b')'));
    let rest = skip(rest, is_pattern_space);
    matches!(rest.first(), Some(b'-' | b'#' | b'/'))
}

/// The statements `STACKED_QUERY` looks for after a `;` (`exec` also starts `execute`).
const STACKED_STATEMENTS: [&[u8]; 10] = [
    b"insert",
    b"drop",
    b"truncate",
    b"alter",
    b"delete",
    b"update",
    b"exec",
    b"shutdown",
    b"declare",
    b"select",
];

/// Whether, after one of the `delimiters` positions in `bytes` and the ASCII spaces that follow
/// it (the patterns' `\s`, which is ASCII here), one of `words` begins, ignoring ASCII case.
fn word_follows(
    bytes: &[u8],
    mut delimiters: impl Iterator<Item = usize>,
    words: &[&[u8]],
) -> bool {
    delimiters.any(|at| {
        let rest = &bytes[at + 1..];
        let spaces = rest
            .iter()
            .take_while(|byte| is_pattern_space(byte))
            .count();
        let rest = &rest[spaces..];
        words.iter().any(|word| {
            rest.get(..word.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(word))
        })
    })
}

static QUOTE_OPERATOR: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(
        r#"(?i)(?:\w|['"`])['"`](?:or|and|xor|div|like|rlike|regexp)['"`](?:\w|['"`])|['"`]\s+(?:or|and|xor|\|\||&&)\s+['"`(]"#,
    )
});

/// The operators `QUOTE_OPERATOR` looks for after a quote.
const QUOTED_OPERATORS: [&[u8]; 9] = [
    b"or", b"and", b"xor", b"div", b"like", b"rlike", b"regexp", b"||", b"&&",
];

/// Every match of `QUOTE_OPERATOR` has a quote followed, after spaces, by one of
/// `QUOTED_OPERATORS`: most quoted values (`Tim O'Reilly's`, `"fragile" & "this"`) have none
/// and skip the automaton.
fn may_quote_operator(form: &[u8]) -> bool {
    word_follows(
        form,
        memchr::memchr3_iter(b'\'', b'"', b'`', form),
        &QUOTED_OPERATORS,
    )
}

/// A quote that closes the string the value was put in, then a boolean operator and a quoted
/// operand, either glued between words (`a'or'a`) or spaced (`' OR '1=1`): the tautologies
/// libinjection lets pass as `s&s`. The quote must be an odd one, counting only quotes not
/// inside a word (`Tom's`), so that a value quoting words itself (`the words 'yes' or 'no'`)
/// passes.
fn quote_then_operator(form: &[u8]) -> Option<std::ops::Range<usize>> {
    if !may_quote_operator(form) {
        return None;
    }
    let regex = QUOTE_OPERATOR.as_ref()?;
    regex.find_iter(form).find_map(|found| {
        let at = found.start()
            + found
                .as_bytes()
                .iter()
                .position(|byte| matches!(byte, b'\'' | b'"' | b'`'))
                .unwrap_or(0);
        let quote = form[at];
        let before = &form[..at];
        let standalone = before
            .iter()
            .enumerate()
            .filter(|&(at, &byte)| {
                byte == quote
                    && !(at > 0
                        && before[at - 1].is_ascii_alphanumeric()
                        && before.get(at + 1).is_some_and(u8::is_ascii_alphanumeric))
            })
            .count();
        (standalone % 2 == 0).then(|| found.range())
    })
}

/// `/* ... */` removed (MySQL's executable `/*! ... */` keeps its content).
fn strip_comments(form: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(form.len());
    let mut rest = form;
    while let Some(open) = memchr::memmem::find(rest, b"/*") {
        out.extend_from_slice(&rest[..open]);
        let body = &rest[open + 2..];
        let close = memchr::memmem::find(body, b"*/").unwrap_or(body.len());
        if let Some(executable) = body[..close].strip_prefix(b"!") {
            let version_digits = executable
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            out.extend_from_slice(&executable[version_digits..]);
        }
        rest = body.get(close + 2..).unwrap_or(&[]);
    }
    out.extend_from_slice(rest);
    out
}

/// Most bytes libinjection's tokenizer reads in one window. `libinjectionrs` slows down
/// superlinearly on some long inputs (a run of backtick-quoted words takes seconds at 512 KiB),
/// so a long value is read in two windows: its start, where an injection into a bare value
/// begins, and from its first quote past the first window, where an injection into a quoted
/// value breaks out. The pattern rules still read the whole value.
const TOKENIZER_WINDOW: usize = 16 * 1024;

/// What libinjection asks of a whole form before it tokenizes, answered from its byte set.
fn prescan(form: &Form<'_>) -> Prescan {
    Prescan {
        brace_or_comment: form.holds(b'{') || form.holds_pair(*b"/*"),
        single_quote: form.holds(b'\''),
        double_quote: form.holds(b'"'),
    }
}

/// Runs libinjection on the windows of `form`; true when it found a paranoia-1 injection.
/// `prescan` is the whole form's, when known.
fn detect_windowed(form: &[u8], prescan: Option<Prescan>, hits: &mut Vec<Hit>) -> bool {
    if form.len() <= TOKENIZER_WINDOW {
        return detect_in(form, 0, prescan, hits);
    }
    // A window holds only some of the form's bytes: libinjection searches it.
    if detect_in(&form[..TOKENIZER_WINDOW], 0, None, hits) {
        return true;
    }
    match memchr::memchr3(b'\'', b'"', b'`', &form[TOKENIZER_WINDOW..]) {
        Some(quote) => {
            let start = TOKENIZER_WINDOW + quote;
            let end = (start + TOKENIZER_WINDOW).min(form.len());
            detect_in(&form[start..end], start, None, hits)
        }
        None => false,
    }
}

/// Runs libinjection on `form`, which starts at `offset` in the value; true when it found a
/// paranoia-1 injection. `prescan` is `form`'s, when known.
fn detect_in(form: &[u8], offset: usize, prescan: Option<Prescan>, hits: &mut Vec<Hit>) -> bool {
    let mut state = SqliState::new(form, SqliFlags::FLAG_NONE);
    if !state.detect_prescanned(prescan.unwrap_or_else(|| Prescan::of(form))) {
        return false;
    }
    let fingerprint = fingerprint_text(&state.fingerprint);
    let span = match (state.tokens.first(), state.tokens.last()) {
        (Some(first), Some(last)) => {
            first.pos.min(form.len())..(last.pos + last.len).min(form.len())
        }
        _ => 0..form.len(),
    };
    let short = fingerprint.len() <= SHORT_FINGERPRINT_LEN && !has_sql_syntax(form, &state.tokens);
    let rule = if short || is_prose(form) {
        &SHORT_FINGERPRINT
    } else {
        &LIBINJECTION
    };
    hits.push(Hit::new(
        rule,
        span.start + offset..span.end + offset,
        fingerprint,
    ));
    std::ptr::eq(rule, &LIBINJECTION)
}

fn fingerprint_text(raw: &[u8; 8]) -> String {
    let len = raw.iter().position(|&byte| byte == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..len]).into_owned()
}

/// Whether the whole value reads as natural language that happens to start like SQL (`Left (WA,
/// RR), following the wood edge...`, `One quarter (24%) of people...`): many tokens, at least
/// twice as many bare words as SQL keywords, functions and operators, and no comment or
/// statement separator. libinjection fingerprints only the first five
/// tokens; this looks at all of them. Such a value counts from paranoia 2.
fn is_prose(form: &[u8]) -> bool {
    /// Shorter values are too short to tell prose from SQL by proportions.
    const MIN_TOKENS: usize = 12;
    const MIN_WORDS: usize = 8;
    let mut tokenizer = SqliTokenizer::new(form, SqliFlags::FLAG_NONE);
    let (mut tokens, mut words, mut sql) = (0usize, 0usize, 0usize);
    while let Some(token) = tokenizer.next_token() {
        match token.token_type {
            TokenType::Comment | TokenType::Semicolon | TokenType::Evil => return false,
            TokenType::Bareword => words += 1,
            TokenType::Keyword
            | TokenType::Union
            | TokenType::Group
            | TokenType::Expression
            | TokenType::Function
            | TokenType::Operator
            | TokenType::LogicOperator
            | TokenType::Tsql
            | TokenType::Collate
            | TokenType::SqlType => sql += 1,
            _ => {}
        }
        tokens += 1;
    }
    tokens >= MIN_TOKENS && words >= MIN_WORDS && words >= 2 * sql
}

/// Syntax that SQL injections carry and prose rarely does, outside the string tokens of the
/// matching parse: in `&Q="MOD"&VIEW=1` the `=` signs are inside strings and do not count.
fn has_sql_syntax(form: &[u8], tokens: &[libinjectionrs::sqli::Token]) -> bool {
    let mut in_string = vec![false; form.len()];
    for token in tokens
        .iter()
        .filter(|token| token.token_type == TokenType::String)
    {
        // A token keeps at most 32 bytes of its value, so find the string's end from its
        // closing quote; an unterminated string runs to the end.
        let start = token.pos.saturating_sub(1).min(form.len());
        let content = token.pos.min(form.len());
        let end = match token.str_close {
            0 => form.len(),
            quote => {
                memchr::memchr(quote, &form[content..]).map_or(form.len(), |at| content + at + 1)
            }
        };
        in_string[start..end].fill(true);
    }
    form.iter().enumerate().any(|(at, &byte)| {
        !in_string[at]
            && (matches!(
                byte,
                b'=' | b'<' | b'>' | b'(' | b')' | b';' | b'#' | b'|' | b'^' | b'~' | b'!' | b'@'
            ) || (byte == b'-' || byte == b'/')
                && matches!(form.get(at + 1), Some(b'-' | b'*'))
                && form.get(at + 1) != Some(&b'/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_ids(input: &str) -> Vec<u32> {
        super::super::rule_ids_of(detect, input)
    }

    #[test]
    fn every_quote_lookalike_passes_the_prefilter() {
        for (lookalike, _) in QUOTE_LOOKALIKES {
            assert!(
                may_hold_quote_lookalike(&Form::new(lookalike.as_bytes())),
                "{lookalike}"
            );
        }
        assert!(!may_hold_quote_lookalike(&Form::new(
            "José Álvarez".as_bytes()
        )));
    }

    /// `may_match_pattern` never turns away a value one of `PATTERNS` matches, nor
    /// `may_quote_operator` one `QUOTE_OPERATOR` matches: checked on every line of
    /// libinjection's SQLi samples and false positives, upper- and lower-cased, and on a
    /// stacked query of each statement and a quote before each operator, with every kind of
    /// space between.
    #[test]
    fn the_pattern_gate_passes_every_match() {
        let mut lines = super::super::libinjection_lines("sqli");
        for space in ["", " ", "\t", "\n", "\x0b", "\x0c", "\r"] {
            for statement in [
                "insert into t",
                "drop table t",
                "truncate table t",
                "alter user x",
                "delete from t",
                "update t set",
                "execute xp_cmdshell",
                "shutdown",
                "declare @x",
                "select a from t",
            ] {
                lines.push(format!("1{space};{space}{statement}").into_bytes());
            }
            for operator in [
                "or", "and", "xor", "div", "like", "rlike", "regexp", "||", "&&",
            ] {
                lines.push(format!("a'{operator}'b").into_bytes());
                lines.push(format!("x'{space} {operator} {space}'1").into_bytes());
            }
        }
        // Each way `QUOTE_BREAKOUT` reaches a comment after its quote.
        for breakout in [
            "admin'--",
            "admin' -- x",
            "admin');--",
            "a.b@c-d_1' ;) \t#x",
            "x`/*",
            "'#",
            "1'\x0b)\x0c--",
        ] {
            lines.push(breakout.as_bytes().to_vec());
        }
        let (mut patterns, mut quote_operators) = (0, 0);
        for line in lines {
            for line in [line.to_ascii_lowercase(), line.to_ascii_uppercase()] {
                let shown = String::from_utf8_lossy(&line).into_owned();
                if PATTERNS.matches(&line).next().is_some() {
                    patterns += 1;
                    assert!(may_match_pattern(&Form::new(&line)), "{shown}");
                }
                if QUOTE_OPERATOR
                    .as_ref()
                    .is_some_and(|regex| regex.is_match(&line))
                {
                    quote_operators += 1;
                    assert!(may_quote_operator(&line), "{shown}");
                }
            }
        }
        assert!(patterns > 500, "{patterns} lines matched a pattern");
        assert!(
            quote_operators > 200,
            "{quote_operators} lines matched QUOTE_OPERATOR"
        );
    }

    /// libinjection's folding stops once a fingerprint can no longer be a listed one
    /// (`vendor/libinjectionrs/PORTCULLIS.md`), which must never change a verdict. Checked
    /// against the whole folding on libinjection's samples, on the shapes each condition of the
    /// stop guards (a function word, a two-word keyword, an evil comment or brace after two
    /// words), and on 20,000 generated lines of words, SQL keywords and punctuation.
    #[test]
    fn stopping_the_folding_early_keeps_every_verdict() {
        let mut lines = super::super::libinjection_lines("sqli");
        lines.extend(super::super::libinjection_lines("xss"));
        for shape in [
            "a user() union select 1",
            "x natural join t union select 1",
            "x similar to 'a' union select 1",
            "foo bar {``.``.id}",
            "foo bar /*! union select 1*/",
            "foo bar /* x /* y */",
            "Tim O'Reilly's 'What's the Future' (hardcover)",
            "https://shop.example/p/1?ref=home#reviews",
            "x:1 union select 1",
            // A backslash the folding drops, after which it folds the first pair again: `a . b`
            // becomes `a` (so a `.` is not final), `a : b` stays.
            "a . \\ b union select 1",
            "a : \\ b union select 1",
            // A comment the ANSI reading skips and the MySQL reparse reads as code.
            "--1 union select 1\nfoo bar baz",
            "--1 or 1=1\nfoo bar baz",
            "#1 union select 1\nfoo bar baz",
            "foo bar baz --x\n1 union select 1",
            "foo bar baz #\n1 union select 1",
            // An operator first: of symbols it stays first, of letters it may fold away or
            // merge; a comment before or after it may make the MySQL reparse read code.
            "< 1 union select 1",
            "<p>x</p> --x\n1 union select 1",
            "<p>x</p> #\n1 or 1=1",
            "# x\n1 or 1=1",
            "= 1 or 1=1",
            "* 1 union select 1",
            "--x\n< 1 union select 1",
            "< a /* x /* y */",
            "< a {``.``.id}",
            "like(1) union select 1",
            // `LIKE` first, then a backslash the folding drops later: the `(` after it makes
            // `LIKE` a function, once the folding has moved past the first token.
            "like \\ (1) or 1=1",
            "is not null or 1=1",
            "sounds like 1 or 1=1",
            "div 1 union select 1",
            "not in (1) union select 1",
            "not like (1) or 1=1",
        ] {
            lines.push(shape.as_bytes().to_vec());
        }
        // Words, SQL keywords, the words the stop's conditions name, and punctuation.
        let words: Vec<&str> = concat!(
            "foo bar user password database current_user natural join cross similar to union ",
            "select all from where or and not like in boolean mode 1 0x1 ( ) , . ; ' \" ` = + - ",
            "* @a :: : < > || && N'a' { \\ x # <= <> != % ^ div is sounds --x",
        )
        .split(' ')
        .collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for _ in 0..20_000 {
            let glue = if next(3) == 0 { "" } else { " " };
            let count = 2 + next(8);
            let line: Vec<&str> = (0..count).map(|_| words[next(words.len())]).collect();
            lines.push(line.join(glue).into_bytes());
        }
        let mut detected = 0;
        for line in &lines {
            let early = SqliState::new(line, SqliFlags::FLAG_NONE).detect();
            let whole = SqliState::new(line, SqliFlags::FLAG_NONE).detect_exhaustively();
            assert_eq!(early, whole, "{}", String::from_utf8_lossy(line));
            // As the engine asks it, from the value's byte set.
            let told = SqliState::new(line, SqliFlags::FLAG_NONE)
                .detect_prescanned(prescan(&Form::new(line)));
            assert_eq!(told, whole, "{}", String::from_utf8_lossy(line));
            detected += usize::from(whole);
        }
        assert!(detected > 15_000, "{detected} lines detected");
        // An evil token after a first operator or two barewords makes the fingerprint `X`,
        // which is listed: the stop must not end these (nor `detect_exhaustively`, the
        // reference above).
        for shape in [
            "< a /* x /* y */",
            "< a {``.``.id}",
            "foo bar /* x /* y */",
            "foo bar {``.``.id}",
        ] {
            assert!(
                SqliState::new(shape.as_bytes(), SqliFlags::FLAG_NONE).detect(),
                "{shape}"
            );
        }
    }

    #[test]
    fn every_pattern_compiles() {
        assert!(PATTERNS.complete(6));
        assert!(QUOTE_OPERATOR.is_some());
    }

    #[test]
    fn injections_fire_at_paranoia_one() {
        for attack in [
            "1' OR '1'='1",
            "1 UNION SELECT username, password FROM users--",
            "1' UN/**/ION SEL/**/ECT 1,2--",
            "admin'--",
            "1; DROP TABLE users",
            "-1 and 1=0",
        ] {
            assert_eq!(rule_ids(attack), vec![942100], "{attack}");
        }
        for (attack, rule) in [
            ("-1 union select", 942190),
            ("' into outfile '/var/www/a.php", 942480),
            ("c'  order by 99", 942150),
            ("a'or'a", 942180),
            ("admin'#", 942180),
            (
                "mod(1,2);INSERT /*x*/INTO category(id) VALUES (3)-- -",
                942350,
            ),
            ("1' and lo_get(16400)::text::bool and 'true", 942550),
            ("\u{2019} OR \u{2019}1=1#;--", 942180),
            ("x' OR '1=1", 942180),
        ] {
            assert!(rule_ids(attack).contains(&rule), "{attack}");
        }
    }

    #[test]
    fn names_and_prose_pass() {
        for benign in [
            "O'Brien",
            "please select a plan",
            "Don't forget: select the union option",
            "80% ACRYLIC AND 20% WOOL",
            "abc_123",
            "Sort the list in order by 5pm",
            "The credit union: select a branch",
            "the words 'yes' or 'no'",
            "Tom's 'x' or 'y' choice",
            "7\" #2 CIRCULAR NEEDLE",
            "\"LIKE\" STAMP",
            " 1950' AND 60'S WOMEN'S COATS",
            "necklace length 16\" or 18\"",
            "It\u{2019}s John\u{2019}s #1 fan",
            "Meet at 5; select a seat near the door",
            "1 or 2 people",
            "Left (WA, RR), following wood edge south (\u{2018}Restrictive Byway\u{2019}/RB) for 200 metres",
            "One quarter (24%) of people have had an affair and cheated on a partner at some point in their lives",
        ] {
            assert!(!rule_ids(benign).contains(&942100), "{benign}");
        }
    }

    #[test]
    fn long_values_are_read_at_their_start_and_their_first_late_quote() {
        let padding = "a ".repeat(TOKENIZER_WINDOW);
        assert_eq!(rule_ids(&format!("1 OR 1=1 -- {padding}")), vec![942100]);
        assert_eq!(rule_ids(&format!("{padding}x' OR 1=1 --")), vec![942100]);
    }

    #[test]
    fn short_fingerprints_without_syntax_count_from_paranoia_two() {
        assert_eq!(rule_ids("CHRISTMAS STOCKING \"NOT\" STUFFER"), vec![942101]);
    }
}
