//! Rate limits: a per-client limit on every request, checked before routing, and per-route
//! limits checked once the caller is known (by address, user, API key, or the route as a
//! whole). The algorithm and its state live in `portcullis-state` (GCRA, in process or on
//! Redis); this stage builds the keys, waits out nginx-style delays, and tells the client
//! where it stands with `RateLimit-Policy` and `RateLimit` as
//! draft-ietf-httpapi-ratelimit-headers-10 writes them, and `Retry-After` on a 429.
//!
//! When Redis cannot answer, requests pass (and `portcullis_rate_limit_errors_total` counts
//! them): a limiter that fails closed turns a cache outage into a full outage, which is also
//! the default of Envoy's rate-limit filter.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use http::header::HeaderName;
use portcullis_state::{RateDecision, SharedState};

use crate::settings::{RateKey, RateLimit};

/// What the stage needs, shared by every worker.
pub(crate) struct Limiter {
    state: SharedState,
    ipv6_prefix: u8,
    reported: Mutex<HashMap<String, Instant>>,
}

/// One limit's answer for a request.
pub(crate) struct Outcome {
    /// The request is refused (never in dry run).
    pub(crate) refused: bool,
    /// A refusal (or, in dry run, what would have been one) to record as an event; only the
    /// first of each key in [`REPORT_EVERY`], so a flood does not become a flood of events.
    pub(crate) report: bool,
    /// Wait this long before passing the request on (nginx's `delay`).
    pub(crate) delay: Duration,
    /// `RateLimit-Policy` and `RateLimit` items, unless in dry run.
    pub(crate) fields: Option<(String, String)>,
    /// Seconds for `Retry-After`, when refused.
    pub(crate) retry_after: Option<u64>,
}

/// A refused key is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Keys remembered for that; beyond it, refusals are counted but not reported.
const MAX_REPORTED: usize = 10_000;

/// `RateLimit-Policy`.
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Who the request comes from, as far as the limits can tell.
pub(crate) struct Caller<'a> {
    pub(crate) ip: IpAddr,
    pub(crate) user: Option<&'a str>,
    pub(crate) api_key: Option<&'a str>,
}

impl Limiter {
    pub(crate) fn new(state: SharedState, ipv6_prefix: u8) -> Self {
        Self {
            state,
            ipv6_prefix,
            reported: Mutex::default(),
        }
    }

    /// The shared state the buckets live in.
    pub(crate) fn state(&self) -> &SharedState {
        &self.state
    }

    /// Takes one request of `caller` under `limit`, named `policy` in the headers.
    pub(crate) async fn check(
        &self,
        policy: &str,
        limit: &RateLimit,
        caller: &Caller<'_>,
    ) -> Outcome {
        let key = self.key(policy, &limit.by, caller);
        let decision = match self.state.rate_limit(&key, &limit.rule).await {
            Ok(decision) => decision,
            Err(error) => {
                tracing::error!(%error, policy, "rate limit state unavailable; request passes");
                metrics::counter!("portcullis_rate_limit_errors_total").increment(1);
                return Outcome::pass();
            }
        };
        if decision.allowed {
            return Outcome {
                refused: false,
                report: false,
                delay: if limit.dry_run {
                    Duration::ZERO
                } else {
                    decision.delay(&limit.rule, limit.undelayed)
                },
                fields: (!limit.dry_run).then(|| fields(policy, limit, &decision)),
                retry_after: None,
            };
        }
        let outcome = if limit.dry_run { "dry_run" } else { "limited" };
        metrics::counter!("portcullis_rate_limit_total", "policy" => policy.to_owned(), "outcome" => outcome)
            .increment(1);
        Outcome {
            refused: !limit.dry_run,
            report: self.first_report(key),
            delay: Duration::ZERO,
            fields: (!limit.dry_run).then(|| fields(policy, limit, &decision)),
            retry_after: (!limit.dry_run).then(|| ceil_seconds(decision.retry_after)),
        }
    }

