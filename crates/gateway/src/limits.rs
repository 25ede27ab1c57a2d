//! Request limits checked once the headers are read: header bytes and count, and the length of
//! the request target. Hyper enforces a hard cap on the header buffer beneath these; these
//! limits sit below that cap so the client gets the common error body and an event is recorded.

use http::Request;
use portcullis_core::Reject;

use crate::settings::LimitSettings;

pub(crate) fn check<B>(
    limits: &LimitSettings,
    request: &Request<B>,
) -> Result<(), (Reject, String)> {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err((Reject::UriTooLong, format!("uri of {uri_len} bytes")));
    }
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return Err((
            Reject::HeadersTooLarge,
            format!("{} header fields", headers.len()),
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err((Reject::HeadersTooLarge, format!("{bytes} header bytes")));
    }
    Ok(())
}
