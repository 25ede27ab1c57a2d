//! The admin API on the admin listener (`/admin/api/...`): accounts, their sessions and API
//! keys, for operators and their tooling, as the `user` and `apikey` commands offer them on
//! the host.
//!
//! A caller presents an API key with the `admin` scope (`portcullis apikey create --name ops
//! --scope admin`) in `Authorization: Bearer` or `X-API-Key`. The listener belongs on a private
//! address; the key is the second line, so a reachable admin port is not an open one. Every
//! change is a security event that names the key.

use std::net::IpAddr;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use portcullis_core::{EventKind, Reject, RequestId, SecurityEvent};
use portcullis_identity::{AccountStatus, IdentityError};
use serde::Deserialize;

use crate::auth::IdentityHandle;
use crate::auth::api::{account_json, read_json, service_failure, session_json};
use crate::body::Body;
use crate::events::EventSink;
use crate::respond;
use crate::settings::ErrorDetail;
use crate::stack::Rejection;

/// The scope a key needs here.
const ADMIN_SCOPE: &str = "admin";

/// Largest request body (a list of roles).
const MAX_BODY: usize = 16 * 1024;

/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most accounts in one page of the list.
const MAX_PAGE: i64 = 500;

pub(crate) struct AdminApi {
    pub(crate) identity: IdentityHandle,
    pub(crate) events: EventSink,
}

/// Who is asking: the key and where it came from.
struct Operator {
    key_id: String,
    ip: IpAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Roles {
    roles: Vec<String>,
}

impl AdminApi {
    /// Answers `request` for `path`, the part after `/admin/api/`; errors in the common body.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        path: &str,
        peer: IpAddr,
    ) -> Response<Body> {
        let request_id = RequestId::generate();
        match self.serve(request, path, peer, &request_id).await {
            Ok(response) => response,
            Err((reject, internal)) => {
                tracing::info!(
                    request_id = request_id.as_str(),
                    code = reject.code(),
                    internal,
                    "admin API"
                );
                // What was wrong with the operator's own input is theirs to see; nothing else.
                let detail = if reject == Reject::BadRequest {
                    ErrorDetail::Detailed
                } else {
                    ErrorDetail::Generic
                };
                respond::error_response(reject, &request_id, false, detail, &internal)
            }
        }
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
        path: &str,
        peer: IpAddr,
        request_id: &RequestId,
    ) -> Result<Response<Body>, Rejection> {
        let operator = self.authenticate(&request, peer, request_id).await?;
        let method = request.method().clone();
        let segments: Vec<String> = path
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let identity = &self.identity;
        match (method, segments.as_slice()) {
            (Method::GET, ["users"]) => {
                let (limit, offset) = page(request.uri().query());
                let accounts = identity
                    .run(move |identity| async move { identity.list_accounts(limit, offset).await })
                    .await
                    .map_err(service_failure)?;
                let users: Vec<serde_json::Value> = accounts.iter().map(account_json).collect();
                Ok(ok(serde_json::json!({ "users": users })))
            }
            (Method::GET, ["users", account]) => {
                let account = self.account(account).await?;
                let id = account.id.clone();
                let sessions = identity
                    .run(move |identity| async move { identity.sessions(&id).await })
                    .await
                    .map_err(service_failure)?;
                let mut user = account_json(&portcullis_identity::Account::from(&account));
                user["sessions"] = sessions.iter().map(|s| session_json(s, None)).collect();
                Ok(ok(serde_json::json!({ "user": user })))
            }
            (Method::POST, ["users", account, action]) => {
                let (status, kind) = match *action {
                    "lock" => (AccountStatus::Locked, EventKind::AccountLocked),
                    "disable" => (AccountStatus::Disabled, EventKind::AccountLocked),
                    "unlock" => (AccountStatus::Active, EventKind::AccountUnlocked),
                    _ => return Err((Reject::NoRoute, format!("no action {action:?}"))),
                };
                let account = self.account(account).await?;
                let id = account.id.clone();
                identity
                    .run(move |identity| async move { identity.set_status(&id, status).await })
                    .await
                    .map_err(failure)?;
                let details = serde_json::json!({ "status": status.as_str() });
                self.record(kind, &operator, &account.id, request_id, details)
                    .await;
                Ok(no_content())
            }
            (Method::PUT, ["users", account, "roles"]) => {
                let Roles { roles } = read_json(request, MAX_BODY, BODY_TIMEOUT).await?;
                let account = self.account(account).await?;
                let (id, set) = (account.id.clone(), roles.clone());
                identity
                    .run(move |identity| async move { identity.set_roles(&id, set).await })
                    .await
                    .map_err(failure)?;
                let details = serde_json::json!({ "roles": roles, "was": account.roles });
                self.record(
                    EventKind::RolesChanged,
                    &operator,
                    &account.id,
                    request_id,
                    details,
                )
                .await;
                Ok(no_content())
            }
            (Method::DELETE, ["users", account, "sessions", rest @ ..]) if rest.len() <= 1 => {
                let account = self.account(account).await?;
                let id = account.id.clone();
                let one = rest.first().map(|s| (*s).to_owned());
                let revoked = identity
                    .run(move |identity| async move {
                        match one {
                            Some(session) => {
                                identity.revoke_session(&id, &session).await.map(|()| 1)
                            }
                            None => identity.revoke_sessions(&id, None).await,
                        }
                    })
                    .await
                    .map_err(failure)?;
                let details = serde_json::json!({ "reason": "revoked_by_admin", "count": revoked });
                self.record(
                    EventKind::SessionRevoked,
                    &operator,
                    &account.id,
                    request_id,
                    details,
                )
                .await;
                Ok(ok(serde_json::json!({ "revoked": revoked })))
            }
            _ => Err((Reject::NoRoute, "no such admin endpoint".into())),
        }
    }

