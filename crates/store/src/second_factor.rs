//! Second factors: TOTP credentials (sealed secrets, the last step used) and backup codes
//! (keyed hashes). Every use is a conditional update, so a code accepted by one instance is
//! refused by every other, even when two requests race.

use sqlx::Row;

use crate::db::{Store, StoreError};

/// An account's TOTP credential, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRow {
    /// The sealed secret.
    pub secret: String,
    /// When the user confirmed it with a code; `None` while setup is pending.
    pub confirmed_at: Option<i64>,
    /// The newest time step accepted.
    pub last_step: i64,
}

impl Store {
    /// The TOTP credential of `account_id`, confirmed or pending.
    pub async fn totp(&self, account_id: &str) -> Result<Option<TotpRow>, StoreError> {
        let row = sqlx::query(
            "SELECT secret, confirmed_at, last_step FROM totp_credentials WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(TotpRow {
                secret: row.try_get(0)?,
                confirmed_at: row.try_get(1)?,
                last_step: row.try_get(2)?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// Starts a TOTP setup with `secret`, replacing a pending one; false when the account has a
    /// confirmed credential (it must be disabled first).
    pub async fn put_pending_totp(
        &self,
        account_id: &str,
        secret: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM totp_credentials WHERE account_id = $1 AND confirmed_at IS NULL")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        let confirmed = sqlx::query("SELECT 1 FROM totp_credentials WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
        if confirmed.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO totp_credentials (account_id, secret, confirmed_at, last_step, created_at) \
             VALUES ($1, $2, NULL, 0, $3)",
        )
        .bind(account_id)
        .bind(secret)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Confirms the pending credential with a code of time step `step`, and stores the
    /// account's backup codes; false when nothing was pending.
    pub async fn confirm_totp(
        &self,
        account_id: &str,
        step: i64,
        backup_code_hashes: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE totp_credentials SET confirmed_at = $1, last_step = $2 \
             WHERE account_id = $3 AND confirmed_at IS NULL",
        )
        .bind(now_ms)
        .bind(step)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        replace_backup_codes(&mut tx, account_id, backup_code_hashes, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Accepts time step `step` for a confirmed credential, once: false when it, or a later
    /// step, was accepted before.
    pub async fn use_totp_step(&self, account_id: &str, step: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE totp_credentials SET last_step = $1 \
             WHERE account_id = $2 AND confirmed_at IS NOT NULL AND last_step < $1",
        )
        .bind(step)
        .bind(account_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether the account takes e-mailed codes as its second factor.
    pub async fn email_factor(&self, account_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM email_factors WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Turns e-mailed codes on for the account.
    pub async fn set_email_factor(&self, account_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM email_factors WHERE account_id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO email_factors (account_id, confirmed_at) VALUES ($1, $2)")
            .bind(account_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the account's TOTP credential, e-mailed codes and backup codes; false when it
    /// had none.
    pub async fn delete_second_factors(&self, account_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM totp_credentials WHERE account_id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        let email = sqlx::query("DELETE FROM email_factors WHERE account_id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM backup_codes WHERE account_id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() + email.rows_affected() > 0)
    }

    /// Replaces the account's backup codes.
    pub async fn set_backup_codes(
        &self,
        account_id: &str,
        hashes: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        replace_backup_codes(&mut tx, account_id, hashes, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses one backup code: false when it is not one of the account's unused codes.
    pub async fn use_backup_code(
        &self,
        account_id: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE backup_codes SET used_at = $1 \
             WHERE account_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now_ms)
        .bind(account_id)
        .bind(hash)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many unused backup codes the account has.
    pub async fn unused_backup_codes(&self, account_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM backup_codes WHERE account_id = $1 AND used_at IS NULL",
        )
        .bind(account_id)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }
}

async fn replace_backup_codes(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    account_id: &str,
    hashes: &[String],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM backup_codes WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut **tx)
        .await?;
    for hash in hashes {
        sqlx::query(
            "INSERT INTO backup_codes (account_id, code_hash, created_at, used_at) \
             VALUES ($1, $2, $3, NULL)",
        )
        .bind(account_id)
        .bind(hash)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A remembered browser, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedDeviceRow {
    /// Random public id, for listing and revoking; not the token.
    pub id: String,
    /// Hex SHA-256 of the cookie's token.
    pub token_hash: String,
    /// Whose browser.
    pub account_id: String,
    /// When the second factor that made it trusted was proved, Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// Unix milliseconds.
    pub last_used_at: i64,
    /// Browser family and OS when it was remembered.
    pub user_agent: Option<String>,
    /// Client address when it was remembered.
    pub client_ip: Option<String>,
}

const DEVICE_COLUMNS: &str =
    "id, token_hash, account_id, created_at, expires_at, last_used_at, user_agent, client_ip";

fn device_from_row(row: &sqlx::any::AnyRow) -> Result<TrustedDeviceRow, sqlx::Error> {
    Ok(TrustedDeviceRow {
        id: row.try_get(0)?,
        token_hash: row.try_get(1)?,
        account_id: row.try_get(2)?,
        created_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        last_used_at: row.try_get(5)?,
        user_agent: row.try_get(6)?,
        client_ip: row.try_get(7)?,
    })
}

impl Store {
    /// Records a remembered browser.
    pub async fn insert_trusted_device(&self, device: &TrustedDeviceRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO trusted_devices (id, token_hash, account_id, created_at, expires_at, \
             last_used_at, user_agent, client_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&device.id)
        .bind(&device.token_hash)
        .bind(&device.account_id)
        .bind(device.created_at)
        .bind(device.expires_at)
        .bind(device.last_used_at)
        .bind(&device.user_agent)
        .bind(&device.client_ip)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The unexpired remembered browser whose token hashes to `token_hash`; marks it used.
    pub async fn use_trusted_device(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<TrustedDeviceRow>, StoreError> {
        let query = format!(
            "UPDATE trusted_devices SET last_used_at = $1 \
             WHERE token_hash = $2 AND expires_at > $1 RETURNING {DEVICE_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(now_ms)
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(device_from_row).transpose()?)
    }

    /// The account's unexpired remembered browsers, newest first.
    pub async fn trusted_devices(
        &self,
        account_id: &str,
        now_ms: i64,
    ) -> Result<Vec<TrustedDeviceRow>, StoreError> {
        let query = format!(
            "SELECT {DEVICE_COLUMNS} FROM trusted_devices \
             WHERE account_id = $1 AND expires_at > $2 ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(account_id)
            .bind(now_ms)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(device_from_row).collect::<Result<_, _>>()?)
    }

    /// Forgets one remembered browser of the account; false when there was none.
    pub async fn delete_trusted_device(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM trusted_devices WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets every remembered browser of the account; returns how many.
    pub async fn delete_account_trusted_devices(
        &self,
        account_id: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM trusted_devices WHERE account_id = $1")
            .bind(account_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
