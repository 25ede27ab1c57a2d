//! Response hardening: the common error body, security headers on every response, removal of
//! headers that fingerprint the stack, and withholding of upstream server-error bodies (which
//! carry tracebacks, SQL and internal addresses) outside development.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use portcullis_core::{Reject, RequestId};

use crate::body::{Body, full};
use crate::settings::{ErrorDetail, HeaderSettings};

/// The common error body, JSON or HTML by `Accept`, always with the request id.
pub(crate) fn error_response(
    reject: Reject,
    request_id: &RequestId,
    wants_html: bool,
    detail: ErrorDetail,
    internal: &str,
) -> Response<Body> {
    let detail =
        (detail == ErrorDetail::Detailed && !internal.is_empty() && reject.may_show_detail())
            .then_some(internal);
    let (content_type, body) = if wants_html {
        (
            "text/html; charset=utf-8",
            html_body(reject, request_id, detail),
        )
    } else {
        ("application/json", json_body(reject, request_id, detail))
    };
    let status = StatusCode::from_u16(reject.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(request_id.as_str()) {
        headers.insert("x-request-id", id);
    }
    response
}

/// A JSON answer of the gateway's own API; never cached.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The common error body for an API error that is not a [`Reject`] (a password policy
/// failure); `extra` adds fields beside `code` and `message`.
pub(crate) fn api_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &RequestId,
    extra: Option<(&str, serde_json::Value)>,
) -> Response<Body> {
    let mut error = serde_json::json!({
        "code": code,
        "message": message,
        "request_id": request_id.as_str(),
    });
    if let Some((name, value)) = extra {
        error[name] = value;
    }
    json(status, &serde_json::json!({ "error": error }))
}

fn json_body(reject: Reject, request_id: &RequestId, detail: Option<&str>) -> String {
    let mut error = serde_json::json!({
        "code": reject.code(),
        "message": reject.message(),
        "request_id": request_id.as_str(),
    });
    if let Some(detail) = detail {
        error["detail"] = serde_json::Value::from(detail);
    }
    serde_json::json!({ "error": error }).to_string()
}

/// The common error body as a complete HTTP/1.1 message that closes the connection, for the
/// few answers written beneath hyper (a client too slow to send its headers).
pub(crate) fn raw_error_response(reject: Reject, request_id: &RequestId) -> Vec<u8> {
    let body = json_body(reject, request_id, None);
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\
         cache-control: no-store\r\nconnection: close\r\nx-content-type-options: nosniff\r\n\
         content-security-policy: default-src 'none'; frame-ancestors 'none'\r\nx-request-id: {id}\r\n\r\n{body}",
        status = reject.status(),
        reason = StatusCode::from_u16(reject.status()).ok().and_then(|s| s.canonical_reason()).unwrap_or(""),
        length = body.len(),
        id = request_id.as_str(),
    )
    .into_bytes()
}

fn html_body(reject: Reject, request_id: &RequestId, detail: Option<&str>) -> String {
    let detail = detail
        .map(|d| format!("<p><code>{}</code></p>", escape_html(d)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {message}</title></head>\
         <body><h1>{message}</h1><p>Error <code>{code}</code>, request <code>{id}</code></p>{detail}</body></html>",
        status = reject.status(),
        message = escape_html(reject.message()),
        code = reject.code(),
        id = escape_html(request_id.as_str()),
    )
}

/// An HTML page of the gateway's own, never cached (it carries per-request tokens).
pub(crate) fn html_page(html: String) -> Response<Body> {
    let mut response = Response::new(crate::body::full(html));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether the client prefers an HTML error page.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Pre-built security header values, made once from the settings.
#[derive(Debug)]
pub(crate) struct SecurityHeaders {
    fixed: Vec<(HeaderName, HeaderValue)>,
    gateway_csp: HeaderValue,
    hsts: Option<HeaderValue>,
}

impl SecurityHeaders {
    pub(crate) fn new(settings: &HeaderSettings, hsts: bool) -> Result<Self, http::Error> {
        let fixed = vec![
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::X_XSS_PROTECTION, HeaderValue::from_static("0")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_str(&settings.referrer_policy)?,
            ),
            (
                HeaderName::from_static("permissions-policy"),
                HeaderValue::from_str(&settings.permissions_policy)?,
            ),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_str(&settings.cross_origin_opener_policy)?,
            ),
        ];
        Ok(Self {
            fixed,
            gateway_csp: HeaderValue::from_str(&settings.gateway_csp)?,
            hsts: if hsts {
                Some(HeaderValue::from_str(&settings.hsts_value)?)
            } else {
                None
            },
        })
    }

    /// Hardens any response. `csp` is the policy to set: the gateway's own for its responses,
    /// the route's for upstream pages, or `None` to keep what the upstream sent.
    ///
    /// Set field by field, about 210 instructions each. Tried and no cheaper: building an
    /// upstream response's map afresh from a ready copy of these fields, then appending the
    /// upstream's own: the copy cost 630 instructions and each append 317, about 300 more per
    /// proxied request in all (bench/proxy/instructions.sh, 2026-11-29).
    pub(crate) fn apply(&self, headers: &mut HeaderMap, csp: Option<&HeaderValue>, secure: bool) {
        // Room for these and the request id and rate-limit fields at once, not grown in steps.
        headers.reserve(self.fixed.len() + 6);
        for (name, value) in &self.fixed {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(csp) = csp {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
        }
        if secure && let Some(hsts) = &self.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }

    pub(crate) fn gateway_csp(&self) -> &HeaderValue {
        &self.gateway_csp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.map(|c| c.to_bytes());
        String::from_utf8(bytes.unwrap_or_default().to_vec()).unwrap_or_default()
    }

    #[tokio::test]
    async fn generic_errors_carry_code_message_and_request_id_only() {
        let id = RequestId::generate();
        let response = error_response(
            Reject::BadGateway,
            &id,
            false,
            ErrorDetail::Generic,
            "10.1.2.3:8000 refused",
        );
        assert_eq!(response.status(), 502);
        let body = text(response).await;
        assert!(body.contains(id.as_str()));
        assert!(body.contains("\"code\":\"bad_gateway\""));
        assert!(!body.contains("10.1.2.3"), "{body}");
    }

    #[tokio::test]
    async fn html_errors_escape_details() {
        let id = RequestId::generate();
        let response = error_response(
            Reject::BadPath,
            &id,
            true,
            ErrorDetail::Detailed,
            "<script>x</script>",
        );
        let body = text(response).await;
        assert!(body.contains("&lt;script&gt;"));
        assert!(!body.contains("<script>"));
    }
}
