//! The tenant pipeline end to end: signed Retell webhooks → log → tenant actor → a booking at
//! the fake Cal.com (a real HTTP server on loopback speaking Cal.com's API v2).

use askpro::calcom::fake::{FakeCalcom, FakeConfig, FaultUpdate};
use askpro::config::Config;
use askpro_actors::catalog::CalcomConfig;
use askpro_actors::domain::{Appointment, AppointmentStatus, EventStatus};
use askpro_actors::{CompanyId, StateStore};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::harness::{eventually, tenant, Tenant, TestServer};

const EVENT_TYPE: i64 = 4242;

/// Short timers so retries, the breaker and the reconciler act within a test.
pub fn fast_booking(config: &mut Config) {
    config.booking.retry_delays_ms = vec![200, 400];
    config.booking.reconcile_interval_ms = 100;
    config.booking.reconcile_min_age_ms = 0;
    config.booking.request_timeout_ms = 2_000;
    config.booking.connect_timeout_ms = 1_000;
}

pub async fn connect_calcom(
    store: &dyn StateStore,
    t: &Tenant,
    fake: &FakeCalcom,
    rate_limit_per_min: Option<u32>,
) {
    let mut branch = store
        .branch(t.company, t.branch)
        .await
        .expect("read branch")
        .expect("branch exists");
    branch.calcom = Some(CalcomConfig {
        api_key: format!("cal_test_{}", t.company),
        event_type_id: EVENT_TYPE,
        base_url: fake.base_url(),
        rate_limit_per_min,
    });
    store.update_branch(&branch).await.expect("set cal.com");
}

/// A `call_analyzed` whose post-call analysis carries an appointment.
pub fn analyzed(call_id: &str, to_number: &str, date_time: &str) -> String {
    json!({
        "event": "call_analyzed",
        "call": {
            "call_id": call_id,
            "agent_id": "agent_test",
            "call_type": "phone_call",
            "direction": "inbound",
            "from_number": "anonymous",
            "to_number": to_number,
            "call_status": "ended",
            "start_timestamp": 1_761_297_670_702_i64,
            "end_timestamp": 1_761_297_706_005_i64,
            "call_analysis": {
                "call_summary": "booked a consultation",
                "custom_analysis_data": {
                    "appointment_made": true,
                    "appointment_date_time": date_time,
                    "caller_full_name": "Hans Robert",
                    "caller_phone": "0151 23456789",
                }
            }
        }
    })
    .to_string()
}

async fn appointments(store: &dyn StateStore, company: CompanyId) -> Vec<Appointment> {
    store.appointments(company).await.expect("appointments")
}

async fn wait_scheduled(store: &dyn StateStore, company: CompanyId, n: usize) -> Vec<Appointment> {
    eventually(&format!("{n} scheduled appointments"), || async {
        let all = appointments(store, company).await;
        all.iter()
            .filter(|a| a.status == AppointmentStatus::Scheduled)
            .count()
            == n
    })
    .await;
    appointments(store, company).await
}

/// A fake Cal.com, a server with fast booking timers, and a tenant whose branch books there.
async fn connected(name: &str, phone: &str) -> (FakeCalcom, TestServer, Tenant) {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let server = TestServer::start_with(fast_booking, Default::default()).await;
    let t = tenant(server.store.as_ref(), name, phone).await;
    connect_calcom(server.store.as_ref(), &t, &fake, None).await;
    (fake, server, t)
}

