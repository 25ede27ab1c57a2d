//! Hidden paths: API documentation (`/docs`, `/redoc`, `/openapi.json` and configured ones)
//! answers 404 in production, so an attacker does not get the API's map for free.

/// Whether the normalized `path` is, or lies under, one of `hidden`.
pub(crate) fn is_hidden(hidden: &[String], path: &str) -> bool {
    hidden.iter().any(|prefix| {
        let prefix = prefix.trim_end_matches('/');
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_docs_and_what_lies_under_them_only() {
        let hidden = vec!["/docs".to_owned(), "/openapi.json".to_owned()];
        assert!(is_hidden(&hidden, "/docs"));
        assert!(is_hidden(&hidden, "/docs/"));
        assert!(is_hidden(&hidden, "/docs/oauth2-redirect"));
        assert!(is_hidden(&hidden, "/openapi.json"));
        assert!(!is_hidden(&hidden, "/docsearch"));
        assert!(!is_hidden(&hidden, "/api/docs-list"));
    }
}
