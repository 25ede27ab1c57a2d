//! The limiter's cost: nanoseconds a check in process, and a check's round trip on Redis beside
//! the seeds' fixed window (`INCR` + `EXPIRE`) on the same Redis. Run by `bench/ratelimit/run.sh`.
//!
//! Usage: `rate_bench [redis://127.0.0.1:6379]`. Each phase runs for a bounded time.

use std::time::{Duration, Instant};

use portcullis_state::{RateRule, SharedState};

const PHASE: Duration = Duration::from_secs(3);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rule = RateRule::per(1000, Duration::from_secs(60), 50).unwrap_or_else(|| panic!());
    let keys: Vec<String> = (0..100_000u32)
        .map(|i| format!("ip:{}", std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();

    let local = SharedState::local(1_000_000);
    let (checks, elapsed) = run(&local, &rule, &keys).await;
    let local_ns = elapsed.as_nanos() as f64 / checks as f64;
    println!("in-process: {checks} checks in {elapsed:.2?}: {local_ns:.0} ns a check");

    let Some(url) = std::env::args().nth(1) else {
        return;
    };
    let redis = SharedState::redis(&url, "bench:")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (checks, elapsed) = run(&redis, &rule, &keys).await;
    let gcra_us = elapsed.as_micros() as f64 / checks as f64;
    println!("redis gcra script: {checks} checks in {elapsed:.2?}: {gcra_us:.1} µs a check");

    // The peer: the seeds' fixed window, one INCR and one EXPIRE in a pipeline.
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("{e}"));
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let mut fixed = 0usize;
    while started.elapsed() < PHASE {
        let key = format!("bench:fixed:{}", keys[fixed % keys.len()]);
        let _: (i64, i64) = redis::pipe()
            .incr(&key, 1)
            .expire(&key, 60)
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        fixed += 1;
    }
    let fixed_us = started.elapsed().as_micros() as f64 / fixed as f64;
    println!("redis INCR+EXPIRE (seed): {fixed} checks: {fixed_us:.1} µs a check");
    println!("ratio gcra/seed round trip: {:.2}", gcra_us / fixed_us);
}

async fn run(state: &SharedState, rule: &RateRule, keys: &[String]) -> (usize, Duration) {
    let started = Instant::now();
    let mut checks = 0usize;
    while started.elapsed() < PHASE {
        for key in keys.iter().skip(checks % keys.len()).take(1000) {
            let _ = state.rate_limit(key, rule).await;
        }
        checks += 1000;
    }
    (checks, started.elapsed())
}
