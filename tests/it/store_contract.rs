//! Conformance suite for the [`StateStore`] contract.
//!
//! Every check is a generic `pub async fn(store: &dyn StateStore)`, so any backend (the
//! embedded SQLite store, the CQL store in `store_contract_cql.rs`) runs the same functions:
//! one `store_conformance!(backend_name, open_expression)` line per backend. A check must not
//! assume an empty store: the CQL backend shares one keyspace between all checks of a run, so
//! each check works with companies it creates, filters global listings by their ids, and
//! takes phone numbers (a global index) from [`unique_phone`].
//! Timestamps are whole milliseconds, the precision every backend keeps.

use askpro_actors::domain::{
    Appointment, AppointmentStatus, Branch, Call, Company, DedupClaim, EventRow, EventStatus,
    PhoneRoute, Secret,
};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{BranchId, CompanyId, EventId};
use askpro_actors::record::Provider;
use askpro_actors::store::{ClaimRequest, StateStore};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

#[path = "store_contract_catalog.rs"]
mod catalog;
pub use catalog::*;
#[path = "store_contract_contact.rs"]
mod contact;
pub use contact::*;
#[path = "store_contract_apikeys.rs"]
mod apikeys;
pub use apikeys::*;

// ---- fixtures ----------------------------------------------------------------------------

/// A fixed instant plus `ms` milliseconds.
pub fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_764_064_800_000 + ms).unwrap()
}

/// A phone number no other call in this process returns (the phone index is global).
pub fn unique_phone() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("+49301{:09}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn company(name: &str) -> Company {
    Company {
        id: CompanyId::new(),
        name: name.into(),
        allow_unsigned_calcom: false,
        created_at: at(0),
    }
}

pub fn branch(company_id: CompanyId, phone: &str) -> Branch {
    Branch {
        id: BranchId::new(),
        company_id,
        name: format!("branch {phone}"),
        phone: phone.into(),
        timezone: "Europe/Berlin".into(),
        retell_agent_id: None,
        retell_llm_id: None,
        calcom: None,
        created_at: at(1),
        fallback_email: None,
    }
}

pub fn secret(company_id: CompanyId, provider: Provider, id: &str) -> Secret {
    Secret {
        company_id,
        provider,
        id: id.into(),
        value: format!("value of {id}"),
        created_at: at(2),
    }
}

pub fn event(company_id: CompanyId, received_ms: i64) -> EventRow {
    EventRow {
        id: EventId::new(),
        company_id,
        provider: Provider::Retell,
        event_type: "call_ended".into(),
        dedup_key: format!("retell:call_ended:{received_ms}"),
        status: EventStatus::Received,
        attempts: 0,
        error: None,
        correlation_id: Uuid::now_v7(),
        secret_id: "sec_1".into(),
        partition: 3,
        offset: 42,
        received_at: at(received_ms),
        updated_at: at(received_ms),
        payload: Bytes::from(format!("{{\"n\":{received_ms}}}")),
    }
}

pub fn call(company_id: CompanyId, call_id: &str, version: i64) -> Call {
    Call {
        company_id,
        call_id: call_id.into(),
        branch_id: Some(BranchId::new()),
        agent_id: Some("agent_1".into()),
        direction: Some("inbound".into()),
        from_number: Some("+4915112345678".into()),
        to_number: Some("+493012345678".into()),
        status: format!("status v{version}"),
        start_at: Some(at(10)),
        end_at: Some(at(70_010)),
        duration_ms: Some(70_000),
        disconnection_reason: Some("user_hangup".into()),
        summary: Some("wants a haircut".into()),
        last_event: format!("event v{version}"),
        version,
        updated_at: at(version),
    }
}

pub fn appointment(company_id: CompanyId, uid: Option<&str>, version: i64) -> Appointment {
    Appointment {
        company_id,
        id: Uuid::now_v7(),
        calcom_uid: uid.map(str::to_owned),
        branch_id: None,
        service_id: None,
        customer_id: None,
        status: AppointmentStatus::Scheduled,
        start_at: Some(at(3_600_000)),
        end_at: Some(at(5_400_000)),
        title: Some(format!("title v{version}")),
        attendee_name: Some("Ada".into()),
        attendee_email: Some("ada@example.org".into()),
        attendee_phone: None,
        timezone: Some("Europe/Berlin".into()),
        rescheduled_to_uid: None,
        idempotency_key: None,
        sync_attempts: 0,
        last_error: None,
        source_event: EventId::new(),
        version,
        created_at: at(3),
        updated_at: at(version),
        contact_source: None,
    }
}