/// Runs `askpro events replay ARGS --json` against the running server's data dir (another
/// process appending to the same embedded log, as an operator would) and returns its report.
pub fn replay_cli(server: &TestServer, args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(["events", "replay", "--json"])
        .args(args)
        .arg("--data-dir")
        .arg(server.dir.path())
        .env("ASKPRO_LOG__PARTITIONS", "4")
        .output()
        .expect("run askpro events replay");
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("replay prints json")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn call_analyzed_books_once_at_the_right_utc_instant_across_dst() {
    let (fake, server, t) = connected("Salon DST", "+4930100001").await;

    // 2027-03-28 is the spring-forward day in Berlin: 14:00 there is 12:00 UTC (CEST).
    let body = analyzed("call_dst", &t.phone, "2027-03-28 14:00");
    let response = server.post_retell(t.company, &body, &t.retell_secret).await;
    assert_eq!(response.status(), 202);

    let booked = wait_scheduled(server.store.as_ref(), t.company, 1).await;
    let bookings = fake.bookings();
    assert_eq!(bookings.len(), 1, "exactly one booking at cal.com");
    assert_eq!(bookings[0].start, utc("2027-03-28T12:00:00Z"));
    assert_eq!(booked[0].start_at, Some(utc("2027-03-28T12:00:00Z")));
    assert_eq!(
        booked[0].calcom_uid.as_deref(),
        Some(bookings[0].uid.as_str())
    );
    assert_eq!(
        bookings[0].metadata.get("askpro_key").map(String::as_str),
        Some(askpro_actors::handlers::call_booking_key(t.company, "call_dst").as_str())
    );
    // The collected phone is used; the anonymous caller id is never turned into one.
    assert_eq!(booked[0].attendee_phone.as_deref(), Some("+4915123456789"));
    // The branch had no service: the default one was created and used.
    let services = server.store.services(t.company).await.unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].name, "Standardberatung");
    assert_eq!(booked[0].service_id, Some(services[0].id));
}

#[tokio::test]
async fn duplicate_deliveries_and_a_replay_still_book_once() {
    let (fake, server, t) = connected("Salon Dup", "+4930100002").await;

    let body = analyzed("call_dup", &t.phone, "2027-06-20 10:30");
    for _ in 0..20 {
        let status = server
            .post_retell(t.company, &body, &t.retell_secret)
            .await
            .status();
        assert!(status == 202 || status == 200, "delivery answered {status}");
    }
    wait_scheduled(server.store.as_ref(), t.company, 1).await;
    let events = server.settled_events(t.company, 1).await;
    let first = events
        .iter()
        .find(|e| e.status == EventStatus::Processed)
        .expect("one processed event")
        .id;

    // A replay of the processed event through the CLI, while the server runs.
    let report = replay_cli(&server, &[&first.to_string()]);
    assert_eq!(report["replayed"].as_array().map(Vec::len), Some(1));
    eventually("the replayed event settles", || async {
        let row = server.store.event(t.company, first).await.unwrap().unwrap();
        row.status == EventStatus::Processed && row.error.is_none()
    })
    .await;
    assert_eq!(fake.bookings().len(), 1, "still exactly one booking");
    assert_eq!(
        appointments(server.store.as_ref(), t.company).await.len(),
        1
    );
}

#[tokio::test]
async fn a_create_whose_answer_times_out_is_found_not_repeated() {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    fake.set_faults(FaultUpdate {
        hang_after_commit: Some(1),
        hang_ms: Some(3_000),
        ..Default::default()
    })
    .unwrap();
    let server = TestServer::start_with(
        |c| {
            fast_booking(c);
            c.booking.request_timeout_ms = 400;
            c.booking.connect_timeout_ms = 400;
        },
        Default::default(),
    )
    .await;
    let t = tenant(server.store.as_ref(), "Salon Timeout", "+4930100003").await;
    connect_calcom(server.store.as_ref(), &t, &fake, None).await;

    let body = analyzed("call_timeout", &t.phone, "2027-06-21 09:00");
    server.post_retell(t.company, &body, &t.retell_secret).await;
    let booked = wait_scheduled(server.store.as_ref(), t.company, 1).await;
    let bookings = fake.bookings();
    assert_eq!(bookings.len(), 1, "the lookup found the committed booking");
    assert_eq!(
        booked[0].calcom_uid.as_deref(),
        Some(bookings[0].uid.as_str())
    );
    assert!(booked[0].sync_attempts >= 1);
}

