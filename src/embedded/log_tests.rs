//! SQLite specifics of the embedded log (the backend-neutral contract lives in
//! `tests/it/log_contract.rs`).

use std::collections::BTreeMap;

use askpro_actors::ids::{CompanyId, EventId};
use askpro_actors::record::{Disposition, Provider, RecordMeta};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use uuid::Uuid;

use super::*;

fn record(company: CompanyId, body: &str) -> LogRecord {
    LogRecord {
        meta: RecordMeta {
            event_id: EventId::new(),
            provider: Provider::Retell,
            company_id: company,
            event_type: "call_ended".into(),
            dedup_key: format!("retell:call_ended:{body}"),
            received_at: Utc.timestamp_millis_opt(1_764_064_800_123).unwrap(),
            correlation_id: Uuid::now_v7(),
            secret_id: "sec_1".into(),
            disposition: Disposition::Accept,
            retry: None,
        },
        value: Bytes::from(body.to_owned()),
    }
}

fn open(dir: &Path, partitions: u32) -> EmbeddedLog {
    EmbeddedLog::open(dir, partitions).unwrap()
}

/// Offsets per partition must be 0, 1, 2, ... in append order.
fn assert_dense(positions: &[LogPosition]) {
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for p in positions {
        per_partition.entry(p.partition).or_default().push(p.offset);
    }
    for (partition, offsets) in per_partition {
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "partition {partition}");
    }
}

#[tokio::test]
async fn offsets_are_dense_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tenants: Vec<CompanyId> = (0..6).map(|_| CompanyId::new()).collect();
    let mut all = Vec::new();
    {
        let log = open(dir.path(), 4);
        for round in 0..3 {
            let batch = tenants
                .iter()
                .map(|t| record(*t, &format!("r{round}")))
                .collect();
            all.extend(log.append(batch).await.unwrap());
        }
    }
    let log = open(dir.path(), 4);
    let batch = tenants.iter().map(|t| record(*t, "after reopen")).collect();
    all.extend(log.append(batch).await.unwrap());
    assert_dense(&all);
    for p in 0..4 {
        let count = all.iter().filter(|pos| pos.partition == p).count() as u64;
        assert_eq!(log.end_offset(p).await.unwrap(), count);
    }
}

#[tokio::test]
async fn a_different_partition_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 8));
    let err = EmbeddedLog::open(dir.path(), 16)
        .err()
        .expect("must refuse");
    let LogError::Invalid(message) = &err else {
        panic!("expected Invalid, got {err:?}")
    };
    assert!(message.contains('8') && message.contains("16"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    // The original count still opens.
    assert_eq!(open(dir.path(), 8).partitions(), 8);
    assert!(matches!(
        EmbeddedLog::open(dir.path(), 0),
        Err(LogError::Invalid(_))
    ));
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        drop(open(dir.path(), 2));
    }
    let conn = Connection::open(dir.path().join(LOG_FILE)).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, migrate::LOG.len() as i64);
}

#[tokio::test]
async fn a_batch_of_1000_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 8);
    let tenants: Vec<CompanyId> = (0..50).map(|_| CompanyId::new()).collect();
    let batch: Vec<LogRecord> = (0..1000)
        .map(|i| record(tenants[i % tenants.len()], &format!("body {i}")))
        .collect();
    let keys: Vec<String> = batch.iter().map(LogRecord::key).collect();
    let positions = log.append(batch).await.unwrap();
    assert_eq!(log.group_commits(), 1);
    assert_eq!(positions.len(), 1000);
    for (key, pos) in keys.iter().zip(&positions) {
        assert_eq!(pos.partition, partition_for(key.as_bytes(), 8));
    }
    assert_dense(&positions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_distinct_dense_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let batch = vec![
                    record(CompanyId::new(), &format!("a{i}")),
                    record(CompanyId::new(), &format!("b{i}")),
                ];
                log.append(batch).await.unwrap()
            })
        })
        .collect();
    let mut offsets = Vec::new();
    for task in tasks {
        let positions = task.await.unwrap();
        // A caller's batch stays contiguous: it is written as a unit.
        assert_eq!(positions[1].offset, positions[0].offset + 1);
        offsets.extend(positions.iter().map(|p| p.offset));
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..128).collect::<Vec<u64>>());
    assert!(log.group_commits() <= 64);
}

#[tokio::test]
async fn fetch_waits_and_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let started = std::time::Instant::now();
    assert!(log
        .fetch(0, 0, 10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));

    let reader = log.clone();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let records = reader
            .fetch(0, 0, 10, Duration::from_secs(10))
            .await
            .unwrap();
        (records, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    log.append(vec![record(CompanyId::new(), "wake up")])
        .await
        .unwrap();
    let (records, elapsed) = waiting.await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, Bytes::from_static(b"wake up"));
    assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
}

