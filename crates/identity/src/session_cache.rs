//! Sessions verified in the last second, kept in memory by the SHA-256 of their token, so a
//! request with a live session costs a hash and a map read instead of a store round trip.
//!
//! A change made through this instance (logout, revocation, a role or status change, a step-up)
//! drops the entries it concerns at once. A change made elsewhere (another instance, the CLI)
//! takes effect here when the entry is a second old, which bounds how long a revoked session
//! can still be used on another instance.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest as _, Sha256};

use crate::service::Principal;

/// How long a verified session is trusted without the store.
pub(crate) const SESSION_CACHE_TTL_MS: i64 = 1_000;
/// Most sessions kept; past it the cache starts over.
const CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    entries: RwLock<HashMap<[u8; 32], (Principal, i64)>>,
}

/// The cache key of a session token.
pub(crate) fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl SessionCache {
    /// The principal of `key`, if it was verified less than the TTL ago.
    pub(crate) fn get(&self, key: &[u8; 32], now_ms: i64) -> Option<Principal> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (principal, loaded) = entries.get(key)?;
        (now_ms - loaded < SESSION_CACHE_TTL_MS && now_ms >= *loaded).then(|| principal.clone())
    }

    pub(crate) fn put(&self, key: [u8; 32], principal: Principal, now_ms: i64) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (principal, now_ms));
    }

    /// Drops the session `session_id`.
    pub(crate) fn forget_session(&self, session_id: &str) {
        self.retain(|principal| principal.session_id != session_id);
    }

    /// Drops every session of `account_id`.
    pub(crate) fn forget_account(&self, account_id: &str) {
        self.retain(|principal| principal.account.id != account_id);
    }

    fn retain(&self, keep: impl Fn(&Principal) -> bool) {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (principal, _)| keep(principal));
    }
}
