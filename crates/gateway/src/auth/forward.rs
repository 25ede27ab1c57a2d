//! Forward-auth for deployments that keep nginx (`auth_request`), Traefik (`ForwardAuth`) or
//! Caddy (`forward_auth`) in front: they ask `{prefix}/forward` (Traefik, Caddy) or
//! `{prefix}/auth-request` (nginx) about each request, passing its method, host and URI in
//! `X-Forwarded-Method`, `-Host` and `-Uri` with the client's own headers. The answer is 200
//! with the identity headers (for the proxy to copy upstream), 401, 403, or on `forward` for
//! browsers a 302 to the login page with the original path as `next`; nginx turns a 302 from
//! `auth_request` into a 500, so it gets 401 and redirects itself (`error_page 401`).
//!
//! Roles and scopes a location requires go in the query: `/auth/forward?roles=admin,ops`.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use portcullis_core::{EventKind, Reject};

use super::pages;
use crate::body::{Body, empty};
use crate::settings::RouteAuth;
use crate::stack::{Gateway, Rejection, RequestContext};

impl Gateway {
    /// Answers a forward-auth subrequest.
    pub(crate) async fn forward_auth(
        &self,
        request: Request<Incoming>,
        prefix: &str,
        redirect: bool,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Response<Body>, Rejection> {
        let headers = request.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let method = text("x-forwarded-method")
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or_else(|| request.method().clone());
        let host = text("x-forwarded-host").map(|h| {
            h.split(':')
                .next()
                .unwrap_or(h)
                .trim_end_matches('.')
                .to_ascii_lowercase()
        });
        let uri = text("x-forwarded-uri").unwrap_or("/").to_owned();
        let (mut roles, mut scopes) = (Vec::new(), Vec::new());
        for (key, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
            let list = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            match key.as_ref() {
                "roles" => roles.extend(list),
                "scopes" => scopes.extend(list),
                _ => {}
            }
        }
        match self
            .identify(headers, &method, RouteAuth::Any, host.as_deref(), ctx)
            .await
        {
            Ok(caller) => {
                let need = crate::stack::Need {
                    roles: &roles,
                    scopes: &scopes,
                    second_factor: false,
                };
                self.authorize(&caller, &need, ctx)?;
                let mut response = Response::new(empty());
                let out = response.headers_mut();
                for (name, value) in ctx.identity_headers.iter() {
                    out.insert(name.clone(), value.clone());
                }
                out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(response)
            }
            Err((Reject::Unauthenticated, reason)) if redirect && ctx.wants_html => {
                self.emit_details(
                    EventKind::AuthenticationRequired,
                    ctx,
                    serde_json::json!({ "reason": reason, "via": "forward_auth" }),
                )
                .await;
                Ok(pages::redirect_to_login(prefix, &uri))
            }
            Err(rejection) => Err(rejection),
        }
    }
}

/// `302` to `location`.
pub(crate) fn found(location: &str) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
