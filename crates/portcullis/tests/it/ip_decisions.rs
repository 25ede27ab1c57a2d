//! IP decisions through the running binary and the CLI: an operator's block reaches a running
//! gateway, refuses that client first, expires on time, and ends on `ip unblock`.

use std::time::{Duration, Instant};

use crate::support::{Gateway, Upstream, audit_tail, catch_all, get, run};

/// The test speaks through a trusted proxy (itself), so each request can come from any client.
fn from(gateway: &Gateway, client: &str) -> u16 {
    get(gateway.addr, "/x", &[&format!("X-Forwarded-For: {client}")]).status
}

fn ip(gateway: &Gateway, args: &[&str]) -> String {
    let data = gateway.dir.0.join("data");
    let mut all = vec!["ip", "--data-dir", data.to_str().expect("utf8")];
    all.extend_from_slice(args);
    let (status, out) = run(&all, &[]);
    assert!(status.success(), "ip {args:?}: {out}");
    out
}

/// Polls until `client` gets `status` (decisions reach a running gateway within its 5 s refresh).
fn eventually(gateway: &Gateway, client: &str, status: u16) -> Duration {
    let started = Instant::now();
    while from(gateway, client) != status {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{client} never got {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn an_operators_block_reaches_the_gateway_expires_and_ends() {
    let upstream = Upstream::start("app");
    let config = catch_all(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nclient = \"off\"\n",
        &upstream.url(),
        "",
    );
    let gateway = Gateway::start(&config, &[]);
    assert_eq!(from(&gateway, "203.0.113.7"), 200);

    let out = ip(
        &gateway,
        &["block", "203.0.113.7", "--for", "6s", "--reason", "test"],
    );
    assert!(out.contains("block 203.0.113.7/32 until"), "{out}");
    ip(&gateway, &["block", "198.51.100.0/24"]);
    let listed = ip(&gateway, &["list", "--json"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("\"network\":\"198.51.100.0/24\""),
        "{listed}"
    );

    eventually(&gateway, "203.0.113.7", 403);
    let refused = get(gateway.addr, "/x", &["X-Forwarded-For: 203.0.113.7"]);
    assert!(
        refused.body.contains("\"code\":\"ip_blocked\""),
        "{}",
        refused.body
    );
    assert_eq!(from(&gateway, "198.51.100.77"), 403, "the whole /24");
    assert_eq!(
        from(&gateway, "203.0.113.8"),
        200,
        "only the blocked address"
    );

    // The 6 s block ends on time, without a refresh (the expiry is in the copy).
    let waited = eventually(&gateway, "203.0.113.7", 200);
    assert!(waited < Duration::from_secs(7), "{waited:?}");

    let out = ip(&gateway, &["unblock", "198.51.100.0/24"]);
    assert!(out.contains("ended 1 block"), "{out}");
    eventually(&gateway, "198.51.100.77", 200);
    assert_eq!(ip(&gateway, &["list", "--json"]).lines().count(), 0);
    // Ending what is not in force is an error.
    let data = gateway.dir.0.join("data");
    let (status, _) = run(
        &[
            "ip",
            "--data-dir",
            data.to_str().expect("utf8"),
            "unblock",
            "198.51.100.0/24",
        ],
        &[],
    );
    assert!(!status.success());

    let tail = audit_tail(gateway);
    assert_eq!(tail.matches("\"ip_blocked\"").count(), 2, "{tail}");
    assert_eq!(tail.matches("\"ip_decision_ended\"").count(), 1, "{tail}");
}