/// A claim at `now` with a 1 s lease and a 10 s dedup window.
pub fn claim(company_id: CompanyId, key: &str, holder: EventId, now: i64) -> ClaimRequest<'_> {
    ClaimRequest {
        company_id,
        key,
        holder,
        now: at(now),
        lease_until: at(now + 1_000),
        expires_at: at(now + 10_000),
    }
}

async fn tenant(store: &dyn StateStore, name: &str) -> Company {
    let c = company(name);
    store.create_company(&c).await.unwrap();
    c
}

// ---- tenants -----------------------------------------------------------------------------

pub async fn companies_round_trip(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let b = tenant(store, "Bolt").await;
    assert_eq!(store.company(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.company(CompanyId::new()).await.unwrap(), None);
    let mut all = store.companies().await.unwrap();
    // Only this check's companies: other checks may share the store.
    all.retain(|c| c.id == a.id || c.id == b.id);
    all.sort_by_key(|c| c.id);
    assert_eq!(all, vec![a, b]);
}

pub async fn create_branch_needs_its_company(store: &dyn StateStore) {
    let orphan = branch(CompanyId::new(), &unique_phone());
    let err = store.create_branch(&orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.resolve_phone(&orphan.phone).await.unwrap(), None);
}

pub async fn phone_index_conflict_and_resolve(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let b = tenant(store, "Bolt").await;
    let owner = branch(a.id, &unique_phone());
    store.create_branch(&owner).await.unwrap();
    let route = PhoneRoute {
        company_id: a.id,
        branch_id: owner.id,
    };
    assert_eq!(
        store.resolve_phone(&owner.phone).await.unwrap(),
        Some(route)
    );

    let thief = branch(b.id, &owner.phone);
    let err = store.create_branch(&thief).await.unwrap_err();
    let StoreError::Conflict(message) = &err else {
        panic!("expected Conflict, got {err:?}")
    };
    assert!(message.contains(&owner.phone), "{message}");
    // Atomic: the refused branch was not created, and the number still routes to its owner.
    assert_eq!(store.branch(b.id, thief.id).await.unwrap(), None);
    assert_eq!(
        store.resolve_phone(&owner.phone).await.unwrap(),
        Some(route)
    );

    let second = branch(b.id, &unique_phone());
    store.create_branch(&second).await.unwrap();
    let second_route = store.resolve_phone(&second.phone).await.unwrap();
    assert_eq!(second_route.map(|r| r.branch_id), Some(second.id));
    assert_eq!(store.resolve_phone("+4900000000").await.unwrap(), None);
    assert_eq!(
        store.branch(a.id, owner.id).await.unwrap(),
        Some(owner.clone())
    );
    assert_eq!(store.branches(a.id).await.unwrap(), vec![owner]);
}

pub async fn secrets_add_list_remove(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let old = secret(a.id, Provider::Retell, "old");
    let new = secret(a.id, Provider::Retell, "new");
    let calcom = secret(a.id, Provider::Calcom, "cal");
    for s in [&old, &new, &calcom] {
        store.add_secret(s).await.unwrap();
    }
    let mut retell = store.secrets(a.id, Provider::Retell).await.unwrap();
    retell.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(retell, vec![new.clone(), old.clone()]);
    assert_eq!(
        store.secrets(a.id, Provider::Calcom).await.unwrap(),
        vec![calcom]
    );

    assert!(store
        .remove_secret(a.id, Provider::Retell, "old")
        .await
        .unwrap());
    assert!(!store
        .remove_secret(a.id, Provider::Retell, "old")
        .await
        .unwrap());
    assert_eq!(
        store.secrets(a.id, Provider::Retell).await.unwrap(),
        vec![new]
    );
}

// ---- tenant isolation --------------------------------------------------------------------

pub async fn tenants_are_isolated(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let b = tenant(store, "Bolt").await;
    let a_branch = branch(a.id, &unique_phone());
    store.create_branch(&a_branch).await.unwrap();
    store
        .add_secret(&secret(a.id, Provider::Retell, "a-secret"))
        .await
        .unwrap();
    store
        .add_secret(&secret(b.id, Provider::Retell, "b-secret"))
        .await
        .unwrap();
    let a_event = event(a.id, 0);
    store
        .record_events(std::slice::from_ref(&a_event))
        .await
        .unwrap();
    let a_call = call(a.id, "call_a", 1);
    assert!(store.upsert_call(&a_call).await.unwrap());
    let a_appt = appointment(a.id, Some("uid-a"), 1);
    assert!(store.upsert_appointment(&a_appt).await.unwrap());

    // A sees its own rows (so the negative checks below can fail)...
    assert!(store.branch(a.id, a_branch.id).await.unwrap().is_some());
    assert!(store.event(a.id, a_event.id).await.unwrap().is_some());
    assert_eq!(store.events(a.id, None, 10).await.unwrap().len(), 1);
    assert!(store.call(a.id, "call_a").await.unwrap().is_some());
    assert!(store
        .appointment_by_calcom_uid(a.id, "uid-a")
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.appointments(a.id).await.unwrap().len(), 1);

    // ...and B sees none of them, even by id.
    assert_eq!(store.branch(b.id, a_branch.id).await.unwrap(), None);
    assert!(store.branches(b.id).await.unwrap().is_empty());
    assert_eq!(store.event(b.id, a_event.id).await.unwrap(), None);
    assert!(store.events(b.id, None, 10).await.unwrap().is_empty());
    assert_eq!(store.call(b.id, "call_a").await.unwrap(), None);
    assert_eq!(
        store
            .appointment_by_calcom_uid(b.id, "uid-a")
            .await
            .unwrap(),
        None
    );
    assert!(store.appointments(b.id).await.unwrap().is_empty());
    let b_secrets = store.secrets(b.id, Provider::Retell).await.unwrap();
    let ids: Vec<&str> = b_secrets.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["b-secret"]);
    assert!(!store
        .remove_secret(b.id, Provider::Retell, "a-secret")
        .await
        .unwrap());
    assert_eq!(
        store.secrets(a.id, Provider::Retell).await.unwrap().len(),
        1
    );

    // The same dedup key is independent per tenant.
    let key = "retell:call_ended:call_a";
    let a_claim = store
        .dedup_claim(claim(a.id, key, EventId::new(), 0))
        .await
        .unwrap();
    assert_eq!(a_claim, DedupClaim::Claimed);
    let b_claim = store
        .dedup_claim(claim(b.id, key, EventId::new(), 0))
        .await
        .unwrap();
    assert_eq!(b_claim, DedupClaim::Claimed);

    // The same call id in B is B's own row and leaves A's untouched.
    let b_call = call(b.id, "call_a", 9);
    assert!(store.upsert_call(&b_call).await.unwrap());
    assert_eq!(store.call(a.id, "call_a").await.unwrap(), Some(a_call));
}

