//! Alerts: chosen security events (by default the decisions an operator should hear of at once:
//! bans, upstream fraud reports, leaked refresh tokens) POSTed as JSON to a webhook. The body
//! is Slack-compatible (a `text` line) and carries the whole event for other receivers. Sent
//! off the request path and retried with doubling waits; a receiver that stays down is logged
//! and counted (`portcullis_alerts_failed_total`), never waited for.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use portcullis_core::{EventKind, SecurityEvent};

use crate::proxy::{self, UpstreamClient};
use crate::settings::UpstreamSettings;
use crate::tls::TlsError;

/// Where alerts go and which events they are about.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// The webhook (`https://hooks.slack.com/services/...` or any JSON receiver).
    pub webhook: http::Uri,
    /// Event kinds that alert.
    pub kinds: Vec<EventKind>,
    /// Tries per alert, the first included; waits of 1 s, 2 s, 4 s ... between them.
    pub attempts: u32,
}

/// Sends alerts; cheap to clone.
#[derive(Clone)]
pub struct Alerter {
    settings: Arc<AlertSettings>,
    client: UpstreamClient,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter").finish_non_exhaustive()
    }
}

impl Alerter {
    /// An alerter whose deliveries run on the current runtime, with the upstream client's
    /// timeouts and trusted roots.
    pub fn new(settings: AlertSettings, upstream: &UpstreamSettings) -> Result<Self, TlsError> {
        Ok(Self {
            settings: Arc::new(settings),
            client: proxy::client(upstream)?,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Starts delivering `event` when its kind alerts.
    pub(crate) fn notify(&self, event: &SecurityEvent) {
        if !self.settings.kinds.contains(&event.kind) {
            return;
        }
        let text = format!(
            "Portcullis: {} ({}){}",
            event.kind.as_str(),
            event.severity.as_str(),
            event
                .client_ip
                .map(|ip| format!(" for {ip}"))
                .unwrap_or_default()
        );
        let body = serde_json::json!({ "text": text, "event": event }).to_string();
        let (client, settings) = (self.client.clone(), self.settings.clone());
        self.runtime
            .spawn(async move { deliver(&client, &settings, Bytes::from(body)).await });
    }
}

async fn deliver(client: &UpstreamClient, settings: &AlertSettings, body: Bytes) {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=settings.attempts.max(1) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(settings.webhook.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()).map_err(Into::into).boxed_unsync());
        let Ok(request) = request else {
            break;
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
        match outcome {
            Ok(Ok(response)) if response.status().is_success() => {
                metrics::counter!("portcullis_alerts_sent_total").increment(1);
                return;
            }
            Ok(Ok(response)) => {
                tracing::warn!(status = %response.status(), attempt, "alert webhook refused")
            }
            Ok(Err(error)) => tracing::warn!(%error, attempt, "alert webhook unreachable"),
            Err(_) => tracing::warn!(attempt, "alert webhook timed out"),
        }
        if attempt < settings.attempts {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
    metrics::counter!("portcullis_alerts_failed_total").increment(1);
    tracing::error!("alert not delivered after {} attempts", settings.attempts);
}
