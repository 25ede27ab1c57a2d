//! The security-event pipeline: every event goes to the audit log (durably, before the response
//! it explains is sent), to a JSON log line and to a metrics counter.

use std::sync::Arc;

use portcullis_core::{Clock, SecurityEvent};
use portcullis_store::AuditLog;

/// Where stages send their security events.
#[derive(Clone)]
pub struct EventSink {
    audit: Option<AuditLog>,
    clock: Arc<dyn Clock>,
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
        Self { audit, clock }
    }

    /// The time events are stamped with.
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Records `event`; returns once it is committed to the audit log.
    pub async fn emit(&self, event: SecurityEvent) {
        metrics::counter!("portcullis_security_events_total", "kind" => event.kind.as_str())
            .increment(1);
        tracing::warn!(
            target: "portcullis::security_event",
            kind = event.kind.as_str(),
            severity = event.severity.as_str(),
            request_id = event.request_id.as_deref(),
            client_ip = event.client_ip.map(|ip| ip.to_string()),
            route = event.route.as_deref(),
            details = %event.details,
            "security event"
        );
        if let Some(audit) = &self.audit
            && let Err(error) = audit.append(event).await
        {
            metrics::counter!("portcullis_audit_failures_total").increment(1);
            tracing::error!(%error, "security event not recorded in the audit log");
        }
    }
}