// ---- event ledger ------------------------------------------------------------------------

pub async fn record_events_does_not_reset_status(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let first = event(a.id, 0);
    let second = event(a.id, 1);
    store
        .record_events(&[first.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.event(a.id, first.id).await.unwrap(),
        Some(first.clone())
    );

    store
        .set_event_status(a.id, first.id, EventStatus::Failed, 3, Some("boom"), at(50))
        .await
        .unwrap();
    // A redelivery records the same rows again, with the initial status.
    store
        .record_events(&[first.clone(), second.clone()])
        .await
        .unwrap();
    let stored = store.event(a.id, first.id).await.unwrap().unwrap();
    assert_eq!(stored.status, EventStatus::Failed);
    assert_eq!(stored.attempts, 3);
    assert_eq!(stored.error.as_deref(), Some("boom"));
    assert_eq!(stored.updated_at, at(50));
    assert_eq!(store.event(a.id, second.id).await.unwrap(), Some(second));
}

pub async fn find_event_through_the_pointer_table(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let b = tenant(store, "Bolt").await;
    let a_event = event(a.id, 0);
    let b_event = event(b.id, 0);
    store
        .record_events(&[a_event.clone(), b_event.clone()])
        .await
        .unwrap();
    assert_eq!(store.find_event(a_event.id).await.unwrap(), Some(a_event));
    assert_eq!(store.find_event(b_event.id).await.unwrap(), Some(b_event));
    assert_eq!(store.find_event(EventId::new()).await.unwrap(), None);
    // The quarantine tenant has no companies row and is still found.
    let unrouted = event(CompanyId::UNROUTED, 5);
    store
        .record_events(std::slice::from_ref(&unrouted))
        .await
        .unwrap();
    assert_eq!(store.find_event(unrouted.id).await.unwrap(), Some(unrouted));
}

pub async fn events_newest_first_with_status_filter(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let rows: Vec<EventRow> = [30, 10, 20, 40].map(|ms| event(a.id, ms)).into();
    store.record_events(&rows).await.unwrap();
    let failed = [rows[1].id, rows[3].id];
    for id in failed {
        store
            .set_event_status(a.id, id, EventStatus::Failed, 1, Some("x"), at(99))
            .await
            .unwrap();
    }
    let newest: Vec<DateTime<Utc>> = store
        .events(a.id, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.received_at)
        .collect();
    assert_eq!(newest, [at(40), at(30), at(20), at(10)]);
    let limited = store.events(a.id, None, 2).await.unwrap();
    assert_eq!(
        limited.iter().map(|e| e.id).collect::<Vec<_>>(),
        [rows[3].id, rows[0].id]
    );
    let only_failed = store
        .events(a.id, Some(EventStatus::Failed), 10)
        .await
        .unwrap();
    assert_eq!(
        only_failed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [rows[3].id, rows[1].id]
    );
    assert!(only_failed.iter().all(|e| e.status == EventStatus::Failed));
    let received = store
        .events(a.id, Some(EventStatus::Received), 10)
        .await
        .unwrap();
    assert_eq!(received.len(), 2);
}

// ---- dedup -------------------------------------------------------------------------------

pub async fn dedup_claim_then_complete(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let (first, second) = (EventId::new(), EventId::new());
    assert_eq!(
        store.dedup_claim(claim(a.id, "k", first, 0)).await.unwrap(),
        DedupClaim::Claimed
    );
    let entry = store.dedup_entry(a.id, "k", at(1)).await.unwrap().unwrap();
    assert_eq!((entry.holder, entry.completed), (first, false));
    assert_eq!(
        (entry.lease_until, entry.expires_at),
        (at(1_000), at(10_000))
    );

    store.dedup_complete(a.id, "k", first).await.unwrap();
    assert!(
        store
            .dedup_entry(a.id, "k", at(2))
            .await
            .unwrap()
            .unwrap()
            .completed
    );
    // Completed wins over everything inside the window, lease or no lease.
    for (holder, now) in [(second, 3), (second, 5_000), (first, 5_000)] {
        let got = store
            .dedup_claim(claim(a.id, "k", holder, now))
            .await
            .unwrap();
        assert_eq!(got, DedupClaim::Completed { holder: first });
    }
}

pub async fn dedup_second_holder_sees_in_flight(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let (first, second) = (EventId::new(), EventId::new());
    store.dedup_claim(claim(a.id, "k", first, 0)).await.unwrap();
    let got = store
        .dedup_claim(claim(a.id, "k", second, 999))
        .await
        .unwrap();
    assert_eq!(
        got,
        DedupClaim::InFlight {
            holder: first,
            lease_until: at(1_000)
        }
    );
    // The refused claim changed nothing.
    assert_eq!(
        store
            .dedup_entry(a.id, "k", at(999))
            .await
            .unwrap()
            .unwrap()
            .holder,
        first
    );
}

pub async fn dedup_expired_lease_is_taken_over(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let (first, second) = (EventId::new(), EventId::new());
    store.dedup_claim(claim(a.id, "k", first, 0)).await.unwrap();
    // lease_until <= now: the first holder is presumed dead.
    let got = store
        .dedup_claim(claim(a.id, "k", second, 1_000))
        .await
        .unwrap();
    assert_eq!(got, DedupClaim::Claimed);
    let entry = store
        .dedup_entry(a.id, "k", at(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.holder, entry.lease_until), (second, at(2_000)));
    let back = store
        .dedup_claim(claim(a.id, "k", first, 1_500))
        .await
        .unwrap();
    assert_eq!(
        back,
        DedupClaim::InFlight {
            holder: second,
            lease_until: at(2_000)
        }
    );
}

pub async fn dedup_same_holder_reclaims(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let (holder, other) = (EventId::new(), EventId::new());
    store
        .dedup_claim(claim(a.id, "k", holder, 0))
        .await
        .unwrap();
    // A redelivery of the same event, inside its own lease.
    let got = store
        .dedup_claim(claim(a.id, "k", holder, 500))
        .await
        .unwrap();
    assert_eq!(got, DedupClaim::Claimed);
    let entry = store
        .dedup_entry(a.id, "k", at(500))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.holder, entry.lease_until), (holder, at(1_500)));
    // The renewed lease blocks others past the original one.
    let blocked = store
        .dedup_claim(claim(a.id, "k", other, 1_200))
        .await
        .unwrap();
    assert!(
        matches!(blocked, DedupClaim::InFlight { .. }),
        "{blocked:?}"
    );
}

