//! Passkeys through the running binary, with a software authenticator written here (a P-256
//! key from aws-lc-rs, CBOR from ciborium, attestation "none", user verification claimed):
//! registration, login with a passkey as the second factor, passwordless login, several named
//! passkeys removed one by one, and forged or replayed answers refused.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use sha2::{Digest as _, Sha256};

use crate::support::{Reply, get, send_json, session_app, session_cookie as session_of};

/// The request origin the CSRF check sees (the test client says `Host: app.test`); the WebAuthn
/// origin inside the signed client data is `http://localhost:<port>`, under `public_url`.
const ORIGIN: &str = "Origin: http://app.test";
const PASSWORD: &str = "velvet tractor orbits quietly";
const EMAIL: &str = "passkey@example.com";

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("cbor");
    out
}

fn int(n: i64) -> Value {
    Value::Integer(n.into())
}

/// A platform authenticator in software: one P-256 credential, discoverable, always verifying
/// its user.
struct SoftPasskey {
    key: EcdsaKeyPair,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
}

impl SoftPasskey {
    /// Answers `navigator.credentials.create(options)` from `origin`.
    fn create(options: &serde_json::Value, origin: &str) -> (Self, serde_json::Value) {
        let public_key = &options["publicKey"];
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("key");
        let mut credential_id = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut credential_id).expect("random");
        let user_handle = URL_SAFE_NO_PAD
            .decode(public_key["user"]["id"].as_str().expect("user id"))
            .expect("user id base64url");
        let point = key.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        let cose = Value::Map(vec![
            (int(1), int(2)),
            (int(3), int(-7)),
            (int(-1), int(1)),
            (int(-2), Value::Bytes(point[1..33].to_vec())),
            (int(-3), Value::Bytes(point[33..65].to_vec())),
        ]);
        let rp_id = public_key["rp"]["id"].as_str().expect("rp id");
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(0x01 | 0x04 | 0x40); // user present, user verified, attested data
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID
        let id_length = u16::try_from(credential_id.len()).expect("short id");
        auth_data.extend_from_slice(&id_length.to_be_bytes());
        auth_data.extend_from_slice(&credential_id);
        auth_data.extend_from_slice(&cbor(&cose));
        let attestation = Value::Map(vec![
            (Value::Text("fmt".into()), Value::Text("none".into())),
            (Value::Text("attStmt".into()), Value::Map(vec![])),
            (Value::Text("authData".into()), Value::Bytes(auth_data)),
        ]);
        let client_data = serde_json::json!({
            "type": "webauthn.create",
            "challenge": public_key["challenge"],
            "origin": origin,
            "crossOrigin": false,
        });
        let credential = serde_json::json!({
            "id": b64(&credential_id),
            "rawId": b64(&credential_id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&cbor(&attestation)),
                "clientDataJSON": b64(client_data.to_string().as_bytes()),
            },
            "extensions": {},
        });
        let passkey = Self {
            key,
            credential_id,
            user_handle,
            counter: 0,
        };
        (passkey, credential)
    }

    /// Answers `navigator.credentials.get(options)` from `origin`.
    fn get(&mut self, options: &serde_json::Value, origin: &str) -> serde_json::Value {
        let public_key = &options["publicKey"];
        let rp_id = public_key["rpId"].as_str().expect("rp id");
        self.counter += 1;
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(0x01 | 0x04);
        auth_data.extend_from_slice(&self.counter.to_be_bytes());
        let client_data = serde_json::json!({
            "type": "webauthn.get",
            "challenge": public_key["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(client_data.as_bytes()));
        let signature = self
            .key
            .sign(&SystemRandom::new(), &signed)
            .expect("signature");
        serde_json::json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(client_data.as_bytes()),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }
}

#[test]
fn passkeys_register_then_serve_as_second_factor_and_for_passwordless_login() {
    let (_upstream, gateway) = session_app(
        "",
        "registration = \"open\"\npublic_url = \"http://localhost\"\n",
    );
    let addr = gateway.addr;
    let origin = format!("http://localhost:{}", addr.port());
    let post = |path: &str, body: &str, session: Option<&str>| {
        let mut headers = vec![ORIGIN];
        headers.extend(session);
        send_json(addr, "POST", path, body, &headers)
    };
    let credentials = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    assert_eq!(post("/auth/api/register", &credentials, None).status, 202);
    let login = post("/auth/api/login", &credentials, None);
    assert_eq!(login.status, 200, "{}", login.body);
    let session = session_of(&login);

    // Registration: options from the gateway, an answer from the authenticator.
    let register = |name: &str, session: &str| {
        let start = post("/auth/api/second-factor/passkeys/start", "", Some(session));
        assert_eq!(start.status, 200, "{}", start.body);
        let start = json(&start);
        let (passkey, credential) = SoftPasskey::create(&start["options"], &origin);
        let body = serde_json::json!({
            "ceremony": start["ceremony"],
            "name": name,
            "credential": credential,
        });
        let added = post(
            "/auth/api/second-factor/passkeys",
            &body.to_string(),
            Some(session),
        );
        assert_eq!(added.status, 201, "{}", added.body);
        passkey
    };
    let mut laptop = register("Laptop", &session);

    // The password step now asks for the second factor and offers the passkey.
    let step = post("/auth/api/login", &credentials, None);
    assert_eq!(step.status, 403, "{}", step.body);
    let step = json(&step);
    let challenge = step["error"]["challenge"].as_str().expect("challenge");
    let offered = &step["error"]["passkey"];
    assert!(
        step["error"]["methods"].to_string().contains("passkey"),
        "{step}"
    );
    let answer = laptop.get(&offered["options"], &origin);
    let second = serde_json::json!({
        "challenge": challenge,
        "passkey": { "ceremony": offered["ceremony"], "credential": answer },
    });
    let done = post("/auth/api/login/second-factor", &second.to_string(), None);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(get(addr, "/app/home", &[&session_of(&done)]).status, 200);
    // The same answer again: its ceremony is spent.
    let step = json(&post("/auth/api/login", &credentials, None));
    let replay = serde_json::json!({
        "challenge": step["error"]["challenge"],
        "passkey": { "ceremony": offered["ceremony"], "credential": answer },
    });
    assert_eq!(
        post("/auth/api/login/second-factor", &replay.to_string(), None).status,
        401
    );

    // Passwordless: any discoverable passkey; a forged signature is refused.
    let passwordless = |passkey: &mut SoftPasskey, forge: bool| {
        let start = json(&post("/auth/api/login/passkey/start", "", None));
        let mut answer = passkey.get(&start["options"], &origin);
        if forge {
            let signature = answer["response"]["signature"].as_str().expect("sig");
            let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("b64");
            let last = bytes.len() - 1;
            bytes[last] ^= 0x01;
            answer["response"]["signature"] = b64(&bytes).into();
        }
        let body = serde_json::json!({ "ceremony": start["ceremony"], "credential": answer });
        post("/auth/api/login/passkey", &body.to_string(), None)
    };
    assert_eq!(passwordless(&mut laptop, true).status, 401);
    let direct = passwordless(&mut laptop, false);
    assert_eq!(direct.status, 200, "{}", direct.body);
    let session = session_of(&direct);
    assert_eq!(get(addr, "/app/home", &[&session]).status, 200);

    // Several named passkeys, each removable (the passwordless session counts as a step-up).
    let mut phone = register("Phone", &session);
    let listed = json(&get(addr, "/auth/api/second-factor/passkeys", &[&session]));
    let names: Vec<&str> = listed["passkeys"]
        .as_array()
        .expect("passkeys")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Laptop", "Phone"]);
    let laptop_id = listed["passkeys"][0]["id"].as_str().expect("id");
    let removed = send_json(
        addr,
        "DELETE",
        &format!("/auth/api/second-factor/passkeys/{laptop_id}"),
        "",
        &[ORIGIN, &session],
    );
    assert_eq!(removed.status, 204, "{}", removed.body);
    assert_eq!(
        passwordless(&mut laptop, false).status,
        401,
        "a removed passkey"
    );
    assert_eq!(passwordless(&mut phone, false).status, 200);
}
