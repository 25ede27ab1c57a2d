//! Secrets at rest (token signing keys, TOTP secrets), sealed with ChaCha20-Poly1305 under a
//! key derived from the server key for one purpose. A sealed value reads
//! `{key id}.{base64url(nonce || ciphertext || tag)}`: the key id says which server key sealed
//! it, so after a server-key change the old values are recognised as unreadable rather than
//! mistaken for corrupt. The associated data binds a value to its owner (an account id), so a
//! sealed secret copied onto another row does not open.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Values sealed before key ids were written carry this prefix instead.
const LEGACY_KEY_ID: &str = "v1";

/// Seals and opens values for one purpose.
pub struct Sealer {
    key: LessSafeKey,
    key_id: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A value could not be sealed (the system's randomness failed).
#[derive(Debug, thiserror::Error)]
#[error("sealing failed")]
pub struct SealError;

impl Sealer {
    /// A sealer for `purpose` (e.g. `b"portcullis totp v1"`) under `server_key`.
    pub fn new(server_key: &[u8], purpose: &[u8]) -> Self {
        let derived = derive(server_key, purpose);
        let id = derive(&derived, b"key id");
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &derived)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is a ChaCha20-Poly1305 key"));
        Self {
            key: LessSafeKey::new(unbound),
            key_id: format!("k{}", hex::encode(&id[..4])),
        }
    }

    /// The id written before every value this sealer seals.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `plain`, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError)?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .map_err(|_| SealError)?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        Ok(format!(
            "{}.{}",
            self.key_id,
            URL_SAFE_NO_PAD.encode(stored)
        ))
    }

    /// Opens a value sealed by this sealer for `aad`; `None` if another key sealed it, or it
    /// was changed, or it belongs to another owner.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Option<Vec<u8>> {
        let (key_id, body) = sealed.split_once('.')?;
        if key_id != self.key_id && key_id != LEGACY_KEY_ID {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// A key for `label` derived from `key` (HMAC-SHA256, as HKDF's expand step with one block).
pub(crate) fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(label);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_owner() {
        let sealer = Sealer::new(b"server key one", b"purpose");
        let sealed = sealer
            .seal(b"JBSWY3DPEHPK3PXP", b"account-1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(sealed.starts_with(&format!("{}.", sealer.key_id())));
        assert_eq!(
            sealer.open(&sealed, b"account-1").as_deref(),
            Some(&b"JBSWY3DPEHPK3PXP"[..])
        );
        assert_eq!(sealer.open(&sealed, b"account-2"), None, "another owner");
        let other = Sealer::new(b"server key two", b"purpose");
        assert_ne!(other.key_id(), sealer.key_id());
        assert_eq!(other.open(&sealed, b"account-1"), None, "another key");
        let purpose = Sealer::new(b"server key one", b"other purpose");
        assert_eq!(purpose.open(&sealed, b"account-1"), None, "another purpose");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sealer.open(&tampered, b"account-1"), None, "tampered");
        assert_ne!(sealer.seal(b"x", b"a").ok(), sealer.seal(b"x", b"a").ok());
    }
}
