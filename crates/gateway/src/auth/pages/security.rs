//! `{prefix}/security`: the signed-in user's page for second factors and API keys. Plain forms
//! (the QR code is inline SVG, so the page loads nothing): set up an authenticator app (QR
//! code, then one code to confirm), see the backup codes once, see passkeys and remove one,
//! create an API key (shown once) and revoke keys. Every form carries the synchronizer token;
//! every action is the JSON API's own. Adding a passkey needs the browser's WebAuthn API: one
//! small script, allowed by nonce, calls the JSON API; the page's policy allows that script
//! and requests to this origin, nothing else.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use portcullis_core::{EventKind, Reject};
use portcullis_identity::Principal;
use portcullis_identity::api_keys::{KeyOwner, NewApiKey};
use portcullis_identity::second_factor::qr_svg;

use super::{HONEYPOT_INPUT, csrf_token, found, html_page};
use crate::auth::IdentityHandle;
use crate::body::Body;
use crate::respond::escape_html;
use crate::settings::IdentitySettings;
use crate::stack::{Gateway, Rejection, RequestContext};

/// A form posting to `{prefix}/security/{action}` with `fields` (already escaped) and a button.
fn form(prefix: &str, action: &str, csrf: &str, fields: &str, button: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{prefix}/security/{action}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{HONEYPOT_INPUT}{fields}\
         <button type=\"submit\">{button}</button></form>",
        prefix = escape_html(prefix),
        csrf = escape_html(csrf),
    )
}

/// The page, with the synchronizer cookie set when the browser had none.
fn with_csrf(
    request: &Request<Incoming>,
    render: impl FnOnce(&str) -> Response<Body>,
) -> Response<Body> {
    let (csrf, new) = csrf_token(request);
    let mut response = render(&csrf);
    if new
        && let Some(cookie) = super::cookie::set(
            super::CSRF_COOKIE,
            &csrf,
            std::time::Duration::from_secs(3600),
        )
    {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, cookie);
    }
    response
}

