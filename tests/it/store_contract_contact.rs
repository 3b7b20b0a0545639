//! Conformance checks of the anonymous-caller columns: a branch's fallback email and where an
//! appointment's attendee contact came from. Run by `store_conformance!` in
//! `store_contract.rs` like every other check (both stores).

use askpro_actors::domain::{AppointmentStatus, ContactSource};
use askpro_actors::store::StateStore;

use super::{appointment, branch, company, unique_phone};

pub async fn branch_fallback_email_is_stored_updated_and_cleared(store: &dyn StateStore) {
    let c = company("Salon Anonym");
    store.create_company(&c).await.unwrap();
    let mut b = branch(c.id, &unique_phone());
    b.fallback_email = Some("termine@salon.example".into());
    store.create_branch(&b).await.unwrap();
    let read = store.branch(c.id, b.id).await.unwrap().expect("branch");
    assert_eq!(
        read.fallback_email.as_deref(),
        Some("termine@salon.example")
    );

    b.fallback_email = Some("rezeption@salon.example".into());
    store.update_branch(&b).await.unwrap();
    let listed = store.branches(c.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].fallback_email.as_deref(),
        Some("rezeption@salon.example")
    );

    b.fallback_email = None;
    store.update_branch(&b).await.unwrap();
    let read = store.branch(c.id, b.id).await.unwrap().expect("branch");
    assert_eq!(read.fallback_email, None);
    assert_eq!(read, b);
}

pub async fn appointment_contact_source_round_trips(store: &dyn StateStore) {
    let c = company("Salon Kontakt");
    store.create_company(&c).await.unwrap();
    let sources = [
        None,
        Some(ContactSource::Caller),
        Some(ContactSource::CallData),
        Some(ContactSource::BranchFallback),
    ];
    for (i, source) in sources.into_iter().enumerate() {
        let mut a = appointment(c.id, None, 10);
        a.idempotency_key = Some(format!("contact-key-{i}"));
        a.contact_source = source;
        assert!(store.upsert_appointment(&a).await.unwrap());
        let read = store.appointment(c.id, a.id).await.unwrap().expect("row");
        assert_eq!(read.contact_source, source, "{source:?}");
        let by_key = store
            .appointment_by_key(c.id, &format!("contact-key-{i}"))
            .await
            .unwrap()
            .expect("by key");
        assert_eq!(by_key.contact_source, source);
    }

    // A later write (booked by Cal.com) keeps the flag it carries.
    let mut a = appointment(c.id, None, 20);
    a.contact_source = Some(ContactSource::BranchFallback);
    a.status = AppointmentStatus::PendingSync;
    store.upsert_appointment(&a).await.unwrap();
    a.status = AppointmentStatus::Scheduled;
    a.calcom_uid = Some("uid-contact".into());
    a.version = 21;
    assert!(store.upsert_appointment(&a).await.unwrap());
    let read = store
        .appointment_by_calcom_uid(c.id, "uid-contact")
        .await
        .unwrap()
        .expect("by uid");
    assert_eq!(read.contact_source, Some(ContactSource::BranchFallback));
    let listed = store
        .appointments_by_status(c.id, AppointmentStatus::Scheduled, 10)
        .await
        .unwrap();
    let booked = listed.iter().find(|r| r.id == a.id).expect("listed");
    assert_eq!(booked.contact_source, Some(ContactSource::BranchFallback));
}
