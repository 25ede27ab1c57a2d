//! Intrusion detection: CrowdSec-style leaky buckets over signals (security events, 404s and
//! 403s, WAF blocks by detector, upstream reports), one bucket per rule and client address,
//! each overflow a decision. A bucket of capacity `C` leaking one unit per `leak` overflows on
//! the event that would make it hold more than `C`: more than `C` events within `leak`, or a
//! steady stream faster than one per `leak`. That is GCRA with burst `C - 1` and interval
//! `leak`, so the buckets are the rate limiter's own (in process or on Redis, so several
//! instances fill one bucket); `distinct` counts each value (a path) once per bucket.
//!
//! A request that produces a signal waits only for the bucket arithmetic (in memory, or one
//! Redis round trip per rule). When a bucket overflows, the client is held in memory before
//! that answer leaves, so a scanner gets no answer past its threshold however fast it runs;
//! the durable ban, its escalation and its event are the work of one task behind a bounded
//! queue (overflows beyond it are dropped and counted; the hold stays).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{EventKind, SecurityEvent};
use portcullis_state::{Attempt, Backoff, RateRule, SharedState};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::ip::{IpDecisions, Made, Origin};

/// Something a client did that a rule may count.
#[derive(Debug, Clone)]
pub struct Signal {
    /// An event kind (`login_failure`), a WAF detector (`waf_sqli`), a status (`not_found`,
    /// `forbidden`) or an upstream report (`payment_manipulation_attempt`).
    pub name: String,
    /// The client.
    pub ip: IpAddr,
    /// What `distinct` counts (the path).
    pub value: String,
}

/// What a rule does when its bucket overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ban the client's address (escalating for repeat offenders).
    Ban,
    /// Record an event only.
    Alert,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name, in events and ban reasons.
    pub name: String,
    /// Signal names it counts.
    pub on: Vec<String>,
    /// Events the bucket holds; one more overflows it. Zero: the first event overflows.
    pub capacity: u32,
    /// One event leaks out every `leak`.
    pub leak: Duration,
    /// Count each distinct value (path) once.
    pub distinct: bool,
    /// What an overflow does.
    pub decision: Decision,
    /// Who the ban is recorded as made by.
    pub origin: Origin,
}

/// The intrusion detection's configuration.
#[derive(Debug, Clone)]
pub struct IdsConfig {
    /// Rules, in order.
    pub rules: Vec<Rule>,
    /// Overflows waiting for the decision task beyond this are dropped (their holds stay).
    pub queue: usize,
}

/// The rules shipped by default, after CrowdSec's hub scenarios (`http-probing`,
/// `http-path-traversal-probing`, `http-sqli-probing`, `http-xss-probing`,
/// `http-sensitive-files`) and fail2ban's jails; each threshold is theirs.
pub fn default_rules() -> Vec<Rule> {
    let rule = |name: &str, on: &[&str], capacity, leak_secs, distinct, origin| Rule {
        name: name.to_owned(),
        on: on.iter().map(|s| (*s).to_owned()).collect(),
        capacity,
        leak: Duration::from_secs(leak_secs),
        distinct,
        decision: Decision::Ban,
        origin,
    };
    vec![
        // CrowdSec http-probing: capacity 10, leak 10 s, distinct paths answered 404/403.
        rule(
            "path-probing",
            &["not_found", "forbidden"],
            10,
            10,
            true,
            Origin::Ids,
        ),
        // http-path-traversal-probing: capacity 3, leak 10 s.
        rule(
            "path-traversal",
            &["waf_traversal", "path_rejected"],
            3,
            10,
            false,
            Origin::Ids,
        ),
        // http-sqli-probing: capacity 10, leak 1 s.
        rule("sqli", &["waf_sqli"], 10, 1, false, Origin::Ids),
        // http-xss-probing: capacity 5, leak 1 s.
        rule("xss", &["waf_xss"], 5, 1, false, Origin::Ids),
        // http-sensitive-files: capacity 4, leak 5 s, distinct paths.
        rule(
            "sensitive-files",
            &["waf_sensitive_file"],
            4,
            5,
            true,
            Origin::Ids,
        ),
        // fail2ban's sshd-like jails, for logins: 5 failures within 10 s from one address.
        rule(
            "login-failures",
            &["login_failure"],
            5,
            10,
            false,
            Origin::Ids,
        ),
        // Any honeypot hit: no honest client follows a hidden trap.
        rule("honeypot", &["honeypot_hit"], 0, 1, false, Origin::Honeypot),
        // An upstream caught a price or amount tampered with, server-side.
        rule(
            "payment-manipulation",
            &["payment_manipulation_attempt"],
            0,
            1,
            false,
            Origin::Ids,
        ),
    ]
}

/// Records a decision's event (the binary wires it to the event sink); the detection waits for
/// it, so a decision's event is durable before the next signal is weighed.
pub type Recorder = Arc<
    dyn Fn(SecurityEvent) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Where the gateway sends signals.
