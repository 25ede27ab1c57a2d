//! Access tokens through the running binary: the password, session and refresh grants, bearer
//! routes, the identity token the upstream can check against the JWKS, refresh reuse revoking
//! the family, revocation by `jti`, and forged tokens refused.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};

use crate::support::{Gateway, Reply, Upstream, get, run, send_json};

const PASSWORD: &str = "velvet tractor orbits quietly";
const ORIGIN: &str = "Origin: http://app.test";

fn config(upstream: &Upstream) -> String {
    format!(
        "[identity]\nhash_memory_kib = 256\nhash_iterations = 1\npublic_url = \"https://id.test\"\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n\
         [[route]]\npath = \"/api\"\nupstream = \"{url}\"\nauth = \"token\"\n\
         [[route]]\npath = \"/either\"\nupstream = \"{url}\"\nauth = \"any\"\n\
         [[route]]\npath = \"/reports\"\nupstream = \"{url}\"\nauth = \"token\"\nscopes = [\"reports:read\"]\n",
        url = upstream.url()
    )
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

fn token_request(addr: SocketAddr, body: &str, headers: &[&str]) -> Reply {
    send_json(addr, "POST", "/auth/api/token", body, headers)
}

fn start() -> (Upstream, Gateway) {
    start_with(&[])
}

fn start_with(env: &[(&str, &str)]) -> (Upstream, Gateway) {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream), env);
    let body = format!(r#"{{"email":"tess@example.com","password":"{PASSWORD}"}}"#);
    let reply = send_json(gateway.addr, "POST", "/auth/api/register", &body, &[ORIGIN]);
    assert_eq!(reply.status, 202, "{}", reply.body);
    (upstream, gateway)
}

fn password_grant(addr: SocketAddr) -> serde_json::Value {
    let body = format!(
        r#"{{"grant_type":"password","email":"tess@example.com","password":"{PASSWORD}"}}"#
    );
    let reply = token_request(addr, &body, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    json(&reply)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The value of `name=` in the upstream's echo.
fn echoed<'a>(body: &'a str, name: &str) -> &'a str {
    body.split(' ')
        .find_map(|field| field.strip_prefix(&format!("{name}=")))
        .unwrap_or("")
}

