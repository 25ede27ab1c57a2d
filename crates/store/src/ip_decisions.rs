//! Allow and block decisions on client addresses and networks. The gateway reads the active
//! ones into memory and checks every request against that copy; this table is where they
//! last, where other instances and the CLI see them, and where a repeat offender's history is.

use sqlx::Row;

use crate::db::{Store, StoreError};

/// One decision, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpDecisionRow {
    /// Random id.
    pub id: String,
    /// The network in CIDR form, truncated (`203.0.113.7/32`, `2001:db8::/64`).
    pub network: String,
    /// `block` or `allow`.
    pub action: String,
    /// Why, for operators (never shown to the client).
    pub reason: String,
    /// `manual`, `ids` or `honeypot`.
    pub origin: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `None`: until removed.
    pub expires_at: Option<i64>,
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<IpDecisionRow, sqlx::Error> {
    Ok(IpDecisionRow {
        id: row.try_get(0)?,
        network: row.try_get(1)?,
        action: row.try_get(2)?,
        reason: row.try_get(3)?,
        origin: row.try_get(4)?,
        created_at: row.try_get(5)?,
        expires_at: row.try_get(6)?,
    })
}

impl Store {
    /// Records `decision`.
    pub async fn insert_ip_decision(&self, decision: &IpDecisionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ip_decisions (id, network, action, reason, origin, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&decision.id)
        .bind(&decision.network)
        .bind(&decision.action)
        .bind(&decision.reason)
        .bind(&decision.origin)
        .bind(decision.created_at)
        .bind(decision.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Decisions in force at `now_ms`, oldest first.
    pub async fn active_ip_decisions(&self, now_ms: i64) -> Result<Vec<IpDecisionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, network, action, reason, origin, created_at, expires_at \
             FROM ip_decisions WHERE expires_at IS NULL OR expires_at > $1 \
             ORDER BY created_at, id",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Ends the decisions with `action` on exactly `network` that are in force at `now_ms`
    /// (they expire now, so the history keeps them). Returns how many.
    pub async fn end_ip_decisions(
        &self,
        network: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let ended = sqlx::query(
            "UPDATE ip_decisions SET expires_at = $3 WHERE network = $1 AND action = $2 \
             AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(network)
        .bind(action)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(ended.rows_affected())
    }

    /// Blocks of `network` by `origin` created since `since_ms`: how often it offended.
    pub async fn count_ip_blocks(
        &self,
        network: &str,
        origin: &str,
        since_ms: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM ip_decisions WHERE network = $1 AND origin = $2 \
             AND action = 'block' AND created_at >= $3",
        )
        .bind(network)
        .bind(origin)
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Forgets decisions that ended before `before_ms`.
    pub async fn purge_ip_decisions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM ip_decisions WHERE expires_at <= $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(purged.rows_affected())
    }
}
