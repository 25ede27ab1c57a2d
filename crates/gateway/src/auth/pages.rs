//! The login page: plain HTML, no script (so the gateway's strict CSP holds), a form that posts
//! back to the gateway with a synchronizer token, and a `next` that may only be a same-origin
//! relative path, so the login can never be used as an open redirect.

use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use portcullis_identity::ClientInfo;
use subtle::ConstantTimeEq as _;

mod security;

use super::api::Grant;
use super::forward::found;
use super::{IdentityHandle, cookie};
use crate::body::Body;
use crate::respond::escape_html;
use crate::settings::IdentitySettings;
use crate::stack::{Gateway, Rejection, RequestContext};

/// The synchronizer-token cookie of the login form.
const CSRF_COOKIE: &str = "__Host-portcullis_csrf";

/// `next` when it is a same-origin relative path (`/x`, not `//host`, `/\host` or `http:`),
/// else `/`.
pub(crate) fn safe_next(next: &str) -> &str {
    let bytes = next.as_bytes();
    let relative = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && next.len() <= 2048;
    if relative { next } else { "/" }
}

/// `302` to the login page, coming back to `uri` afterwards.
pub(crate) fn redirect_to_login(prefix: &str, uri: &str) -> Response<Body> {
    let next: String = form_urlencoded::byte_serialize(safe_next(uri).as_bytes()).collect();
    found(&format!("{prefix}/login?next={next}"))
}

/// A form field no person sees or fills: a form posted with it filled was filled by a bot.
const HONEYPOT_FIELD: &str = "website";
const HONEYPOT_INPUT: &str = "<div aria-hidden=\"true\" style=\"position:absolute;left:-10000px\">\
                              <label>Leave this empty <input name=\"website\" tabindex=\"-1\" \
                              autocomplete=\"off\"></label></div>";

/// A whole page: the title as heading, an optional error, then `main` (already escaped); and a
/// link no person sees or follows (hidden, out of the tab order, `nofollow`), so a client that
/// requests its target is a crawler ignoring all three: a honeypot hit.
fn html_page(title: &str, error: Option<&str>, main: &str) -> Response<Body> {
    let error = error
        .map(|e| format!("<p role=\"alert\"><strong>{}</strong></p>", escape_html(e)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title></head>\
         <body><main><h1>{title}</h1>{error}{main}</main>\
         <a href=\"{trap}\" rel=\"nofollow\" tabindex=\"-1\" aria-hidden=\"true\" style=\"display:none\">&#8203;</a>\
         </body></html>",
        title = escape_html(title),
        trap = crate::bot::TRAP_LINK_PATH,
    );
    crate::respond::html_page(html)
}

fn page(prefix: &str, next: &str, csrf: &str, error: Option<&str>) -> Response<Body> {
    let form = format!(
        "<form method=\"post\" action=\"{prefix}/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{next}\">{HONEYPOT_INPUT}\
         <p><label for=\"email\">E-mail address</label><br><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required></p>\
         <p><label for=\"password\">Password</label><br><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p>\
         <p><button type=\"submit\">Log in</button></p></form>",
        prefix = escape_html(prefix),
        csrf = escape_html(csrf),
        next = escape_html(safe_next(next)),
    );
    html_page("Log in", error, &form)
}

/// The second step of a login: the challenge, carried in the form, and a code.
fn second_factor_page(
    prefix: &str,
    next: &str,
    csrf: &str,
    challenge: &str,
    error: Option<&str>,
) -> Response<Body> {
    let form = format!(
        "<form method=\"post\" action=\"{prefix}/login/second-factor\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <input type=\"hidden\" name=\"challenge\" value=\"{challenge}\">{HONEYPOT_INPUT}\
         <p><label for=\"code\">Code from your authenticator app, or a backup code</label><br>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" required autofocus></p>\
         <p><label><input type=\"checkbox\" name=\"remember\" value=\"on\"> Remember this device for 30 days</label></p>\
         <p><button type=\"submit\">Continue</button></p></form>",
        prefix = escape_html(prefix),
        csrf = escape_html(csrf),
        next = escape_html(safe_next(next)),
        challenge = escape_html(challenge),
    );
    html_page("Second factor", error, &form)
}

/// What a mailed link's page does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkPage {
    /// `{prefix}/verify`: verify the e-mail address.
    Verify,
    /// `{prefix}/reset`: choose a new password.
    Reset,
    /// `{prefix}/unlock`: let this browser log in to an account under attack.
    Unlock,
}

