//! The bot defence through the running binary: a browser that solves the proof-of-work passes;
//! a missing, forged, replayed, expired or rebound pass is challenged again; the no-script
//! path waits; API clients are never challenged; known tools are refused in block mode.

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::support::{
    Gateway, Reply, Upstream, audit_tail, get, raw, send_json, solve_proof_of_work,
};

const FIREFOX: &str =
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const BROWSER: [&str; 3] = [FIREFOX, "Accept: text/html", "Accept-Language: en"];

/// `/app` behind the challenge (8 bits at weight 0), `/site` with heuristics, `/api` in block
/// mode, `/data` behind the challenge for browsers and tokens for API clients (`auth = "any"`);
/// the test is its own trusted proxy; passes last 2 s.
fn config(upstream: &Upstream) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nclient = \"off\"\n\
         [ids]\nenabled = false\n[identity]\nhash_memory_kib = 256\nhash_iterations = 1\n\
         [bot]\ndifficulty = 8\npass_lifetime = \"2s\"\n\
         [[route]]\npath = \"/app\"\nupstream = \"{u}\"\nbot = \"challenge\"\n\
         [[route]]\npath = \"/site\"\nupstream = \"{u}\"\nbot = \"heuristics\"\n\
         [[route]]\npath = \"/api\"\nupstream = \"{u}\"\nbot = \"block\"\n\
         [[route]]\npath = \"/data\"\nupstream = \"{u}\"\nauth = \"any\"\nbot = \"challenge\"\n",
        u = upstream.url()
    )
}

fn from(gateway: &Gateway, client: &str, path: &str, extra: &[&str]) -> Reply {
    let forwarded = format!("X-Forwarded-For: {client}");
    let mut headers = vec![forwarded.as_str()];
    headers.extend_from_slice(extra);
    get(gateway.addr, path, &headers)
}

fn is_challenge(reply: &Reply) -> bool {
    reply.status == 200 && reply.body.contains("id=\"pc-challenge\"")
}

fn input<'a>(page: &'a str, name: &str) -> &'a str {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name}")) + marker.len();
    &page[start..start + page[start..].find('"').expect("end of value")]
}

fn answer(gateway: &Gateway, client: &str, form: &str, agent: &str) -> Reply {
    let head = format!(
        "POST /.portcullis/challenge/verify HTTP/1.1\r\nHost: app.test\r\n{agent}\r\n\
         X-Forwarded-For: {client}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}",
        form.len()
    );
    raw(gateway.addr, &head, form.as_bytes())
}

fn pass_cookie(reply: &Reply) -> String {
    let set = reply.header("set-cookie").expect("a pass cookie");
    assert!(set.starts_with("__Host-portcullis_pass="), "{set}");
    assert!(set.contains("HttpOnly") && set.contains("Secure"), "{set}");
    format!("Cookie: {}", set.split(';').next().expect("pair"))
}

#[test]
fn a_solved_challenge_passes_and_every_bad_pass_is_challenged_again() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream), &[]);
    let client = "203.0.113.20";
    // Missing: the challenge page, its script allowed by nonce and nothing else.
    let page = from(&gateway, client, "/app/cart?x=1", &BROWSER);
    assert!(is_challenge(&page), "{page:?}");
    let csp = page.header("content-security-policy").expect("csp");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce");
    assert!(page.body.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(csp.contains("form-action 'self'") && csp.starts_with("default-src 'none'"));
    assert_eq!(page.header("cache-control"), Some("no-store"));

    let challenge = input(&page.body, "c");
    let bits: u32 = input(&page.body, "d").parse().expect("bits");
    assert!(bits >= 8);
    let nonce = solve_proof_of_work(challenge, bits);
    let form = format!("c={challenge}&n={nonce}&next=%2Fapp%2Fcart%3Fx%3D1");
    let solved = answer(&gateway, client, &form, FIREFOX);
    assert_eq!(solved.status, 303, "{solved:?}");
    assert_eq!(solved.header("location"), Some("/app/cart?x=1"));
    let cookie = pass_cookie(&solved);

    // The pass lets the browser through to the upstream.
    let mut with_pass = BROWSER.to_vec();
    with_pass.push(&cookie);
    let through = from(&gateway, client, "/app/cart?x=1", &with_pass);
    assert!(
        through.body.starts_with("app path=/app/cart?x=1"),
        "{through:?}"
    );
    // From the same /24, too.
    assert!(!is_challenge(&from(
        &gateway,
        "203.0.113.99",
        "/app/",
        &with_pass
    )));

    // Replayed: the same solution works once.
    let replayed = answer(&gateway, client, &form, FIREFOX);
    assert_eq!(replayed.status, 403);
    assert!(
        replayed.body.contains("challenge_failed"),
        "{}",
        replayed.body
    );
    // Too little work: a nonce whose hash starts with a non-zero byte.
    let fresh = from(&gateway, client, "/app/", &BROWSER);
    let fresh_challenge = input(&fresh.body, "c").to_owned();
    let lazy = (0u64..)
        .map(|n| n.to_string())
        .find(|n| Sha256::digest(format!("{fresh_challenge}:{n}"))[0] != 0)
        .expect("a lazy nonce");
    let refused = answer(
        &gateway,
        client,
        &format!("c={fresh_challenge}&n={lazy}"),
        FIREFOX,
    );
    assert_eq!(refused.status, 403);

    // Forged: a pass this server did not sign.
    let forged = "Cookie: __Host-portcullis_pass=cDF8OTk5OTk5OTk5OXxtZQ.AAAA";
    assert!(is_challenge(&from(
        &gateway,
        client,
        "/app/",
        &[FIREFOX, forged]
    )));
    // Rebound: another browser, or another network, with the same cookie.
    let chrome = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36";
    assert!(is_challenge(&from(
        &gateway,
        client,
        "/app/",
        &[chrome, &cookie]
    )));
    assert!(is_challenge(&from(
        &gateway,
        "198.51.100.20",
        "/app/",
        &with_pass
    )));
    // A solution made for one client does not work for another.
    let theirs = from(&gateway, client, "/app/", &BROWSER);
    let their_challenge = input(&theirs.body, "c").to_owned();
    let their_nonce = solve_proof_of_work(&their_challenge, bits);
    let stolen = answer(
        &gateway,
        "198.51.100.20",
        &format!("c={their_challenge}&n={their_nonce}"),
        FIREFOX,
    );
    assert_eq!(stolen.status, 403);
    // Expired: passes last 2 s here.
    std::thread::sleep(Duration::from_millis(2100));
    assert!(is_challenge(&from(&gateway, client, "/app/", &with_pass)));

    let tail = audit_tail(gateway);
    assert!(tail.contains("\"challenge_failed\""), "{tail}");
}

