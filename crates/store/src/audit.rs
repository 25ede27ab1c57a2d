//! The tamper-evident audit log.
//!
//! Each row holds `hash = SHA-256(prev_hash ‖ canonical content)`, and sequence numbers have no
//! gaps, so editing, deleting or inserting a row breaks the chain where it happened and
//! `portcullis audit verify` finds it. The chain proves integrity relative to its head: record
//! the head hash that `verify` prints somewhere the database's writers cannot reach to make
//! rewriting the whole tail detectable too.
//!
//! Appends go through one writer task that commits in groups: callers wait until their event
//! is committed, so an event is durable before the response it explains is sent, and a burst of
//! events costs one transaction rather than one each. On PostgreSQL a transaction-scoped
//! advisory lock serializes writers of several instances onto one chain.

use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::{mpsc, oneshot};

use portcullis_core::SecurityEvent;

use crate::db::{Backend, Store, StoreError};

/// `prev_hash` of the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Most events committed in one transaction.
const MAX_GROUP: usize = 256;
/// Events waiting for the writer before callers feel back-pressure.
const QUEUE: usize = 4096;
/// Arbitrary, fixed key of the PostgreSQL advisory lock that guards the chain's head.
const CHAIN_LOCK_KEY: i64 = 0x706f_7274_6375;

type Ack = oneshot::Sender<Result<i64, String>>;

/// A handle to the audit writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<(SecurityEvent, Ack)>,
}

impl AuditLog {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Store) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run_writer(store, receiver));
        Self { queue }
    }

    /// Appends `event` and returns its sequence number once it is committed.
    pub async fn append(&self, event: SecurityEvent) -> Result<i64, StoreError> {
        let (ack, done) = oneshot::channel();
        self.queue
            .send((event, ack))
            .await
            .map_err(|_| StoreError::AuditWriterStopped)?;
        match done.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(reason)) => Err(StoreError::CorruptRow(reason)),
            Err(_) => Err(StoreError::AuditWriterStopped),
        }
    }
}

async fn run_writer(store: Store, mut receiver: mpsc::Receiver<(SecurityEvent, Ack)>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        let events: Vec<&SecurityEvent> = group.iter().map(|(event, _)| event).collect();
        let outcome = append_group(&store, &events).await;
        if let Err(error) = &outcome {
            tracing::error!(%error, events = group.len(), "audit append failed");
        }
        for (index, (_, ack)) in group.drain(..).enumerate() {
            let reply = match &outcome {
                Ok(first_seq) => Ok(first_seq + index as i64),
                Err(error) => Err(error.to_string()),
            };
            // A caller that gave up waiting is no reason to stop writing.
            let _ = ack.send(reply);
        }
    }
}

/// Commits `events` in one transaction; returns the first sequence number used.
async fn append_group(store: &Store, events: &[&SecurityEvent]) -> Result<i64, StoreError> {
    let mut tx = store.begin_write().await?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (mut seq, mut prev_hash) = match head {
        Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
        None => (0, GENESIS.to_owned()),
    };
    let first = seq + 1;
    for event in events {
        seq += 1;
        let row = AuditRow::from_event(seq, event, &prev_hash);
        sqlx::query(
            "INSERT INTO audit_events (seq, time, kind, severity, request_id, client_ip, \
             user_id, key_id, route, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(row.seq)
        .bind(&row.time)
        .bind(&row.kind)
        .bind(&row.severity)
        .bind(&row.request_id)
        .bind(&row.client_ip)
        .bind(&row.user_id)
        .bind(&row.key_id)
        .bind(&row.route)
        .bind(&row.details)
        .bind(&row.prev_hash)
        .bind(&row.hash)
        .execute(&mut *tx)
        .await?;
        prev_hash = row.hash;
    }
    tx.commit().await?;
    Ok(first)
}

/// One stored audit row, as text: exactly what the hash covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// RFC 3339 UTC time.
    pub time: String,
    /// Event kind.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// Request id.
    pub request_id: Option<String>,
    /// Client address.
    pub client_ip: Option<String>,
    /// User id.
    pub user_id: Option<String>,
    /// API key id.
    pub key_id: Option<String>,
    /// Route.
    pub route: Option<String>,
    /// Details as JSON text (keys sorted, so the text is canonical).
    pub details: String,
    /// The previous row's hash.
    pub prev_hash: String,
    /// SHA-256 of `prev_hash` and this row's canonical content, hex.
    pub hash: String,
}