impl LinkPage {
    pub(crate) fn of(path: &str) -> Option<Self> {
        match path {
            "verify" => Some(Self::Verify),
            "reset" => Some(Self::Reset),
            "unlock" => Some(Self::Unlock),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::Unlock => "unlock",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Verify => "Verify your e-mail address",
            Self::Reset => "Choose a new password",
            Self::Unlock => "Allow this browser",
        }
    }

    /// The form: opening the link changes nothing (mail scanners follow links); the button does.
    fn form(self, prefix: &str, token: &str, csrf: &str) -> String {
        let password = if self == Self::Reset {
            "<p><label for=\"password\">New password</label><br><input id=\"password\" name=\"password\" \
             type=\"password\" autocomplete=\"new-password\" required></p>"
        } else {
            ""
        };
        let button = match self {
            Self::Verify => "Verify",
            Self::Reset => "Set the password",
            Self::Unlock => "Allow this browser to log in",
        };
        format!(
            "<form method=\"post\" action=\"{prefix}/{path}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
             {password}<p><button type=\"submit\">{button}</button></p></form>",
            prefix = escape_html(prefix),
            path = self.path(),
            csrf = escape_html(csrf),
            token = escape_html(token),
        )
    }
}

/// The form's token: the browser's CSRF cookie, or a new one set with the page.
fn csrf_token(request: &Request<Incoming>) -> (String, bool) {
    match cookie::read(request.headers(), CSRF_COOKIE) {
        Some(token) if token.len() == 43 => (token.to_owned(), false),
        _ => (portcullis_identity::token::random_token(), true),
    }
}