#[test]
fn the_no_script_path_waits_before_it_passes() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream), &[]);
    let client = "203.0.113.30";
    let page = from(&gateway, client, "/app/", &BROWSER);
    let refresh = page
        .body
        .split("url=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a no-script refresh for a light request")
        .replace("&amp;", "&");
    assert!(
        refresh.starts_with("/.portcullis/challenge/wait?c="),
        "{refresh}"
    );
    let early = from(&gateway, client, &refresh, &[FIREFOX]);
    assert_eq!(early.status, 403, "before the wait");
    std::thread::sleep(Duration::from_millis(5100));
    let waited = from(&gateway, client, &refresh, &[FIREFOX]);
    assert_eq!(waited.status, 303, "{waited:?}");
    assert_eq!(waited.header("location"), Some("/app/"));
    let cookie = pass_cookie(&waited);
    let mut with_pass = BROWSER.to_vec();
    with_pass.push(&cookie);
    assert!(!is_challenge(&from(&gateway, client, "/app/", &with_pass)));
    // A heavy request gets no such path: it must do the work.
    let curl = from(&gateway, client, "/app/", &["User-Agent: curl/8.5.0"]);
    assert!(is_challenge(&curl) && !curl.body.contains("http-equiv=\"refresh\""));
}

#[test]
fn api_clients_pass_browsers_pass_heuristics_and_tools_are_refused() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream), &[]);
    let client = "203.0.113.40";
    // A request that authenticates by token on a route that verifies it is never challenged.
    let origin = "Origin: http://app.test";
    let account = r#"{"email":"api@example.com","password":"velvet tractor orbits quietly"}"#;
    let registered = send_json(
        gateway.addr,
        "POST",
        "/auth/api/register",
        account,
        &[origin],
    );
    assert_eq!(registered.status, 202, "{}", registered.body);
    let grant = r#"{"grant_type":"password","email":"api@example.com","password":"velvet tractor orbits quietly"}"#;
    let tokens = send_json(gateway.addr, "POST", "/auth/api/token", grant, &[origin]);
    let tokens: serde_json::Value = serde_json::from_str(&tokens.body).expect("tokens");
    let bearer = format!(
        "Authorization: Bearer {}",
        tokens["access_token"].as_str().expect("an access token")
    );
    let keyed = from(&gateway, client, "/data/x", &[&bearer]);
    assert!(keyed.body.starts_with("app path=/data/x"), "{keyed:?}");
    // So is a request with an API key, which the route verifies as well.
    let data = gateway.dir.0.join("data");
    let file = gateway.dir.0.join("portcullis.toml");
    let (status, out) = crate::support::run(
        &[
            "apikey",
            "-c",
            file.to_str().expect("utf8"),
            "--data-dir",
            data.to_str().expect("utf8"),
            "create",
            "--name",
            "partner",
            "--json",
        ],
        &[],
    );
    assert!(status.success(), "{out}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let api_key = format!("X-API-Key: {}", created["key"].as_str().expect("key"));
    let keyed = from(&gateway, client, "/data/x", &[&api_key]);
    assert!(keyed.body.starts_with("app path=/data/x"), "{keyed:?}");
    let forged_key = from(
        &gateway,
        client,
        "/data/x",
        &["X-API-Key: pc_0000000000000000000000000000000000000000000aaaaaa"],
    );
    assert_eq!(forged_key.status, 401, "{forged_key:?}");
    // A forged token there is refused, not waved through.
    assert_eq!(
        from(
            &gateway,
            client,
            "/data/x",
            &["Authorization: Bearer forged"]
        )
        .status,
        401
    );
    // A credential header on a route that does not check it proves nothing: still challenged.
    assert!(is_challenge(&from(
        &gateway,
        client,
        "/app/x",
        &["Authorization: Bearer abc"]
    )));
    assert!(is_challenge(&from(
        &gateway,
        client,
        "/app/x",
        &["X-API-Key: pc_abc"]
    )));
    // Heuristics: a browser passes, a script is challenged.
    assert_eq!(from(&gateway, client, "/site/", &BROWSER).status, 200);
    assert!(!is_challenge(&from(&gateway, client, "/site/", &BROWSER)));
    assert!(is_challenge(&from(
        &gateway,
        client,
        "/site/",
        &["User-Agent: python-requests/2.32"]
    )));
    // Block: scanners and AI crawlers refused, browsers and curl pass.
    let sqlmap = from(&gateway, client, "/api/x", &["User-Agent: sqlmap/1.8"]);
    assert_eq!(sqlmap.status, 403);
    assert!(sqlmap.body.contains("bot_refused"), "{}", sqlmap.body);
    let gpt = from(
        &gateway,
        client,
        "/api/x",
        &["User-Agent: Mozilla/5.0 (compatible; GPTBot/1.2)"],
    );
    assert_eq!(gpt.status, 403);
    assert_eq!(from(&gateway, client, "/api/x", &BROWSER).status, 200);
    // The bot defence cannot be put on a route that authenticates by token.
    let bad = "[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"token\"\nbot = \"challenge\"\n";
    let dir = crate::support::TempDir::new("bot");
    let file = dir.write("bad.toml", bad);
    let (status, out) = crate::support::run(
        &["config", "check", "-c", file.to_str().expect("utf8")],
        &[],
    );
    assert!(!status.success() && out.contains("browser routes"), "{out}");
}

