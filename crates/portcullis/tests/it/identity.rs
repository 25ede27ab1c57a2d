//! Identity through the running binary: registration, login, sessions, identity headers to the
//! upstream, CSRF, roles, the `user` commands and password import, on SQLite and PostgreSQL.

use std::net::SocketAddr;

use crate::support::{Gateway, Reply, TempDir, Upstream, get, raw, run, send_json, sqlite_url};

/// Cheap Argon2id for tests that are not about hashing.
const CHEAP_HASH: &str = "hash_memory_kib = 256\nhash_iterations = 1\n";
const PASSWORD: &str = "velvet tractor orbits quietly";
const SAME_ORIGIN: &str = "Origin: http://app.test";

fn config(upstream: &Upstream, identity: &str) -> String {
    format!(
        "[identity]\n{CHEAP_HASH}{identity}\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n\
         [[route]]\npath = \"/app\"\nupstream = \"{url}\"\nauth = \"session\"\n\
         [[route]]\npath = \"/admin\"\nupstream = \"{url}\"\nauth = \"session\"\nroles = [\"admin\"]\n",
        url = upstream.url()
    )
}

fn register(addr: SocketAddr, email: &str, password: &str) -> Reply {
    let body =
        format!(r#"{{"email":"{email}","password":"{password}","display_name":"Test User"}}"#);
    send_json(addr, "POST", "/auth/api/register", &body, &[SAME_ORIGIN])
}

fn login(addr: SocketAddr, email: &str, password: &str, headers: &[&str]) -> Reply {
    let body = format!(r#"{{"email":"{email}","password":"{password}"}}"#);
    let mut all = vec![SAME_ORIGIN];
    all.extend_from_slice(headers);
    send_json(addr, "POST", "/auth/api/login", &body, &all)
}

/// The session token a reply sets.
fn session_token(reply: &Reply) -> String {
    let cookie = reply
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {reply:?}"));
    let value = cookie
        .strip_prefix("__Host-portcullis_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not the session cookie: {cookie}"));
    value.to_owned()
}

fn cookie(token: &str) -> String {
    format!("Cookie: __Host-portcullis_session={token}")
}

fn login_token(addr: SocketAddr, email: &str) -> String {
    let reply = login(addr, email, PASSWORD, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    session_token(&reply)
}

/// Register, log in, reach a protected upstream route with identity headers, log out, 401.
fn session_round_trip(gateway: &Gateway) {
    let addr = gateway.addr;
    let reply = register(addr, "Alice@Example.com", PASSWORD);
    assert_eq!(reply.status, 202, "{}", reply.body);

    // Not logged in: the protected route answers 401 with the common error body.
    let reply = get(addr, "/app/data", &[]);
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply.body.contains("\"code\":\"unauthenticated\""),
        "{}",
        reply.body
    );

    let reply = login(addr, "alice@example.com", PASSWORD, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let set_cookie = reply.header("set-cookie").unwrap_or_default().to_owned();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age="] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert!(
        reply.body.contains("\"email\":\"alice@example.com\""),
        "{}",
        reply.body
    );
    let token = session_token(&reply);
    assert_eq!(token.len(), 43, "256-bit token, base64url");

    let me = get(addr, "/auth/api/me", &[&cookie(&token)]);
    assert_eq!(me.status, 200, "{}", me.body);
    let id = serde_json::from_str::<serde_json::Value>(&me.body).expect("json")["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // The upstream gets the identity, and never the session cookie; other cookies pass.
    let reply = get(
        addr,
        "/app/data",
        &[&format!("{}; theme=dark", cookie(&token))],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains(&format!("user={id} ")),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("email=alice@example.com "),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("roles=user "), "{}", reply.body);
    assert!(reply.body.contains("auth=session "), "{}", reply.body);
    assert!(reply.body.contains("cookie=theme=dark "), "{}", reply.body);

    let reply = send_json(
        addr,
        "POST",
        "/auth/api/logout",
        "",
        &[SAME_ORIGIN, &cookie(&token)],
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(
        reply
            .header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let reply = get(addr, "/app/data", &[&cookie(&token)]);
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[test]
fn register_login_reach_the_upstream_and_log_out_on_sqlite() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    session_round_trip(&gateway);
}

#[tokio::test]
async fn register_login_reach_the_upstream_and_log_out_on_postgres() {
    let Some(url) = crate::support::postgres_database("identity").await else {
        return;
    };
    let (status, out) = run(&["migrate"], &[("PORTCULLIS_STORAGE__URL", &url)]);
    assert!(status.success(), "{out}");
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[("PORTCULLIS_STORAGE__URL", &url)]);
    session_round_trip(&gateway);
}

#[test]
fn forged_identity_headers_never_reach_the_upstream() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    let forged = [
        "X-Portcullis-User: admin",
        "X-Portcullis-Roles: admin",
        "X-Portcullis-Auth: session",
        "Remote-User: admin",
    ];
    // Anonymous on an open route: every forged header is gone.
    let reply = get(gateway.addr, "/open", &forged);
    assert_eq!(reply.status, 200, "{}", reply.body);
    for field in ["user=- ", "roles=- ", "auth=- ", "remote_user=- "] {
        assert!(reply.body.contains(field), "{field} in {}", reply.body);
    }
    // Authenticated: the gateway's values replace the forged ones.
    register(gateway.addr, "bob@example.com", PASSWORD);
    let token = login_token(gateway.addr, "bob@example.com");
    let mut headers = forged.to_vec();
    let session = cookie(&token);
    headers.push(&session);
    let reply = get(gateway.addr, "/app/x", &headers);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("roles=user "), "{}", reply.body);
    assert!(!reply.body.contains("user=admin"), "{}", reply.body);
    assert!(reply.body.contains("remote_user=- "), "{}", reply.body);
}

#[test]
fn authelia_header_names_on_request() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "header_style = \"authelia\"\n"), &[]);
    register(gateway.addr, "carol@example.com", PASSWORD);
    let token = login_token(gateway.addr, "carol@example.com");
    let reply = get(gateway.addr, "/app/x", &[&cookie(&token)]);
    assert!(!reply.body.contains("remote_user=- "), "{}", reply.body);
    assert!(reply.body.contains("user=- "), "{}", reply.body);
}

