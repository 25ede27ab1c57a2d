//! Password hashing: Argon2id for every password we set, and verification of the hashes other
//! backends exported (bcrypt, Argon2, PBKDF2-SHA256 as passlib, Django and Werkzeug write it),
//! so that their users log in unchanged and are rehashed at that login.
//!
//! Hashing runs on the blocking pool, at most `threads` at a time, with at most `queue` more
//! waiting: a login flood gets "busy" answers instead of starving the proxy of threads and
//! memory. Imported hashes are checked against cost bounds before they are accepted, since a
//! hostile import could otherwise ask for gigabytes of memory or hours of CPU per login.
//!
//! The format headers (`$2b$12$`, `$pbkdf2-sha256$29000$`, ...) are parsed here; every
//! computation and comparison is the RustCrypto crates' (`argon2`, `bcrypt`, `pbkdf2`, `subtle`).

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};
use base64::Engine as _;
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

/// Argon2id cost. The default is OWASP's first recommendation (m=19456 KiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP Password Storage Cheat Sheet: Argon2id, 19 MiB, 2 iterations, 1 lane.
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
}

impl Default for HashParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// The most an imported hash may cost to verify, per algorithm.
const MAX_ARGON2_MEMORY_KIB: u32 = 262_144;
const MAX_ARGON2_ITERATIONS: u32 = 16;
const MAX_ARGON2_PARALLELISM: u32 = 16;
const MAX_BCRYPT_COST: u32 = 14;
const MAX_PBKDF2_ITERATIONS: u32 = 2_000_000;

/// Why a hash could not be computed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes are running or waiting.
    #[error("the password hashing pool is saturated")]
    Busy,
    /// The stored hash is in no format we read, or its cost is over the bounds.
    #[error("unsupported or malformed password hash: {0}")]
    Unsupported(&'static str),
    /// The hashing library failed (bad parameters).
    #[error("password hashing failed: {0}")]
    Library(String),
}

/// What a stored hash said about a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password (or no stored hash).
    No,
    /// Right password; `rehash` when the hash's algorithm or cost is not the current one.
    Yes {
        /// The password should be hashed again with the current parameters.
        rehash: bool,
    },
}

/// The formats a stored hash can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFormat {
    /// `$argon2id$...`, `$argon2i$...`, `$argon2d$...`.
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
    /// `$pbkdf2-sha256$` (passlib), `pbkdf2_sha256$` (Django), `pbkdf2:sha256:` (Werkzeug).
    Pbkdf2Sha256,
}

/// Hashes and verifies passwords in a bounded pool.
#[derive(Clone)]
pub struct PasswordHasher {
    params: HashParams,
    argon2: Arc<Argon2<'static>>,
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    /// A hash of nothing anyone knows, checked when the account does not exist, so that an
    /// unknown account costs the same time as a wrong password.
    dummy: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with `params`, running at most `threads` hashes at once and queueing `queue`.
    pub fn new(params: HashParams, threads: usize, queue: usize) -> Result<Self, HashError> {
        let argon2 = Arc::new(argon2_with(params)?);
        let dummy_secret = crate::token::random_token();
        let dummy = hash_now(&argon2, &dummy_secret)?;
        Ok(Self {
            params,
            argon2,
            running: Arc::new(Semaphore::new(threads.max(1))),
            waiting: Arc::new(Semaphore::new(threads.max(1) + queue)),
            dummy: dummy.into(),
        })
    }

    /// The current parameters.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// A new Argon2id PHC string for `password`.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        let password = zeroize::Zeroizing::new(password.to_owned());
        self.run(move || hash_now(&argon2, &password)).await
    }

    /// Checks `password` against `stored`; with no stored hash, checks a dummy so that the
    /// answer takes as long as a real one.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        let known = stored.is_some();
        let stored: Arc<str> = stored.map_or_else(|| self.dummy.clone(), Arc::from);
        let password = zeroize::Zeroizing::new(password.to_owned());
        let params = self.params;
        let verified = self
            .run(move || verify_now(&password, &stored, params))
            .await?;
        Ok(if known { verified } else { Verified::No })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _queued = self.waiting.try_acquire().map_err(|_| HashError::Busy)?;
        let _running = self.running.acquire().await.map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| HashError::Library(e.to_string()))?
    }
}

fn argon2_with(params: HashParams) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| HashError::Library(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(argon2: &Argon2<'static>, password: &str) -> Result<String, HashError> {
    argon2
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Library(e.to_string()))
}

