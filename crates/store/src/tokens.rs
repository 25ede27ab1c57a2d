//! Signing keys, refresh-token families and revoked access-token ids.

use sqlx::Row;

use crate::db::{Store, StoreError};

/// A signing key as stored: the private key sealed by the caller, the public key in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// Key id (`kid`).
    pub kid: String,
    /// The sealed private key.
    pub private_key: String,
    /// The public key (base64url).
    pub public_key: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When it stopped signing, Unix milliseconds; `None` for the active key.
    pub retired_at: Option<i64>,
}

/// What became of a refresh token presented for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid and now used: its family and account.
    Fresh {
        /// The family, kept by the next token.
        family_id: String,
        /// Whose token.
        account_id: String,
    },
    /// Used before: the token leaked. Its whole family has been deleted.
    Reused {
        /// Whose family was revoked.
        account_id: String,
    },
    /// Unknown or expired.
    Invalid,
}

impl Store {
    /// Signing keys, newest first, without those retired before `retired_after_ms`.
    pub async fn signing_keys(
        &self,
        retired_after_ms: i64,
    ) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, private_key, public_key, created_at, retired_at FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC",
        )
        .bind(retired_after_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SigningKeyRow {
                    kid: row.try_get(0)?,
                    private_key: row.try_get(1)?,
                    public_key: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                    retired_at: row.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Makes `key` the active signing key and retires the others.
    pub async fn rotate_signing_key(&self, key: &SigningKeyRow) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at, retired_at) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a refresh token's hash in `family_id`.
    pub async fn insert_refresh_token(
        &self,
        token_hash: &str,
        family_id: &str,
        account_id: &str,
        now_ms: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, account_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(family_id)
        .bind(account_id)
        .bind(now_ms)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Uses a refresh token. The first use marks it used, in one statement, so two concurrent
    /// uses cannot both succeed; any later use is reuse, and deletes the token's whole family.
    pub async fn use_refresh_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<RefreshUse, StoreError> {
        let fresh = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING family_id, account_id",
        )
        .bind(now_ms)
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = fresh {
            return Ok(RefreshUse::Fresh {
                family_id: row.try_get(0)?,
                account_id: row.try_get(1)?,
            });
        }
        let used = sqlx::query(
            "SELECT family_id, account_id FROM refresh_tokens \
             WHERE token_hash = $1 AND used_at IS NOT NULL",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = used else {
            return Ok(RefreshUse::Invalid);
        };
        let family_id: String = row.try_get(0)?;
        self.delete_refresh_family(&family_id).await?;
        Ok(RefreshUse::Reused {
            account_id: row.try_get(1)?,
        })
    }

    /// Deletes every refresh token of a family.
    pub async fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE family_id = $1")
            .bind(family_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// The family of a refresh token, used or not.
    pub async fn refresh_family(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get::<String, _>(0)).transpose()?)
    }

    /// Deletes every refresh token of an account (password reset, lock).
    pub async fn delete_account_refresh_tokens(&self, account_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE account_id = $1")
            .bind(account_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Revokes an access token until it expires; drops revocations that have expired.
    pub async fn revoke_jti(
        &self,
        jti: &str,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether an access token id is revoked.
    pub async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }
}