#[test]
fn bearer_tokens_reach_token_routes_with_a_verifiable_identity_token() {
    let (_upstream, gateway) = start();
    let tokens = password_grant(gateway.addr);
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().expect("access token");

    assert_eq!(get(gateway.addr, "/api/items", &[]).status, 401);
    let reply = get(gateway.addr, "/api/items", &[&bearer(access)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(echoed(&reply.body, "auth"), "token");
    assert_eq!(echoed(&reply.body, "email"), "tess@example.com");
    assert_eq!(
        get(gateway.addr, "/either/x", &[&bearer(access)]).status,
        200
    );
    // A route that needs a scope this token lacks.
    assert_eq!(
        get(gateway.addr, "/reports/q3", &[&bearer(access)]).status,
        403
    );

    // The upstream checks the identity token with the JWKS alone.
    let jwks_reply = get(gateway.addr, "/.well-known/jwks.json", &[]);
    assert_eq!(jwks_reply.status, 200);
    assert!(
        jwks_reply
            .header("cache-control")
            .is_some_and(|v| v.contains("max-age"))
    );
    let jwks = json(&jwks_reply);
    let identity = echoed(&reply.body, "identity");
    let header = jsonwebtoken::decode_header(identity).expect("identity token header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("kid in the JWKS");
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().expect("x")).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["portcullis-upstream"]);
    validation.set_issuer(&["https://id.test"]);
    let claims =
        jsonwebtoken::decode::<serde_json::Value>(identity, &decoding, &validation).expect("valid");
    assert_eq!(claims.claims["email"], "tess@example.com");
    assert_eq!(claims.claims["auth"], "token");
    assert_eq!(claims.claims["typ"], "identity");
}

#[test]
fn a_session_can_be_exchanged_for_tokens() {
    let (_upstream, gateway) = start();
    let body = format!(r#"{{"email":"tess@example.com","password":"{PASSWORD}"}}"#);
    let login = send_json(gateway.addr, "POST", "/auth/api/login", &body, &[ORIGIN]);
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(|c| format!("Cookie: {c}"))
        .expect("session");
    let reply = token_request(
        gateway.addr,
        r#"{"grant_type":"session"}"#,
        &[ORIGIN, &cookie],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let access = json(&reply)["access_token"]
        .as_str()
        .map(str::to_owned)
        .expect("token");
    assert_eq!(get(gateway.addr, "/api/x", &[&bearer(&access)]).status, 200);
    // A session cookie is not a token.
    assert_eq!(get(gateway.addr, "/api/x", &[&cookie]).status, 401);
}

#[test]
fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let (_upstream, gateway) = start();
    refresh_rotation(&gateway);
    let out = crate::support::audit_tail(gateway);
    assert!(
        out.contains("\"refresh_token_reused\"") && out.contains("\"high\""),
        "{out}"
    );
}

/// Tokens on PostgreSQL: grants, rotation, reuse, revocation.
#[tokio::test]
async fn tokens_on_postgres() {
    let Some(url) = crate::support::postgres_database("tokens").await else {
        return;
    };
    let env = [("PORTCULLIS_STORAGE__URL", url.as_str())];
    let (status, out) = run(&["migrate"], &env);
    assert!(status.success(), "{out}");
    let (_upstream, gateway) = start_with(&env);
    refresh_rotation(&gateway);
    let tokens = password_grant(gateway.addr);
    let access = tokens["access_token"].as_str().expect("access");
    let body = format!(r#"{{"token":"{access}"}}"#);
    let revoke = send_json(gateway.addr, "POST", "/auth/api/token/revoke", &body, &[]);
    assert_eq!(revoke.status, 200);
    assert_eq!(get(gateway.addr, "/api/x", &[&bearer(access)]).status, 401);
}

fn refresh_rotation(gateway: &Gateway) {
    let first = password_grant(gateway.addr);
    let refresh_body =
        |token: &str| format!(r#"{{"grant_type":"refresh_token","refresh_token":"{token}"}}"#);
    let first_refresh = first["refresh_token"].as_str().expect("refresh").to_owned();
    let reply = token_request(gateway.addr, &refresh_body(&first_refresh), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let second = json(&reply);
    let second_refresh = second["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(first_refresh, second_refresh);
    assert_eq!(
        get(
            gateway.addr,
            "/api/x",
            &[&bearer(second["access_token"].as_str().expect("access"))]
        )
        .status,
        200
    );

    // The first refresh token again: reuse. The family is revoked, the newest token included.
    let reuse = token_request(gateway.addr, &refresh_body(&first_refresh), &[]);
    assert_eq!(reuse.status, 400, "{}", reuse.body);
    assert!(reuse.body.contains("invalid_grant"), "{}", reuse.body);
    let after = token_request(gateway.addr, &refresh_body(&second_refresh), &[]);
    assert_eq!(after.status, 400, "the family is gone: {}", after.body);
}

#[test]
fn revoked_access_tokens_are_refused_on_their_next_use() {
    let (_upstream, gateway) = start();
    let tokens = password_grant(gateway.addr);
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(get(gateway.addr, "/api/x", &[&bearer(access)]).status, 200);
    let body = format!(r#"{{"token":"{access}"}}"#);
    assert_eq!(
        send_json(gateway.addr, "POST", "/auth/api/token/revoke", &body, &[]).status,
        200
    );
    assert_eq!(get(gateway.addr, "/api/x", &[&bearer(access)]).status, 401);
}

#[test]
fn forged_tokens_are_refused() {
    let (_upstream, gateway) = start();
    let tokens = password_grant(gateway.addr);
    let access = tokens["access_token"].as_str().expect("access");
    let parts: Vec<&str> = access.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("utf8");
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    let kid = header["kid"].as_str().expect("kid");
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let admin_payload = payload.replace("\"roles\":[\"user\"]", "\"roles\":[\"admin\"]");
    assert_ne!(admin_payload, payload);

    let jwks = json(&get(gateway.addr, "/.well-known/jwks.json", &[]));
    let public = jwks["keys"][0]["x"].as_str().expect("x").to_owned();
    let hs256 = {
        let input = format!(
            "{}.{}",
            b64(&format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#)),
            b64(&admin_payload)
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(public.as_bytes()).expect("key");
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let forgeries = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&admin_payload)
            ),
        ),
        ("HS256 keyed with the public key", hs256),
        (
            "RS256 header",
            format!(
                "{}.{}.{}",
                b64(&format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#)),
                parts[1],
                parts[2]
            ),
        ),
        (
            "payload changed",
            format!("{}.{}.{}", parts[0], b64(&admin_payload), parts[2]),
        ),
        (
            "unknown kid",
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"EdDSA","kid":"elsewhere"}"#),
                parts[1],
                parts[2]
            ),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (case, token) in forgeries {
        let reply = get(gateway.addr, "/api/x", &[&bearer(&token)]);
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
    }
    assert_eq!(get(gateway.addr, "/api/x", &[&bearer(access)]).status, 200);
}
