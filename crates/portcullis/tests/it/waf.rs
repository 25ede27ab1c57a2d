//! The WAF stage through the running gateway: blocking, detect mode, body parsing, events,
//! and the CRS regression corpus replayed request by request.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine as _;

use crate::support::{Gateway, PRODUCTION, Upstream, audit_tail, catch_all, get, raw, run};

/// `head` without the per-client rate limit: a corpus replay is thousands of requests from one
/// address, and these tests are about the WAF alone.
fn unlimited(head: &str) -> String {
    format!("{head}[rate_limit]\nclient = \"off\"\n")
}

/// Sends `request` as-is and returns the response's status (0 when none came).
fn status_of(addr: SocketAddr, request: &[u8]) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(request).is_err() {
        return 0;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(read) => head.extend_from_slice(&buf[..read]),
        }
    }
    String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    positives: usize,
    detected: usize,
    whole: usize,
    whole_detected: usize,
    negatives: usize,
    flagged: usize,
    clean: usize,
    clean_flagged: usize,
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    100.0 * part as f64 / whole as f64
}

/// The CRS regression corpus through the production profile at paranoia 1: at least 95% of the
/// whole SQLi and XSS attacks refused, fewer than 2% of the clean negatives.
#[test]
fn crs_regression_corpus_at_paranoia_one() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&catch_all(&unlimited(PRODUCTION), &upstream.url(), ""), &[]);
    let corpus = include_str!("../data/crs/requests.jsonl");
    let mut tallies: BTreeMap<u64, Tally> = BTreeMap::new();
    for line in corpus.lines() {
        let case: serde_json::Value = serde_json::from_str(line).expect("corpus line");
        let request = base64::engine::general_purpose::STANDARD
            .decode(case["request"].as_str().expect("request"))
            .expect("base64");
        // Refused: blocked by the WAF (403), or malformed before it (400: hyper refuses a
        // raw `<` in a request target). Either way the request never reaches the upstream.
        let blocked = matches!(status_of(gateway.addr, &request), 400 | 403);
        let tally = tallies
            .entry(case["family"].as_u64().expect("family"))
            .or_default();
        if case["expect"] == "positive" {
            tally.positives += 1;
            tally.detected += usize::from(blocked);
            if case["whole"] == true {
                tally.whole += 1;
                tally.whole_detected += usize::from(blocked);
            }
        } else {
            tally.negatives += 1;
            tally.flagged += usize::from(blocked);
            if case["clean"] == true {
                tally.clean += 1;
                tally.clean_flagged += usize::from(blocked);
            }
        }
    }
    let (mut negatives, mut flagged, mut clean, mut clean_flagged) = (0, 0, 0, 0);
    for (family, tally) in &tallies {
        println!(
            "CRS {family}: detected {}/{} ({:.1}%), whole attacks {}/{} ({:.1}%), negatives flagged {}/{} ({:.1}%), clean negatives flagged {}/{} ({:.1}%)",
            tally.detected,
            tally.positives,
            percent(tally.detected, tally.positives),
            tally.whole_detected,
            tally.whole,
            percent(tally.whole_detected, tally.whole),
            tally.flagged,
            tally.negatives,
            percent(tally.flagged, tally.negatives),
            tally.clean_flagged,
            tally.clean,
            percent(tally.clean_flagged, tally.clean),
        );
        negatives += tally.negatives;
        flagged += tally.flagged;
        clean += tally.clean;
        clean_flagged += tally.clean_flagged;
    }
    println!(
        "CRS negatives flagged: {flagged}/{negatives} ({:.2}%); clean negatives flagged: {clean_flagged}/{clean} ({:.2}%)",
        percent(flagged, negatives),
        percent(clean_flagged, clean)
    );
    for family in [941, 942] {
        let tally = &tallies[&family];
        assert!(
            percent(tally.whole_detected, tally.whole) >= 95.0,
            "{family}: whole attacks detected {}/{}",
            tally.whole_detected,
            tally.whole
        );
    }
    // A "must not fire" test checks one rule; many are attacks that another rule must catch.
    // The clean ones (scripts/crs-corpus.py) are the false-positive probes.
    assert!(
        percent(clean_flagged, clean) < 2.0,
        "clean negatives flagged {clean_flagged}/{clean}"
    );
}

fn post(addr: SocketAddr, target: &str, content_type: &str, body: &[u8]) -> crate::support::Reply {
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: app.test\r\nContent-Type: {content_type}\r\nContent-Length: {}",
        body.len()
    );
    raw(addr, &head, body)
}

