//! API keys through the running binary: keys made with `portcullis apikey`, used in
//! `X-API-Key` or as a bearer; a mutated key refused without a store read; scopes, networks,
//! expiry, rotation with a grace period, revocation within a second on every instance (SQLite,
//! and two gateways on PostgreSQL), the JSON API for a user's own keys, and the events.

use std::time::{Duration, Instant};

use crate::support::{Gateway, Upstream, get, run, send_json};

const ORIGIN: &str = "Origin: http://app.test";

/// A B2B route that needs `customers:read`, a route that takes any credential, the test as its
/// own trusted proxy (so it can speak for any client address), no client rate limit.
fn config(upstream: &Upstream, extra: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nclient = \"off\"\n\
         [identity]\nhash_memory_kib = 256\nhash_iterations = 1\napi_key_prefix = \"lgas_\"\n\
         api_key_user_scopes = [\"orders:read\"]\n{extra}\n\
         [[route]]\npath = \"/b2b\"\nupstream = \"{url}\"\nauth = \"api_key\"\nscopes = [\"customers:read\"]\n\
         [[route]]\npath = \"/either\"\nupstream = \"{url}\"\nauth = \"any\"\n",
        url = upstream.url()
    )
}

/// `portcullis apikey ARGS...` against `target` (`--data-dir DIR`, or nothing with the store
/// in `env`); returns the parsed `--json` output of `create` and `rotate`.
pub(crate) fn apikey(target: &[&str], args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = vec!["apikey"];
    all.extend_from_slice(target);
    all.extend_from_slice(args);
    let (status, out) = run(&all, env);
    assert!(status.success(), "apikey {args:?}: {out}");
    serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null)
}

/// The arguments that point the CLI at a running gateway's file and data dir.
pub(crate) fn cli_target(gateway: &Gateway) -> [String; 4] {
    let dir = &gateway.dir.0;
    [
        "-c".to_owned(),
        dir.join("portcullis.toml").display().to_string(),
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
    ]
}

pub(crate) fn key_of(created: &serde_json::Value) -> (String, String) {
    let id = created["id"].as_str().expect("id").to_owned();
    let key = created["key"].as_str().expect("key").to_owned();
    (id, key)
}

fn with_key(gateway: &Gateway, path: &str, key: &str, client: &str) -> crate::support::Reply {
    get(
        gateway.addr,
        path,
        &[
            &format!("X-API-Key: {key}"),
            &format!("X-Forwarded-For: {client}"),
        ],
    )
}

