//! `portcullis audit verify` finds an edited, a deleted and an inserted row, on SQLite and on
//! PostgreSQL.

use portcullis_core::{EventKind, RequestId, SecurityEvent};
use portcullis_store::{AuditLog, AuditRow, Store, StoreConfig};

use crate::support::{TempDir, postgres_database, run, sqlite_url};

#[derive(Clone, Copy, Debug)]
enum Tamper {
    None,
    Edit,
    Delete,
    Insert,
}

/// Writes a chain of five events through the real audit writer, then tampers with it in SQL.
async fn chain_then_tamper(url: &str, tamper: Tamper) {
    let config = StoreConfig {
        url: url.to_owned(),
        ..StoreConfig::sqlite_in(std::path::Path::new("."))
    };
    let store = Store::connect(&config).await.expect("connect");
    store.migrate().await.expect("migrate");
    let log = AuditLog::start(store.clone());
    for i in 0..5 {
        let event = SecurityEvent::new(EventKind::PathRejected, time::OffsetDateTime::now_utc())
            .with_request(&RequestId::generate(), [127, 0, 0, 1].into())
            .with_details(serde_json::json!({ "reason": format!("probe {i}") }));
        log.append(event).await.expect("append");
    }
    let rows = store.audit_tail(10).await.expect("tail");
    assert_eq!(rows.len(), 5);
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .expect("connect");
    match tamper {
        Tamper::None => {}
        Tamper::Edit => {
            sqlx::query("UPDATE audit_events SET details = $1 WHERE seq = 3")
                .bind("{\"reason\":\"nothing to see\"}")
                .execute(&mut conn)
                .await
                .expect("edit");
        }
        Tamper::Delete => {
            sqlx::query("DELETE FROM audit_events WHERE seq = 3")
                .execute(&mut conn)
                .await
                .expect("delete");
        }
        Tamper::Insert => {
            // Make room, then insert a row whose own hash is right and that links to row 2.
            sqlx::query("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 3")
                .execute(&mut conn)
                .await
                .expect("shift");
            sqlx::query("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
                .execute(&mut conn)
                .await
                .expect("shift");
            let mut forged = AuditRow {
                seq: 3,
                prev_hash: rows[1].hash.clone(),
                ..rows[2].clone()
            };
            forged.details = "{\"reason\":\"forged\"}".into();
            forged.hash = forged.expected_hash();
            sqlx::query(
                "INSERT INTO audit_events (seq, time, kind, severity, request_id, client_ip, user_id, key_id, \
                 route, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(forged.seq)
            .bind(forged.time)
            .bind(forged.kind)
            .bind(forged.severity)
            .bind(forged.request_id)
            .bind(forged.client_ip)
            .bind(forged.user_id)
            .bind(forged.key_id)
            .bind(forged.route)
            .bind(forged.details)
            .bind(forged.prev_hash)
            .bind(forged.hash)
            .execute(&mut conn)
            .await
            .expect("insert");
        }
    }
    store.close().await;
}

fn verify(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    let (status, output) = run(&all, env);
    (status.success(), output)
}

fn expect_outcome(tamper: Tamper, ok: bool, output: &str) {
    match tamper {
        Tamper::None => assert!(ok && output.contains("5 rows"), "{output}"),
        Tamper::Edit => assert!(
            !ok && output.contains("row 3: content does not match"),
            "{output}"
        ),
        Tamper::Delete => assert!(!ok && output.contains("row 3: missing"), "{output}"),
        Tamper::Insert => assert!(
            !ok && output.contains("row 4: previous hash does not match"),
            "{output}"
        ),
    }
}

#[tokio::test]
async fn verify_detects_tampering_on_sqlite() {
    sqlx::any::install_default_drivers();
    for tamper in [Tamper::None, Tamper::Edit, Tamper::Delete, Tamper::Insert] {
        let dir = TempDir::new("audit");
        let url = format!("{}?mode=rwc", sqlite_url(&dir.0));
        chain_then_tamper(&url, tamper).await;
        let (ok, output) = verify(&["--data-dir", dir.0.to_str().expect("utf8")], &[]);
        expect_outcome(tamper, ok, &output);
    }
}

#[tokio::test]
async fn verify_detects_tampering_on_postgres() {
    for tamper in [Tamper::None, Tamper::Edit, Tamper::Delete, Tamper::Insert] {
        let Some(url) = postgres_database("audit").await else {
            return;
        };
        chain_then_tamper(&url, tamper).await;
        let (ok, output) = verify(&[], &[("PORTCULLIS_STORAGE__URL", &url)]);
        expect_outcome(tamper, ok, &output);
    }
}

/// Two audit writers, as two instances sharing one database would have, and other writes to
/// the same database in between (bans, as the intrusion detection makes them): every event is
/// kept, in one unbroken chain.
async fn concurrent_writes_keep_every_event(url: &str) {
    let config = StoreConfig {
        url: url.to_owned(),
        ..StoreConfig::sqlite_in(std::path::Path::new("."))
    };
    let store = Store::connect(&config).await.expect("connect");
    store.migrate().await.expect("migrate");
    let writers = [
        AuditLog::start(store.clone()),
        AuditLog::start(store.clone()),
    ];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let log = writers[i % 2].clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 4 == 0 {
                let ban = portcullis_store::IpDecisionRow {
                    id: format!("ban-{i}"),
                    network: format!("203.0.113.{i}/32"),
                    action: "block".into(),
                    reason: "test".into(),
                    origin: "ids".into(),
                    created_at: 0,
                    expires_at: None,
                };
                store.insert_ip_decision(&ban).await.expect("ban");
            }
            let event = SecurityEvent::new(
                EventKind::RequestLimitExceeded,
                time::OffsetDateTime::now_utc(),
            );
            log.append(event).await
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("append");
    }
    let report = store.verify_audit().await.expect("verify");
    assert_eq!(report.rows, 200);
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_keep_every_event_on_sqlite() {
    let dir = TempDir::new("chain");
    concurrent_writes_keep_every_event(&format!("{}?mode=rwc", sqlite_url(&dir.0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_keep_every_event_on_postgres() {
    let Some(url) = postgres_database("chain").await else {
        return;
    };
    concurrent_writes_keep_every_event(&url).await;
}
