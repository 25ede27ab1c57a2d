//! Mail through a real SMTP sink: the verification flow end to end, password reset, the notice
//! to an owner whose address is registered again, and the unlock link that lets a fresh
//! browser log in to an account under attack.

use std::net::SocketAddr;

use crate::support::{Gateway, Reply, SmtpSink, Upstream, get, send_json};

const PASSWORD: &str = "velvet tractor orbits quietly";
const ORIGIN: &str = "Origin: http://app.test";

fn config(upstream: &Upstream, sink: &SmtpSink, identity: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [identity]\nhash_memory_kib = 256\nhash_iterations = 1\n\
         public_url = \"https://app.test\"\n{identity}\n{mail}\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n\
         [[route]]\npath = \"/app\"\nupstream = \"{url}\"\nauth = \"session\"\n",
        mail = sink.config(),
        url = upstream.url()
    )
}

fn post(addr: SocketAddr, path: &str, body: &str, headers: &[&str]) -> Reply {
    let mut all = vec![ORIGIN];
    all.extend_from_slice(headers);
    send_json(addr, "POST", path, body, &all)
}

fn login(addr: SocketAddr, email: &str, password: &str, headers: &[&str]) -> Reply {
    post(
        addr,
        "/auth/api/login",
        &format!(r#"{{"email":"{email}","password":"{password}"}}"#),
        headers,
    )
}

fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .map(str::to_owned)
}

#[test]
fn register_verify_by_mail_log_in_reach_the_upstream_log_out() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(
        &config(&upstream, &sink, "require_verified_email = true\n"),
        &[],
    );
    verification_flow(&gateway, &sink);
}

#[tokio::test]
async fn the_verification_flow_on_postgres() {
    let Some(url) = crate::support::postgres_database("mail").await else {
        return;
    };
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let env = [("PORTCULLIS_STORAGE__URL", url.as_str())];
    let (status, out) = crate::support::run(&["migrate"], &env);
    assert!(status.success(), "{out}");
    let upstream = Upstream::start("app");
    let identity = "require_verified_email = true\n";
    let gateway = Gateway::start(&config(&upstream, &sink, identity), &env);
    verification_flow(&gateway, &sink);
}

