//! `{prefix}/api/second-factor...`: a signed-in user sets up TOTP (with its QR code as SVG and
//! PNG), confirms it with a code and receives backup codes, steps up before a sensitive action,
//! makes new backup codes and removes the second factor (both after a step-up).

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use portcullis_core::{EventKind, Reject};
use portcullis_identity::passkeys::PasskeyError;
use portcullis_identity::second_factor::{Accepted, Proof, SecondFactorError, qr_png, qr_svg};
use portcullis_identity::{IdentityError, Principal};
use serde::Deserialize;

use crate::body::Body;
use crate::respond;
use crate::stack::{Gateway, Rejection, RequestContext};

/// A new passkey: the registration ceremony, a name, and the browser's answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPasskey {
    ceremony: String,
    #[serde(default)]
    name: String,
    credential: Box<portcullis_identity::passkeys::RegisterPublicKeyCredential>,
}

/// A TOTP code, or a backup code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    backup_code: Option<String>,
}

impl Code {
    fn proof(self) -> Result<Proof, Rejection> {
        match (self.code, self.backup_code) {
            (Some(code), None) => Ok(Proof::Totp(code)),
            (None, Some(code)) => Ok(Proof::BackupCode(code)),
            _ => Err((
                Reject::BadRequest,
                "send exactly one of code and backup_code".into(),
            )),
        }
    }
}

