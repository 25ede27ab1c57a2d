//! API keys for machine clients (B2B integrations, services).
//!
//! **Format**: `pc_` (configurable), 43 random base62 characters (256 bits of entropy), and a
//! 6-character base62 CRC32 of everything before it, as GitHub's tokens are built. Secret
//! scanners recognise a leaked key offline, and a mistyped or mutated key is refused by its
//! checksum without a store lookup. The checksum is not a secret and protects nothing against
//! an attacker; the 256 random bits do.
//!
//! **Storage**: only HMAC-SHA256(pepper, key), with the pepper derived from the server key, so
//! a stolen database yields no usable key and cannot be brute-forced offline without the key.
//! Lookup is by that hash: an attacker who cannot invert HMAC learns nothing from how long a
//! lookup takes, and the stored hash is compared in constant time all the same.
//!
//! **Cache**: verified keys are kept in memory by hash, so a request with a known key costs an
//! HMAC and a hash-map read. Each gateway polls the store for keys changed since its last poll
//! ([`ApiKeys::watch`], every 250 ms), so a revocation by any instance or by the CLI takes
//! effect everywhere within a second; entries also expire after a minute, in case a poll is
//! missed. Unknown keys are remembered for a second, which bounds how often a client sending
//! well-formed unknown keys reaches the store. Last use is written in batches, every 5 s.
//!
//! The base62 text is written here: it is a dozen lines of digit arithmetic, not cryptography,
//! and no maintained crate encodes a fixed-width 32-bit checksum in base62.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hmac::Mac as _;
use ipnet::IpNet;
use portcullis_core::Clock;
use portcullis_store::{ApiKeyRow, Store, StoreError};
use rand::RngExt as _;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::token::random_id;

type HmacSha256 = hmac::Hmac<Sha256>;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a key: 43 × log2(62) ≈ 256 bits.
const SECRET_CHARS: usize = 43;
/// Characters of the checksum: 62^6 > 2^32.
const CHECKSUM_CHARS: usize = 6;
/// A cached key is read again after this long even without a change seen.
const CACHE_TTL_MS: i64 = 60_000;
/// An unknown key is looked up again after this long.
const UNKNOWN_TTL_MS: i64 = 1_000;
/// Changes are read back this far before the last poll, for clocks that differ a little.
const POLL_OVERLAP_MS: i64 = 5_000;

/// How API keys work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// Prefix of every key, e.g. `pc_` or the seed's `lgas_`.
    pub prefix: String,
    /// How long a rotated key keeps working by default.
    pub rotation_grace: Duration,
    /// Most keys kept in memory.
    pub cache_capacity: usize,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            prefix: "pc_".into(),
            rotation_grace: Duration::from_secs(24 * 3600),
            cache_capacity: 100_000,
        }
    }
}

/// Whether `prefix` can start a key: 2 to 16 lowercase letters or digits ending in `_`.
pub fn valid_prefix(prefix: &str) -> bool {
    let Some(stem) = prefix.strip_suffix('_') else {
        return false;
    };
    (1..=15).contains(&stem.len())
        && stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner {
    /// An account, by id.
    Account(String),
    /// A service account, by name.
    Service(String),
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// What it is for.
    pub name: String,
    /// Whose it is.
    pub owner: KeyOwner,
    /// What it may do.
    pub scopes: Vec<String>,
    /// How long it works; `None`: until revoked.
    pub expires_in: Option<Duration>,
    /// Networks it may be used from; empty: anywhere.
    pub networks: Vec<IpNet>,
}

/// A key as the gateway, the API and the CLI see it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    /// Random id.
    pub id: String,
    /// Prefix and first characters, to recognise it.
    pub hint: String,
    /// What it is for.
    pub name: String,
    /// The owning account's id.
    pub account_id: Option<String>,
    /// The owning account's e-mail address.
    pub owner_email: Option<String>,
    /// The owning service account.
    pub service: Option<String>,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Networks it may be used from; empty: anywhere.
    pub networks: Vec<IpNet>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
    /// Unix milliseconds.
    pub revoked_at: Option<i64>,
    /// The key that replaced it.
    pub rotated_to: Option<String>,
    /// Unix milliseconds (written in batches: up to a few seconds behind).
    pub last_used_at: Option<i64>,
    /// The last client address.
    pub last_used_ip: Option<String>,
    #[serde(skip)]
    owner_active: bool,
}