    /// `policy:part:part`, with the client address grouped by its network (IPv6 /64 by
    /// default: one host is given a whole /64, so single addresses would cost it nothing to
    /// change). A user or API key part falls back to the address when the request has none.
    fn key(&self, policy: &str, by: &[RateKey], caller: &Caller<'_>) -> String {
        let mut key = String::with_capacity(64);
        key.push_str(policy);
        for part in by {
            key.push(':');
            match (part, caller.user, caller.api_key) {
                (RateKey::Route, _, _) => key.push('*'),
                (RateKey::User, Some(user), _) => {
                    key.push_str("u=");
                    key.push_str(user);
                }
                (RateKey::ApiKey, _, Some(api_key)) => {
                    key.push_str("k=");
                    key.push_str(api_key);
                }
                _ => {
                    key.push_str("ip=");
                    push_network(&mut key, caller.ip, self.ipv6_prefix);
                }
            }
        }
        key
    }

    fn first_report(&self, key: String) -> bool {
        let now = Instant::now();
        let mut reported = self
            .reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reported.len() >= MAX_REPORTED {
            reported.retain(|_, at| now.duration_since(*at) < REPORT_EVERY);
        }
        match reported.get(&key) {
            Some(at) if now.duration_since(*at) < REPORT_EVERY => false,
            _ if reported.len() >= MAX_REPORTED => false,
            _ => {
                reported.insert(key, now);
                true
            }
        }
    }
}

impl Outcome {
    fn pass() -> Self {
        Self {
            refused: false,
            report: false,
            delay: Duration::ZERO,
            fields: None,
            retry_after: None,
        }
    }
}

/// The address as the limits see it: IPv4 whole, IPv6 cut to its network.
fn push_network(out: &mut String, ip: IpAddr, ipv6_prefix: u8) {
    // Written in place: this runs on every request.
    match ip {
        IpAddr::V4(_) => crate::client_ip::push_ip(out, ip),
        IpAddr::V6(v6) => {
            let _ = match ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128)) {
                Ok(net) => write!(out, "{}", net.trunc()),
                Err(_) => write!(out, "{v6}"),
            };
        }
    }
}

/// The draft-10 items: `"name";q=100;w=60` and `"name";r=5;t=2`. `t` is the seconds until the
/// full burst is back, or, when refused, until the next request would pass (`Retry-After`).
fn fields(policy: &str, limit: &RateLimit, decision: &RateDecision) -> (String, String) {
    let t = if decision.allowed {
        ceil_seconds(decision.reset)
    } else {
        ceil_seconds(decision.retry_after)
    };
    // Numbers by `itoa` rather than `write!`: these are built for every response.
    let mut digits = itoa::Buffer::new();
    // Room for the name, its quotes and escapes, and four numbers: no growing on the way.
    let capacity = policy.len() * 2 + 48;
    let mut policy_item = String::with_capacity(capacity);
    push_sf_string(&mut policy_item, policy);
    let mut item = String::with_capacity(capacity);
    item.push_str(&policy_item);
    for (key, value) in [(";q=", limit.quota), (";w=", limit.window.as_secs().max(1))] {
        policy_item.push_str(key);
        policy_item.push_str(digits.format(value));
    }
    for (key, value) in [(";r=", u64::from(decision.remaining)), (";t=", t)] {
        item.push_str(key);
        item.push_str(digits.format(value));
    }
    (policy_item, item)
}

fn ceil_seconds(duration: Duration) -> u64 {
    duration
        .as_micros()
        .div_ceil(1_000_000)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// A structured-field String (RFC 8941 §3.3.3): printable ASCII, `"` and `\` escaped; other
/// bytes (route names are the operator's, but never trusted to be clean) become `_`.
fn push_sf_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
}

