//! The intrusion detection through the running binary: a list-driven path scanner is banned
//! within the probing threshold, the ban holds, expires on time and doubles on a repeat; a
//! honeypot hit and an upstream's payment-manipulation report ban at once; allowlisted networks
//! are never banned.

use std::time::{Duration, Instant};

use crate::support::{Gateway, Upstream, audit_tail, get};

/// Paths a scanner tries (dirb's and nikto's first guesses), none of them served here.
const SCANNER_PATHS: &[&str] = &[
    "/admin",
    "/backup",
    "/backup.zip",
    "/config.php",
    "/phpinfo.php",
    "/server-status",
    "/db.sql",
    "/old",
    "/test",
    "/cgi-bin/test.cgi",
    "/admin.php",
    "/login.aspx",
    "/console",
    "/manager/html",
    "/.svn/entries",
    "/debug",
    "/api/v1/swagger.json",
    "/shell.php",
    "/uploads",
    "/install.php",
];

/// One route for `/app`, so the scanner's guesses are 404s; the test is its own trusted proxy,
/// so each request can come from any client; first bans of `ban`.
fn config(upstream: &Upstream, ban: &str, extra: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nclient = \"off\"\n\
         [ids]\nban = \"{ban}\"\n{extra}\n[[route]]\npath = \"/app\"\nupstream = \"{}\"\n",
        upstream.url()
    )
}

fn from(gateway: &Gateway, client: &str, path: &str) -> u16 {
    get(gateway.addr, path, &[&format!("X-Forwarded-For: {client}")]).status
}