impl Gateway {
    /// `{prefix}/security` and its forms; `rest` is the path after `security`.
    pub(crate) async fn security_page(
        &self,
        request: Request<Incoming>,
        rest: &str,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        token: Option<String>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let prefix = settings.prefix.clone();
        let principal = match self.session_principal(handle, token, ctx).await {
            Ok(principal) => principal,
            Err((Reject::Unauthenticated, _)) if request.method() == Method::GET => {
                return Ok(super::redirect_to_login(
                    &prefix,
                    &format!("{prefix}/security"),
                ));
            }
            Err(rejection) => return Err(rejection),
        };
        match (request.method().clone(), rest) {
            (Method::GET, "") => {
                let overview = self.overview(handle, &principal).await?;
                let nonce = portcullis_identity::token::random_token();
                let mut page = with_csrf(&request, |csrf| {
                    html_page("Security", None, &overview.render(&prefix, csrf, &nonce))
                });
                let csp = format!(
                    "default-src 'none'; script-src 'nonce-{nonce}'; connect-src 'self'; \
                     style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; \
                     base-uri 'none'"
                );
                if let Ok(csp) = http::HeaderValue::from_str(&csp) {
                    page.headers_mut()
                        .insert(http::header::CONTENT_SECURITY_POLICY, csp);
                }
                Ok(page)
            }
            (Method::POST, "/totp") => {
                let ([], csrf) = self
                    .read_form(request, settings.max_body_bytes, &[], ctx)
                    .await?;
                let setup = handle
                    .run(move |identity| async move { identity.begin_totp(&principal).await })
                    .await
                    .map_err(super::super::api::service_failure)?;
                let svg = qr_svg(&setup.uri).map_err(|e| (Reject::Unavailable, e.to_string()))?;
                let body = format!(
                    "<p>Scan this code with your authenticator app, or type the key in.</p>{svg}\
                     <p>Key: <code>{secret}</code></p>{confirm}",
                    secret = escape_html(&setup.secret),
                    confirm = totp_confirm_form(&prefix, &csrf),
                );
                Ok(html_page("Set up an authenticator app", None, &body))
            }
            (Method::POST, "/totp/confirm") => {
                let ([code], csrf) = self
                    .read_form(request, settings.max_body_bytes, &["code"], ctx)
                    .await?;
                let codes =
                    handle
                        .run(move |identity| async move {
                            identity.confirm_totp(&principal, &code).await
                        })
                        .await
                        .map_err(super::super::api::service_failure)?;
                let Some(codes) = codes else {
                    let retry = totp_confirm_form(&prefix, &csrf);
                    let mut page = html_page(
                        "Set up an authenticator app",
                        Some("That code is wrong; try the one it shows now"),
                        &retry,
                    );
                    *page.status_mut() = StatusCode::UNAUTHORIZED;
                    return Ok(page);
                };
                self.emit_details(
                    EventKind::SecondFactorEnabled,
                    ctx,
                    serde_json::json!({ "method": "totp", "via": "page" }),
                )
                .await;
                let list: String = codes
                    .iter()
                    .map(|c| format!("<li><code>{}</code></li>", escape_html(c)))
                    .collect();
                let body = format!(
                    "<p>Your authenticator app is on. Keep these backup codes somewhere safe: \
                     each signs you in once if you lose the app. They are not shown again.</p>\
                     <ol>{list}</ol><p><a href=\"{prefix}/security\">Back to security</a></p>",
                    prefix = escape_html(&prefix),
                );
                Ok(html_page("Backup codes", None, &body))
            }
            (Method::POST, "/keys") => {
                let ([name, scopes], _) = self
                    .read_form(request, settings.max_body_bytes, &["name", "scopes"], ctx)
                    .await?;
                self.recent_second_factor(handle, &principal).await?;
                let scopes: Vec<String> = scopes
                    .split([',', ' '])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let admin = principal.account.roles.iter().any(|r| r == "admin");
                if let Some(scope) = scopes
                    .iter()
                    .find(|s| !admin && !settings.api_key_user_scopes.contains(s))
                {
                    return Err((
                        Reject::Forbidden,
                        format!("scope {scope:?} is not one users may grant themselves"),
                    ));
                }
                let new = NewApiKey {
                    name,
                    owner: KeyOwner::Account(principal.account.id.clone()),
                    scopes,
                    expires_in: None,
                    networks: Vec::new(),
                };
                let created = handle
                    .run(move |identity| async move {
                        let keys = identity
                            .api_keys()
                            .ok_or(portcullis_identity::IdentityError::NotFound)?;
                        Ok(keys.create(new).await)
                    })
                    .await
                    .map_err(super::super::api::service_failure)?;
                let (key, secret) = created.map_err(|e| (Reject::BadRequest, e.to_string()))?;
                self.emit_details(
                    EventKind::ApiKeyCreated,
                    ctx,
                    crate::auth::keys::key_details(&key, "page"),
                )
                .await;
                let body = format!(
                    "<p>Your new key for <strong>{name}</strong>. Copy it now: only its hash is \
                     kept, so it is not shown again.</p><p><code>{secret}</code></p>\
                     <p><a href=\"{prefix}/security\">Back to security</a></p>",
                    name = escape_html(&key.name),
                    secret = escape_html(&secret),
                    prefix = escape_html(&prefix),
                );
                Ok(html_page("API key created", None, &body))
            }
            (Method::POST, action @ ("/keys/revoke" | "/passkeys/remove")) => {
                let ([id], _) = self
                    .read_form(request, settings.max_body_bytes, &["id"], ctx)
                    .await?;
                let revoke = action == "/keys/revoke";
                let (kind, details) = if revoke {
                    (
                        EventKind::ApiKeyRevoked,
                        serde_json::json!({ "key_id": id, "by": "page" }),
                    )
                } else {
                    (
                        EventKind::SecondFactorDisabled,
                        serde_json::json!({ "method": "passkey", "by": "page" }),
                    )
                };
                let done = handle
                    .run(move |identity| async move {
                        if !revoke {
                            return identity.remove_passkey(&principal, &id).await;
                        }
                        let keys = identity
                            .api_keys()
                            .ok_or(portcullis_identity::IdentityError::NotFound)?;
                        let key = keys
                            .get(&id)
                            .await
                            .map_err(|_| portcullis_identity::IdentityError::NotFound)?;
                        if key.account_id.as_deref() != Some(principal.account.id.as_str()) {
                            return Ok(false);
                        }
                        Ok(keys.revoke(&id).await.is_ok())
                    })
                    .await;
                match done {
                    Ok(true) => {
                        self.emit_details(kind, ctx, details).await;
                        let mut back = found(&format!("{prefix}/security"));
                        *back.status_mut() = StatusCode::SEE_OTHER;
                        Ok(back)
                    }
                    Ok(false) | Err(portcullis_identity::IdentityError::NotFound) => {
                        Err((Reject::NoRoute, "no such key or passkey".into()))
                    }
                    Err(portcullis_identity::IdentityError::StepUpRequired) => Err((
                        Reject::StepUpRequired,
                        "removing a passkey needs a recent second factor".into(),
                    )),
                    Err(error) => Err(super::super::api::service_failure(error)),
                }
            }
            _ => Err((Reject::NoRoute, String::new())),
        }
    }

    async fn overview(
        &self,
        handle: &IdentityHandle,
        principal: &Principal,
    ) -> Result<Overview, Rejection> {
        let principal = principal.clone();
        handle
            .run(move |identity| async move {
                let (_, backup_codes_left) = identity.second_factor_status(&principal).await?;
                let totp = identity
                    .second_factor_methods(&principal)
                    .await?
                    .contains(&"totp");
                let passkeys = match identity.second_factors().and_then(|f| f.passkeys()) {
                    Some(_) => identity.list_passkeys(&principal).await?,
                    None => Vec::new(),
                };
                let keys = match identity.api_keys() {
                    Some(keys) => keys
                        .list(Some(&principal.account.id))
                        .await
                        .map_err(|_| portcullis_identity::IdentityError::NotFound)?,
                    None => Vec::new(),
                };
                Ok(Overview {
                    totp,
                    backup_codes_left,
                    passkeys: passkeys.into_iter().map(|p| (p.id, p.name)).collect(),
                    keys: keys
                        .into_iter()
                        .filter(|k| k.revoked_at.is_none())
                        .map(|k| (k.id, k.name, k.hint, k.scopes.join(" ")))
                        .collect(),
                })
            })
            .await
            .map_err(super::super::api::service_failure)
    }
}

