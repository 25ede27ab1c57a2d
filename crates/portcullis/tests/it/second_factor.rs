//! Second factors through the running binary: TOTP enrolment with codes computed here from the
//! secret, a login that then asks for a code, a replayed code refused, a backup code that works
//! once, removal refused without a recent step-up, and wrong codes throttled like passwords.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{
    Gateway, Reply, Upstream, get, send_json, session_app, session_cookie as session_of,
};

const ORIGIN: &str = "Origin: http://app.test";
const PASSWORD: &str = "velvet tractor orbits quietly";
const EMAIL: &str = "totp@example.com";

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

/// The backup codes an answer shows (once).
fn backup_codes(reply: &Reply) -> Vec<String> {
    json(reply)["backup_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect()
}

/// The code an authenticator app shows `offset` seconds from now.
fn code(secret: &str, offset: i64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(bytes)
        .build()
        .expect("totp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    totp.generate(now.saturating_add_signed(offset)).to_string()
}

fn password_step(addr: SocketAddr) -> Reply {
    let body = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    send_json(addr, "POST", "/auth/api/login", &body, &[ORIGIN])
}

/// The password step of an enrolled account: 403 with the challenge of the second step.
fn challenge(addr: SocketAddr) -> String {
    let reply = password_step(addr);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.header("set-cookie").is_none(),
        "no session before the second factor"
    );
    let body = json(&reply);
    assert_eq!(body["error"]["code"], "second_factor_required", "{body}");
    body["error"]["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned()
}

fn second_step(addr: SocketAddr, field: &str, value: &str) -> Reply {
    let challenge = challenge(addr);
    let body = format!(r#"{{"challenge":"{challenge}","{field}":"{value}"}}"#);
    send_json(
        addr,
        "POST",
        "/auth/api/login/second-factor",
        &body,
        &[ORIGIN],
    )
}

#[test]
fn totp_enrolment_login_replay_backup_codes_and_step_up() {
    let Some(smtp) = crate::support::SmtpSink::start() else {
        return;
    };
    let (_upstream, gateway) = session_app(
        &smtp.config(),
        "registration = \"open\"\nstep_up_window = \"2s\"\n",
    );
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send_json(addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    let login = password_step(addr);
    assert_eq!(login.status, 200, "{}", login.body);
    let session = session_of(&login);

    // 1. Enrol: the secret, its otpauth URI and the QR code as SVG and PNG.
    let setup = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/totp",
        "",
        &[ORIGIN, &session],
    );
    assert_eq!(setup.status, 201, "{}", setup.body);
    let setup = json(&setup);
    let secret = setup["secret"].as_str().expect("secret").to_owned();
    let uri = setup["uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/Portcullis:totp%40example.com?") && uri.contains(&secret),
        "{uri}"
    );
    assert!(setup["qr_svg"].as_str().expect("svg").contains("<svg"));
    let png = get(addr, "/auth/api/second-factor/totp/qr.png", &[&session]);
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert!(png.body.contains("PNG"), "a PNG signature");
    // Not enabled until confirmed: a wrong code is refused, and logins still need no code.
    let wrong = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/totp/confirm",
        r#"{"code":"000000"}"#,
        &[ORIGIN, &session],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let confirm = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/totp/confirm",
        &format!(r#"{{"code":"{}"}}"#, code(&secret, 0)),
        &[ORIGIN, &session],
    );
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let backup = backup_codes(&confirm);
    assert_eq!(backup.len(), 10);
    // At rest: the secret sealed (with its key id), the backup codes as keyed hashes.
    let stored = stored_second_factor(&gateway.dir.0.join("data"));
    assert!(
        !stored.contains(&secret) && stored.starts_with('k'),
        "{stored}"
    );
    assert!(!stored.contains(&backup[0].replace('-', "")), "{stored}");

    // 2. Login now asks for a code, and the code of the step just used is refused.
    let replay = second_step(addr, "code", &code(&secret, 0));
    assert_eq!(
        replay.status, 401,
        "the confirming code again: {}",
        replay.body
    );
    let next = code(&secret, 30);
    let login = second_step(addr, "code", &next);
    assert_eq!(login.status, 200, "{}", login.body);
    let session = session_of(&login);
    assert_eq!(get(addr, "/app/home", &[&session]).status, 200);
    // 3. The same code again, on a fresh challenge: refused.
    let replay = second_step(addr, "code", &next);
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert!(
        replay.body.contains("invalid_second_factor"),
        "{}",
        replay.body
    );

    // 4. A backup code works once, and says how many remain.
    let first = second_step(addr, "backup_code", &backup[0].to_uppercase());
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(json(&first)["backup_codes_left"], 9);
    let notice = smtp.wait_for(EMAIL, "backup code");
    assert!(notice.contains("9 unused codes remain"), "{notice}");
    let again = second_step(addr, "backup_code", &backup[0]);
    assert_eq!(again.status, 401, "{}", again.body);

    // 5. Removing the second factor needs a recent step-up (2 s in this test).
    std::thread::sleep(Duration::from_millis(2100));
    let refused = send_json(
        addr,
        "DELETE",
        "/auth/api/second-factor",
        "",
        &[ORIGIN, &session],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("step_up_required"),
        "{}",
        refused.body
    );
    let key = send_json(
        addr,
        "POST",
        "/auth/api/keys",
        r#"{"name":"no step-up"}"#,
        &[ORIGIN, &session],
    );
    assert_eq!(key.status, 403, "creating an API key: {}", key.body);
    let email = send_json(
        addr,
        "POST",
        "/auth/api/email",
        r#"{"email":"elsewhere@example.com"}"#,
        &[ORIGIN, &session],
    );
    assert_eq!(
        email.status, 403,
        "changing the e-mail address: {}",
        email.body
    );
    assert!(email.body.contains("step_up_required"), "{}", email.body);
    assert!(key.body.contains("step_up_required"), "{}", key.body);
    let step_up = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/step-up",
        &format!(r#"{{"backup_code":"{}"}}"#, backup[1]),
        &[ORIGIN, &session],
    );
    assert_eq!(step_up.status, 204, "{}", step_up.body);
    let key = send_json(
        addr,
        "POST",
        "/auth/api/keys",
        r#"{"name":"after step-up"}"#,
        &[ORIGIN, &session],
    );
    assert_eq!(
        key.status, 201,
        "creating an API key after a step-up: {}",
        key.body
    );
    // New backup codes end the old ones.
    let renewed = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/backup-codes",
        "",
        &[ORIGIN, &session],
    );
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    let renewed = backup_codes(&renewed);
    assert_eq!(renewed.len(), 10);
    let step_up_with = |code: &str| {
        send_json(
            addr,
            "POST",
            "/auth/api/second-factor/step-up",
            &format!(r#"{{"backup_code":"{code}"}}"#),
            &[ORIGIN, &session],
        )
        .status
    };
    assert_eq!(step_up_with(&backup[2]), 401, "an old backup code");
    assert_eq!(step_up_with(&renewed[0]), 204, "a new backup code");
    let removed = send_json(
        addr,
        "DELETE",
        "/auth/api/second-factor",
        "",
        &[ORIGIN, &session],
    );
    assert_eq!(removed.status, 204, "{}", removed.body);
    assert_eq!(password_step(addr).status, 200, "no second factor any more");

    let tail = crate::support::audit_tail(gateway);
    for kind in [
        "second_factor_enabled",
        "second_factor_required",
        "backup_code_used",
        "second_factor_disabled",
    ] {
        assert!(
            tail.contains(&format!("\"kind\":\"{kind}\"")),
            "{kind}: {tail}"
        );
    }
    assert!(tail.contains("wrong_second_factor"), "{tail}");
}

/// What the store holds of the account's second factor: the sealed secret and the backup code
/// hashes, as one text.
fn stored_second_factor(data_dir: &std::path::Path) -> String {
    let url = crate::support::sqlite_url(data_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("open the store");
        let secret: (String,) = sqlx::query_as("SELECT secret FROM totp_credentials")
            .fetch_one(&mut db)
            .await
            .expect("secret");
        let codes: Vec<(String,)> = sqlx::query_as("SELECT code_hash FROM backup_codes")
            .fetch_all(&mut db)
            .await
            .expect("codes");
        let codes: Vec<String> = codes.into_iter().map(|(c,)| c).collect();
        format!("{} {}", secret.0, codes.join(" "))
    })
}

/// A gateway (development profile, open registration) with one `/app` route behind a session.
fn open_gateway() -> (Upstream, Gateway) {
    session_app("", "registration = \"open\"\n")
}

/// A gateway with one `/app` route behind a session, and an account with TOTP confirmed.
struct Enrolled {
    _upstream: Upstream,
    gateway: Gateway,
    secret: String,
    backup: Vec<String>,
}

/// Sets up TOTP for the session's account and confirms it with a code computed here; returns
/// the secret and the backup codes.
fn confirm_totp(addr: SocketAddr, session: &str) -> (String, Vec<String>) {
    let setup = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/totp",
        "",
        &[ORIGIN, session],
    );
    assert_eq!(setup.status, 201, "{}", setup.body);
    let secret = json(&setup)["secret"].as_str().expect("secret").to_owned();
    let confirm = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/totp/confirm",
        &format!(r#"{{"code":"{}"}}"#, code(&secret, 0)),
        &[ORIGIN, session],
    );
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    (secret, backup_codes(&confirm))
}

