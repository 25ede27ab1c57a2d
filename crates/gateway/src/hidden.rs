//! Paths answered 404 whatever the routes say: hidden paths (API documentation, `/docs`,
//! `/redoc`, `/openapi.json` and configured ones, in production, so an attacker does not get the
//! API's map for free) and honeypot traps (`/.env`, `/.git/config`, ...: files no site serves
//! and no honest client asks for, so a request for one is an event and, by default, a ban).

/// Whether the normalized `path` is, or lies under, one of `prefixes`.
pub(crate) fn under_any(prefixes: &[String], path: &str) -> bool {
    prefixes.iter().any(|prefix| {
        let prefix = prefix.trim_end_matches('/');
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_paths_and_what_lies_under_them_only() {
        let hidden = vec!["/docs".to_owned(), "/openapi.json".to_owned()];
        assert!(under_any(&hidden, "/docs"));
        assert!(under_any(&hidden, "/docs/"));
        assert!(under_any(&hidden, "/docs/oauth2-redirect"));
        assert!(under_any(&hidden, "/openapi.json"));
        assert!(!under_any(&hidden, "/docsearch"));
        assert!(!under_any(&hidden, "/api/docs-list"));
    }
}