/// A page with a form: `render` gets the value of the query parameter `key` and the form's
/// synchronizer token; the token's cookie is set with the page when the browser had none.
fn form_page(
    request: &Request<Incoming>,
    key: &str,
    render: impl FnOnce(&str, &str) -> Response<Body>,
) -> Response<Body> {
    let value = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let (csrf, new) = csrf_token(request);
    let mut response = render(&value, &csrf);
    if new
        && let Some(cookie) = cookie::set(CSRF_COOKIE, &csrf, std::time::Duration::from_secs(3600))
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

impl Gateway {
    /// `GET {prefix}/verify|reset|unlock?token=...`: the page a mailed link opens.
    pub(crate) fn link_page(
        &self,
        request: &Request<Incoming>,
        prefix: &str,
        which: LinkPage,
    ) -> Response<Body> {
        form_page(request, "token", |token, csrf| {
            html_page(which.title(), None, &which.form(prefix, token, csrf))
        })
    }

    /// `POST {prefix}/verify|reset|unlock` from a link page's form.
    pub(crate) async fn link_form(
        &self,
        request: Request<Incoming>,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        which: LinkPage,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let (fields, csrf) = self
            .read_form(
                request,
                settings.max_body_bytes,
                &["token", "password"],
                ctx,
            )
            .await?;
        let [token, password] = fields;
        let prefix = settings.prefix.clone();
        let login_link = format!(
            "<p><a href=\"{}/login\">Log in</a></p>",
            escape_html(&prefix)
        );
        let outcome = match which {
            LinkPage::Verify => {
                let token = token.clone();
                handle
                    .run(move |identity| async move {
                        identity.verify_email(&token).await.map(|_| None)
                    })
                    .await
            }
            LinkPage::Reset => {
                let (token, password) = (token.clone(), password);
                handle
                    .run(move |identity| async move {
                        identity
                            .reset_password(&token, &password)
                            .await
                            .map(|_| None)
                    })
                    .await
            }
            LinkPage::Unlock => {
                let token = token.clone();
                handle
                    .run(move |identity| async move {
                        identity.unlock(&token).await.map(|(_, device)| device)
                    })
                    .await
            }
        };
        match outcome {
            Ok(device) => {
                let done = match which {
                    LinkPage::Verify => "Your e-mail address is verified.",
                    LinkPage::Reset => {
                        "Your password is changed, and every session of your account has ended."
                    }
                    LinkPage::Unlock => "This browser may log in to your account now.",
                };
                if which == LinkPage::Reset {
                    self.emit_details(
                        portcullis_core::EventKind::PasswordChanged,
                        ctx,
                        serde_json::json!({ "via": "reset_page", "sessions": "revoked" }),
                    )
                    .await;
                }
                let mut response =
                    html_page(which.title(), None, &format!("<p>{done}</p>{login_link}"));
                cookie::append_device(&mut response, settings, device.as_deref());
                Ok(response)
            }
            Err(portcullis_identity::IdentityError::Policy(violations)) => {
                let mut response = html_page(
                    which.title(),
                    Some(&violations.message),
                    &which.form(&prefix, &token, &csrf),
                );
                *response.status_mut() = StatusCode::BAD_REQUEST;
                Ok(response)
            }
            Err(portcullis_identity::IdentityError::InvalidToken) => {
                let mut response = html_page(
                    which.title(),
                    Some("The link is invalid or has expired."),
                    &login_link,
                );
                *response.status_mut() = StatusCode::BAD_REQUEST;
                Ok(response)
            }
            Err(error) => Err(super::api::service_failure(error)),
        }
    }

    /// Reads a form of at most `max` bytes whose synchronizer token matches the browser's CSRF
    /// cookie and whose honeypot field is empty; returns the named fields (empty when absent)
    /// and the token.
    async fn read_form<const N: usize>(
        &self,
        request: Request<Incoming>,
        max: usize,
        names: &[&str; N],
        ctx: &mut RequestContext<'_>,
    ) -> Result<([String; N], String), Rejection> {
        let cookie_token = cookie::read(request.headers(), CSRF_COOKIE).map(str::to_owned);
        let timeout = self.settings.limits.request_timeout;
        let body = tokio::time::timeout(timeout, Limited::new(request.into_body(), max).collect())
            .await
            .map_err(|_| {
                (
                    portcullis_core::Reject::RequestTimeout,
                    "form not received in time".to_owned(),
                )
            })?
            .map_err(|_| {
                (
                    portcullis_core::Reject::BadRequest,
                    "form could not be read".to_owned(),
                )
            })?
            .to_bytes();
        let field = |name: &str| {
            form_urlencoded::parse(&body)
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        let form_token = field("csrf");
        let cookie_token = cookie_token.unwrap_or_default();
        let valid = !cookie_token.is_empty()
            && bool::from(cookie_token.as_bytes().ct_eq(form_token.as_bytes()));
        if !valid {
            return Err((
                portcullis_core::Reject::CsrfRejected,
                "form without its synchronizer token".into(),
            ));
        }
        if !field(HONEYPOT_FIELD).is_empty() {
            let details = serde_json::json!({ "form_field": HONEYPOT_FIELD, "path": ctx.path });
            self.emit_details(portcullis_core::EventKind::HoneypotHit, ctx, details)
                .await;
            ctx.event_recorded = true;
            return Err((
                portcullis_core::Reject::BotRefused,
                "honeypot form field filled".into(),
            ));
        }
        Ok((names.map(field), cookie_token))
    }

    /// `GET {prefix}/login`.
    pub(crate) fn login_page(&self, request: &Request<Incoming>, prefix: &str) -> Response<Body> {
        form_page(request, "next", |next, csrf| page(prefix, next, csrf, None))
    }

    /// `POST {prefix}/login` from the form: the synchronizer token, then the same login as the
    /// API; success redirects (303) to `next` with the session cookie.
    pub(crate) async fn login_form(
        &self,
        request: Request<Incoming>,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        client: ClientInfo,
        previous: Option<String>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let ([email, password, next], csrf) = self
            .read_form(
                request,
                settings.max_body_bytes,
                &["email", "password", "next"],
                ctx,
            )
            .await?;
        let credentials = super::api::Credentials {
            email,
            password,
            proof: None,
        };
        let step = super::api::LoginStep::Password(credentials);
        self.login_page_step(handle, settings, step, client, previous, &next, &csrf, ctx)
            .await
    }

    /// `POST {prefix}/login/second-factor`: the code for the challenge the password step gave.
    /// Six digits are a TOTP code; anything else is tried as a backup code.
    pub(crate) async fn second_factor_form(
        &self,
        request: Request<Incoming>,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        client: ClientInfo,
        previous: Option<String>,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let ([challenge, code, next, remember], csrf) = self
            .read_form(
                request,
                settings.max_body_bytes,
                &["challenge", "code", "next", "remember"],
                ctx,
            )
            .await?;
        let code = code.trim().to_owned();
        let proof = if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            portcullis_identity::second_factor::Proof::OneTimeCode(code)
        } else {
            portcullis_identity::second_factor::Proof::BackupCode(code)
        };
        let step = super::api::LoginStep::SecondFactor {
            challenge: challenge.clone(),
            proof,
            remember: remember == "on",
        };
        let response = self
            .login_page_step(handle, settings, step, client, previous, &next, &csrf, ctx)
            .await?;
        // A wrong code: the same challenge again, while it lasts.
        if response.status() == StatusCode::UNAUTHORIZED {
            let mut page = second_factor_page(
                &settings.prefix,
                &next,
                &csrf,
                &challenge,
                Some("The code is wrong or was used before"),
            );
            *page.status_mut() = StatusCode::UNAUTHORIZED;
            return Ok(page);
        }
        Ok(response)
    }

    /// One login step from a page: a redirect with the session cookie, the second-step page
    /// when the account has a second factor, or the login page with the reason.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per page, each spelled out"
    )]
    async fn login_page_step(
        &self,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        step: super::api::LoginStep,
        client: ClientInfo,
        previous: Option<String>,
        next: &str,
        csrf: &str,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let prefix = settings.prefix.clone();
        let outcome = self
            .login(
                handle,
                settings,
                step,
                client,
                Grant::Session { previous },
                ctx,
            )
            .await;
        let (status, message) = match api_outcome(outcome).await {
            Ok(response) => {
                let mut redirect = found(safe_next(next));
                *redirect.status_mut() = StatusCode::SEE_OTHER;
                for cookie in response.headers().get_all(header::SET_COOKIE) {
                    redirect
                        .headers_mut()
                        .append(header::SET_COOKIE, cookie.clone());
                }
                return Ok(redirect);
            }
            Err((_, _, Some(challenge))) => {
                return Ok(second_factor_page(&prefix, next, csrf, &challenge, None));
            }
            Err((status, message, None)) => (status, message),
        };
        let mut response = page(&prefix, next, csrf, Some(&message));
        *response.status_mut() = status;
        Ok(response)
    }

    /// `GET {prefix}/register` and `GET {prefix}/bootstrap?token=...`.
    pub(crate) fn account_page(
        &self,
        request: &Request<Incoming>,
        prefix: &str,
        which: AccountPage,
    ) -> Response<Body> {
        form_page(request, "token", |token, csrf| {
            html_page(which.title(), None, &which.form(prefix, token, csrf))
        })
    }

    /// `POST {prefix}/register` or `{prefix}/bootstrap` from the page: the same calls as the
    /// API, answered as a page.
    pub(crate) async fn account_form(
        &self,
        request: Request<Incoming>,
        handle: &IdentityHandle,
        settings: &IdentitySettings,
        which: AccountPage,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let ([email, display_name, password, token], csrf) = self
            .read_form(
                request,
                settings.max_body_bytes,
                &["email", "display_name", "password", "token"],
                ctx,
            )
            .await?;
        let prefix = settings.prefix.clone();
        let outcome = match which {
            AccountPage::Register => {
                let body = super::api::Registration {
                    email,
                    password,
                    display_name,
                };
                self.register(handle, body, ctx).await
            }
            AccountPage::Bootstrap => {
                let body = super::api::Bootstrap {
                    token: token.clone(),
                    email,
                    password,
                    display_name,
                };
                self.bootstrap(handle, body, ctx).await
            }
        };
        match api_outcome(outcome).await {
            Ok(_) => {
                let done = match which {
                    AccountPage::Register => {
                        "If this address can be registered, the account is ready; check your e-mail to verify it."
                    }
                    AccountPage::Bootstrap => "The first admin account is ready.",
                };
                let login = format!(
                    "<p><a href=\"{}/login\">Log in</a></p>",
                    escape_html(&prefix)
                );
                Ok(html_page(
                    which.title(),
                    None,
                    &format!("<p>{done}</p>{login}"),
                ))
            }
            Err((status, message, _)) => {
                let mut response = html_page(
                    which.title(),
                    Some(&message),
                    &which.form(&prefix, &token, &csrf),
                );
                *response.status_mut() = status;
                Ok(response)
            }
        }
    }
}

