//! Identity of Portcullis: accounts, passwords (Argon2id with OWASP's parameters, import of
//! bcrypt, Argon2 and PBKDF2 hashes with rehash at login, an NIST 800-63B policy), and
//! server-side sessions, brute-force defence that cannot lock an owner out ([`throttle`]), and
//! API keys for machine clients ([`api_keys`]).
//!
//! The service decides and the store persists; HTTP, cookies and security events are the
//! gateway's. Every secret the service hands out (a session token) is stored only as a hash.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api_keys;
pub mod codes;
pub mod email;
pub mod mail;
pub mod passkeys;
pub mod password;
pub mod seal;
pub mod second_factor;
mod service;
mod session_cache;
pub mod throttle;
pub mod token;
pub mod tokens;

pub use email::{Email, EmailError};
pub use service::{
    Account, AccountStatus, ClientInfo, FailureReason, Identity, IdentityConfig, IdentityError,
    LoggedIn, LoginOutcome, MailLinks, NewAccount, Principal, RefreshOutcome, Registration,
    TRUSTED_DEVICE_LIFETIME, TokenPurpose, TokenSet, user_agent_family,
};