impl Gateway {
    /// Answers `{prefix}/api/second-factor{rest}` for the signed-in `principal`.
    pub(super) async fn second_factor_api(
        &self,
        request: Request<Incoming>,
        rest: &str,
        principal: Principal,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let (Some(handle), Some(settings)) = (&self.identity, &self.settings.identity) else {
            return Err((Reject::NoRoute, String::new()));
        };
        let timeout = self.settings.limits.request_timeout;
        let max = settings.max_body_bytes;
        let method = request.method().clone();
        let prefix = settings.prefix.clone();
        match (method, rest) {
            (Method::GET, "") => {
                let status = handle
                    .run(move |identity| async move {
                        let (enrolled, left) = identity.second_factor_status(&principal).await?;
                        let methods = identity.second_factor_methods(&principal).await?;
                        Ok((enrolled, methods, left, identity.stepped_up(&principal)))
                    })
                    .await
                    .map_err(failure)?;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "enrolled": status.0,
                        "methods": status.1,
                        "totp": status.1.contains(&"totp"),
                        "backup_codes_left": status.2,
                        "stepped_up": status.3,
                    }),
                ))
            }
            (Method::POST, "/totp") => {
                let setup = handle
                    .run(move |identity| async move { identity.begin_totp(&principal).await })
                    .await
                    .map_err(failure)?;
                let svg = qr_svg(&setup.uri).map_err(|e| failure(e.into()))?;
                Ok(respond::json(
                    StatusCode::CREATED,
                    &serde_json::json!({
                        "secret": setup.secret,
                        "uri": setup.uri,
                        "qr_svg": svg,
                        "qr_png": format!("{prefix}/api/second-factor/totp/qr.png"),
                    }),
                ))
            }
            (Method::GET, "/totp/qr.png") => {
                let uri = handle
                    .run(move |identity| async move { identity.pending_totp_uri(&principal).await })
                    .await
                    .map_err(failure)?;
                let png = qr_png(&uri).map_err(|e| failure(e.into()))?;
                let mut response = Response::new(crate::body::full(png));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(response)
            }
            (Method::POST, "/totp/confirm") => {
                let code = confirm_code(request, max, timeout).await?;
                let codes =
                    handle
                        .run(move |identity| async move {
                            identity.confirm_totp(&principal, &code).await
                        })
                        .await
                        .map_err(failure)?;
                Ok(self.enabled(codes, "totp", ctx).await)
            }
            (Method::POST, "/step-up") => {
                let proof = super::api::read_json::<Code>(request, max, timeout)
                    .await?
                    .proof()?;
                let accepted = handle
                    .run(move |identity| async move { identity.step_up(&principal, &proof).await })
                    .await
                    .map_err(failure)?;
                match accepted {
                    Some(accepted) => {
                        if let Accepted::BackupCode { remaining } = accepted {
                            self.emit_details(
                                EventKind::BackupCodeUsed,
                                ctx,
                                serde_json::json!({ "remaining": remaining, "for": "step_up" }),
                            )
                            .await;
                        }
                        Ok(super::api::no_content())
                    }
                    None => {
                        // A wrong code counts as a failed login for the intrusion detection.
                        self.emit_details(
                            EventKind::LoginFailure,
                            ctx,
                            serde_json::json!({ "reason": "wrong_second_factor", "for": "step_up" }),
                        )
                        .await;
                        Ok(wrong_code(ctx))
                    }
                }
            }
            (Method::POST, "/email") => {
                handle
                    .run(move |identity| async move {
                        identity.begin_email_factor(&principal).await
                    })
                    .await
                    .map_err(failure)?;
                Ok(respond::json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({ "sent": true, "expires_in": 600 }),
                ))
            }
            (Method::POST, "/email/confirm") => {
                let code = confirm_code(request, max, timeout).await?;
                let codes = handle
                    .run(move |identity| async move {
                        identity.confirm_email_factor(&principal, &code).await
                    })
                    .await
                    .map_err(failure)?;
                Ok(self.enabled(codes, "email_code", ctx).await)
            }
            (Method::POST, "/passkeys/start") => {
                let ceremony = handle
                    .run(move |identity| async move {
                        identity.start_passkey_registration(&principal).await
                    })
                    .await
                    .map_err(failure)?;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "ceremony": ceremony.id, "options": ceremony.options }),
                ))
            }
            (Method::POST, "/passkeys") => {
                let body: NewPasskey = super::api::read_json(request, max, timeout).await?;
                let added = handle
                    .run(move |identity| async move {
                        identity
                            .finish_passkey_registration(
                                &principal,
                                &body.ceremony,
                                &body.name,
                                &body.credential,
                            )
                            .await
                    })
                    .await
                    .map_err(failure)?;
                self.emit_details(
                    EventKind::SecondFactorEnabled,
                    ctx,
                    serde_json::json!({ "method": "passkey", "passkey": added.id }),
                )
                .await;
                Ok(respond::json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "passkey": added }),
                ))
            }
            (Method::GET, "/passkeys") => {
                let listed = handle
                    .run(move |identity| async move { identity.list_passkeys(&principal).await })
                    .await
                    .map_err(failure)?;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "passkeys": listed }),
                ))
            }
            (Method::DELETE, path) if path.starts_with("/passkeys/") => {
                let id = path.trim_start_matches("/passkeys/").to_owned();
                let removed =
                    handle
                        .run(move |identity| async move {
                            identity.remove_passkey(&principal, &id).await
                        })
                        .await
                        .map_err(failure)?;
                if !removed {
                    return Err((Reject::NoRoute, "no such passkey".into()));
                }
                self.emit_details(
                    EventKind::SecondFactorDisabled,
                    ctx,
                    serde_json::json!({ "method": "passkey" }),
                )
                .await;
                Ok(super::api::no_content())
            }
            (Method::POST, "/backup-codes") => {
                let codes = handle
                    .run(move |identity| async move {
                        identity.regenerate_backup_codes(&principal).await
                    })
                    .await
                    .map_err(failure)?;
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "backup_codes": codes }),
                ))
            }
            (Method::DELETE, "") => {
                let removed =
                    handle
                        .run(move |identity| async move {
                            identity.disable_second_factor(&principal).await
                        })
                        .await
                        .map_err(failure)?;
                if !removed {
                    return Err((Reject::NoRoute, "no second factor".into()));
                }
                self.emit_details(
                    EventKind::SecondFactorDisabled,
                    ctx,
                    serde_json::json!({ "method": "totp" }),
                )
                .await;
                Ok(super::api::no_content())
            }
            _ => Err((Reject::NoRoute, String::new())),
        }
    }
}