/// An API answer, for a page: the response when it succeeded, else its status and the message
/// of its error body.
/// A JSON API answer as a page sees it: success, or the status, the message and, when the
/// login needs a second factor, its challenge.
async fn api_outcome(
    outcome: Result<Response<Body>, Rejection>,
) -> Result<Response<Body>, (StatusCode, String, Option<String>)> {
    match outcome {
        Ok(response) if response.status().is_success() => Ok(response),
        Ok(response) => {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
            let error = parsed.as_ref().map(|v| &v["error"]);
            let message = error.and_then(|e| e["message"].as_str().map(str::to_owned));
            let challenge = error
                .filter(|e| e["code"] == "second_factor_required")
                .and_then(|e| e["challenge"].as_str().map(str::to_owned));
            Err((
                status,
                message.unwrap_or_else(|| "That did not work".to_owned()),
                challenge,
            ))
        }
        Err((reject, _)) => Err((
            StatusCode::from_u16(reject.status()).unwrap_or(StatusCode::BAD_REQUEST),
            reject.message().to_owned(),
            None,
        )),
    }
}

/// Pages that create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccountPage {
    /// `{prefix}/register`.
    Register,
    /// `{prefix}/bootstrap`: the first admin, with the token `serve` printed.
    Bootstrap,
}

