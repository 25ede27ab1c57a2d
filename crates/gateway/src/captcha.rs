//! An external CAPTCHA instead of the proof-of-work (`[bot.captcha]`): Cloudflare Turnstile,
//! hCaptcha or Google reCAPTCHA. The challenge page shows the provider's widget (its script
//! and frames allowed by the page's CSP, nothing else); the widget's token is posted back to
//! the gateway, which asks the provider's `siteverify` whether it is good, with the client's
//! address, and gives a pass as for a solved proof-of-work. All three providers share that
//! verification protocol (form `secret`, `response`, `remoteip`; JSON `success`).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};

use crate::proxy::UpstreamClient;
use crate::respond::escape_html;

/// Which provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptchaProvider {
    /// Cloudflare Turnstile.
    Turnstile,
    /// hCaptcha.
    Hcaptcha,
    /// Google reCAPTCHA v2.
    Recaptcha,
}

/// A configured provider.
#[derive(Debug, Clone)]
pub struct CaptchaSettings {
    /// Which one.
    pub provider: CaptchaProvider,
    /// The public site key, shown in the page.
    pub site_key: String,
    /// The secret for `siteverify`.
    pub secret: String,
    /// `siteverify` (the provider's, unless set: a local stand-in in tests).
    pub verify_url: http::Uri,
}

impl CaptchaProvider {
    /// The provider's `siteverify`.
    pub fn default_verify_url(self) -> &'static str {
        match self {
            Self::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
            Self::Hcaptcha => "https://api.hcaptcha.com/siteverify",
            Self::Recaptcha => "https://www.google.com/recaptcha/api/siteverify",
        }
    }

    /// Script, widget class, the form field its token comes in, and the origins its script
    /// and frames load from.
    fn widget(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::Turnstile => (
                "https://challenges.cloudflare.com/turnstile/v0/api.js",
                "cf-turnstile",
                "cf-turnstile-response",
                "https://challenges.cloudflare.com",
            ),
            Self::Hcaptcha => (
                "https://js.hcaptcha.com/1/api.js",
                "h-captcha",
                "h-captcha-response",
                "https://hcaptcha.com https://*.hcaptcha.com",
            ),
            Self::Recaptcha => (
                "https://www.google.com/recaptcha/api.js",
                "g-recaptcha",
                "g-recaptcha-response",
                "https://www.google.com https://www.gstatic.com",
            ),
        }
    }

    /// The form field the widget posts its token in.
    pub(crate) fn response_field(self) -> &'static str {
        self.widget().2
    }
}

/// The challenge page with the provider's widget, and its CSP.
pub(crate) fn page(settings: &CaptchaSettings, action: &str, next: &str) -> (String, String) {
    let (script, class, _, origins) = settings.provider.widget();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Checking your browser</title><script src=\"{script}\" async defer></script></head><body>\
         <form method=\"post\" action=\"{action}\"><p>Please confirm that you are not a robot.</p>\
         <div class=\"{class}\" data-sitekey=\"{}\"></div>\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><button type=\"submit\">Continue</button></p></form></body></html>",
        escape_html(&settings.site_key),
        escape_html(next),
    );
    let csp = format!(
        "default-src 'none'; script-src {origins}; frame-src {origins}; connect-src {origins}; \
         style-src 'unsafe-inline' {origins}; img-src {origins}; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    (html, csp)
}

/// Asks the provider whether `token` is good for the client at `ip`.
pub(crate) async fn verify(
    client: &UpstreamClient,
    settings: &CaptchaSettings,
    token: &str,
    ip: IpAddr,
) -> Result<bool, String> {
    if token.is_empty() || token.len() > 4096 {
        return Ok(false);
    }
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("secret", &settings.secret)
        .append_pair("response", token)
        .append_pair("remoteip", &ip.to_string())
        .finish();
    let request = Request::builder()
        .method(Method::POST)
        .uri(settings.verify_url.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(
            Full::new(Bytes::from(form))
                .map_err(Into::into)
                .boxed_unsync(),
        )
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("siteverify answer: {e}"))?;
        Ok(answer["success"] == serde_json::Value::Bool(true))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "siteverify did not answer in time".to_owned())?
}