/// Adds the collected items to a response, one list per field.
pub(crate) fn add_fields(headers: &mut http::HeaderMap, mut items: Vec<(String, String)>) {
    let (policies, limits) = if items.len() > 1 {
        let list = |pick: fn(&(String, String)) -> &str| {
            items.iter().map(pick).collect::<Vec<_>>().join(", ")
        };
        (list(|i| &i.0), list(|i| &i.1))
    } else if let Some(only) = items.pop() {
        // One policy (the common case): its strings become the values, without a copy.
        only
    } else {
        return;
    };
    for (name, text) in [(RATELIMIT_POLICY, policies), (RATELIMIT, limits)] {
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(text)) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_state::RateRule;

    fn limit(quota: u64, burst: u32) -> RateLimit {
        RateLimit {
            rule: RateRule::per(quota, Duration::from_secs(60), burst).unwrap_or_else(|| panic!()),
            quota,
            window: Duration::from_secs(60),
            by: vec![RateKey::Ip],
            undelayed: burst,
            dry_run: false,
        }
    }

    #[tokio::test]
    async fn draft_10_fields_and_retry_after() {
        let limiter = Limiter::new(SharedState::local(100), 64);
        let caller = Caller {
            ip: "203.0.113.9".parse().unwrap_or_else(|_| panic!()),
            user: None,
            api_key: None,
        };
        let l = limit(100, 1);
        let first = limiter.check("client", &l, &caller).await;
        assert_eq!(
            first.fields,
            Some((
                "\"client\";q=100;w=60".to_owned(),
                "\"client\";r=1;t=1".to_owned()
            ))
        );
        limiter.check("client", &l, &caller).await;
        let refused = limiter.check("client", &l, &caller).await;
        assert!(refused.refused && refused.report);
        // 600 ms an interval: the next request in 1 s, rounded up.
        assert_eq!(refused.retry_after, Some(1));
        assert_eq!(
            refused.fields.map(|f| f.1),
            Some("\"client\";r=0;t=1".to_owned())
        );
        // The same key refused again soon is not reported again.
        assert!(!limiter.check("client", &l, &caller).await.report);
    }

    #[test]
    fn fields_become_one_list_per_header_in_the_order_the_limits_ran() {
        let field = |policy: &str, limit: &str| (policy.to_owned(), limit.to_owned());
        let mut headers = http::HeaderMap::new();
        add_fields(&mut headers, Vec::new());
        assert!(headers.is_empty());
        add_fields(
            &mut headers,
            vec![field("\"client\";q=9;w=1", "\"client\";r=8;t=1")],
        );
        assert_eq!(headers[RATELIMIT_POLICY], "\"client\";q=9;w=1");
        assert_eq!(headers[RATELIMIT], "\"client\";r=8;t=1");
        let both = vec![
            field("\"client\";q=9;w=1", "\"client\";r=8;t=1"),
            field("\"api\";q=2;w=60", "\"api\";r=1;t=30"),
        ];
        add_fields(&mut headers, both);
        assert_eq!(
            headers[RATELIMIT_POLICY],
            "\"client\";q=9;w=1, \"api\";q=2;w=60"
        );
        assert_eq!(headers[RATELIMIT], "\"client\";r=8;t=1, \"api\";r=1;t=30");
    }

    #[test]
    fn keys_group_ipv6_and_fall_back_to_the_address() {
        let limiter = Limiter::new(SharedState::local(100), 64);
        let caller = Caller {
            ip: "2001:db8:1:2:aaaa::1".parse().unwrap_or_else(|_| panic!()),
            user: None,
            api_key: None,
        };
        assert_eq!(
            limiter.key("api", &[RateKey::User, RateKey::Route], &caller),
            "api:ip=2001:db8:1:2::/64:*"
        );
        let user = Caller {
            user: Some("u1"),
            ..caller
        };
        assert_eq!(limiter.key("api", &[RateKey::User], &user), "api:u=u1");
        let mut item = String::new();
        push_sf_string(&mut item, "a\"b\\c\u{e9}");
        assert_eq!(item, "\"a\\\"b\\\\c_\"");
    }
}
