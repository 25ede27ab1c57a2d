//! What the gateway pays to verify a credential it has seen in the last second: an API key
//! (checksum, HMAC under the pepper, cache read, admission checks) and a session (SHA-256 of
//! the token, cache read), as each keyed or cookie request runs them.
//! Run with `cargo run --release -p portcullis-identity --example verify_bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_core::SystemClock;
use portcullis_identity::api_keys::{ApiKeyConfig, ApiKeys, KeyOwner, NewApiKey};
use portcullis_identity::password::{HashParams, PasswordHasher, PasswordPolicy};
use portcullis_identity::{
    ClientInfo, Identity, IdentityConfig, LoginOutcome, NewAccount, Registration,
};
use portcullis_store::{Store, StoreConfig};

const ROUNDS: u32 = 1_000_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("portcullis-verifybench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::connect(&StoreConfig::sqlite_in(&dir)).await?;
    store.migrate().await?;

    let keys = ApiKeys::new(
        store.clone(),
        ApiKeyConfig::default(),
        b"benchmark server key",
        Arc::new(SystemClock),
    );
    let (_, key) = keys
        .create(NewApiKey {
            name: "bench".into(),
            owner: KeyOwner::Service("bench".into()),
            scopes: vec!["customers:read".into()],
            expires_in: Some(Duration::from_secs(3600)),
            networks: vec!["127.0.0.0/8".parse()?],
        })
        .await?;
    keys.load(&key).await??;
    let ip = "127.0.0.1".parse()?;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let Some(found) = keys.cached(std::hint::black_box(&key))? else {
            return Err("API key cache miss".into());
        };
        keys.admit(&found, ip)?;
    }
    let each = started.elapsed() / ROUNDS;
    println!("API key verification on a cache hit: {each:?} per key ({ROUNDS} rounds)");

    let cheap = HashParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    let identity = Identity::new(
        store,
        PasswordHasher::new(cheap, 1, 8)?,
        IdentityConfig {
            registration: Registration::Off,
            policy: PasswordPolicy::default(),
            session_idle: Duration::from_secs(3600),
            session_absolute: Duration::from_secs(86_400),
            max_sessions: 10,
            require_verified_email: false,
            step_up_window: Duration::from_secs(600),
        },
        Arc::new(SystemClock),
    );
    let password = "velvet tractor orbits quietly";
    identity
        .create_account(NewAccount {
            email: "bench@example.com",
            display_name: "Bench",
            password: Some(password),
            roles: vec!["user".into()],
            email_verified: true,
        })
        .await?;
    let client = ClientInfo {
        ip,
        device: None,
        user_agent: None,
        proven: false,
        trusted_device: None,
    };
    let LoginOutcome::Success(logged_in) = identity
        .login("bench@example.com", password, &client)
        .await?
    else {
        return Err("login failed".into());
    };
    let token = logged_in.token;
    identity.authenticate_session(&token).await?;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        if identity
            .cached_session(std::hint::black_box(&token))
            .is_none()
        {
            // The entry is a second old: read it again, as the gateway would.
            identity.authenticate_session(&token).await?;
        }
    }
    let each = started.elapsed() / ROUNDS;
    println!("session verification on a cache hit: {each:?} per session ({ROUNDS} rounds)");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
