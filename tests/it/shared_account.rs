//! Two tenants connected to one Cal.com account and event type (a franchise, an agency): the
//! same `call_id` (any tenant can sign any call id with its own Retell key) and the account's
//! webhooks reaching both must never let one tenant adopt or record the other's booking.

use askpro::calcom::fake::{FakeCalcom, FakeConfig, FaultUpdate};
use askpro_actors::booking::{APPOINTMENT_METADATA_KEY, COMPANY_METADATA_KEY};
use askpro_actors::domain::{Appointment, AppointmentStatus, EventStatus};
use askpro_actors::handlers::call_booking_key;
use askpro_actors::StateStore;
use serde_json::json;

use crate::booking::{analyzed, connect_calcom, fast_booking};
use crate::harness::{eventually, tenant, Tenant, TestServer};

async fn two_tenants_on_one_account() -> (FakeCalcom, TestServer, Tenant, Tenant) {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let server = TestServer::start_with(fast_booking, Default::default()).await;
    let c = tenant(server.store.as_ref(), "Franchise C", "+4930100061").await;
    let e = tenant(server.store.as_ref(), "Franchise E", "+4930100062").await;
    for t in [&c, &e] {
        connect_calcom(server.store.as_ref(), t, &fake, None).await;
    }
    (fake, server, c, e)
}

async fn scheduled_uid(store: &dyn StateStore, t: &Tenant) -> String {
    let uid = || async {
        let all = store.appointments(t.company).await.unwrap();
        all.into_iter()
            .find(|a| a.status == AppointmentStatus::Scheduled)
            .and_then(|a| a.calcom_uid)
    };
    eventually("the tenant's appointment is scheduled", || async {
        uid().await.is_some()
    })
    .await;
    uid().await.unwrap()
}

#[tokio::test]
async fn a_retried_booking_never_adopts_another_tenants_booking_of_the_same_call_id() {
    let (fake, server, c, e) = two_tenants_on_one_account().await;
    let store = server.store.as_ref();
    let body = analyzed("call_shared", &c.phone, "2027-06-21 09:00");
    server.post_retell(c.company, &body, &c.retell_secret).await;
    let c_uid = scheduled_uid(store, &c).await;

    // E's first create fails transiently, so its retry looks the booking up first; C's
    // booking (same call id, inside E's search window) must not be taken for E's.
    fake.set_faults(FaultUpdate {
        fail_next: Some(1),
        ..Default::default()
    })
    .unwrap();
    let body = analyzed("call_shared", &e.phone, "2027-06-21 08:30");
    server.post_retell(e.company, &body, &e.retell_secret).await;
    let e_uid = scheduled_uid(store, &e).await;

    assert_ne!(e_uid, c_uid, "E adopted C's booking");
    let bookings = fake.bookings();
    assert_eq!(bookings.len(), 2, "each tenant's caller has a booking");
    let e_booking = bookings.iter().find(|b| b.uid == e_uid).unwrap();
    assert_eq!(
        e_booking.metadata.get(COMPANY_METADATA_KEY),
        Some(&e.company.to_string())
    );
    // The key we hand to Cal.com names the tenant too: one call id, two distinct keys.
    let keys: Vec<_> = bookings
        .iter()
        .map(|b| b.metadata["askpro_key"].clone())
        .collect();
    for (t, key) in [(&c, &keys[0]), (&e, &keys[1])] {
        let expected = call_booking_key(t.company, "call_shared");
        assert!(keys.contains(&expected), "{key}: no key {expected}");
        assert!(expected.contains(&t.company.to_string()));
    }
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn a_replay_of_a_call_booked_under_the_pre_tenant_key_books_nothing_again() {
    let (fake, server, c, _e) = two_tenants_on_one_account().await;
    let store = server.store.as_ref();
    // A call an older release booked: its row carries the key without the tenant.
    let now = chrono::Utc::now();
    let start = chrono::DateTime::parse_from_rfc3339("2027-06-23T07:00:00Z").unwrap();
    let legacy = Appointment {
        company_id: c.company,
        id: uuid::Uuid::now_v7(),
        calcom_uid: Some("uid_legacy".into()),
        branch_id: Some(c.branch),
        service_id: None,
        customer_id: None,
        status: AppointmentStatus::Scheduled,
        start_at: Some(start.into()),
        end_at: Some((start + chrono::Duration::minutes(30)).into()),
        title: Some("Standardberatung".into()),
        attendee_name: Some("Hans Robert".into()),
        attendee_email: None,
        attendee_phone: Some("+4915123456789".into()),
        timezone: Some("Europe/Berlin".into()),
        rescheduled_to_uid: None,
        idempotency_key: Some("retell-call:call_legacy".into()),
        contact_source: None,
        sync_attempts: 1,
        last_error: None,
        source_event: askpro_actors::EventId::new(),
        version: now.timestamp_millis(),
        created_at: now,
        updated_at: now,
    };
    store.upsert_appointment(&legacy).await.unwrap();

    // Its call_analyzed delivered again after the upgrade (a replay).
    let body = analyzed("call_legacy", &c.phone, "2027-06-23 09:00");
    server.post_retell(c.company, &body, &c.retell_secret).await;
    let events = server.settled_events(c.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Processed, "{events:?}");
    assert!(fake.bookings().is_empty(), "booked again under the new key");
    let rows = store.appointments(c.company).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].id, legacy.id);
}

#[tokio::test]
async fn the_accounts_webhook_of_another_tenants_booking_is_neither_adopted_nor_recorded() {
    let (_fake, server, c, e) = two_tenants_on_one_account().await;
    let store = server.store.as_ref();
    let body = analyzed("call_hook", &c.phone, "2027-06-22 09:00");
    server.post_retell(c.company, &body, &c.retell_secret).await;
    let c_uid = scheduled_uid(store, &c).await;
    let c_row = store.appointments(c.company).await.unwrap().remove(0);

    // Cal.com sends the account's BOOKING_CREATED to every subscription: E's too.
    let created = json!({
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": chrono::Utc::now().to_rfc3339(),
        "payload": {
            "uid": c_uid, "title": "Beratung",
            "startTime": "2027-06-22T07:00:00Z", "endTime": "2027-06-22T07:30:00Z",
            "attendees": [{"name": "Hans Robert", "email": "hans@example.org"}],
            "metadata": {
                "askpro_key": c_row.idempotency_key,
                COMPANY_METADATA_KEY: c.company.to_string(),
                APPOINTMENT_METADATA_KEY: c_row.id.to_string(),
            },
        }
    })
    .to_string();
    let status = server
        .post_calcom(e.company, &created, &e.calcom_secret)
        .await
        .status();
    assert_eq!(status, 202);
    let events = server.settled_events(e.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Processed, "{:?}", events[0]);
    assert!(
        store.appointments(e.company).await.unwrap().is_empty(),
        "E recorded C's booking"
    );
}
