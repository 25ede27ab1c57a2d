//! The admin listener: `/metrics` (Prometheus), `/healthz` (the process runs) and `/readyz`
//! (the store answers). It belongs on a private address; it serves nothing else.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_store::Store;

use crate::body::{Body, full};

pub(crate) struct Admin {
    pub(crate) metrics: PrometheusHandle,
    pub(crate) store: Option<Store>,
}

impl Admin {
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let (status, content_type, body) = match request.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" => match &self.store {
                Some(store) => match store.ping().await {
                    Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
                    Err(error) => {
                        tracing::warn!(%error, "store not reachable");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            "store unreachable\n".to_owned(),
                        )
                    }
                },
                None => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
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
}