pub async fn dedup_release_frees_the_key(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let (holder, other) = (EventId::new(), EventId::new());
    store
        .dedup_claim(claim(a.id, "k", holder, 0))
        .await
        .unwrap();
    // Only the holder can release.
    store.dedup_release(a.id, "k", other).await.unwrap();
    assert_eq!(
        store
            .dedup_entry(a.id, "k", at(1))
            .await
            .unwrap()
            .unwrap()
            .holder,
        holder
    );
    store.dedup_release(a.id, "k", holder).await.unwrap();
    assert_eq!(store.dedup_entry(a.id, "k", at(1)).await.unwrap(), None);
    let got = store.dedup_claim(claim(a.id, "k", other, 2)).await.unwrap();
    assert_eq!(got, DedupClaim::Claimed);

    // A completed key is not released.
    store.dedup_complete(a.id, "k", other).await.unwrap();
    store.dedup_release(a.id, "k", other).await.unwrap();
    let entry = store.dedup_entry(a.id, "k", at(3)).await.unwrap().unwrap();
    assert!(entry.completed);
}

pub async fn dedup_key_is_forgotten_after_its_window(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let (first, later) = (EventId::new(), EventId::new());
    store.dedup_claim(claim(a.id, "k", first, 0)).await.unwrap();
    store.dedup_complete(a.id, "k", first).await.unwrap();
    assert!(store
        .dedup_entry(a.id, "k", at(9_999))
        .await
        .unwrap()
        .is_some());
    // expires_at <= now: gone.
    assert_eq!(
        store.dedup_entry(a.id, "k", at(10_000)).await.unwrap(),
        None
    );
    let got = store
        .dedup_claim(claim(a.id, "k", later, 10_000))
        .await
        .unwrap();
    assert_eq!(got, DedupClaim::Claimed);
    let entry = store
        .dedup_entry(a.id, "k", at(10_001))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.holder, entry.completed), (later, false));
    assert_eq!(entry.expires_at, at(20_000));
}