fn verification_flow(gateway: &Gateway, sink: &SmtpSink) {
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"nina@example.com","password":"{PASSWORD}"}}"#);
    assert_eq!(post(addr, "/auth/api/register", &body, &[]).status, 202);

    // Unverified: the right password gets a clear answer, and no session.
    let reply = login(addr, "nina@example.com", PASSWORD, &[]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("email_unverified"), "{}", reply.body);
    assert!(set_cookie(&reply, "__Host-portcullis_session").is_none());

    let mail = sink.wait_for("nina@example.com", "verify?token=");
    assert!(
        mail.contains("https://app.test/auth/verify?token="),
        "{mail}"
    );
    let token = SmtpSink::token(&mail, "verify");
    let reply = post(
        addr,
        "/auth/api/verify",
        &format!(r#"{{"token":"{token}"}}"#),
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("\"email_verified\":true"),
        "{}",
        reply.body
    );
    // Single use.
    let again = post(
        addr,
        "/auth/api/verify",
        &format!(r#"{{"token":"{token}"}}"#),
        &[],
    );
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.body.contains("invalid_token"), "{}", again.body);

    let reply = login(addr, "nina@example.com", PASSWORD, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session = set_cookie(&reply, "__Host-portcullis_session").expect("session");
    let cookie = format!("Cookie: __Host-portcullis_session={session}");
    let reply = get(addr, "/app/report", &[&cookie]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("email=nina@example.com "),
        "{}",
        reply.body
    );
    assert_eq!(post(addr, "/auth/api/logout", "", &[&cookie]).status, 204);
    assert_eq!(get(addr, "/app/report", &[&cookie]).status, 401);
}

#[test]
fn password_reset_by_mail_ends_every_session() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(
        &config(&upstream, &sink, "require_verified_email = false\n"),
        &[],
    );
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"omar@example.com","password":"{PASSWORD}"}}"#);
    assert_eq!(post(addr, "/auth/api/register", &body, &[]).status, 202);
    let session = set_cookie(
        &login(addr, "omar@example.com", PASSWORD, &[]),
        "__Host-portcullis_session",
    )
    .expect("session");

    // Known and unknown addresses get the same answer; only the known one gets mail.
    let known = post(
        addr,
        "/auth/api/reset/request",
        r#"{"email":"omar@example.com"}"#,
        &[],
    );
    let unknown = post(
        addr,
        "/auth/api/reset/request",
        r#"{"email":"nobody@example.com"}"#,
        &[],
    );
    assert_eq!((known.status, unknown.status), (202, 202));
    assert_eq!(known.body, unknown.body);
    let mail = sink.wait_for("omar@example.com", "reset?token=");
    let token = SmtpSink::token(&mail, "reset");

    // The policy applies to the new password; a refused one leaves the link usable.
    let weak = post(
        addr,
        "/auth/api/reset",
        &format!(r#"{{"token":"{token}","password":"password"}}"#),
        &[],
    );
    assert_eq!(weak.status, 400, "{}", weak.body);
    let new_password = "copper lantern drifts eastward";
    let reply = post(
        addr,
        "/auth/api/reset",
        &format!(r#"{{"token":"{token}","password":"{new_password}"}}"#),
        &[],
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(
        get(
            addr,
            "/app/x",
            &[&format!("Cookie: __Host-portcullis_session={session}")]
        )
        .status,
        401
    );
    assert_eq!(login(addr, "omar@example.com", PASSWORD, &[]).status, 401);
    assert_eq!(
        login(addr, "omar@example.com", new_password, &[]).status,
        200
    );
    let reuse = post(
        addr,
        "/auth/api/reset",
        &format!(r#"{{"token":"{token}","password":"another long passphrase"}}"#),
        &[],
    );
    assert_eq!(reuse.status, 400, "{}", reuse.body);
    assert!(
        !sink
            .messages()
            .iter()
            .any(|m| m.contains("nobody@example.com"))
    );
}

#[test]
fn registering_a_taken_address_tells_its_owner() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, &sink, ""), &[]);
    let body = format!(r#"{{"email":"pia@example.com","password":"{PASSWORD}"}}"#);
    let first = post(gateway.addr, "/auth/api/register", &body, &[]);
    let second = post(gateway.addr, "/auth/api/register", &body, &[]);
    assert_eq!(first.body, second.body);
    sink.wait_for("pia@example.com", "already has one");
}

#[test]
fn an_unlock_link_lets_a_fresh_browser_into_an_account_under_attack() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let upstream = Upstream::start("app");
    let identity = "require_verified_email = false\nlogin_account_free_attempts = 5\n";
    let gateway = Gateway::start(&config(&upstream, &sink, identity), &[]);
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"quinn@example.com","password":"{PASSWORD}"}}"#);
    assert_eq!(post(addr, "/auth/api/register", &body, &[]).status, 202);
    for n in 1..=10 {
        let from = format!("X-Forwarded-For: 203.0.113.{n}");
        login(addr, "quinn@example.com", "a wrong guess here", &[&from]);
    }
    let home = "X-Forwarded-For: 198.51.100.7";
    let reply = login(addr, "quinn@example.com", PASSWORD, &[home]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("proof_required"), "{}", reply.body);

    let mail = sink.wait_for("quinn@example.com", "unlock?token=");
    let token = SmtpSink::token(&mail, "unlock");
    let reply = post(
        addr,
        "/auth/api/unlock",
        &format!(r#"{{"token":"{token}"}}"#),
        &[home],
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    let device = set_cookie(&reply, "__Host-portcullis_device").expect("device cookie");
    let cookie = format!("Cookie: __Host-portcullis_device={device}");
    let reply = login(addr, "quinn@example.com", PASSWORD, &[home, &cookie]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The attackers still need the proof.
    let reply = login(
        addr,
        "quinn@example.com",
        PASSWORD,
        &["X-Forwarded-For: 203.0.113.99"],
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
}

/// The mailed links open pages; opening one changes nothing (mail scanners follow links), the
/// page's button does, with the synchronizer token.
#[test]
fn mailed_links_open_pages_that_act_only_when_submitted() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(
        &config(&upstream, &sink, "require_verified_email = true\n"),
        &[],
    );
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"rhea@example.com","password":"{PASSWORD}"}}"#);
    assert_eq!(post(addr, "/auth/api/register", &body, &[]).status, 202);
    let token = SmtpSink::token(
        &sink.wait_for("rhea@example.com", "verify?token="),
        "verify",
    );

    let submit = |path: &str, token: &str, password: &str| {
        crate::support::submit_page_form(
            addr,
            &format!("/auth/{path}?token={token}"),
            &format!("/auth/{path}"),
            &[("token", token), ("password", password)],
        )
    };

    // Opening the page verified nothing yet.
    let page = get(
        addr,
        &format!("/auth/verify?token={token}"),
        &["Accept: text/html"],
    );
    assert_eq!(page.status, 200);
    assert_eq!(login(addr, "rhea@example.com", PASSWORD, &[]).status, 403);
    let done = submit("verify", &token, "");
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("is verified"), "{}", done.body);
    assert_eq!(login(addr, "rhea@example.com", PASSWORD, &[]).status, 200);

    let reset = post(
        addr,
        "/auth/api/reset/request",
        r#"{"email":"rhea@example.com"}"#,
        &[],
    );
    assert_eq!(reset.status, 202);
    let token = SmtpSink::token(&sink.wait_for("rhea@example.com", "reset?token="), "reset");
    let weak = submit("reset", &token, "password");
    assert_eq!(weak.status, 400, "{}", weak.body);
    assert!(weak.body.contains("commonly used"), "{}", weak.body);
    let new_password = "amber kettle hums at dawn";
    let done = submit("reset", &token, new_password);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        login(addr, "rhea@example.com", new_password, &[]).status,
        200
    );
    let reused = submit("reset", &token, "yet another long passphrase");
    assert_eq!(reused.status, 400, "{}", reused.body);
    assert!(
        reused.body.contains("invalid or has expired"),
        "{}",
        reused.body
    );
}

