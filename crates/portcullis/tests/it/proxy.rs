//! The request path through the real binary.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Gateway, PRODUCTION, Reply, Upstream, catch_all, get, raw, run};

fn two_routes(public: &Upstream, admin: &Upstream, extra: &str) -> String {
    format!(
        "{extra}\n[[route]]\nname = \"public\"\npath = \"/public\"\nupstream = \"{}\"\n\
         [[route]]\nname = \"admin\"\npath = \"/admin\"\nupstream = \"{}\"\n",
        public.url(),
        admin.url()
    )
}

#[test]
fn route_bypass_attempts_reach_the_route_their_normalized_path_names_or_get_400() {
    let public = Upstream::start("PUBLIC");
    let admin = Upstream::start("ADMIN");
    let gateway = Gateway::start(&two_routes(&public, &admin, ""), &[]);
    // (raw path, expected: Some(upstream tag and forwarded path) or None for a 400)
    let cases: [(&str, Option<(&str, &str)>); 9] = [
        ("/public/../admin", Some(("ADMIN", "/admin"))),
        ("/%2e%2e/admin", None),
        ("/public/%2e%2e/admin", Some(("ADMIN", "/admin"))),
        ("//admin", Some(("ADMIN", "/admin"))),
        ("/public/%2e%2e%2fadmin", None),
        ("/public/..;/admin", None),
        ("/public\\..\\admin", None),
        ("/public/%c0%ae%c0%ae/admin", None),
        ("/public/a%00/../../admin", None),
    ];
    for (path, expected) in cases {
        let reply = get(gateway.addr, path, &[]);
        match expected {
            None => {
                assert_eq!(reply.status, 400, "{path}: {reply:?}");
                assert!(
                    reply.body.contains("\"code\":\"bad_path\""),
                    "{path}: {}",
                    reply.body
                );
            }
            Some((tag, forwarded)) => {
                assert_eq!(reply.status, 200, "{path}: {reply:?}");
                assert!(reply.body.starts_with(tag), "{path} reached {}", reply.body);
                assert!(
                    reply.body.contains(&format!("path={forwarded} ")),
                    "{path}: {}",
                    reply.body
                );
            }
        }
    }
    // A path no route names is not found, even when a prefix of it looks like one.
    assert_eq!(get(gateway.addr, "/administrator", &[]).status, 404);
}

#[test]
fn spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let upstream = Upstream::start("APP");
    let config = catch_all("", &upstream.url(), "");
    let gateway = Gateway::start(&config, &[]);
    let spoof = [
        "X-Forwarded-For: 6.6.6.6",
        "Forwarded: for=6.6.6.6",
        "X-Real-IP: 6.6.6.6",
        "X-Request-Id: forged-id",
    ];
    let reply = get(gateway.addr, "/hello", &spoof);
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("xff=127.0.0.1 "), "{}", reply.body);
    assert!(!reply.body.contains("6.6.6.6"), "{}", reply.body);
    assert!(!reply.body.contains("forged-id"), "{}", reply.body);
    // The event a rejected request leaves names the real peer, not the spoofed address.
    assert_eq!(get(gateway.addr, "/%2e%2e/etc/passwd", &spoof).status, 400);
    let dir = gateway.stop();
    let data = dir.0.join("data");
    let (status, tail) = run(
        &["audit", "tail", "--data-dir", data.to_str().expect("utf8")],
        &[],
    );
    assert!(status.success(), "{tail}");
    let event = tail
        .lines()
        .find(|l| l.contains("path_rejected"))
        .expect("path_rejected event");
    assert!(event.contains("\"client_ip\":\"127.0.0.1\""), "{event}");
    assert!(!tail.contains("6.6.6.6"), "{tail}");
    assert!(!tail.contains("forged-id"), "{tail}");
}

