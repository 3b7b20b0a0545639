//! Conformance suite for the [`EventLog`] contract.
//!
//! Every check is a generic `pub async fn(log: &dyn EventLog)` that only assumes the log is
//! not shared with other writers during the test (offsets are measured from `end_offset`, so
//! a reused Kafka topic works too). A backend runs them all with one
//! `log_conformance!(name, open_fn, reopen_fn)` line at the bottom.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askpro_actors::ids::{CompanyId, EventId};
use askpro_actors::log::{EventLog, LogPosition};
use askpro_actors::partition::partition_for;
use askpro_actors::record::{Disposition, LogRecord, Provider, RecordMeta, StoredRecord};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use uuid::Uuid;

// ---- fixtures ----------------------------------------------------------------------------

/// A record of `company` whose body is `body`; received_at has whole milliseconds, the
/// precision of the `askpro-received-at` header.
pub fn record(company: CompanyId, body: &str, disposition: Disposition) -> LogRecord {
    LogRecord {
        meta: RecordMeta {
            event_id: EventId::new(),
            provider: Provider::Calcom,
            company_id: company,
            event_type: "BOOKING_CREATED".into(),
            dedup_key: format!("calcom:booking:{body}"),
            received_at: Utc.timestamp_millis_opt(1_764_064_800_123).unwrap(),
            correlation_id: Uuid::now_v7(),
            secret_id: "sec_1".into(),
            disposition,
            retry: None,
        },
        value: Bytes::from(body.to_owned()),
    }
}

fn accepted(company: CompanyId, body: &str) -> LogRecord {
    record(company, body, Disposition::Accept)
}

fn partition_of(log: &dyn EventLog, company: CompanyId) -> u32 {
    partition_for(company.to_string().as_bytes(), log.partitions())
}