impl AccountPage {
    pub(crate) fn of(path: &str) -> Option<Self> {
        match path {
            "register" => Some(Self::Register),
            "bootstrap" => Some(Self::Bootstrap),
            _ => None,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Register => "Create an account",
            Self::Bootstrap => "Create the first admin",
        }
    }

    fn form(self, prefix: &str, token: &str, csrf: &str) -> String {
        let path = match self {
            Self::Register => "register",
            Self::Bootstrap => "bootstrap",
        };
        format!(
            "<form method=\"post\" action=\"{prefix}/{path}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"token\" value=\"{token}\">{HONEYPOT_INPUT}\
             <p><label for=\"email\">E-mail address</label><br><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required></p>\
             <p><label for=\"display_name\">Name</label><br><input id=\"display_name\" name=\"display_name\" autocomplete=\"name\"></p>\
             <p><label for=\"password\">Password</label><br><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required></p>\
             <p><button type=\"submit\">Create the account</button></p></form>",
            prefix = escape_html(prefix),
            csrf = escape_html(csrf),
            token = escape_html(token),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_ever_a_local_path() {
        assert_eq!(safe_next("/app/reports?q=1"), "/app/reports?q=1");
        for hostile in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "",
            "/a\\b",
            "/a\nb",
            "evil",
        ] {
            assert_eq!(safe_next(hostile), "/", "{hostile:?}");
        }
    }
}
