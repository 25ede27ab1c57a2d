//! The decoding pipeline every field goes through before detection.
//!
//! Attackers encode payloads so that a filter reading the raw bytes misses what the application
//! will read after its own decoding. So we decode the way applications do, repeatedly, and
//! record each evasion we undo as evidence. Every step is one linear pass whose output is never
//! longer than its input, and the number of rounds is capped, so the whole pipeline is linear in
//! the input.
//!
//! Hand-written because no maintained crate decodes `%uXXXX`, overlong UTF-8, entities without
//! their `;`, and JS/CSS escapes with the leniency browsers and servers show; each step is a
//! small byte loop, fuzzed (`fuzz/fuzz_targets/decode.rs`).

use std::borrow::Cow;

use crate::detect::{ByteSet, Form};

/// How many percent-decoding rounds we undo. Three catches triple encoding (`%25252e`); beyond
/// that no server decodes, so deeper layers cannot be a payload the application sees.
pub const MAX_PERCENT_ROUNDS: usize = 3;

/// Evasions the pipeline undid, as bit flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evasions(u8);

impl Evasions {
    pub const MULTIPLE_ENCODING: Evasions = Evasions(1);
    pub const PERCENT_U: Evasions = Evasions(1 << 1);
    pub const OVERLONG_UTF8: Evasions = Evasions(1 << 2);
    pub const NUL: Evasions = Evasions(1 << 3);
    pub const INVALID_UTF8: Evasions = Evasions(1 << 4);
    pub const FULLWIDTH: Evasions = Evasions(1 << 5);

    pub fn contains(self, other: Evasions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn insert(&mut self, other: Evasions) {
        self.0 |= other.0;
    }

    /// The names of the flags that are set, for evidence and `waf check`.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::MULTIPLE_ENCODING, "multiple_encoding"),
            (Self::PERCENT_U, "percent_u"),
            (Self::OVERLONG_UTF8, "overlong_utf8"),
            (Self::NUL, "nul"),
            (Self::INVALID_UTF8, "invalid_utf8"),
            (Self::FULLWIDTH, "fullwidth"),
        ]
        .into_iter()
        .filter(|(flag, _)| self.contains(*flag))
        .map(|(_, name)| name)
        .collect()
    }
}

/// The forms of one field that detectors read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Percent-decoded until stable (at most [`MAX_PERCENT_ROUNDS`]), overlong UTF-8 folded to
    /// what it encodes, NUL removed. Borrows the raw value when none of this changed it.
    pub text: Cow<'a, [u8]>,
    /// `text` with HTML entities and JS/CSS escapes decoded, when that changed anything: what a
    /// browser's parser reads inside markup and scripts.
    pub markup: Option<Vec<u8>>,
    pub evasions: Evasions,
    /// How many percent-decoding rounds changed the value.
    pub percent_rounds: usize,
    /// The bytes `text` holds: the pipeline reads them to skip its passes, and the detectors'
    /// first form reuses them.
    text_bytes: ByteSet,
}

impl Decoded<'_> {
    /// The distinct forms, plain first.
    pub fn forms(&self) -> impl Iterator<Item = (&'static str, Form<'_>)> {
        std::iter::once(("text", Form::with_bytes(&self.text, self.text_bytes))).chain(
            self.markup
                .as_deref()
                .map(|markup| ("markup", Form::new(markup))),
        )
    }
}

/// Bytes above 0x7F: invalid UTF-8 is made of them.
const NON_ASCII: ByteSet = ByteSet::range(0x80, 0xFF);

/// The first bytes of the overlong sequences `fold_overlong_utf8` folds.
const OVERLONG_LEADS: ByteSet = ByteSet::of(&[0xC0, 0xC1, 0xE0]);

/// The first byte of every fullwidth character `fold_fullwidth` folds.
const FULLWIDTH_LEAD: u8 = 0xEF;

/// Whether `text` holds a `%` that `percent_decode` decodes: two hex digits, or `u` and four.
/// A value whose `%` are literal (`50% off`) is not copied to find that nothing changes.
fn holds_percent_escape(text: &[u8]) -> bool {
    memchr::memchr_iter(b'%', text).any(|at| {
        let rest = &text[at + 1..];
        hex_prefix(rest, 2).1 == 2
            || matches!(rest.first(), Some(b'u' | b'U')) && hex_prefix(&rest[1..], 4).1 == 4
    })
}

