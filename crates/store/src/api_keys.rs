//! API keys: only their keyed hash, their attributes and their last use. Every change moves
//! `changed_at`, which gateways poll to drop their cached copies, so a revocation made by any
//! instance or by the CLI takes effect everywhere within the poll interval.

use sqlx::Row;

use crate::db::{Store, StoreError};

/// One key, as stored, with its owner's e-mail and status when an account owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Random id, shown to operators and sent upstream.
    pub id: String,
    /// HMAC-SHA256 of the key under the server pepper, hex.
    pub key_hash: String,
    /// The key's prefix and first characters, for people to recognise it.
    pub hint: String,
    /// What it is for.
    pub name: String,
    /// The owning account, if an account owns it.
    pub account_id: Option<String>,
    /// The owning service account's name, if a service owns it.
    pub service: Option<String>,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Networks it may be used from (CIDRs, comma-separated); empty: anywhere.
    pub networks: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `None`: never.
    pub expires_at: Option<i64>,
    /// Unix milliseconds.
    pub revoked_at: Option<i64>,
    /// The key that replaced it, after a rotation.
    pub rotated_to: Option<String>,
    /// Unix milliseconds.
    pub last_used_at: Option<i64>,
    /// The last client address that used it.
    pub last_used_ip: Option<String>,
    /// The owning account's e-mail (read, not stored here).
    pub owner_email: Option<String>,
    /// The owning account's status (read, not stored here).
    pub owner_status: Option<String>,
}

const SELECT: &str = "SELECT k.id, k.key_hash, k.hint, k.name, k.account_id, k.service, \
     k.scopes, k.networks, k.created_at, k.expires_at, k.revoked_at, k.rotated_to, \
     k.last_used_at, k.last_used_ip, a.email, a.status \
     FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id";

fn from_row(row: &sqlx::any::AnyRow) -> Result<ApiKeyRow, sqlx::Error> {
    Ok(ApiKeyRow {
        id: row.try_get(0)?,
        key_hash: row.try_get(1)?,
        hint: row.try_get(2)?,
        name: row.try_get(3)?,
        account_id: row.try_get(4)?,
        service: row.try_get(5)?,
        scopes: row.try_get(6)?,
        networks: row.try_get(7)?,
        created_at: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        revoked_at: row.try_get(10)?,
        rotated_to: row.try_get(11)?,
        last_used_at: row.try_get(12)?,
        last_used_ip: row.try_get(13)?,
        owner_email: row.try_get(14)?,
        owner_status: row.try_get(15)?,
    })
}

fn from_rows(rows: &[sqlx::any::AnyRow]) -> Result<Vec<ApiKeyRow>, StoreError> {
    rows.iter()
        .map(from_row)
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

async fn insert(
    executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
    key: &ApiKeyRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, key_hash, hint, name, account_id, service, scopes, networks, \
         created_at, expires_at, revoked_at, rotated_to, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, $9)",
    )
    .bind(&key.id)
    .bind(&key.key_hash)
    .bind(&key.hint)
    .bind(&key.name)
    .bind(&key.account_id)
    .bind(&key.service)
    .bind(&key.scopes)
    .bind(&key.networks)
    .bind(key.created_at)
    .bind(key.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

impl Store {
    /// Records a new key.
    pub async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<(), StoreError> {
        insert(self.pool(), key).await?;
        Ok(())
    }

    /// The key whose hash is `key_hash`.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let query = format!("{SELECT} WHERE k.key_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The key with id `id`.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let query = format!("{SELECT} WHERE k.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Every key, or the keys of one account, oldest first.
    pub async fn api_keys(&self, account_id: Option<&str>) -> Result<Vec<ApiKeyRow>, StoreError> {
        let rows = match account_id {
            Some(account) => {
                let query = format!("{SELECT} WHERE k.account_id = $1 ORDER BY k.created_at");
                sqlx::query(sqlx::AssertSqlSafe(query))
                    .bind(account)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                let query = format!("{SELECT} ORDER BY k.created_at");
                sqlx::query(sqlx::AssertSqlSafe(query))
                    .fetch_all(self.pool())
                    .await?
            }
        };
        from_rows(&rows)
    }

    /// Revokes the key `id`; false when there is no such key or it was revoked already.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1, changed_at = $1 \
             WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records `replacement` and lets the key `id` work only until `grace_until_ms` (or its own
    /// expiry, if sooner); false when `id` is unknown, revoked or already rotated.
    pub async fn rotate_api_key(
        &self,
        id: &str,
        replacement: &ApiKeyRow,
        grace_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET rotated_to = $1, changed_at = $2, \
             expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 \
             ELSE expires_at END \
             WHERE id = $4 AND revoked_at IS NULL AND rotated_to IS NULL",
        )
        .bind(&replacement.id)
        .bind(replacement.created_at)
        .bind(grace_until_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert(&mut *tx, replacement).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks the keys of `account_id` as changed (its owner was locked or disabled), so that
    /// gateways read them again.
    pub async fn touch_account_api_keys(
        &self,
        account_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET changed_at = $1 WHERE account_id = $2")
            .bind(now_ms)
            .bind(account_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The hashes of the keys changed after `since_ms`.
    pub async fn api_keys_changed_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT key_hash FROM api_keys WHERE changed_at > $1")
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Records the last use of several keys at once: `(id, unix ms, client address)`.
    pub async fn record_api_key_uses(
        &self,
        uses: &[(String, i64, String)],
    ) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (id, at, ip) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1, last_used_ip = $2 \
                 WHERE id = $3 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(ip)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