#[test]
fn block_mode_refuses_attacks_with_the_common_body_and_a_durable_event() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&catch_all(&unlimited(PRODUCTION), &upstream.url(), ""), &[]);
    let reply = get(
        gateway.addr,
        "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--",
        &[],
    );
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.body.contains("request_blocked"), "{}", reply.body);
    let id = reply.header("x-request-id").expect("request id").to_owned();
    assert!(reply.body.contains(&id));
    // The request id is random hex and may itself hold "942".
    assert!(
        !reply.body.replace(&id, "").contains("942"),
        "rule ids stay out of production bodies: {}",
        reply.body
    );
    assert_eq!(reply.header("x-portcullis-waf-rules"), None);

    let json = br#"{"comment": {"text": "<img src=x onerror=alert(document.cookie)>"}}"#;
    assert_eq!(
        post(gateway.addr, "/api/comments", "application/json", json).status,
        403
    );
    let form = b"name=O%27Brien&note=please+select+a+plan%3B+it%27s+%22the+best%22";
    let reply = post(
        gateway.addr,
        "/signup",
        "application/x-www-form-urlencoded",
        form,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains(&format!("received={}", form.len())),
        "{}",
        reply.body
    );

    let tail = audit_tail(gateway);
    let blocks: Vec<&str> = tail
        .lines()
        .filter(|l| l.contains("\"waf_block\""))
        .collect();
    assert_eq!(blocks.len(), 2, "{tail}");
    assert!(
        blocks[0].contains(&id) && blocks[0].contains("942100"),
        "{}",
        blocks[0]
    );
    assert!(
        blocks[1].contains("941") && blocks[1].contains("comment.text"),
        "{}",
        blocks[1]
    );
}

