//! Rate limits through the running binary: GCRA bursts, the draft-10 fields, dry run, nginx's
//! delay, the profile's per-client default, and one limit shared by two processes on Redis.

use std::time::{Duration, Instant};

use crate::support::{Gateway, Reply, Upstream, audit_tail, catch_all, get, redis_state};

/// A route limit of `rate` with `keys`, the per-client limit off, on `state` (in process when
/// empty).
fn config(upstream: &Upstream, state: &str, keys: &str) -> String {
    catch_all(
        &format!("[rate_limit]\nclient = \"off\"\n{state}"),
        &upstream.url(),
        &format!("name = \"api\"\n{keys}"),
    )
}

fn burst_then_refusal(gateway: &Gateway) {
    // 60 a minute, 2 more at once: three pass back to back, the fourth is refused.
    let replies: Vec<Reply> = (0..4).map(|_| get(gateway.addr, "/x", &[])).collect();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 429], "{:?}", replies[3]);
    let policy = "\"api\";q=60;w=60";
    assert_eq!(replies[0].header("ratelimit-policy"), Some(policy));
    assert_eq!(replies[0].header("ratelimit"), Some("\"api\";r=2;t=1"));
    assert_eq!(replies[1].header("ratelimit"), Some("\"api\";r=1;t=2"));
    assert_eq!(replies[2].header("ratelimit"), Some("\"api\";r=0;t=3"));
    let refused = &replies[3];
    assert_eq!(refused.header("ratelimit-policy"), Some(policy));
    assert_eq!(refused.header("ratelimit"), Some("\"api\";r=0;t=1"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.body.contains("\"code\":\"rate_limited\""),
        "{}",
        refused.body
    );
    // One interval later, one more passes.
    std::thread::sleep(Duration::from_millis(1050));
    assert_eq!(get(gateway.addr, "/x", &[]).status, 200);
    assert_eq!(get(gateway.addr, "/x", &[]).status, 429);
}

const BURST_KEYS: &str = "rate_limit = \"60/min\"\nrate_limit_burst = 2\n";

#[test]
fn a_burst_then_429_with_draft_10_fields_in_process() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "", BURST_KEYS), &[]);
    burst_then_refusal(&gateway);
    // The refusal is one event, not one per refused request.
    let tail = audit_tail(gateway);
    assert_eq!(tail.matches("\"rate_limited\"").count(), 1, "{tail}");
}

#[test]
fn a_burst_then_429_with_draft_10_fields_on_redis() {
    let Some(state) = redis_state("rate") else {
        return;
    };
    let upstream = Upstream::start("app");
    burst_then_refusal(&Gateway::start(&config(&upstream, &state, BURST_KEYS), &[]));
}

#[test]
fn dry_run_refuses_nothing_and_records_what_it_would() {
    let upstream = Upstream::start("app");
    let keys = "rate_limit = \"1/min\"\nrate_limit_dry_run = true\n";
    let gateway = Gateway::start(&config(&upstream, "", keys), &[]);
    for _ in 0..5 {
        let reply = get(gateway.addr, "/x", &[]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("ratelimit"), None);
    }
    let tail = audit_tail(gateway);
    let event = tail
        .lines()
        .find(|line| line.contains("\"rate_limited\""))
        .unwrap_or_else(|| panic!("no rate_limited event: {tail}"));
    assert!(event.contains(r#"\"dry_run\":true"#), "{event}");
}

#[test]
fn nginx_delay_holds_excess_requests_instead_of_refusing_them() {
    let upstream = Upstream::start("app");
    // 10 a second, burst 3, none passed undelayed: a back-to-back burst is spread out.
    let keys = "rate_limit = \"10/s\"\nrate_limit_burst = 3\nrate_limit_delay = 0\n";
    let gateway = Gateway::start(&config(&upstream, "", keys), &[]);
    let started = Instant::now();
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(gateway.addr, "/x", &[]).status)
        .collect();
    assert_eq!(statuses, [200; 4]);
    let elapsed = started.elapsed();
    // Requests 2, 3 and 4 each passed one interval after the one before.
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(1000)).contains(&elapsed),
        "{elapsed:?}"
    );
    // Without delay (the default, nginx's nodelay) the same burst passes at once.
    let nodelay = Gateway::start(
        &config(
            &upstream,
            "",
            "rate_limit = \"10/s\"\nrate_limit_burst = 3\n",
        ),
        &[],
    );
    let started = Instant::now();
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(nodelay.addr, "/x", &[]).status)
        .collect();
    assert_eq!(statuses, [200; 4]);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_profile_limits_every_client_before_routing() {
    let upstream = Upstream::start("app");
    // No [rate_limit]: the development preset, 1000 a minute per client, all of it at once.
    let gateway = Gateway::start(&catch_all("", &upstream.url(), ""), &[]);
    let reply = get(gateway.addr, "/x", &[]);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"client\";q=1000;w=60")
    );
    assert_eq!(reply.header("ratelimit"), Some("\"client\";r=999;t=1"));
    let small = Gateway::start(
        &catch_all("[rate_limit]\nclient = \"2/min\"\n", &upstream.url(), ""),
        &[],
    );
    let statuses: Vec<u16> = (0..4).map(|_| get(small.addr, "/x", &[]).status).collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    // The identity API is behind it too: the limit comes before routing.
    assert_eq!(get(small.addr, "/auth/api/me", &[]).status, 429);
}

/// Two gateways on one Redis, one limit of 20 a second: asked as fast as they answer for two
/// seconds, together they admit 20 a second (plus the first request), not 40.
#[test]
fn two_processes_on_one_redis_share_one_limit() {
    let Some(state) = redis_state("shared-rate") else {
        return;
    };
    let upstream = Upstream::start("app");
    let file = config(&upstream, &state, "rate_limit = \"20/s\"\n");
    let gateways = [Gateway::start(&file, &[]), Gateway::start(&file, &[])];
    let started = Instant::now();
    let mut passed = [0u32; 2];
    let mut asked = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        let which = (asked % 2) as usize;
        if get(gateways[which].addr, "/x", &[]).status == 200 {
            passed[which] += 1;
        }
        asked += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = f64::from(passed[0] + passed[1]);
    let expected = 1.0 + 20.0 * elapsed;
    eprintln!(
        "two gateways, one limit of 20/s: {passed:?} of {asked} admitted in {elapsed:.2} s (one limit admits {expected:.1})"
    );
    assert!(asked > 200, "the load must exceed the limit: {asked} asked");
    assert!(
        (total - expected).abs() <= expected * 0.1 + 1.0,
        "{passed:?} passed in {elapsed:.2} s; one shared limit admits {expected:.0}"
    );
    assert!(passed[0] > 5 && passed[1] > 5, "both admitted: {passed:?}");
}
