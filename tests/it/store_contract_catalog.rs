//! Conformance checks of the catalog (services, staff, assignments, customers), branch
//! updates with the routing version, and the appointment model keyed by id. Run by
//! `store_conformance!` in `store_contract.rs` like every other check.

use std::collections::BTreeMap;

use askpro_actors::catalog::{
    Assignment, CalcomConfig, Customer, DefaultService, Service, Staff, DEFAULT_CALCOM_BASE_URL,
};
use askpro_actors::domain::{Appointment, AppointmentStatus, Branch};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{BranchId, CompanyId};
use askpro_actors::store::StateStore;
use uuid::Uuid;

use super::{appointment, at, branch, company, unique_phone};

async fn tenant_with_branch(store: &dyn StateStore) -> Branch {
    let c = company("Acme");
    store.create_company(&c).await.unwrap();
    let b = branch(c.id, &unique_phone());
    store.create_branch(&b).await.unwrap();
    b
}

pub fn service(company_id: CompanyId, branch_id: Option<BranchId>, name: &str, ms: i64) -> Service {
    Service {
        company_id,
        id: Uuid::now_v7(),
        branch_id,
        name: name.into(),
        duration_minutes: 45,
        price_cents: 2_500,
        currency: "EUR".into(),
        calcom_event_type_id: Some(42),
        active: true,
        metadata: BTreeMap::from([("source".to_owned(), "test".to_owned())]),
        created_at: at(ms),
    }
}

pub fn staff(company_id: CompanyId, branch_id: Option<BranchId>, name: &str, ms: i64) -> Staff {
    Staff {
        company_id,
        id: Uuid::now_v7(),
        branch_id,
        name: name.into(),
        email: Some(format!("{name}@example.org")),
        active: true,
        created_at: at(ms),
    }
}

fn customer(company_id: CompanyId, phone: Option<&str>, name: Option<&str>) -> Customer {
    Customer {
        company_id,
        id: Uuid::now_v7(),
        name: name.map(str::to_owned),
        phone: phone.map(str::to_owned),
        email: None,
        created_at: at(5),
    }
}

// ---- services ----------------------------------------------------------------------------

