//! Anomalies that only stricter sites want blocked: the higher paranoia levels.
//!
//! None of these is an attack by itself. A value dense with the characters injections are made
//! of, a byte outside printable ASCII, or HTML in a field, are unusual enough that a site with
//! plain forms may refuse them (CRS 942430–942432, 920272, 941320). They count only from
//! paranoia 2, 3 or 4, and score as warnings or errors, so they add to other evidence rather
//! than block alone at the lower levels.

use super::{Detector, Form, Hit, Rule, Severity};

pub static SPECIAL_CHARACTERS_12: Rule = Rule {
    id: 942430,
    detector: Detector::Sqli,
    severity: Severity::Warning,
    paranoia: 2,
    description: "Anomaly: 12 or more characters injections are built from (quotes, operators, brackets)",
};

pub static SPECIAL_CHARACTERS_6: Rule = Rule {
    id: 942431,
    detector: Detector::Sqli,
    severity: Severity::Warning,
    paranoia: 3,
    description: "Anomaly: 6 or more characters injections are built from",
};

pub static SPECIAL_CHARACTERS_2: Rule = Rule {
    id: 942432,
    detector: Detector::Sqli,
    severity: Severity::Warning,
    paranoia: 4,
    description: "Anomaly: 2 or more characters injections are built from",
};

pub static HTML_TAG: Rule = Rule {
    id: 941320,
    detector: Detector::Xss,
    severity: Severity::Critical,
    paranoia: 2,
    description: "Anomaly: an HTML tag in a value",
};

pub static OUTSIDE_PRINTABLE_ASCII: Rule = Rule {
    id: 920272,
    detector: Detector::Protocol,
    severity: Severity::Critical,
    paranoia: 3,
    description: "Anomaly: a byte outside printable ASCII (32–126, tab, newline)",
};

pub static RULES: &[&Rule] = &[
    &SPECIAL_CHARACTERS_12,
    &SPECIAL_CHARACTERS_6,
    &SPECIAL_CHARACTERS_2,
    &HTML_TAG,
    &OUTSIDE_PRINTABLE_ASCII,
];

/// The characters CRS 942430 counts.
fn is_special(byte: u8) -> bool {
    b"~!@#$%^&*()-+={}[]|:;\"'`<>".contains(&byte)
}

/// Reports the anomalies of one decoded form.
pub fn detect(form: &Form<'_>, hits: &mut Vec<Hit>) {
    let form = form.bytes();
    let special = form.iter().filter(|&&byte| is_special(byte)).count();
    let rule = match special {
        12.. => Some(&SPECIAL_CHARACTERS_12),
        6.. => Some(&SPECIAL_CHARACTERS_6),
        2.. => Some(&SPECIAL_CHARACTERS_2),
        _ => None,
    };
    if let Some(rule) = rule {
        hits.push(Hit::new(
            rule,
            0..form.len(),
            format!("{special} special characters"),
        ));
    }
    if let Some(at) = form.windows(2).position(|pair| {
        pair[0] == b'<' && (pair[1].is_ascii_alphabetic() || pair[1] == b'/' || pair[1] == b'!')
    }) {
        let end = form[at..]
            .iter()
            .position(|&byte| byte == b'>')
            .map_or(form.len(), |close| at + close + 1);
        hits.push(Hit::new(&HTML_TAG, at..end, "tag"));
    }
    if let Some(at) = form.iter().position(|&byte| {
        !(byte == b'\t' || byte == b'\n' || byte == b'\r' || (32..=126).contains(&byte))
    }) {
        hits.push(Hit::new(
            &OUTSIDE_PRINTABLE_ASCII,
            at..at + 1,
            format!("0x{:02x}", form[at]),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_ids(input: &[u8]) -> Vec<u32> {
        super::super::rule_ids_of(detect, input)
    }

    #[test]
    fn density_picks_the_level() {
        assert_eq!(rule_ids(b"plain words only"), Vec::<u32>::new());
        assert_eq!(rule_ids(b"it's (fine) -- ok!"), vec![942431]);
        assert_eq!(rule_ids(b"a 'b'"), vec![942432]);
        assert_eq!(rule_ids(b"'||(select(1))||'#--;"), vec![942430]);
    }

    #[test]
    fn tags_and_bytes_outside_ascii() {
        assert!(rule_ids(b"see <b>this</b>").contains(&941320));
        assert!(!rule_ids(b"x < y and y > z").contains(&941320));
        assert_eq!(rule_ids("Zoë".as_bytes()), vec![920272]);
    }
}
