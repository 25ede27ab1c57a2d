//! Server-side sessions. A session is found by the SHA-256 of its token, never by the token, and
//! revoking one deletes its row, so the next request that carries it finds nothing.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Store, StoreError};

/// One session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Random public id, for listing and revoking; not the token.
    pub id: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Whose session it is.
    pub account_id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds, updated at most once a minute.
    pub last_seen_at: i64,
    /// Absolute expiry, Unix milliseconds.
    pub expires_at: i64,
    /// Client address at login.
    pub client_ip: Option<String>,
    /// Browser family and OS at login, e.g. "Firefox on Linux".
    pub user_agent: Option<String>,
    /// When the session's owner last proved a second factor, Unix milliseconds.
    pub second_factor_at: Option<i64>,
}

const SESSION_COLUMNS: &str = "id, token_hash, account_id, created_at, last_seen_at, expires_at, \
                               client_ip, user_agent, second_factor_at";

fn session_from_row(row: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: row.try_get(0)?,
        token_hash: row.try_get(1)?,
        account_id: row.try_get(2)?,
        created_at: row.try_get(3)?,
        last_seen_at: row.try_get(4)?,
        expires_at: row.try_get(5)?,
        client_ip: row.try_get(6)?,
        user_agent: row.try_get(7)?,
        second_factor_at: row.try_get(8)?,
    })
}

impl Store {
    /// Inserts `session`, then evicts the account's oldest sessions beyond `max_per_account`.
    /// Returns how many were evicted.
    pub async fn insert_session(
        &self,
        session: &SessionRow,
        max_per_account: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, account_id, created_at, last_seen_at, \
             expires_at, client_ip, user_agent, second_factor_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&session.id)
        .bind(&session.token_hash)
        .bind(&session.account_id)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .bind(&session.client_ip)
        .bind(&session.user_agent)
        .bind(session.second_factor_at)
        .execute(&mut *tx)
        .await?;
        let evicted = sqlx::query(
            "DELETE FROM sessions WHERE account_id = $1 AND id NOT IN \
             (SELECT id FROM sessions WHERE account_id = $1 \
              ORDER BY created_at DESC, id DESC LIMIT $2)",
        )
        .bind(&session.account_id)
        .bind(max_per_account)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(evicted.rows_affected())
    }

    /// The session whose token hashes to `token_hash`.
    pub async fn session_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionRow>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    /// The account's sessions, newest first.
    pub async fn account_sessions(&self, account_id: &str) -> Result<Vec<SessionRow>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE account_id = $1 \
             ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Records that the session's owner proved a second factor at `now_ms` (step-up).
    pub async fn set_session_second_factor(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET second_factor_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records activity on a session.
    pub async fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Revokes one session of `account_id`; false when it has no such session.
    pub async fn delete_session(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every session of `account_id` but `except`; returns how many.
    pub async fn delete_account_sessions(
        &self,
        account_id: &str,
        except: Option<&str>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE account_id = $1 AND id <> $2")
            .bind(account_id)
            .bind(except.unwrap_or(""))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes sessions past their absolute expiry or idle since before `idle_before_ms`.
    pub async fn delete_expired_sessions(
        &self,
        now_ms: i64,
        idle_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at < $2")
            .bind(now_ms)
            .bind(idle_before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
