//! Response compression (gzip), streamed.
//!
//! Threat (BREACH): a compressed response that reflects attacker input next to a secret leaks
//! the secret through its length. So nothing is compressed that sets a cookie or comes from a
//! route marked `secret`; those are the responses that carry session material and tokens.
//! Only textual types, only when the client asks, and not for tiny bodies.

use futures_util::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;

use crate::body::{Body, BoxError};

/// Smaller bodies are sent as they are: the gzip header would eat the gain.
const MIN_LENGTH: u64 = 1024;

/// Whether `headers` (of the request) accept gzip.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| {
            let mut parts = token.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Gzips `response` when that is safe and worth it.
pub(crate) fn maybe_compress(
    response: Response<Body>,
    method: &Method,
    secret_route: bool,
) -> Response<Body> {
    if !should_compress(&response, method, secret_route) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let data = BodyStream::new(body)
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
        .map_err(std::io::Error::other);
    let encoder = async_compression::tokio::bufread::GzipEncoder::new(
        tokio_util::io::StreamReader::new(data),
    );
    let stream = tokio_util::io::ReaderStream::new(encoder)
        .map_ok(Frame::data)
        .map_err(|e| Box::new(e) as BoxError);
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

fn should_compress(response: &Response<Body>, method: &Method, secret_route: bool) -> bool {
    let headers = response.headers();
    let status = response.status();
    let textual = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_textual);
    let long_enough = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_none_or(|length| length >= MIN_LENGTH);
    !secret_route
        && method != Method::HEAD
        && status.is_success()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::PARTIAL_CONTENT
        && !headers.contains_key(header::SET_COOKIE)
        && !headers.contains_key(header::CONTENT_ENCODING)
        && !headers.contains_key(header::CONTENT_RANGE)
        && textual
        && long_enough
}

fn is_textual(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json" | "application/javascript" | "application/xml" | "image/svg+xml"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
        );
        accepts_gzip(&headers)
    }

    #[test]
    fn reads_accept_encoding_with_quality_values() {
        assert!(accept("gzip, deflate, br"));
        assert!(accept("br;q=1.0, gzip;q=0.8"));
        assert!(accept("*"));
        assert!(!accept("gzip;q=0"));
        assert!(!accept("br, deflate"));
        assert!(!accept(""));
    }

    #[test]
    fn textual_types_only() {
        assert!(is_textual("text/html; charset=utf-8"));
        assert!(is_textual("application/problem+json"));
        assert!(!is_textual("image/png"));
        assert!(!is_textual("application/octet-stream"));
    }
}
