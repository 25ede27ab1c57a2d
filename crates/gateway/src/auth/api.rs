//! The identity JSON API under `{prefix}/api/`: register, login, logout, me, sessions,
//! password change and API keys ([`super::keys`]). Every unsafe call must come from the gateway's own origin (login CSRF
//! included); every answer is `no-store`.
//!
//! Failed logins all get one answer, whatever the reason, and take the same time (the service
//! checks a dummy hash for unknown accounts). Registration answers an address that is taken
//! exactly as a new one.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use portcullis_core::{EventKind, Reject, mask_pii};
use portcullis_identity::second_factor::{Accepted, Proof as SecondFactorProof};
use portcullis_identity::{
    Account, ClientInfo, FailureReason, IdentityError, LoginOutcome, Principal, RefreshOutcome,
    TokenSet, user_agent_family,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{IdentityHandle, cookie, csrf};
use crate::body::Body;
use crate::respond;
use crate::settings::IdentitySettings;
use crate::stack::{Gateway, Rejection, RequestContext};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Credentials {
    pub(super) email: String,
    pub(super) password: String,
    /// The solved proof-of-work a `proof_required` answer asked for.
    #[serde(default)]
    pub(super) proof: Option<Proof>,
}

/// The second step of a login: the challenge the password step answered with, and a TOTP code
/// or a backup code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecondStep {
    pub(super) challenge: String,
    #[serde(default)]
    pub(super) code: Option<String>,
    #[serde(default)]
    pub(super) backup_code: Option<String>,
    #[serde(default)]
    pub(super) passkey: Option<PasskeyAnswer>,
    /// The code sent by e-mail for this login.
    #[serde(default)]
    pub(super) email_code: Option<String>,
    /// Remember this browser: its next logins skip the second factor for 30 days.
    #[serde(default)]
    pub(super) remember_device: bool,
}

/// A passkey's answer: the ceremony whose challenge it signed, and the browser's
/// `PublicKeyCredential` as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasskeyAnswer {
    pub(super) ceremony: String,
    pub(super) credential: Box<portcullis_identity::passkeys::PublicKeyCredential>,
}

impl SecondStep {
    pub(super) fn into_step(self) -> Result<LoginStep, Rejection> {
        let proof = match (self.code, self.backup_code, self.passkey, self.email_code) {
            (Some(code), None, None, None) => SecondFactorProof::Totp(code),
            (None, Some(code), None, None) => SecondFactorProof::BackupCode(code),
            (None, None, Some(answer), None) => SecondFactorProof::Passkey {
                ceremony: answer.ceremony,
                answer: answer.credential,
            },
            (None, None, None, Some(code)) => SecondFactorProof::SentCode(code),
            _ => {
                return Err((
                    Reject::BadRequest,
                    "send exactly one of code, backup_code, passkey and email_code".into(),
                ));
            }
        };
        Ok(LoginStep::SecondFactor {
            challenge: self.challenge,
            proof,
            remember: self.remember_device,
        })
    }
}

/// What a login call offers.
pub(super) enum LoginStep {
    /// E-mail address and password.
    Password(Credentials),
    /// The second step's challenge and second factor.
    SecondFactor {
        challenge: String,
        proof: SecondFactorProof,
        remember: bool,
    },
    /// A passwordless login: a discoverable passkey's answer.
    Passkey(PasskeyAnswer),
}