/// Runs the scanner from `client` until it is refused as banned; returns the requests it got
/// answered before that.
fn scan_until_banned(gateway: &Gateway, client: &str) -> usize {
    let started = Instant::now();
    for (answered, path) in SCANNER_PATHS.iter().cycle().enumerate() {
        assert!(started.elapsed() < Duration::from_secs(5), "never banned");
        let reply = get(gateway.addr, path, &[&format!("X-Forwarded-For: {client}")]);
        if reply.status == 403 {
            assert!(reply.body.contains("ip_blocked"), "{}", reply.body);
            return answered;
        }
        assert_eq!(reply.status, 404);
    }
    unreachable!()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn a_path_scanner_is_banned_the_ban_expires_and_doubles_on_a_repeat() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "2s", ""), &[]);
    let scanner = "203.0.113.50";
    // Capacity 10: the 11th distinct 404 overflows, and the client is held before that answer
    // leaves, so the 12th request is refused however fast the scanner runs.
    let answered = scan_until_banned(&gateway, scanner);
    assert_eq!(answered, 11, "banned after {answered} answered requests");
    // The ban holds on the next request, for every path; other clients pass.
    assert_eq!(from(&gateway, scanner, "/app/home"), 403);
    assert_eq!(from(&gateway, "203.0.113.51", "/app/home"), 200);
    // It expires on time: 2 s.
    let held = wait_until("expiry", Duration::from_secs(4), || {
        from(&gateway, scanner, "/app/home") == 200
    });
    assert!(held <= Duration::from_millis(2200), "{held:?}");
    // A repeat offender is banned for twice as long.
    scan_until_banned(&gateway, scanner);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        from(&gateway, scanner, "/app/home"),
        403,
        "4 s the second time"
    );
    wait_until("second expiry", Duration::from_secs(3), || {
        from(&gateway, scanner, "/app/home") == 200
    });
    let tail = audit_tail(gateway);
    let bans: Vec<&str> = tail
        .lines()
        .filter(|line| line.contains("\"kind\":\"ip_blocked\""))
        .collect();
    assert_eq!(bans.len(), 2, "{tail}");
    assert!(bans[0].contains(r#"\"duration_ms\":2000"#), "{}", bans[0]);
    assert!(bans[1].contains(r#"\"duration_ms\":4000"#), "{}", bans[1]);
    assert!(
        bans[1].contains(r#"\"rule\":\"path-probing\""#),
        "{}",
        bans[1]
    );
}

#[test]
fn a_honeypot_hit_and_an_upstream_report_ban_at_once() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "2s", ""), &[]);
    // The trap answers like any missing page.
    assert_eq!(from(&gateway, "198.51.100.1", "/.env"), 404);
    wait_until("honeypot ban", Duration::from_secs(2), || {
        from(&gateway, "198.51.100.1", "/app/home") == 403
    });
    // The app reports a tampered price on its checkout; the header never reaches the client.
    let reply = get(
        gateway.addr,
        "/app/checkout",
        &["X-Forwarded-For: 198.51.100.2"],
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("x-portcullis-report"), None);
    wait_until("report ban", Duration::from_secs(2), || {
        from(&gateway, "198.51.100.2", "/app/home") == 403
    });
    assert_eq!(from(&gateway, "198.51.100.3", "/app/home"), 200);
    // The hidden link in the gateway's pages is a trap too.
    let login = get(gateway.addr, "/auth/login", &["Accept: text/html"]);
    assert!(
        login
            .body
            .contains("href=\"/.portcullis/trap\" rel=\"nofollow\""),
        "{}",
        login.body
    );
    assert_eq!(from(&gateway, "198.51.100.4", "/.portcullis/trap"), 404);
    wait_until("trap link ban", Duration::from_secs(2), || {
        from(&gateway, "198.51.100.4", "/app/home") == 403
    });
    // So is the hidden field of its forms: a bot that fills every field is refused.
    let filled = crate::support::submit_page_form(
        gateway.addr,
        "/auth/login",
        "/auth/login",
        &[
            ("email", "x@example.com"),
            ("password", "whatever it is"),
            ("website", "http://spam.example"),
        ],
    );
    assert_eq!(filled.status, 403);
    assert!(filled.body.contains("bot_refused"), "{}", filled.body);
    // The ban holds from the moment it is made; its event follows within a store write.
    std::thread::sleep(Duration::from_millis(300));
    let tail = audit_tail(gateway);
    assert_eq!(
        tail.matches("\"kind\":\"honeypot_hit\"").count(),
        3,
        "{tail}"
    );
    assert!(tail.contains(r#"\"form_field\":\"website\""#), "{tail}");
    assert!(
        tail.contains(r#"\"report\":\"payment_manipulation_attempt\""#),
        "{tail}"
    );
    assert!(
        tail.contains(r#"\"rule\":\"payment-manipulation\""#),
        "{tail}"
    );
    assert!(tail.contains(r#"\"origin\":\"honeypot\""#), "{tail}");
}

#[test]
fn allowlisted_networks_are_never_banned_automatically() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(
        &config(&upstream, "2s", "allowlist = [\"192.0.2.0/24\"]"),
        &[],
    );
    for path in SCANNER_PATHS {
        assert_eq!(from(&gateway, "192.0.2.9", path), 404);
    }
    assert_eq!(from(&gateway, "192.0.2.9", "/.env"), 404);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(from(&gateway, "192.0.2.9", "/app/home"), 200);
    // A client outside the list is banned by the same trap.
    from(&gateway, "192.0.3.9", "/.env");
    wait_until("ban", Duration::from_secs(2), || {
        from(&gateway, "192.0.3.9", "/app/home") == 403
    });
}

/// Two instances on one PostgreSQL and one Redis: a scanner spreading its guesses over both
/// fills one bucket, and the ban made on one instance holds on the other within its refresh.
#[tokio::test]
async fn instances_share_buckets_and_bans_on_postgres_and_redis() {
    let Some(url) = crate::support::postgres_database("ids").await else {
        return;
    };
    let Some(state) = crate::support::redis_state("ids") else {
        return;
    };
    let (status, out) = crate::support::run(&["migrate"], &[("PORTCULLIS_STORAGE__URL", &url)]);
    assert!(status.success(), "{out}");
    let upstream = Upstream::start("app");
    let file = config(&upstream, "60s", &state);
    let env = [("PORTCULLIS_STORAGE__URL", url.as_str())];
    let gateways = [Gateway::start(&file, &env), Gateway::start(&file, &env)];
    let scanner = "203.0.113.77";
    // Alternating over 20 paths, each instance sees only 10 distinct ones: neither bucket
    // alone would overflow (capacity 10), so a ban shows that they are one bucket.
    let started = Instant::now();
    let mut answered = 0;
    let mut banned_on = None;
    for (n, path) in SCANNER_PATHS.iter().cycle().enumerate() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never banned: {answered} answered"
        );
        let which = n % 2;
        match from(&gateways[which], scanner, path) {
            404 => answered += 1,
            403 => {
                banned_on = Some(which);
                break;
            }
            other => panic!("{other}"),
        }
    }
    let banned_on = banned_on.unwrap_or_else(|| panic!("never banned"));
    assert!(answered >= 11, "{answered}");
    let other = &gateways[1 - banned_on];
    wait_until(
        "the ban on the other instance",
        Duration::from_secs(7),
        || from(other, scanner, "/app/home") == 403,
    );
}

/// fail2ban's jail, for logins: five failures, then the throttle refuses the sixth attempt,
/// which overflows the bucket and bans the address; the throttle alone would only slow it.
#[test]
fn repeated_login_failures_ban_the_address() {
    let upstream = Upstream::start("app");
    let file = config(
        &upstream,
        "2s",
        "[identity]\nhash_memory_kib = 256\nhash_iterations = 1\n",
    );
    let gateway = Gateway::start(&file, &[]);
    let body = r#"{"email":"nobody@example.com","password":"wrong password 1"}"#;
    let headers = ["Origin: http://app.test", "X-Forwarded-For: 198.51.100.60"];
    let mut failures = 0;
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(5), "never banned");
        let reply =
            crate::support::send_json(gateway.addr, "POST", "/auth/api/login", body, &headers);
        match reply.status {
            401 | 429 => failures += 1,
            403 => {
                assert!(reply.body.contains("ip_blocked"), "{}", reply.body);
                break;
            }
            other => panic!("{other}: {}", reply.body),
        }
    }
    assert_eq!(failures, 6, "banned after {failures} attempts");
}

#[test]
fn a_ban_alerts_the_webhook_retrying_a_refused_delivery() {
    // Standing in for Slack: refuses the first delivery, takes the next.
    let webhook = crate::support::StandIn::start(|n, _| {
        let status = if n == 0 {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        (status, "{}".to_owned())
    });
    let hook = format!("{}/hooks/T000/B000/hook-credential-7f3a", webhook.url);
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(
        &config(&upstream, "2s", &format!("[alert]\nwebhook = \"{hook}\"\n")),
        &[],
    );
    from(&gateway, "198.51.100.90", "/.env");
    // Refused once (500), delivered on the retry a second later.
    wait_until("two deliveries", Duration::from_secs(5), || {
        webhook.bodies().len() >= 2
    });
    let bodies = webhook.bodies();
    assert_eq!(bodies[0], bodies[1], "the retry sends the same alert");
    let alert: serde_json::Value = serde_json::from_str(&bodies[1]).expect("JSON");
    assert_eq!(
        alert["text"], "Portcullis: ip_blocked (high) for 198.51.100.90",
        "{alert}"
    );
    assert_eq!(alert["event"]["kind"], "ip_blocked");
    // Only the chosen kinds alert: the honeypot hit itself did not.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(webhook.bodies().len(), 2);
    // The webhook URL is a credential: `config show` does not print it.
    let file = gateway.dir.write(
        "shown.toml",
        &config(&upstream, "2s", &format!("[alert]\nwebhook = \"{hook}\"\n")),
    );
    let (status, shown) =
        crate::support::run(&["config", "show", "-c", file.to_str().expect("utf8")], &[]);
    assert!(status.success(), "{shown}");
    assert!(
        !shown.contains("hook-credential-7f3a") && shown.contains("webhook = \"[redacted]\""),
        "{shown}"
    );
}

/// A page with broken asset links must not get its visitors banned: missing images, scripts
/// and styles do not count as probing (CrowdSec's http-probing leaves static files out too).
#[test]
fn missing_static_assets_are_not_probing() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "2s", ""), &[]);
    let visitor = "198.51.100.70";
    for n in 0..30 {
        let ext = ["png", "css", "js", "woff2", "svg", "ico"][n % 6];
        assert_eq!(from(&gateway, visitor, &format!("/static/{n}.{ext}")), 404);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(from(&gateway, visitor, "/app/home"), 200);
}

/// An upstream reports a price manipulation it caught server-side, through the events API with
/// an API key that may write events: the client it names is banned. A key without that scope
/// is refused, and so is a report without a key.
#[test]
fn an_upstream_reports_through_the_events_api_with_its_key() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "2s", ""), &[]);
    let data = gateway.dir.0.join("data");
    let file = gateway.dir.0.join("portcullis.toml");
    let create = |scope: &str| {
        let (status, out) = crate::support::run(
            &[
                "apikey",
                "-c",
                file.to_str().expect("utf8"),
                "--data-dir",
                data.to_str().expect("utf8"),
                "create",
                "--name",
                "shop backend",
                "--scope",
                scope,
                "--json",
            ],
            &[],
        );
        assert!(status.success(), "{out}");
        let created: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        created["key"].as_str().expect("key").to_owned()
    };
    let writer = create("events:write");
    let reader = create("events:read");
    let report = r#"{"kind":"payment_manipulation_attempt","client_ip":"198.51.100.77","details":{"order":"A-1009","expected":"49.00","received":"0.01"}}"#;
    let send = |key: Option<&str>| {
        let header = key.map(|k| format!("X-API-Key: {k}"));
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        crate::support::send_json(gateway.addr, "POST", "/auth/api/events", report, &headers)
    };
    assert_eq!(send(None).status, 401);
    assert_eq!(send(Some(&reader)).status, 403);
    assert_eq!(from(&gateway, "198.51.100.77", "/app/home"), 200);
    let accepted = send(Some(&writer));
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(from(&gateway, "198.51.100.77", "/app/home"), 403);
    // The client is held at once; the stored ban follows.
    wait_until("the stored ban", Duration::from_secs(3), || {
        let (_, listed) = crate::support::run(
            &["ip", "--data-dir", data.to_str().expect("utf8"), "list"],
            &[],
        );
        listed.contains("198.51.100.77")
    });
    let tail = audit_tail(gateway);
    assert!(
        tail.lines()
            .any(|line| line.contains("\"kind\":\"ip_blocked\"")
                && line.contains("payment-manipulation")),
        "{tail}"
    );
}
