//! Passwords: hashing and import ([`hash`]), the policy ([`policy`]) and the common-password
//! list ([`common`]).

pub mod common;
pub mod hash;
pub mod policy;

pub use hash::{HashError, HashFormat, HashParams, PasswordHasher, Verified, check_importable};
pub use policy::{PasswordPolicy, PolicyFailure, PolicyViolations};
