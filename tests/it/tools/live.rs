//! The tool endpoints end to end: signed requests to the in-process server, booking at the
//! fake Cal.com over loopback.

use askpro::calcom::fake::{FakeCalcom, FakeConfig, FaultUpdate};
use askpro::config::Config;
use askpro::signature::sign_retell;
use askpro_actors::domain::EventStatus;
use chrono::{Days, Utc};
use chrono_tz::Europe::Berlin;
use serde_json::{json, Value};

use crate::booking::{analyzed, connect_calcom, fast_booking};
use crate::harness::{eventually, json_body, now_ms, tenant, Tenant, TestServer};

const CALLER: &str = "+4915112345678";
const TOOLS: [&str; 5] = [
    "check_availability",
    "book_appointment",
    "find_appointment",
    "reschedule_appointment",
    "cancel_appointment",
];

/// A day a week ahead in Berlin, as a caller with a year says it (`15.12.2026`).
fn next_week() -> String {
    let day = Utc::now().with_timezone(&Berlin).date_naive() + Days::new(7);
    day.format("%d.%m.%Y").to_string()
}

/// The same day and `hh:mm` as the ISO instant the answers carry.
fn iso_next_week(time: &str) -> String {
    let day = Utc::now().with_timezone(&Berlin).date_naive() + Days::new(7);
    let local = day
        .and_time(time.parse().unwrap())
        .and_local_timezone(Berlin)
        .unwrap();
    local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn tool_body(tool: &str, call_id: &str, to: &str, from: &str, args: Value) -> String {
    json!({
        "name": tool,
        "call": {
            "call_id": call_id,
            "from_number": from,
            "to_number": to,
            "start_timestamp": now_ms(),
            "call_status": "ongoing",
        },
        "args": args,
    })
    .to_string()
}

async fn post_tool(server: &TestServer, t: &Tenant, tool: &str, body: &str) -> (u16, Value) {
    let signature = sign_retell(&t.retell_secret, body.as_bytes(), now_ms());
    let path = format!("/webhooks/retell/{}/functions/{tool}", t.company);
    json_body(
        server
            .post_raw(&path, body, Some(("x-retell-signature", &signature)))
            .await,
    )
    .await
}

struct Setup {
    fake: FakeCalcom,
    server: TestServer,
    a: Tenant,
    b: Tenant,
}

async fn setup(tweak: impl FnOnce(&mut Config)) -> Setup {
    let fake = FakeCalcom::start(FakeConfig {
        rate_limit_per_min: 0,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let server = TestServer::start_with(
        |c| {
            fast_booking(c);
            tweak(c);
        },
        Default::default(),
    )
    .await;
    let a = tenant(server.store.as_ref(), "Praxis A", "+493055501001").await;
    let b = tenant(server.store.as_ref(), "Praxis B", "+493055501002").await;
    for t in [&a, &b] {
        connect_calcom(server.store.as_ref(), t, &fake, None).await;
    }
    Setup { fake, server, a, b }
}

fn book_args(time: &str) -> Value {
    json!({"date": next_week(), "time": time, "name": "Erika Muster"})
}

#[tokio::test]
async fn every_tool_needs_a_valid_signature() {
    let s = setup(|_| {}).await;
    for tool in TOOLS {
        let body = tool_body(
            tool,
            "call_sig",
            &s.a.phone,
            CALLER,
            json!({"date": "morgen"}),
        );
        let path = format!("/webhooks/retell/{}/functions/{tool}", s.a.company);
        let unsigned = s.server.post_raw(&path, &body, None).await;
        assert_eq!(unsigned.status(), 401, "{tool} unsigned");
        let wrong = sign_retell("key_wrong", body.as_bytes(), now_ms());
        let forged = s
            .server
            .post_raw(&path, &body, Some(("x-retell-signature", &wrong)))
            .await;
        assert_eq!(forged.status(), 401, "{tool} wrongly signed");
        let (status, answer) = post_tool(&s.server, &s.a, tool, &body).await;
        assert_eq!(status, 200, "{tool}: {answer}");
        assert!(answer["message"].is_string(), "{tool}: {answer}");
    }
    assert!(s.fake.bookings().is_empty());
}

#[tokio::test]
async fn check_book_retry_and_call_analyzed_make_one_booking() {
    let s = setup(|_| {}).await;
    let (server, a) = (&s.server, &s.a);
    let check = tool_body(
        "check_availability",
        "call_1",
        &a.phone,
        CALLER,
        book_args("10 Uhr"),
    );
    let (_, answer) = post_tool(server, a, "check_availability", &check).await;
    assert_eq!(answer["available"], true, "{answer}");
    assert_eq!(answer["requested"], iso_next_week("10:00"));

    let book = tool_body(
        "book_appointment",
        "call_1",
        &a.phone,
        CALLER,
        book_args("10 Uhr"),
    );
    let (_, first) = post_tool(server, a, "book_appointment", &book).await;
    assert_eq!(first["booked"], true, "{first}");
    assert_eq!(first["start"], iso_next_week("10:00"));
    // Retell's retry of the same call: the first answer, no second booking.
    let (_, retried) = post_tool(server, a, "book_appointment", &book).await;
    assert_eq!(retried, first);
    assert_eq!(s.fake.bookings().len(), 1);

    // The slot cache was dropped by the booking: the slot is gone, neighbours are offered.
    let (_, again) = post_tool(server, a, "check_availability", &check).await;
    assert_eq!(again["available"], false, "{again}");
    let alternatives = again["alternatives"].as_array().unwrap();
    assert_eq!(alternatives.len(), 3, "{again}");
    assert_eq!(alternatives[0], iso_next_week("09:30"));

    // The call's post-call analysis names the same slot: it must not book again.
    let analyzed = analyzed("call_1", &a.phone, &iso_next_week("10:00"));
    let accepted = server
        .post_retell(a.company, &analyzed, &a.retell_secret)
        .await;
    assert_eq!(accepted.status(), 202);
    let events = server.settled_events(a.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Processed, "{events:?}");
    assert_eq!(
        s.fake.bookings().len(),
        1,
        "call_analyzed found the tool's booking"
    );
}

#[tokio::test]
async fn two_calls_racing_for_one_slot_book_it_once() {
    let s = setup(|_| {}).await;
    let body = |call: &str| {
        tool_body(
            "book_appointment",
            call,
            &s.a.phone,
            CALLER,
            book_args("11:00"),
        )
    };
    let (one, two) = (body("call_x"), body("call_y"));
    let ((_, x), (_, y)) = tokio::join!(
        post_tool(&s.server, &s.a, "book_appointment", &one),
        post_tool(&s.server, &s.a, "book_appointment", &two),
    );
    let booked = [&x, &y].iter().filter(|a| a["booked"] == true).count();
    assert_eq!(booked, 1, "{x}\n{y}");
    let loser = if x["booked"] == true { &y } else { &x };
    assert!(
        !loser["alternatives"].as_array().unwrap().is_empty(),
        "{loser}"
    );
    assert_eq!(s.fake.bookings().len(), 1);
}

#[tokio::test]
async fn a_slow_or_down_calendar_answers_pending_within_the_budget() {
    let s = setup(|c| c.tools.budget_ms = 300).await;
    s.fake
        .set_faults(FaultUpdate {
            latency_ms: Some(1_500),
            ..FaultUpdate::default()
        })
        .unwrap();
    let book = tool_body(
        "book_appointment",
        "call_slow",
        &s.a.phone,
        CALLER,
        book_args("12:00"),
    );
    let (status, first) = post_tool(&s.server, &s.a, "book_appointment", &book).await;
    assert_eq!((status, &first["pending"]), (200, &json!(true)), "{first}");
    // The run goes on in the background; Retell's retry then gets the real answer.
    eventually("the slow booking lands", || async {
        s.fake.bookings().len() == 1
    })
    .await;
    eventually("the retry sees it booked", || async {
        post_tool(&s.server, &s.a, "book_appointment", &book)
            .await
            .1["booked"]
            == true
    })
    .await;

    s.fake
        .set_faults(FaultUpdate {
            latency_ms: Some(0),
            fail_next: Some(1_000),
            ..FaultUpdate::default()
        })
        .unwrap();
    let down = tool_body(
        "book_appointment",
        "call_down",
        &s.a.phone,
        CALLER,
        book_args("13:00"),
    );
    let (_, answer) = post_tool(&s.server, &s.a, "book_appointment", &down).await;
    assert_eq!(answer["booked"], false, "{answer}");
    assert_eq!(answer["pending"], true, "{answer}");
    let check = tool_body(
        "check_availability",
        "call_down",
        &s.a.phone,
        CALLER,
        book_args("14:00"),
    );
    let (_, answer) = post_tool(&s.server, &s.a, "check_availability", &check).await;
    assert_eq!(answer["pending"], true, "{answer}");
}

#[tokio::test]
async fn another_tenant_finds_nothing_of_ours() {
    let s = setup(|_| {}).await;
    let book = tool_body(
        "book_appointment",
        "call_a",
        &s.a.phone,
        CALLER,
        book_args("15:00"),
    );
    let (_, booked) = post_tool(&s.server, &s.a, "book_appointment", &book).await;
    assert_eq!(booked["booked"], true, "{booked}");
    let id = booked["appointment_id"].as_str().unwrap().to_owned();

    // Tenant B's path with tenant A's number: not B's branch.
    let foreign_number = tool_body("find_appointment", "call_b", &s.a.phone, CALLER, json!({}));
    let (status, _) = post_tool(&s.server, &s.b, "find_appointment", &foreign_number).await;
    assert_eq!(status, 404);
    // B's own number, A's caller and A's appointment id: nothing.
    let find = tool_body("find_appointment", "call_b", &s.b.phone, CALLER, json!({}));
    let (_, found) = post_tool(&s.server, &s.b, "find_appointment", &find).await;
    assert_eq!(found["found"], false, "{found}");
    let cancel = tool_body(
        "cancel_appointment",
        "call_b",
        &s.b.phone,
        CALLER,
        json!({"appointment_id": id}),
    );
    let (_, cancelled) = post_tool(&s.server, &s.b, "cancel_appointment", &cancel).await;
    assert_eq!(cancelled["cancelled"], false, "{cancelled}");
    assert_eq!(s.fake.bookings()[0].status, "accepted");

    // A's caller finds and cancels it under A.
    let find = tool_body("find_appointment", "call_a2", &s.a.phone, CALLER, json!({}));
    let (_, found) = post_tool(&s.server, &s.a, "find_appointment", &find).await;
    assert_eq!(
        found["appointments"][0]["appointment_id"],
        id.as_str(),
        "{found}"
    );
    let cancel = tool_body(
        "cancel_appointment",
        "call_a2",
        &s.a.phone,
        CALLER,
        json!({}),
    );
    let (_, cancelled) = post_tool(&s.server, &s.a, "cancel_appointment", &cancel).await;
    assert_eq!(cancelled["cancelled"], true, "{cancelled}");
    assert_eq!(s.fake.bookings()[0].status, "cancelled");
}

#[tokio::test]
async fn odd_values_ask_the_caller_to_repeat() {
    let s = setup(|_| {}).await;
    let cases = [
        (
            json!({"date": "{{current_date}}", "time": "14 Uhr"}),
            "date",
        ),
        (json!({"date": "08.12.", "time": "14 Uhr"}), "date"),
        (json!({"date": "2023-12-08", "time": "14 Uhr"}), "date"),
        (json!({"date": "morgen", "time": "gegen 14 Uhr"}), "time"),
    ];
    for tool in ["check_availability", "book_appointment"] {
        for (args, field) in &cases {
            let body = tool_body(tool, "call_odd", &s.a.phone, CALLER, args.clone());
            let (status, answer) = post_tool(&s.server, &s.a, tool, &body).await;
            assert_eq!(status, 200);
            assert_eq!(answer["repeat"], *field, "{tool} {args}: {answer}");
            assert!(
                answer["message"].as_str().unwrap().contains("wiederholen"),
                "{answer}"
            );
        }
    }
    let vague = tool_body(
        "check_availability",
        "call_odd",
        &s.a.phone,
        CALLER,
        json!({"date": "morgen", "time": "vormittags"}),
    );
    let (_, answer) = post_tool(&s.server, &s.a, "check_availability", &vague).await;
    assert_eq!(answer["available"], true, "{answer}");
    assert!(s.fake.bookings().is_empty());
}

#[tokio::test]
async fn the_caller_moves_their_own_appointment_and_no_one_else_can() {
    let s = setup(|_| {}).await;
    let book = tool_body(
        "book_appointment",
        "call_r",
        &s.a.phone,
        CALLER,
        book_args("09:00"),
    );
    let (_, booked) = post_tool(&s.server, &s.a, "book_appointment", &book).await;
    assert_eq!(booked["booked"], true, "{booked}");

    let args = json!({"date": next_week(), "time": "16:30"});
    let foreign = tool_body(
        "reschedule_appointment",
        "call_r2",
        &s.b.phone,
        CALLER,
        args.clone(),
    );
    let (_, refused) = post_tool(&s.server, &s.b, "reschedule_appointment", &foreign).await;
    assert_eq!(refused["rescheduled"], false, "{refused}");

    let own = tool_body(
        "reschedule_appointment",
        "call_r2",
        &s.a.phone,
        CALLER,
        args,
    );
    let (_, moved) = post_tool(&s.server, &s.a, "reschedule_appointment", &own).await;
    assert_eq!(moved["rescheduled"], true, "{moved}");
    assert_eq!(moved["start"], iso_next_week("16:30"));
    let bookings = s.fake.bookings();
    let statuses: Vec<&str> = bookings.iter().map(|b| b.status.as_str()).collect();
    assert_eq!(statuses, ["cancelled", "accepted"]);
    let find = tool_body("find_appointment", "call_r3", &s.a.phone, CALLER, json!({}));
    let (_, found) = post_tool(&s.server, &s.a, "find_appointment", &find).await;
    let listed = found["appointments"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{found}");
    assert_eq!(listed[0]["start"], iso_next_week("16:30"));
}