#[test]
fn detect_mode_passes_attacks_and_names_the_rules_outside_production() {
    let upstream = Upstream::start("APP");
    let gateway = Gateway::start(&catch_all("", &upstream.url(), ""), &[]);
    let reply = get(
        gateway.addr,
        "/run?host=127.0.0.1%3Bcat%20%2Fetc%2Fpasswd",
        &[],
    );
    assert_eq!(reply.status, 200, "development detects only: {reply:?}");
    let rules = reply
        .header("x-portcullis-waf-rules")
        .expect("rule header in development");
    assert_eq!(rules, "932100");
    let tail = audit_tail(gateway);
    assert!(
        tail.lines()
            .any(|l| l.contains("\"waf_detect\"") && l.contains("932100")),
        "{tail}"
    );

    // Production never sends the header, even when asked to.
    let config = format!(
        "{PRODUCTION}[waf]\nrule_header = true\n[[route]]\npath = \"/\"\nupstream = \"{}\"\n",
        upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let reply = get(
        gateway.addr,
        "/run?host=127.0.0.1%3Bcat%20%2Fetc%2Fpasswd",
        &[],
    );
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-portcullis-waf-rules"), None);
}

#[test]
fn routes_override_the_mode_and_exclude_fields() {
    let upstream = Upstream::start("APP");
    let config = format!(
        "{PRODUCTION}\
         [[route]]\npath = \"/raw/\"\nupstream = \"{url}\"\nwaf = \"off\"\n\
         [[route]]\npath = \"/cms/\"\nupstream = \"{url}\"\nwaf_exclusions = [{{ rules = [941100, 941120, 941390], location = \"body\", field = \"content_html\" }}]\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n",
        url = upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let attack = "/x?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    assert_eq!(get(gateway.addr, attack, &[]).status, 403);
    assert_eq!(get(gateway.addr, &format!("/raw{attack}"), &[]).status, 200);
    let rich = b"content_html=%3Cp%20onclick%3D%22alert(1)%22%3Ehi%3C%2Fp%3E";
    let form = "application/x-www-form-urlencoded";
    assert_eq!(post(gateway.addr, "/cms/page", form, rich).status, 200);
    let elsewhere = b"title=%3Cp%20onclick%3D%22alert(1)%22%3Ehi%3C%2Fp%3E";
    assert_eq!(post(gateway.addr, "/cms/page", form, elsewhere).status, 403);
}

/// Each worker remembers the head values it found clean (`portcullis_waf::memo`). A value that
/// one route's exclusion lets through is refused on a route without it, whichever comes first,
/// and a header value seen clean many times does not hide an attack in the same header.
#[test]
fn remembered_clean_values_never_let_an_attack_through() {
    let upstream = Upstream::start("APP");
    // One worker, so that every request meets the same memory.
    let config = format!(
        "{PRODUCTION}\
         [server]\nworkers = 1\n\
         [[route]]\npath = \"/search/\"\nupstream = \"{url}\"\nwaf_exclusions = [{{ rules = [941100, 941390], location = \"query\", field = \"q\" }}]\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n",
        url = upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let attack = "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    for _ in 0..3 {
        let excluded = get(gateway.addr, &format!("/search/?{attack}"), &[]);
        assert_eq!(excluded.status, 200, "{excluded:?}");
        assert_eq!(
            get(gateway.addr, &format!("/app?{attack}"), &[]).status,
            403
        );
    }
    let agent = "User-Agent: Mozilla/5.0 (X11; Linux x86_64)";
    for _ in 0..3 {
        assert_eq!(get(gateway.addr, "/app?page=2", &[agent]).status, 200);
    }
    let hostile = "User-Agent: Mozilla/5.0 <script>alert(1)</script>";
    assert_eq!(get(gateway.addr, "/app?page=2", &[hostile]).status, 403);
    assert_eq!(get(gateway.addr, "/app?page=2", &[agent]).status, 200);
}

#[test]
fn bodies_are_parsed_strictly_and_inspected_up_to_the_limit() {
    let upstream = Upstream::start("APP");
    let config = format!(
        "{PRODUCTION}\
         [waf]\nbody_limit = 4096\n\
         [[route]]\npath = \"/upload/\"\nupstream = \"{url}\"\nwaf_over_limit = \"inspect_prefix\"\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n",
        url = upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let multipart = "multipart/form-data; boundary=XyZ";
    let valid =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ--\r\n";
    assert_eq!(post(gateway.addr, "/form", multipart, valid).status, 200);
    let smuggled = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XyZ--\r\n<script>alert(1)</script>";
    let reply = post(gateway.addr, "/form", multipart, smuggled);
    assert_eq!(
        reply.status, 400,
        "data after the final boundary: {reply:?}"
    );
    assert!(reply.body.contains("malformed_body"), "{}", reply.body);
    let attack_in_file = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../../../etc/passwd\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--XyZ--\r\n";
    assert_eq!(
        post(gateway.addr, "/form", multipart, attack_in_file).status,
        403
    );

    // Past the limit: refused on the default route, inspected as a prefix on /upload/ and
    // forwarded whole.
    let mut big = b"note=".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10_000));
    let form = "application/x-www-form-urlencoded";
    assert_eq!(post(gateway.addr, "/form", form, &big).status, 413);
    let reply = post(gateway.addr, "/upload/x", form, &big);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains(&format!("received={}", big.len())),
        "{}",
        reply.body
    );
    let mut attack_first = b"q=1%27%20OR%20%271%27%3D%271&note=".to_vec();
    attack_first.extend(std::iter::repeat_n(b'a', 10_000));
    assert_eq!(
        post(gateway.addr, "/upload/x", form, &attack_first).status,
        403
    );
    // A body with no content type is read as JSON when it parses (FastAPI's reading), else as a
    // form; a compressed body of an inspected type cannot be inspected and is refused.
    let unlabelled = b"{\"q\": \"1' UNION SELECT password FROM users--\"}";
    let head = format!(
        "POST /api HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}",
        unlabelled.len()
    );
    assert_eq!(raw(gateway.addr, &head, unlabelled).status, 403);
    let head = format!(
        "POST /form HTTP/1.1\r\nHost: app.test\r\nContent-Type: {form}\r\nContent-Encoding: gzip\r\nContent-Length: {}",
        big.len()
    );
    assert_eq!(raw(gateway.addr, &head, &big).status, 400);
    // A body of a type the engine does not parse streams through uninspected.
    let reply = post(gateway.addr, "/form", "application/octet-stream", &big);
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn waf_check_explains_and_eval_measures() {
    let (status, out) = run(
        &[
            "waf",
            "check",
            "1' UN/**/ION SEL/**/ECT password FROM users--",
        ],
        &[],
    );
    assert!(!status.success(), "an attack exits non-zero: {out}");
    assert!(out.contains("942100") && out.contains("ATTACK"), "{out}");
    let (status, out) = run(&["waf", "check", "--location", "body", "O'Brien"], &[]);
    assert!(status.success(), "{out}");
    assert!(out.contains("pass"), "{out}");
    let (status, out) = run(
        &[
            "waf",
            "check",
            "%252e%252e%252fetc%252fpasswd",
            "--location",
            "query",
        ],
        &[],
    );
    assert!(!status.success(), "{out}");
    assert!(out.contains("decoded    ../etc/passwd"), "{out}");
    assert!(
        out.contains("multiple_encoding") && out.contains("930100"),
        "{out}"
    );

    let dir = crate::support::TempDir::new("eval");
    let file = dir.write(
        "labelled.jsonl",
        concat!(
            r#"{"payload": "1' OR '1'='1", "location": "query", "attack": true, "family": "sqli"}"#,
            "\n",
            r#"{"payload": "O'Brien", "location": "body", "attack": false, "family": "sqli"}"#,
            "\n",
            r#"{"payload": "<svg onload=alert(1)>", "attack": true, "family": "xss"}"#,
            "\n",
            r#"{"payload": "hello world", "attack": true, "family": "xss"}"#,
            "\n",
        ),
    );
    let (status, out) = run(&["waf", "eval", file.to_str().expect("utf8")], &[]);
    assert!(status.success(), "{out}");
    let line = |family: &str| {
        out.lines()
            .find(|l| l.starts_with(family))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("sqli").contains("100.00%") && line("sqli").contains("0.00%"),
        "{out}"
    );
    assert!(line("xss").contains("50.00%"), "{out}");
}
