//! Disk full without a full disk: `max_page_count` makes SQLite answer SQLITE_FULL exactly
//! as ENOSPC does, and a hook frees that simulated disk when the reserve is deleted.

use askpro_actors::domain::Company;
use askpro_actors::ids::{CompanyId, EventId};
use askpro_actors::log::EventLog;
use askpro_actors::record::{Disposition, LogRecord, Provider, RecordMeta};
use askpro_actors::store::StateStore;
use askpro_actors::LogError;
use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;

use super::*;
use crate::embedded::{EmbeddedLog, EmbeddedStore};

/// A record big enough to need new pages (overflow pages) in `log.db`.
fn big_record(company: CompanyId) -> LogRecord {
    LogRecord {
        meta: RecordMeta {
            event_id: EventId::new(),
            provider: Provider::Retell,
            company_id: company,
            event_type: "call_analyzed".into(),
            dedup_key: format!("retell:call_analyzed:{}", Uuid::now_v7()),
            received_at: Utc::now(),
            correlation_id: Uuid::now_v7(),
            secret_id: "sec_1".into(),
            disposition: Disposition::Accept,
            retry: None,
        },
        value: Bytes::from("x".repeat(16 * 1024)),
    }
}

fn company(name: &str) -> Company {
    Company {
        id: CompanyId::new(),
        name: name.into(),
        allow_unsigned_calcom: false,
        created_at: Utc::now(),
    }
}

fn lift_cap(conn: &Connection) {
    conn.query_row("PRAGMA max_page_count = 4294967294", [], |_| Ok(()))
        .unwrap();
}

#[tokio::test]
async fn a_full_disk_gives_the_reserve_to_the_log_and_holds_state_writes_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let reserve = DiskReserve::new(dir.path(), 64 * 1024).unwrap();
    let log = EmbeddedLog::open_reserved(dir.path(), 2, Some(reserve.clone())).unwrap();
    let store = EmbeddedStore::open_reserved(dir.path(), Some(reserve.clone())).unwrap();
    assert!(reserve.is_held(), "created at open");
    store.create_company(&company("before")).await.unwrap();

    // The disk is full: log.db cannot grow. Deleting the reserve frees room, which the
    // simulated disk hands to the next writer: the log, retrying its append.
    log.simulate_full_disk(true).unwrap();
    log.on_release(Box::new(lift_cap));
    let tenant = CompanyId::new();
    log.append(vec![big_record(tenant)])
        .await
        .expect("the append that found the disk full is accepted on the reserve's space");
    assert!(!reserve.is_held(), "the reserve was released");
    log.check().await.expect("the log is healthy: it can write");

    // That space is the log's: state writes wait instead of growing state.db into it...
    let refused = store.create_company(&company("during")).await.unwrap_err();
    assert!(refused.is_transient(), "{refused:?}");
    let reason = std::error::Error::source(&refused).unwrap().to_string();
    assert!(reason.contains("disk reserve"), "{reason}");
    // ...while the log keeps accepting webhooks.
    log.append(vec![big_record(tenant)]).await.unwrap();

    // Space is back: the keeper re-creates the reserve (called directly here), and state
    // writes resume.
    assert!(reserve.ensure().unwrap());
    store.create_company(&company("after")).await.unwrap();
}

#[tokio::test]
async fn without_room_the_log_says_disk_full_without_a_path_until_a_probe_fits() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open_reserved(dir.path(), 2, None).unwrap();
    log.simulate_full_disk(true).unwrap();

    let err = log
        .append(vec![big_record(CompanyId::new())])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::DiskFull { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("disk full"), "{message}");
    let dir_name = dir.path().display().to_string();
    assert!(
        !message.contains(&dir_name) && !message.contains("log.db"),
        "{message}"
    );
    let unhealthy = log.check().await.unwrap_err();
    assert!(
        matches!(unhealthy, LogError::DiskFull { .. }),
        "{unhealthy:?}"
    );

    // Freed space is noticed by the check's probe, with no webhook needed.
    log.simulate_full_disk(false).unwrap();
    log.check().await.expect("healthy once a webhook would fit");
    log.append(vec![big_record(CompanyId::new())])
        .await
        .unwrap();
}
