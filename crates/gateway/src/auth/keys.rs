//! API keys at the gateway: finding the key a request carries, verifying it (from the cache
//! on the worker; a miss goes to the store on the main runtime), and the JSON API with which a
//! signed-in user manages their keys (`{prefix}/api/keys`).

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use portcullis_core::{EventKind, Reject};
use portcullis_identity::api_keys::{ApiKey, ApiKeyError, KeyDenied, KeyOwner, NewApiKey};
use portcullis_identity::{IdentityError, Principal};
use serde::Deserialize;

use super::IdentityHandle;
use crate::body::Body;
use crate::respond;
use crate::stack::{Gateway, Rejection, RequestContext};

/// The header machine clients send their key in.
pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The API key a request carries, and the header it came in: `X-API-Key`, or an
/// `Authorization: Bearer` whose token starts with the key prefix (so that a bearer access
/// token on the same route is not mistaken for one).
pub(crate) fn presented<'h>(
    headers: &'h http::HeaderMap,
    prefix: &str,
) -> Option<(&'h str, HeaderName)> {
    if let Some(value) = headers.get(&X_API_KEY) {
        return Some((value.to_str().unwrap_or("").trim(), X_API_KEY));
    }
    super::bearer(headers)
        .filter(|token| token.starts_with(prefix))
        .map(|token| (token, header::AUTHORIZATION))
}

impl IdentityHandle {
    /// The key prefix, when API keys are on.
    pub(crate) fn api_key_prefix(&self) -> Option<&str> {
        self.identity.api_keys().map(|keys| keys.prefix())
    }

    /// Verifies `presented` for a request from `ip`: from memory when cached (no runtime hop),
    /// else read from the store once.
    pub(crate) async fn verify_api_key(
        &self,
        presented: &str,
        ip: IpAddr,
    ) -> Result<Result<Arc<ApiKey>, KeyDenied>, IdentityError> {
        let Some(keys) = self.identity.api_keys() else {
            return Ok(Err(KeyDenied::Unknown));
        };
        let key = match keys.cached(presented) {
            Err(denied) => return Ok(Err(denied)),
            Ok(Some(key)) => key,
            Ok(None) => {
                metrics::counter!("portcullis_api_key_store_lookups_total").increment(1);
                let presented = presented.to_owned();
                let loaded = self
                    .run(move |identity| async move {
                        match identity.api_keys() {
                            Some(keys) => Ok(keys.load(&presented).await?),
                            None => Ok(Err(KeyDenied::Unknown)),
                        }
                    })
                    .await?;
                match loaded {
                    Ok(key) => key,
                    Err(denied) => return Ok(Err(denied)),
                }
            }
        };
        Ok(keys.admit(&key, ip).map(|()| key))
    }
}

/// A key to create through the API.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// Lifetime in days.
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    networks: Vec<String>,
}

/// A security event an upstream reports about one of its clients.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportedEvent {
    /// What happened, e.g. `payment_manipulation_attempt`: the IDS signal it feeds.
    kind: String,
    /// The client it is about, as the upstream saw it in `X-Forwarded-For`.
    client_ip: IpAddr,
    #[serde(default)]
    details: serde_json::Value,
}

/// The scope an API key needs to report events.
const EVENTS_WRITE: &str = "events:write";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    /// How long the old key keeps working, in seconds.
    #[serde(default)]
    grace_seconds: Option<u64>,
}

