//! Detectors and the rules they report.
//!
//! Each detector reads one decoded form of one field and reports hits of its rules. A rule has
//! a CRS-style id in its family's range (930 traversal, 932 command injection, 941 XSS,
//! 942 SQL injection, 920/921 protocol), a severity that becomes its anomaly score, and the
//! paranoia level from which it counts.

pub mod anomaly;
pub mod cmdi;
pub mod protocol;
pub mod sqli;
pub mod traversal;
pub mod xss;

use std::borrow::Cow;
use std::ops::Range;

use regex::bytes::{Match, Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// Which detector produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    Sqli,
    Xss,
    Traversal,
    CommandInjection,
    Protocol,
    Evasion,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Sqli => "sqli",
            Detector::Xss => "xss",
            Detector::Traversal => "traversal",
            Detector::CommandInjection => "command_injection",
            Detector::Protocol => "protocol",
            Detector::Evasion => "evasion",
        }
    }
}

/// CRS's severities and the anomaly score each adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Notice,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn score(self) -> u32 {
        match self {
            Severity::Critical => 5,
            Severity::Error => 4,
            Severity::Warning => 3,
            Severity::Notice => 2,
        }
    }
}

/// One detection rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
    pub detector: Detector,
    pub severity: Severity,
    /// The lowest paranoia level at which the rule runs.
    pub paranoia: u8,
    pub description: &'static str,
}

/// A rule that matched a span of one decoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: &'static Rule,
    /// Byte span in the decoded form the detector read.
    pub span: Range<usize>,
    /// The detector's fingerprint of the match (SQL token classes, the shell command, the
    /// normalized path).
    pub fingerprint: String,
}

impl Hit {
    pub fn new(rule: &'static Rule, span: Range<usize>, fingerprint: impl Into<String>) -> Self {
        Hit {
            rule,
            span,
            fingerprint: fingerprint.into(),
        }
    }
}

/// A set of byte values. Every detector first asks whether a value holds some byte (a quote,
/// `<`, `;`) before it tokenizes; one pass over the value answers all of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    /// The bytes listed.
    pub const fn of(bytes: &[u8]) -> Self {
        let mut set = [0u64; 4];
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            set[(byte >> 6) as usize] |= 1 << (byte & 63);
            index += 1;
        }
        ByteSet(set)
    }

    /// Every byte in `first..=last`.
    pub const fn range(first: u8, last: u8) -> Self {
        let mut set = [0u64; 4];
        let mut byte = first as usize;
        while byte <= last as usize {
            set[byte >> 6] |= 1 << (byte & 63);
            byte += 1;
        }
        ByteSet(set)
    }

    pub const fn union(self, other: ByteSet) -> Self {
        let (a, b) = (self.0, other.0);
        ByteSet([a[0] | b[0], a[1] | b[1], a[2] | b[2], a[3] | b[3]])
    }

    /// The bytes `haystack` holds.
    pub fn present_in(haystack: &[u8]) -> Self {
        // The engine asks this of every decoded form. The sets are kept in registers: filled
        // in memory, indexed by the byte, each byte waited on the store of the one before,
        // and reading the words back as wider vectors missed store forwarding. Most values
        // are ASCII, which needs two words, each byte's bit read from a table (half the time
        // of computing it); a value with a byte above 0x7F takes a second pass for all four.
        let (mut below_64, mut above_64, mut every) = (0u64, 0u64, 0u8);
        for &byte in haystack {
            let [below, above] = ASCII_BITS[usize::from(byte)];
            below_64 |= below;
            above_64 |= above;
            every |= byte;
        }
        if every < 0x80 {
            return ByteSet([below_64, above_64, 0, 0]);
        }
        let mut words = [0u64; 4];
        for &byte in haystack {
            let bit = 1u64 << (byte & 63);
            for (index, word) in words.iter_mut().enumerate() {
                *word |= bit & u64::from(usize::from(byte >> 6) == index).wrapping_neg();
            }
        }
        ByteSet(words)
    }

    pub fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0
    }

    /// Whether the two sets share a byte.
    pub fn intersects(&self, other: ByteSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }

    /// The set with each ASCII capital letter replaced by its small letter.
    pub const fn ascii_lowercased(self) -> Self {
        /// `A`-`Z` in the second word; their small letters sit 32 bits higher.
        const CAPITALS: u64 = 0x07FF_FFFE;
        let [low, high, upper_low, upper_high] = self.0;
        ByteSet([
            low,
            (high & !CAPITALS) | ((high & CAPITALS) << 32),
            upper_low,
            upper_high,
        ])
    }

    /// Whether every byte of this set is in `other`.
    pub fn is_subset(&self, other: ByteSet) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Each ASCII byte's bit in the first two words of a `ByteSet`; zero for the others.