#[test]
fn forwarded_for_and_request_id_from_a_trusted_proxy_are_believed() {
    let upstream = Upstream::start("APP");
    let config = catch_all(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]",
        &upstream.url(),
        "",
    );
    let gateway = Gateway::start(&config, &[]);
    let headers = [
        "X-Forwarded-For: 6.6.6.6, 198.51.100.7",
        "X-Forwarded-Proto: https",
        "X-Request-Id: lb-1234",
    ];
    let reply = get(gateway.addr, "/", &headers);
    assert!(reply.body.contains("xff=198.51.100.7 "), "{}", reply.body);
    assert!(reply.body.contains("proto=https "), "{}", reply.body);
    assert!(reply.body.contains("rid=lb-1234"), "{}", reply.body);
    assert_eq!(reply.header("x-request-id"), Some("lb-1234"));
    // A malformed id is replaced even from a trusted proxy.
    let reply = get(gateway.addr, "/", &["X-Request-Id: bad id\u{7f}"]);
    assert!(!reply.body.contains("rid=bad"), "{}", reply.body);
}

fn production(upstream: &Upstream) -> String {
    catch_all(PRODUCTION, &upstream.url(), "")
}

#[test]
fn upstream_traceback_never_reaches_the_client_in_production() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&production(&upstream), &[]);
    for accept in ["application/json", "text/html"] {
        let reply = get(gateway.addr, "/boom", &[&format!("Accept: {accept}")]);
        assert_eq!(reply.status, 500, "{reply:?}");
        let id = reply.header("x-request-id").expect("request id").to_owned();
        assert!(reply.body.contains(&id), "{}", reply.body);
        assert!(reply.body.contains("upstream_error"), "{}", reply.body);
        for leak in [
            "Traceback",
            "main.py",
            "sqlalchemy",
            "SELECT",
            "127.0.0.1",
            "uvicorn",
        ] {
            assert!(!reply.body.contains(leak), "{leak} leaked: {}", reply.body);
            assert!(
                !reply.headers.iter().any(|(_, v)| v.contains(leak)),
                "{leak} leaked in headers"
            );
        }
    }
}

#[test]
fn upstream_failures_answer_502_without_detail() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let config = catch_all(PRODUCTION, &url, "");
    let gateway = Gateway::start(&config, &[]);
    let reply = get(gateway.addr, "/", &[]);
    assert_eq!(reply.status, 502);
    assert!(reply.body.contains("bad_gateway"), "{}", reply.body);
    assert!(!reply.body.contains(&url[7..]), "{}", reply.body);
}

#[test]
fn responses_are_hardened_and_fingerprints_removed() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&production(&upstream), &[]);
    let reply = get(gateway.addr, "/", &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("x-xss-protection"), Some("0"));
    assert!(reply.header("referrer-policy").is_some());
    assert!(reply.header("permissions-policy").is_some());
    assert_eq!(
        reply.header("cross-origin-opener-policy"),
        Some("same-origin")
    );
    assert_eq!(reply.header("server"), None);
    assert_eq!(reply.header("x-powered-by"), None);
    // The gateway's own responses carry its strict CSP.
    let own = get(gateway.addr, "/%2e%2e/", &[]);
    assert!(
        own.header("content-security-policy")
            .is_some_and(|v| v.contains("default-src 'none'"))
    );
}

#[test]
fn docs_are_hidden_in_production_and_shown_in_development() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&production(&upstream), &[]);
    for path in ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"] {
        let reply = get(gateway.addr, path, &[]);
        assert_eq!(reply.status, 404, "{path}");
        assert!(!reply.body.contains("APP"), "{path}");
    }
    assert_eq!(get(gateway.addr, "/docsearch", &[]).status, 200);
    let dev = Gateway::start(&catch_all("", &upstream.url(), ""), &[]);
    assert_eq!(get(dev.addr, "/docs", &[]).status, 200);
}