/// Runs the pipeline on one field value. `already_decoded` says whether a form parser already
/// undid one layer of percent-encoding (query and form arguments), so that a further layer
/// counts as multiple encoding. Each pass runs only when the value holds a byte it acts on,
/// which one scan of the value tells; most values hold none and are not copied.
pub fn decode(raw: &[u8], already_decoded: bool) -> Decoded<'_> {
    let mut evasions = Evasions::default();
    let mut text = Cow::Borrowed(raw);
    let mut present = ByteSet::present_in(raw);
    let mut percent_rounds = 0;
    while percent_rounds < MAX_PERCENT_ROUNDS
        && present.contains(b'%')
        && holds_percent_escape(&text)
    {
        let (next, saw_percent_u) = percent_decode(&text);
        if saw_percent_u {
            evasions.insert(Evasions::PERCENT_U);
        }
        present = ByteSet::present_in(&next);
        text = Cow::Owned(next);
        percent_rounds += 1;
    }
    if percent_rounds > usize::from(!already_decoded) {
        evasions.insert(Evasions::MULTIPLE_ENCODING);
    }
    let ascii = !present.intersects(NON_ASCII);
    if present.intersects(OVERLONG_LEADS)
        && let Some(folded) = fold_overlong_utf8(&text)
    {
        text = Cow::Owned(folded);
        evasions.insert(Evasions::OVERLONG_UTF8);
    }
    // `present` is the byte set before the overlong fold, which is right here: that fold only
    // writes characters below U+0800, never the byte 0xEF.
    if present.contains(FULLWIDTH_LEAD)
        && let Some(folded) = fold_fullwidth(&text)
    {
        text = Cow::Owned(folded);
        evasions.insert(Evasions::FULLWIDTH);
    }
    if evasions.contains(Evasions::OVERLONG_UTF8) || evasions.contains(Evasions::FULLWIDTH) {
        // An overlong `C0 80` folds to a NUL.
        present = ByteSet::present_in(&text);
    }
    if present.contains(0) {
        text.to_mut().retain(|&byte| byte != 0);
        evasions.insert(Evasions::NUL);
        present = ByteSet::present_in(&text);
    }
    if !ascii && std::str::from_utf8(&text).is_err() {
        evasions.insert(Evasions::INVALID_UTF8);
    }
    let markup = if present.intersects(ByteSet::of(b"&\\")) && may_hold_escapes(&text) {
        // Each pass copies the value: one without its marker is left out (entities can make a
        // `\\`, so the escapes are asked of what the entities gave).
        let entities: Cow<'_, [u8]> = if present.contains(b'&') {
            Cow::Owned(decode_entities(&text))
        } else {
            Cow::Borrowed(&text)
        };
        let decoded = if memchr::memchr(b'\\', &entities).is_some() {
            decode_escapes(&entities)
        } else {
            entities.into_owned()
        };
        (decoded != *text).then_some(decoded)
    } else {
        None
    };
    Decoded {
        text,
        markup,
        evasions,
        percent_rounds,
        text_bytes: present,
    }
}

/// Whether `decode_entities` or `decode_escapes` could change `text`: an entity is `&` then `#`
/// or a letter (every name in `NAMED_ENTITIES` starts with one), an escape starts with `\`.
/// Prose with a bare `&` (`rock & roll`) skips both passes and their copies.
fn may_hold_escapes(text: &[u8]) -> bool {
    let Some(first) = memchr::memchr2(b'&', b'\\', text) else {
        return false;
    };
    let text = &text[first..];
    memchr::memchr(b'\\', text).is_some()
        || memchr::memchr_iter(b'&', text).any(|at| {
            text.get(at + 1)
                .is_some_and(|&next| next == b'#' || next.is_ascii_alphabetic())
        })
}

fn hex_value(byte: u8) -> Option<u32> {
    char::from(byte).to_digit(16)
}

/// Reads up to `max` hex digits at the start of `bytes`: (value, digits read).
fn hex_prefix(bytes: &[u8], max: usize) -> (u32, usize) {
    let mut value: u32 = 0;
    let mut digits = 0;
    for &byte in bytes.iter().take(max) {
        match hex_value(byte) {
            Some(digit) => {
                value = value.saturating_mul(16).saturating_add(digit);
                digits += 1;
            }
            None => break,
        }
    }
    (value, digits)
}

