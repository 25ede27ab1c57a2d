//! Path traversal and local file inclusion.
//!
//! After the decoding pipeline, a value is read as a path the way both POSIX and Windows
//! servers would: `\` is a separator, `;params` after a segment are dropped (`..;/` is `../` to
//! Tomcat), `::$DATA` and trailing dots and spaces are stripped (NTFS ignores them). The
//! segments are then resolved. The value is an attack when resolving climbs above the directory
//! it starts in, or when it names a file no request should (`/etc/passwd`, `win.ini`, `.env`,
//! `.git/`). Prose is never read as a path: a value with whitespace between words is only
//! checked for climbing.

use super::{ByteSet, Detector, Form, Hit, Rule, Severity, find_ignoring_ascii_case};

pub static ESCAPES_ROOT: Rule = Rule {
    id: 930100,
    detector: Detector::Traversal,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Path traversal: the path climbs above its starting directory",
};

pub static SENSITIVE_FILE: Rule = Rule {
    id: 930120,
    detector: Detector::Traversal,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Local file inclusion: the path names an operating-system or secret file",
};

pub static ALTERNATE_STREAM: Rule = Rule {
    id: 930110,
    detector: Detector::Traversal,
    severity: Severity::Critical,
    paranoia: 1,
    description: "Path evasion: an NTFS alternate data stream (`::$DATA`)",
};

pub static RULES: &[&Rule] = &[&ESCAPES_ROOT, &ALTERNATE_STREAM, &SENSITIVE_FILE];

/// Files and directories that reveal credentials or system configuration. Each is matched as
/// whole trailing segments of the resolved path, case-insensitively (Windows folds case).
pub(crate) const SENSITIVE_PATHS: &[&str] = &[
    "etc/passwd",
    "etc/shadow",
    "etc/group",
    "etc/hosts",
    "etc/issue",
    "etc/sudoers",
    "etc/crontab",
    "etc/master.passwd",
    "etc/security/passwd",
    "etc/mysql/my.cnf",
    "etc/httpd/conf/httpd.conf",
    "etc/apache2/apache2.conf",
    "etc/nginx/nginx.conf",
    "proc/self/environ",
    "proc/self/cmdline",
    "proc/self/fd",
    "proc/version",
    "var/log/auth.log",
    "root/.bash_history",
    "boot.ini",
    "win.ini",
    "system.ini",
    "windows/system32/config/sam",
    "windows/repair/sam",
    "windows/system32/drivers/etc/hosts",
    "inetpub/wwwroot/web.config",
    "web-inf/web.xml",
    "meta-inf/manifest.mf",
    ".env",
    ".htaccess",
    ".htpasswd",
    ".bash_history",
    ".ssh/id_rsa",
    ".ssh/authorized_keys",
    ".aws/credentials",
    ".git/config",
    ".git/head",
    ".svn/entries",
    ".ds_store",
    "wp-config.php",
];

/// Directories whose presence anywhere in a path is a probe (`/.git/objects/..`).
const SENSITIVE_DIRS: &[&str] = &[".git", ".svn", ".hg", ".ssh", ".aws"];

/// Reports traversal in one decoded form.
pub fn detect(form: &Form<'_>, hits: &mut Vec<Hit>) {
    if !form.holds_any(ByteSet::of(b"./\\:")) {
        return;
    }
    let bytes = form.bytes();
    let looks_like_path = !form.holds_any(ByteSet::of(b" \t\n"))
        || memchr::memchr3(b' ', b'\t', b'\n', form.text().trim().as_bytes()).is_none();
    if !looks_like_path && !form.holds_pair(*b"..") {
        // Prose is only checked for climbing, and climbing needs a `..` segment.
        return;
    }
    let stream = form
        .holds(b'$')
        .then(|| find_ignoring_ascii_case(bytes, b"::$data"))
        .flatten();
    if looks_like_path && let Some(at) = stream {
        hits.push(Hit::new(&ALTERNATE_STREAM, at..at + 7, "::$DATA"));
    }
    let text = form.text();
    let resolved = resolve(&text, form.holds(b';'), stream.is_some());
    if resolved.escapes {
        hits.push(Hit::new(
            &ESCAPES_ROOT,
            0..bytes.len(),
            format!("../{}", resolved.segments.join("/")),
        ));
    }
    if (looks_like_path || resolved.escapes)
        && let Some(name) = sensitive_match(&resolved.segments)
    {
        hits.push(Hit::new(&SENSITIVE_FILE, 0..bytes.len(), name));
    }
}

/// A path resolved against an unknown starting directory. Every proxied request's path comes
/// through here, so the segments borrow from the value: the list is the one allocation.
struct Resolved<'a> {
    segments: Vec<&'a str>,
    /// Whether a `..` climbed above the start.
    escapes: bool,
}

