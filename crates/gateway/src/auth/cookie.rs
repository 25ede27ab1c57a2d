//! The session cookie: read from `Cookie`, written as `__Host-...; Secure; HttpOnly;
//! SameSite=Lax; Path=/`, and removed from what the upstream receives.

use std::time::Duration;

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// The value of cookie `name`, when the request carries exactly one distinct value for it. Two
/// different values (cookie tossing from a sibling host) count as none: fail closed.
pub(crate) fn read<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found: Option<&str> = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key != name {
                continue;
            }
            match found {
                Some(previous) if previous != value => return None,
                _ => found = Some(value),
            }
        }
    }
    found
}

/// `Set-Cookie` for a new session.
pub(crate) fn set(name: &str, token: &str, max_age: Duration) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={token}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        max_age.as_secs()
    ))
    .ok()
}

/// Adds the device cookie (`device`, when there is one) to `response`.
/// The "remember this device" cookie: a login from this browser skips the second factor.
pub(crate) const TRUSTED_DEVICE: &str = "__Host-portcullis_trusted";

pub(crate) fn append_device(
    response: &mut http::Response<crate::body::Body>,
    settings: &crate::settings::IdentitySettings,
    device: Option<&str>,
) {
    if let Some(cookie) = device.and_then(|device| {
        set(
            &settings.device_cookie_name,
            device,
            settings.device_cookie_max_age,
        )
    }) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear(name: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
    ))
    .ok()
}

/// Drops cookie `name` from the request's `Cookie` headers, keeping every other cookie.
pub(crate) fn remove_from_request(headers: &mut HeaderMap, name: &str) {
    // Runs on every proxied request: no allocation unless the cookie is there.
    let is_ours = |pair: &str| {
        pair.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('='))
    };
    let holds = |value: &HeaderValue| {
        value
            .to_str()
            .is_ok_and(|text| text.split(';').any(|pair| is_ours(pair.trim())))
    };
    if !headers.get_all(header::COOKIE).iter().any(holds) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_ours(pair))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "__Host-portcullis_session";

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(
                header::COOKIE,
                HeaderValue::from_str(cookie).unwrap_or(HeaderValue::from_static("")),
            );
        }
        headers
    }

    #[test]
    fn reads_the_session_among_other_cookies() {
        let h = headers(&["theme=dark; __Host-portcullis_session=abc", "lang=en"]);
        assert_eq!(read(&h, NAME), Some("abc"));
        assert_eq!(read(&headers(&["theme=dark"]), NAME), None);
    }

    #[test]
    fn two_different_values_count_as_none() {
        let h = headers(&["__Host-portcullis_session=abc; __Host-portcullis_session=xyz"]);
        assert_eq!(read(&h, NAME), None);
    }

    #[test]
    fn the_upstream_gets_every_cookie_but_the_session() {
        let mut h = headers(&["theme=dark; __Host-portcullis_session=abc", "lang=en"]);
        remove_from_request(&mut h, NAME);
        let left: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, vec![HeaderValue::from_static("theme=dark; lang=en")]);
        let mut only = headers(&["__Host-portcullis_session=abc"]);
        remove_from_request(&mut only, NAME);
        assert!(only.get(header::COOKIE).is_none());
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let value = set(NAME, "tok", Duration::from_secs(3600))
            .map(|v| v.to_str().unwrap_or("").to_owned());
        assert_eq!(
            value.as_deref(),
            Some(
                "__Host-portcullis_session=tok; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
            )
        );
    }
}