#[test]
fn wrong_password_and_unknown_account_get_one_answer() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    register(gateway.addr, "dave@example.com", PASSWORD);
    let wrong = login(
        gateway.addr,
        "dave@example.com",
        "not the password at all",
        &[],
    );
    let unknown = login(
        gateway.addr,
        "nobody@example.com",
        "not the password at all",
        &[],
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    let strip_id = |body: &str| body.split("\"request_id\"").next().unwrap_or("").to_owned();
    assert_eq!(strip_id(&wrong.body), strip_id(&unknown.body));
    assert!(wrong.header("set-cookie").is_none());

    // Both are recorded, with the reason kept internal.
    let out = crate::support::audit_tail(gateway);
    assert!(
        out.contains("\"login_failure\"") && out.contains("wrong_password"),
        "{out}"
    );
    assert!(out.contains("unknown_account"), "{out}");
    assert!(
        !out.contains("dave@example.com"),
        "e-mail addresses are masked in events: {out}"
    );
}

#[test]
fn registration_does_not_reveal_taken_addresses() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    let first = register(gateway.addr, "erin@example.com", PASSWORD);
    let again = register(
        gateway.addr,
        "ERIN@example.com",
        "another fine passphrase here",
    );
    assert_eq!((first.status, again.status), (202, 202));
    assert_eq!(first.body, again.body);
    // The first password still works; the second registration changed nothing.
    assert_eq!(
        login(gateway.addr, "erin@example.com", PASSWORD, &[]).status,
        200
    );
    assert_eq!(
        login(
            gateway.addr,
            "erin@example.com",
            "another fine passphrase here",
            &[]
        )
        .status,
        401
    );
}

#[test]
fn a_weak_password_gets_every_failed_rule_in_one_message() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(
        &config(
            &upstream,
            "password_min_length = 12\npassword_min_strength = 3\n",
        ),
        &[],
    );
    let reply = register(gateway.addr, "frank@example.com", "password");
    assert_eq!(reply.status, 400, "{}", reply.body);
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(body["error"]["code"], "password_policy");
    let rules: Vec<&str> = body["error"]["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert_eq!(rules, ["too_short", "common", "too_weak"]);
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("at least 12") && message.contains("commonly used"),
        "{message}"
    );
}

