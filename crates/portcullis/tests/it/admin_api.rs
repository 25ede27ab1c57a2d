//! The admin API on the admin listener, through the running binary: only a key with the
//! `admin` scope gets in; an operator lists and shows accounts, ends their sessions, replaces
//! their roles, locks and unlocks them; each change takes effect on the next request and is in
//! the audit log with the operator's key.

use std::time::{Duration, Instant};

use crate::api_keys::{apikey, cli_target, key_of};
use crate::support::{Gateway, Reply, audit_tail, get, send_json, session_app, session_cookie};

const PASSWORD: &str = "velvet tractor orbits quietly";
const ORIGIN: &str = "Origin: http://app.test";
const LOGIN: &str = r#"{"email":"uma@example.com","password":"velvet tractor orbits quietly"}"#;

fn login(gateway: &Gateway) -> Reply {
    send_json(gateway.addr, "POST", "/auth/api/login", LOGIN, &[ORIGIN])
}

/// Polls the session route until it answers `status` (sessions are cached for a second).
fn until_status(gateway: &Gateway, cookie: &str, status: u16) {
    let started = Instant::now();
    while get(gateway.addr, "/app/x", &[cookie]).status != status {
        assert!(started.elapsed() < Duration::from_secs(3), "never {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn operators_with_an_admin_key_manage_accounts_and_sessions() {
    let (_upstream, gateway) = session_app("", "");
    let body = format!(r#"{{"email":"uma@example.com","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send_json(gateway.addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    let cookie = session_cookie(&login(&gateway));
    assert_eq!(get(gateway.addr, "/app/x", &[&cookie]).status, 200);

    let target = cli_target(&gateway);
    let target = target.each_ref().map(String::as_str);
    let create = |name: &str, scope: &str| {
        key_of(&apikey(
            &target,
            &["create", "--name", name, "--scope", scope, "--json"],
            &[],
        ))
    };
    let (ops_id, ops) = create("ops", "admin");
    let (_, plain) = create("billing", "customers:read");
    let admin = gateway.admin;
    let as_ops = format!("Authorization: Bearer {ops}");
    let call =
        |method: &str, path: &str, json: &str| send_json(admin, method, path, json, &[&as_ops]);

    // No key, a key without the scope, a mutated key: refused, in the common error body.
    let none = get(admin, "/admin/api/users", &[]);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.body.contains("\"request_id\""), "{}", none.body);
    assert_eq!(
        get(admin, "/admin/api/users", &[&format!("X-API-Key: {plain}")]).status,
        403
    );
    let mut mutated = ops.clone();
    mutated.replace_range(10..11, if &ops[10..11] == "a" { "b" } else { "a" });
    assert_eq!(
        get(
            admin,
            "/admin/api/users",
            &[&format!("X-API-Key: {mutated}")]
        )
        .status,
        401
    );
    // The public listener does not serve it.
    let public = get(gateway.addr, "/admin/api/users", &[&as_ops]);
    assert_eq!(public.status, 404, "{}", public.body);

    let users = call("GET", "/admin/api/users", "");
    assert_eq!(users.status, 200, "{}", users.body);
    let users: serde_json::Value = serde_json::from_str(&users.body).expect("json");
    let uma = users["users"]
        .as_array()
        .and_then(|all| all.iter().find(|u| u["email"] == "uma@example.com"))
        .expect("uma listed");
    let id = uma["id"].as_str().expect("id").to_owned();
    // By e-mail address (percent-encoded or not), with the sessions.
    let shown = call("GET", "/admin/api/users/uma%40example.com", "");
    assert_eq!(shown.status, 200, "{}", shown.body);
    let shown: serde_json::Value = serde_json::from_str(&shown.body).expect("json");
    assert_eq!(shown["user"]["id"], id.as_str());
    assert_eq!(shown["user"]["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        call("GET", "/admin/api/users/nobody@example.com", "").status,
        404
    );

    // Ending every session: the next request is refused.
    let ended = call("DELETE", &format!("/admin/api/users/{id}/sessions"), "");
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert!(ended.body.contains("\"revoked\":1"), "{}", ended.body);
    until_status(&gateway, &cookie, 401);

    // New roles end the sessions; the next login carries them. A bad role name is refused.
    let cookie = session_cookie(&login(&gateway));
    let roles = format!("/admin/api/users/{id}/roles");
    let bad = call("PUT", &roles, r#"{"roles":["user","bad role"]}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("invalid role name"), "{}", bad.body);
    assert_eq!(
        call("PUT", &roles, r#"{"roles":["user","billing"]}"#).status,
        204
    );
    until_status(&gateway, &cookie, 401);
    let cookie = session_cookie(&login(&gateway));
    let me = get(gateway.addr, "/auth/api/me", &[&cookie]);
    assert!(me.body.contains("\"billing\""), "{}", me.body);

    // Locked: the session ends and login fails; unlocked: login works again.
    assert_eq!(
        call("POST", &format!("/admin/api/users/{id}/lock"), "").status,
        204
    );
    until_status(&gateway, &cookie, 401);
    let locked = login(&gateway);
    assert_eq!(locked.status, 403, "{}", locked.body);
    assert_eq!(
        call("POST", &format!("/admin/api/users/{id}/unlock"), "").status,
        204
    );
    assert_eq!(login(&gateway).status, 200);
    assert_eq!(
        call("POST", &format!("/admin/api/users/{id}/promote"), "").status,
        404
    );

    let tail = audit_tail(gateway);
    for kind in [
        "session_revoked",
        "roles_changed",
        "account_locked",
        "account_unlocked",
    ] {
        let line = tail
            .lines()
            .find(|l| l.contains(kind) && l.contains("admin_api"))
            .unwrap_or_else(|| panic!("no {kind} by the admin API: {tail}"));
        assert!(line.contains(&ops_id), "{line}");
    }
    assert!(tail.contains("api_key_denied"), "{tail}");
}