static ASCII_BITS: [[u64; 2]; 256] = {
    let mut bits = [[0u64; 2]; 256];
    let mut byte = 0;
    while byte < 128 {
        bits[byte][byte / 64] = 1 << (byte % 64);
        byte += 1;
    }
    bits
};

/// One decoded form of a value, with the set of bytes it holds: what every detector reads.
#[derive(Debug, Clone, Copy)]
pub struct Form<'a> {
    bytes: &'a [u8],
    present: ByteSet,
}

impl<'a> Form<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Form {
            bytes,
            present: ByteSet::present_in(bytes),
        }
    }

    /// A form whose byte set the caller already has.
    pub(crate) fn with_bytes(bytes: &'a [u8], present: ByteSet) -> Self {
        debug_assert!(present == ByteSet::present_in(bytes));
        Form { bytes, present }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The bytes the form holds.
    pub fn present(&self) -> ByteSet {
        self.present
    }

    pub fn holds(&self, byte: u8) -> bool {
        self.present.contains(byte)
    }

    /// Whether the form holds any of `bytes`.
    pub fn holds_any(&self, bytes: ByteSet) -> bool {
        self.present.intersects(bytes)
    }

    /// The form as text, invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self) -> Cow<'a, str> {
        text_of(self.bytes)
    }

    /// Whether the form holds the two bytes in a row. The byte set answers first: most values
    /// lack one of them, and a search of a short value costs more than the rest of a gate.
    /// Then `memchr` finds the first byte's places: for a needle this short `memmem` falls back
    /// to Rabin-Karp over every byte.
    pub(crate) fn holds_pair(&self, [first, second]: [u8; 2]) -> bool {
        self.holds(first)
            && self.holds(second)
            && memchr::memchr_iter(first, self.bytes)
                .any(|at| self.bytes.get(at + 1) == Some(&second))
    }

    /// Where `needle` first occurs in the form, ignoring ASCII case, as
    /// [`find_ignoring_ascii_case`]; a form that lacks one of the needle's bytes in both cases
    /// is answered from the byte set, without a search.
    pub(crate) fn find_ignoring_ascii_case(&self, needle: &[u8]) -> Option<usize> {
        if self.holds_each_ignoring_ascii_case(needle) {
            find_ignoring_ascii_case(self.bytes, needle)
        } else {
            None
        }
    }

    /// Whether the form holds each byte of `needle`, in either ASCII case: what it must hold to
    /// contain `needle` ignoring case.
    fn holds_each_ignoring_ascii_case(&self, needle: &[u8]) -> bool {
        needle.iter().all(|&byte| {
            self.holds(byte.to_ascii_lowercase()) || self.holds(byte.to_ascii_uppercase())
        })
    }
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD. The strict check comes first: it reads
/// ASCII a word at a time, where `String::from_utf8_lossy` walks it in chunks several times
/// slower, and nearly every value is valid.
pub(crate) fn text_of(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Where `needle` first occurs in `haystack`, ignoring ASCII case. Candidates are found by the
/// needle's rarest byte in English text, in either case, with `memchr2`: detectors call this
/// on every value, and comparing a window at every position cost more than the rest of their
/// checks, as did stopping at every `i` of a sentence to look for `iex`.
pub(crate) fn find_ignoring_ascii_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    // The first of the rarest bytes, as `min_by_key` would pick it; its fold kept the running
    // minimum on the stack, and each step's loads waited on the step before's stores.
    let (mut offset, mut rarity) = (0, u8::MAX);
    for (index, &byte) in needle.iter().enumerate() {
        let rank = ENGLISH_FREQUENCY[usize::from(byte)];
        if rank < rarity {
            (offset, rarity) = (index, rank);
        }
    }
    let rare = needle[offset];
    let after_offset = haystack.get(offset..)?;
    // A `rare` at `offset + start` puts the needle's candidate at `start`: in increasing order,
    // so the first that compares equal is the leftmost match.
    memchr::memchr2_iter(
        rare.to_ascii_lowercase(),
        rare.to_ascii_uppercase(),
        after_offset,
    )
    .find(|&start| {
        haystack
            .get(start..start + needle.len())
            .is_some_and(|candidate| candidate.eq_ignore_ascii_case(needle))
    })
}