impl Gateway {
    /// `{prefix}/api/devices`: the caller's remembered browsers (`GET`), and forgetting one
    /// (`DELETE .../{id}`).
    pub(super) async fn devices_api(
        &self,
        method: &Method,
        rest: &str,
        principal: Principal,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let Some(handle) = &self.identity else {
            return Err((Reject::NoRoute, String::new()));
        };
        match (method, rest.strip_prefix('/')) {
            (&Method::GET, None) => {
                let devices = handle
                    .run(move |identity| async move { identity.trusted_devices(&principal).await })
                    .await
                    .map_err(failure)?;
                let list: Vec<serde_json::Value> = devices
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "id": d.id,
                            "created_at": d.created_at,
                            "expires_at": d.expires_at,
                            "last_used_at": d.last_used_at,
                            "user_agent": d.user_agent,
                            "ip": d.client_ip,
                        })
                    })
                    .collect();
                Ok(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "devices": list }),
                ))
            }
            (&Method::DELETE, Some(id)) if !id.is_empty() => {
                let id = id.to_owned();
                let outcome = handle
                    .run(move |identity| async move {
                        identity.revoke_trusted_device(&principal, &id).await
                    })
                    .await;
                match outcome {
                    Ok(()) => {
                        self.emit_details(
                            EventKind::SessionRevoked,
                            ctx,
                            serde_json::json!({ "reason": "trusted_device_forgotten" }),
                        )
                        .await;
                        Ok(super::api::no_content())
                    }
                    Err(IdentityError::NotFound) => Err((Reject::NoRoute, "no such device".into())),
                    Err(error) => Err(failure(error)),
                }
            }
            _ => Err((Reject::NoRoute, String::new())),
        }
    }
}

impl Gateway {
    /// The answer to a confirmed setup: the event and the backup codes, shown once; or 401 for
    /// a wrong code.
    async fn enabled(
        &self,
        codes: Option<Vec<String>>,
        method: &str,
        ctx: &RequestContext<'_>,
    ) -> Response<Body> {
        let Some(codes) = codes else {
            return wrong_code(ctx);
        };
        self.emit_details(
            EventKind::SecondFactorEnabled,
            ctx,
            serde_json::json!({ "method": method }),
        )
        .await;
        respond::json(
            StatusCode::OK,
            &serde_json::json!({ "backup_codes": codes }),
        )
    }
}

/// The code of a confirmation body.
async fn confirm_code(
    request: Request<Incoming>,
    max: usize,
    timeout: std::time::Duration,
) -> Result<String, Rejection> {
    let body: Code = super::api::read_json(request, max, timeout).await?;
    body.code
        .ok_or_else(|| (Reject::BadRequest, "send the code".into()))
}

fn wrong_code(ctx: &RequestContext<'_>) -> Response<Body> {
    respond::api_error(
        StatusCode::UNAUTHORIZED,
        "invalid_second_factor",
        "The code is wrong or was used before",
        &ctx.id,
        None,
    )
}

/// The answer to a failure of the service: a step-up needed, a state that does not allow the
/// call, or the service being unavailable.
fn failure(error: IdentityError) -> Rejection {
    match error {
        IdentityError::StepUpRequired => (
            Reject::StepUpRequired,
            "no second factor proved in the last 10 minutes".into(),
        ),
        IdentityError::SecondFactor(
            error @ (SecondFactorError::AlreadyEnrolled | SecondFactorError::NotPending),
        ) => (Reject::Conflict, error.to_string()),
        IdentityError::SecondFactor(SecondFactorError::Passkey(
            error @ (PasskeyError::NoCeremony | PasskeyError::Refused(_)),
        )) => (Reject::BadRequest, error.to_string()),
        other => super::api::service_failure(other),
    }
}