impl ApiKey {
    fn from_row(row: &ApiKeyRow) -> Self {
        Self {
            id: row.id.clone(),
            hint: row.hint.clone(),
            name: row.name.clone(),
            account_id: row.account_id.clone(),
            owner_email: row.owner_email.clone(),
            service: row.service.clone(),
            scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
            networks: row
                .networks
                .split(',')
                .filter_map(|net| net.trim().parse().ok())
                .collect(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            rotated_to: row.rotated_to.clone(),
            last_used_at: row.last_used_at,
            last_used_ip: row.last_used_ip.clone(),
            // A key of a locked or disabled account (or of a deleted one) does not work.
            owner_active: row.service.is_some() || row.owner_status.as_deref() == Some("active"),
        }
    }

    /// Who holds it, for identity headers: the account id, or `service:NAME`.
    pub fn subject(&self) -> String {
        match (&self.account_id, &self.service) {
            (Some(account), _) => account.clone(),
            (None, Some(service)) => format!("service:{service}"),
            (None, None) => String::new(),
        }
    }

    /// Whether it carries every one of `scopes`.
    pub fn has_scopes(&self, scopes: &[String]) -> bool {
        scopes.iter().all(|scope| self.scopes.contains(scope))
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyDenied {
    /// Not a key of this format, or its checksum does not match.
    #[error("malformed API key")]
    Malformed,
    /// No such key.
    #[error("unknown API key")]
    Unknown,
    /// Revoked.
    #[error("revoked API key")]
    Revoked,
    /// Past its expiry (or its rotation grace).
    #[error("expired API key")]
    Expired,
    /// Used from outside its networks.
    #[error("API key used from outside its networks")]
    Network,
    /// Its owner is locked or disabled.
    #[error("the API key's owner is not active")]
    OwnerInactive,
}

impl KeyDenied {
    /// The name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Network => "network",
            Self::OwnerInactive => "owner_inactive",
        }
    }
}

/// Failures of key administration.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such key, or not in a state for this change.
    #[error("no such active API key")]
    NotFound,
    /// A name or scope is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// What the cache holds for a hash.
#[derive(Debug, Clone)]
struct Cached {
    key: Option<Arc<ApiKey>>,
    loaded_ms: i64,
}

/// The API keys: verification from memory, administration through the store.
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    config: ApiKeyConfig,
    pepper: zeroize::Zeroizing<Vec<u8>>,
    cache: RwLock<HashMap<[u8; 32], Cached>>,
    /// Last uses not written yet: key id → (unix ms, client).
    uses: Mutex<HashMap<String, (i64, IpAddr)>>,
    /// Store reads made to verify keys (tests and metrics: a malformed key makes none).
    lookups: AtomicU64,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// Keys over `store`, hashed under a pepper derived from `server_key`.
    pub fn new(
        store: Store,
        config: ApiKeyConfig,
        server_key: &[u8],
        clock: Arc<dyn Clock>,
    ) -> Self {
        let pepper = zeroize::Zeroizing::new(
            crate::seal::derive(server_key, b"portcullis api-key pepper v1").to_vec(),
        );
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                pepper,
                cache: RwLock::default(),
                uses: Mutex::default(),
                lookups: AtomicU64::new(0),
            }),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    /// Store reads made so far to verify keys.
    pub fn store_lookups(&self) -> u64 {
        self.inner.lookups.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.inner.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    fn hash(&self, key: &str) -> [u8; 32] {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.inner.pepper)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `presented` looks like one of our keys: prefix, length, alphabet, checksum. No
    /// I/O.
    pub fn well_formed(&self, presented: &str) -> bool {
        let Some(rest) = presented.strip_prefix(self.prefix()) else {
            return false;
        };
        if rest.len() != SECRET_CHARS + CHECKSUM_CHARS
            || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return false;
        }
        let body = &presented[..presented.len() - CHECKSUM_CHARS];
        checksum(body).as_bytes() == &presented.as_bytes()[body.len()..]
    }

    /// The key `presented` names, from memory: `Ok(None)` when it must be read from the store
    /// ([`ApiKeys::load`]). Refuses malformed keys without any I/O.
    pub fn cached(&self, presented: &str) -> Result<Option<Arc<ApiKey>>, KeyDenied> {
        if !self.well_formed(presented) {
            return Err(KeyDenied::Malformed);
        }
        let hash = self.hash(presented);
        let now = self.now_ms();
        let cache = self
            .inner
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(&hash) {
            Some(Cached {
                key: Some(key),
                loaded_ms,
            }) if now - loaded_ms < CACHE_TTL_MS => Ok(Some(key.clone())),
            Some(Cached {
                key: None,
                loaded_ms,
            }) if now - loaded_ms < UNKNOWN_TTL_MS => Err(KeyDenied::Unknown),
            _ => Ok(None),
        }
    }

    /// Reads the key `presented` names from the store into the cache.
    pub async fn load(
        &self,
        presented: &str,
    ) -> Result<Result<Arc<ApiKey>, KeyDenied>, StoreError> {
        if !self.well_formed(presented) {
            return Ok(Err(KeyDenied::Malformed));
        }
        let hash = self.hash(presented);
        self.inner.lookups.fetch_add(1, Ordering::Relaxed);
        let row = self.inner.store.api_key_by_hash(&hex::encode(hash)).await?;
        let key = row
            .filter(|row| {
                hex::decode(&row.key_hash).is_ok_and(|stored| bool::from(stored.ct_eq(&hash)))
            })
            .map(|row| Arc::new(ApiKey::from_row(&row)));
        let mut cache = self
            .inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: past capacity the cache starts over rather than grow; unknown keys are not
        // remembered once it is half full, so a flood of them cannot push known keys out.
        let capacity = self.inner.config.capacity();
        if key.is_some() || cache.len() < capacity / 2 {
            if cache.len() >= capacity {
                cache.clear();
            }
            cache.insert(
                hash,
                Cached {
                    key: key.clone(),
                    loaded_ms: self.now_ms(),
                },
            );
        }
        Ok(key.ok_or(KeyDenied::Unknown))
    }

    /// Whether `key` may be used now from `ip`; records the use when it may.
    pub fn admit(&self, key: &ApiKey, ip: IpAddr) -> Result<(), KeyDenied> {
        let now = self.now_ms();
        if key.revoked_at.is_some() {
            return Err(KeyDenied::Revoked);
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(KeyDenied::Expired);
        }
        if !key.owner_active {
            return Err(KeyDenied::OwnerInactive);
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if !key.networks.is_empty() && !key.networks.iter().any(|net| net.contains(&ip)) {
            return Err(KeyDenied::Network);
        }
        let mut uses = self
            .inner
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match uses.get_mut(&key.id) {
            Some(last) => *last = (now, ip),
            None => {
                uses.insert(key.id.clone(), (now, ip));
            }
        }
        Ok(())
    }

    /// Creates a key; returns it with the key itself, which is shown this once.
    pub async fn create(&self, new: NewApiKey) -> Result<(ApiKey, String), ApiKeyError> {
        let (row, key) = self.new_row(&new)?;
        self.inner.store.insert_api_key(&row).await?;
        let stored = self
            .inner
            .store
            .api_key(&row.id)
            .await?
            .ok_or(ApiKeyError::NotFound)?;
        Ok((ApiKey::from_row(&stored), key))
    }

    fn new_row(&self, new: &NewApiKey) -> Result<(ApiKeyRow, String), ApiKeyError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(ApiKeyError::Invalid(
                "a key's name is 1 to 100 printable characters".into(),
            ));
        }
        for scope in &new.scopes {
            let fine = !scope.is_empty()
                && scope.len() <= 64
                && scope
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-:.*".contains(&b));
            if !fine {
                return Err(ApiKeyError::Invalid(format!("invalid scope {scope:?}")));
            }
        }
        let key = self.generate();
        let now = self.now_ms();
        let (account_id, service) = match &new.owner {
            KeyOwner::Account(id) => (Some(id.clone()), None),
            KeyOwner::Service(name) => (None, Some(name.clone())),
        };
        let row = ApiKeyRow {
            id: format!("key_{}", random_id().replace('-', "")),
            key_hash: hex::encode(self.hash(&key)),
            hint: format!("{}…", &key[..self.prefix().len() + 4]),
            name: name.to_owned(),
            account_id,
            service,
            scopes: new.scopes.join(" "),
            networks: new
                .networks
                .iter()
                .map(|net| net.trunc().to_string())
                .collect::<Vec<_>>()
                .join(","),
            created_at: now,
            expires_at: new
                .expires_in
                .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
            revoked_at: None,
            rotated_to: None,
            last_used_at: None,
            last_used_ip: None,
            owner_email: None,
            owner_status: None,
        };
        Ok((row, key))
    }

    fn generate(&self) -> String {
        let mut rng = rand::rng();
        let mut key = self.prefix().to_owned();
        key.extend((0..SECRET_CHARS).map(|_| char::from(ALPHABET[rng.random_range(0..62)])));
        let sum = checksum(&key);
        key.push_str(&sum);
        key
    }

    /// Keys of one account, or all.
    pub async fn list(&self, account_id: Option<&str>) -> Result<Vec<ApiKey>, ApiKeyError> {
        let rows = self.inner.store.api_keys(account_id).await?;
        Ok(rows.iter().map(ApiKey::from_row).collect())
    }

    /// The key with id `id`.
    pub async fn get(&self, id: &str) -> Result<ApiKey, ApiKeyError> {
        let row = self
            .inner
            .store
            .api_key(id)
            .await?
            .ok_or(ApiKeyError::NotFound)?;
        Ok(ApiKey::from_row(&row))
    }

    /// Revokes the key `id`.
    pub async fn revoke(&self, id: &str) -> Result<ApiKey, ApiKeyError> {
        if !self.inner.store.revoke_api_key(id, self.now_ms()).await? {
            return Err(ApiKeyError::NotFound);
        }
        let key = self.get(id).await?;
        self.forget(&key.id);
        Ok(key)
    }

    /// Replaces the key `id` with a new one of the same name, owner, scopes, networks and
    /// lifetime; the old one works for `grace` more (the configured grace when `None`).
    pub async fn rotate(
        &self,
        id: &str,
        grace: Option<Duration>,
    ) -> Result<(ApiKey, String), ApiKeyError> {
        let old = self.get(id).await?;
        let owner = match (&old.account_id, &old.service) {
            (Some(account), _) => KeyOwner::Account(account.clone()),
            (None, Some(service)) => KeyOwner::Service(service.clone()),
            (None, None) => return Err(ApiKeyError::NotFound),
        };
        let lifetime = old
            .expires_at
            .map(|at| Duration::from_millis(u64::try_from(at - old.created_at).unwrap_or(0)));
        let (row, key) = self.new_row(&NewApiKey {
            name: old.name.clone(),
            owner,
            scopes: old.scopes.clone(),
            expires_in: lifetime,
            networks: old.networks.clone(),
        })?;
        let grace = grace.unwrap_or(self.inner.config.rotation_grace);
        let grace_until = row
            .created_at
            .saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        if !self
            .inner
            .store
            .rotate_api_key(id, &row, grace_until)
            .await?
        {
            return Err(ApiKeyError::NotFound);
        }
        self.forget(id);
        let stored = self.get(&row.id).await?;
        Ok((stored, key))
    }

    /// Drops the cached copy of the key `id` on this instance (others see the change when they
    /// next poll).
    fn forget(&self, id: &str) {
        self.inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, cached| cached.key.as_ref().is_none_or(|key| key.id != id));
    }

    /// Drops cached keys changed since `since_ms`; returns how many hashes changed.
    pub async fn poll_changes(&self, since_ms: i64) -> Result<usize, StoreError> {
        let changed = self
            .inner
            .store
            .api_keys_changed_since(since_ms - POLL_OVERLAP_MS)
            .await?;
        if !changed.is_empty() {
            let mut cache = self
                .inner
                .cache
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for hash in &changed {
                let mut bytes = [0u8; 32];
                if hex::decode_to_slice(hash, &mut bytes).is_ok() {
                    cache.remove(&bytes);
                }
            }
        }
        Ok(changed.len())
    }

    /// Writes the last uses gathered since the previous call.
    pub async fn flush_uses(&self) -> Result<(), StoreError> {
        let uses: Vec<(String, i64, String)> = std::mem::take(
            &mut *self
                .inner
                .uses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .map(|(id, (at, ip))| (id, at, ip.to_string()))
        .collect();
        self.inner.store.record_api_key_uses(&uses).await
    }

    /// Polls for changes every `poll` and writes last uses every `flush`, until the runtime
    /// stops. Call on the runtime that owns the store.
    pub fn watch(&self, poll: Duration, flush: Duration) {
        let keys = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut since = i64::MIN / 2;
            let mut flushed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(poll).await;
                let Some(inner) = keys.upgrade() else {
                    return;
                };
                let keys = Self { inner };
                let started = keys.now_ms();
                match keys.poll_changes(since).await {
                    Ok(_) => since = started,
                    Err(error) => tracing::error!(%error, "reading API key changes failed"),
                }
                if flushed.elapsed() >= flush {
                    flushed = tokio::time::Instant::now();
                    if let Err(error) = keys.flush_uses().await {
                        tracing::warn!(%error, "recording API key use failed");
                    }
                }
            }
        });
    }
}

impl ApiKeyConfig {
    fn capacity(&self) -> usize {
        self.cache_capacity.max(2)
    }
}

/// The CRC32 of `body` as 6 base62 characters.
fn checksum(body: &str) -> String {
    let mut value = u64::from(crc32fast::hash(body.as_bytes()));
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[usize::try_from(value % 62).unwrap_or(0)];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_lowercase_and_end_in_an_underscore() {
        assert!(valid_prefix("pc_"));
        assert!(valid_prefix("lgas_"));
        assert!(!valid_prefix("pc"));
        assert!(!valid_prefix("_"));
        assert!(!valid_prefix("PC_"));
        assert!(!valid_prefix("a-b_"));
        assert!(!valid_prefix("abcdefghijklmnop_"));
    }

    #[test]
    fn the_checksum_is_six_base62_characters() {
        let sum = checksum("pc_abc");
        assert_eq!(sum.len(), 6);
        assert!(sum.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(sum, checksum("pc_abd"));
        // CRC32 of the empty string is 0.
        assert_eq!(checksum(""), "000000");
        // u32::MAX = 4294967295 = 4 × 62^5 + ... fits in six digits.
        assert!(u64::from(u32::MAX) < 62u64.pow(6));
    }
}
