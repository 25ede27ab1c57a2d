//! Shared vocabulary of Portcullis: request ids, client addresses, security events and the
//! public rejections every stage answers with.
//!
//! This crate does no I/O and knows no HTTP framework: the gateway, the store and the binary all
//! speak these types, so an event or a rejection means the same thing wherever it is seen.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod event;
mod reject;
mod request_id;

pub use clock::{Clock, SystemClock};
pub use event::{EventKind, SecurityEvent, Severity, mask_pii};
pub use reject::Reject;
pub use request_id::RequestId;