pub async fn services_round_trip_and_isolation(store: &dyn StateStore) {
    let b = tenant_with_branch(store).await;
    let other = company("Bolt");
    store.create_company(&other).await.unwrap();
    let late = service(b.company_id, Some(b.id), "Färben", 20);
    let early = service(b.company_id, None, "Schnitt", 10);
    store.create_service(&late).await.unwrap();
    store.create_service(&early).await.unwrap();
    assert_eq!(
        store.service(b.company_id, late.id).await.unwrap(),
        Some(late.clone())
    );
    assert_eq!(
        store.services(b.company_id).await.unwrap(),
        vec![early.clone(), late.clone()],
        "oldest first"
    );
    let err = store.create_service(&late).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    // Company B sees none of A's services, even by id.
    assert_eq!(store.service(other.id, late.id).await.unwrap(), None);
    assert!(store.services(other.id).await.unwrap().is_empty());

    let orphan = service(CompanyId::new(), None, "x", 0);
    let err = store.create_service(&orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let foreign_branch = service(other.id, Some(b.id), "x", 0);
    let err = store.create_service(&foreign_branch).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn default_service_existing_or_created(store: &dyn StateStore) {
    let b = tenant_with_branch(store).await;
    let company_id = b.company_id;
    let here = staff(company_id, Some(b.id), "ada", 1);
    let mut gone = staff(company_id, Some(b.id), "bea", 2);
    gone.active = false;
    let elsewhere = staff(company_id, None, "cem", 3);
    for s in [&here, &gone, &elsewhere] {
        store.create_staff(s).await.unwrap();
    }
    // An inactive service and one of another branch do not count.
    let mut inactive = service(company_id, Some(b.id), "alt", 0);
    inactive.active = false;
    store.create_service(&inactive).await.unwrap();
    let second = branch(company_id, &unique_phone());
    store.create_branch(&second).await.unwrap();
    store
        .create_service(&service(company_id, Some(second.id), "dort", 0))
        .await
        .unwrap();

    let candidate = service(company_id, Some(b.id), "Standardberatung", 50);
    let created = store.ensure_default_service(&b, &candidate).await.unwrap();
    let expected = vec![Assignment {
        company_id,
        staff_id: here.id,
        service_id: candidate.id,
    }];
    assert_eq!(
        created,
        DefaultService::Created {
            service: candidate.clone(),
            assignments: expected.clone(),
        }
    );
    assert_eq!(store.assignments(company_id).await.unwrap(), expected);

    let again = service(company_id, Some(b.id), "Standardberatung", 60);
    let existing = store.ensure_default_service(&b, &again).await.unwrap();
    assert_eq!(existing, DefaultService::Existing(candidate.clone()));
    assert_eq!(store.service(company_id, again.id).await.unwrap(), None);

    // A company-wide service counts for a branch that has none of its own.
    let third = branch(company_id, &unique_phone());
    store.create_branch(&third).await.unwrap();
    let wide = service(company_id, None, "überall", 70);
    store.create_service(&wide).await.unwrap();
    let found = store
        .ensure_default_service(&third, &service(company_id, Some(third.id), "x", 80))
        .await
        .unwrap();
    assert_eq!(found, DefaultService::Existing(wide));
}

pub async fn default_service_is_created_once_under_concurrency(store: &dyn StateStore) {
    let b = tenant_with_branch(store).await;
    let member = staff(b.company_id, Some(b.id), "ada", 1);
    store.create_staff(&member).await.unwrap();
    let candidates: Vec<Service> = (0..10)
        .map(|i| service(b.company_id, Some(b.id), &format!("default {i}"), 10 + i))
        .collect();
    let results = futures::future::join_all(
        candidates
            .iter()
            .map(|c| store.ensure_default_service(&b, c)),
    )
    .await;
    let mut created = 0;
    let mut ids = Vec::new();
    for result in results {
        let outcome = result.unwrap();
        if let DefaultService::Created { assignments, .. } = &outcome {
            created += 1;
            assert_eq!(assignments.len(), 1);
        }
        ids.push(outcome.service().id);
    }
    assert_eq!(created, 1, "exactly one call creates the service");
    ids.dedup();
    assert_eq!(ids.len(), 1, "every call answers with the same service");
    assert_eq!(store.services(b.company_id).await.unwrap().len(), 1);
    assert_eq!(store.assignments(b.company_id).await.unwrap().len(), 1);
}

// ---- staff and assignments ---------------------------------------------------------------

pub async fn staff_and_assignments(store: &dyn StateStore) {
    let b = tenant_with_branch(store).await;
    let company_id = b.company_id;
    let other = company("Bolt");
    store.create_company(&other).await.unwrap();
    let late = staff(company_id, Some(b.id), "bea", 20);
    let early = staff(company_id, None, "ada", 10);
    store.create_staff(&late).await.unwrap();
    store.create_staff(&early).await.unwrap();
    assert_eq!(
        store.staff(company_id).await.unwrap(),
        vec![early.clone(), late.clone()]
    );
    assert!(store.staff(other.id).await.unwrap().is_empty());

    let s = service(company_id, None, "Schnitt", 0);
    store.create_service(&s).await.unwrap();
    let link = Assignment {
        company_id,
        staff_id: late.id,
        service_id: s.id,
    };
    store.assign(&link).await.unwrap();
    store.assign(&link).await.unwrap();
    assert_eq!(store.assignments(company_id).await.unwrap(), vec![link]);

    // Another tenant cannot link A's rows, and nothing leaks into its listing.
    let foreign = Assignment {
        company_id: other.id,
        ..link
    };
    let err = store.assign(&foreign).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let unknown_service = Assignment {
        service_id: Uuid::now_v7(),
        ..link
    };
    let err = store.assign(&unknown_service).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(store.assignments(other.id).await.unwrap().is_empty());
}

// ---- customers ---------------------------------------------------------------------------

pub async fn customers_by_phone_or_id(store: &dyn StateStore) {
    let a = company("Acme");
    store.create_company(&a).await.unwrap();
    let first = customer(a.id, Some("+4915112345678"), None);
    assert_eq!(store.upsert_customer(&first).await.unwrap(), first);

    let second = Customer {
        email: Some("ada@example.org".into()),
        ..customer(a.id, Some("+4915112345678"), Some("Ada"))
    };
    let merged = store.upsert_customer(&second).await.unwrap();
    assert_eq!(merged.id, first.id, "the phone finds the first row");
    assert_eq!(
        merged.name.as_deref(),
        Some("Ada"),
        "a missing name is filled"
    );
    assert_eq!(merged.email.as_deref(), Some("ada@example.org"));
    assert_eq!(
        store.customer(a.id, first.id).await.unwrap(),
        Some(merged.clone())
    );
    assert_eq!(store.customer(a.id, second.id).await.unwrap(), None);

    // A known name is not overwritten.
    let third = customer(a.id, Some("+4915112345678"), Some("Eve"));
    let kept = store.upsert_customer(&third).await.unwrap();
    assert_eq!(kept.name.as_deref(), Some("Ada"));

    // Anonymous callers are keyed by id: a rerun finds the row, another id is another row.
    let anon = customer(a.id, None, Some("Anon"));
    assert_eq!(store.upsert_customer(&anon).await.unwrap(), anon);
    let rerun = Customer {
        name: Some("Changed".into()),
        ..anon.clone()
    };
    assert_eq!(store.upsert_customer(&rerun).await.unwrap(), anon);
    let other_anon = customer(a.id, None, None);
    assert_eq!(
        store.upsert_customer(&other_anon).await.unwrap(),
        other_anon
    );

    // The same phone in another company is another customer.
    let b = company("Bolt");
    store.create_company(&b).await.unwrap();
    let theirs = customer(b.id, Some("+4915112345678"), None);
    assert_eq!(store.upsert_customer(&theirs).await.unwrap(), theirs);
    assert_eq!(store.customer(b.id, first.id).await.unwrap(), None);
}

// ---- branch updates ----------------------------------------------------------------------

pub async fn update_branch_moves_phone_and_bumps_routing(store: &dyn StateStore) {
    let v0 = store.routing_version().await.unwrap();
    let b = tenant_with_branch(store).await;
    let v1 = store.routing_version().await.unwrap();
    assert!(v1 > v0, "create_branch bumps the routing version");

    let moved = Branch {
        phone: unique_phone(),
        name: "Mitte neu".into(),
        retell_agent_id: Some("agent_42".into()),
        retell_llm_id: Some("llm_42".into()),
        calcom: Some(CalcomConfig {
            api_key: "cal_live_secret".into(),
            event_type_id: 7,
            base_url: DEFAULT_CALCOM_BASE_URL.into(),
            rate_limit_per_min: Some(60),
        }),
        ..b.clone()
    };
    store.update_branch(&moved).await.unwrap();
    let v2 = store.routing_version().await.unwrap();
    assert!(v2 > v1, "update_branch bumps the routing version");
    assert_eq!(store.resolve_phone(&b.phone).await.unwrap(), None);
    let route = store.resolve_phone(&moved.phone).await.unwrap().unwrap();
    assert_eq!((route.company_id, route.branch_id), (b.company_id, b.id));
    assert_eq!(
        store.branch(b.company_id, b.id).await.unwrap(),
        Some(moved.clone())
    );

    // The same number again is no move.
    store.update_branch(&moved).await.unwrap();
    assert!(store.resolve_phone(&moved.phone).await.unwrap().is_some());

    // Another branch's number is refused, atomically.
    let other = branch(b.company_id, &unique_phone());
    store.create_branch(&other).await.unwrap();
    let thief = Branch {
        phone: moved.phone.clone(),
        name: "renamed".into(),
        ..other.clone()
    };
    let err = store.update_branch(&thief).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.branch(b.company_id, other.id).await.unwrap(),
        Some(other.clone())
    );
    let route = store.resolve_phone(&other.phone).await.unwrap().unwrap();
    assert_eq!(route.branch_id, other.id);

    let missing = Branch {
        id: BranchId::new(),
        phone: unique_phone(),
        ..moved
    };
    let err = store.update_branch(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.resolve_phone(&missing.phone).await.unwrap(), None);
}

// ---- appointments ------------------------------------------------------------------------

pub async fn appointment_lifecycle_by_id_uid_and_key(store: &dyn StateStore) {
    let a = company("Acme");
    store.create_company(&a).await.unwrap();
    let mut pending = appointment(a.id, None, 1);
    pending.status = AppointmentStatus::PendingSync;
    pending.idempotency_key = Some("key-1".into());
    pending.service_id = Some(Uuid::now_v7());
    pending.customer_id = Some(Uuid::now_v7());
    assert!(store.upsert_appointment(&pending).await.unwrap());
    assert_eq!(
        store.appointment(a.id, pending.id).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(
        store.appointment_by_key(a.id, "key-1").await.unwrap(),
        Some(pending.clone())
    );

    // A failed attempt, then the booking: same id, newer versions.
    let retried = Appointment {
        sync_attempts: 1,
        last_error: Some("cal.com 503".into()),
        version: 2,
        ..pending.clone()
    };
    assert!(store.upsert_appointment(&retried).await.unwrap());
    let booked = Appointment {
        calcom_uid: Some("uid-1".into()),
        status: AppointmentStatus::Scheduled,
        last_error: None,
        version: 3,
        ..retried.clone()
    };
    assert!(store.upsert_appointment(&booked).await.unwrap());
    assert!(
        !store.upsert_appointment(&retried).await.unwrap(),
        "an older version does not apply"
    );
    assert_eq!(
        store
            .appointment_by_calcom_uid(a.id, "uid-1")
            .await
            .unwrap(),
        Some(booked.clone())
    );
    assert_eq!(
        store.appointment_by_key(a.id, "key-1").await.unwrap(),
        Some(booked.clone())
    );
    assert_eq!(
        store.appointments(a.id).await.unwrap(),
        vec![booked.clone()]
    );

    // Another appointment cannot take the key or the uid.
    let mut thief = appointment(a.id, None, 1);
    thief.idempotency_key = Some("key-1".into());
    let err = store.upsert_appointment(&thief).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.appointment(a.id, thief.id).await.unwrap(), None);

    // Company B sees nothing of A's, by id, uid, key or status.
    let b = company("Bolt");
    store.create_company(&b).await.unwrap();
    assert_eq!(store.appointment(b.id, booked.id).await.unwrap(), None);
    assert_eq!(
        store
            .appointment_by_calcom_uid(b.id, "uid-1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.appointment_by_key(b.id, "key-1").await.unwrap(), None);
    let scheduled = store
        .appointments_by_status(b.id, AppointmentStatus::Scheduled, 10)
        .await
        .unwrap();
    assert!(scheduled.is_empty());
    // The same key in B is B's own.
    let mut theirs = appointment(b.id, None, 1);
    theirs.idempotency_key = Some("key-1".into());
    assert!(store.upsert_appointment(&theirs).await.unwrap());
    assert_eq!(
        store.appointment_by_key(a.id, "key-1").await.unwrap(),
        Some(booked)
    );
}

pub async fn appointments_by_status_oldest_first(store: &dyn StateStore) {
    let a = company("Acme");
    store.create_company(&a).await.unwrap();
    let make = |created_ms: i64, status: AppointmentStatus| {
        let mut x = appointment(a.id, None, 1);
        x.created_at = at(created_ms);
        x.status = status;
        x
    };
    let third = make(300, AppointmentStatus::PendingSync);
    let first = make(100, AppointmentStatus::PendingSync);
    let done = make(50, AppointmentStatus::Scheduled);
    let second = make(200, AppointmentStatus::PendingSync);
    for x in [&third, &first, &done, &second] {
        assert!(store.upsert_appointment(x).await.unwrap());
    }
    let pending = store
        .appointments_by_status(a.id, AppointmentStatus::PendingSync, 10)
        .await
        .unwrap();
    assert_eq!(pending, vec![first.clone(), second.clone(), third.clone()]);
    let limited = store
        .appointments_by_status(a.id, AppointmentStatus::PendingSync, 2)
        .await
        .unwrap();
    assert_eq!(limited, vec![first.clone(), second]);
    let scheduled = store
        .appointments_by_status(a.id, AppointmentStatus::Scheduled, 10)
        .await
        .unwrap();
    assert_eq!(scheduled, vec![done.clone()]);
    let failed = store
        .appointments_by_status(a.id, AppointmentStatus::Failed, 10)
        .await
        .unwrap();
    assert!(failed.is_empty());
    let all = store.appointments(a.id).await.unwrap();
    assert_eq!(
        all.first(),
        Some(&done),
        "appointments() is oldest first too"
    );
    assert_eq!(all.len(), 4);
}
