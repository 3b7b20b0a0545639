//! The Cal.com client against the fake Cal.com over loopback: success paths, the unique
//! (host, start) rule, injected faults and the fake's own contract checks.

use std::collections::BTreeMap;
use std::time::Duration;

use askpro::calcom::{
    CalcomClient, ClientOptions, FakeCalcom, FakeConfig, FaultUpdate, BOOKINGS_API_VERSION,
};
use askpro_actors::booking::{
    Attendee, BookingApi, BookingError, CreateBooking, FindBooking, APPOINTMENT_METADATA_KEY,
    COMPANY_METADATA_KEY, IDEMPOTENCY_METADATA_KEY,
};
use askpro_actors::catalog::CalcomConfig;
use askpro_actors::CompanyId;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

const EVENT_TYPE: i64 = 42;

/// The tenant these tests book for.
fn company() -> CompanyId {
    CompanyId(Uuid::from_u128(0xC0))
}

/// The appointment a test key stands for (stable, so a lookup can name it).
fn appointment_for(key: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes())
}

/// The metadata askpro writes: key, tenant and appointment.
fn our_metadata(company: CompanyId, key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (IDEMPOTENCY_METADATA_KEY.to_string(), key.to_string()),
        (COMPANY_METADATA_KEY.to_string(), company.to_string()),
        (
            APPOINTMENT_METADATA_KEY.to_string(),
            appointment_for(key).to_string(),
        ),
    ])
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("an instant")
}

async fn fake() -> FakeCalcom {
    fake_with(FakeConfig::default()).await
}

async fn fake_with(config: FakeConfig) -> FakeCalcom {
    FakeCalcom::start(config).await.expect("the fake starts")
}

fn target(fake: &FakeCalcom) -> CalcomConfig {
    CalcomConfig {
        api_key: "cal_test_key".into(),
        event_type_id: EVENT_TYPE,
        base_url: fake.base_url(),
        rate_limit_per_min: None,
    }
}

fn client() -> CalcomClient {
    CalcomClient::new(ClientOptions::default()).expect("client builds")
}

fn booking_request(start: DateTime<Utc>, key: &str) -> CreateBooking {
    CreateBooking {
        start,
        event_type_id: EVENT_TYPE,
        length_minutes: None,
        attendee: Attendee {
            name: "Ada Lovelace".into(),
            time_zone: "Europe/Berlin".into(),
            email: Some("ada@example.com".into()),
            phone: Some("+4930123456".into()),
            language: Some("de".into()),
        },
        metadata: our_metadata(company(), key),
    }
}

fn find(key: &str, start: DateTime<Utc>) -> FindBooking<'_> {
    FindBooking {
        company_id: company(),
        appointment_id: appointment_for(key),
        idempotency_key: key,
        event_type_id: EVENT_TYPE,
        start,
        attendee_email: None,
    }
}

/// A request to the fake outside the client, with the headers chosen by the test.
async fn raw_get(url: String, auth: bool, version: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if auth {
        request = request.bearer_auth("cal_test_key");
    }
    if let Some(version) = version {
        request = request.header("cal-api-version", version);
    }
    let response = request.send().await.expect("the fake answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a json body"))
}

/// Two tenants on one Cal.com account: a booking another tenant made with the very same key
/// (any tenant can sign any call id) or for another appointment is never found as ours.
#[tokio::test]
async fn a_lookup_never_finds_another_tenants_or_appointments_booking() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    let start = at("2030-01-07T09:00:00Z");
    let other_tenant = CompanyId(Uuid::from_u128(0xE0));
    let mut theirs = booking_request(start, "shared-key");
    theirs.metadata = our_metadata(other_tenant, "shared-key");
    client
        .create_booking(&target, &theirs)
        .await
        .expect("created");
    let mut other_appointment = booking_request(start + chrono::Duration::hours(1), "shared-key");
    other_appointment.metadata.insert(
        APPOINTMENT_METADATA_KEY.to_string(),
        Uuid::from_u128(7).to_string(),
    );
    client
        .create_booking(&target, &other_appointment)
        .await
        .expect("created");

    let found = client
        .find_booking(&target, &find("shared-key", start))
        .await;
    assert_eq!(found.expect("search works"), None);

    // Ours, once it exists, is found among them.
    let ours = client
        .create_booking(
            &target,
            &booking_request(start + chrono::Duration::hours(2), "shared-key"),
        )
        .await
        .expect("created");
    let found = client
        .find_booking(&target, &find("shared-key", start))
        .await;
    assert_eq!(found.expect("search works").map(|b| b.uid), Some(ours.uid));
}

