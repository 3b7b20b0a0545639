//! The fake Cal.com's opening hours, slot holds and hold-aware bookings, through the client.

use std::collections::BTreeMap;

use askpro::calcom::fake::OpeningHours;
use askpro::calcom::{CalcomClient, ClientOptions, FakeCalcom, FakeConfig};
use askpro_actors::booking::{Attendee, BookingApi, BookingError, CreateBooking};
use askpro_actors::catalog::CalcomConfig;
use chrono::{DateTime, Utc};

const EVENT_TYPE: i64 = 77;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("an instant")
}

fn target(fake: &FakeCalcom) -> CalcomConfig {
    CalcomConfig {
        api_key: "cal_test_key".into(),
        event_type_id: EVENT_TYPE,
        base_url: fake.base_url(),
        rate_limit_per_min: None,
    }
}

fn booking(start: DateTime<Utc>) -> CreateBooking {
    CreateBooking {
        start,
        event_type_id: EVENT_TYPE,
        length_minutes: Some(30),
        attendee: Attendee {
            name: "Erika Muster".into(),
            time_zone: "Europe/Berlin".into(),
            email: None,
            phone: Some("+491701234567".into()),
            language: Some("de".into()),
        },
        metadata: BTreeMap::new(),
    }
}

fn is_conflict(error: &BookingError) -> bool {
    matches!(error, BookingError::Permanent { status: 409, .. })
}

#[tokio::test]
async fn opening_hours_and_slot_length_are_configurable() {
    let fake = FakeCalcom::start(FakeConfig {
        hours: OpeningHours {
            open_hour: 10,
            close_hour: 12,
            slot_minutes: 60,
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = CalcomClient::new(ClientOptions::default()).unwrap();
    let (start, end) = (at("2030-01-07T00:00:00Z"), at("2030-01-08T00:00:00Z"));
    let free = client
        .slots(&target(&fake), EVENT_TYPE, start, end, "Europe/Berlin")
        .await
        .unwrap();
    // 10:00 and 11:00 Berlin (UTC+1 in January).
    assert_eq!(
        free,
        vec![at("2030-01-07T09:00:00Z"), at("2030-01-07T10:00:00Z")]
    );
}

#[tokio::test]
async fn a_hold_hides_the_slot_refuses_other_holds_and_bookings_until_released() {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let (client, target) = (
        CalcomClient::new(ClientOptions::default()).unwrap(),
        target(&fake),
    );
    let slot = at("2030-01-07T10:00:00Z");
    let hold = client
        .reserve_slot(&target, EVENT_TYPE, slot, Some(30))
        .await
        .unwrap();
    assert_eq!(hold.start, slot);
    assert!(hold.until > Utc::now(), "held for minutes: {hold:?}");
    let (start, end) = (at("2030-01-07T00:00:00Z"), at("2030-01-08T00:00:00Z"));
    let free = client
        .slots(&target, EVENT_TYPE, start, end, "Europe/Berlin")
        .await
        .unwrap();
    assert!(!free.contains(&slot), "a held slot is not offered");

    let second = client
        .reserve_slot(&target, EVENT_TYPE, slot, Some(30))
        .await;
    assert!(second.as_ref().is_err_and(is_conflict), "{second:?}");
    let booked = client.create_booking(&target, &booking(slot)).await;
    assert!(booked.as_ref().is_err_and(is_conflict), "{booked:?}");
    assert!(fake.bookings().is_empty());

    client.release_slot(&target, &hold.uid).await.unwrap();
    let again = client.release_slot(&target, &hold.uid).await;
    assert!(
        matches!(again, Err(BookingError::Permanent { status: 404, .. })),
        "{again:?}"
    );
    client
        .create_booking(&target, &booking(slot))
        .await
        .unwrap();
    let taken = client
        .reserve_slot(&target, EVENT_TYPE, slot, Some(30))
        .await;
    assert!(
        taken.as_ref().is_err_and(is_conflict),
        "a booked slot cannot be held: {taken:?}"
    );
}