/// A solved challenge: the challenge as given, and the nonce found.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Proof {
    pub(super) challenge: String,
    pub(super) nonce: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Registration {
    pub(super) email: String,
    pub(super) password: String,
    #[serde(default)]
    pub(super) display_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Bootstrap {
    pub(super) token: String,
    pub(super) email: String,
    pub(super) password: String,
    #[serde(default)]
    pub(super) display_name: String,
}

/// The OpenAPI document of this API, served where API docs are shown (not in production).
const OPENAPI: &str = include_str!("openapi.json");

/// How a login ends.
pub(super) enum Grant {
    /// In a session cookie, ending the session the browser carried before.
    Session { previous: Option<String> },
    /// In an access and a refresh token.
    Tokens,
}

/// `POST token` bodies, by `grant_type`.
#[derive(Deserialize)]
#[serde(tag = "grant_type", rename_all = "snake_case")]
enum TokenRequest {
    Password { email: String, password: String },
    RefreshToken { refresh_token: String },
    Session {},
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MailedToken {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    token: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailChange {
    email: String,
    /// Needed when the account has no second factor.
    #[serde(default)]
    current_password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

impl Gateway {
    /// Answers a request under the identity prefix; `rest` is the path after `{prefix}/`.
    pub(crate) async fn identity_api(
        &self,
        request: Request<Incoming>,
        rest: &str,
        host: Option<&str>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let (Some(handle), Some(settings)) = (&self.identity, &self.settings.identity) else {
            return Err((Reject::NoRoute, String::new()));
        };
        let method = request.method().clone();
        // Forward-auth judges the original request, whose method and origin it is told.
        if rest == "forward" || rest == "auth-request" {
            let prefix = settings.prefix.clone();
            // nginx's auth_request passes on only 2xx, 401 and 403: never redirect it.
            let redirect = rest == "forward";
            return self.forward_auth(request, &prefix, redirect, ctx).await;
        }
        if csrf::is_unsafe(&method) && !csrf::same_origin(request.headers(), host, ctx.secure) {
            return Err((
                Reject::CsrfRejected,
                "identity API call from another origin".into(),
            ));
        }
        let token = cookie::read(request.headers(), &settings.cookie_name).map(str::to_owned);
        let client = ClientInfo {
            ip: ctx.client.ip,
            device: cookie::read(request.headers(), &settings.device_cookie_name)
                .map(str::to_owned),
            user_agent: request
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(user_agent_family),
            proven: false,
            trusted_device: cookie::read(request.headers(), cookie::TRUSTED_DEVICE)
                .map(str::to_owned),
        };
        let timeout = self.settings.limits.request_timeout;
        let max = settings.max_body_bytes;
        match (method, rest) {
            (Method::GET, "login") => Ok(self.login_page(&request, &settings.prefix)),
            (Method::GET, "api/openapi.json") if settings.openapi => {
                let mut response = Response::new(crate::body::full(OPENAPI));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(response)
            }
            (Method::POST, "login/second-factor") => {
                self.second_factor_form(request, handle, settings, client, token, ctx)
                    .await
            }
            (Method::POST, "login") => {
                self.login_form(request, handle, settings, client, token, ctx)
                    .await
            }
            (Method::POST, "api/events") => self.reported_event(request, host, ctx).await,
            (Method::POST, "api/register") => {
                let body: Registration = read_json(request, max, timeout).await?;
                self.register(handle, body, ctx).await
            }
            (Method::POST, "api/login") => {
                let mut body: Credentials = read_json(request, max, timeout).await?;
                let mut client = client;
                if let Some(proof) = body.proof.take() {
                    let agent = client.user_agent.clone().unwrap_or_default();
                    self.proof_of_work(&proof, &agent, ctx).await?;
                    client.proven = true;
                }
                let grant = Grant::Session { previous: token };
                let step = LoginStep::Password(body);
                self.login(handle, settings, step, client, grant, ctx).await
            }
            (Method::POST, "api/login/passkey/start") => {
                let ceremony = handle
                    .run(|identity| async move { identity.start_passkey_login().await })
                    .await
                    .map_err(service_failure)?;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "ceremony": ceremony.id, "options": ceremony.options }),
                ))
            }
            (Method::POST, "api/login/passkey") => {
                let answer: PasskeyAnswer = read_json(request, max, timeout).await?;
                let grant = Grant::Session { previous: token };
                let step = LoginStep::Passkey(answer);
                self.login(handle, settings, step, client, grant, ctx).await
            }
            (Method::POST, "api/login/second-factor") => {
                let step = read_json::<SecondStep>(request, max, timeout)
                    .await?
                    .into_step()?;
                let grant = Grant::Session { previous: token };
                self.login(handle, settings, step, client, grant, ctx).await
            }
            (Method::POST, "api/token") => {
                let body: TokenRequest = read_json(request, max, timeout).await?;
                match body {
                    TokenRequest::Password { email, password } => {
                        let body = Credentials {
                            email,
                            password,
                            proof: None,
                        };
                        let step = LoginStep::Password(body);
                        self.login(handle, settings, step, client, Grant::Tokens, ctx)
                            .await
                    }
                    TokenRequest::RefreshToken { refresh_token } => {
                        self.refresh(handle, refresh_token, ctx).await
                    }
                    TokenRequest::Session {} => {
                        let principal = self.session_principal(handle, token, ctx).await?;
                        let account = principal.account;
                        let tokens =
                            handle
                                .run(move |identity| async move {
                                    identity.grant_tokens(&account).await
                                })
                                .await
                                .map_err(service_failure)?;
                        self.emit_details(
                            EventKind::TokenIssued,
                            ctx,
                            serde_json::json!({ "grant": "session" }),
                        )
                        .await;
                        Ok(token_response(Some(tokens)))
                    }
                }
            }
            (Method::POST, "api/token/revoke") => {
                let body: MailedToken = read_json(request, max, timeout).await?;
                handle
                    .run(move |identity| async move { identity.revoke_token(&body.token).await })
                    .await
                    .map_err(service_failure)?;
                Ok(respond::json(StatusCode::OK, &serde_json::json!({})))
            }
            (Method::POST, "api/logout") => self.logout(handle, settings, token, ctx).await,
            (Method::POST, "api/bootstrap") => {
                let body: Bootstrap = read_json(request, max, timeout).await?;
                self.bootstrap(handle, body, ctx).await
            }
            (Method::POST, "api/verify") => {
                let body: MailedToken = read_json(request, max, timeout).await?;
                let verified = handle
                    .run(move |identity| async move { identity.verify_email(&body.token).await })
                    .await;
                match verified {
                    Ok(account) => Ok(respond::json(
                        StatusCode::OK,
                        &serde_json::json!({ "user": account_json(&account) }),
                    )),
                    Err(error) => self.identity_error(error, ctx),
                }
            }
            (Method::POST, "api/reset/request") => {
                let body: ResetRequest = read_json(request, max, timeout).await?;
                handle
                    .run(move |identity| async move {
                        identity.request_password_reset(&body.email).await
                    })
                    .await
                    .map_err(service_failure)?;
                // The same answer whether the address has an account or not.
                Ok(respond::json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({
                        "status": "accepted",
                        "message": "If this address has an account, a link to reset its password is on its way."
                    }),
                ))
            }
            (Method::POST, "api/reset") => {
                let body: Reset = read_json(request, max, timeout).await?;
                let reset = handle
                    .run(move |identity| async move {
                        identity.reset_password(&body.token, &body.password).await
                    })
                    .await;
                match reset {
                    Ok(account) => {
                        ctx.user_id = Some(account.id);
                        self.emit_details(
                            EventKind::PasswordChanged,
                            ctx,
                            serde_json::json!({ "via": "reset", "sessions": "revoked" }),
                        )
                        .await;
                        Ok(no_content())
                    }
                    Err(error) => self.identity_error(error, ctx),
                }
            }
            (Method::POST, "api/unlock") => {
                let body: MailedToken = read_json(request, max, timeout).await?;
                let unlocked = handle
                    .run(move |identity| async move { identity.unlock(&body.token).await })
                    .await;
                match unlocked {
                    Ok((account, device)) => {
                        ctx.user_id = Some(account.id);
                        let mut response = no_content();
                        cookie::append_device(&mut response, settings, device.as_deref());
                        Ok(response)
                    }
                    Err(error) => self.identity_error(error, ctx),
                }
            }
            (Method::GET, "api/me") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "user": account_json(&principal.account) }),
                ))
            }
            (Method::GET, "api/sessions") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let account = principal.account.id.clone();
                let sessions = handle
                    .run(move |identity| async move { identity.sessions(&account).await })
                    .await
                    .map_err(service_failure)?;
                let list: Vec<serde_json::Value> = sessions
                    .iter()
                    .map(|s| session_json(s, Some(&principal.session_id)))
                    .collect();
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "sessions": list }),
                ))
            }
            (Method::DELETE, "api/sessions") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let (account, keep) = (principal.account.id, principal.session_id);
                let revoked = handle
                    .run(move |identity| async move {
                        identity.revoke_sessions(&account, Some(&keep)).await
                    })
                    .await
                    .map_err(service_failure)?;
                self.emit_details(
                    EventKind::SessionRevoked,
                    ctx,
                    serde_json::json!({ "reason": "revoked_by_user", "count": revoked }),
                )
                .await;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "revoked": revoked }),
                ))
            }
            (Method::DELETE, path) if path.starts_with("api/sessions/") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let target = path.trim_start_matches("api/sessions/").to_owned();
                let account = principal.account.id;
                let outcome =
                    handle
                        .run(move |identity| async move {
                            identity.revoke_session(&account, &target).await
                        })
                        .await;
                match outcome {
                    Ok(()) => {
                        self.emit_details(
                            EventKind::SessionRevoked,
                            ctx,
                            serde_json::json!({ "reason": "revoked_by_user", "count": 1 }),
                        )
                        .await;
                        Ok(no_content())
                    }
                    Err(IdentityError::NotFound) => {
                        Err((Reject::NoRoute, "no such session".into()))
                    }
                    Err(error) => Err(service_failure(error)),
                }
            }
            (_, path) if path == "security" || path.starts_with("security/") => {
                let rest = path.trim_start_matches("security").to_owned();
                self.security_page(request, &rest, handle, settings, token, ctx)
                    .await
            }
            (_, path) if path == "api/devices" || path.starts_with("api/devices/") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let rest = path.trim_start_matches("api/devices").to_owned();
                let method = request.method().clone();
                self.devices_api(&method, &rest, principal, ctx).await
            }
            (_, path) if path == "api/second-factor" || path.starts_with("api/second-factor/") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let rest = path.trim_start_matches("api/second-factor").to_owned();
                self.second_factor_api(request, &rest, principal, ctx).await
            }
            (_, path) if path == "api/keys" || path.starts_with("api/keys/") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let rest = path.trim_start_matches("api/keys").to_owned();
                self.api_keys_api(request, &rest, principal, ctx).await
            }
            (Method::POST, "api/email") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let body: EmailChange = read_json(request, max, timeout).await?;
                let changed = handle
                    .run(move |identity| async move {
                        identity
                            .change_email(&principal, &body.email, body.current_password.as_deref())
                            .await
                    })
                    .await;
                match changed {
                    Ok(account) => {
                        self.emit_details(
                            EventKind::EmailChanged,
                            ctx,
                            serde_json::json!({ "email": mask_pii(&account.email) }),
                        )
                        .await;
                        Ok(respond::json(
                            StatusCode::OK,
                            &serde_json::json!({ "user": account_json(&account) }),
                        ))
                    }
                    Err(IdentityError::StepUpRequired) => Err((
                        Reject::StepUpRequired,
                        "changing the e-mail address needs a recent second factor".into(),
                    )),
                    Err(IdentityError::Exists) => {
                        Err((Reject::Conflict, "another account has this address".into()))
                    }
                    Err(error) => self.identity_error(error, ctx),
                }
            }
            (Method::POST, "api/password") => {
                let principal = self.session_principal(handle, token, ctx).await?;
                let body: PasswordChange = read_json(request, max, timeout).await?;
                self.change_password(handle, principal, body, ctx).await
            }
            (method, page) => {
                use super::pages::{AccountPage, LinkPage};
                match (method, AccountPage::of(page), LinkPage::of(page)) {
                    (Method::GET, Some(which), _) => {
                        Ok(self.account_page(&request, &settings.prefix, which))
                    }
                    (Method::POST, Some(which), _) => {
                        self.account_form(request, handle, settings, which, ctx)
                            .await
                    }
                    (Method::GET, _, Some(which)) => {
                        Ok(self.link_page(&request, &settings.prefix, which))
                    }
                    (Method::POST, _, Some(which)) => {
                        self.link_form(request, handle, settings, which, ctx).await
                    }
                    _ => Err((Reject::NoRoute, String::new())),
                }
            }
        }
    }

    /// Creates the first admin with the one-time token `serve` printed.
    pub(super) async fn bootstrap(
        &self,
        handle: &IdentityHandle,
        body: Bootstrap,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        if !handle.take_bootstrap(&body.token) {
            return Ok(respond::api_error(
                StatusCode::FORBIDDEN,
                "invalid_token",
                "The bootstrap link is invalid or was used",
                &ctx.id,
                None,
            ));
        }
        let token = body.token.clone();
        let created = handle
            .run(move |identity| async move {
                if identity.admin_count().await? > 0 {
                    return Err(IdentityError::Exists);
                }
                identity
                    .create_account(portcullis_identity::NewAccount {
                        email: &body.email,
                        display_name: &body.display_name,
                        password: Some(&body.password),
                        roles: vec!["admin".to_owned(), "user".to_owned()],
                        email_verified: true,
                    })
                    .await
            })
            .await;
        match created {
            Ok(account) => {
                ctx.user_id = Some(account.id.clone());
                self.emit_details(
                    EventKind::AccountCreated,
                    ctx,
                    serde_json::json!({ "via": "bootstrap", "roles": ["admin", "user"] }),
                )
                .await;
                Ok(respond::json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "user": account_json(&account) }),
                ))
            }
            Err(IdentityError::Exists) => Ok(respond::api_error(
                StatusCode::CONFLICT,
                "admin_exists",
                "An admin exists already, or the address is taken",
                &ctx.id,
                None,
            )),
            Err(error) => {
                // A policy failure: the same link may be used again with a better password.
                handle.rearm_bootstrap(&token);
                self.identity_error(error, ctx)
            }
        }
    }

    /// Rotates a refresh token; a reused one revokes its family and is recorded.
    async fn refresh(
        &self,
        handle: &IdentityHandle,
        refresh_token: String,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let outcome = handle
            .run(move |identity| async move { identity.refresh(&refresh_token).await })
            .await
            .map_err(service_failure)?;
        match outcome {
            RefreshOutcome::Granted(granted) => {
                let (tokens, account) = *granted;
                ctx.user_id = Some(account.id);
                self.emit_details(
                    EventKind::TokenIssued,
                    ctx,
                    serde_json::json!({ "grant": "refresh_token" }),
                )
                .await;
                Ok(token_response(Some(tokens)))
            }
            RefreshOutcome::Reused { account_id } => {
                ctx.user_id = Some(account_id);
                self.emit_details(
                    EventKind::RefreshTokenReused,
                    ctx,
                    serde_json::json!({ "action": "family_revoked" }),
                )
                .await;
                Ok(invalid_grant(&ctx.id))
            }
            RefreshOutcome::Invalid => Ok(invalid_grant(&ctx.id)),
        }
    }

    /// The caller of an API call that needs a session.
    pub(super) async fn session_principal(
        &self,
        handle: &IdentityHandle,
        token: Option<String>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Principal, Rejection> {
        let Some(token) = token else {
            return Err((Reject::Unauthenticated, "no session cookie".into()));
        };
        let principal = handle
            .authenticate_session(token)
            .await
            .map_err(service_failure)?
            .ok_or_else(|| {
                (
                    Reject::Unauthenticated,
                    "unknown or expired session".to_owned(),
                )
            })?;
        ctx.user_id = Some(principal.account.id.clone());
        Ok(principal)
    }

    pub(super) async fn register(
        &self,
        handle: &IdentityHandle,
        body: Registration,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let outcome = handle
            .run(move |identity| async move {
                identity
                    .register(&body.email, &body.password, &body.display_name)
                    .await
            })
            .await;
        match outcome {
            Ok(created) => {
                if let Some(account) = &created {
                    ctx.user_id = Some(account.id.clone());
                    self.emit_details(
                        EventKind::AccountCreated,
                        ctx,
                        serde_json::json!({ "via": "registration" }),
                    )
                    .await;
                }
                // The same answer whether the address was free or taken.
                Ok(respond::json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({
                        "status": "accepted",
                        "message": "If this address can be registered, the account is ready; check your e-mail to verify it."
                    }),
                ))
            }
            Err(error) => self.identity_error(error, ctx),
        }
    }

    /// A proof-of-work challenge for a login to an account under distributed attack, bound to
    /// the client's network and browser family.
    fn login_challenge(&self, bits: u8, ip: std::net::IpAddr, agent: &str) -> String {
        let binding = portcullis_defence::challenge::binding(ip, agent);
        self.challenges
            .issue(&binding, bits, self.events.now().unix_timestamp())
    }

    /// Checks a login's proof-of-work: signed here for this client, at least the login's
    /// difficulty (a bot-defence challenge may ask for less), in time, and used once.
    async fn proof_of_work(
        &self,
        proof: &Proof,
        agent: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Rejection> {
        let refused = |reason: String| (Reject::ChallengeFailed, reason);
        let binding = portcullis_defence::challenge::binding(ctx.client.ip, agent);
        let now = self.events.now().unix_timestamp();
        let solved = self
            .challenges
            .verify(&proof.challenge, &proof.nonce, &binding, now)
            .map_err(|e| refused(format!("login proof: {e}")))?;
        let asked = self.challenges.difficulty(&proof.challenge).unwrap_or(0);
        if asked < self.settings.bot.login_difficulty {
            return Err(refused(format!(
                "login proof of {asked} bits, under the login's"
            )));
        }
        match crate::bot::use_once(self.limiter.state(), &solved).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(refused("login proof used before".into())),
            Err(error) => Err((Reject::Unavailable, format!("challenge state: {error}"))),
        }
    }

    /// A login step that ends in a session cookie (`Grant::Session`) or in tokens, or, for an
    /// account with a second factor, in the challenge of the second step.
    pub(super) async fn login(
        &self,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        step: LoginStep,
        client: ClientInfo,
        grant: Grant,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let masked_email = match &step {
            LoginStep::Password(body) => mask_pii(&body.email),
            LoginStep::SecondFactor { .. } | LoginStep::Passkey(_) => String::new(),
        };
        let wants_tokens = matches!(grant, Grant::Tokens);
        let agent = client.user_agent.clone().unwrap_or_default();
        let outcome = handle
            .run(move |identity| async move {
                let outcome = match step {
                    LoginStep::Password(body) => {
                        identity.login(&body.email, &body.password, &client).await?
                    }
                    LoginStep::SecondFactor {
                        challenge,
                        proof,
                        remember,
                    } => {
                        identity
                            .login_second_factor(&challenge, &proof, remember, &client)
                            .await?
                    }
                    LoginStep::Passkey(answer) => {
                        identity
                            .login_passkey(&answer.ceremony, &answer.credential, &client)
                            .await?
                    }
                };
                let LoginOutcome::Success(logged_in) = &outcome else {
                    return Ok((outcome, None));
                };
                match grant {
                    // Session fixation: whatever session the browser held before is ended,
                    // and the login always starts a new one.
                    Grant::Session { previous } => {
                        if let Some(previous) = previous {
                            identity.logout(&previous).await?;
                        }
                        Ok((outcome, None))
                    }
                    // A token client keeps no session.
                    Grant::Tokens => {
                        identity.logout(&logged_in.token).await?;
                        let tokens = identity.grant_tokens(&logged_in.account).await?;
                        Ok((outcome, Some(tokens)))
                    }
                }
            })
            .await
            .map_err(service_failure)?;
        let (outcome, tokens) = outcome;
        match outcome {
            LoginOutcome::Success(logged_in) if wants_tokens => {
                ctx.user_id = Some(logged_in.account.id.clone());
                self.emit_details(
                    EventKind::LoginSuccess,
                    ctx,
                    serde_json::json!({ "grant": "password", "rehashed": logged_in.rehashed }),
                )
                .await;
                Ok(token_response(tokens))
            }
            LoginOutcome::Success(logged_in) => {
                ctx.user_id = Some(logged_in.account.id.clone());
                let second_factor = match logged_in.second_factor {
                    Some(accepted) => Some(accepted.method()),
                    None => logged_in.trusted_device.then_some("trusted_device"),
                };
                self.emit_details(
                    EventKind::LoginSuccess,
                    ctx,
                    serde_json::json!({ "session": logged_in.session_id, "rehashed": logged_in.rehashed, "second_factor": second_factor, "remembered": logged_in.remember_cookie.is_some() }),
                )
                .await;
                let mut body = serde_json::json!({ "user": account_json(&logged_in.account) });
                if let Some(Accepted::BackupCode { remaining }) = logged_in.second_factor {
                    self.emit_details(
                        EventKind::BackupCodeUsed,
                        ctx,
                        serde_json::json!({ "remaining": remaining }),
                    )
                    .await;
                    body["backup_codes_left"] = remaining.into();
                }
                if logged_in.evicted > 0 {
                    self.emit_details(
                        EventKind::SessionRevoked,
                        ctx,
                        serde_json::json!({ "reason": "session_limit", "count": logged_in.evicted }),
                    )
                    .await;
                }
                let mut response = respond::json(StatusCode::OK, &body);
                if let Some(cookie) = cookie::set(
                    &settings.cookie_name,
                    &logged_in.token,
                    settings.cookie_max_age,
                ) {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                cookie::append_device(&mut response, settings, logged_in.device_cookie.as_deref());
                if let Some(remember) = logged_in.remember_cookie.as_deref().and_then(|token| {
                    cookie::set(
                        cookie::TRUSTED_DEVICE,
                        token,
                        portcullis_identity::TRUSTED_DEVICE_LIFETIME,
                    )
                }) {
                    response.headers_mut().append(header::SET_COOKIE, remember);
                }
                Ok(response)
            }
            LoginOutcome::Throttled { retry_after } => {
                self.emit_details(
                    EventKind::LoginThrottled,
                    ctx,
                    serde_json::json!({ "reason": "too_many_attempts", "email": masked_email, "retry_after_s": retry_after.as_secs() }),
                )
                .await;
                ctx.event_recorded = true;
                let mut response = respond::api_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    Reject::LoginThrottled.code(),
                    Reject::LoginThrottled.message(),
                    &ctx.id,
                    None,
                );
                // Whole seconds, rounded up: a client that waits this long is let through.
                let seconds = retry_after.as_millis().div_ceil(1000).max(1);
                if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                Ok(response)
            }
            LoginOutcome::SecondFactorRequired {
                account_id,
                challenge,
                passkey,
                methods,
            } => {
                let passkey = passkey.map(|ceremony| {
                    serde_json::json!({ "ceremony": ceremony.id, "options": ceremony.options })
                });
                ctx.user_id = Some(account_id);
                self.emit_details(
                    EventKind::SecondFactorRequired,
                    ctx,
                    serde_json::json!({ "email": masked_email }),
                )
                .await;
                Ok(respond::json(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({ "error": {
                        "code": "second_factor_required",
                        "message": "Enter the code from your authenticator app, or a backup code",
                        "request_id": ctx.id.as_str(),
                        "challenge": challenge,
                        "methods": methods,
                        "passkey": passkey,
                        "expires_in": 300,
                    }}),
                ))
            }
            LoginOutcome::ProofRequired { account_id } => {
                // In the background: the answer must take as long whether a link goes out or not.
                if let Some(account) = account_id.clone() {
                    handle.spawn(move |identity| async move {
                        if let Err(error) = identity.send_unlock_link(&account).await {
                            tracing::error!(%error, "unlock link not sent");
                        }
                    });
                }
                ctx.user_id = account_id;
                self.emit_details(
                    EventKind::LoginThrottled,
                    ctx,
                    serde_json::json!({ "reason": "proof_required", "email": masked_email }),
                )
                .await;
                ctx.event_recorded = true;
                // The proof-of-work stands in for the mailed link: the client may solve this
                // challenge and send the login again with `proof`.
                let bits = self.settings.bot.login_difficulty;
                let challenge = self.login_challenge(bits, ctx.client.ip, &agent);
                Ok(respond::json(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({ "error": {
                        "code": "proof_required",
                        "message": "This account saw many failed logins from elsewhere; log in from a browser that logged in to it before, use the link sent to its e-mail address, or send the login again with the proof of work below",
                        "request_id": ctx.id.as_str(),
                        "proof_of_work": { "challenge": challenge, "difficulty": bits, "algorithm": "sha256(challenge + \":\" + nonce) with that many leading zero bits" },
                    }}),
                ))
            }
            LoginOutcome::Failure { reason, account_id } => {
                ctx.user_id = account_id;
                self.emit_details(
                    EventKind::LoginFailure,
                    ctx,
                    serde_json::json!({ "reason": reason.as_str(), "email": masked_email }),
                )
                .await;
                ctx.event_recorded = true;
                // Only someone who knows the password learns more than "wrong credentials".
                match reason {
                    FailureReason::Unverified => Ok(respond::api_error(
                        StatusCode::FORBIDDEN,
                        "email_unverified",
                        "Verify your e-mail address before logging in",
                        &ctx.id,
                        None,
                    )),
                    FailureReason::Inactive(_) => Ok(respond::api_error(
                        StatusCode::FORBIDDEN,
                        "account_inactive",
                        "This account is locked or disabled",
                        &ctx.id,
                        None,
                    )),
                    FailureReason::WrongSecondFactor => Ok(respond::api_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_second_factor",
                        "The code is wrong, was used before, or the login took too long",
                        &ctx.id,
                        None,
                    )),
                    FailureReason::UnknownAccount
                    | FailureReason::WrongPassword
                    | FailureReason::MalformedEmail => {
                        Err((Reject::InvalidCredentials, reason.as_str().to_owned()))
                    }
                }
            }
        }
    }

    async fn logout(
        &self,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        token: Option<String>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        if let Some(token) = token {
            let ended = handle
                .run(move |identity| async move { identity.logout(&token).await })
                .await
                .map_err(service_failure)?;
            if let Some(principal) = ended {
                ctx.user_id = Some(principal.account.id);
                self.emit_details(
                    EventKind::SessionRevoked,
                    ctx,
                    serde_json::json!({ "reason": "logout", "count": 1 }),
                )
                .await;
            }
        }
        let mut response = no_content();
        if let Some(cookie) = cookie::clear(&settings.cookie_name) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    async fn change_password(
        &self,
        handle: &IdentityHandle,
        principal: Principal,
        body: PasswordChange,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let (account, keep) = (principal.account.id, principal.session_id);
        let outcome = handle
            .run(move |identity| async move {
                identity
                    .change_password(
                        &account,
                        &body.current_password,
                        &body.new_password,
                        Some(&keep),
                    )
                    .await
            })
            .await;
        match outcome {
            Ok(()) => {
                self.emit_details(
                    EventKind::PasswordChanged,
                    ctx,
                    serde_json::json!({ "via": "self_service", "other_sessions": "revoked" }),
                )
                .await;
                Ok(no_content())
            }
            Err(error) => self.identity_error(error, ctx),
        }
    }

    /// API answers for service errors that are the caller's to fix.
    fn identity_error(
        &self,
        error: IdentityError,
        ctx: &RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let (status, code, message, extra) = match error {
            IdentityError::Policy(violations) => {
                let failures = serde_json::to_value(&violations.failures).unwrap_or_default();
                (
                    StatusCode::BAD_REQUEST,
                    "password_policy",
                    violations.message,
                    Some(("failures", failures)),
                )
            }
            IdentityError::InvalidToken => (
                StatusCode::BAD_REQUEST,
                "invalid_token",
                "The link is invalid or has expired".to_owned(),
                None,
            ),
            IdentityError::Email(error) => (
                StatusCode::BAD_REQUEST,
                "invalid_email",
                error.to_string(),
                None,
            ),
            IdentityError::RegistrationClosed => (
                StatusCode::FORBIDDEN,
                "registration_closed",
                "Registration is closed".to_owned(),
                None,
            ),
            IdentityError::WrongPassword => (
                StatusCode::FORBIDDEN,
                "wrong_password",
                "The current password is wrong".to_owned(),
                None,
            ),
            other => return Err(service_failure(other)),
        };
        Ok(respond::api_error(status, code, &message, &ctx.id, extra))
    }
}