#[tokio::test]
async fn created_booking_is_found_by_key_and_listed() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    let start = at("2030-01-07T09:00:00Z");
    let booking = client
        .create_booking(&target, &booking_request(start, "key-1"))
        .await
        .expect("created");
    assert_eq!(booking.status, "accepted");
    assert_eq!(booking.start, start);
    assert_eq!(booking.end, at("2030-01-07T09:30:00Z"));
    assert_eq!(booking.event_type_id, Some(EVENT_TYPE));
    assert_eq!(booking.idempotency_key(), Some("key-1"));

    let found = client.find_booking(&target, &find("key-1", start)).await;
    assert_eq!(found.expect("search works"), Some(booking.clone()));
    let mut by_email = find("key-1", start);
    by_email.attendee_email = Some("ADA@example.com");
    let found = client.find_booking(&target, &by_email).await.unwrap();
    assert_eq!(found.map(|b| b.uid), Some(booking.uid.clone()));
    let other = client.find_booking(&target, &find("key-2", start)).await;
    assert_eq!(other.expect("search works"), None);

    let url = format!("{}/v2/bookings", fake.base_url());
    let (status, list) = raw_get(url, true, Some(BOOKINGS_API_VERSION)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["data"][0]["uid"], booking.uid.as_str());
    assert_eq!(list["data"][0]["attendees"][0]["email"], "ada@example.com");
    assert_eq!(list["data"][0]["start"], "2030-01-07T09:00:00.000Z");
    assert_eq!(fake.stats().count("POST /v2/bookings", 201), 1);
    assert_eq!(fake.stats().count("GET /v2/bookings", 200), 4);
}

#[tokio::test]
async fn a_second_booking_for_the_same_host_and_start_is_permanent() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    let start = at("2030-01-07T10:00:00Z");
    client
        .create_booking(&target, &booking_request(start, "key-1"))
        .await
        .expect("first booking");
    let err = client
        .create_booking(&target, &booking_request(start, "key-2"))
        .await
        .expect_err("the slot is taken");
    assert!(
        matches!(&err, BookingError::Permanent { status: 409, code, .. } if code == "ConflictException"),
        "{err:?}"
    );
    assert!(!err.trips_breaker());
    assert_eq!(fake.bookings().len(), 1);
}

#[tokio::test]
async fn fail_next_is_transient_then_the_retry_succeeds() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    fake.set_faults(FaultUpdate {
        fail_next: Some(1),
        ..FaultUpdate::default()
    })
    .unwrap();
    let request = booking_request(at("2030-01-07T11:00:00Z"), "key-1");
    let err = client.create_booking(&target, &request).await.unwrap_err();
    assert!(
        matches!(
            err,
            BookingError::Transient {
                status: Some(500),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.trips_breaker());
    assert!(fake.bookings().is_empty(), "a failed request must not act");
    client
        .create_booking(&target, &request)
        .await
        .expect("the retry books");
    assert_eq!(fake.bookings().len(), 1);
    assert_eq!(fake.stats().count("POST /v2/bookings", 500), 1);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_a_wait() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    fake.set_faults(FaultUpdate {
        rate_limit_per_min: Some(3),
        ..FaultUpdate::default()
    })
    .unwrap();
    let (start, end) = (at("2030-01-07T00:00:00Z"), at("2030-01-08T00:00:00Z"));
    for _ in 0..3 {
        client
            .slots(&target, EVENT_TYPE, start, end, "Europe/Berlin")
            .await
            .expect("within the limit");
    }
    let err = client
        .slots(&target, EVENT_TYPE, start, end, "Europe/Berlin")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BookingError::Transient {
                status: Some(429),
                ..
            }
        ),
        "{err:?}"
    );
    let wait = err.retry_after().expect("retry-after is read");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_create_that_times_out_after_committing_is_unknown_and_then_found() {
    let fake = fake().await;
    let target = target(&fake);
    let impatient = CalcomClient::new(ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(300),
    })
    .unwrap();
    fake.set_faults(FaultUpdate {
        hang_after_commit: Some(1),
        hang_ms: Some(2_000),
        ..FaultUpdate::default()
    })
    .unwrap();
    let start = at("2030-01-07T12:00:00Z");
    let request = booking_request(start, "key-hang");
    let err = impatient
        .create_booking(&target, &request)
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::Unknown { .. }), "{err:?}");
    assert!(err.trips_breaker());

    let found = client()
        .find_booking(&target, &find("key-hang", start))
        .await
        .expect("search works")
        .expect("the committed booking is found");
    assert_eq!(found.idempotency_key(), Some("key-hang"));
    assert_eq!(fake.bookings().len(), 1);
    assert_eq!(fake.bookings()[0].uid, found.uid);
    // Repeating the create instead of looking first would be refused, never duplicated.
    let again = client()
        .create_booking(&target, &request)
        .await
        .unwrap_err();
    assert!(
        matches!(again, BookingError::Permanent { status: 409, .. }),
        "{again:?}"
    );
}