fn bodies(records: &[StoredRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

fn assert_same(stored: &StoredRecord, sent: &LogRecord, position: LogPosition) {
    assert_eq!(
        (stored.partition, stored.offset),
        (position.partition, position.offset)
    );
    assert_eq!(stored.meta, sent.meta);
    assert_eq!(stored.value, sent.value);
}

// ---- checks ------------------------------------------------------------------------------

pub async fn append_places_records_by_partition_for(log: &dyn EventLog) {
    let tenants: Vec<CompanyId> = (0..20).map(|_| CompanyId::new()).collect();
    let mut start = BTreeMap::new();
    for p in 0..log.partitions() {
        start.insert(p, log.end_offset(p).await.unwrap());
    }
    // Two records per tenant, interleaved, in one batch.
    let batch: Vec<LogRecord> = (0..2)
        .flat_map(|round| {
            tenants
                .iter()
                .map(move |t| accepted(*t, &format!("{t}/{round}")))
        })
        .collect();
    let keys: Vec<String> = batch.iter().map(LogRecord::key).collect();
    let positions = log.append(batch).await.unwrap();
    assert_eq!(
        positions.len(),
        keys.len(),
        "one position per record, in input order"
    );

    let mut next = start.clone();
    for (key, pos) in keys.iter().zip(&positions) {
        assert_eq!(
            pos.partition,
            partition_for(key.as_bytes(), log.partitions()),
            "{key}"
        );
        let expected = next.get_mut(&pos.partition).unwrap();
        assert_eq!(pos.offset, *expected, "offsets are dense, in input order");
        *expected += 1;
    }
    for (p, end) in next {
        assert_eq!(
            log.end_offset(p).await.unwrap(),
            end,
            "end offset of partition {p}"
        );
    }
}

pub async fn a_tenant_keeps_its_order(log: &dyn EventLog) {
    let tenant = CompanyId::new();
    let p = partition_of(log, tenant);
    let start = log.end_offset(p).await.unwrap();
    let mut sent = Vec::new();
    let mut positions = Vec::new();
    for batch in 0..3 {
        let records: Vec<LogRecord> = (0..3)
            .map(|i| accepted(tenant, &format!("{batch}.{i}")))
            .collect();
        positions.extend(log.append(records.clone()).await.unwrap());
        sent.extend(records);
    }
    let fetched = log
        .fetch(p, start, 100, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(fetched.len(), sent.len());
    for ((stored, record), pos) in fetched.iter().zip(&sent).zip(&positions) {
        assert_same(stored, record, *pos);
    }
    let offsets: Vec<u64> = fetched.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (start..start + 9).collect::<Vec<_>>());
}

pub async fn headers_round_trip_every_disposition(log: &dyn EventLog) {
    let tenant = CompanyId::new();
    let p = partition_of(log, tenant);
    let start = log.end_offset(p).await.unwrap();
    let sent = vec![
        record(tenant, "a", Disposition::Accept),
        record(
            tenant,
            "r",
            Disposition::Rejected("body is not json".into()),
        ),
        record(
            tenant,
            "u",
            Disposition::Unrouted("no branch for +4930".into()),
        ),
    ];
    let positions = log.append(sent.clone()).await.unwrap();
    let fetched = log
        .fetch(p, start, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 3);
    for ((stored, record), pos) in fetched.iter().zip(&sent).zip(positions) {
        assert_same(stored, record, pos);
    }
}

pub async fn fetch_from_an_offset_respects_max(log: &dyn EventLog) {
    let tenant = CompanyId::new();
    let p = partition_of(log, tenant);
    let start = log.end_offset(p).await.unwrap();
    let records: Vec<LogRecord> = (0..10).map(|i| accepted(tenant, &i.to_string())).collect();
    log.append(records).await.unwrap();

    let middle = log
        .fetch(p, start + 4, 3, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(bodies(&middle), ["4", "5", "6"]);
    assert_eq!(
        middle.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [start + 4, start + 5, start + 6]
    );
    let tail = log
        .fetch(p, start + 8, 100, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(bodies(&tail), ["8", "9"]);
    let past_end = log
        .fetch(p, start + 10, 100, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(past_end.is_empty(), "{:?}", bodies(&past_end));
}

pub async fn fetch_waits_for_an_append(log: &dyn EventLog) {
    let tenant = CompanyId::new();
    let p = partition_of(log, tenant);
    let end = log.end_offset(p).await.unwrap();
    let started = Instant::now();
    let waiting = log.fetch(p, end, 10, Duration::from_secs(10));
    let appending = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        log.append(vec![accepted(tenant, "late")]).await.unwrap()
    };
    let (fetched, positions) = tokio::join!(waiting, appending);
    let fetched = fetched.unwrap();
    assert_eq!(bodies(&fetched), ["late"]);
    assert_eq!(fetched[0].offset, positions[0].offset);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke after {:?}",
        started.elapsed()
    );
}

pub async fn commit_and_committed(log: &dyn EventLog) {
    let group = format!("contract-{}", Uuid::now_v7());
    let other = format!("{group}-other");
    assert_eq!(log.committed(&group, 0).await.unwrap(), None);
    log.commit(&group, 0, 5).await.unwrap();
    assert_eq!(log.committed(&group, 0).await.unwrap(), Some(5));
    assert_eq!(
        log.committed(&other, 0).await.unwrap(),
        None,
        "groups are independent"
    );
    if log.partitions() > 1 {
        assert_eq!(
            log.committed(&group, 1).await.unwrap(),
            None,
            "partitions are independent"
        );
    }
    log.commit(&group, 0, 9).await.unwrap();
    assert_eq!(log.committed(&group, 0).await.unwrap(), Some(9));
}

pub async fn end_offset_tracks_appends(log: &dyn EventLog) {
    let tenant = CompanyId::new();
    let p = partition_of(log, tenant);
    let mut before = Vec::new();
    for q in 0..log.partitions() {
        before.push(log.end_offset(q).await.unwrap());
    }
    let positions = log
        .append((0..3).map(|i| accepted(tenant, &i.to_string())).collect())
        .await
        .unwrap();
    assert_eq!(positions.last().unwrap().offset + 1, before[p as usize] + 3);
    for q in 0..log.partitions() {
        let expected = before[q as usize] + if q == p { 3 } else { 0 };
        assert_eq!(log.end_offset(q).await.unwrap(), expected, "partition {q}");
    }
    log.check().await.unwrap();
}

/// Records and committed offsets written before a restart are there after it.
pub async fn records_survive_reopen<F, Fut>(log: Arc<dyn EventLog>, reopen: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let tenant = CompanyId::new();
    let p = partition_of(&*log, tenant);
    let start = log.end_offset(p).await.unwrap();
    let sent: Vec<LogRecord> = (0..4).map(|i| accepted(tenant, &i.to_string())).collect();
    let positions = log.append(sent.clone()).await.unwrap();
    let group = format!("contract-{}", Uuid::now_v7());
    log.commit(&group, p, start + 2).await.unwrap();
    drop(log);

    let log = reopen().await;
    assert_eq!(log.end_offset(p).await.unwrap(), start + 4);
    assert_eq!(log.committed(&group, p).await.unwrap(), Some(start + 2));
    let fetched = log
        .fetch(p, start, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 4);
    for ((stored, record), pos) in fetched.iter().zip(&sent).zip(positions) {
        assert_same(stored, record, pos);
    }
    // Appends continue densely after the restart.
    let next = log.append(vec![accepted(tenant, "after")]).await.unwrap();
    assert_eq!(
        next[0],
        LogPosition {
            partition: p,
            offset: start + 4
        }
    );
}

// ---- runners -----------------------------------------------------------------------------

/// Runs every check above against a backend. `$open` is an async fn returning
/// `(guard, Arc<dyn EventLog>)`; `$reopen` an async fn taking `&guard` and opening the same
/// log again.
macro_rules! log_conformance {
    ($backend:ident, $open:path, $reopen:path) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            log_conformance!(@tests $open;
                append_places_records_by_partition_for,
                a_tenant_keeps_its_order,
                headers_round_trip_every_disposition,
                fetch_from_an_offset_respects_max,
                fetch_waits_for_an_append,
                commit_and_committed,
                end_offset_tracks_appends,
            );

            #[tokio::test]
            async fn records_survive_reopen() {
                let (guard, log) = $open().await;
                super::records_survive_reopen(log, || $reopen(&guard)).await;
            }
        }
    };
    (@tests $open:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, log) = $open().await;
                super::$name(&*log).await;
            }
        )*
    };
}

const EMBEDDED_PARTITIONS: u32 = 4;

async fn open_embedded() -> (tempfile::TempDir, Arc<dyn EventLog>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = reopen_embedded(&dir).await;
    (dir, log)
}

async fn reopen_embedded(dir: &tempfile::TempDir) -> Arc<dyn EventLog> {
    let log = askpro::embedded::EmbeddedLog::open(dir.path(), EMBEDDED_PARTITIONS)
        .expect("open embedded log");
    Arc::new(log)
}

log_conformance!(embedded, open_embedded, reopen_embedded);