    /// The key in `Authorization: Bearer` or `X-API-Key`, which must carry [`ADMIN_SCOPE`]; a
    /// refused key is an `api_key_denied` event, as on the public listener.
    async fn authenticate(
        &self,
        request: &Request<Incoming>,
        peer: IpAddr,
        request_id: &RequestId,
    ) -> Result<Operator, Rejection> {
        let headers = request.headers();
        let presented = headers
            .get(crate::auth::X_API_KEY)
            .and_then(|v| v.to_str().ok())
            .or_else(|| crate::auth::bearer(headers))
            .ok_or_else(|| (Reject::InvalidApiKey, "no API key".to_owned()))?;
        let verdict = self
            .identity
            .verify_api_key(presented, peer)
            .await
            .map_err(service_failure)?;
        let denied = match verdict {
            Ok(key) if key.scopes.iter().any(|s| s == ADMIN_SCOPE) => {
                return Ok(Operator {
                    key_id: key.id.clone(),
                    ip: peer,
                });
            }
            Ok(key) => (
                Reject::Forbidden,
                "lacks the admin scope",
                Some(key.id.clone()),
            ),
            Err(denied) => (Reject::InvalidApiKey, denied.as_str(), None),
        };
        let event = SecurityEvent::new(EventKind::ApiKeyDenied, self.events.now())
            .with_request(request_id, peer)
            .with_key(denied.2.as_deref())
            .with_route(Some("admin_api"))
            .with_details(serde_json::json!({ "reason": denied.1 }));
        self.events.emit(event).await;
        Err((denied.0, denied.1.to_owned()))
    }

    /// The account named by id or e-mail address.
    async fn account(&self, name: &str) -> Result<portcullis_store::AccountRow, Rejection> {
        let name = name.to_owned();
        self.identity
            .run(move |identity| async move { identity.find_account(&name).await })
            .await
            .map_err(service_failure)?
            .ok_or_else(|| (Reject::NoRoute, "no such account".to_owned()))
    }

    /// An operator's change, durable before the answer.
    async fn record(
        &self,
        kind: EventKind,
        operator: &Operator,
        account_id: &str,
        request_id: &RequestId,
        mut details: serde_json::Value,
    ) {
        details["via"] = serde_json::Value::from("admin_api");
        let event = SecurityEvent::new(kind, self.events.now())
            .with_request(request_id, operator.ip)
            .with_user(Some(account_id))
            .with_key(Some(&operator.key_id))
            .with_route(Some("admin_api"))
            .with_details(details);
        self.events.emit(event).await;
    }
}

/// `limit` and `offset` from the query, bounded.
fn page(query: Option<&str>) -> (i64, i64) {
    let mut limit = 100;
    let mut offset = 0;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (&*name, value.parse::<i64>()) {
            ("limit", Ok(n)) => limit = n.clamp(1, MAX_PAGE),
            ("offset", Ok(n)) => offset = n.max(0),
            _ => {}
        }
    }
    (limit, offset)
}

fn failure(error: IdentityError) -> Rejection {
    match error {
        IdentityError::NotFound => (Reject::NoRoute, error.to_string()),
        IdentityError::InvalidRole(_) => (Reject::BadRequest, error.to_string()),
        other => service_failure(other),
    }
}

fn ok(value: serde_json::Value) -> Response<Body> {
    respond::json(StatusCode::OK, &value)
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