/// An external CAPTCHA (Turnstile here) in place of the proof-of-work, against a local
/// stand-in for its `siteverify`: the page shows the provider's widget under a CSP that allows
/// only the provider; a good token (checked with the secret and the client's address) earns a
/// pass; a bad one is refused.
#[test]
fn a_captcha_provider_stands_in_for_the_proof_of_work() {
    let siteverify = crate::support::StandIn::start(|_, body| {
        let good = body.contains("secret=test-secret")
            && body.contains("response=good-token")
            && body.contains("remoteip=203.0.113.60");
        ("200 OK", format!(r#"{{"success":{good}}}"#))
    });
    let upstream = Upstream::start("app");
    let file = config(&upstream).replace(
        "pass_lifetime = \"2s\"\n",
        &format!(
            "pass_lifetime = \"2s\"\n[bot.captcha]\nprovider = \"turnstile\"\nsite_key = \"0x4AAAA-site\"\n\
             secret = \"test-secret\"\nverify_url = \"{}/turnstile/v0/siteverify\"\n",
            siteverify.url
        ),
    );
    let gateway = Gateway::start(&file, &[]);
    let client = "203.0.113.60";
    let page = from(&gateway, client, "/app/basket", &BROWSER);
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("class=\"cf-turnstile\" data-sitekey=\"0x4AAAA-site\""),
        "{}",
        page.body
    );
    let csp = page.header("content-security-policy").expect("csp");
    assert!(
        csp.contains("script-src https://challenges.cloudflare.com;"),
        "{csp}"
    );
    assert!(csp.contains("form-action 'self'"), "{csp}");

    let post = |token: &str| {
        let form = format!("cf-turnstile-response={token}&next=%2Fapp%2Fbasket");
        let head = format!(
            "POST /.portcullis/challenge/captcha HTTP/1.1\r\nHost: app.test\r\n{FIREFOX}\r\n\
             X-Forwarded-For: {client}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}",
            form.len()
        );
        raw(gateway.addr, &head, form.as_bytes())
    };
    let refused = post("bad-token");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body.contains("challenge_failed"),
        "{}",
        refused.body
    );
    let passed = post("good-token");
    assert_eq!(passed.status, 303, "{passed:?}");
    assert_eq!(passed.header("location"), Some("/app/basket"));
    let cookie = pass_cookie(&passed);
    let mut with_pass = BROWSER.to_vec();
    with_pass.push(&cookie);
    let through = from(&gateway, client, "/app/basket", &with_pass);
    assert!(
        through.body.starts_with("app path=/app/basket"),
        "{through:?}"
    );
    assert_eq!(
        siteverify.bodies().len(),
        2,
        "one siteverify call per answer"
    );
    // The secret is never shown.
    let shown_file = gateway.dir.write("shown.toml", &file);
    let (status, shown) = crate::support::run(
        &["config", "show", "-c", shown_file.to_str().expect("utf8")],
        &[],
    );
    assert!(
        status.success() && !shown.contains("test-secret"),
        "{shown}"
    );
}
