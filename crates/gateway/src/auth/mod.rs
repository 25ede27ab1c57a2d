//! Authentication and authorization of routed requests, the identity headers sent upstream, and
//! the built-in identity API ([`api`]).
//!
//! The identity service and its store pool live on the main runtime; the workers each run their
//! own single-threaded runtime, so every call into the service is spawned onto the main one
//! ([`IdentityHandle::run`]) rather than polling the pool's connections from a foreign runtime.

pub(crate) mod api;
pub(crate) mod cookie;
pub(crate) mod csrf;

use std::future::Future;

use http::header::{HeaderName, HeaderValue};
use portcullis_identity::{Identity, IdentityError, Principal};

use crate::settings::IdentityHeaderStyle;

/// The identity service, callable from any worker.
#[derive(Clone)]
pub struct IdentityHandle {
    identity: Identity,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for IdentityHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityHandle").finish_non_exhaustive()
    }
}

impl IdentityHandle {
    /// Wraps `identity`; must be called on the runtime that owns its store pool.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Starts `work` on the service's runtime without waiting for it.
    pub(crate) fn spawn<F>(&self, work: impl FnOnce(Identity) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work(self.identity.clone()));
    }

    /// Runs `work` on the service's runtime and waits for it.
    pub(crate) async fn run<T, F>(
        &self,
        work: impl FnOnce(Identity) -> F,
    ) -> Result<T, IdentityError>
    where
        F: Future<Output = Result<T, IdentityError>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .spawn(work(self.identity.clone()))
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?
    }
}

/// The identity headers for `principal`, in the configured style. Values that are not valid
/// header text (a display name with a newline) are left out rather than sent mangled.
pub(crate) fn identity_headers(
    principal: &Principal,
    style: IdentityHeaderStyle,
    method: &'static str,
) -> Vec<(HeaderName, HeaderValue)> {
    let account = &principal.account;
    let roles = account.roles.join(",");
    let names: [(&'static str, &str); 4] = match style {
        IdentityHeaderStyle::Portcullis => [
            ("x-portcullis-user", &account.id),
            ("x-portcullis-email", &account.email),
            ("x-portcullis-name", &account.display_name),
            ("x-portcullis-roles", &roles),
        ],
        IdentityHeaderStyle::Authelia => [
            ("remote-user", &account.id),
            ("remote-email", &account.email),
            ("remote-name", &account.display_name),
            ("remote-groups", &roles),
        ],
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = names
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
    headers.push((
        HeaderName::from_static("x-portcullis-auth"),
        HeaderValue::from_static(method),
    ));
    headers
}

/// Whether `principal` holds one of `roles` (any principal when the list is empty).
pub(crate) fn has_role(principal: &Principal, roles: &[String]) -> bool {
    roles.is_empty()
        || roles
            .iter()
            .any(|role| principal.account.roles.contains(role))
}
