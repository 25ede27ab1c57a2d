//! Accounts and their password history.
//!
//! The store keeps what it is given: e-mail normalization, role names and password hashing are
//! the identity crate's. Roles are stored space-separated, since a role name holds no spaces.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Store, StoreError};

/// One account, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Random id (UUID v4).
    pub id: String,
    /// Normalized e-mail address, unique.
    pub email: String,
    /// Name shown to people.
    pub display_name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// `active`, `locked` or `disabled`.
    pub status: String,
    /// Whether the owner proved they read mail at `email`.
    pub email_verified: bool,
    /// PHC string of the current password, if the account has one.
    pub password_hash: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

const ACCOUNT_COLUMNS: &str = "id, email, display_name, roles, status, email_verified, \
                               password_hash, created_at, updated_at";

fn account_from_row(row: &AnyRow) -> Result<AccountRow, sqlx::Error> {
    let roles: String = row.try_get(3)?;
    Ok(AccountRow {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        display_name: row.try_get(2)?,
        roles: roles.split_whitespace().map(str::to_owned).collect(),
        status: row.try_get(4)?,
        email_verified: row.try_get::<i64, _>(5)? != 0,
        password_hash: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
    })
}

/// A unique-constraint violation is a conflict the caller can name; anything else is a failure.
fn conflict_or(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Database(error),
    }
}

impl Store {
    /// Inserts `account`; [`StoreError::Conflict`] when its e-mail address is taken.
    pub async fn insert_account(&self, account: &AccountRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO accounts (id, email, display_name, roles, status, email_verified, \
             password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&account.id)
        .bind(&account.email)
        .bind(&account.display_name)
        .bind(account.roles.join(" "))
        .bind(&account.status)
        .bind(i64::from(account.email_verified))
        .bind(&account.password_hash)
        .bind(account.created_at)
        .bind(account.updated_at)
        .execute(self.pool())
        .await
        .map_err(conflict_or)?;
        Ok(())
    }

    /// The account with this normalized e-mail address.
    pub async fn account_by_email(&self, email: &str) -> Result<Option<AccountRow>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    /// The account with this id.
    pub async fn account_by_id(&self, id: &str) -> Result<Option<AccountRow>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(account_from_row).transpose()?)
    }

    /// Accounts ordered by e-mail address.
    pub async fn list_accounts(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<AccountRow>, StoreError> {
        let sql =
            format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY email LIMIT $1 OFFSET $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(account_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// How many active accounts hold `role`.
    pub async fn count_active_with_role(&self, role: &str) -> Result<i64, StoreError> {
        // Roles are space-separated: pad both sides so `admin` does not match `superadmin`.
        let row = sqlx::query(
            "SELECT COUNT(*) FROM accounts WHERE status = 'active' \
             AND (' ' || roles || ' ') LIKE $1",
        )
        .bind(format!("% {role} %"))
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Sets the status (`active`, `locked`, `disabled`); false when no such account.
    pub async fn set_account_status(
        &self,
        id: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE accounts SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status)
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the roles; false when no such account.
    pub async fn set_account_roles(
        &self,
        id: &str,
        roles: &[String],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE accounts SET roles = $1, updated_at = $2 WHERE id = $3")
            .bind(roles.join(" "))
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Changes the e-mail address, which is then unverified; false when no such account.
    pub async fn set_account_email(
        &self,
        id: &str,
        email: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE accounts SET email = $1, email_verified = 0, updated_at = $2 WHERE id = $3",
        )
        .bind(email)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks the e-mail address verified; false when no such account.
    pub async fn set_email_verified(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE accounts SET email_verified = 1, updated_at = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets a new password hash. When `history` is true the old hash moves to the history,
    /// which keeps its `keep` newest entries; a rehash of the same password passes `false`.
    pub async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        history: bool,
        keep: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if history {
            sqlx::query(
                "INSERT INTO password_history (account_id, hash, replaced_at) \
                 SELECT id, password_hash, $1 FROM accounts \
                 WHERE id = $2 AND password_hash IS NOT NULL",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM password_history WHERE account_id = $1 AND replaced_at NOT IN \
                 (SELECT replaced_at FROM password_history WHERE account_id = $1 \
                  ORDER BY replaced_at DESC LIMIT $2)",
            )
            .bind(id)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        }
        let done =
            sqlx::query("UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Previous password hashes, newest first.
    pub async fn password_history(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT hash FROM password_history WHERE account_id = $1 ORDER BY replaced_at DESC",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// Stores a single-use token's hash for `purpose`, and drops every expired token.
    pub async fn insert_one_time_token(
        &self,
        token_hash: &str,
        purpose: &str,
        account_id: &str,
        now_ms: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM one_time_tokens WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, purpose, account_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(purpose)
        .bind(account_id)
        .bind(now_ms)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The account of a live single-use token, without using it.
    pub async fn peek_one_time_token(
        &self,
        token_hash: &str,
        purpose: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT account_id FROM one_time_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|row| row.try_get::<String, _>(0)).transpose()?)
    }

    /// Uses a single-use token: deletes it and returns its account, if it existed for
    /// `purpose` and had not expired. Deleting first makes a second use find nothing, even when
    /// two arrive at once.
    pub async fn take_one_time_token(
        &self,
        token_hash: &str,
        purpose: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2 \
             RETURNING account_id, expires_at",
        )
        .bind(token_hash)
        .bind(purpose)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: i64 = row.try_get(1)?;
        Ok((expires_at > now_ms)
            .then(|| row.try_get::<String, _>(0))
            .transpose()?)
    }
}