fn push_char(out: &mut Vec<u8>, code: u32) {
    let ch = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut buf = [0; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

/// One round of `%XX` and IIS's `%uXXXX`. Returns whether a `%u` form was seen.
fn percent_decode(input: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(input.len());
    let mut saw_percent_u = false;
    let mut i = 0;
    while i < input.len() {
        let byte = input[i];
        if byte == b'%' {
            let rest = &input[i + 1..];
            if let [b'u' | b'U', tail @ ..] = rest {
                let (code, digits) = hex_prefix(tail, 4);
                if digits == 4 {
                    push_char(&mut out, code);
                    saw_percent_u = true;
                    i += 6;
                    continue;
                }
            }
            let (value, digits) = hex_prefix(rest, 2);
            if digits == 2 {
                out.push(value as u8);
                i += 3;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    (out, saw_percent_u)
}

/// Replaces overlong UTF-8 sequences (`C0 AE` for `.`, `E0 80 AF` for `/`) with the ASCII they
/// encode: strict decoders reject them, but old ones and some path handlers accept them, which
/// made them a classic traversal evasion. Returns the folded text when any were found.
fn fold_overlong_utf8(text: &[u8]) -> Option<Vec<u8>> {
    let is_continuation = |byte: u8| byte & 0xC0 == 0x80;
    let mut found = false;
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let byte = text[i];
        match (byte, text.get(i + 1).copied(), text.get(i + 2).copied()) {
            (0xC0 | 0xC1, Some(second), _) if is_continuation(second) => {
                let code = (u32::from(byte & 0x1F) << 6) | u32::from(second & 0x3F);
                push_char(&mut out, code);
                found = true;
                i += 2;
            }
            (0xE0, Some(second), Some(third))
                if (0x80..0xA0).contains(&second) && is_continuation(third) =>
            {
                let code = (u32::from(second & 0x3F) << 6) | u32::from(third & 0x3F);
                push_char(&mut out, code);
                found = true;
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    found.then_some(out)
}

/// Replaces fullwidth ASCII (U+FF01–U+FF5E, `＜script＞`) with ASCII: Windows' best-fit
/// mapping and Unicode normalization (NFKC) in frameworks turn them into markup after the WAF
/// has looked. Each is three bytes in UTF-8 and becomes one. Returns the folded text when any
/// were found.
fn fold_fullwidth(text: &[u8]) -> Option<Vec<u8>> {
    // U+FF01..U+FF5E is EF BC 81..BF and EF BD 80..9E.
    let is_fullwidth = |window: &[u8]| {
        matches!(
            window,
            [0xEF, 0xBC, 0x81..=0xBF] | [0xEF, 0xBD, 0x80..=0x9E]
        )
    };
    if !text.windows(3).any(is_fullwidth) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text.get(i..i + 3) {
            Some(window) if is_fullwidth(window) => {
                let code =
                    0xFF00 + (u32::from(window[1] & 0x03) << 6) + u32::from(window[2] & 0x3F);
                out.push((code - 0xFF00 + 0x20) as u8);
                i += 3;
            }
            _ => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Named entities that spell markup, URL or script syntax. Browsers know two thousand more, but
/// those decode to letters and symbols no detector keys on.
const NAMED_ENTITIES: &[(&[u8], u8)] = &[
    (b"lt", b'<'),
    (b"gt", b'>'),
    (b"amp", b'&'),
    (b"quot", b'"'),
    (b"apos", b'\''),
    (b"colon", b':'),
    (b"semi", b';'),
    (b"sol", b'/'),
    (b"bsol", b'\\'),
    (b"lpar", b'('),
    (b"rpar", b')'),
    (b"equals", b'='),
    (b"grave", b'`'),
    (b"tab", b'\t'),
    (b"newline", b'\n'),
    (b"nbsp", b' '),
    (b"period", b'.'),
    (b"comma", b','),
    (b"excl", b'!'),
    (b"lsqb", b'['),
    (b"rsqb", b']'),
    (b"lcub", b'{'),
    (b"rcub", b'}'),
];

/// Decodes `&#60;`, `&#x3c;` (with or without `;`, any number of leading zeros, as browsers
/// do) and the named entities above. The bytes between two `&` are copied as one run.
fn decode_entities(input: &[u8]) -> Vec<u8> {
    decode_at_each(input, b'&', decode_entity_at)
}

/// Decodes JS escapes (`\x3c`, `\u003c`, `\u{3c}`) and CSS escapes (`\3c `, `\00003c`). The
/// bytes between two `\` are copied as one run.
fn decode_escapes(input: &[u8]) -> Vec<u8> {
    decode_at_each(input, b'\\', decode_escape_at)
}

/// `input` with each `marker` handed to `decode_at`, which pushes what the sequence starting
/// there decodes to and says how many bytes it took; the runs between markers are copied.
fn decode_at_each(
    input: &[u8],
    marker: u8,
    decode_at: fn(&[u8], usize, &mut Vec<u8>) -> usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(run) = memchr::memchr(marker, &input[i..]) {
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        i += decode_at(input, i, &mut out);
    }
    out.extend_from_slice(&input[i..]);
    out
}

/// The entity at `input[i]` (an `&`): pushes what it decodes to, or the `&` alone, and returns
/// how many bytes it took.
fn decode_entity_at(input: &[u8], i: usize, out: &mut Vec<u8>) -> usize {
    let rest = &input[i + 1..];
    if let [b'#', tail @ ..] = rest {
        let (hex, digits_at) = match tail {
            [b'x' | b'X', ..] => (true, 1),
            _ => (false, 0),
        };
        let digits = &tail[digits_at..];
        let count = digits
            .iter()
            .take(16)
            .take_while(|byte| {
                if hex {
                    byte.is_ascii_hexdigit()
                } else {
                    byte.is_ascii_digit()
                }
            })
            .count();
        if count > 0 {
            let radix = if hex { 16 } else { 10 };
            let code = digits[..count].iter().fold(0u32, |acc, &byte| {
                acc.saturating_mul(radix)
                    .saturating_add(char::from(byte).to_digit(radix).unwrap_or(0))
            });
            push_char(out, code);
            let mut consumed = 1 + 1 + digits_at + count;
            if input.get(i + consumed) == Some(&b';') {
                consumed += 1;
            }
            return consumed;
        }
    } else if let Some((name, byte)) = NAMED_ENTITIES.iter().find(|(name, _)| {
        rest.len() > name.len()
            && rest[..name.len()].eq_ignore_ascii_case(name)
            && rest[name.len()] == b';'
    }) {
        out.push(*byte);
        return 1 + name.len() + 1;
    }
    out.push(b'&');
    1
}

/// The escape at `input[i]` (a `\`): pushes what it decodes to, or the `\` alone, and returns
/// how many bytes it took.
fn decode_escape_at(input: &[u8], i: usize, out: &mut Vec<u8>) -> usize {
    let rest = &input[i + 1..];
    match rest {
        [b'x', tail @ ..] if hex_prefix(tail, 2).1 == 2 => {
            push_char(out, hex_prefix(tail, 2).0);
            4
        }
        [b'u', b'{', tail @ ..] => {
            let (code, digits) = hex_prefix(tail, 6);
            if digits > 0 && tail.get(digits) == Some(&b'}') {
                push_char(out, code);
                3 + digits + 1
            } else {
                out.push(b'\\');
                1
            }
        }
        [b'u', tail @ ..] if hex_prefix(tail, 4).1 == 4 => {
            push_char(out, hex_prefix(tail, 4).0);
            6
        }
        _ => {
            let (code, digits) = hex_prefix(rest, 6);
            if digits > 0 {
                push_char(out, code);
                let mut consumed = 1 + digits;
                if matches!(input.get(i + consumed), Some(b' ' | b'\t' | b'\n')) {
                    consumed += 1;
                }
                consumed
            } else {
                out.push(b'\\');
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `holds_percent_escape`, which lets a value skip the percent-decoding rounds, says yes
    /// exactly when a round would change the value: on every string of up to seven bytes of
    /// `%`, `u`, hex digits and a letter that is not one.
    #[test]
    fn the_percent_gate_answers_as_decoding_would() {
        crate::every_string(b"%uU2fg", 7, |value| {
            let changes = percent_decode(value).0 != value;
            assert_eq!(holds_percent_escape(value), changes, "{value:?}");
        });
    }

    /// The decoders as they were, a byte at a time: what copying runs must give.
    fn decode_at_each_by_byte(
        input: &[u8],
        marker: u8,
        decode_at: fn(&[u8], usize, &mut Vec<u8>) -> usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            if input[i] == marker {
                i += decode_at(input, i, &mut out);
            } else {
                out.push(input[i]);
                i += 1;
            }
        }
        out
    }

    /// Copying the runs between markers decodes every string of up to six bytes of entity and
    /// escape syntax as the byte-at-a-time loop did.
    #[test]
    fn copying_runs_decodes_as_byte_by_byte() {
        crate::every_string(b"&#x3;a\\u{} ", 6, |value| {
            assert_eq!(
                decode_entities(value),
                decode_at_each_by_byte(value, b'&', decode_entity_at),
                "{value:?}"
            );
            assert_eq!(
                decode_escapes(value),
                decode_at_each_by_byte(value, b'\\', decode_escape_at),
                "{value:?}"
            );
        });
        for value in [
            &b"&lt;&amp;&quot;x&#60&#x3c;"[..],
            b"\\3c \\u003c\\u{3c}\\x3c\\",
        ] {
            assert_eq!(
                decode_entities(value),
                decode_at_each_by_byte(value, b'&', decode_entity_at)
            );
            assert_eq!(
                decode_escapes(value),
                decode_at_each_by_byte(value, b'\\', decode_escape_at)
            );
        }
    }

    #[test]
    fn every_named_entity_passes_the_escape_prefilter() {
        for (name, _) in NAMED_ENTITIES {
            let entity = [&b"&"[..], name, b";"].concat();
            assert!(
                may_hold_escapes(&entity),
                "{}",
                String::from_utf8_lossy(&entity)
            );
        }
        assert!(may_hold_escapes(b"&#60;") && may_hold_escapes(b"\\x3c"));
        assert!(!may_hold_escapes(b"rock & roll &&"));
        assert_eq!(decode(b"rock & roll &&", false).markup, None);
    }

    #[test]
    fn percent_decoding_repeats_and_flags_layers() {
        let decoded = decode(b"%252e%252e%252fetc", true);
        assert_eq!(&decoded.text[..], b"../etc");
        assert!(decoded.evasions.contains(Evasions::MULTIPLE_ENCODING));

        let once = decode(b"%2e%2e/etc", false);
        assert_eq!(&once.text[..], b"../etc");
        assert!(!once.evasions.contains(Evasions::MULTIPLE_ENCODING));
    }

    #[test]
    fn percent_rounds_are_capped() {
        let decoded = decode(b"%2525252e", false);
        assert_eq!(decoded.percent_rounds, MAX_PERCENT_ROUNDS);
        assert_eq!(&decoded.text[..], b"%2e");
    }

    #[test]
    fn percent_u_overlong_and_nul_are_undone_and_flagged() {
        let decoded = decode(b"%u003cscript%c0%ae%c0%ae/a%00b", false);
        assert_eq!(&decoded.text[..], b"<script../ab");
        for flag in [Evasions::PERCENT_U, Evasions::OVERLONG_UTF8, Evasions::NUL] {
            assert!(decoded.evasions.contains(flag), "{:?}", decoded.evasions);
        }
    }

    #[test]
    fn fullwidth_forms_fold_to_ascii() {
        let decoded = decode("%uff1cscript%uff1e ＜/script＞".as_bytes(), false);
        assert_eq!(&decoded.text[..], b"<script> </script>");
        assert!(decoded.evasions.contains(Evasions::FULLWIDTH));
    }

    #[test]
    fn entities_and_escapes_give_the_markup_form() {
        let decoded = decode(b"java&#x73;cript&colon;alert&#40;1&rpar;", true);
        assert_eq!(decoded.markup.as_deref(), Some(&b"javascript:alert(1)"[..]));
        let decoded = decode(br"\x3cimg src=x onerror=\u0061lert(1)\u{3e}", true);
        assert_eq!(
            decoded.markup.as_deref(),
            Some(&b"<img src=x onerror=alert(1)>"[..])
        );
        let decoded = decode(br"\3c svg\3e", true);
        assert_eq!(decoded.markup.as_deref(), Some(&b"<svg>"[..]));
        // An entity that makes a backslash, which then starts an escape.
        let decoded = decode(b"&#92;x3cscript&bsol;x3e", true);
        assert_eq!(decoded.markup.as_deref(), Some(&b"<script>"[..]));
    }

    #[test]
    fn plain_text_has_no_markup_form_and_no_evasions() {
        let decoded = decode(b"O'Brien & sons, 100% sure", true);
        assert_eq!(decoded.markup, None);
        assert!(decoded.evasions.is_empty());
        assert_eq!(&decoded.text[..], b"O'Brien & sons, 100% sure");
    }

    #[test]
    fn outputs_never_grow() {
        for input in [
            &b"%u{10FFFF}&#x10FFFF;\\u{10FFFF}"[..],
            b"&#1114111",
            b"\\10FFFF",
        ] {
            let decoded = decode(input, false);
            assert!(decoded.text.len() <= input.len());
            if let Some(markup) = decoded.markup {
                assert!(
                    markup.len() <= input.len(),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }
}
