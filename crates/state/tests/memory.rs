//! One million distinct client addresses through the in-process limiter: the resident memory
//! of the whole process stays under 200 MB. Its own test binary, so that nothing else in the
//! process counts.

use std::time::Duration;

use portcullis_state::{RateRule, SharedState};

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn a_million_addresses_stay_under_200_mb() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("SKIPPED: no /proc to read the resident size from");
        return;
    }
    // The seeds' production default, 100 a minute per client, on the default key bound.
    let state = SharedState::local(1_000_000);
    let rule = RateRule::per(100, Duration::from_secs(60), 10).unwrap_or_else(|| panic!());
    let before = resident_bytes();
    let mut allowed = 0u32;
    for i in 0..1_000_000u32 {
        // Every request from a new address, all within one window: nothing is idle yet.
        let address = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        let decision = state
            .rate_limit_at(&format!("ip:{address}"), &rule, 1_000_000 + u64::from(i))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        allowed += u32::from(decision.allowed);
    }
    let after = resident_bytes();
    eprintln!(
        "resident: {} MB before, {} MB after a million addresses",
        before / 1_000_000,
        after / 1_000_000
    );
    assert_eq!(allowed, 1_000_000, "every new address has its burst");
    assert!(after < 200_000_000, "{after} bytes resident");
    // And a spray past the bound evicts instead of growing.
    for i in 0..500_000u32 {
        let address = std::net::Ipv4Addr::from(0x0b00_0000 + i);
        let _ = state
            .rate_limit_at(&format!("ip:{address}"), &rule, 2_000_000 + u64::from(i))
            .await;
    }
    let sprayed = resident_bytes();
    eprintln!("resident after 500,000 more: {} MB", sprayed / 1_000_000);
    assert!(sprayed < 200_000_000, "{sprayed} bytes resident");
}
