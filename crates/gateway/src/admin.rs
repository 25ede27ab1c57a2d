//! The admin listener: `/metrics` (Prometheus), `/healthz` (the process runs), `/readyz`
//! (the store and the shared state answer, within 2 s each) and the admin API
//! ([`crate::admin_api`]). It belongs on a private address; it serves nothing else.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_store::Store;

use crate::admin_api::AdminApi;
use crate::body::{Body, full};

pub(crate) struct Admin {
    pub(crate) metrics: PrometheusHandle,
    pub(crate) store: Option<Store>,
    pub(crate) state: portcullis_state::SharedState,
    /// The admin API, when identity is on.
    pub(crate) api: Option<AdminApi>,
}

/// How long a readiness check waits for the store or the shared state.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Admin {
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<Body>, Infallible> {
        if let Some(rest) = request.uri().path().strip_prefix("/admin/api/")
            && let Some(api) = &self.api
        {
            let rest = rest.to_owned();
            return Ok(api.handle(request, &rest, peer).await);
        }
        let (status, content_type, body) = match request.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" => match self.unready().await {
                None => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
                Some(what) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{what} unreachable\n"),
                ),
            },
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_owned(),
            ),
        };
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        Ok(response)
    }

    /// What is not answering, if anything: authentication fails closed without either.
    async fn unready(&self) -> Option<&'static str> {
        if let Some(store) = &self.store {
            match tokio::time::timeout(READINESS_TIMEOUT, store.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "store not reachable");
                    return Some("store");
                }
                Err(_) => return Some("store"),
            }
        }
        match tokio::time::timeout(READINESS_TIMEOUT, self.state.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => {
                tracing::warn!(%error, "shared state not reachable");
                Some("shared state")
            }
            Err(_) => Some("shared state"),
        }
    }
}