/// How common each byte is in English text, as a rank: letters by their frequency
/// (`e` highest), then the space; everything else ranks as rare.
static ENGLISH_FREQUENCY: [u8; 256] = {
    const BY_FREQUENCY: &[u8; 26] = b"zqjxkvbpygfwmucldrhsnioate";
    let mut ranks = [0u8; 256];
    let mut index = 0;
    while index < BY_FREQUENCY.len() {
        let letter = BY_FREQUENCY[index];
        ranks[letter as usize] = index as u8 + 1;
        ranks[letter.to_ascii_uppercase() as usize] = index as u8 + 1;
        index += 1;
    }
    ranks[b' ' as usize] = BY_FREQUENCY.len() as u8 + 1;
    ranks
};

/// Letters, digits and `_`: the bytes of a word.
pub(crate) const WORD_BYTES: ByteSet = ByteSet::range(b'0', b'9')
    .union(ByteSet::range(b'A', b'Z'))
    .union(ByteSet::range(b'a', b'z'))
    .union(ByteSet::of(b"_"));

/// Whether any detector may report a hit in `form`. A form of word bytes alone (`WORD_BYTES`),
/// like most JSON keys, argument names, ids and tokens, is never one: SQL can be letters,
/// digits and spaces alone (`1 union select 2`), but a single bare word or number is never an
/// injection; markup needs a `<`, a `:` or a `=`, a path a `/`, `\` or `.`, a command a
/// separator, and the anomaly rules punctuation or a byte outside printable ASCII.
/// The engine skips every detector for it; `a_word_alone_is_never_a_hit` asks each detector of
/// thousands of words, SQL, shell and script words among them.
pub fn may_hit(form: &Form<'_>) -> bool {
    !form.present().is_subset(WORD_BYTES)
}

/// Whether `bytes` are word bytes alone (`WORD_BYTES`), which no detector reads as an attack
/// (`may_hit`): a JSON key of them is counted, not made a leaf.
pub(crate) fn is_word(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| WORD_BYTES.contains(byte))
}

/// The bytes a pattern's `\s` matches: ASCII whitespace with the vertical tab (which
/// `u8::is_ascii_whitespace` leaves out), since patterns are compiled without Unicode.
pub(crate) const PATTERN_SPACE: ByteSet = ByteSet::of(b" \t\n\x0b\x0c\r");

/// Whether `byte` is one a pattern's `\s` matches (`PATTERN_SPACE`).
pub(crate) fn is_pattern_space(byte: &u8) -> bool {
    PATTERN_SPACE.contains(*byte)
}

/// Compiles a pattern for byte haystacks with ASCII classes and word boundaries. Every pattern
/// here is about ASCII syntax; without Unicode the lazy DFA handles `\b` itself, so each search
/// stays one linear pass instead of falling back to a slower engine.
pub(crate) fn pattern(source: &str) -> Option<Regex> {
    RegexBuilder::new(source).unicode(false).build().ok()
}

/// Rules found by patterns: one pass of a `RegexSet` says which match, and only those are
/// searched again for their span. Most values match none, so they cost one pass.
pub(crate) struct PatternTable {
    set: Option<RegexSet>,
    patterns: Vec<(Regex, &'static Rule)>,
}

impl PatternTable {
    pub(crate) fn new(table: &[(&str, &'static Rule)]) -> Self {
        let set = RegexSetBuilder::new(table.iter().map(|(source, _)| *source))
            .unicode(false)
            .build()
            .ok();
        let patterns = table
            .iter()
            .filter_map(|(source, rule)| Some((pattern(source)?, *rule)))
            .collect();
        PatternTable { set, patterns }
    }

    /// The matching rules, in table order, each with its first match.
    pub(crate) fn matches<'h>(
        &self,
        haystack: &'h [u8],
    ) -> impl Iterator<Item = (Match<'h>, &'static Rule)> + use<'_, 'h> {
        // `is_match` may stop early and use the set's literal prefilter; the overlapping search
        // that says which patterns matched cannot, and most values match none.
        let matched = self
            .set
            .as_ref()
            .filter(|set| set.is_match(haystack))
            .map(|set| set.matches(haystack))
            .filter(|matched| matched.matched_any());
        self.patterns
            .iter()
            .enumerate()
            .filter(move |(index, _)| matched.as_ref().is_some_and(|m| m.matched(*index)))
            .filter_map(move |(_, (regex, rule))| Some((regex.find(haystack)?, *rule)))
    }

    /// Whether every pattern compiled (checked by the detectors' tests).
    #[cfg(test)]
    pub(crate) fn complete(&self, expected: usize) -> bool {
        self.set.is_some() && self.patterns.len() == expected
    }
}

/// The ids of the rules `detect` reports on `input`, for the detectors' tests.
#[cfg(test)]
pub(crate) fn rule_ids_of(
    detect: impl Fn(&Form<'_>, &mut Vec<Hit>),
    input: impl AsRef<[u8]>,
) -> Vec<u32> {
    let mut hits = Vec::new();
    detect(&Form::new(input.as_ref()), &mut hits);
    hits.iter().map(|hit| hit.rule.id).collect()
}

/// The lines of libinjection's sample files for `family` (`sqli`, `xss`) and of its false
/// positives, for the detectors' tests of their gates.
#[cfg(test)]
pub(crate) fn libinjection_lines(family: &str) -> Vec<Vec<u8>> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/libinjection");
    let prefix = format!("{family}-");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(data).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) || name == "false_positives.txt" {
            let text = std::fs::read(entry.path()).unwrap_or_default();
            lines.extend(text.split(|&byte| byte == b'\n').map(<[u8]>::to_vec));
        }
    }
    lines
}