/// Which format `stored` is in, after checking that its cost is within the bounds.
pub fn check_importable(stored: &str) -> Result<HashFormat, HashError> {
    if stored.starts_with("$argon2") {
        let cost = argon2_cost(stored)?;
        if cost.memory_kib > MAX_ARGON2_MEMORY_KIB
            || cost.iterations > MAX_ARGON2_ITERATIONS
            || cost.parallelism > MAX_ARGON2_PARALLELISM
        {
            return Err(HashError::Unsupported("argon2 cost over the import bounds"));
        }
        PasswordHash::new(stored).map_err(|_| HashError::Unsupported("malformed argon2 hash"))?;
        Ok(HashFormat::Argon2)
    } else if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|p| stored.strip_prefix(p))
    {
        let cost: u32 = rest
            .get(..2)
            .and_then(|c| c.parse().ok())
            .ok_or(HashError::Unsupported("malformed bcrypt hash"))?;
        if !(4..=MAX_BCRYPT_COST).contains(&cost) || stored.len() != 60 {
            return Err(HashError::Unsupported("bcrypt cost over the import bounds"));
        }
        Ok(HashFormat::Bcrypt)
    } else if Pbkdf2::parse(stored).is_some() {
        Ok(HashFormat::Pbkdf2Sha256)
    } else {
        Err(HashError::Unsupported("unknown hash format"))
    }
}

fn verify_now(password: &str, stored: &str, current: HashParams) -> Result<Verified, HashError> {
    let format = check_importable(stored)?;
    let ok = match format {
        HashFormat::Argon2 => {
            let parsed = PasswordHash::new(stored)
                .map_err(|_| HashError::Unsupported("malformed argon2 hash"))?;
            // The hash names its own variant and cost; the instance's are not used.
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        }
        HashFormat::Bcrypt => bcrypt::verify(password, stored).unwrap_or(false),
        HashFormat::Pbkdf2Sha256 => Pbkdf2::parse(stored).is_some_and(|p| p.verify(password)),
    };
    if !ok {
        return Ok(Verified::No);
    }
    let rehash = format != HashFormat::Argon2
        || !stored.starts_with("$argon2id$")
        || argon2_cost(stored)? != current;
    Ok(Verified::Yes { rehash })
}

/// The `m`, `t`, `p` of an Argon2 PHC string.
fn argon2_cost(stored: &str) -> Result<HashParams, HashError> {
    let bad = HashError::Unsupported("malformed argon2 parameters");
    let fields = stored
        .split('$')
        .find(|field| field.starts_with("m="))
        .ok_or(HashError::Unsupported("malformed argon2 parameters"))?;
    let mut cost = HashParams {
        memory_kib: 0,
        iterations: 0,
        parallelism: 0,
    };
    for pair in fields.split(',') {
        let (name, value) = pair
            .split_once('=')
            .ok_or(HashError::Unsupported("malformed argon2 parameters"))?;
        let value: u32 = value
            .parse()
            .map_err(|_| HashError::Unsupported("malformed argon2 parameters"))?;
        match name {
            "m" => cost.memory_kib = value,
            "t" => cost.iterations = value,
            "p" => cost.parallelism = value,
            _ => {}
        }
    }
    if cost.memory_kib == 0 || cost.iterations == 0 || cost.parallelism == 0 {
        return Err(bad);
    }
    Ok(cost)
}

