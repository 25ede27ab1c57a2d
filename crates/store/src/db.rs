//! Connecting to the store, per-connection settings and migrations.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Executor, SqlSafeStr};

/// Errors of the durable store. Their text is for logs: it may name tables or hosts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL names no supported backend.
    #[error("unsupported store url scheme (use sqlite: or postgres:)")]
    UnsupportedUrl,
    /// The database could not be reached or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed or the applied migrations do not match this binary's.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The audit writer has stopped; nothing more can be recorded.
    #[error("the audit writer has stopped")]
    AuditWriterStopped,
    /// A stored row could not be read back.
    #[error("corrupt row: {0}")]
    CorruptRow(String),
    /// A unique value (an e-mail address) is already taken.
    #[error("already exists")]
    Conflict,
}

/// Which database engine backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite, one process.
    Sqlite,
    /// PostgreSQL, shared by several instances.
    Postgres,
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Longest wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Longest run of one statement (PostgreSQL `statement_timeout`, SQLite busy timeout).
    pub statement_timeout: Duration,
    /// Pool size.
    pub max_connections: u32,
}

impl StoreConfig {
    /// The embedded default: `portcullis.db` in `data_dir`, created if missing.
    pub fn sqlite_in(data_dir: &Path) -> Self {
        Self {
            url: format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("portcullis.db").display()
            ),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            max_connections: 8,
        }
    }
}

/// A pool of connections to the durable store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens a pool; each connection gets its timeouts (and, on SQLite, WAL with full sync, so
    /// that a committed audit row survives a crash) once, when it is opened.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if config.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if config.url.starts_with("postgres:") || config.url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let statement_ms = config.statement_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move { configure_connection(conn, backend, statement_ms).await })
            })
            .connect(&config.url)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write. On SQLite it takes the write lock at its start
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails at once
    /// with `SQLITE_BUSY` when another connection wrote in between (WAL mode cannot upgrade a
    /// stale read snapshot, and the busy timeout does not apply), so two writers at once lost
    /// one of their writes.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Applies the migrations this binary carries that the database lacks.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn configure_connection(
    conn: &mut AnyConnection,
    backend: Backend,
    statement_ms: u128,
) -> Result<(), sqlx::Error> {
    match backend {
        Backend::Sqlite => {
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = FULL").await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            // The value is a number we computed, never input: safe to format into the pragma.
            let busy = format!("PRAGMA busy_timeout = {statement_ms}");
            conn.execute(AssertSqlSafe(busy)).await?;
        }
        Backend::Postgres => {
            let timeout = format!("SET statement_timeout = {statement_ms}");
            conn.execute(AssertSqlSafe(timeout)).await?;
            conn.execute("SET idle_in_transaction_session_timeout = 30000")
                .await?;
        }
    }
    Ok(())
}

/// Versioned migrations, one folder per backend since the DDL differs; compiled into the binary.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "audit",
        include_str!("../migrations/sqlite/0001_audit.sql"),
    ),
    (
        2,
        "identity",
        include_str!("../migrations/sqlite/0002_identity.sql"),
    ),
    (
        3,
        "one_time_tokens",
        include_str!("../migrations/sqlite/0003_one_time_tokens.sql"),
    ),
    (
        4,
        "tokens",
        include_str!("../migrations/sqlite/0004_tokens.sql"),
    ),
    (
        5,
        "ip_decisions",
        include_str!("../migrations/sqlite/0005_ip_decisions.sql"),
    ),
    (
        6,
        "api_keys",
        include_str!("../migrations/sqlite/0006_api_keys.sql"),
    ),
    (
        7,
        "second_factor",
        include_str!("../migrations/sqlite/0007_second_factor.sql"),
    ),
    (
        8,
        "trusted_devices",
        include_str!("../migrations/sqlite/0008_trusted_devices.sql"),
    ),
    (
        9,
        "passkeys",
        include_str!("../migrations/sqlite/0009_passkeys.sql"),
    ),
    (
        10,
        "email_factor",
        include_str!("../migrations/sqlite/0010_email_factor.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "audit",
        include_str!("../migrations/postgres/0001_audit.sql"),
    ),
    (
        2,
        "identity",
        include_str!("../migrations/postgres/0002_identity.sql"),
    ),
    (
        3,
        "one_time_tokens",
        include_str!("../migrations/postgres/0003_one_time_tokens.sql"),
    ),
    (
        4,
        "tokens",
        include_str!("../migrations/postgres/0004_tokens.sql"),
    ),
    (
        5,
        "ip_decisions",
        include_str!("../migrations/postgres/0005_ip_decisions.sql"),
    ),
    (
        6,
        "api_keys",
        include_str!("../migrations/postgres/0006_api_keys.sql"),
    ),
    (
        7,
        "second_factor",
        include_str!("../migrations/postgres/0007_second_factor.sql"),
    ),
    (
        8,
        "trusted_devices",
        include_str!("../migrations/postgres/0008_trusted_devices.sql"),
    ),
    (
        9,
        "passkeys",
        include_str!("../migrations/postgres/0009_passkeys.sql"),
    ),
    (
        10,
        "email_factor",
        include_str!("../migrations/postgres/0010_email_factor.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let source = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    let migrations = source
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        table_name: Cow::Borrowed("portcullis_migrations"),
        ..Migrator::DEFAULT
    }
}