#[test]
fn request_limits_answer_with_the_common_body() {
    let upstream = Upstream::start("APP");
    let config = format!(
        "[limits]\nmax_uri_bytes = 200\nmax_headers = 20\nmax_body_bytes = 1000\n\
         [[route]]\npath = \"/\"\nupstream = \"{u}\"\n\
         [[route]]\npath = \"/upload\"\nmax_body_bytes = 5000\nupstream = \"{u}\"\n",
        u = upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let long = format!("/{}", "a".repeat(300));
    let reply = get(gateway.addr, &long, &[]);
    assert_eq!(reply.status, 414);
    assert!(reply.body.contains("uri_too_long"));
    let many: Vec<String> = (0..30).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(get(gateway.addr, "/", &many).status, 431);
    // Declared length over the limit: refused before any byte is read.
    let reply = raw(
        gateway.addr,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000",
        &[b'x'; 2000],
    );
    assert_eq!(reply.status, 413);
    assert!(reply.body.contains("body_too_large"));
    // The route raises its own limit.
    let reply = raw(
        gateway.addr,
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000",
        &[b'x'; 2000],
    );
    assert!(reply.body.contains("received=2000"), "{}", reply.body);
    // Chunked, with no declared length: cut off while streaming.
    let chunk = format!("{:x}\r\n{}\r\n", 800, "y".repeat(800));
    let body = format!("{chunk}{chunk}0\r\n\r\n");
    let reply = raw(
        gateway.addr,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
        body.as_bytes(),
    );
    assert_eq!(reply.status, 413, "{reply:?}");
}

#[test]
fn a_large_upload_streams_through_in_bounded_memory() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let upstream = Upstream::start("APP");
    let config = format!(
        "[[route]]\npath = \"/\"\nmax_body_bytes = {}\nupstream = \"{}\"\n",
        2 * SIZE,
        upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let mut stream = TcpStream::connect(gateway.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    let block = vec![b'z'; 1024 * 1024];
    for _ in 0..SIZE / block.len() as u64 {
        stream.write_all(&block).expect("body");
    }
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).expect("reply");
    assert!(reply.contains(&format!("received={SIZE}")), "{reply}");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gateway.pid())).expect("proc status");
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(
        peak_kb < 100 * 1024,
        "peak RSS {peak_kb} kB for a {SIZE}-byte upload"
    );
}

#[test]
fn admin_listener_serves_health_readiness_and_metrics() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&catch_all("", &upstream.url(), ""), &[]);
    assert_eq!(get(gateway.addr, "/x", &[]).status, 200);
    assert_eq!(get(gateway.addr, "/%2e%2e/", &[]).status, 400);
    assert_eq!(get(gateway.admin, "/healthz", &[]).status, 200);
    assert_eq!(get(gateway.admin, "/readyz", &[]).status, 200);
    let metrics = get(gateway.admin, "/metrics", &[]).body;
    assert!(
        metrics.contains("portcullis_requests_total{route=\"route0\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_security_events_total{kind=\"path_rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[test]
fn cors_echoes_only_listed_origins() {
    let upstream = Upstream::start("APP");
    let cors = "cors = { origins = [\"https://app.example\"], credentials = true }";
    let config = catch_all("", &upstream.url(), cors);
    let gateway = Gateway::start(&config, &[]);
    let ok = get(gateway.addr, "/", &["Origin: https://app.example"]);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let other = get(gateway.addr, "/", &["Origin: https://evil.example"]);
    assert_eq!(other.header("access-control-allow-origin"), None);
    let preflight = raw(
        gateway.addr,
        "OPTIONS / HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: DELETE",
        b"",
    );
    assert_eq!(preflight.status, 403);
    let preflight = raw(
        gateway.addr,
        "OPTIONS / HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: DELETE",
        b"",
    );
    assert_eq!(preflight.status, 204);
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("DELETE"))
    );
}

#[test]
fn routing_headers_a_client_sends_never_reach_the_upstream() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&catch_all("", &upstream.url(), ""), &[]);
    // Frameworks that route on X-Original-URL would otherwise serve /admin for a request the
    // gateway routed as /public.
    let reply = raw(
        gateway.addr,
        "GET /public HTTP/1.1\r\nHost: a\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nTrue-Client-IP: 6.6.6.6",
        b"",
    );
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("path=/public ") && reply.body.contains("original=- "),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("6.6.6.6"), "{}", reply.body);
}

