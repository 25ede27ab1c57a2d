//! Access tokens: Ed25519-signed JWTs (EdDSA) with `kid`, `iss`, `aud`, `sub`, `jti`, roles and
//! scopes, 15 minutes by default; the JWKS that publishes their public keys, retired keys
//! included until their last token has expired; opaque refresh tokens rotated on every use,
//! whose reuse revokes their whole family; revocation by `jti`, checked on every use.
//!
//! Verification accepts only EdDSA and only keys of our key ring: `alg: none`, HS256 signed
//! with the public key (key confusion), RS256 and unknown `kid`s are refused before any
//! signature is checked. Private keys are stored sealed (ChaCha20-Poly1305 under a key derived
//! from the server key); signing, sealing and randomness are aws-lc-rs's, JWT encoding is
//! jsonwebtoken's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use portcullis_core::Clock;
use portcullis_store::{RefreshUse, SigningKeyRow, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::seal::Sealer;
use crate::token::{random_id, random_token, token_hash};

/// Associated data of sealed signing keys.
const SIGNING_KEY_AAD: &[u8] = b"ed25519";

/// Lifetimes and names of the tokens.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `iss` of every token, and what verification requires.
    pub issuer: String,
    /// `aud` of access tokens, and what verification requires.
    pub audience: String,
    /// Access-token lifetime (15 minutes).
    pub access_lifetime: Duration,
    /// Refresh-token lifetime (7 days).
    pub refresh_lifetime: Duration,
    /// Lifetime of the identity token sent to upstreams (1 minute).
    pub identity_lifetime: Duration,
}

/// Clock skew tolerated between instances, in seconds.
const LEEWAY_SECONDS: i64 = 5;

/// The `aud` of the identity tokens the gateway sends upstream.
pub const UPSTREAM_AUDIENCE: &str = "portcullis-upstream";