// ---- calls and appointments --------------------------------------------------------------

pub async fn upsert_call_is_order_tolerant(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let v2 = call(a.id, "call_1", 2);
    assert!(store.upsert_call(&v2).await.unwrap(), "first write applies");
    assert_eq!(store.call(a.id, "call_1").await.unwrap(), Some(v2.clone()));

    let v1 = call(a.id, "call_1", 1);
    assert!(
        !store.upsert_call(&v1).await.unwrap(),
        "older version must not apply"
    );
    assert_eq!(store.call(a.id, "call_1").await.unwrap(), Some(v2.clone()));

    let mut replay = v2.clone();
    replay.summary = Some("replayed".into());
    assert!(
        store.upsert_call(&replay).await.unwrap(),
        "equal version re-applies"
    );
    assert_eq!(store.call(a.id, "call_1").await.unwrap(), Some(replay));

    let mut v3 = call(a.id, "call_1", 3);
    v3.from_number = None;
    v3.end_at = None;
    assert!(
        store.upsert_call(&v3).await.unwrap(),
        "newer version applies"
    );
    assert_eq!(store.call(a.id, "call_1").await.unwrap(), Some(v3));
}

pub async fn upsert_appointment_is_order_tolerant(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let v2 = appointment(a.id, Some("uid-1"), 2);
    assert!(store.upsert_appointment(&v2).await.unwrap());
    assert_eq!(
        store
            .appointment_by_calcom_uid(a.id, "uid-1")
            .await
            .unwrap(),
        Some(v2.clone())
    );

    // Rows built from other webhooks carry other ids; the uid is the key.
    let v1 = appointment(a.id, Some("uid-1"), 1);
    assert!(
        !store.upsert_appointment(&v1).await.unwrap(),
        "older version must not apply"
    );
    assert_eq!(
        store
            .appointment_by_calcom_uid(a.id, "uid-1")
            .await
            .unwrap(),
        Some(v2.clone())
    );

    let mut again = appointment(a.id, Some("uid-1"), 2);
    again.title = Some("replayed".into());
    assert!(
        store.upsert_appointment(&again).await.unwrap(),
        "equal version re-applies"
    );

    let mut v3 = appointment(a.id, Some("uid-1"), 3);
    v3.status = AppointmentStatus::Cancelled;
    assert!(
        store.upsert_appointment(&v3).await.unwrap(),
        "newer version applies"
    );
    let stored = store
        .appointment_by_calcom_uid(a.id, "uid-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, v2.id, "an update by uid keeps the stored id");
    assert_eq!(
        Appointment {
            id: v3.id,
            ..stored
        },
        v3
    );
    assert_eq!(store.appointments(a.id).await.unwrap().len(), 1);
}

pub async fn appointments_without_uid_are_keyed_by_id(store: &dyn StateStore) {
    let a = tenant(store, "Acme").await;
    let first = appointment(a.id, None, 1);
    let other = appointment(a.id, None, 1);
    assert!(store.upsert_appointment(&first).await.unwrap());
    assert!(store.upsert_appointment(&other).await.unwrap());
    assert_eq!(store.appointments(a.id).await.unwrap().len(), 2);

    let older = Appointment {
        version: 0,
        title: Some("stale".into()),
        ..first.clone()
    };
    assert!(!store.upsert_appointment(&older).await.unwrap());
    let newer = Appointment {
        version: 2,
        status: AppointmentStatus::Failed,
        ..first.clone()
    };
    assert!(store.upsert_appointment(&newer).await.unwrap());
    let all = store.appointments(a.id).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.contains(&newer) && all.contains(&other), "{all:?}");
}

