//! Forward-auth (`/auth/forward`), the login page and the browser redirect to it, through the
//! running binary.

use std::net::SocketAddr;

use crate::support::{Gateway, Reply, Upstream, get, raw, send_json};

const PASSWORD: &str = "velvet tractor orbits quietly";
const ORIGIN: &str = "Origin: http://app.test";
const HTML: &str = "Accept: text/html,application/xhtml+xml";

fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start("app");
    let config = format!(
        "[identity]\nhash_memory_kib = 256\nhash_iterations = 1\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n\
         [[route]]\npath = \"/app\"\nupstream = \"{url}\"\nauth = \"session\"\n",
        url = upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let body = format!(r#"{{"email":"uma@example.com","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send_json(gateway.addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    (upstream, gateway)
}

fn session(addr: SocketAddr) -> String {
    let body = format!(r#"{{"email":"uma@example.com","password":"{PASSWORD}"}}"#);
    let reply = send_json(addr, "POST", "/auth/api/login", &body, &[ORIGIN]);
    let cookie = reply
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session");
    format!("Cookie: {cookie}")
}

fn forward(addr: SocketAddr, query: &str, headers: &[&str]) -> Reply {
    let mut all = vec![
        "X-Forwarded-Method: GET",
        "X-Forwarded-Host: app.test",
        "X-Forwarded-Uri: /dash?a=1",
    ];
    all.extend_from_slice(headers);
    get(addr, &format!("/auth/forward{query}"), &all)
}

#[test]
fn forward_auth_answers_for_nginx_traefik_and_caddy() {
    let (_upstream, gateway) = start();
    let addr = gateway.addr;
    // No credentials: 401 for an API client, a redirect to the login page for a browser.
    assert_eq!(forward(addr, "", &[]).status, 401);
    let browser = forward(addr, "", &[HTML]);
    assert_eq!(browser.status, 302, "{}", browser.body);
    assert_eq!(
        browser.header("location"),
        Some("/auth/login?next=%2Fdash%3Fa%3D1")
    );

    let cookie = session(addr);
    let ok = forward(addr, "", &[&cookie]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-portcullis-email"), Some("uma@example.com"));
    assert_eq!(ok.header("x-portcullis-auth"), Some("session"));
    assert!(
        ok.header("x-portcullis-identity")
            .is_some_and(|t| t.split('.').count() == 3)
    );
    // A location that needs a role the caller lacks.
    assert_eq!(forward(addr, "?roles=admin", &[&cookie]).status, 403);
    // The original request's method and origin decide CSRF.
    let cross = get(
        addr,
        "/auth/forward",
        &[
            "X-Forwarded-Method: POST",
            "X-Forwarded-Host: app.test",
            "Origin: https://evil.example",
            &cookie,
        ],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let cross_fetch = get(
        addr,
        "/auth/forward",
        &[
            "X-Forwarded-Method: DELETE",
            "X-Forwarded-Host: app.test",
            "Sec-Fetch-Site: cross-site",
            &cookie,
        ],
    );
    assert_eq!(cross_fetch.status, 403, "{}", cross_fetch.body);
}

#[test]
fn browsers_are_sent_to_log_in_and_brought_back() {
    let (_upstream, gateway) = start();
    let addr = gateway.addr;
    let reply = get(addr, "/app/reports?q=1", &[HTML]);
    assert_eq!(reply.status, 302, "{}", reply.body);
    assert_eq!(
        reply.header("location"),
        Some("/auth/login?next=%2Fapp%2Freports%3Fq%3D1")
    );
    // API clients get 401.
    assert_eq!(get(addr, "/app/reports", &[]).status, 401);

    // The page: no script under the strict CSP, a synchronizer token, `next` kept local.
    let page = get(addr, "/auth/login?next=%2F%2Fevil.example", &[HTML]);
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'"))
    );
    assert!(
        page.body.contains("name=\"next\" value=\"/\""),
        "{}",
        page.body
    );
    let csrf_cookie = page
        .headers
        .iter()
        .find_map(|(n, v)| {
            (n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-portcullis_csrf="))
                .then_some(v)
        })
        .and_then(|v| v.split(';').next())
        .expect("csrf cookie")
        .to_owned();
    let token = csrf_cookie
        .trim_start_matches("__Host-portcullis_csrf=")
        .to_owned();
    assert!(
        page.body
            .contains(&format!("name=\"csrf\" value=\"{token}\""))
    );

    let post = |form: &str, cookie: &str| {
        let head = format!(
            "POST /auth/login HTTP/1.1\r\nHost: app.test\r\n{ORIGIN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nCookie: {cookie}",
            form.len()
        );
        raw(addr, &head, form.as_bytes())
    };
    let password: String = form_encode(PASSWORD);
    let form = |token: &str, password: &str, next: &str| {
        format!("csrf={token}&next={next}&email=uma%40example.com&password={password}")
    };
    // Without the token (a cross-site form cannot read it): refused.
    let forged = post(&form("", &password, "%2Fapp%2Freports"), "theme=dark");
    assert_eq!(forged.status, 403, "{}", forged.body);
    // Wrong password: the page again, with the error.
    let wrong = post(&form(&token, "nope", "%2Fapp%2Freports"), &csrf_cookie);
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("Wrong e-mail address or password"),
        "{}",
        wrong.body
    );
    // Right password: back to where the browser was going, with a session.
    let ok = post(&form(&token, &password, "%2Fapp%2Freports"), &csrf_cookie);
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.header("location"), Some("/app/reports"));
    let session = ok
        .headers
        .iter()
        .find_map(|(n, v)| {
            (n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-portcullis_session="))
                .then_some(v)
        })
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    assert_eq!(
        get(addr, "/app/reports", &[&format!("Cookie: {session}")]).status,
        200
    );
    // An open redirect through `next` is refused: it falls back to `/`.
    let away = post(
        &form(&token, &password, "https%3A%2F%2Fevil.example%2F"),
        &csrf_cookie,
    );
    assert_eq!(away.header("location"), Some("/"));
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
