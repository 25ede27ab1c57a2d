//! Abuse defence that outlives a request: allow and block decisions on client networks, made by
//! operators, the intrusion detection or honeypots, kept in the store and checked from memory;
//! the intrusion detection that makes them from security signals; and the proof-of-work
//! challenge of the bot defence.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod challenge;
pub mod ids;
pub mod ip;