/// Every rule, for documentation, `waf check` and the exclusions' validation.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    sqli::RULES
        .iter()
        .chain(xss::RULES)
        .chain(traversal::RULES)
        .chain(cmdi::RULES)
        .chain(protocol::RULES)
        .chain(anomaly::RULES)
        .copied()
}

/// Finds the rule with `id`.
pub fn rule(id: u32) -> Option<&'static Rule> {
    all_rules().find(|rule| rule.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every detector, on every start state, at every paranoia level (the engine filters by
    /// level later): the hits each reports in `value` read as one form.
    fn every_hit(value: &[u8]) -> Vec<u32> {
        let form = Form::new(value);
        let mut hits = Vec::new();
        sqli::detect(&form, &mut hits);
        xss::detect(&form, false, &mut hits);
        xss::detect(&form, true, &mut hits);
        traversal::detect(&form, &mut hits);
        cmdi::detect(&form, &mut hits);
        anomaly::detect(&form, &mut hits);
        protocol::detect_header_injection(value, &mut hits);
        hits.iter().map(|hit| hit.rule.id).collect()
    }

    #[test]
    fn a_word_alone_is_never_a_hit() {
        let word_bytes: Vec<u8> = (0..=255)
            .filter(|&byte| WORD_BYTES.contains(byte))
            .collect();
        let mut words: Vec<Vec<u8>> = Vec::new();
        // Every word of one and two bytes.
        for &first in &word_bytes {
            words.push(vec![first]);
            words.extend(word_bytes.iter().map(|&second| vec![first, second]));
        }
        // The runs of word bytes in libinjection's attacks and false positives, the shell
        // commands, the sensitive paths and the words attacks are made of, as they are, in
        // capitals and glued to a digit.
        let lines = [libinjection_lines("sqli"), libinjection_lines("xss")].concat();
        let listed = cmdi::COMMANDS
            .iter()
            .chain(traversal::SENSITIVE_PATHS)
            .chain(&[
                "alert",
                "eval",
                "javascript",
                "vbscript",
                "onerror",
                "onload",
                "script",
                "svg",
                "union",
                "select",
                "sleep",
                "benchmark",
                "waitfor",
                "xp_cmdshell",
                "or",
                "and",
                "iex",
                "pwsh",
                "powershell",
                "whoami",
                "passwd",
                "win",
                "ini",
                "env",
                "git",
                "0x41",
                "1e1",
                "0b1",
                "null",
                "true",
            ])
            .map(|word| word.as_bytes().to_vec());
        for piece in lines.iter().chain(&listed.collect::<Vec<_>>()) {
            for word in piece.split(|&byte| !WORD_BYTES.contains(byte)) {
                if word.is_empty() {
                    continue;
                }
                words.push(word.to_vec());
                words.push(word.to_ascii_uppercase());
                words.push([word, b"1"].concat());
            }
        }
        assert!(words.len() > 20_000, "{} words", words.len());
        // Word bytes and a space, or a byte outside ASCII, may be a hit.
        for witness in [
            &b"1 union select 2"[..],
            b"1\tunion\tselect\t2",
            b"1\nunion\nselect\n2",
            b"caf\xc3\xa9",
            b"a\x00b",
        ] {
            assert!(may_hit(&Form::new(witness)), "{witness:?}");
            assert!(!is_word(witness), "{witness:?}");
            assert_ne!(every_hit(witness), Vec::<u32>::new(), "{witness:?}");
        }
        for word in &words {
            assert!(
                !may_hit(&Form::new(word)),
                "{:?}",
                String::from_utf8_lossy(word)
            );
            assert!(is_word(word), "{:?}", String::from_utf8_lossy(word));
            assert_eq!(
                every_hit(word),
                Vec::<u32>::new(),
                "{:?}",
                String::from_utf8_lossy(word)
            );
        }
    }

    #[test]
    fn a_byte_set_holds_exactly_its_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        let form = Form::new(b"a'\x00\xff;");
        for byte in all {
            let expected = matches!(byte, b'a' | b'\'' | 0 | 0xff | b';');
            assert_eq!(form.holds(byte), expected, "{byte:#x}");
            assert_eq!(ByteSet::of(&[byte]).is_subset(form.present()), expected);
        }
        assert!(form.holds_any(ByteSet::of(b"<;")));
        assert!(!form.holds_any(ByteSet::of(b"<>")));
        let letters = ByteSet::range(b'a', b'z');
        assert!(Form::new(b"abc").present().is_subset(letters));
        assert!(!Form::new(b"abC").present().is_subset(letters));
        assert!(letters.union(ByteSet::of(b"C")).contains(b'C'));
        assert_eq!(ByteSet::present_in(b"cab"), ByteSet::of(b"abc"));
        // Every byte value, alone and among ASCII bytes (the one-pass case) or beside a byte
        // above 0x7F (the four-word pass).
        for byte in 0..=u8::MAX {
            for value in [
                vec![byte],
                vec![b'-', byte, b'a'],
                vec![0x80, byte, b'a', 0xff],
            ] {
                assert_eq!(
                    ByteSet::present_in(&value),
                    ByteSet::of(&value),
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn case_insensitive_search_finds_every_case_and_position() {
        assert_eq!(find_ignoring_ascii_case(b"x; IeX $a", b"iex"), Some(3));
        assert_eq!(find_ignoring_ascii_case(b"CAT", b"cat"), Some(0));
        assert_eq!(find_ignoring_ascii_case(b"ccat", b"cat"), Some(1));
        assert_eq!(find_ignoring_ascii_case(b"a::$DaTa", b"::$data"), Some(1));
        assert_eq!(find_ignoring_ascii_case(b"ca", b"cat"), None);
        assert_eq!(find_ignoring_ascii_case(b"c a t", b"cat"), None);
        assert_eq!(find_ignoring_ascii_case(b"", b""), Some(0));
        // Against a window at every position: every haystack of up to 7 bytes and needles
        // whose rarest byte comes first, last, in the middle, twice, or is not a letter.
        let naive = |haystack: &[u8], needle: &[u8]| {
            haystack
                .windows(needle.len())
                .position(|window| window.eq_ignore_ascii_case(needle))
        };
        for needle in [&b"xe"[..], b"ex", b"exe", b"xx", b"e:", b"e", b"Xe:"] {
            crate::every_string(b"eExX: ", 7, |haystack| {
                assert_eq!(
                    find_ignoring_ascii_case(haystack, needle),
                    naive(haystack, needle),
                    "{haystack:?} {needle:?}"
                );
                // The form's byte set turns away only haystacks without a match.
                assert_eq!(
                    Form::new(haystack).find_ignoring_ascii_case(needle),
                    naive(haystack, needle),
                    "{haystack:?} {needle:?}"
                );
            });
        }
    }

    #[test]
    fn lowercasing_a_set_lowercases_each_byte() {
        for byte in 0..=u8::MAX {
            assert_eq!(
                ByteSet::of(&[byte]).ascii_lowercased(),
                ByteSet::of(&[byte.to_ascii_lowercase()]),
                "{byte:#x}"
            );
        }
        assert_eq!(
            ByteSet::of(b"aZ\xC9").ascii_lowercased(),
            ByteSet::of(b"az\xC9")
        );
    }

    #[test]
    fn a_pair_is_found_where_it_stands() {
        for pair in [*b"ab", *b"aa", *b"ba", [0xC3, 0xA2]] {
            crate::every_string(b"ab \xC3\xA2", 6, |haystack| {
                assert_eq!(
                    Form::new(haystack).holds_pair(pair),
                    haystack.windows(2).any(|window| window == pair),
                    "{haystack:?} {pair:?}"
                );
            });
        }
    }

    #[test]
    fn rule_ids_are_unique_and_in_their_family() {
        let mut ids: Vec<u32> = all_rules().map(|rule| rule.id).collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "duplicate rule id");
        for rule in all_rules() {
            let family = rule.id / 1000;
            let expected: &[u32] = match rule.detector {
                Detector::Sqli => &[942],
                Detector::Xss => &[941],
                Detector::Traversal => &[930],
                Detector::CommandInjection => &[932],
                Detector::Protocol | Detector::Evasion => &[920, 921],
            };
            assert!(expected.contains(&family), "{rule:?}");
            assert!((1..=4).contains(&rule.paranoia), "{rule:?}");
        }
    }
}
