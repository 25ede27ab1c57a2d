//! Authentication and authorization of routed requests, the identity headers sent upstream, and
//! the built-in identity API ([`api`]).
//!
//! The identity service and its store pool live on the main runtime; the workers each run their
//! own single-threaded runtime, so every call into the service is spawned onto the main one
//! ([`IdentityHandle::run`]) rather than polling the pool's connections from a foreign runtime.

pub(crate) mod api;
pub(crate) mod cookie;
pub(crate) mod csrf;
mod forward;
pub(crate) mod keys;
mod pages;
mod second_factor;
mod upstream_identity;

pub(crate) use keys::X_API_KEY;

pub(crate) use pages::{redirect_to_login, safe_next};
pub(crate) use upstream_identity::IdentityHeaders;

use std::future::Future;

use portcullis_identity::tokens::{Claims, Subject};
use portcullis_identity::{Identity, IdentityError, Principal};

use crate::settings::IdentityHeaderStyle;

/// The identity service, callable from any worker.
#[derive(Clone)]
pub struct IdentityHandle {
    identity: Identity,
    runtime: tokio::runtime::Handle,
    /// SHA-256 of the one-time bootstrap token, while no admin exists.
    bootstrap: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    upstream_identity: std::sync::Arc<upstream_identity::Cache>,
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
            bootstrap: std::sync::Arc::default(),
            upstream_identity: std::sync::Arc::default(),
        }
    }

    /// Arms the one-time bootstrap link (no admin exists yet); returns its token.
    pub fn arm_bootstrap(&self) -> String {
        let token = portcullis_identity::token::random_token();
        *self
            .bootstrap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(portcullis_identity::token::token_hash(&token));
        token
    }

    /// Uses the bootstrap token: true once, for the right token.
    pub(crate) fn take_bootstrap(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let mut armed = self
            .bootstrap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let offered = portcullis_identity::token::token_hash(token);
        let matches = armed
            .as_deref()
            .is_some_and(|hash| bool::from(hash.as_bytes().ct_eq(offered.as_bytes())));
        if matches {
            *armed = None;
        }
        matches
    }

    /// Puts a taken bootstrap token back (the admin could not be created).
    pub(crate) fn rearm_bootstrap(&self, token: &str) {
        *self
            .bootstrap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(portcullis_identity::token::token_hash(token));
    }

    /// Starts `work` on the service's runtime without waiting for it.
    pub(crate) fn spawn<F>(&self, work: impl FnOnce(Identity) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work(self.identity.clone()));
    }

    /// The identity headers for the upstream, with a signed identity token; built once per
    /// caller and reused while the token has more than half its life left (no store access,
    /// so no runtime hop).
    pub(crate) fn identity_headers(
        &self,
        caller: &Caller,
        style: IdentityHeaderStyle,
    ) -> IdentityHeaders {
        self.upstream_identity
            .headers(caller, style, unix_now(), |caller| {
                let (token, claims) = self
                    .identity
                    .identity_token(&caller.subject(), caller.method)?;
                Some(upstream_identity::Signed {
                    token,
                    issued_at: claims.iat,
                    expires_at: claims.exp,
                })
            })
    }

    /// The JWKS document, when tokens are on.
    pub(crate) fn jwks(&self) -> Option<serde_json::Value> {
        self.identity
            .tokens()
            .map(portcullis_identity::tokens::Tokens::jwks)
    }

    /// The caller a session token belongs to: from memory on this worker when it was verified
    /// in the last second, else from the store on the service's runtime.
    pub(crate) async fn authenticate_session(
        &self,
        token: String,
    ) -> Result<Option<portcullis_identity::Principal>, IdentityError> {
        if let Some(principal) = self.identity.cached_session(&token) {
            return Ok(Some(principal));
        }
        self.run(move |identity| async move { identity.authenticate_session(&token).await })
            .await
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

/// An authenticated caller, however they authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) roles: Vec<String>,
    pub(crate) scopes: Vec<String>,
    /// `session`, `token` or `api_key`.
    pub(crate) method: &'static str,
    /// The API key's id, for requests authenticated by key.
    pub(crate) key_id: Option<String>,
    /// The session proved a second factor (at login or since).
    pub(crate) second_factor: bool,
}

impl Caller {
    pub(crate) fn from_session(principal: &Principal) -> Self {
        let account = &principal.account;
        Self {
            id: account.id.clone(),
            email: account.email.clone(),
            name: account.display_name.clone(),
            roles: account.roles.clone(),
            scopes: Vec::new(),
            method: "session",
            key_id: None,
            second_factor: principal.second_factor_at.is_some(),
        }
    }

    pub(crate) fn from_token(claims: &Claims) -> Self {
        Self {
            id: claims.sub.clone(),
            email: claims.email.clone(),
            name: claims.name.clone(),
            roles: claims.roles.clone(),
            scopes: claims.scopes.clone(),
            method: "token",
            key_id: None,
            second_factor: false,
        }
    }

    /// A key carries no roles: routes grant it access by scope.
    pub(crate) fn from_api_key(key: &portcullis_identity::api_keys::ApiKey) -> Self {
        Self {
            id: key.subject(),
            email: key.owner_email.clone().unwrap_or_default(),
            name: key.name.clone(),
            roles: Vec::new(),
            scopes: key.scopes.clone(),
            method: "api_key",
            key_id: Some(key.id.clone()),
            second_factor: false,
        }
    }

    pub(crate) fn subject(&self) -> Subject<'_> {
        Subject {
            id: &self.id,
            email: &self.email,
            name: &self.name,
            roles: &self.roles,
            scopes: &self.scopes,
        }
    }

    /// Whether the caller holds one of `roles` (any caller when the list is empty).
    pub(crate) fn has_role(&self, roles: &[String]) -> bool {
        roles.is_empty() || roles.iter().any(|role| self.roles.contains(role))
    }

    /// Whether the caller carries every one of `scopes`.
    pub(crate) fn has_scopes(&self, scopes: &[String]) -> bool {
        scopes.iter().all(|scope| self.scopes.contains(scope))
    }
}

/// The token of `Authorization: Bearer <token>`.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Seconds since the Unix epoch, the clock identity tokens are issued on.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