/// What the security page shows.
struct Overview {
    totp: bool,
    backup_codes_left: i64,
    passkeys: Vec<(String, String)>,
    keys: Vec<(String, String, String, String)>,
}

impl Overview {
    fn render(&self, prefix: &str, csrf: &str, nonce: &str) -> String {
        let totp = if self.totp {
            format!(
                "<p>Authenticator app: on. Backup codes left: {}.</p>",
                self.backup_codes_left
            )
        } else {
            format!(
                "<p>Authenticator app: off.</p>{}",
                form(prefix, "totp", csrf, "", "Set up an authenticator app")
            )
        };
        let hidden_id = |id: &str| {
            format!(
                "<input type=\"hidden\" name=\"id\" value=\"{}\">",
                escape_html(id)
            )
        };
        let passkeys: String = self
            .passkeys
            .iter()
            .map(|(id, name)| {
                format!(
                    "<li>{} {}</li>",
                    escape_html(name),
                    form(prefix, "passkeys/remove", csrf, &hidden_id(id), "Remove")
                )
            })
            .collect();
        let keys: String = self
            .keys
            .iter()
            .map(|(id, name, hint, scopes)| {
                format!(
                    "<li>{} <code>{}</code> {} {}</li>",
                    escape_html(name),
                    escape_html(hint),
                    escape_html(scopes),
                    form(prefix, "keys/revoke", csrf, &hidden_id(id), "Revoke")
                )
            })
            .collect();
        let create = form(
            prefix,
            "keys",
            csrf,
            "<p><label for=\"name\">Name</label><br><input id=\"name\" name=\"name\" required></p>\
             <p><label for=\"scopes\">Scopes (comma-separated)</label><br><input id=\"scopes\" name=\"scopes\"></p>",
            "Create an API key",
        );
        let add_passkey = format!(
            "<p><label for=\"passkey-name\">Name</label><br><input id=\"passkey-name\" value=\"Passkey\"></p>\
             <p><button id=\"add-passkey\" type=\"button\" data-prefix=\"{prefix}\">Add a passkey</button></p>\
             <p id=\"passkey-status\" role=\"status\"></p><script nonce=\"{nonce}\">{PASSKEY_SCRIPT}</script>",
            prefix = escape_html(prefix),
            nonce = escape_html(nonce),
        );
        format!(
            "<h2>Second factor</h2>{totp}<h2>Passkeys</h2><ul>{passkeys}</ul>{add_passkey}\
             <h2>API keys</h2><ul>{keys}</ul>{create}"
        )
    }
}

/// Registers a passkey with the browser's WebAuthn API through the JSON API: the options'
/// base64url fields become bytes for `navigator.credentials.create`, its answer goes back as
/// base64url, and the page reloads to list the new passkey.
const PASSKEY_SCRIPT: &str = r"(() => {
  const button = document.getElementById('add-passkey');
  const status = document.getElementById('passkey-status');
  const prefix = button.dataset.prefix;
  const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, '+').replace(/_/g, '/')
    + '==='.slice((text.length + 3) % 4)), (c) => c.charCodeAt(0));
  const text = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/[+]/g, '-').replace(/[/]/g, '_').replace(/=+$/, '');
  button.addEventListener('click', async () => {
    try {
      const started = await fetch(prefix + '/api/second-factor/passkeys/start',
        { method: 'POST', credentials: 'same-origin' });
      if (!started.ok) throw new Error((await started.json()).error.message);
      const { ceremony, options } = await started.json();
      const key = options.publicKey;
      key.challenge = bytes(key.challenge);
      key.user.id = bytes(key.user.id);
      (key.excludeCredentials || []).forEach((c) => { c.id = bytes(c.id); });
      const made = await navigator.credentials.create({ publicKey: key });
      const credential = {
        id: made.id, rawId: text(made.rawId), type: made.type, extensions: {},
        response: {
          attestationObject: text(made.response.attestationObject),
          clientDataJSON: text(made.response.clientDataJSON),
        },
      };
      const name = document.getElementById('passkey-name').value;
      const stored = await fetch(prefix + '/api/second-factor/passkeys', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ ceremony, name, credential }),
      });
      if (!stored.ok) throw new Error((await stored.json()).error.message);
      location.reload();
    } catch (error) {
      status.textContent = 'The passkey was not added: ' + error.message;
    }
  });
})();";

/// The form that turns TOTP on with the first code the app shows.
fn totp_confirm_form(prefix: &str, csrf: &str) -> String {
    form(
        prefix,
        "totp/confirm",
        csrf,
        "<p><label for=\"code\">The 6-digit code it shows</label><br>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required></p>",
        "Turn on",
    )
}