#[tokio::test]
async fn cancel_marks_the_booking_cancelled() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    let start = at("2030-01-07T13:00:00Z");
    let booking = client
        .create_booking(&target, &booking_request(start, "key-1"))
        .await
        .unwrap();
    client
        .cancel_booking(&target, &booking.uid, Some("caller cancelled"))
        .await
        .expect("cancelled");
    let stored = &fake.bookings()[0];
    assert_eq!(stored.status, "cancelled");
    assert_eq!(
        stored.cancellation_reason.as_deref(),
        Some("caller cancelled")
    );
    let found = client.find_booking(&target, &find("key-1", start)).await;
    assert_eq!(found.unwrap().map(|b| b.status), Some("cancelled".into()));
    let err = client
        .cancel_booking(&target, &booking.uid, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BookingError::Permanent { status: 400, .. }),
        "{err:?}"
    );
    let err = client
        .cancel_booking(&target, "no-such-uid", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BookingError::Permanent { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn reschedule_makes_a_new_booking_and_links_the_old_one() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    let (old_start, new_start) = (at("2030-01-07T14:00:00Z"), at("2030-01-10T09:00:00Z"));
    let old = client
        .create_booking(&target, &booking_request(old_start, "key-1"))
        .await
        .unwrap();
    let new = client
        .reschedule_booking(&target, &old.uid, new_start, Some("caller asked"))
        .await
        .expect("rescheduled");
    assert_ne!(new.uid, old.uid);
    assert_eq!((new.start, new.status.as_str()), (new_start, "accepted"));
    assert_eq!(new.idempotency_key(), Some("key-1"));

    let bookings = fake.bookings();
    let stored_old = bookings.iter().find(|b| b.uid == old.uid).unwrap();
    assert_eq!(stored_old.status, "cancelled");
    assert_eq!(
        stored_old.rescheduled_to_uid.as_deref(),
        Some(new.uid.as_str())
    );
    let stored_new = bookings.iter().find(|b| b.uid == new.uid).unwrap();
    assert_eq!(
        stored_new.rescheduled_from_uid.as_deref(),
        Some(old.uid.as_str())
    );

    // Searching around the original start (the new one is days later, outside the window)
    // finds the old booking, which points at the new one.
    let found = client
        .find_booking(&target, &find("key-1", old_start))
        .await
        .unwrap()
        .expect("the old booking");
    assert_eq!(found.rescheduled_to_uid, Some(new.uid.clone()));
    let found = client
        .find_booking(&target, &find("key-1", new_start))
        .await;
    assert_eq!(found.unwrap().map(|b| b.uid), Some(new.uid));
}

#[tokio::test]
async fn slots_leave_out_a_booked_start() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    // 2030-01-07 in Berlin is UTC+1: 09:00–17:00 local is 08:00–16:00 UTC, 16 half hours.
    let (start, end) = (at("2030-01-07T00:00:00Z"), at("2030-01-08T00:00:00Z"));
    let free = client
        .slots(&target, EVENT_TYPE, start, end, "Europe/Berlin")
        .await
        .unwrap();
    assert_eq!(free.len(), 16);
    assert_eq!(free.first(), Some(&at("2030-01-07T08:00:00Z")));
    assert_eq!(free.last(), Some(&at("2030-01-07T15:30:00Z")));

    let booked = at("2030-01-07T10:30:00Z");
    client
        .create_booking(&target, &booking_request(booked, "key-1"))
        .await
        .unwrap();
    let free = client
        .slots(&target, EVENT_TYPE, start, end, "Europe/Berlin")
        .await
        .unwrap();
    assert_eq!(free.len(), 15);
    assert!(!free.contains(&booked));
    let other_host = client
        .slots(&target, EVENT_TYPE + 1, start, end, "Europe/Berlin")
        .await
        .unwrap();
    assert_eq!(other_host.len(), 16, "another host's calendar is untouched");
}