/// Resolves `text`; `params` and `streams` say whether it holds a `;` and a `::$DATA` at all,
/// so that a path without them is not searched for them segment by segment.
fn resolve(text: &str, params: bool, streams: bool) -> Resolved<'_> {
    // Room for most paths' segments at once: growing from empty took two allocations.
    let mut segments: Vec<&str> = Vec::with_capacity(8);
    let mut escapes = false;
    for raw in path_segments(text) {
        // Tomcat and Jetty drop `;params` in a segment; NTFS drops trailing dots, spaces
        // and the `::$DATA` stream name.
        let segment = match params.then(|| raw.find(';')).flatten() {
            Some(at) => &raw[..at],
            None => raw,
        };
        // The stream name is ASCII, so where it starts is a character boundary.
        let segment = match streams
            .then(|| find_ignoring_ascii_case(segment.as_bytes(), b"::$data"))
            .flatten()
        {
            Some(at) => &segment[..at],
            None => segment,
        };
        let trimmed = segment.trim_end_matches([' ', '.']);
        let is_parent = segment.starts_with("..") && trimmed.is_empty();
        if is_parent {
            if segments.pop().is_none() {
                escapes = true;
            }
        } else if !(trimmed.is_empty() || segment == ".") {
            segments.push(trimmed);
        }
    }
    Resolved { segments, escapes }
}

/// `text` split at every `/` and `\`, as `str::split` with the two would: both are ASCII, so
/// every split falls on a character boundary, and `memchr2` finds them where `split` decoded
/// every character.
fn path_segments(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr2_iter(b'/', b'\\', text.as_bytes())
        .chain(std::iter::once(text.len()))
        .map(move |end| {
            let segment = text.get(start..end).unwrap_or_default();
            start = end + 1;
            segment
        })
}

/// The sensitive file or directory the resolved path names, compared from its last segment
/// back and ignoring ASCII case (Windows folds case).
fn sensitive_match(segments: &[&str]) -> Option<String> {
    let last = segments.last()?.as_bytes();
    let names = |known: &str| {
        // Most paths end in none of the names: compare the last segment before splitting.
        let Some(start) = known.len().checked_sub(last.len()) else {
            return false;
        };
        if !known.as_bytes()[start..].eq_ignore_ascii_case(last)
            || start > 0 && known.as_bytes()[start - 1] != b'/'
        {
            return false;
        }
        let mut tail = segments.iter().rev();
        known.rsplit('/').all(|part| {
            tail.next()
                .is_some_and(|segment| segment.eq_ignore_ascii_case(part))
        })
    };
    if let Some(known) = SENSITIVE_PATHS.iter().find(|known| names(known)) {
        return Some((*known).to_owned());
    }
    segments
        .iter()
        .take(segments.len().saturating_sub(1))
        .find_map(|segment| {
            SENSITIVE_DIRS
                .iter()
                .find(|dir| segment.eq_ignore_ascii_case(dir))
        })
        .map(|dir| format!("{dir}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_ids(input: &str) -> Vec<u32> {
        super::super::rule_ids_of(detect, input)
    }

    #[test]
    fn path_segments_split_as_str_split_does() {
        crate::every_string(b"a/\\\xC3\xA9", 6, |bytes| {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let split: Vec<&str> = text.split(['/', '\\']).collect();
                assert_eq!(path_segments(text).collect::<Vec<_>>(), split, "{text:?}");
            }
        });
    }

    #[test]
    fn climbing_out_fires_on_posix_and_windows_forms() {
        for attack in [
            "../../../../tmp/x",
            "..\\..\\..\\boot",
            "..;/..;/admin",
            "foo/../../bar",
            ".../.../x/../../..",
            "....//....//x",
        ] {
            assert!(rule_ids(attack).contains(&930100), "{attack}");
        }
    }

    #[test]
    fn sensitive_files_fire_with_or_without_climbing() {
        for attack in [
            "/etc/passwd",
            "../../etc/passwd",
            "C:\\Windows\\win.ini",
            "/var/www/.env",
            "/app/.git/config",
            "/repo/.git/objects/ab",
            "/etc/passwd::$DATA",
            "..\\..\\BOOT.INI",
        ] {
            assert!(rule_ids(attack).contains(&930120), "{attack}");
        }
        assert!(rule_ids("index.php::$DATA").contains(&930110));
    }

    #[test]
    fn ordinary_paths_and_prose_pass() {
        for benign in [
            "/docs/guide/../intro.html",
            "images/2024/cat.png",
            "Please see ../ above... it explains",
            "I edit my .env file every day",
            "v1.2.3",
            "https://example.com/a/b",
            "wait... what?",
            "C:\\Users\\me\\report.docx",
        ] {
            assert_eq!(rule_ids(benign), Vec::<u32>::new(), "{benign}");
        }
    }
}
