//! The MemStore's catalog and appointment semantics (the embedded store runs the same rules
//! in `tests/it/store_contract.rs`; actor tests rely on the MemStore following them too).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;

use super::*;
use crate::domain::Company;
use crate::ids::{BranchId, EventId};
use crate::store::StateStore;
use crate::testkit::t0;

async fn setup() -> (Arc<MemStore>, Branch) {
    let store = Arc::new(MemStore::new());
    let company = Company {
        id: CompanyId::new(),
        name: "Acme".into(),
        allow_unsigned_calcom: false,
        created_at: t0(),
    };
    store.create_company(&company).await.unwrap();
    let branch = Branch {
        id: BranchId::new(),
        company_id: company.id,
        name: "Mitte".into(),
        phone: "+493011111111".into(),
        timezone: "Europe/Berlin".into(),
        retell_agent_id: None,
        retell_llm_id: None,
        calcom: None,
        created_at: t0(),
        fallback_email: None,
    };
    store.create_branch(&branch).await.unwrap();
    (store, branch)
}

fn service(branch: &Branch, name: &str) -> Service {
    Service {
        company_id: branch.company_id,
        id: Uuid::now_v7(),
        branch_id: Some(branch.id),
        name: name.into(),
        duration_minutes: 30,
        price_cents: 0,
        currency: "EUR".into(),
        calcom_event_type_id: None,
        active: true,
        metadata: BTreeMap::new(),
        created_at: t0(),
    }
}

fn staff(branch: &Branch, active: bool, branch_id: Option<BranchId>) -> Staff {
    Staff {
        company_id: branch.company_id,
        id: Uuid::now_v7(),
        branch_id,
        name: "Bea".into(),
        email: None,
        active,
        created_at: t0(),
    }
}

fn appointment(company_id: CompanyId, secs: i64, status: AppointmentStatus) -> Appointment {
    Appointment {
        company_id,
        id: Uuid::now_v7(),
        calcom_uid: None,
        branch_id: None,
        service_id: None,
        customer_id: None,
        status,
        start_at: None,
        end_at: None,
        title: None,
        attendee_name: None,
        attendee_email: None,
        attendee_phone: None,
        timezone: None,
        rescheduled_to_uid: None,
        idempotency_key: None,
        sync_attempts: 0,
        last_error: None,
        source_event: EventId::new(),
        version: 1,
        created_at: t0() + Duration::seconds(secs),
        updated_at: t0(),
        contact_source: None,
    }
}

#[tokio::test]
async fn default_service_is_created_once_with_branch_staff() {
    let (store, branch) = setup().await;
    let here = staff(&branch, true, Some(branch.id));
    store.create_staff(&here).await.unwrap();
    store
        .create_staff(&staff(&branch, false, Some(branch.id)))
        .await
        .unwrap();
    store
        .create_staff(&staff(&branch, true, None))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (store, branch) = (Arc::clone(&store), branch.clone());
        tasks.spawn(async move {
            let candidate = service(&branch, &format!("default {i}"));
            store.ensure_default_service(&branch, &candidate).await
        });
    }
    let mut created = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let DefaultService::Created { assignments, .. } = done.unwrap().unwrap() {
            created.push(assignments);
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].len(), 1);
    assert_eq!(created[0][0].staff_id, here.id);
    assert_eq!(store.services(branch.company_id).await.unwrap().len(), 1);
    assert_eq!(
        store.assignments(branch.company_id).await.unwrap(),
        created[0]
    );
}

#[tokio::test]
async fn assign_needs_the_companys_rows_and_is_idempotent() {
    let (store, branch) = setup().await;
    let s = service(&branch, "cut");
    store.create_service(&s).await.unwrap();
    let member = staff(&branch, true, None);
    store.create_staff(&member).await.unwrap();
    let link = Assignment {
        company_id: branch.company_id,
        staff_id: member.id,
        service_id: s.id,
    };
    store.assign(&link).await.unwrap();
    store.assign(&link).await.unwrap();
    assert_eq!(
        store.assignments(branch.company_id).await.unwrap(),
        vec![link]
    );
    let foreign = Assignment {
        company_id: CompanyId::new(),
        ..link
    };
    let err = store.assign(&foreign).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn customers_by_phone_fill_gaps_and_anonymous_by_id() {
    let (store, branch) = setup().await;
    let first = Customer {
        company_id: branch.company_id,
        id: Uuid::now_v7(),
        name: None,
        phone: Some("+4915112345678".into()),
        email: None,
        created_at: t0(),
    };
    assert_eq!(store.upsert_customer(&first).await.unwrap(), first);
    let again = Customer {
        id: Uuid::now_v7(),
        name: Some("Ada".into()),
        ..first.clone()
    };
    let merged = store.upsert_customer(&again).await.unwrap();
    assert_eq!(merged.id, first.id);
    assert_eq!(merged.name.as_deref(), Some("Ada"));
    let anonymous = Customer {
        id: Uuid::now_v7(),
        phone: None,
        ..first.clone()
    };
    assert_eq!(store.upsert_customer(&anonymous).await.unwrap(), anonymous);
    let rerun = Customer {
        name: Some("Other".into()),
        ..anonymous.clone()
    };
    assert_eq!(store.upsert_customer(&rerun).await.unwrap(), anonymous);
}

#[tokio::test]
async fn update_branch_moves_the_phone_and_bumps_the_version() {
    let (store, branch) = setup().await;
    let v1 = store.routing_version().await.unwrap();
    assert!(v1 > 0, "create_branch bumps the version");
    let moved = Branch {
        phone: "+493022222222".into(),
        ..branch.clone()
    };
    store.update_branch(&moved).await.unwrap();
    assert!(store.routing_version().await.unwrap() > v1);
    assert_eq!(store.resolve_phone(&branch.phone).await.unwrap(), None);
    assert!(store.resolve_phone(&moved.phone).await.unwrap().is_some());
    let missing = Branch {
        id: BranchId::new(),
        ..moved
    };
    let err = store.update_branch(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn appointments_by_id_key_and_status() {
    let (store, branch) = setup().await;
    let company = branch.company_id;
    let mut late = appointment(company, 20, AppointmentStatus::PendingSync);
    late.idempotency_key = Some("key-1".into());
    let early = appointment(company, 10, AppointmentStatus::PendingSync);
    let done = appointment(company, 0, AppointmentStatus::Scheduled);
    for a in [&late, &early, &done] {
        assert!(store.upsert_appointment(a).await.unwrap());
    }
    let pending = store
        .appointments_by_status(company, AppointmentStatus::PendingSync, 10)
        .await
        .unwrap();
    assert_eq!(pending, vec![early.clone(), late.clone()]);
    let first = store
        .appointments_by_status(company, AppointmentStatus::PendingSync, 1)
        .await
        .unwrap();
    assert_eq!(first, vec![early]);
    assert_eq!(
        store.appointment_by_key(company, "key-1").await.unwrap(),
        Some(late.clone())
    );
    let mut stale = late.clone();
    stale.version = 0;
    assert!(!store.upsert_appointment(&stale).await.unwrap());
    let mut thief = appointment(company, 30, AppointmentStatus::PendingSync);
    thief.idempotency_key = Some("key-1".into());
    let err = store.upsert_appointment(&thief).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let other = CompanyId::new();
    assert_eq!(store.appointment(other, late.id).await.unwrap(), None);
    assert_eq!(
        store.appointment_by_key(other, "key-1").await.unwrap(),
        None
    );
}