/// The store reads the gateway has made to verify keys, from its metrics.
fn store_lookups(gateway: &Gateway) -> u64 {
    let metrics = get(gateway.admin, "/metrics", &[]).body;
    metrics
        .lines()
        .find(|line| line.starts_with("portcullis_api_key_store_lookups_total"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Polls until the key gets 401 on every gateway; returns how long that took.
fn until_refused(gateways: &[&Gateway], key: &str) -> Duration {
    let started = Instant::now();
    for gateway in gateways {
        loop {
            let status = with_key(gateway, "/b2b/customers", key, "192.0.2.1").status;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(started.elapsed() < Duration::from_secs(5), "still accepted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    started.elapsed()
}

#[test]
fn api_keys_made_by_the_cli_authenticate_and_are_refused_when_they_should_be() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, ""), &[]);
    // The CLI reads the gateway's file (the key prefix) and its data dir (store, server key).
    let target = cli_target(&gateway);
    let dir = target.each_ref().map(String::as_str);
    let (id, key) = key_of(&apikey(
        &dir,
        &[
            "create",
            "--name",
            "acme",
            "--scope",
            "customers:read",
            "--json",
        ],
        &[],
    ));
    // The seed's prefix, 43 random base62 characters and a 6-character checksum.
    assert!(key.starts_with("lgas_") && key.len() == 5 + 43 + 6, "{key}");

    // In X-API-Key and as a bearer; the upstream learns the key id and scopes, never the key.
    let reply = with_key(&gateway, "/b2b/customers", &key, "192.0.2.1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    for expected in [
        "auth=api_key",
        "user=service:default",
        "scopes=customers:read",
        &format!("key_id={id}"),
        "api_key=-",
    ] {
        assert!(reply.body.contains(expected), "{expected}: {}", reply.body);
    }
    let bearer = get(
        gateway.addr,
        "/either/x",
        &[&format!("Authorization: Bearer {key}")],
    );
    assert_eq!(bearer.status, 200, "{}", bearer.body);
    assert!(
        bearer.body.contains("authorization=-") && bearer.body.contains("auth=api_key"),
        "{}",
        bearer.body
    );

    // Mutated keys are refused by their checksum, without a store read.
    let before = store_lookups(&gateway);
    for position in [5, 20, 47, key.len() - 1] {
        let mut mutated = key.clone().into_bytes();
        mutated[position] = if mutated[position] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let mutated = String::from_utf8(mutated).expect("ascii");
        let reply = with_key(&gateway, "/b2b/customers", &mutated, "192.0.2.1");
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(reply.body.contains("invalid_api_key"), "{}", reply.body);
    }
    assert_eq!(
        with_key(&gateway, "/b2b/customers", "lgas_short", "192.0.2.1").status,
        401
    );
    assert_eq!(
        store_lookups(&gateway),
        before,
        "a malformed key reached the store"
    );
    // A well-formed key this store does not know costs one read, then is remembered briefly.
    let stranger = crate::support::TempDir::new("other-keys");
    let other = stranger.0.join("data");
    let (_, unknown) = key_of(&apikey(
        &["--data-dir", other.to_str().expect("utf8")],
        &["create", "--name", "elsewhere", "--json"],
        &[("PORTCULLIS_IDENTITY__API_KEY_PREFIX", "lgas_")],
    ));
    for _ in 0..3 {
        assert_eq!(
            with_key(&gateway, "/b2b/customers", &unknown, "192.0.2.1").status,
            401
        );
    }
    assert_eq!(store_lookups(&gateway), before + 1);

    // A key without the route's scope: 403.
    let (_, reader) = key_of(&apikey(
        &dir,
        &[
            "create",
            "--name",
            "orders",
            "--scope",
            "orders:read",
            "--json",
        ],
        &[],
    ));
    let reply = with_key(&gateway, "/b2b/customers", &reader, "192.0.2.1");
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(
        with_key(&gateway, "/either/x", &reader, "192.0.2.1").status,
        200
    );

    // A key bound to a network works only from it.
    let (_, bound) = key_of(&apikey(
        &dir,
        &[
            "create",
            "--name",
            "office",
            "--scope",
            "customers:read",
            "--allow-network",
            "198.51.100.0/24",
            "--json",
        ],
        &[],
    ));
    assert_eq!(
        with_key(&gateway, "/b2b/customers", &bound, "198.51.100.7").status,
        200
    );
    let reply = with_key(&gateway, "/b2b/customers", &bound, "203.0.113.5");
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("api_key_network"), "{}", reply.body);

    // An expired key: 401.
    let (_, brief) = key_of(&apikey(
        &dir,
        &[
            "create",
            "--name",
            "brief",
            "--scope",
            "customers:read",
            "--expires",
            "1s",
            "--json",
        ],
        &[],
    ));
    assert_eq!(
        with_key(&gateway, "/b2b/customers", &brief, "192.0.2.1").status,
        200
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        with_key(&gateway, "/b2b/customers", &brief, "192.0.2.1").status,
        401
    );

    // Rotation: the old key works through its grace period, the new one at once.
    let (new_id, rotated) = key_of(&apikey(
        &dir,
        &["rotate", &id, "--grace", "2s", "--json"],
        &[],
    ));
    assert_ne!(new_id, id);
    let rotated_at = Instant::now();
    assert_eq!(
        with_key(&gateway, "/b2b/customers", &rotated, "192.0.2.1").status,
        200
    );
    assert_eq!(
        with_key(&gateway, "/b2b/customers", &key, "192.0.2.1").status,
        200
    );
    let ended = until_refused(&[&gateway], &key) + rotated_at.elapsed();
    assert!(
        ended >= Duration::from_millis(1500),
        "grace ended early: {ended:?}"
    );

    // Revocation by the CLI, straight to the store: refused within a second.
    apikey(&dir, &["revoke", &new_id], &[]);
    let took = until_refused(&[&gateway], &rotated);
    eprintln!("revoked key refused after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Last use is written in batches (every 5 s).
    std::thread::sleep(Duration::from_millis(5500));
    let mut list = vec!["apikey"];
    list.extend_from_slice(&dir);
    list.extend_from_slice(&["list", "--json"]);
    let (status, listed) = run(&list, &[]);
    assert!(status.success(), "{listed}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("json");
    let office = listed
        .iter()
        .find(|k| k["name"] == "office")
        .expect("office key");
    assert_eq!(office["last_used_ip"], "198.51.100.7", "{office}");
    assert!(
        !listed.iter().any(|k| k.to_string().contains(&key)),
        "a key was stored in clear"
    );

    let tail = crate::support::audit_tail(gateway);
    for kind in [
        "api_key_created",
        "api_key_rotated",
        "api_key_revoked",
        "api_key_denied",
    ] {
        assert!(
            tail.contains(&format!("\"kind\":\"{kind}\"")),
            "{kind}: {tail}"
        );
    }
    assert!(tail.contains(r#"\"reason\":\"expired\""#), "{tail}");
}

#[test]
fn users_manage_their_own_keys_through_the_api() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream, "registration = \"open\""), &[]);
    let addr = gateway.addr;
    let password = "velvet tractor orbits quietly";
    let body = format!(r#"{{"email":"dev@example.com","password":"{password}"}}"#);
    assert_eq!(
        send_json(addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    let login = send_json(addr, "POST", "/auth/api/login", &body, &[ORIGIN]);
    assert_eq!(login.status, 200, "{}", login.body);
    let session = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let cookie = format!("Cookie: {session}");

    // Only the scopes users may grant themselves.
    let refused = send_json(
        addr,
        "POST",
        "/auth/api/keys",
        r#"{"name":"ci","scopes":["customers:read"]}"#,
        &[ORIGIN, &cookie],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    let created = send_json(
        addr,
        "POST",
        "/auth/api/keys",
        r#"{"name":"ci","scopes":["orders:read"],"expires_in_days":90}"#,
        &[ORIGIN, &cookie],
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let created: serde_json::Value = serde_json::from_str(&created.body).expect("json");
    let (id, key) = key_of(&created);
    assert!(key.starts_with("lgas_"));
    let reply = with_key(&gateway, "/either/orders", &key, "192.0.2.9");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("email=dev@example.com"),
        "{}",
        reply.body
    );

    // Another site cannot make keys with the user's cookie.
    let forged = send_json(
        addr,
        "POST",
        "/auth/api/keys",
        r#"{"name":"evil","scopes":["orders:read"]}"#,
        &["Origin: https://evil.example", &cookie],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);

    let listed = get(addr, "/auth/api/keys", &[&cookie]);
    assert_eq!(listed.status, 200);
    assert!(
        listed.body.contains(&id) && !listed.body.contains(&key),
        "{}",
        listed.body
    );
    assert_eq!(get(addr, "/auth/api/keys", &[]).status, 401);

    let revoked = send_json(
        addr,
        "DELETE",
        &format!("/auth/api/keys/{id}"),
        "",
        &[ORIGIN, &cookie],
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert_eq!(
        with_key(&gateway, "/either/orders", &key, "192.0.2.9").status,
        401
    );
}

/// Two gateways on one PostgreSQL: a key revoked with the CLI is refused by both within a
/// second.
#[tokio::test]
async fn a_revocation_reaches_every_instance_within_a_second_on_postgres() {
    let Some(url) = crate::support::postgres_database("apikeys").await else {
        return;
    };
    let env = [
        ("PORTCULLIS_STORAGE__URL", url.as_str()),
        (
            "PORTCULLIS_SERVER__SECRET_KEY",
            "a shared server key for both gateways",
        ),
        ("PORTCULLIS_IDENTITY__API_KEY_PREFIX", "lgas_"),
    ];
    let (status, out) = run(&["migrate"], &env);
    assert!(status.success(), "{out}");
    let upstream = Upstream::start("app");
    let first = Gateway::start(&config(&upstream, ""), &env);
    let second = Gateway::start(&config(&upstream, ""), &env);
    let (id, key) = key_of(&apikey(
        &[],
        &[
            "create",
            "--name",
            "shared",
            "--scope",
            "customers:read",
            "--json",
        ],
        &env,
    ));
    for gateway in [&first, &second] {
        let reply = with_key(gateway, "/b2b/customers", &key, "192.0.2.1");
        assert_eq!(reply.status, 200, "{key}: {}", reply.body);
    }
    apikey(&[], &["revoke", &id], &env);
    let took = until_refused(&[&first, &second], &key);
    eprintln!("revoked key refused by both instances after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A route limited per API key: each key has its own bucket whatever address it comes from,
/// and two keys from one address do not share one.
#[test]
fn rate_limits_keyed_by_api_key() {
    let upstream = Upstream::start("app");
    let extra = format!(
        "[[route]]\npath = \"/metered\"\nupstream = \"{}\"\nauth = \"api_key\"\n\
         rate_limit = \"1/min\"\nrate_limit_by = \"api_key\"\n",
        upstream.url()
    );
    let gateway = Gateway::start(&format!("{}{extra}", config(&upstream, "")), &[]);
    let target = cli_target(&gateway);
    let dir = target.each_ref().map(String::as_str);
    let (_, first) = key_of(&apikey(&dir, &["create", "--name", "one", "--json"], &[]));
    let (_, second) = key_of(&apikey(&dir, &["create", "--name", "two", "--json"], &[]));
    assert_eq!(
        with_key(&gateway, "/metered/x", &first, "192.0.2.1").status,
        200
    );
    let over = with_key(&gateway, "/metered/x", &first, "198.51.100.9");
    assert_eq!(
        over.status, 429,
        "the same key from another address: {}",
        over.body
    );
    assert_eq!(
        with_key(&gateway, "/metered/x", &second, "192.0.2.1").status,
        200
    );
}