/// A service failure the caller cannot fix: busy, or the store is down (fail closed).
pub(crate) fn service_failure(error: IdentityError) -> Rejection {
    match error {
        IdentityError::Hash(portcullis_identity::password::HashError::Busy) => {
            (Reject::Busy, error.to_string())
        }
        other => (Reject::Unavailable, other.to_string()),
    }
}

/// Reads a JSON body of at most `max` bytes within `timeout`.
pub(crate) async fn read_json<T: DeserializeOwned>(
    request: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> Result<T, Rejection> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Err((
            Reject::BadRequest,
            "identity API bodies are application/json".into(),
        ));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(request.into_body(), max).collect())
        .await
        .map_err(|_| {
            (
                Reject::RequestTimeout,
                "body not received in time".to_owned(),
            )
        })?
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                (
                    Reject::BodyTooLarge,
                    format!("identity API body over {max} bytes"),
                )
            } else {
                (Reject::BadRequest, "body could not be read".to_owned())
            }
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(|e| {
        (
            Reject::BadRequest,
            format!("body is not the expected JSON: {e}"),
        )
    })
}

pub(crate) fn account_json(account: &Account) -> serde_json::Value {
    serde_json::to_value(account).unwrap_or_default()
}

/// A session as its owner or an operator sees it; `current` marks the one asking.
pub(crate) fn session_json(
    session: &portcullis_store::SessionRow,
    current: Option<&str>,
) -> serde_json::Value {
    let mut value = serde_json::json!({
        "id": session.id,
        "created_at": rfc3339(session.created_at),
        "last_seen_at": rfc3339(session.last_seen_at),
        "ip": session.client_ip,
        "user_agent": session.user_agent,
    });
    if let Some(current) = current {
        value["current"] = serde_json::Value::from(session.id == current);
    }
    value
}

fn rfc3339(unix_ms: i64) -> Option<String> {
    let time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).ok()?;
    time.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn token_response(tokens: Option<TokenSet>) -> Response<Body> {
    let Some(tokens) = tokens else {
        return respond::json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({}));
    };
    respond::json(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": tokens.access_token,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "refresh_token": tokens.refresh_token,
        }),
    )
}

fn invalid_grant(request_id: &portcullis_core::RequestId) -> Response<Body> {
    respond::api_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "The refresh token is invalid, expired or revoked",
        request_id,
        None,
    )
}

pub(super) fn no_content() -> Response<Body> {
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