#[test]
fn expect_continue_is_answered_by_the_gateway_and_not_forwarded() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&catch_all("", &upstream.url(), ""), &[]);
    let reply = raw(
        gateway.addr,
        "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5",
        b"hello",
    );
    assert!(reply.body.contains("received=5"), "{reply:?}");
    assert!(reply.body.contains("expect=-"), "{}", reply.body);
}

#[test]
fn a_request_naming_two_hosts_is_refused() {
    let public = Upstream::start("PUBLIC");
    let admin = Upstream::start("ADMIN");
    let config = format!(
        "[[route]]\nhost = \"www.example\"\npath = \"/\"\nupstream = \"{}\"\n\
         [[route]]\nhost = \"admin.example\"\npath = \"/\"\nupstream = \"{}\"\n",
        public.url(),
        admin.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let ok = raw(gateway.addr, "GET / HTTP/1.1\r\nHost: admin.example", b"");
    assert!(ok.body.starts_with("ADMIN"), "{}", ok.body);
    // Absolute-form target for one host, Host header for the other: 400, not a guess.
    let reply = raw(
        gateway.addr,
        "GET http://www.example/ HTTP/1.1\r\nHost: admin.example",
        b"",
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("bad_request"), "{}", reply.body);
    let reply = raw(
        gateway.addr,
        "GET / HTTP/1.1\r\nHost: www.example\r\nHost: admin.example",
        b"",
    );
    assert_eq!(reply.status, 400, "{reply:?}");
}

#[test]
fn connections_over_the_limit_get_503_with_the_common_body() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(
        &catch_all("[server]\nmax_connections = 1", &upstream.url(), ""),
        &[],
    );
    // An idle connection holds the only slot until its header-read timeout.
    let holder = TcpStream::connect(gateway.addr).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let reply = get(gateway.addr, "/", &[]);
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(
        reply.body.contains("\"code\":\"overloaded\""),
        "{}",
        reply.body
    );
    drop(holder);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(gateway.addr, "/", &[]).status, 200);
}