#[tokio::test]
async fn a_branch_with_no_services_gets_exactly_one_default_under_concurrent_bookings() {
    let (fake, server, t) = connected("Salon Default", "+4930100004").await;

    let sends = (0..10).map(|i| {
        let body = analyzed(
            &format!("call_def_{i}"),
            &t.phone,
            &format!("2027-07-{:02} 11:00", i + 1),
        );
        let server = &server;
        let t = &t;
        async move {
            server
                .post_retell(t.company, &body, &t.retell_secret)
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 202));

    wait_scheduled(server.store.as_ref(), t.company, 10).await;
    let services = server.store.services(t.company).await.unwrap();
    assert_eq!(
        services.len(),
        1,
        "exactly one default service: {services:?}"
    );
    assert_eq!(
        services[0].metadata.get("auto_created").map(String::as_str),
        Some("true")
    );
    assert_eq!(fake.bookings().len(), 10);
    let created = server
        .metric("askproai_default_services_created_total")
        .await;
    assert_eq!(created, 1.0);
}

#[tokio::test]
async fn vague_and_template_values_fail_with_the_field_and_value_named() {
    let (fake, server, t) = connected("Salon Vague", "+4930100005").await;

    let body = analyzed("call_vague", &t.phone, "morgen vormittags");
    server.post_retell(t.company, &body, &t.retell_secret).await;
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Failed);
    let error = events[0].error.clone().unwrap_or_default();
    assert!(error.contains("appointment_date_time"), "{error}");
    assert!(error.contains("vormittags"), "{error}");
    assert!(fake.bookings().is_empty());
    assert!(appointments(server.store.as_ref(), t.company)
        .await
        .is_empty());
}

#[tokio::test]
async fn a_booking_cancelled_in_calcom_cancels_ours() {
    let (_fake, server, t) = connected("Salon Loop", "+4930100006").await;
    server
        .post_retell(
            t.company,
            &analyzed("call_loop", &t.phone, "2027-08-02 15:00"),
            &t.retell_secret,
        )
        .await;
    let booked = wait_scheduled(server.store.as_ref(), t.company, 1).await;
    let uid = booked[0].calcom_uid.clone().unwrap();

    // Cal.com confirms our booking (matched by uid), then it is cancelled there.
    for (trigger, created_at) in [
        ("BOOKING_CREATED", Utc::now()),
        (
            "BOOKING_CANCELLED",
            Utc::now() + chrono::Duration::seconds(5),
        ),
    ] {
        let body = json!({
            "triggerEvent": trigger,
            "createdAt": created_at.to_rfc3339(),
            "payload": {
                "uid": uid, "title": "Standardberatung",
                "startTime": "2027-08-02T13:00:00Z", "endTime": "2027-08-02T13:30:00Z",
                "attendees": [{"name": "Hans Robert", "email": "hans@example.org"}],
                "metadata": {"askpro_key": "retell-call:call_loop"},
            }
        })
        .to_string();
        let status = server
            .post_calcom(t.company, &body, &t.calcom_secret)
            .await
            .status();
        assert_eq!(status, 202);
    }
    eventually("appointment cancelled", || async {
        let all = appointments(server.store.as_ref(), t.company).await;
        all.len() == 1 && all[0].status == AppointmentStatus::Cancelled
    })
    .await;
    let all = appointments(server.store.as_ref(), t.company).await;
    assert_eq!(all[0].id, booked[0].id, "the same row, not a copy");
}