#[derive(Clone)]
pub struct Ids {
    rules: Arc<[Rule]>,
    state: SharedState,
    decisions: Arc<IpDecisions>,
    overflows: mpsc::Sender<Overflow>,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ids").finish_non_exhaustive()
    }
}

/// A bucket that overflowed, for the decision task.
struct Overflow {
    rule: usize,
    signal: Signal,
}

impl Ids {
    /// Starts the decision task on the current runtime (the one that owns the store).
    pub fn start(
        config: IdsConfig,
        state: SharedState,
        decisions: Arc<IpDecisions>,
        record: Recorder,
    ) -> Self {
        let (overflows, queue) = mpsc::channel(config.queue.max(1));
        let rules: Arc<[Rule]> = config.rules.into();
        let engine = Engine {
            rules: rules.clone(),
            decisions: decisions.clone(),
            record,
        };
        tokio::spawn(engine.run(queue));
        Self {
            rules,
            state,
            decisions,
            overflows,
        }
    }

    /// Counts a signal in the buckets of the rules that take it. On an overflow the client is
    /// held at once (by a ban rule) and the decision is queued for the decision task.
    pub async fn observe(&self, name: &str, ip: IpAddr, value: &str) {
        // Allowlisted and already-blocked clients fill no bucket.
        if self.decisions.is_allowed(ip) || self.decisions.check(ip).is_some() {
            return;
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.on.iter().any(|on| on == name) {
                continue;
            }
            match self.overflows(rule, ip, value).await {
                Ok(false) => {}
                Ok(true) => {
                    if rule.decision == Decision::Ban {
                        self.decisions.hold(ip, rule.origin);
                    }
                    let signal = Signal {
                        name: name.to_owned(),
                        ip,
                        value: value.to_owned(),
                    };
                    let overflow = Overflow {
                        rule: index,
                        signal,
                    };
                    if self.overflows.try_send(overflow).is_err() {
                        metrics::counter!("portcullis_ids_overflows_dropped_total").increment(1);
                    }
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, rule = rule.name, "intrusion detection state failed");
                }
            }
        }
    }

    async fn overflows(
        &self,
        rule: &Rule,
        ip: IpAddr,
        value: &str,
    ) -> Result<bool, portcullis_state::StateError> {
        if rule.distinct {
            // Seen within the time the bucket takes to drain: not counted again.
            let seen = Backoff {
                free: u64::MAX,
                base: Duration::ZERO,
                max: Duration::ZERO,
                window: rule.leak.saturating_mul(rule.capacity.saturating_add(1)),
            };
            // The value (a path) is the client's: up to the URI limit. Its hash keeps every key
            // short, so a flood of long distinct paths cannot grow the state by their length.
            let digest = Sha256::digest(value.as_bytes());
            let key = format!("ids-seen:{}:{ip}:{}", rule.name, hex::encode(&digest[..12]));
            if !matches!(self.state.attempt(&key, &seen).await?, Attempt::Counted(1)) {
                return Ok(false);
            }
        }
        if rule.capacity == 0 {
            return Ok(true);
        }
        let bucket = RateRule {
            interval: rule.leak,
            burst: rule.capacity - 1,
        };
        let decision = self
            .state
            .rate_limit(&format!("ids:{}:{ip}", rule.name), &bucket)
            .await?;
        Ok(!decision.allowed)
    }
}

struct Engine {
    rules: Arc<[Rule]>,
    decisions: Arc<IpDecisions>,
    record: Recorder,
}

impl Engine {
    async fn run(self, mut queue: mpsc::Receiver<Overflow>) {
        while let Some(Overflow { rule, signal }) = queue.recv().await {
            if let Some(rule) = self.rules.get(rule) {
                self.decide(rule, &signal).await;
            }
        }
    }

    async fn decide(&self, rule: &Rule, signal: &Signal) {
        metrics::counter!("portcullis_ids_overflows_total", "rule" => rule.name.clone())
            .increment(1);
        let now = self.decisions.now();
        if rule.decision == Decision::Alert {
            let event = SecurityEvent::new(EventKind::IdsAlert, now)
                .with_details(serde_json::json!({ "rule": rule.name, "signal": signal.name }));
            (self.record)(event.with_client(signal.ip)).await;
            return;
        }
        let reason = format!("{} ({})", rule.name, signal.name);
        match self.decisions.ban(signal.ip, rule.origin, &reason).await {
            Ok(Some(Made { row, earlier })) => {
                let event = SecurityEvent::new(EventKind::IpBlocked, now)
                    .with_client(signal.ip)
                    .with_details(serde_json::json!({
                        "network": row.network,
                        "origin": row.origin,
                        "rule": rule.name,
                        "signal": signal.name,
                        "earlier_bans": earlier,
                        "duration_ms": row.expires_at.map(|until| until - row.created_at),
                    }));
                (self.record)(event).await;
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, rule = rule.name, "ban could not be stored"),
        }
    }
}
