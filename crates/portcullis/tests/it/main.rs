//! Integration tests: the real `portcullis` binary on loopback ephemeral ports, in front of a
//! small upstream, with a real SQLite file or PostgreSQL database.
#![expect(
    clippy::expect_used,
    reason = "a broken fixture should fail the test loudly"
)]
#![expect(
    unreachable_pub,
    reason = "a test binary exports nothing; pub marks the harness API"
)]

mod admin_api;
mod api_keys;
mod audit;
mod bot;
mod browser;
mod brute_force;
mod config;
mod forward;
mod identity;
mod ids;
mod ip_decisions;
mod mail;
mod passkeys;
mod proxy;
mod rate_limit;
mod second_factor;
mod support;
mod tls;
mod tokens;
mod waf;