#[tokio::test]
async fn find_booking_reads_past_the_first_page() {
    let fake = fake_with(FakeConfig {
        rate_limit_per_min: 0,
        ..FakeConfig::default()
    })
    .await;
    let (client, target) = (client(), target(&fake));
    let first = at("2030-01-07T00:00:00Z");
    // 120 ten-minute bookings inside one search window; ours is the last by start.
    for i in 0..120 {
        let mut request = booking_request(first + chrono::Duration::minutes(10 * i), "");
        request.length_minutes = Some(10);
        request.metadata = our_metadata(company(), &format!("k{i}"));
        client.create_booking(&target, &request).await.unwrap();
    }
    let found = client.find_booking(&target, &find("k119", first)).await;
    let found = found.unwrap().expect("found on the second page");
    assert_eq!(found.start, first + chrono::Duration::minutes(1190));
    assert_eq!(fake.stats().count("GET /v2/bookings", 200), 2);
}

#[tokio::test]
async fn the_fake_insists_on_cal_api_version_and_auth() {
    let fake = fake().await;
    let url = format!("{}/v2/bookings", fake.base_url());
    let (status, body) = raw_get(url.clone(), true, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["code"], "BadRequestException");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cal-api-version"), "{message}");
    let slots_version = "2024-09-04";
    let (status, body) = raw_get(url.clone(), true, Some(slots_version)).await;
    assert_eq!(
        status, 400,
        "the slots version is wrong for bookings: {body}"
    );

    let (status, body) = raw_get(url, false, Some(BOOKINGS_API_VERSION)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "UnauthorizedException");
    assert_eq!(fake.stats().count("GET /v2/bookings", 401), 1);
}

#[tokio::test]
async fn faults_are_controlled_over_http() {
    let fake = fake().await;
    let (client, target) = (client(), target(&fake));
    let http = reqwest::Client::new();
    let base = fake.base_url();
    let response = http
        .post(format!("{base}/_fake/faults"))
        .body(r#"{"fail_next": 2, "latency_ms": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let faults: Value = response.json().await.unwrap();
    assert_eq!(
        (faults["fail_next"].as_u64(), faults["latency_ms"].as_u64()),
        (Some(2), Some(1))
    );
    let refused = http
        .post(format!("{base}/_fake/faults"))
        .body(r#"{"error_rate": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let request = booking_request(at("2030-01-07T15:00:00Z"), "key-1");
    for _ in 0..2 {
        let err = client.create_booking(&target, &request).await.unwrap_err();
        assert!(
            matches!(
                err,
                BookingError::Transient {
                    status: Some(500),
                    ..
                }
            ),
            "{err:?}"
        );
    }
    client.create_booking(&target, &request).await.unwrap();
    let stats: Value = http
        .get(format!("{base}/_fake/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests"]["POST /v2/bookings"]["500"], 2, "{stats}");
    assert_eq!(stats["bookings"], 1, "{stats}");

    let reset = http
        .post(format!("{base}/_fake/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert!(fake.bookings().is_empty());
    assert_eq!(fake.stats().requests_total, 0);
    assert_eq!(fake.faults().latency_ms, 0);
}

#[tokio::test]
async fn the_error_rate_is_repeatable_for_a_seed() {
    async fn pattern(seed: u64) -> Vec<bool> {
        let fake = fake_with(FakeConfig {
            seed,
            rate_limit_per_min: 0,
            ..FakeConfig::default()
        })
        .await;
        fake.set_faults(FaultUpdate {
            error_rate: Some(0.5),
            ..FaultUpdate::default()
        })
        .unwrap();
        let (client, target) = (client(), target(&fake));
        let (start, end) = (at("2030-01-07T00:00:00Z"), at("2030-01-08T00:00:00Z"));
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            let result = client.slots(&target, EVENT_TYPE, start, end, "UTC").await;
            outcomes.push(result.is_ok());
        }
        outcomes
    }
    let first = pattern(7).await;
    assert_eq!(first, pattern(7).await);
    assert!(first.contains(&true) && first.contains(&false), "{first:?}");
}