/// A PBKDF2-HMAC-SHA256 hash in one of the three formats Python backends write.
struct Pbkdf2 {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl Pbkdf2 {
    fn parse(stored: &str) -> Option<Self> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64_nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
        let parsed = if let Some(rest) = stored.strip_prefix("$pbkdf2-sha256$") {
            // passlib: `$pbkdf2-sha256$29000$<ab64 salt>$<ab64 hash>`, ab64 = base64 with `.`.
            let mut parts = rest.split('$');
            let iterations = parts.next()?.parse().ok()?;
            let salt = b64_nopad.decode(parts.next()?.replace('.', "+")).ok()?;
            let hash = b64_nopad.decode(parts.next()?.replace('.', "+")).ok()?;
            parts.next().is_none().then_some(Self {
                iterations,
                salt,
                hash,
            })
        } else if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
            // Django: `pbkdf2_sha256$<iterations>$<salt text>$<base64 hash>`.
            let mut parts = rest.split('$');
            let iterations = parts.next()?.parse().ok()?;
            let salt = parts.next()?.as_bytes().to_vec();
            let hash = b64.decode(parts.next()?).ok()?;
            parts.next().is_none().then_some(Self {
                iterations,
                salt,
                hash,
            })
        } else if let Some(rest) = stored.strip_prefix("pbkdf2:sha256:") {
            // Werkzeug (Flask): `pbkdf2:sha256:<iterations>$<salt text>$<hex hash>`.
            let mut parts = rest.split('$');
            let iterations = parts.next()?.parse().ok()?;
            let salt = parts.next()?.as_bytes().to_vec();
            let hash = hex::decode(parts.next()?).ok()?;
            parts.next().is_none().then_some(Self {
                iterations,
                salt,
                hash,
            })
        } else {
            None
        }?;
        let sane = (1..=MAX_PBKDF2_ITERATIONS).contains(&parsed.iterations)
            && (16..=64).contains(&parsed.hash.len())
            && !parsed.salt.is_empty();
        sane.then_some(parsed)
    }

    fn verify(&self, password: &str) -> bool {
        let mut derived = vec![0u8; self.hash.len()];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            password.as_bytes(),
            &self.salt,
            self.iterations,
            &mut derived,
        );
        derived.ct_eq(&self.hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: these tests are about formats, not about cost.
    const CHEAP: HashParams = HashParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(CHEAP, 2, 8).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn verify(password: &str, stored: &str) -> Verified {
        hasher()
            .verify(password, Some(stored))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn argon2id_round_trip_without_rehash() {
        let hasher = hasher();
        let hash = hasher.hash("correct horse").await.unwrap_or_default();
        assert!(hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{hash}");
        assert_eq!(
            hasher.verify("correct horse", Some(&hash)).await.ok(),
            Some(Verified::Yes { rehash: false })
        );
        assert_eq!(
            hasher.verify("wrong horse", Some(&hash)).await.ok(),
            Some(Verified::No)
        );
    }

    #[tokio::test]
    async fn other_parameters_ask_for_a_rehash() {
        let other = PasswordHasher::new(
            HashParams {
                memory_kib: 512,
                ..CHEAP
            },
            1,
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let hash = other.hash("pw").await.unwrap_or_default();
        assert_eq!(verify("pw", &hash).await, Verified::Yes { rehash: true });
    }

    #[tokio::test]
    async fn bcrypt_imports_verify_and_ask_for_a_rehash() {
        // The `$2b$` form Python's bcrypt writes, and the `$2a$` form of older libraries.
        let stored = bcrypt::hash_with_result("hunter2", 4)
            .map(|h| h.format_for_version(bcrypt::Version::TwoB))
            .unwrap_or_default();
        assert_eq!(
            verify("hunter2", &stored).await,
            Verified::Yes { rehash: true }
        );
        assert_eq!(verify("hunter3", &stored).await, Verified::No);
        let two_a = stored.replacen("$2b$", "$2a$", 1);
        assert_eq!(
            verify("hunter2", &two_a).await,
            Verified::Yes { rehash: true }
        );
    }

    #[tokio::test]
    async fn pbkdf2_in_the_three_python_formats() {
        // Values computed with Python's hashlib.pbkdf2_hmac("sha256", b"hunter2", salt, 1000).
        let django = "pbkdf2_sha256$1000$somesalt$unR7NQbeRInFLZrE4DCAQXAoAxjwlebIFHBOPWyprZo=";
        let werkzeug = "pbkdf2:sha256:1000$somesalt$ba747b3506de4489c52d9ac4e030804170280318f095e6c814704e3d6ca9ad9a";
        let passlib = "$pbkdf2-sha256$1000$c29tZXNhbHQ$unR7NQbeRInFLZrE4DCAQXAoAxjwlebIFHBOPWyprZo";
        for stored in [django, werkzeug, passlib] {
            assert_eq!(
                verify("hunter2", stored).await,
                Verified::Yes { rehash: true },
                "{stored}"
            );
            assert_eq!(verify("hunter3", stored).await, Verified::No, "{stored}");
        }
    }

    #[test]
    fn costly_imports_are_refused() {
        let huge_argon2 =
            "$argon2id$v=19$m=4194304,t=3,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(matches!(
            check_importable(huge_argon2),
            Err(HashError::Unsupported(_))
        ));
        let bcrypt_31 = format!("$2b$31${}", "a".repeat(53));
        assert!(matches!(
            check_importable(&bcrypt_31),
            Err(HashError::Unsupported(_))
        ));
        let pbkdf2_huge =
            "pbkdf2_sha256$900000000$somesalt$EVu/zf7bPEaEZQX6uyBlD4H1s/lWO4v7Fu1GeJCjExs=";
        assert!(check_importable(pbkdf2_huge).is_err());
        assert!(check_importable("md5$abc").is_err());
        assert!(check_importable("").is_err());
    }

    #[tokio::test]
    async fn an_unknown_account_is_never_verified() {
        assert_eq!(
            hasher().verify("anything", None).await.ok(),
            Some(Verified::No)
        );
    }

    #[tokio::test]
    async fn a_saturated_pool_answers_busy() {
        let hasher = PasswordHasher::new(
            HashParams {
                memory_kib: 8192,
                iterations: 4,
                ..CHEAP
            },
            1,
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let runs: Vec<_> = (0..6)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("pw").await })
            })
            .collect();
        let mut busy = 0;
        for run in runs {
            if matches!(run.await, Ok(Err(HashError::Busy))) {
                busy += 1;
            }
        }
        assert!(
            busy > 0,
            "six hashes at once through one slot and no queue: some must be refused"
        );
    }
}