#[test]
fn a_session_set_before_login_is_not_kept() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    register(gateway.addr, "grace@example.com", PASSWORD);
    // A token an attacker planted, and a real session of the same browser: neither survives.
    let planted = "A".repeat(43);
    let earlier = login_token(gateway.addr, "grace@example.com");
    for before in [planted.as_str(), earlier.as_str()] {
        let reply = login(
            gateway.addr,
            "grace@example.com",
            PASSWORD,
            &[&cookie(before)],
        );
        let after = session_token(&reply);
        assert_ne!(after, before);
        assert_eq!(get(gateway.addr, "/app/x", &[&cookie(before)]).status, 401);
        assert_eq!(get(gateway.addr, "/app/x", &[&cookie(&after)]).status, 200);
    }
}

#[test]
fn the_session_limit_evicts_the_oldest_and_revocation_is_immediate() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "max_sessions = 2\n"), &[]);
    register(gateway.addr, "heidi@example.com", PASSWORD);
    let first = login_token(gateway.addr, "heidi@example.com");
    let second = login_token(gateway.addr, "heidi@example.com");
    let third = login_token(gateway.addr, "heidi@example.com");
    assert_eq!(
        get(gateway.addr, "/app/x", &[&cookie(&first)]).status,
        401,
        "oldest evicted"
    );
    assert_eq!(get(gateway.addr, "/app/x", &[&cookie(&second)]).status, 200);

    // The third session lists both and revokes the second; its next request fails.
    let list = get(gateway.addr, "/auth/api/sessions", &[&cookie(&third)]);
    let sessions: serde_json::Value = serde_json::from_str(&list.body).expect("json");
    let sessions = sessions["sessions"].as_array().expect("list").clone();
    assert_eq!(sessions.len(), 2, "{}", list.body);
    let other = sessions
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["id"].as_str())
        .expect("the other session")
        .to_owned();
    let reply = raw(
        gateway.addr,
        &format!(
            "DELETE /auth/api/sessions/{other} HTTP/1.1\r\nHost: app.test\r\n{SAME_ORIGIN}\r\n{}",
            cookie(&third)
        ),
        b"",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(get(gateway.addr, "/app/x", &[&cookie(&second)]).status, 401);
    assert_eq!(get(gateway.addr, "/app/x", &[&cookie(&third)]).status, 200);
}

#[test]
fn cross_origin_unsafe_requests_with_a_session_are_refused() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    register(gateway.addr, "ivan@example.com", PASSWORD);
    let token = login_token(gateway.addr, "ivan@example.com");
    let session = cookie(&token);
    let evil = send_json(
        gateway.addr,
        "POST",
        "/app/transfer",
        "{}",
        &["Origin: https://evil.example", &session],
    );
    assert_eq!(evil.status, 403, "{}", evil.body);
    assert!(evil.body.contains("csrf_rejected"), "{}", evil.body);
    let fetch = send_json(
        gateway.addr,
        "POST",
        "/app/transfer",
        "{}",
        &["Sec-Fetch-Site: cross-site", &session],
    );
    assert_eq!(fetch.status, 403, "{}", fetch.body);
    let own = send_json(
        gateway.addr,
        "POST",
        "/app/transfer",
        "{}",
        &[SAME_ORIGIN, &session],
    );
    assert_eq!(own.status, 200, "{}", own.body);
    // Login CSRF: the login endpoint itself refuses other origins.
    let body = format!(r#"{{"email":"ivan@example.com","password":"{PASSWORD}"}}"#);
    let forced = send_json(
        gateway.addr,
        "POST",
        "/auth/api/login",
        &body,
        &["Origin: https://evil.example"],
    );
    assert_eq!(forced.status, 403, "{}", forced.body);
}

#[test]
fn routes_require_their_roles_and_role_changes_end_sessions() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    register(gateway.addr, "judy@example.com", PASSWORD);
    let token = login_token(gateway.addr, "judy@example.com");
    let reply = get(gateway.addr, "/admin/panel", &[&cookie(&token)]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.body.contains("\"code\":\"forbidden\""),
        "{}",
        reply.body
    );

    let data = gateway.dir.0.join("data");
    let data = data.to_str().expect("path");
    let (status, out) = run(
        &[
            "user",
            "--data-dir",
            data,
            "set-role",
            "judy@example.com",
            "admin",
            "user",
        ],
        &[],
    );
    assert!(status.success(), "{out}");
    // Made by another process: this gateway's copy of the session lasts up to a second.
    let took = refused_within_a_second(gateway.addr, "/admin/panel", &cookie(&token));
    eprintln!("privilege change by the CLI ended the session after {took:?}");
    let token = login_token(gateway.addr, "judy@example.com");
    let reply = get(gateway.addr, "/admin/panel", &[&cookie(&token)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("roles=admin,user "), "{}", reply.body);
}