// ---- durability and health ---------------------------------------------------------------

pub async fn sync_and_check_succeed(store: &dyn StateStore) {
    store.check().await.unwrap();
    let a = tenant(store, "Acme").await;
    store.sync().await.unwrap();
    store.sync().await.unwrap();
    assert_eq!(store.company(a.id).await.unwrap(), Some(a));
}

// ---- runners -----------------------------------------------------------------------------

/// Runs every check above against a backend: `$open` is an expression (awaited inside the
/// test) that returns `(guard, store)`; the guard lives as long as the test.
macro_rules! store_conformance {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            store_conformance!(@tests $open;
                companies_round_trip,
                create_branch_needs_its_company,
                phone_index_conflict_and_resolve,
                secrets_add_list_remove,
                tenants_are_isolated,
                record_events_does_not_reset_status,
                find_event_through_the_pointer_table,
                events_newest_first_with_status_filter,
                dedup_claim_then_complete,
                dedup_second_holder_sees_in_flight,
                dedup_expired_lease_is_taken_over,
                dedup_same_holder_reclaims,
                dedup_release_frees_the_key,
                dedup_key_is_forgotten_after_its_window,
                upsert_call_is_order_tolerant,
                upsert_appointment_is_order_tolerant,
                appointments_without_uid_are_keyed_by_id,
                sync_and_check_succeed,
                services_round_trip_and_isolation,
                default_service_existing_or_created,
                default_service_is_created_once_under_concurrency,
                staff_and_assignments,
                customers_by_phone_or_id,
                update_branch_moves_phone_and_bumps_routing,
                appointment_lifecycle_by_id_uid_and_key,
                appointments_by_status_oldest_first,
                branch_fallback_email_is_stored_updated_and_cleared,
                appointment_contact_source_round_trips,
                api_keys_create_lookup_list_revoke,
                api_key_needs_its_company_and_a_fresh_id,
            );
        }
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open;
                super::$name(&store).await;
            }
        )*
    };
}

fn open_embedded() -> (tempfile::TempDir, askpro::embedded::EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = askpro::embedded::EmbeddedStore::open(dir.path()).expect("open embedded store");
    (dir, store)
}

store_conformance!(embedded, open_embedded());

#[path = "store_contract_cql.rs"]
mod cql_backend;
