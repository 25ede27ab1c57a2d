//! Cross-site request forgery: an unsafe request authenticated by cookie must come from the
//! gateway's own origin. `Origin` decides when present; otherwise `Sec-Fetch-Site`; a request
//! with neither comes from no browser we must protect (browsers send one of them on every
//! unsafe request since 2020) and passes. Bearer-token requests never reach this check.

use http::{HeaderMap, Method};

/// Whether `method` changes state.
pub(crate) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a cookie-authenticated request may proceed. `host` is the request's validated host
/// (lower-case, without port) and `secure` whether it came over HTTPS.
pub(crate) fn same_origin(headers: &HeaderMap, host: Option<&str>, secure: bool) -> bool {
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Ok(uri) = origin.parse::<http::Uri>() else {
            return false;
        };
        let scheme_ok = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => !secure,
            _ => false,
        };
        let origin_host = uri
            .host()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        return scheme_ok && origin_host.is_some() && origin_host.as_deref() == host;
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin" | "none") | None => true,
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn origin_decides() {
        assert!(same_origin(
            &with("origin", "https://app.example.com"),
            Some("app.example.com"),
            true
        ));
        assert!(!same_origin(
            &with("origin", "https://evil.example"),
            Some("app.example.com"),
            true
        ));
        assert!(!same_origin(
            &with("origin", "null"),
            Some("app.example.com"),
            true
        ));
        // A plain-HTTP origin cannot act on an HTTPS site.
        assert!(!same_origin(
            &with("origin", "http://app.example.com"),
            Some("app.example.com"),
            true
        ));
    }

    #[test]
    fn fetch_metadata_decides_without_origin() {
        assert!(same_origin(
            &with("sec-fetch-site", "same-origin"),
            Some("a.example"),
            true
        ));
        assert!(!same_origin(
            &with("sec-fetch-site", "cross-site"),
            Some("a.example"),
            true
        ));
        assert!(!same_origin(
            &with("sec-fetch-site", "same-site"),
            Some("a.example"),
            true
        ));
        assert!(same_origin(&HeaderMap::new(), Some("a.example"), true));
    }
}
