//! SQLite specifics of the embedded store (the backend-neutral contract lives in
//! `tests/it/store_contract.rs`).

use askpro_actors::domain::AppointmentStatus;
use chrono::TimeZone;
use uuid::Uuid;

use super::*;

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_764_000_000_000 + ms).unwrap()
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).unwrap()
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(STATE_FILE)).unwrap()
}

fn appointment(company_id: CompanyId, uid: Option<&str>, version: i64) -> Appointment {
    Appointment {
        company_id,
        id: Uuid::now_v7(),
        calcom_uid: uid.map(str::to_owned),
        branch_id: None,
        service_id: None,
        customer_id: None,
        status: AppointmentStatus::Scheduled,
        start_at: Some(at(3_600_000)),
        end_at: None,
        title: Some(format!("v{version}")),
        attendee_name: None,
        attendee_email: None,
        attendee_phone: None,
        timezone: None,
        rescheduled_to_uid: None,
        idempotency_key: None,
        sync_attempts: 0,
        last_error: None,
        source_event: EventId::new(),
        version,
        created_at: at(0),
        updated_at: at(version),
        contact_source: None,
    }
}

fn claim(company_id: CompanyId, key: &str, holder: EventId, now: i64) -> ClaimRequest<'_> {
    ClaimRequest {
        company_id,
        key,
        holder,
        now: at(now),
        lease_until: at(now + 1_000),
        expires_at: at(now + 10_000),
    }
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        open(dir.path()).check().await.unwrap();
    }
    let count: i64 = raw(dir.path())
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, migrate::STATE.len() as i64);
}

#[tokio::test]
async fn sync_writes_the_barrier_and_restores_normal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.sync().await.unwrap();
    store.sync().await.unwrap();
    let generation: i64 = raw(dir.path())
        .query_row("SELECT generation FROM sync_barrier", [], |r| r.get(0))
        .unwrap();
    assert_eq!(generation, 2);
    let synchronous: i64 = store
        .db
        .writer()
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(synchronous, 1, "writer must be back on NORMAL");
}

#[tokio::test]
async fn claims_purge_expired_keys_and_purge_expired_clears_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let company = CompanyId::new();
    for i in 0..100 {
        let key = format!("k{i}");
        store
            .dedup_claim(claim(company, &key, EventId::new(), 0))
            .await
            .unwrap();
    }
    let count = |conn: &Connection| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM dedup", [], |r| r.get(0))
            .unwrap()
    };
    // All 100 expired at 10_000; one later claim deletes a bounded batch of them.
    store
        .dedup_claim(claim(company, "fresh", EventId::new(), 20_000))
        .await
        .unwrap();
    let left = count(&raw(dir.path()));
    assert_eq!(left, 100 - super::sql::PURGE_PER_CLAIM + 1);
    assert_eq!(
        store.purge_expired(at(20_000)).await.unwrap(),
        (left - 1) as u64
    );
    assert_eq!(count(&raw(dir.path())), 1);
}

#[tokio::test]
async fn an_appointment_booked_without_uid_is_matched_by_id_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let company = CompanyId::new();
    let local = appointment(company, None, 1);
    assert!(store.upsert_appointment(&local).await.unwrap());
    let mut synced = local.clone();
    synced.calcom_uid = Some("uid-1".into());
    synced.version = 2;
    assert!(store.upsert_appointment(&synced).await.unwrap());
    let all = store.appointments(company).await.unwrap();
    assert_eq!(all, vec![synced.clone()]);
    // A different uid for the same id is refused rather than silently re-keyed.
    let mut other = synced.clone();
    other.calcom_uid = Some("uid-2".into());
    other.version = 3;
    let err = store.upsert_appointment(&other).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn a_tombstone_without_start_time_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let company = CompanyId::new();
    let mut tombstone = appointment(company, Some("uid-t"), 5);
    tombstone.start_at = None;
    tombstone.status = AppointmentStatus::Cancelled;
    assert!(store.upsert_appointment(&tombstone).await.unwrap());
    let older = appointment(company, Some("uid-t"), 4);
    assert!(!store.upsert_appointment(&older).await.unwrap());
    let stored = store
        .appointment_by_calcom_uid(company, "uid-t")
        .await
        .unwrap();
    assert_eq!(stored, Some(tombstone));
}

