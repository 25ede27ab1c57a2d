//! WebAuthn passkeys and the state of ceremonies in flight.

use sqlx::Row;

use crate::db::{Store, StoreError};

/// One passkey, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRow {
    /// Random id, for listing and removing.
    pub id: String,
    /// Whose passkey.
    pub account_id: String,
    /// The name its owner gave it.
    pub name: String,
    /// The WebAuthn credential id, base64url.
    pub credential_id: String,
    /// The credential as webauthn-rs serialises it (JSON; a public key and a counter).
    pub credential: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub last_used_at: Option<i64>,
}

const PASSKEY_COLUMNS: &str =
    "id, account_id, name, credential_id, credential, created_at, last_used_at";

fn passkey_from_row(row: &sqlx::any::AnyRow) -> Result<PasskeyRow, sqlx::Error> {
    Ok(PasskeyRow {
        id: row.try_get(0)?,
        account_id: row.try_get(1)?,
        name: row.try_get(2)?,
        credential_id: row.try_get(3)?,
        credential: row.try_get(4)?,
        created_at: row.try_get(5)?,
        last_used_at: row.try_get(6)?,
    })
}

impl Store {
    /// Records a passkey.
    pub async fn insert_passkey(&self, passkey: &PasskeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO passkeys (id, account_id, name, credential_id, credential, created_at, \
             last_used_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&passkey.id)
        .bind(&passkey.account_id)
        .bind(&passkey.name)
        .bind(&passkey.credential_id)
        .bind(&passkey.credential)
        .bind(passkey.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The account's passkeys, oldest first.
    pub async fn passkeys(&self, account_id: &str) -> Result<Vec<PasskeyRow>, StoreError> {
        let query = format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE account_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(account_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(passkey_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Stores a passkey's credential after a use (its counter moved) and when it was used.
    pub async fn update_passkey(
        &self,
        id: &str,
        credential: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE passkeys SET credential = $1, last_used_at = $2 WHERE id = $3")
            .bind(credential)
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes one of the account's passkeys; false when there was none.
    pub async fn delete_passkey(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM passkeys WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Keeps a ceremony's state until `expires_at`, and drops the expired ones.
    pub async fn insert_ceremony(
        &self,
        id: &str,
        account_id: Option<&str>,
        kind: &str,
        state: &str,
        now_ms: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO webauthn_ceremonies (id, account_id, kind, state, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(account_id)
        .bind(kind)
        .bind(state)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a ceremony's state, once: its account and state, if it was of `kind` and live.
    pub async fn take_ceremony(
        &self,
        id: &str,
        kind: &str,
        now_ms: i64,
    ) -> Result<Option<(Option<String>, String)>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM webauthn_ceremonies WHERE id = $1 AND kind = $2 \
             RETURNING account_id, state, expires_at",
        )
        .bind(id)
        .bind(kind)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: i64 = row.try_get(2)?;
        if expires_at <= now_ms {
            return Ok(None);
        }
        Ok(Some((row.try_get(0)?, row.try_get(1)?)))
    }
}
