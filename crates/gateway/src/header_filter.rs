//! Which headers cross the gateway, decided in one pass over each message.
//!
//! Removing every unwanted name one by one (hop-by-hop, forwarding, fingerprints: some thirty
//! names) parsed, hashed and looked each up on every request. Instead the names present are
//! matched once, and only those to drop are removed: usually none or one, with no allocation.

use http::header::{self, HeaderMap, HeaderName};
use smallvec::SmallVec;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers through which a client could claim an address, scheme, host or original URL. None
/// is passed on: the gateway sets `X-Forwarded-For/-Proto/-Host` itself. `X-Original-URL` and
/// `X-Rewrite-URL` are here because some frameworks route on them, which would bypass the
/// gateway's routing altogether.
pub(crate) fn is_forwarding(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-server"
            | "x-forwarded-ssl"
            | "x-forwarded-scheme"
            | "x-url-scheme"
            | "x-real-ip"
            | "x-client-ip"
            | "true-client-ip"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-forwarded-for"
    )
}

/// Identity headers: the gateway's own (`X-Portcullis-*`) and Authelia's (`Remote-*`). A
/// client's copies never reach the upstream, which can trust them only for that reason.
pub(crate) fn is_identity(name: &str) -> bool {
    name.starts_with("x-portcullis-")
        || matches!(
            name,
            "remote-user" | "remote-groups" | "remote-name" | "remote-email"
        )
}

/// Headers that say which software and version runs behind the gateway.
pub(crate) fn is_fingerprint(name: &str) -> bool {
    matches!(
        name,
        "server"
            | "x-powered-by"
            | "x-aspnet-version"
            | "x-aspnetmvc-version"
            | "x-generator"
            | "x-runtime"
            | "x-version"
            | "x-backend-server"
            | "via"
    )
}

/// Removes the fields for which `drop` is true and those the `Connection` header names.
pub(crate) fn retain(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    // Usually two or three names (an upstream's `Connection` and `Server`): no allocation.
    let mut doomed: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| drop(name.as_str()))
        .cloned()
        .collect();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim) {
            // `close` names no field, and a name `drop` takes is already doomed: neither needs
            // parsing (`keep-alive` is in nearly every upstream response).
            if token.eq_ignore_ascii_case("close") || drop(token) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                doomed.push(name);
            }
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_named_fields_with_all_their_values_and_those_connection_names() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("accept", "a"),
            ("x-forwarded-for", "6.6.6.6"),
            ("set-cookie", "a=1"),
            ("x-forwarded-for", "7.7.7.7"),
            ("set-cookie", "b=2"),
            ("connection", "close, x-secret"),
            ("x-secret", "s"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                value.parse().unwrap_or_else(|_| unreachable!()),
            );
        }
        retain(&mut headers, |n| is_hop_by_hop(n) || is_forwarding(n));
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
        assert!(headers.contains_key("accept"));
        for gone in ["x-forwarded-for", "connection", "x-secret"] {
            assert!(!headers.contains_key(gone), "{gone}");
        }
    }
}