#[tokio::test]
async fn booking_created_matches_our_appointment_by_metadata_key_and_records_direct_bookings() {
    // No reconciler: it would try to push the hand-made row (its branch has no Cal.com).
    let server = TestServer::start_with(
        |c| {
            fast_booking(c);
            c.booking.reconcile_interval_ms = 600_000;
        },
        Default::default(),
    )
    .await;
    let store = server.store.as_ref();
    let t = tenant(store, "Salon Match", "+4930100007").await;
    // Our create reached Cal.com but its answer was lost: the row has the key, no uid yet.
    let now = Utc::now();
    let ours = Appointment {
        company_id: t.company,
        id: uuid::Uuid::now_v7(),
        calcom_uid: None,
        branch_id: Some(t.branch),
        service_id: None,
        customer_id: None,
        status: AppointmentStatus::PendingSync,
        start_at: Some(utc("2027-08-03T08:00:00Z")),
        end_at: Some(utc("2027-08-03T08:30:00Z")),
        title: Some("Standardberatung".into()),
        attendee_name: Some("Hans Robert".into()),
        attendee_email: None,
        attendee_phone: Some("+4915123456789".into()),
        timezone: Some("Europe/Berlin".into()),
        rescheduled_to_uid: None,
        idempotency_key: Some("retell-call:call_lost".into()),
        sync_attempts: 1,
        last_error: Some("cal.com outcome unknown: timed out".into()),
        source_event: askpro_actors::EventId::new(),
        // Later than the webhook's createdAt, as our own bookkeeping writes usually are: the
        // key-matched webhook must still apply to a row with no uid.
        version: now.timestamp_millis() + 60_000,
        created_at: now,
        updated_at: now,
        contact_source: None,
    };
    store.upsert_appointment(&ours).await.unwrap();

    let created = |uid: &str, key: Option<&str>, start: &str| {
        let metadata = key.map_or(json!({}), |k| json!({"askpro_key": k}));
        json!({
            "triggerEvent": "BOOKING_CREATED",
            "createdAt": Utc::now().to_rfc3339(),
            "payload": {
                "uid": uid, "title": "Beratung", "startTime": start,
                "endTime": "2027-08-03T09:30:00Z",
                "attendees": [{"name": "Walk In", "email": "walk@example.org"}],
                "metadata": metadata,
            }
        })
        .to_string()
    };
    let ours_body = created(
        "uid_ours",
        Some("retell-call:call_lost"),
        "2027-08-03T08:00:00Z",
    );
    let direct_body = created("uid_direct", None, "2027-08-03T09:00:00Z");
    for body in [ours_body, direct_body] {
        let status = server
            .post_calcom(t.company, &body, &t.calcom_secret)
            .await
            .status();
        assert_eq!(status, 202);
    }
    server.settled_events(t.company, 2).await;
    let all = appointments(store, t.company).await;
    assert_eq!(
        all.len(),
        2,
        "our row confirmed, plus the direct booking: {all:?}"
    );
    let confirmed = all
        .iter()
        .find(|a| a.id == ours.id)
        .expect("our row kept its id");
    assert_eq!(confirmed.status, AppointmentStatus::Scheduled);
    assert_eq!(confirmed.calcom_uid.as_deref(), Some("uid_ours"));
    assert_eq!(
        confirmed.idempotency_key.as_deref(),
        Some("retell-call:call_lost")
    );
    let direct = all.iter().find(|a| a.id != ours.id).unwrap();
    assert_eq!(direct.calcom_uid.as_deref(), Some("uid_direct"));
    assert_eq!(direct.status, AppointmentStatus::Scheduled);
    assert_eq!(direct.idempotency_key, None);
}

#[tokio::test]
async fn call_ended_does_not_book_and_call_analyzed_does() {
    let (fake, server, t) = connected("Salon Ended", "+4930100008").await;

    // The in-call variables said 10:00; the post-call analysis corrected it to 11:00.
    let ended =
        analyzed("call_fix", &t.phone, "2027-06-22 10:00").replace("call_analyzed", "call_ended");
    server
        .post_retell(t.company, &ended, &t.retell_secret)
        .await;
    server.settled_events(t.company, 1).await;
    assert!(appointments(server.store.as_ref(), t.company)
        .await
        .is_empty());
    assert!(
        fake.bookings().is_empty(),
        "call_ended books nothing by default"
    );

    let analysed = analyzed("call_fix", &t.phone, "2027-06-22 11:00");
    server
        .post_retell(t.company, &analysed, &t.retell_secret)
        .await;
    let booked = wait_scheduled(server.store.as_ref(), t.company, 1).await;
    assert_eq!(
        booked[0].start_at,
        Some(utc("2027-06-22T09:00:00Z")),
        "the analysed slot"
    );
    assert_eq!(fake.bookings().len(), 1);
}

#[tokio::test]
async fn a_replay_after_fixing_the_calcom_connection_books_the_failed_appointment() {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let server = TestServer::start_with(fast_booking, Default::default()).await;
    let t = tenant(server.store.as_ref(), "Salon Unconnected", "+4930100009").await;

    server
        .post_retell(
            t.company,
            &analyzed("call_cfg", &t.phone, "2027-06-23 12:00"),
            &t.retell_secret,
        )
        .await;
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Failed);
    let error = events[0].error.clone().unwrap_or_default();
    assert!(error.contains("askpro branch set-calcom"), "{error}");
    let all = appointments(server.store.as_ref(), t.company).await;
    assert_eq!(all[0].status, AppointmentStatus::Failed);

    connect_calcom(server.store.as_ref(), &t, &fake, None).await;
    let company = t.company.to_string();
    let report = replay_cli(&server, &["--status", "failed", "--company", &company]);
    assert_eq!(report["replayed"].as_array().map(Vec::len), Some(1));
    let booked = wait_scheduled(server.store.as_ref(), t.company, 1).await;
    assert_eq!(booked[0].id, all[0].id, "the same appointment, reopened");
    assert_eq!(fake.bookings().len(), 1);
}
