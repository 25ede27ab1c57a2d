//! The identity headers sent upstream for an authenticated caller, built once per caller and
//! shared by its requests.
//!
//! The headers hold a signed identity token of some 600 bytes; signing it, checking it as
//! header text and copying it for every request cost as much as the rest of a keyed request, so
//! a caller's headers are kept while their token has more than half its life left.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::header::{HeaderName, HeaderValue};

use super::Caller;
use crate::settings::IdentityHeaderStyle;

/// Headers for the upstream; cloning shares them.
pub(crate) type IdentityHeaders = Arc<[(HeaderName, HeaderValue)]>;

/// A signed identity token and its life, in Unix seconds.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) token: String,
    pub(crate) issued_at: i64,
    pub(crate) expires_at: i64,
}

/// How long headers without a token (tokens are off) are kept: they change only when the
/// caller does, and the cache key is the caller.
const UNSIGNED_REUSE_SECS: i64 = 30;

/// Most callers kept; past it the cache starts over.
const CAPACITY: usize = 10_000;

struct Entry {
    headers: IdentityHeaders,
    reuse_until: i64,
}

/// Callers' identity headers, by everything they say.
#[derive(Default)]
pub(crate) struct Cache {
    entries: RwLock<HashMap<String, Entry>>,
}

impl Cache {
    /// The headers for `caller` at `now` (Unix s): kept ones while their token is in the first
    /// half of its life, else new ones around the token `sign` makes.
    pub(crate) fn headers(
        &self,
        caller: &Caller,
        style: IdentityHeaderStyle,
        now: i64,
        sign: impl FnOnce(&Caller) -> Option<Signed>,
    ) -> IdentityHeaders {
        let key = cache_key(caller, style);
        if let Some(entry) = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            && now < entry.reuse_until
        {
            return entry.headers.clone();
        }
        let signed = sign(caller);
        let reuse_until = signed.as_ref().map_or(now + UNSIGNED_REUSE_SECS, |s| {
            s.issued_at + (s.expires_at - s.issued_at) / 2
        });
        let headers: IdentityHeaders =
            identity_headers(caller, style, signed.map(|s| s.token)).into();
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                headers: headers.clone(),
                reuse_until,
            },
        );
        headers
    }
}

/// Every field the headers carry, each prefixed by its length, so two different callers never
/// share an entry.
fn cache_key(caller: &Caller, style: IdentityHeaderStyle) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(160);
    let style = match style {
        IdentityHeaderStyle::Portcullis => "p",
        IdentityHeaderStyle::Authelia => "a",
    };
    let parts = [
        style,
        caller.method,
        &caller.id,
        &caller.email,
        &caller.name,
        caller.key_id.as_deref().unwrap_or_default(),
    ];
    let lists = [&caller.roles, &caller.scopes];
    for part in parts {
        let _ = write!(key, "{}:{part};", part.len());
    }
    for list in lists {
        let _ = write!(key, "{}[", list.len());
        for item in list {
            let _ = write!(key, "{}:{item};", item.len());
        }
    }
    key
}

/// The identity headers for `caller`, in the configured style, with the signed identity token
/// when there is one. Values that are not valid header text (a display name with a newline)
/// are left out rather than sent mangled.
fn identity_headers(
    caller: &Caller,
    style: IdentityHeaderStyle,
    identity_token: Option<String>,
) -> Vec<(HeaderName, HeaderValue)> {
    let roles = caller.roles.join(",");
    let names: [(&'static str, &str); 4] = match style {
        IdentityHeaderStyle::Portcullis => [
            ("x-portcullis-user", &caller.id),
            ("x-portcullis-email", &caller.email),
            ("x-portcullis-name", &caller.name),
            ("x-portcullis-roles", &roles),
        ],
        IdentityHeaderStyle::Authelia => [
            ("remote-user", &caller.id),
            ("remote-email", &caller.email),
            ("remote-name", &caller.name),
            ("remote-groups", &roles),
        ],
    };
    let scopes = caller.scopes.join(" ");
    let key_id = caller.key_id.as_deref().unwrap_or_default();
    let common = [
        ("x-portcullis-auth", caller.method),
        ("x-portcullis-scopes", scopes.as_str()),
        ("x-portcullis-key-id", key_id),
    ];
    let mut headers: Vec<(HeaderName, HeaderValue)> = names
        .into_iter()
        .chain(common)
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
    if let Some(token) = identity_token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.push((HeaderName::from_static("x-portcullis-identity"), token));
    }
    headers
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn caller() -> Caller {
        Caller {
            id: "key:k1".into(),
            email: "owner@example.com".into(),
            name: "billing".into(),
            roles: Vec::new(),
            scopes: vec!["customers:read".into()],
            method: "api_key",
            key_id: Some("k1".into()),
            second_factor: false,
        }
    }

    /// Headers from `cache` at `now`, counting the tokens signed.
    fn headers_at(cache: &Cache, caller: &Caller, now: i64, signed: &Cell<u32>) -> IdentityHeaders {
        cache.headers(caller, IdentityHeaderStyle::Portcullis, now, |_| {
            signed.set(signed.get() + 1);
            Some(Signed {
                token: format!("token-{}", signed.get()),
                issued_at: now,
                expires_at: now + 60,
            })
        })
    }

    fn value<'a>(headers: &'a IdentityHeaders, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn a_callers_headers_are_reused_for_half_the_tokens_life_and_never_across_callers() {
        let cache = Cache::default();
        let signed = Cell::new(0);
        let first = headers_at(&cache, &caller(), 1_000, &signed);
        assert_eq!(value(&first, "x-portcullis-identity"), Some("token-1"));
        assert_eq!(value(&first, "x-portcullis-key-id"), Some("k1"));
        assert_eq!(value(&first, "x-portcullis-scopes"), Some("customers:read"));
        let again = headers_at(&cache, &caller(), 1_029, &signed);
        assert!(Arc::ptr_eq(&first, &again), "shared within half the life");
        assert_eq!(signed.get(), 1);

        let others = [
            Caller {
                scopes: vec!["customers:read".into(), "orders:write".into()],
                ..caller()
            },
            Caller {
                method: "session",
                ..caller()
            },
            Caller {
                key_id: Some("k2".into()),
                ..caller()
            },
            // The length prefixes keep a separator inside a value from aliasing another caller.
            Caller {
                name: "billing;".into(),
                email: "owner@example.co".into(),
                ..caller()
            },
            Caller {
                roles: vec!["customers:read".into()],
                scopes: Vec::new(),
                ..caller()
            },
        ];
        for (n, other) in others.iter().enumerate() {
            let headers = headers_at(&cache, other, 1_029, &signed);
            assert!(!Arc::ptr_eq(&first, &headers), "caller {n} shares headers");
        }
        assert_eq!(signed.get(), 1 + 5);

        let fresh = headers_at(&cache, &caller(), 1_030, &signed);
        assert_eq!(value(&fresh, "x-portcullis-identity"), Some("token-7"));
    }

    #[test]
    fn a_value_that_is_not_header_text_is_left_out() {
        let cache = Cache::default();
        let signed = Cell::new(0);
        let headers = headers_at(
            &cache,
            &Caller {
                name: "evil\r\nx-portcullis-roles: admin".into(),
                ..caller()
            },
            0,
            &signed,
        );
        assert_eq!(value(&headers, "x-portcullis-name"), None);
        assert_eq!(value(&headers, "x-portcullis-roles"), None);
        assert_eq!(value(&headers, "x-portcullis-user"), Some("key:k1"));
    }
}