impl Gateway {
    /// `{prefix}/api/keys...`: list, create, rotate and revoke the caller's own keys; an admin
    /// sees every key. `rest` is the path after `api/keys`.
    pub(super) async fn api_keys_api(
        &self,
        request: Request<Incoming>,
        rest: &str,
        principal: Principal,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let (Some(handle), Some(settings)) = (&self.identity, &self.settings.identity) else {
            return Err((Reject::NoRoute, String::new()));
        };
        if handle.api_key_prefix().is_none() {
            return Err((Reject::NoRoute, "API keys are off".into()));
        }
        let admin = principal.account.roles.iter().any(|r| r == "admin");
        let account = principal.account.id.clone();
        let timeout = self.settings.limits.request_timeout;
        let max = settings.max_body_bytes;
        let method = request.method().clone();
        match (method, rest.trim_start_matches('/')) {
            (Method::GET, "") => {
                let owner = (!admin).then(|| account.clone());
                let keys = handle
                    .run(move |identity| async move {
                        let keys = identity.api_keys().ok_or(IdentityError::NotFound)?;
                        keys.list(owner.as_deref()).await.map_err(key_failure)
                    })
                    .await
                    .map_err(super::api::service_failure)?;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "keys": keys }),
                ))
            }
            (Method::POST, "") => {
                self.recent_second_factor(handle, &principal).await?;
                let body: CreateKey = super::api::read_json(request, max, timeout).await?;
                let allowed = &settings.api_key_user_scopes;
                if !admin && let Some(scope) = body.scopes.iter().find(|s| !allowed.contains(s)) {
                    return Err((
                        Reject::Forbidden,
                        format!("scope {scope:?} is not one users may grant themselves"),
                    ));
                }
                let mut networks = Vec::new();
                for network in &body.networks {
                    let parsed = portcullis_defence::ip::parse_network(network)
                        .map_err(|e| (Reject::BadRequest, e.to_string()))?;
                    networks.push(parsed);
                }
                let new = NewApiKey {
                    name: body.name,
                    owner: KeyOwner::Account(account),
                    scopes: body.scopes,
                    expires_in: body
                        .expires_in_days
                        .map(|days| std::time::Duration::from_secs(u64::from(days) * 86_400)),
                    networks,
                };
                let created = handle
                    .run(move |identity| async move {
                        let keys = identity.api_keys().ok_or(IdentityError::NotFound)?;
                        Ok(keys.create(new).await)
                    })
                    .await
                    .map_err(super::api::service_failure)?;
                let (key, secret) = created.map_err(key_rejection)?;
                self.key_event(EventKind::ApiKeyCreated, &key, ctx).await;
                Ok(respond::json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "id": key.id, "key": secret, "api_key": key }),
                ))
            }
            (method @ (Method::POST | Method::DELETE), path) => {
                let (id, action) = match (&method, path.split_once('/')) {
                    (&Method::POST, Some((id, "rotate"))) => (id, "rotate"),
                    (&Method::DELETE, None) => (path, "revoke"),
                    _ => return Err((Reject::NoRoute, String::new())),
                };
                let id = id.to_owned();
                let grace = if action == "rotate" {
                    let body: RotateKey = if request.headers().contains_key(header::CONTENT_TYPE) {
                        super::api::read_json(request, max, timeout).await?
                    } else {
                        RotateKey::default()
                    };
                    body.grace_seconds.map(std::time::Duration::from_secs)
                } else {
                    None
                };
                let owner = (!admin).then_some(account);
                let changed = handle
                    .run(move |identity| async move {
                        let keys = identity.api_keys().ok_or(IdentityError::NotFound)?;
                        let key = match keys.get(&id).await {
                            // Another user's key does not exist, as far as this caller knows.
                            Ok(key) if owner.is_none() || key.account_id == owner => key,
                            Ok(_) | Err(ApiKeyError::NotFound) => {
                                return Ok(Err(ApiKeyError::NotFound));
                            }
                            Err(error) => return Err(key_failure(error)),
                        };
                        Ok(if action == "rotate" {
                            keys.rotate(&key.id, grace)
                                .await
                                .map(|(key, secret)| (key, Some(secret)))
                        } else {
                            keys.revoke(&key.id).await.map(|key| (key, None))
                        })
                    })
                    .await
                    .map_err(super::api::service_failure)?;
                let (key, secret) = changed.map_err(key_rejection)?;
                match secret {
                    Some(secret) => {
                        self.key_event(EventKind::ApiKeyRotated, &key, ctx).await;
                        Ok(respond::json(
                            StatusCode::CREATED,
                            &serde_json::json!({ "id": key.id, "key": secret, "api_key": key }),
                        ))
                    }
                    None => {
                        self.key_event(EventKind::ApiKeyRevoked, &key, ctx).await;
                        Ok(super::api::no_content())
                    }
                }
            }
            _ => Err((Reject::NoRoute, String::new())),
        }
    }

    /// `POST {prefix}/api/events`: an upstream, authenticated by an API key with
    /// `events:write`, reports a security event about a client (a price manipulation caught
    /// server-side); it is recorded and counted by the intrusion detection for that client.
    pub(super) async fn reported_event(
        &self,
        request: Request<Incoming>,
        host: Option<&str>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let Some(settings) = &self.settings.identity else {
            return Err((Reject::NoRoute, String::new()));
        };
        let caller = self
            .identify(
                request.headers(),
                request.method(),
                crate::settings::RouteAuth::ApiKey,
                host,
                ctx,
            )
            .await?;
        if !caller.has_scopes(&[EVENTS_WRITE.to_owned()]) {
            return Err((Reject::Forbidden, format!("the key lacks {EVENTS_WRITE}")));
        }
        let timeout = self.settings.limits.request_timeout;
        let body: ReportedEvent =
            super::api::read_json(request, settings.max_body_bytes, timeout).await?;
        let kind = body.kind.trim();
        let valid = !kind.is_empty()
            && kind.len() <= 64
            && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !valid {
            return Err((
                Reject::BadRequest,
                "kind is 1 to 64 lowercase letters and underscores".into(),
            ));
        }
        let event =
            portcullis_core::SecurityEvent::new(EventKind::UpstreamReport, self.events.now())
                .with_request(&ctx.id, body.client_ip)
                .with_user(Some(&caller.id))
                .with_key(caller.key_id.as_deref())
                .with_details(serde_json::json!({
                    "report": kind,
                    "via": "api",
                    "details": body.details,
                }));
        self.events.emit(event).await;
        self.events.signal(kind, body.client_ip, "").await;
        Ok(respond::json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": true }),
        ))
    }

    /// A sensitive action (creating an API key): an account with a second factor proves it
    /// again first, within the step-up window.
    pub(super) async fn recent_second_factor(
        &self,
        handle: &IdentityHandle,
        principal: &Principal,
    ) -> Result<(), Rejection> {
        let checked = principal.clone();
        let may = handle
            .run(move |identity| async move {
                let (enrolled, _) = identity.second_factor_status(&checked).await?;
                Ok(!enrolled || identity.stepped_up(&checked))
            })
            .await
            .map_err(super::api::service_failure)?;
        if may {
            Ok(())
        } else {
            Err((
                Reject::StepUpRequired,
                "creating an API key needs a recent second factor".into(),
            ))
        }
    }

    async fn key_event(&self, kind: EventKind, key: &ApiKey, ctx: &RequestContext<'_>) {
        let event = portcullis_core::SecurityEvent::new(kind, self.events.now())
            .with_request(&ctx.id, ctx.client.ip)
            .with_user(ctx.user_id.as_deref())
            .with_key(Some(&key.id))
            .with_details(key_details(key, "api"));
        self.events.emit(event).await;
    }
}

/// What an event about a key records (never the key).
pub fn key_details(key: &ApiKey, by: &str) -> serde_json::Value {
    serde_json::json!({
        "name": key.name,
        "scopes": key.scopes,
        "rotated_to": key.rotated_to,
        "by": by,
    })
}

fn key_failure(error: ApiKeyError) -> IdentityError {
    match error {
        ApiKeyError::Store(error) => IdentityError::Store(error),
        ApiKeyError::NotFound => IdentityError::NotFound,
        ApiKeyError::Invalid(reason) => IdentityError::Internal(reason),
    }
}

fn key_rejection(error: ApiKeyError) -> Rejection {
    match error {
        ApiKeyError::NotFound => (Reject::NoRoute, "no such active API key".into()),
        ApiKeyError::Invalid(reason) => (Reject::BadRequest, reason),
        ApiKeyError::Store(error) => (Reject::Unavailable, error.to_string()),
    }
}