fn enrolled() -> Enrolled {
    let (upstream, gateway) = open_gateway();
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send_json(addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    let session = session_of(&password_step(addr));
    let (secret, backup) = confirm_totp(addr, &session);
    Enrolled {
        _upstream: upstream,
        gateway,
        secret,
        backup,
    }
}

/// Wrong codes on the second step count in the brute-force defence: a stolen password does
/// not buy unlimited guesses at the code.
#[test]
fn wrong_codes_on_the_second_step_are_throttled() {
    let Enrolled {
        _upstream, gateway, ..
    } = enrolled();
    let addr = gateway.addr;
    let challenge = challenge(addr);
    let guess = |n: u32| {
        let body = format!(
            r#"{{"challenge":"{challenge}","code":"{:06}"}}"#,
            100_000 + n
        );
        send_json(
            addr,
            "POST",
            "/auth/api/login/second-factor",
            &body,
            &[ORIGIN],
        )
        .status
    };
    let throttled = (0..12).find(|n| guess(*n) == 429);
    assert!(
        throttled.is_some_and(|n| n <= 6),
        "guesses before the throttle: {throttled:?}"
    );
}

/// The value of the hidden field `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name}: {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap_or("").to_owned()
}

/// The login page of an enrolled account leads to a page for the code, which ends in the
/// session and the page asked for.
#[test]
fn the_login_page_asks_for_the_code_on_a_second_page() {
    let Enrolled {
        _upstream,
        gateway,
        secret,
        ..
    } = enrolled();
    let addr = gateway.addr;

    let page = crate::support::submit_page_form(
        addr,
        "/auth/login?next=/app/orders",
        "/auth/login",
        &[
            ("email", EMAIL),
            ("password", PASSWORD),
            ("next", "/app/orders"),
        ],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.header("set-cookie").is_none(), "no session yet");
    assert!(page.body.contains("authenticator app"), "{}", page.body);
    let (csrf, challenge) = (hidden(&page.body, "csrf"), hidden(&page.body, "challenge"));
    let post = |code: &str| {
        let form = format!("csrf={csrf}&challenge={challenge}&next=%2Fapp%2Forders&code={code}");
        let head = format!(
            "POST /auth/login/second-factor HTTP/1.1\r\nHost: app.test\r\nOrigin: http://app.test\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Cookie: __Host-portcullis_csrf={csrf}",
            form.len()
        );
        crate::support::raw(addr, &head, form.as_bytes())
    };
    let wrong = post("000000");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        wrong.body.contains(&challenge),
        "the same challenge, to try again"
    );
    let done = post(&code(&secret, 30));
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), Some("/app/orders"));
    let session = session_of(&done);
    assert_eq!(get(addr, "/app/orders", &[&session]).status, 200);
}

