//! Anonymous callers end to end (`from_number: "anonymous"`): a callback number from the
//! call's analysis books with it; a caller who left nothing fails naming the setting, and
//! books with the branch's fallback email once the tenant sets one (`askpro branch update
//! --fallback-email`), marked as "caller left no contact" in our row and in Cal.com.

use std::process::Command;

use askpro::calcom::fake::{FakeCalcom, FakeConfig};
use askpro_actors::domain::{Appointment, AppointmentStatus, ContactSource, EventStatus};
use askpro_actors::{CompanyId, StateStore};
use serde_json::{json, Value};

use crate::booking::{connect_calcom, fast_booking, replay_cli};
use crate::harness::{eventually, tenant, Tenant, TestServer};

const FALLBACK: &str = "termine@salon-anonym.example";

/// A `call_analyzed` from an anonymous caller who agreed a slot and gave a name; `extra` is
/// merged into `custom_analysis_data`.
fn anonymous_analyzed(call_id: &str, to_number: &str, extra: Value) -> String {
    let mut data = json!({
        "appointment_made": true,
        "appointment_date_time": "2027-05-11 10:00",
        "caller_full_name": "Hans Robert",
        "caller_phone": "anonymous",
    });
    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
        data.extend(extra.clone());
    }
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
                "call_summary": "Termin vereinbart",
                "custom_analysis_data": data
            }
        }
    })
    .to_string()
}

async fn connected(name: &str, phone: &str) -> (FakeCalcom, TestServer, Tenant) {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let server = TestServer::start_with(fast_booking, Default::default()).await;
    let t = tenant(server.store.as_ref(), name, phone).await;
    connect_calcom(server.store.as_ref(), &t, &fake, None).await;
    (fake, server, t)
}

async fn scheduled(store: &dyn StateStore, company: CompanyId) -> Appointment {
    eventually("one scheduled appointment", || async {
        let all = store.appointments(company).await.expect("appointments");
        all.iter().any(|a| a.status == AppointmentStatus::Scheduled)
    })
    .await;
    let all = store.appointments(company).await.expect("appointments");
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().expect("one appointment")
}

/// Runs the real binary against the running server's data dir, as an operator would.
fn askpro(server: &TestServer, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(args)
        .arg("--json")
        .arg("--data-dir")
        .arg(server.dir.path())
        .env("ASKPRO_LOG__PARTITIONS", "4")
        .output()
        .expect("run askpro");
    assert!(
        output.status.success(),
        "askpro {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("askpro prints json")
}

#[tokio::test]
async fn an_anonymous_caller_without_contact_fails_until_the_branch_has_a_fallback_email() {
    let (fake, server, t) = connected("Salon Anonym", "+4930100021").await;
    let body = anonymous_analyzed("call_anon_1", &t.phone, json!({}));

    // (a) no fallback: a permanent failure that names the setting, nothing sent to Cal.com.
    server.post_retell(t.company, &body, &t.retell_secret).await;
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Failed);
    let error = events[0].error.clone().unwrap_or_default();
    assert!(error.contains("anonymous"), "{error}");
    let setting = format!(
        "askpro branch update --branch {} --fallback-email",
        t.branch
    );
    assert!(error.contains(&setting), "{error}");
    assert!(fake.bookings().is_empty());

    // (b) the tenant sets a fallback, the operator replays: booked under that email.
    let branch = t.branch.to_string();
    let shown = askpro(
        &server,
        &[
            "branch",
            "update",
            "--branch",
            &branch,
            "--fallback-email",
            FALLBACK,
        ],
    );
    assert_eq!(shown["fallback_email"], FALLBACK, "{shown}");
    let company = t.company.to_string();
    let report = replay_cli(&server, &["--status", "failed", "--company", &company]);
    assert_eq!(report["replayed"].as_array().map(Vec::len), Some(1));

    let booked = scheduled(server.store.as_ref(), t.company).await;
    assert_eq!(booked.contact_source, Some(ContactSource::BranchFallback));
    assert_eq!(booked.attendee_email.as_deref(), Some(FALLBACK));
    assert_eq!(booked.attendee_phone, None);
    let bookings = fake.bookings();
    assert_eq!(bookings.len(), 1);
    let attendee = &bookings[0].attendees[0];
    assert_eq!(attendee.email.as_deref(), Some(FALLBACK));
    assert_eq!(attendee.phone_number, None);
    assert_eq!(attendee.name, "Hans Robert");
    assert_eq!(
        bookings[0].metadata.get("askpro_note").map(String::as_str),
        Some("Anrufer hat keine Kontaktdaten hinterlassen")
    );

    // The operator sees it: appointments list and branch list.
    let listed = askpro(&server, &["appointments", "list", "--company", &company]);
    assert_eq!(listed[0]["contact_source"], "branch_fallback", "{listed}");
    assert_eq!(listed[0]["caller_left_no_contact"], true, "{listed}");
    let branches = askpro(&server, &["branch", "list", "--company", &company]);
    assert_eq!(branches[0]["fallback_email"], FALLBACK, "{branches}");
}

#[tokio::test]
async fn an_anonymous_callers_callback_number_from_the_analysis_books_with_it() {
    let (fake, server, t) = connected("Salon Rueckruf", "+4930100022").await;
    let body = anonymous_analyzed(
        "call_anon_2",
        &t.phone,
        json!({"rueckrufnummer": "0151 98765432"}),
    );

    server.post_retell(t.company, &body, &t.retell_secret).await;

    let booked = scheduled(server.store.as_ref(), t.company).await;
    assert_eq!(booked.contact_source, Some(ContactSource::CallData));
    assert_eq!(booked.attendee_phone.as_deref(), Some("+4915198765432"));
    let bookings = fake.bookings();
    assert_eq!(bookings.len(), 1);
    let attendee = &bookings[0].attendees[0];
    assert_eq!(attendee.phone_number.as_deref(), Some("+4915198765432"));
    assert_eq!(attendee.email, None);
    assert!(!bookings[0].metadata.contains_key("askpro_note"));
}

#[tokio::test]
async fn a_bad_fallback_email_is_refused_naming_the_flag() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "Salon Tippfehler", "+4930100023").await;
    let branch = t.branch.to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args([
            "branch",
            "update",
            "--branch",
            &branch,
            "--fallback-email",
            "termine@salon",
        ])
        .arg("--data-dir")
        .arg(server.dir.path())
        .output()
        .expect("run askpro");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--fallback-email"), "{stderr}");
    let stored = server.store.branch(t.company, t.branch).await.unwrap();
    assert_eq!(stored.and_then(|b| b.fallback_email), None);
}