#[tokio::test]
async fn a_second_process_appends_are_seen_and_kept_dense() {
    let dir = tempfile::tempdir().unwrap();
    let server = open(dir.path(), 1);
    let cli = open(dir.path(), 1);
    server
        .append(vec![record(CompanyId::new(), "s0")])
        .await
        .unwrap();
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .fetch(0, 3, 10, Duration::from_secs(5))
                .await
                .unwrap()
        })
    };
    let from_cli = cli
        .append(vec![record(CompanyId::new(), "c1")])
        .await
        .unwrap();
    assert_eq!(from_cli[0].offset, 1);
    let from_server = server
        .append(vec![record(CompanyId::new(), "s2")])
        .await
        .unwrap();
    assert_eq!(from_server[0].offset, 2);
    cli.append(vec![record(CompanyId::new(), "c3")])
        .await
        .unwrap();
    // The server's own append (s2) wakes the fetch too early; it only learns about c3 by
    // polling the file.
    let records = waiting.await.unwrap();
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [3]);
    let all = server.fetch(0, 0, 10, Duration::ZERO).await.unwrap();
    let bodies: Vec<&[u8]> = all.iter().map(|r| &r.value[..]).collect();
    assert_eq!(bodies, [&b"s0"[..], b"c1", b"s2", b"c3"]);
}

#[tokio::test]
async fn headers_are_stored_as_a_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let rec = record(CompanyId::new(), "x");
    let event_id = rec.meta.event_id;
    log.append(vec![rec]).await.unwrap();
    let conn = Connection::open(dir.path().join(LOG_FILE)).unwrap();
    let id: String = conn
        .query_row(
            "SELECT headers ->> '$.\"askpro-event-id\"' FROM log_records",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(id, event_id.to_string());
}

#[tokio::test]
async fn undecodable_headers_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    log.append(vec![
        record(CompanyId::new(), "x"),
        record(CompanyId::new(), "y"),
    ])
    .await
    .unwrap();
    let conn = Connection::open(dir.path().join(LOG_FILE)).unwrap();
    conn.execute(
        "UPDATE log_records SET headers = '{\"askpro-event-id\":\"nope\"}' WHERE offset = 1",
        [],
    )
    .unwrap();
    let err = log.fetch(0, 0, 10, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Corrupt {
                partition: 0,
                offset: 1,
                ..
            }
        ),
        "{err:?}"
    );
    // Offset 0 alone still reads.
    assert_eq!(log.fetch(0, 0, 1, Duration::ZERO).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_partitions_and_bad_commits_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 2);
    assert!(matches!(
        log.fetch(2, 0, 1, Duration::ZERO).await,
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(log.end_offset(7).await, Err(LogError::Invalid(_))));
    assert!(matches!(
        log.commit("g", 2, 0).await,
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(
        log.commit("", 0, 0).await,
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(
        log.commit("g", 0, u64::MAX).await,
        Err(LogError::Invalid(_))
    ));
    assert_eq!(log.partitions(), 2);
}

/// Guards the checkpoint design: under steady appends the WAL must keep restarting. Without
/// the writer's checkpoint threshold it grows by every byte written (2 GiB seen for 120k
/// webhooks); with it, it stays near `WAL_AUTOCHECKPOINT_PAGES` × 4 KiB (16 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_steady_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4);
    let company = CompanyId::new();
    let body = "x".repeat(2048);
    for _ in 0..400 {
        let batch = (0..64).map(|_| record(company, &body)).collect();
        log.append(batch).await.unwrap();
    }
    // 400 × 64 × ~2.3 KiB ≈ 60 MiB went through the WAL.
    let wal = std::fs::metadata(dir.path().join("log.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 32 * 1024 * 1024, "wal grew to {wal} bytes");
}

#[tokio::test]
async fn retention_drops_only_old_records_every_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let company = CompanyId::new();
    let batch = (0..10).map(|i| record(company, &format!("r{i}"))).collect();
    log.append(batch).await.unwrap();
    let later = Utc::now() + chrono::Duration::hours(1);

    assert_eq!(
        log.enforce_retention(later).await.unwrap(),
        0,
        "no group committed yet"
    );
    log.commit("a", 0, 6).await.unwrap();
    log.commit("b", 0, 4).await.unwrap();
    assert_eq!(
        log.enforce_retention(later).await.unwrap(),
        4,
        "below the slowest group"
    );
    let left = log.fetch(0, 0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(left.first().map(|r| r.offset), Some(4));

    log.commit("a", 0, 10).await.unwrap();
    log.commit("b", 0, 10).await.unwrap();
    let earlier = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(
        log.enforce_retention(earlier).await.unwrap(),
        0,
        "too recent to drop"
    );
    assert_eq!(
        log.enforce_retention(later).await.unwrap(),
        5,
        "the newest record stays"
    );
    drop(log);

    // Offsets continue after a reopen: they never restart below what groups committed.
    let log = open(dir.path(), 1);
    let positions = log.append(vec![record(company, "next")]).await.unwrap();
    assert_eq!(positions[0].offset, 10);
}

#[tokio::test]
async fn retention_trims_in_chunks_until_done() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let company = CompanyId::new();
    let batch = (0..4500)
        .map(|i| record(company, &format!("r{i}")))
        .collect();
    log.append(batch).await.unwrap();
    log.commit("a", 0, 4500).await.unwrap();
    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(log.enforce_retention(later).await.unwrap(), 4499);
    assert_eq!(log.end_offset(0).await.unwrap(), 4500);
}