/// In production, an admin without a second factor cannot reach an admin route until they
/// enrol; a route with `mfa = true` asks the same of everyone.
#[test]
fn in_production_admins_enrol_before_admin_routes() {
    let upstream = Upstream::start("app");
    let config = format!(
        "{}[identity]\nhash_memory_kib = 256\nhash_iterations = 1\n\
         [[route]]\npath = \"/admin\"\nupstream = \"{url}\"\nauth = \"session\"\nroles = [\"admin\"]\n\
         [[route]]\npath = \"/billing\"\nupstream = \"{url}\"\nauth = \"session\"\nmfa = true\n\
         [[route]]\npath = \"/app\"\nupstream = \"{url}\"\nauth = \"session\"\n",
        crate::support::PRODUCTION,
        url = upstream.url()
    );
    let gateway = Gateway::start(
        &config,
        &[(
            "PORTCULLIS_SERVER__SECRET_KEY",
            "0123456789abcdef0123456789abcdef",
        )],
    );
    let addr = gateway.addr;
    let token = gateway.bootstrap.clone().expect("a bootstrap link");
    let body = format!(
        r#"{{"token":"{token}","email":"{EMAIL}","password":"{PASSWORD}","display_name":"Root"}}"#
    );
    let created = send_json(addr, "POST", "/auth/api/bootstrap", &body, &[ORIGIN]);
    assert!(created.status < 300, "{}", created.body);
    let login = password_step(addr);
    assert_eq!(login.status, 200, "{}", login.body);
    let session = session_of(&login);
    assert_eq!(get(addr, "/app/home", &[&session]).status, 200);
    for path in ["/admin/users", "/billing/cards"] {
        let refused = get(addr, path, &[&session]);
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert!(
            refused.body.contains("second_factor_enrolment_required"),
            "{}",
            refused.body
        );
    }
    // Enrolling proves the factor for this session too.
    confirm_totp(addr, &session);
    assert_eq!(get(addr, "/admin/users", &[&session]).status, 200);
    assert_eq!(get(addr, "/billing/cards", &[&session]).status, 200);
}

