//! The common-password list shipped in the binary: the 100,000 most frequent passwords of
//! SecLists' 10-million list (`data/NOTICE.md`). Attackers try these first, so no account may
//! have one.

use std::collections::HashSet;
use std::sync::LazyLock;

static LIST: &str = include_str!("../../data/common-passwords.txt");

static SET: LazyLock<HashSet<&'static str>> = LazyLock::new(|| LIST.lines().collect());

/// How many passwords the list holds.
pub fn list_len() -> usize {
    SET.len()
}

/// Whether `password`, as typed or lower-cased, is on the list.
pub fn is_common(password: &str) -> bool {
    SET.contains(password) || SET.contains(password.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_100000_passwords() {
        assert_eq!(list_len(), 100_000);
        assert!(is_common("123456"));
        assert!(is_common("PASSWORD"));
        assert!(is_common("iloveyou"));
        assert!(!is_common("correct horse battery staple 1729"));
    }
}