#[tokio::test]
async fn a_corrupt_row_is_reported_with_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    raw(dir.path())
        .execute("INSERT INTO companies VALUES ('not-a-uuid', 'x', 0, 0)", [])
        .unwrap();
    let err = store.companies().await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "companies",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn timestamps_keep_millisecond_precision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let precise = at(0) + chrono::Duration::nanoseconds(1_234_567);
    let company = Company {
        id: CompanyId::new(),
        name: "Acme".into(),
        allow_unsigned_calcom: false,
        created_at: precise,
    };
    store.create_company(&company).await.unwrap();
    let stored = store.company(company.id).await.unwrap().unwrap();
    assert_eq!(stored.created_at, at(1));
}

#[tokio::test]
async fn a_busy_database_is_unavailable_not_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let blocker = raw(dir.path());
    blocker.busy_timeout(std::time::Duration::ZERO).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Shorten the wait so the test does not sit out the 5 s busy timeout.
    store
        .db
        .writer()
        .busy_timeout(std::time::Duration::from_millis(50))
        .unwrap();
    let company = Company {
        id: CompanyId::new(),
        name: "Busy".into(),
        allow_unsigned_calcom: false,
        created_at: at(0),
    };
    let err = store.create_company(&company).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    blocker.execute_batch("ROLLBACK").unwrap();
    store.create_company(&company).await.unwrap();
}

#[tokio::test]
async fn migration_2_keeps_existing_appointments_and_branches() {
    let dir = tempfile::tempdir().unwrap();
    let company = CompanyId::new();
    let (appointment_id, branch_id) = (Uuid::now_v7(), askpro_actors::BranchId::new());
    {
        let mut conn = raw(dir.path());
        migrate::apply(&mut conn, &migrate::STATE[..1]).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO companies VALUES ('{company}', 'Old', 0, 1000);
             INSERT INTO branches VALUES ('{company}', '{branch_id}', 'Mitte', '+493011111111',
                 'Europe/Berlin', 1000);
             INSERT INTO phone_routes VALUES ('+493011111111', '{company}', '{branch_id}');
             INSERT INTO appointments (company_id, appointment_id, calcom_uid, branch_id, status,
                 start_at, end_at, title, attendee_name, attendee_email, attendee_phone,
                 rescheduled_to_uid, source_event, version, updated_at)
             VALUES ('{company}', '{appointment_id}', 'uid-old', NULL, 'scheduled', 5000, NULL,
                 'Haircut', 'Ada', NULL, NULL, NULL, '{}', 7, 4000);",
            EventId::new()
        ))
        .unwrap();
    }
    let store = open(dir.path());
    let stored = store
        .appointment_by_calcom_uid(company, "uid-old")
        .await
        .unwrap()
        .expect("the 0001 row survives migration 2");
    assert_eq!(stored.id, appointment_id);
    assert_eq!(stored.version, 7);
    assert_eq!(stored.created_at, stored.updated_at);
    assert_eq!(stored.contact_source, None);
    assert_eq!(
        (stored.sync_attempts, stored.idempotency_key.as_deref()),
        (0, None)
    );
    assert_eq!(
        store.appointment(company, appointment_id).await.unwrap(),
        Some(stored)
    );
    let branch = store.branch(company, branch_id).await.unwrap().unwrap();
    assert_eq!(
        (branch.retell_agent_id, branch.calcom, branch.retell_llm_id),
        (None, None, None)
    );
    assert_eq!(
        branch.fallback_email, None,
        "migration 3 adds an empty column"
    );
    assert!(store.routing_version().await.unwrap() > 0);
}

#[tokio::test]
async fn a_corrupt_calcom_config_does_not_leak_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let company = CompanyId::new();
    raw(dir.path())
        .execute_batch(&format!(
            "INSERT INTO companies VALUES ('{company}', 'x', 0, 0);
             INSERT INTO branches (company_id, branch_id, name, phone, timezone, created_at,
                 retell_agent_id, calcom) VALUES ('{company}', '{}', 'b', '+493011111111',
                 'Europe/Berlin', 0, NULL, '{{\"api_key\":\"cal_live_topsecret\"');",
            askpro_actors::BranchId::new()
        ))
        .unwrap();
    let err = store.branches(company).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "branches",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!format!("{err:?} {err}").contains("topsecret"), "{err:?}");
}
