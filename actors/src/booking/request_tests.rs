//! The Cal.com request of an appointment whose caller left no contact.

use super::*;
use crate::testkit::booking::BookingFixture;

#[tokio::test]
async fn a_branch_fallback_books_with_its_email_the_callers_name_and_a_note() {
    let f = BookingFixture::new().await;
    let mut appointment = f.pending(std::time::Duration::ZERO);
    appointment.attendee_phone = None;
    appointment.attendee_email = Some("termine@salon.example".into());
    appointment.contact_source = Some(ContactSource::BranchFallback);

    let prepared = prepare(f.store.as_ref(), &appointment)
        .await
        .expect("store answers")
        .expect("bookable");

    let attendee = &prepared.create.attendee;
    assert_eq!(attendee.email.as_deref(), Some("termine@salon.example"));
    assert_eq!(attendee.phone, None);
    assert_eq!(attendee.name, "Erika Mustermann");
    assert_eq!(
        prepared
            .create
            .metadata
            .get(NOTE_METADATA_KEY)
            .map(String::as_str),
        Some(NO_CONTACT_NOTE)
    );
}

#[tokio::test]
async fn a_callers_own_contact_carries_no_note() {
    let f = BookingFixture::new().await;
    for source in [
        None,
        Some(ContactSource::Caller),
        Some(ContactSource::CallData),
    ] {
        let mut appointment = f.pending(std::time::Duration::ZERO);
        appointment.contact_source = source;
        let prepared = prepare(f.store.as_ref(), &appointment)
            .await
            .expect("store answers")
            .expect("bookable");
        assert!(
            !prepared.create.metadata.contains_key(NOTE_METADATA_KEY),
            "{source:?}"
        );
    }
}
