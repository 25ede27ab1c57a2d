//! The security-event pipeline: every event goes to the audit log (durably, before the response
//! it explains is sent), to a JSON log line, to a metrics counter and, when it is about a
//! client, to the intrusion detection; the kinds an operator chose also go to a webhook.

use std::sync::Arc;

use portcullis_core::{Clock, SecurityEvent, Severity};
use portcullis_defence::ids::Ids;
use portcullis_store::AuditLog;

/// Where stages send their security events.
#[derive(Clone)]
pub struct EventSink {
    audit: Option<AuditLog>,
    clock: Arc<dyn Clock>,
    ids: Option<Ids>,
    alerts: Option<crate::alert::Alerter>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("audit", &self.audit.is_some())
            .finish()
    }
}

impl EventSink {
    /// A sink writing to `audit` (or only to logs and metrics when `None`).
    pub fn new(audit: Option<AuditLog>, clock: Arc<dyn Clock>) -> Self {
        Self {
            audit,
            clock,
            ids: None,
            alerts: None,
        }
    }

    /// The same sink, also sending the kinds `alerts` is set up for to its webhook.
    #[must_use]
    pub fn with_alerts(mut self, alerts: crate::alert::Alerter) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// The same sink, also feeding `ids`.
    #[must_use]
    pub fn with_ids(mut self, ids: Ids) -> Self {
        self.ids = Some(ids);
        self
    }

    /// Hands a signal that is not an event (a 404, a WAF detector) to the intrusion detection;
    /// returns once its buckets are counted, so a client that overflows one is held before
    /// the answer leaves.
    pub(crate) async fn signal(&self, name: &str, ip: std::net::IpAddr, value: &str) {
        if let Some(ids) = &self.ids {
            ids.observe(name, ip, value).await;
        }
    }

    /// The time events are stamped with.
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Records `event`; returns once it is committed to the audit log.
    pub async fn emit(&self, event: SecurityEvent) {
        metrics::counter!("portcullis_security_events_total", "kind" => event.kind.as_str())
            .increment(1);
        // Attacker-controlled text reaches this line only masked and cut (`mask_pii`), and at
        // `info` for routine events, so a flood of probes does not flood the warning channel.
        let client_ip = event.client_ip.map(|ip| ip.to_string());
        macro_rules! log_event {
            ($level:expr) => {
                tracing::event!(
                    target: "portcullis::security_event",
                    $level,
                    kind = event.kind.as_str(),
                    severity = event.severity.as_str(),
                    request_id = event.request_id.as_deref(),
                    client_ip = client_ip.as_deref(),
                    route = event.route.as_deref(),
                    details = %event.details,
                    "security event"
                )
            };
        }
        match event.severity {
            Severity::Info | Severity::Low => log_event!(tracing::Level::INFO),
            Severity::Medium => log_event!(tracing::Level::WARN),
            Severity::High | Severity::Critical => log_event!(tracing::Level::ERROR),
        }
        if let Some(ip) = event.client_ip {
            self.signal(event.kind.as_str(), ip, "").await;
        }
        if let Some(alerts) = &self.alerts {
            alerts.notify(&event);
        }
        if let Some(audit) = &self.audit
            && let Err(error) = audit.append(event).await
        {
            metrics::counter!("portcullis_audit_failures_total").increment(1);
            tracing::error!(%error, "security event not recorded in the audit log");
        }
    }
}
