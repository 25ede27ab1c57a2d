//! The upstream proxy: TLS to upstreams (verified against the system's roots plus
//! `upstream.ca_file`), the pooled client for outbound calls other than proxying (a CAPTCHA
//! provider, alert webhooks; proxied requests go through [`crate::pool`]), and the rewriting of
//! a request for its upstream (normalized path, no hop-by-hop or client-sent forwarding
//! headers, our own `X-Forwarded-*` and `X-Request-Id`).

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::body::Body;
use crate::header_filter;
use crate::settings::UpstreamSettings;
use crate::tls::TlsError;

/// The pooled client for outbound calls.
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

pub(crate) fn client(settings: &UpstreamSettings) -> Result<UpstreamClient, TlsError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(settings.idle_timeout));
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(upstream_tls(settings)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.idle_timeout)
        .pool_max_idle_per_host(settings.max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

/// TLS to upstreams: certificates verified, always; trusted roots are the system's and those
/// in `ca_file` (for a private CA).
pub(crate) fn upstream_tls(settings: &UpstreamSettings) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "a system root certificate could not be loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &settings.ca_file {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Certificate {
                path: path.display().to_string(),
                source,
            })?;
        for certificate in certificates {
            roots.add(certificate)?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What the gateway tells the upstream about the request.
pub(crate) struct Forwarding<'a> {
    pub(crate) client_ip: IpAddr,
    pub(crate) proto: &'static str,
    /// The `Host` the client sent (or an HTTP/2 client's `:authority`), already validated.
    pub(crate) host: Option<HeaderValue>,
    pub(crate) request_id: Option<HeaderValue>,
    /// Identity headers of the authenticated caller.
    pub(crate) identity: &'a [(HeaderName, HeaderValue)],
    /// The session cookie's name, removed from `Cookie`: the upstream never sees the token.
    pub(crate) session_cookie: Option<&'a str>,
    /// A header that carried the gateway's credential (an API key), removed.
    pub(crate) spent_credential: Option<&'a HeaderName>,
}

/// Builds the upstream request from the client's, its URI in origin form (the path and
/// query: what HTTP/1.1 sends to an origin server).
pub(crate) fn upstream_request(
    mut parts: Parts,
    body: Body,
    base: &Uri,
    path_and_query: PathAndQuery,
    forwarding: &Forwarding<'_>,
) -> Result<Request<Body>, http::Error> {
    parts.uri = Uri::from(path_and_query);
    // An HTTP/2 client's request goes upstream as HTTP/1.1; its authority becomes `Host`.
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    // `Expect`: the listener already answered `100-continue` when the body was first read.
    header_filter::retain(headers, |name| {
        header_filter::is_hop_by_hop(name)
            || header_filter::is_forwarding(name)
            || header_filter::is_identity(name)
            || name == "x-request-id"
            || name == "expect"
    });
    if let Some(cookie) = forwarding.session_cookie {
        crate::auth::cookie::remove_from_request(headers, cookie);
    }
    if let Some(name) = forwarding.spent_credential {
        headers.remove(name);
    }
    for (name, value) in forwarding.identity {
        headers.insert(name.clone(), value.clone());
    }
    if !headers.contains_key(header::HOST) {
        // An HTTP/2 client's `:authority`, else (an HTTP/1.0 client) the upstream's own.
        let host = forwarding.host.clone().or_else(|| {
            base.authority()
                .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
        });
        if let Some(value) = host {
            headers.insert(header::HOST, value);
        }
    }
    let mut client_ip = String::with_capacity(15);
    crate::client_ip::push_ip(&mut client_ip, forwarding.client_ip);
    let client_ip = HeaderValue::from_maybe_shared(bytes::Bytes::from(client_ip))?;
    headers.insert(X_FORWARDED_FOR, client_ip);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(forwarding.proto),
    );
    if let Some(host) = &forwarding.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if let Some(id) = &forwarding.request_id {
        headers.insert(X_REQUEST_ID, id.clone());
    }
    Ok(Request::from_parts(parts, body))
}

/// Cleans the upstream's response of hop-by-hop headers and of those that name its software.
pub(crate) fn downstream_response<B>(mut response: Response<B>) -> Response<B> {
    header_filter::retain(response.headers_mut(), |name| {
        header_filter::is_hop_by_hop(name) || header_filter::is_fingerprint(name)
    });
    response
}

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
