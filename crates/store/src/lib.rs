//! The durable store of Portcullis: SQLite (WAL, in the data dir) by default, PostgreSQL when
//! several instances share state; versioned migrations; accounts, sessions and API keys; the hash-chained audit log.
//!
//! All SQL lives in this crate and is static text with bind parameters (sqlx 0.9 refuses
//! anything else without an explicit audit). Timeouts are set once per connection, when the pool
//! opens it, never per query.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
mod api_keys;
mod audit;
mod db;
mod ip_decisions;
mod passkeys;
mod second_factor;
mod sessions;
mod tokens;

pub use accounts::AccountRow;
pub use api_keys::ApiKeyRow;
pub use audit::{AuditLog, AuditRow, ChainBreak, VerifyReport};
pub use db::{Backend, Store, StoreConfig, StoreError};
pub use ip_decisions::IpDecisionRow;
pub use passkeys::PasskeyRow;
pub use second_factor::{TotpRow, TrustedDeviceRow};
pub use sessions::SessionRow;
pub use tokens::{RefreshUse, SigningKeyRow};