#[test]
fn textual_responses_are_gzipped_except_those_that_carry_secrets() {
    use std::io::Read as _;
    let upstream = Upstream::start("APP");
    let config = format!(
        "{}\n[[route]]\npath = \"/account\"\nsecret = true\nupstream = \"{}\"\n",
        catch_all("", &upstream.url(), ""),
        upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let gzip = ["Accept-Encoding: gzip, br"];
    // Read as bytes: the body is binary once compressed.
    let fetch = |target: &str, headers: &[&str]| {
        let mut stream = TcpStream::connect(gateway.addr).expect("connect");
        let mut head = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
        for line in headers {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).expect("read");
        bytes
    };
    let split = |bytes: &[u8]| {
        let at = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        (
            String::from_utf8_lossy(&bytes[..at]).to_ascii_lowercase(),
            bytes[at..].to_vec(),
        )
    };
    let (head, body) = split(&fetch("/json", &gzip));
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let dechunked = crate::support::dechunk_bytes(&body);
    let mut json = String::new();
    flate2::read::GzDecoder::new(&dechunked[..])
        .read_to_string(&mut json)
        .expect("gunzip");
    assert!(
        json.starts_with("[{\"id\":0") && json.ends_with("\"item 199\"}]"),
        "{json}"
    );
    assert!(
        dechunked.len() < json.len() / 2,
        "{} of {}",
        dechunked.len(),
        json.len()
    );
    // Never with a cookie, on a secret route, or when the client did not ask.
    for (target, headers) in [
        ("/json-cookie", &gzip[..]),
        ("/account/json", &gzip[..]),
        ("/json", &[][..]),
    ] {
        let (head, body) = split(&fetch(target, headers));
        assert!(!head.contains("content-encoding"), "{target}: {head}");
        assert!(
            String::from_utf8_lossy(&body).contains("\"item 199\""),
            "{target}"
        );
    }
}

#[test]
fn request_timeout_answers_504_to_a_silent_upstream_and_408_to_a_stalled_body() {
    let upstream = Upstream::start("APP");
    // One worker: every request below is timed by the same worker's timers, which are reused.
    let head = format!("{PRODUCTION}[server]\nworkers = 1\n[limits]\nrequest_timeout = \"2s\"");
    let gateway = Gateway::start(&catch_all(&head, &upstream.url(), ""), &[]);
    let timed = |send: &dyn Fn() -> Reply| {
        let started = std::time::Instant::now();
        let reply = send();
        (reply, started.elapsed())
    };
    // Refused with `status` and `code` after about the two seconds of the request timeout.
    let refused_in_time = |(reply, took): (Reply, Duration), status: u16, code: &str| {
        assert_eq!(reply.status, status, "{}", reply.body);
        let code = format!("\"code\":\"{code}\"");
        assert!(reply.body.contains(&code), "{}", reply.body);
        let in_time = Duration::from_millis(1900)..Duration::from_secs(10);
        assert!(in_time.contains(&took), "{took:?}");
    };

    let silent = timed(&|| get(gateway.addr, "/slow/60000", &[]));
    refused_in_time(silent, 504, "gateway_timeout");

    // The timer that fired is armed again for the next request, not left at its deadline; and
    // the next one after that, which starts before this one's deadline and outlasts it, gets
    // its own full two seconds.
    for _ in 0..2 {
        let (reply, took) = timed(&|| get(gateway.addr, "/slow/1500", &[]));
        assert_eq!(reply.status, 200, "after {took:?}: {}", reply.body);
        let answer = "APP path=/slow/1500";
        assert!(reply.body.starts_with(answer), "{}", reply.body);
    }

    // A form body that stops arriving: the WAF waits for it only until the request timeout.
    let head = "POST /form HTTP/1.1\r\nHost: app.test\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100";
    let stalled = timed(&|| raw(gateway.addr, head, b"a=1"));
    refused_in_time(stalled, 408, "request_timeout");
}

#[test]
fn a_slow_request_head_gets_408_and_an_event_while_slow_bodies_and_idle_keepalive_do_not() {
    use std::io::Read as _;
    let upstream = Upstream::start("APP");
    let limits = "[limits]\nheader_read_timeout = \"1s\"\nkeepalive_timeout = \"2s\"";
    let gateway = Gateway::start(&catch_all(limits, &upstream.url(), ""), &[]);

    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(gateway.addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: 1\r\n")
        .expect("send");
    let started = std::time::Instant::now();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"request_timeout\""), "{reply}");

    // A body trickling in slower than the head timeout is not cut: the head arrived in time.
    let mut upload = TcpStream::connect(gateway.addr).expect("connect");
    upload
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    upload
        .write_all(
            b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
        )
        .expect("head");
    for byte in b"abcd" {
        std::thread::sleep(Duration::from_millis(600));
        upload.write_all(&[*byte]).expect("byte");
    }
    let mut reply = String::new();
    let _ = upload.read_to_string(&mut reply);
    assert!(reply.contains("received=4"), "{reply}");

    // An idle keep-alive connection is closed quietly after keepalive_timeout, not answered 408,
    // even though that is longer than the head timeout.
    let mut idle = TcpStream::connect(gateway.addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 4096];
    let n = idle.read(&mut first).expect("first response");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1500));
    idle.write_all(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("still open after 1.5 s idle");
    let n = idle.read(&mut first).expect("second response");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}",
        started.elapsed()
    );

    let dir = gateway.stop();
    let data = dir.0.join("data");
    let (_, tail) = run(
        &["audit", "tail", "--data-dir", data.to_str().expect("utf8")],
        &[],
    );
    assert_eq!(
        tail.matches("\"kind\":\"request_timeout\"").count(),
        1,
        "{tail}"
    );
}