/// "Remember this device": a browser that passed the second factor with it skips the second
/// step for 30 days, in that browser only; remembered browsers are listed and forgotten one by
/// one, and all of them on a password change.
#[test]
fn remembered_browsers_skip_the_second_step_until_the_password_changes() {
    const FIREFOX: &str =
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
    const CHROME: &str = "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let Enrolled {
        _upstream,
        gateway,
        secret,
        backup,
        ..
    } = enrolled();
    let addr = gateway.addr;
    let backup = backup[0].clone();

    let login = |password: &str, headers: &[&str]| {
        let body = format!(r#"{{"email":"{EMAIL}","password":"{password}"}}"#);
        let mut all = vec![ORIGIN];
        all.extend_from_slice(headers);
        send_json(addr, "POST", "/auth/api/login", &body, &all)
    };
    // `proof`: `"code":"..."` or `"backup_code":"..."`.
    let remember = |proof: &str| {
        let reply = login(PASSWORD, &[FIREFOX]);
        assert_eq!(reply.status, 403, "{}", reply.body);
        let challenge = json(&reply)["error"]["challenge"]
            .as_str()
            .expect("challenge")
            .to_owned();
        let body = format!(r#"{{"challenge":"{challenge}",{proof},"remember_device":true}}"#);
        let reply = send_json(
            addr,
            "POST",
            "/auth/api/login/second-factor",
            &body,
            &[ORIGIN, FIREFOX],
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let cookie = reply
            .headers
            .iter()
            .find_map(|(name, value)| {
                let value = value.strip_prefix("__Host-portcullis_trusted=")?;
                name.eq_ignore_ascii_case("set-cookie")
                    .then(|| value.split(';').next().unwrap_or("").to_owned())
            })
            .expect("a trusted-device cookie");
        (
            format!("Cookie: __Host-portcullis_trusted={cookie}"),
            session_of(&reply),
        )
    };
    let (trusted, session) = remember(&format!(r#""code":"{}""#, code(&secret, 30)));
    // The remembered browser logs in with its password alone; another browser family, or
    // another browser without the cookie, still gets the second step.
    let again = login(PASSWORD, &[FIREFOX, &trusted]);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(login(PASSWORD, &[CHROME, &trusted]).status, 403);
    assert_eq!(login(PASSWORD, &[FIREFOX]).status, 403);

    // Listed beside the sessions, and forgotten one by one.
    let devices = get(addr, "/auth/api/devices", &[&session]);
    assert_eq!(devices.status, 200, "{}", devices.body);
    let listed = json(&devices)["devices"]
        .as_array()
        .expect("devices")
        .clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0]["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("Firefox"))
    );
    let id = listed[0]["id"].as_str().expect("id");
    let forgotten = send_json(
        addr,
        "DELETE",
        &format!("/auth/api/devices/{id}"),
        "",
        &[ORIGIN, &session],
    );
    assert_eq!(forgotten.status, 204, "{}", forgotten.body);
    assert_eq!(login(PASSWORD, &[FIREFOX, &trusted]).status, 403);

    // A password change forgets every remembered browser.
    // The TOTP steps around now are used up: a backup code this time.
    let (trusted, session) = remember(&format!(r#""backup_code":"{backup}""#));
    assert_eq!(login(PASSWORD, &[FIREFOX, &trusted]).status, 200);
    let new_password = "quietly orbiting velvet tractors";
    let change = send_json(
        addr,
        "POST",
        "/auth/api/password",
        &format!(r#"{{"current_password":"{PASSWORD}","new_password":"{new_password}"}}"#),
        &[ORIGIN, &session],
    );
    assert!(change.status < 300, "{}", change.body);
    assert_eq!(login(new_password, &[FIREFOX, &trusted]).status, 403);
}

/// The security page: set up an authenticator app from its QR code, see the backup codes once,
/// create an API key (shown once) and revoke it; plain forms, no script.
#[test]
fn the_security_page_sets_up_totp_and_makes_api_keys() {
    let (_upstream, gateway) = open_gateway();
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send_json(addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    let session = session_of(&password_step(addr));
    let away = get(addr, "/auth/security", &["Accept: text/html"]);
    assert_eq!(away.status, 302, "no session: to the login page");

    let page = get(addr, "/auth/security", &["Accept: text/html", &session]);
    assert_eq!(page.status, 200, "{}", page.body);
    // One script (adding a passkey needs WebAuthn), allowed by its nonce and nothing else.
    let csp = page
        .header("content-security-policy")
        .expect("the page's policy");
    let nonce = page
        .body
        .split("<script nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a nonce on the script");
    assert_eq!(page.body.matches("<script").count(), 1, "{}", page.body);
    assert!(
        csp.contains(&format!("script-src 'nonce-{nonce}'")),
        "{csp}"
    );
    assert!(
        page.body.contains("Set up an authenticator app"),
        "{}",
        page.body
    );
    let csrf = hidden(&page.body, "csrf");
    let cookies = format!(
        "{session}; __Host-portcullis_csrf={csrf}",
        session = session.trim_start_matches("Cookie: ")
    );
    let post = |action: &str, fields: &str| {
        let form = format!("csrf={csrf}&{fields}");
        let head = format!(
            "POST /auth/security/{action} HTTP/1.1\r\nHost: app.test\r\nOrigin: http://app.test\r\n\
             Accept: text/html\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nCookie: {cookies}",
            form.len()
        );
        crate::support::raw(addr, &head, form.as_bytes())
    };
    let setup = post("totp", "");
    assert_eq!(setup.status, 200, "{}", setup.body);
    assert!(
        setup.body.contains("<svg"),
        "an inline QR code: {}",
        setup.body
    );
    let secret = setup
        .body
        .split("Key: <code>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the key in clear for typing")
        .to_owned();
    assert_eq!(post("totp/confirm", "code=000000").status, 401);
    let codes = post("totp/confirm", &format!("code={}", code(&secret, 0)));
    assert_eq!(codes.status, 200, "{}", codes.body);
    assert_eq!(
        codes.body.matches("<li><code>").count(),
        10,
        "{}",
        codes.body
    );

    // The enrolment was the session's second factor: an API key may be made at once.
    let made = post("keys", "name=deploy+bot&scopes=");
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(made.body.contains("<code>pc_"), "{}", made.body);
    let page = get(addr, "/auth/security", &["Accept: text/html", &session]);
    assert!(page.body.contains("deploy bot"), "{}", page.body);
    assert!(page.body.contains("Backup codes left: 10"), "{}", page.body);
    let id = page
        .body
        .split("name=\"id\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the key's id in its revoke form")
        .to_owned();
    let revoked = post("keys/revoke", &format!("id={id}"));
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    let page = get(addr, "/auth/security", &["Accept: text/html", &session]);
    assert!(!page.body.contains("deploy bot"), "{}", page.body);
}

/// The six digits after `lead` in a mailed message, other than the codes in `known` (the sink
/// lists messages in no particular order).
fn mailed_code(smtp: &crate::support::SmtpSink, lead: &str, known: &[&str]) -> String {
    let started = std::time::Instant::now();
    loop {
        let fresh = smtp
            .messages()
            .iter()
            .filter_map(|m| {
                m.split(lead)
                    .nth(1)
                    .map(|rest| rest.chars().take(6).collect())
            })
            .find(|code: &String| !known.contains(&code.as_str()));
        if let Some(code) = fresh {
            return code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no code mailed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// E-mailed codes as the second factor (for users without an authenticator app): turned on
/// with a mailed code, then each login mails a code that works once.
#[test]
fn emailed_codes_serve_as_the_second_factor_once_each() {
    let Some(smtp) = crate::support::SmtpSink::start() else {
        return;
    };
    let (_upstream, gateway) = session_app(&smtp.config(), "registration = \"open\"\n");
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send_json(addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    let session = session_of(&password_step(addr));
    let lead = "Your sign-in code is ";
    let sent = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/email",
        "",
        &[ORIGIN, &session],
    );
    assert_eq!(sent.status, 202, "{}", sent.body);
    let enrol = mailed_code(&smtp, lead, &[]);
    let confirm = send_json(
        addr,
        "POST",
        "/auth/api/second-factor/email/confirm",
        &format!(r#"{{"code":"{enrol}"}}"#),
        &[ORIGIN, &session],
    );
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert_eq!(
        json(&confirm)["backup_codes"].as_array().map(Vec::len),
        Some(10)
    );

    // The password step mails a code and says so.
    let step = password_step(addr);
    assert_eq!(step.status, 403, "{}", step.body);
    let step = json(&step);
    assert!(
        step["error"]["methods"].to_string().contains("email_code"),
        "{step}"
    );
    let challenge = step["error"]["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned();
    let code = mailed_code(&smtp, lead, &[&enrol]);
    let second = |challenge: &str, code: &str| {
        let body = format!(r#"{{"challenge":"{challenge}","email_code":"{code}"}}"#);
        send_json(
            addr,
            "POST",
            "/auth/api/login/second-factor",
            &body,
            &[ORIGIN],
        )
    };
    let wrong = if code == "000000" { "000001" } else { "000000" };
    assert_eq!(second(&challenge, wrong).status, 401);
    let done = second(&challenge, &code);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(get(addr, "/app/home", &[&session_of(&done)]).status, 200);
    // The code worked once.
    let again = json(&password_step(addr));
    let challenge = again["error"]["challenge"].as_str().expect("challenge");
    assert_eq!(second(challenge, &code).status, 401);
}

/// Changing the e-mail address: without a second factor it takes the current password; the
/// new address is unverified, logins use it, and an address another account has is refused.
#[test]
fn changing_the_email_address_needs_the_password_without_a_second_factor() {
    let (_upstream, gateway) = open_gateway();
    let addr = gateway.addr;
    for email in [EMAIL, "taken@example.com"] {
        let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
        let registered = send_json(addr, "POST", "/auth/api/register", &body, &[ORIGIN]);
        assert_eq!(registered.status, 202, "{}", registered.body);
    }
    let session = session_of(&password_step(addr));
    let change = |body: &str| send_json(addr, "POST", "/auth/api/email", body, &[ORIGIN, &session]);
    assert_eq!(change(r#"{"email":"new@example.com"}"#).status, 403);
    assert_eq!(
        change(r#"{"email":"new@example.com","current_password":"not it at all"}"#).status,
        403
    );
    let taken = change(&format!(
        r#"{{"email":"taken@example.com","current_password":"{PASSWORD}"}}"#
    ));
    assert_eq!(taken.status, 409, "{}", taken.body);
    let changed = change(&format!(
        r#"{{"email":"New@Example.com","current_password":"{PASSWORD}"}}"#
    ));
    assert_eq!(changed.status, 200, "{}", changed.body);
    let user = &json(&changed)["user"];
    assert_eq!(user["email"], "new@example.com");
    assert_eq!(user["email_verified"], false);
    let login = |email: &str| {
        let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
        send_json(addr, "POST", "/auth/api/login", &body, &[ORIGIN]).status
    };
    assert_eq!(login("new@example.com"), 200);
    assert_eq!(login(EMAIL), 401);
}
