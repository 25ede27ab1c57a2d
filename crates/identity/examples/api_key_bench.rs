//! What verifying an API key costs on a cache hit: the checksum, the HMAC under the pepper,
//! the cache read and the admission checks, as the gateway runs them on every keyed request.
//! Run with `cargo run --release -p portcullis-identity --example api_key_bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_core::SystemClock;
use portcullis_identity::api_keys::{ApiKeyConfig, ApiKeys, KeyOwner, NewApiKey};
use portcullis_store::{Store, StoreConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("portcullis-keybench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::connect(&StoreConfig::sqlite_in(&dir)).await?;
    store.migrate().await?;
    let keys = ApiKeys::new(
        store,
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
    let rounds = 1_000_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        let cached = keys.cached(std::hint::black_box(&key))?;
        let Some(found) = cached else {
            return Err("cache miss".into());
        };
        keys.admit(&found, ip)?;
    }
    let each = started.elapsed() / rounds;
    println!("API key verification on a cache hit: {each:?} per key ({rounds} rounds)");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