#[test]
fn https_upstreams_are_verified_against_the_configured_ca() {
    let (upstream, cert_pem) = Upstream::start_tls("SECURE");
    let dir = crate::support::TempDir::new("upca");
    let ca = dir.write("ca.pem", &cert_pem);
    let trusted = catch_all(
        &format!("[upstream]\nca_file = \"{}\"", ca.display()),
        &upstream.tls_url(),
        "",
    );
    let gateway = Gateway::start(&trusted, &[]);
    let reply = get(gateway.addr, "/over/tls", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.starts_with("SECURE path=/over/tls "),
        "{}",
        reply.body
    );
    // Without the CA the certificate is not trusted: 502, never a silent plain connection.
    let untrusted = Gateway::start(&catch_all("", &upstream.tls_url(), ""), &[]);
    let reply = get(untrusted.addr, "/over/tls", &[]);
    assert_eq!(reply.status, 502, "{reply:?}");
}

/// A keep-alive upstream written by hand, so that the test sees its connections: answers `ok`,
/// 204 on `/empty`, a bodiless 200 to `HEAD`, and on `/once` answers and then closes the
/// connection without saying so (as servers do to idle keep-alive connections). Counts the
/// connections it accepted and those the gateway closed.
struct CountingUpstream {
    url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed_by_gateway: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingUpstream {
    fn start() -> Self {
        use std::io::{BufRead, BufReader};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed_by_gateway = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counter, closed) = (accepted.clone(), closed_by_gateway.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let closed = closed.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        // The rest of the head; these requests have no body.
                        let mut line = String::new();
                        while reader.read_line(&mut line).unwrap_or(0) > 2 {
                            line.clear();
                        }
                        let answer: &[u8] = if request_line.contains(" /empty ") {
                            b"HTTP/1.1 204 No Content\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        let answer = if request_line.starts_with("HEAD ") {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
                        } else {
                            answer
                        };
                        if stream.write_all(answer).is_err() || request_line.contains(" /once ") {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url,
            accepted,
            closed_by_gateway,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed_by_gateway(&self) -> usize {
        self.closed_by_gateway
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn one_upstream_connection_serves_request_after_request() {
    let upstream = CountingUpstream::start();
    let gateway = Gateway::start(&catch_all("[server]\nworkers = 1", &upstream.url, ""), &[]);
    for round in 0..4 {
        assert_eq!(get(gateway.addr, "/page", &[]).body, "ok", "round {round}");
        // A body that is empty from the start is never read: the connection must come back
        // all the same.
        assert_eq!(get(gateway.addr, "/empty", &[]).status, 204);
        let head = raw(gateway.addr, "HEAD /page HTTP/1.1\r\nHost: app.test", b"");
        assert_eq!(head.status, 200, "{head:?}");
    }
    assert_eq!(upstream.accepted(), 1, "12 requests, one worker");
}

#[test]
fn an_upstream_closing_idle_connections_costs_no_request() {
    let upstream = CountingUpstream::start();
    let gateway = Gateway::start(&catch_all("[server]\nworkers = 1", &upstream.url, ""), &[]);
    for round in 0..6 {
        let reply = get(gateway.addr, "/once", &[]);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "round {round}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(upstream.accepted(), 6, "each closed connection replaced");
}

#[test]
fn an_upstream_connection_idle_past_the_idle_timeout_is_closed_and_not_reused() {
    let upstream = CountingUpstream::start();
    let gateway = Gateway::start(
        &catch_all(
            "[server]\nworkers = 1\n[upstream]\nidle_timeout = \"1s\"",
            &upstream.url,
            "",
        ),
        &[],
    );
    assert_eq!(get(gateway.addr, "/page", &[]).body, "ok");
    assert_eq!(get(gateway.addr, "/page", &[]).body, "ok");
    assert_eq!(upstream.accepted(), 1, "reused while fresh");
    // With no request to find it, the worker's sweeper closes it within 1.5 s (5 s allowed
    // for a loaded machine).
    assert_eq!(upstream.closed_by_gateway(), 0);
    let idle = std::time::Instant::now();
    while upstream.closed_by_gateway() == 0 && idle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(upstream.closed_by_gateway(), 1, "closed while nothing came");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "not before the idle timeout"
    );
    assert_eq!(get(gateway.addr, "/page", &[]).body, "ok");
    assert_eq!(upstream.accepted(), 2, "replaced once idle too long");
}