#[test]
fn user_commands_manage_accounts() {
    let dir = TempDir::new("users");
    let data = dir.0.join("data");
    let data = data.to_str().expect("path");
    let env = [
        ("PORTCULLIS_IDENTITY__HASH_MEMORY_KIB", "256"),
        ("PORTCULLIS_IDENTITY__HASH_ITERATIONS", "1"),
    ];
    let (status, out) = run(
        &[
            "user",
            "--data-dir",
            data,
            "add",
            "Kim@Example.com",
            "--name",
            "Kim",
            "--role",
            "admin",
        ],
        &env,
    );
    assert!(status.success(), "{out}");
    let (status, out) = run(
        &["user", "--data-dir", data, "add", "kim@example.com"],
        &env,
    );
    assert!(!status.success(), "a second account for one address: {out}");
    assert!(out.contains("exists"), "{out}");
    let (status, out) = run(&["user", "--data-dir", data, "list"], &env);
    assert!(
        status.success() && out.contains("kim@example.com") && out.contains("admin"),
        "{out}"
    );
    for (command, expected) in [
        ("lock", "locked"),
        ("unlock", "active"),
        ("disable", "disabled"),
    ] {
        let (status, out) = run(
            &["user", "--data-dir", data, command, "kim@example.com"],
            &env,
        );
        assert!(status.success(), "{out}");
        let (_, shown) = run(
            &[
                "user",
                "--data-dir",
                data,
                "show",
                "kim@example.com",
                "--json",
            ],
            &env,
        );
        let shown: serde_json::Value = serde_json::from_str(shown.trim()).expect("json");
        assert_eq!(shown["status"], expected);
    }
    let (status, out) = run(
        &[
            "user",
            "--data-dir",
            data,
            "set-role",
            "kim@example.com",
            "bad role",
        ],
        &env,
    );
    assert!(!status.success(), "{out}");
}

/// The stored hash of `email` in a SQLite data dir.
async fn stored_hash(data: &std::path::Path, email: &str) -> String {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&sqlite_url(data))
        .await
        .expect("open store");
    let row = sqlx::query("SELECT password_hash FROM accounts WHERE email = $1")
        .bind(email)
        .fetch_one(&mut conn)
        .await
        .expect("account");
    sqlx::Row::try_get::<String, _>(&row, 0).expect("hash")
}

#[tokio::test]
async fn hashes_use_owasp_parameters_and_imported_bcrypt_is_rehashed_at_login() {
    let upstream = Upstream::start("app");
    // Default (OWASP) parameters: this test is about hashing.
    let config = format!(
        "[identity]\n[[route]]\npath = \"/\"\nupstream = \"{}\"\n",
        upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    register(gateway.addr, "liam@example.com", PASSWORD);
    let data = gateway.dir.0.join("data");
    let hash = stored_hash(&data, "liam@example.com").await;
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );

    // An export of another backend: `bcrypt.hashpw(b"hunter2", bcrypt.gensalt(4))` from
    // Python's bcrypt, imported by the CLI.
    let bcrypt_hash = "$2b$04$IkzalL65wh.rWQRKk0phN.XSrtsY/x0VOVCbE4HAkC/Xs0uAAB.Hi";
    let export = gateway.dir.write(
        "export.csv",
        &format!(
            "email,password_hash,display_name,roles\nmia@example.com,{bcrypt_hash},Mia,user\n"
        ),
    );
    let (status, out) = run(
        &[
            "user",
            "--data-dir",
            data.to_str().expect("path"),
            "import",
            export.to_str().expect("path"),
        ],
        &[],
    );
    assert!(status.success(), "{out}");
    assert!(out.contains("imported 1"), "{out}");
    assert_eq!(stored_hash(&data, "mia@example.com").await, bcrypt_hash);
    let reply = login(gateway.addr, "mia@example.com", "hunter2", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rehashed = stored_hash(&data, "mia@example.com").await;
    assert!(
        rehashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{rehashed}"
    );
    assert_eq!(
        login(gateway.addr, "mia@example.com", "hunter2", &[]).status,
        200
    );
}

#[test]
fn hostile_imports_are_refused() {
    let dir = TempDir::new("import");
    let data = dir.0.join("data");
    let export = dir.write(
        "export.json",
        r#"[{"email":"x@example.com","password_hash":"$argon2id$v=19$m=4194304,t=3,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"},
            {"email":"y@example.com","password_hash":"md5$abc"}]"#,
    );
    let (status, out) = run(
        &[
            "user",
            "--data-dir",
            data.to_str().expect("path"),
            "import",
            export.to_str().expect("path"),
        ],
        &[],
    );
    assert!(!status.success(), "{out}");
    assert!(out.contains("imported 0 accounts, skipped 2"), "{out}");
    assert!(
        out.contains("row 1") && out.contains("import bounds"),
        "{out}"
    );
}