/// `registration = "invite"`: nobody registers alone; an operator invites, the invitation is
/// mailed, its link lets the invitee choose a password (once), and the address is verified.
#[test]
fn an_invitation_lets_its_invitee_choose_a_password_once() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let upstream = Upstream::start("app");
    let file = config(
        &upstream,
        &sink,
        "registration = \"invite\"\nrequire_verified_email = true\n",
    );
    let gateway = Gateway::start(&file, &[]);
    let addr = gateway.addr;
    let body = format!(r#"{{"email":"ines@example.com","password":"{PASSWORD}"}}"#);
    let closed = post(addr, "/auth/api/register", &body, &[]);
    assert_eq!(closed.status, 403, "{}", closed.body);

    let data = gateway.dir.0.join("data");
    let config_file = gateway.dir.0.join("portcullis.toml");
    let (status, out) = crate::support::run(
        &[
            "user",
            "-c",
            config_file.to_str().expect("utf8"),
            "--data-dir",
            data.to_str().expect("utf8"),
            "invite",
            "ines@example.com",
            "--role",
            "editor",
        ],
        &[],
    );
    assert!(status.success(), "{out}");
    let printed = out
        .split("invitation link (72 hours, once): ")
        .nth(1)
        .expect("the link is printed")
        .trim();
    assert!(
        printed.starts_with("https://app.test/auth/reset?token="),
        "{printed}"
    );
    let mail = sink.wait_for("ines@example.com", "reset?token=");
    assert!(mail.contains("72 hours"), "{mail}");
    let token = SmtpSink::token(&mail, "reset");
    assert!(
        printed.ends_with(&token),
        "the printed and the mailed link are one"
    );

    // No password yet: no login.
    assert_eq!(login(addr, "ines@example.com", PASSWORD, &[]).status, 401);
    let chosen = post(
        addr,
        "/auth/api/reset",
        &format!(r#"{{"token":"{token}","password":"{PASSWORD}"}}"#),
        &[],
    );
    assert_eq!(chosen.status, 204, "{}", chosen.body);
    // Verified by the link, so the login passes require_verified_email.
    let logged_in = login(addr, "ines@example.com", PASSWORD, &[]);
    assert_eq!(logged_in.status, 200, "{}", logged_in.body);
    assert!(logged_in.body.contains("\"editor\""), "{}", logged_in.body);
    let again = post(
        addr,
        "/auth/api/reset",
        &format!(r#"{{"token":"{token}","password":"another long passphrase here"}}"#),
        &[],
    );
    assert_eq!(again.status, 400, "{}", again.body);
}