/// The claims of our tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Account id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Token id, for revocation.
    pub jti: String,
    /// `access` or `identity`.
    pub typ: String,
    /// E-mail address.
    #[serde(default)]
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How the caller authenticated (identity tokens): `session`, `token`, `api_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, wrong algorithm, issuer, audience or type, or expired.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Its `jti` was revoked.
    #[error("the token was revoked")]
    Revoked,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be made, sealed or opened.
    #[error("signing key: {0}")]
    Key(String),
}

/// Who a token is for.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Account id.
    pub id: &'a str,
    /// E-mail address.
    pub email: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Roles.
    pub roles: &'a [String],
    /// Scopes.
    pub scopes: &'a [String],
}

/// The key ring: the active signing key and every key still verifying.
struct Ring {
    kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
}

/// Issues and verifies tokens; cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
    config: Arc<TokenConfig>,
    seal: Arc<Sealer>,
    ring: Arc<RwLock<Ring>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now_ms(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

impl Tokens {
    /// Loads the key ring from the store, making a first key if there is none, or a new one if
    /// the active key cannot be opened with this server key.
    pub async fn load(
        store: Store,
        config: TokenConfig,
        server_key: &[u8],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TokenError> {
        let seal = Arc::new(Sealer::new(server_key, b"portcullis signing keys v1"));
        let ring = match build_ring(&store, &config, &seal, clock.as_ref()).await? {
            Some(ring) => ring,
            None => {
                rotate_in(&store, &seal, clock.as_ref()).await?;
                build_ring(&store, &config, &seal, clock.as_ref())
                    .await?
                    .ok_or_else(|| TokenError::Key("the new key cannot be opened".into()))?
            }
        };
        Ok(Self {
            store,
            config: Arc::new(config),
            seal,
            ring: Arc::new(RwLock::new(ring)),
            clock,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// Makes a new active key; the old one keeps verifying until its tokens have expired.
    pub async fn rotate(&self) -> Result<String, TokenError> {
        let kid = rotate_in(&self.store, &self.seal, self.clock.as_ref()).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Reads the key ring again (another instance may have rotated it).
    pub async fn reload(&self) -> Result<(), TokenError> {
        if let Some(ring) =
            build_ring(&self.store, &self.config, &self.seal, self.clock.as_ref()).await?
        {
            *self
                .ring
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = ring;
        }
        Ok(())
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .jwks
            .clone()
    }

    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let ring = self
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(ring.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &ring.signing)
            .map_err(|e| TokenError::Key(e.to_string()))
    }

    fn claims(
        &self,
        subject: &Subject<'_>,
        typ: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Claims {
        let now = self.clock.now().unix_timestamp();
        Claims {
            iss: self.config.issuer.clone(),
            aud: audience.to_owned(),
            sub: subject.id.to_owned(),
            exp: now.saturating_add(seconds(lifetime)),
            iat: now,
            nbf: now,
            jti: random_id(),
            typ: typ.to_owned(),
            email: subject.email.to_owned(),
            name: subject.name.to_owned(),
            roles: subject.roles.to_vec(),
            scopes: subject.scopes.to_vec(),
            auth: None,
        }
    }

    /// A new access token for `subject`.
    pub fn issue_access(&self, subject: &Subject<'_>) -> Result<(String, Claims), TokenError> {
        let claims = self.claims(
            subject,
            "access",
            &self.config.audience,
            self.config.access_lifetime,
        );
        Ok((self.sign(&claims)?, claims))
    }

    /// A short-lived identity token for the upstream, saying who the caller is and how they
    /// authenticated; the upstream checks it against the JWKS. An Ed25519 signature costs tens
    /// of microseconds, more than the rest of a proxied request, so the gateway reuses a
    /// caller's token for the first half of its life (`iat`..`exp` in the claims).
    pub fn issue_identity(
        &self,
        subject: &Subject<'_>,
        auth: &str,
    ) -> Result<(String, Claims), TokenError> {
        let mut claims = self.claims(
            subject,
            "identity",
            UPSTREAM_AUDIENCE,
            self.config.identity_lifetime,
        );
        claims.auth = Some(auth.to_owned());
        Ok((self.sign(&claims)?, claims))
    }

    /// Verifies an access token: algorithm, key, signature, issuer, audience, expiry, type,
    /// and that its `jti` is not revoked.
    pub async fn verify_access(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verify(token, &self.config.audience, "access").await?;
        if self.store.is_jti_revoked(&claims.jti).await? {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Verifies a token's signature and claims, without the revocation check.
    pub async fn verify(
        &self,
        token: &str,
        audience: &str,
        typ: &str,
    ) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let known = self
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verifying
            .contains_key(&kid);
        if !known {
            // Another instance may have rotated; one reload, then the kid must be ours.
            self.reload().await?;
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        // Times are checked below against our clock, the one that issued them.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = {
            let ring = self
                .ring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let key = ring
                .verifying
                .get(&kid)
                .ok_or_else(|| TokenError::Invalid("unknown kid".into()))?;
            jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map_err(|e| TokenError::Invalid(e.to_string()))?
                .claims
        };
        if claims.typ != typ {
            return Err(TokenError::Invalid(format!(
                "a {} token where {typ} is needed",
                claims.typ
            )));
        }
        let now = self.clock.now().unix_timestamp();
        if now >= claims.exp.saturating_add(LEEWAY_SECONDS) {
            return Err(TokenError::Invalid("expired".into()));
        }
        if now.saturating_add(LEEWAY_SECONDS) < claims.nbf {
            return Err(TokenError::Invalid("not valid yet".into()));
        }
        Ok(claims)
    }

    /// Revokes an access token until it expires.
    pub async fn revoke(&self, claims: &Claims) -> Result<(), TokenError> {
        let expires = claims.exp.saturating_mul(1000);
        self.store
            .revoke_jti(&claims.jti, expires, now_ms(self.clock.as_ref()))
            .await?;
        Ok(())
    }

    /// A new refresh token in `family` (a new family when `None`).
    pub async fn issue_refresh(
        &self,
        account_id: &str,
        family: Option<&str>,
    ) -> Result<String, TokenError> {
        let token = random_token();
        let family = family.map_or_else(random_id, str::to_owned);
        let now = now_ms(self.clock.as_ref());
        self.store
            .insert_refresh_token(
                &token_hash(&token),
                &family,
                account_id,
                now,
                now.saturating_add(millis(self.config.refresh_lifetime)),
            )
            .await?;
        Ok(token)
    }

    /// Uses a refresh token (see [`Store::use_refresh_token`]).
    pub async fn use_refresh(&self, token: &str) -> Result<RefreshUse, TokenError> {
        Ok(self
            .store
            .use_refresh_token(&token_hash(token), now_ms(self.clock.as_ref()))
            .await?)
    }

    /// Revokes the family of a refresh token; returns how many tokens it held.
    pub async fn revoke_refresh(&self, token: &str) -> Result<u64, TokenError> {
        match self.store.refresh_family(&token_hash(token)).await? {
            Some(family) => Ok(self.store.delete_refresh_family(&family).await?),
            None => Ok(0),
        }
    }
}

/// Generates and stores a new active key; returns its kid.
async fn rotate_in(store: &Store, seal: &Sealer, clock: &dyn Clock) -> Result<String, TokenError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| TokenError::Key(e.to_string()))?;
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| TokenError::Key(e.to_string()))?;
    let sealed = seal
        .seal(pkcs8.as_ref(), SIGNING_KEY_AAD)
        .map_err(|e| TokenError::Key(e.to_string()))?;
    let created_at = now_ms(clock);
    let kid = format!("k{created_at:x}{}", &random_id()[..8]);
    let row = SigningKeyRow {
        kid: kid.clone(),
        private_key: sealed,
        public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        created_at,
        retired_at: None,
    };
    store.rotate_signing_key(&row).await?;
    Ok(kid)
}

/// The ring from the store: `None` when there is no active key this server key can open.
async fn build_ring(
    store: &Store,
    config: &TokenConfig,
    seal: &Sealer,
    clock: &dyn Clock,
) -> Result<Option<Ring>, TokenError> {
    // Retired keys verify until the last token they signed has expired.
    let horizon = now_ms(clock)
        .saturating_sub(millis(config.access_lifetime.max(config.identity_lifetime)) + 60_000);
    let keys = store.signing_keys(horizon).await?;
    let Some(active) = keys.iter().find(|k| k.retired_at.is_none()) else {
        return Ok(None);
    };
    let Some(pkcs8) = seal.open(&active.private_key, SIGNING_KEY_AAD) else {
        tracing::warn!(
            kid = active.kid,
            "the active signing key cannot be opened with this server key; making a new one"
        );
        return Ok(None);
    };
    let mut verifying = HashMap::new();
    let mut jwks = Vec::new();
    for key in &keys {
        let decoding = DecodingKey::from_ed_components(&key.public_key)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        verifying.insert(key.kid.clone(), decoding);
        jwks.push(serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": key.public_key,
            "kid": key.kid,
            "alg": "EdDSA",
            "use": "sig",
        }));
    }
    Ok(Some(Ring {
        kid: active.kid.clone(),
        signing: EncodingKey::from_ed_der(&pkcs8),
        verifying,
        jwks: serde_json::json!({ "keys": jwks }),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use hmac::{KeyInit as _, Mac as _};

    use super::*;

    /// A clock the test moves.
    struct TestClock(AtomicI64);

    impl Clock for TestClock {
        fn now(&self) -> time::OffsetDateTime {
            time::OffsetDateTime::from_unix_timestamp(self.0.load(Ordering::SeqCst))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        }
    }

    async fn tokens(tag: &str) -> (Tokens, Arc<TestClock>) {
        let dir =
            std::env::temp_dir().join(format!("portcullis-tokens-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::connect(&portcullis_store::StoreConfig::sqlite_in(&dir))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
        let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000)));
        let config = TokenConfig {
            issuer: "https://id.example".into(),
            audience: "https://api.example".into(),
            access_lifetime: Duration::from_secs(900),
            refresh_lifetime: Duration::from_secs(7 * 86400),
            identity_lifetime: Duration::from_secs(60),
        };
        let tokens = Tokens::load(
            store,
            config,
            b"server key for the tests, 32 bytes",
            clock.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        (tokens, clock)
    }

    const ROLES: &[String] = &[];

    fn subject() -> Subject<'static> {
        Subject {
            id: "acct-1",
            email: "a@example.com",
            name: "A",
            roles: ROLES,
            scopes: ROLES,
        }
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// A token with this header and these claims, signed with HMAC-SHA256 under `secret`.
    fn hs256(header: &str, claims: &str, secret: &[u8]) -> String {
        let signing_input = format!("{}.{}", b64(header), b64(claims));
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap_or_else(|e| panic!("{e}"));
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[tokio::test]
    async fn identity_tokens_say_how_the_caller_authenticated_and_verify() {
        let (tokens, _clock) = tokens("identity").await;
        let (token, claims) = tokens
            .issue_identity(&subject(), "api_key")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims.exp - claims.iat, 60);
        let verified = tokens
            .verify(&token, UPSTREAM_AUDIENCE, "identity")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verified.auth.as_deref(), Some("api_key"));
        assert_eq!(verified.jti, claims.jti);
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_every_forgery_is_refused() {
        let (tokens, clock) = tokens("forgery").await;
        let (jwt, claims) = tokens
            .issue_access(&subject())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tokens.verify_access(&jwt).await.ok(), Some(claims.clone()));
        let kid = tokens
            .ring
            .read()
            .map(|r| r.kid.clone())
            .unwrap_or_default();
        let body = serde_json::to_string(&claims).unwrap_or_default();

        // alg none, with and without a signature.
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&body));
        assert!(tokens.verify_access(&none).await.is_err(), "alg none");
        // HS256 keyed with our public key (algorithm confusion), with our kid.
        let public = tokens.jwks()["keys"][0]["x"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let confused = hs256(
            &format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
            &body,
            public.as_bytes(),
        );
        assert!(
            tokens.verify_access(&confused).await.is_err(),
            "HS256 with the public key"
        );
        // RS256 header on our signature.
        let parts: Vec<&str> = jwt.split('.').collect();
        let rs = format!(
            "{}.{}.{}",
            b64(&format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#)),
            parts[1],
            parts[2]
        );
        assert!(tokens.verify_access(&rs).await.is_err(), "RS256");
        // A changed payload under the old signature.
        let mut admin = claims.clone();
        admin.roles = vec!["admin".into()];
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_string(&admin).unwrap_or_default()),
            parts[2]
        );
        assert!(tokens.verify_access(&tampered).await.is_err(), "tampered");
        // Unknown kid.
        let unknown = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"EdDSA","kid":"nope"}"#),
            parts[1],
            parts[2]
        );
        assert!(tokens.verify_access(&unknown).await.is_err(), "unknown kid");
        // Wrong audience and issuer: signed by us, meant for elsewhere.
        for (audience, issuer) in [
            ("https://other.example", "https://id.example"),
            ("https://api.example", "https://evil.example"),
        ] {
            let mut other = claims.clone();
            other.aud = audience.into();
            other.iss = issuer.into();
            let signed = tokens.sign(&other).unwrap_or_default();
            assert!(
                tokens.verify_access(&signed).await.is_err(),
                "{audience} {issuer}"
            );
        }
        // An identity token is not an access token.
        let (identity, _) = tokens
            .issue_identity(&subject(), "session")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            tokens.verify_access(&identity).await.is_err(),
            "identity as access"
        );
        assert!(
            tokens
                .verify(&identity, UPSTREAM_AUDIENCE, "identity")
                .await
                .is_ok()
        );
        // Expired (past the 5 s leeway).
        clock.0.fetch_add(900 + 6, Ordering::SeqCst);
        assert!(
            matches!(
                tokens.verify_access(&jwt).await,
                Err(TokenError::Invalid(_))
            ),
            "expired"
        );
    }

    #[tokio::test]
    async fn revoked_ids_are_refused() {
        let (tokens, _) = tokens("revoke").await;
        let (jwt, claims) = tokens
            .issue_access(&subject())
            .unwrap_or_else(|e| panic!("{e}"));
        tokens
            .revoke(&claims)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            tokens.verify_access(&jwt).await,
            Err(TokenError::Revoked)
        ));
    }

    #[tokio::test]
    async fn rotated_keys_keep_verifying_their_tokens() {
        let (tokens, _) = tokens("rotate").await;
        let (old, _) = tokens
            .issue_access(&subject())
            .unwrap_or_else(|e| panic!("{e}"));
        tokens.rotate().await.unwrap_or_else(|e| panic!("{e}"));
        let (new, _) = tokens
            .issue_access(&subject())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tokens.jwks()["keys"].as_array().map(Vec::len), Some(2));
        assert!(tokens.verify_access(&old).await.is_ok());
        assert!(tokens.verify_access(&new).await.is_ok());
    }

    #[tokio::test]
    async fn refresh_reuse_revokes_the_family() {
        let (tokens, _) = tokens("refresh").await;
        let account = portcullis_store::AccountRow {
            id: "acct-1".into(),
            email: "a@example.com".into(),
            display_name: "A".into(),
            roles: vec![],
            status: "active".into(),
            email_verified: true,
            password_hash: None,
            created_at: 0,
            updated_at: 0,
        };
        tokens
            .store
            .insert_account(&account)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let first = tokens
            .issue_refresh("acct-1", None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let RefreshUse::Fresh { family_id, .. } = tokens
            .use_refresh(&first)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("first use must be fresh");
        };
        let second = tokens
            .issue_refresh("acct-1", Some(&family_id))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The first token again: a thief or the owner, either way the family is gone.
        assert!(matches!(
            tokens.use_refresh(&first).await,
            Ok(RefreshUse::Reused { .. })
        ));
        assert!(matches!(
            tokens.use_refresh(&second).await,
            Ok(RefreshUse::Invalid)
        ));
    }
}
