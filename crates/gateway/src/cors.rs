//! CORS per route, with explicit origins only.
//!
//! Threat: a reflected `Access-Control-Allow-Origin` with credentials lets any site read a
//! logged-in user's data. Defence: only origins listed on the route are echoed, `Vary: Origin`
//! is always set so caches do not mix origins, and a preflight from any other origin is refused.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::{Body, empty};
use crate::settings::CorsSettings;

/// What CORS makes of a request.
pub(crate) enum CorsDecision {
    /// Not a cross-origin request this route handles.
    None,
    /// An allowed origin: add its headers to the response.
    Allowed(HeaderValue),
    /// A preflight from an allowed origin: answer it here.
    Preflight(Response<Body>),
    /// A preflight from an origin not allowed.
    Denied,
}

pub(crate) fn decide(
    cors: Option<&CorsSettings>,
    method: &Method,
    headers: &HeaderMap,
) -> CorsDecision {
    let (Some(cors), Some(origin)) = (cors, headers.get(header::ORIGIN)) else {
        return CorsDecision::None;
    };
    let is_preflight =
        method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let allowed = origin
        .to_str()
        .is_ok_and(|o| cors.origins.iter().any(|allowed| allowed == o));
    match (allowed, is_preflight) {
        (false, true) => CorsDecision::Denied,
        (false, false) => CorsDecision::None,
        (true, false) => CorsDecision::Allowed(origin.clone()),
        (true, true) => {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            let out = response.headers_mut();
            add_allowed(out, origin.clone(), cors);
            let join = |list: &[String]| HeaderValue::from_str(&list.join(", ")).ok();
            if let Some(methods) = join(&cors.methods) {
                out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
            }
            if let Some(allow) = join(&cors.headers) {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow);
            }
            out.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(cors.max_age.as_secs()),
            );
            CorsDecision::Preflight(response)
        }
    }
}

pub(crate) fn add_allowed(headers: &mut HeaderMap, origin: HeaderValue, cors: &CorsSettings) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}