impl AuditRow {
    fn from_event(seq: i64, event: &SecurityEvent, prev_hash: &str) -> Self {
        let time = event
            .time
            .to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut row = Self {
            seq,
            time,
            kind: event.kind.as_str().to_owned(),
            severity: event.severity.as_str().to_owned(),
            request_id: event.request_id.clone(),
            client_ip: event.client_ip.map(|ip| ip.to_string()),
            user_id: event.user_id.clone(),
            key_id: event.key_id.clone(),
            route: event.route.clone(),
            details: event.details.to_string(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        row.hash = row.expected_hash();
        row
    }

    /// The hash this row's content and `prev_hash` call for.
    pub fn expected_hash(&self) -> String {
        // A JSON array of the fields is an unambiguous encoding: no separator can be forged by
        // a value, and nulls differ from empty strings.
        let canonical = serde_json::json!([
            self.seq,
            self.time,
            self.kind,
            self.severity,
            self.request_id,
            self.client_ip,
            self.user_id,
            self.key_id,
            self.route,
            self.details,
        ]);
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(canonical.to_string().as_bytes());
        hex::encode(hasher.finalize())
    }

    fn from_sql(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            seq: row.try_get(0)?,
            time: row.try_get(1)?,
            kind: row.try_get(2)?,
            severity: row.try_get(3)?,
            request_id: row.try_get(4)?,
            client_ip: row.try_get(5)?,
            user_id: row.try_get(6)?,
            key_id: row.try_get(7)?,
            route: row.try_get(8)?,
            details: row.try_get(9)?,
            prev_hash: row.try_get(10)?,
            hash: row.try_get(11)?,
        })
    }
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The row's content no longer matches its hash: it was edited.
    Edited {
        /// The row.
        seq: i64,
    },
    /// Sequence numbers jump: rows were deleted before this one.
    Missing {
        /// The sequence number expected.
        expected: i64,
        /// The one found.
        found: i64,
    },
    /// The row does not follow from the previous one: a row was inserted, removed or rehashed.
    Unlinked {
        /// The row.
        seq: i64,
    },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edited { seq } => {
                write!(f, "row {seq}: content does not match its hash (edited)")
            }
            Self::Missing { expected, found } => {
                write!(f, "row {expected}: missing, next row is {found} (deleted)")
            }
            Self::Unlinked { seq } => write!(
                f,
                "row {seq}: previous hash does not match the row before it (inserted or rewritten)"
            ),
        }
    }
}

/// The outcome of verifying the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows read.
    pub rows: u64,
    /// The last row's hash: record it elsewhere to anchor the chain.
    pub head: String,
    /// Every break found, in chain order.
    pub breaks: Vec<ChainBreak>,
}

/// Rows read per query while walking the chain, so memory stays bounded on any log size.
const PAGE: i64 = 1000;

impl Store {
    /// Checks the whole chain, from the genesis row to the head.
    pub async fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport {
            rows: 0,
            head: GENESIS.to_owned(),
            breaks: Vec::new(),
        };
        let mut expected_seq = 1;
        let mut after = 0;
        loop {
            let page = self.audit_page_after(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for row in page {
                if row.seq != expected_seq {
                    report.breaks.push(ChainBreak::Missing {
                        expected: expected_seq,
                        found: row.seq,
                    });
                }
                if row.prev_hash != report.head {
                    report.breaks.push(ChainBreak::Unlinked { seq: row.seq });
                }
                if row.hash != row.expected_hash() {
                    report.breaks.push(ChainBreak::Edited { seq: row.seq });
                }
                report.rows += 1;
                expected_seq = row.seq + 1;
                report.head = row.hash;
            }
        }
        Ok(report)
    }

    /// Up to `limit` rows with `seq > after`, in chain order.
    pub async fn audit_page_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, time, kind, severity, request_id, client_ip, user_id, key_id, route, \
             details, prev_hash, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(AuditRow::from_sql)
            .collect::<Result<_, _>>()?)
    }

    /// The last `count` rows, oldest first.
    pub async fn audit_tail(&self, count: i64) -> Result<Vec<AuditRow>, StoreError> {
        let head = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
            .fetch_one(self.pool())
            .await?;
        let max: i64 = head.try_get(0)?;
        self.audit_page_after((max - count).max(0), count).await
    }
}