/// Enumeration by timing: over 200 attempts each, the median time of a login to an unknown
/// account and of a wrong password for a known one differ by less than 10%. Real (OWASP)
/// hashing, since the dummy check is what makes them equal; throttling is raised out of the way,
/// since this is about the check itself.
#[test]
fn unknown_accounts_take_as_long_as_wrong_passwords() {
    let upstream = Upstream::start("app");
    let config = format!(
        "[identity]\nlogin_free_attempts = 10000\nlogin_ip_free_attempts = 10000\nlogin_account_free_attempts = 10000\n\
         [[route]]\npath = \"/\"\nupstream = \"{}\"\n",
        upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    register(gateway.addr, "known@example.com", PASSWORD);
    let time = |email: &str| {
        let started = std::time::Instant::now();
        let reply = login(gateway.addr, email, "a wrong password entirely", &[]);
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 401, "{}", reply.body);
        elapsed
    };
    // Warm up both paths (connection setup, first hashes).
    for _ in 0..5 {
        time("known@example.com");
        time("nobody-warm@example.com");
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for n in 0..200 {
        known.push(time("known@example.com"));
        unknown.push(time(&format!("nobody{n}@example.com")));
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[100].as_secs_f64(), unknown[100].as_secs_f64());
    let difference = (known - unknown).abs() / known.max(unknown);
    eprintln!(
        "median login: known {:.2} ms, unknown {:.2} ms, difference {:.1}%",
        known * 1e3,
        unknown * 1e3,
        difference * 100.0
    );
    assert!(
        difference < 0.10,
        "known {known:.4}s vs unknown {unknown:.4}s"
    );
}

#[test]
fn the_first_admin_comes_from_the_one_time_bootstrap_link() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    let token = gateway
        .bootstrap
        .clone()
        .expect("serve prints a bootstrap link with no admin");
    let body = |token: &str, email: &str, password: &str| {
        format!(r#"{{"token":"{token}","email":"{email}","password":"{password}"}}"#)
    };
    let wrong = send_json(
        gateway.addr,
        "POST",
        "/auth/api/bootstrap",
        &body("x", "root@example.com", PASSWORD),
        &[SAME_ORIGIN],
    );
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    // A password the policy refuses leaves the link usable.
    let weak = send_json(
        gateway.addr,
        "POST",
        "/auth/api/bootstrap",
        &body(&token, "root@example.com", "password"),
        &[SAME_ORIGIN],
    );
    assert_eq!(weak.status, 400, "{}", weak.body);
    let created = send_json(
        gateway.addr,
        "POST",
        "/auth/api/bootstrap",
        &body(&token, "root@example.com", PASSWORD),
        &[SAME_ORIGIN],
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body.contains("\"admin\""), "{}", created.body);
    let again = send_json(
        gateway.addr,
        "POST",
        "/auth/api/bootstrap",
        &body(&token, "root2@example.com", PASSWORD),
        &[SAME_ORIGIN],
    );
    assert_eq!(again.status, 403, "one time only: {}", again.body);
    let admin = login_token(gateway.addr, "root@example.com");
    assert_eq!(
        get(gateway.addr, "/admin/x", &[&cookie(&admin)]).status,
        200
    );

    // Once an admin exists, a restart prints no link.
    let dir = gateway.stop();
    let data = dir.0.join("data");
    let restarted = Gateway::start(
        &config(&upstream, ""),
        &[("PORTCULLIS_STORAGE__URL", &sqlite_url(&data))],
    );
    assert!(restarted.bootstrap.is_none());
}

/// The OpenAPI document of the identity API is served in development, names only calls that
/// exist, and is hidden in production.
#[test]
fn the_openapi_document_matches_the_api_and_is_hidden_in_production() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    let reply = get(gateway.addr, "/auth/api/openapi.json", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let doc: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{}", paths.len());
    for (path, methods) in paths {
        for method in methods.as_object().expect("methods").keys() {
            let target = format!("/auth{}", path.replace("{id}", "no-such-session"));
            let reply = send_json(
                gateway.addr,
                &method.to_uppercase(),
                &target,
                "{}",
                &[SAME_ORIGIN],
            );
            assert_ne!(
                reply.status, 404,
                "{method} {target} is documented but missing"
            );
        }
    }
    let production = format!("{}{}", crate::support::PRODUCTION, config(&upstream, ""));
    let production = Gateway::start(
        &production,
        &[(
            "PORTCULLIS_SERVER__SECRET_KEY",
            "0123456789abcdef0123456789abcdef",
        )],
    );
    assert_eq!(
        get(production.addr, "/auth/api/openapi.json", &[]).status,
        404
    );
}

#[test]
fn the_registration_and_bootstrap_pages_create_accounts() {
    use crate::support::submit_page_form;
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    let addr = gateway.addr;
    let token = gateway.bootstrap.clone().expect("bootstrap token");
    let weak = submit_page_form(
        addr,
        &format!("/auth/bootstrap?token={token}"),
        "/auth/bootstrap",
        &[
            ("token", &token),
            ("email", "boss@example.com"),
            ("password", "password"),
        ],
    );
    assert_eq!(weak.status, 400, "{}", weak.body);
    assert!(weak.body.contains("commonly used"), "{}", weak.body);
    let admin = submit_page_form(
        addr,
        &format!("/auth/bootstrap?token={token}"),
        "/auth/bootstrap",
        &[
            ("token", &token),
            ("email", "boss@example.com"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert!(
        admin.body.contains("first admin account is ready"),
        "{}",
        admin.body
    );

    let registered = submit_page_form(
        addr,
        "/auth/register",
        "/auth/register",
        &[
            ("email", "wren@example.com"),
            ("display_name", "Wren"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(registered.status, 200, "{}", registered.body);
    assert!(
        registered.body.contains("check your e-mail"),
        "{}",
        registered.body
    );
    assert_eq!(login(addr, "wren@example.com", PASSWORD, &[]).status, 200);
    assert_eq!(login(addr, "boss@example.com", PASSWORD, &[]).status, 200);
}

#[test]
fn operators_list_and_end_any_session() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    register(gateway.addr, "xena@example.com", PASSWORD);
    let first = login_token(gateway.addr, "xena@example.com");
    let second = login_token(gateway.addr, "xena@example.com");
    let data = gateway.dir.0.join("data");
    let data = data.to_str().expect("path");
    let (status, out) = run(
        &[
            "user",
            "--data-dir",
            data,
            "sessions",
            "xena@example.com",
            "--json",
        ],
        &[],
    );
    assert!(status.success(), "{out}");
    let sessions: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(sessions.len(), 2, "{out}");
    // The first login's session, as that session itself names it.
    let mine = get(gateway.addr, "/auth/api/sessions", &[&cookie(&first)]);
    let mine: serde_json::Value = serde_json::from_str(&mine.body).expect("json");
    let oldest = mine["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["id"].as_str())
        .expect("current session")
        .to_owned();
    assert!(sessions.iter().any(|s| s["id"] == oldest.as_str()), "{out}");
    let (status, out) = run(
        &[
            "user",
            "--data-dir",
            data,
            "revoke-session",
            "xena@example.com",
            &oldest,
        ],
        &[],
    );
    assert!(status.success(), "{out}");
    refused_within_a_second(gateway.addr, "/app/x", &cookie(&first));
    assert_eq!(get(gateway.addr, "/app/x", &[&cookie(&second)]).status, 200);
}

/// Polls until `path` answers 401 for `cookie`: a change another process makes to the store
/// reaches a gateway's session cache within a second. Returns how long it took.
fn refused_within_a_second(addr: SocketAddr, path: &str, cookie: &str) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let status = get(addr, path, &[cookie]).status;
        if status == 401 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1500),
            "still {status} after {:?}",
            started.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}
