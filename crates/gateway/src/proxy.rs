//! The upstream proxy: a pooled keep-alive HTTP/1.1 client, and the rewriting of a request for
//! its upstream (normalized path, no hop-by-hop or client-sent forwarding headers, our own
//! `X-Forwarded-*` and `X-Request-Id`).

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::client_ip::FORWARDING_HEADERS;
use crate::respond::strip_hop_by_hop;
use crate::settings::UpstreamSettings;

/// The pooled client shared by all routes.
pub(crate) type UpstreamClient = Client<HttpConnector, Body>;

pub(crate) fn client(settings: &UpstreamSettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(settings.idle_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.idle_timeout)
        .pool_max_idle_per_host(settings.max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// What the gateway tells the upstream about the request.
pub(crate) struct Forwarding<'a> {
    pub(crate) client_ip: IpAddr,
    pub(crate) proto: &'static str,
    pub(crate) host: Option<&'a str>,
    pub(crate) request_id: &'a str,
}

/// Builds the upstream request from the client's.
pub(crate) fn upstream_request(
    mut parts: Parts,
    body: Body,
    base: &Uri,
    path_and_query: &str,
    forwarding: &Forwarding<'_>,
) -> Result<Request<Body>, http::Error> {
    let mut uri = Uri::builder().path_and_query(path_and_query);
    if let Some(scheme) = base.scheme() {
        uri = uri.scheme(scheme.clone());
    }
    if let Some(authority) = base.authority() {
        uri = uri.authority(authority.clone());
    }
    parts.uri = uri.build()?;
    // An HTTP/2 client's request goes upstream as HTTP/1.1; its authority becomes `Host`.
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    for name in FORWARDING_HEADERS {
        headers.remove(name);
    }
    headers.remove("x-request-id");
    // The listener already answered `Expect: 100-continue` when the body was first read.
    headers.remove(header::EXPECT);
    if let Some(host) = forwarding.host
        && !headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert(header::HOST, value);
    }
    let client_ip = HeaderValue::from_str(&forwarding.client_ip.to_string())?;
    headers.insert("x-forwarded-for", client_ip);
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(forwarding.proto),
    );
    if let Some(host) = forwarding.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert("x-forwarded-host", host);
    }
    headers.insert(
        "x-request-id",
        HeaderValue::from_str(forwarding.request_id)?,
    );
    Ok(Request::from_parts(parts, body))
}

/// Cleans the upstream's response of hop-by-hop headers.
pub(crate) fn downstream_response(mut response: Response<Incoming>) -> Response<Incoming> {
    strip_hop_by_hop(response.headers_mut());
    response
}
