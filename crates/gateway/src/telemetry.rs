//! Per-route request metrics, with handles resolved once: looking a labelled metric up in the
//! registry on every request (hashing its labels, allocating their strings) was measurable on
//! the hot path.
//!
//! Tried and measured worse: each worker counting its requests behind its own lock and adding
//! them to the shared metrics every 64 requests and at each scrape, so that workers would not
//! write the same atomics. bench/proxy with BASELINE= put it at 1.10x the CPU per request with
//! one worker and no better with two (2026-11-29).

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Histogram};

/// Status codes 100–599, one lazily registered counter each.
const STATUSES: usize = 500;

/// `portcullis_requests_total` and `portcullis_request_duration_seconds` of one route.
pub(crate) struct RouteTelemetry {
    route: String,
    duration: Histogram,
    by_status: Box<[OnceLock<Counter>]>,
}

impl std::fmt::Debug for RouteTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTelemetry")
            .field("route", &self.route)
            .finish()
    }
}

impl RouteTelemetry {
    pub(crate) fn new(route: &str) -> Self {
        Self {
            route: route.to_owned(),
            duration: metrics::histogram!("portcullis_request_duration_seconds", "route" => route.to_owned()),
            by_status: (0..STATUSES).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn record(&self, status: StatusCode, elapsed: Duration) {
        let slot = usize::from(status.as_u16())
            .checked_sub(100)
            .and_then(|i| self.by_status.get(i));
        if let Some(slot) = slot {
            slot.get_or_init(|| {
                metrics::counter!("portcullis_requests_total", "route" => self.route.clone(), "status" => status.as_str().to_owned())
            })
            .increment(1);
        }
        self.duration.record(elapsed.as_secs_f64());
    }
}
