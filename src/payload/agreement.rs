//! The door's schemas and the worker's readers must agree: a body the schema admits is one the
//! worker can read, or the provider hears 2xx for an event that then fails in the ledger. The
//! bodies are generated field by field with every JSON type (and the edge values of each), so
//! a schema that drifts from the worker's types fails here. The ingress also runs the worker's
//! reader itself (`PayloadError::Unreadable`), but that is the safety net, not the contract.

use askpro_actors::handlers::{read_calcom_webhook, read_retell_event};
use askpro_actors::timestamp;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::{CALCOM_WEBHOOK, RETELL_WEBHOOK};

/// Any JSON value a field may hold, weighted towards the edges of each type.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1000.0),
            json!(1000.5),
            json!(1e300),
            json!(timestamp::MAX_MS),
            json!(timestamp::MAX_MS + 1),
            json!(timestamp::MAX_SAFE_INTEGER),
            json!(timestamp::MAX_SAFE_INTEGER as f64 + 2.0),
            json!(u64::MAX),
        ]),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "",
            "x",
            "2026-12-05T10:00:00Z",
            "2026-12-05T10:00:00.123+01:00",
            "0001-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59Z",
            "2026-12-05T23:59:60Z",
            "2026-12-05 10:00",
        ])
        .prop_map(|s| Value::String(s.into())),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"name": "A"}])),
    ]
}

/// An object with some of `keys`, each holding any value.
fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(keys), any_value()), 0..keys.len() + 1)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

const CALL_KEYS: &[&str] = &[
    "call_id",
    "agent_id",
    "direction",
    "from_number",
    "to_number",
    "call_status",
    "start_timestamp",
    "end_timestamp",
    "duration_ms",
    "disconnection_reason",
    "call_analysis",
];

fn retell_body() -> impl Strategy<Value = Value> {
    let event = prop::sample::select(vec!["call_started", "call_ended", "call_analyzed", "x"]);
    let summary = prop::option::of(any_value());
    (event, object(CALL_KEYS), summary).prop_map(|(event, mut call, summary)| {
        call.entry("call_id").or_insert(json!("call_1"));
        if let Some(summary) = summary {
            call.insert("call_analysis".into(), json!({ "call_summary": summary }));
        }
        json!({ "event": event, "call": call })
    })
}

const PAYLOAD_KEYS: &[&str] = &[
    "uid",
    "title",
    "startTime",
    "endTime",
    "rescheduleUid",
    "attendees",
    "metadata",
];
const ATTENDEE_KEYS: &[&str] = &["name", "email", "phone", "phoneNumber"];

fn calcom_body() -> impl Strategy<Value = Value> {
    let trigger = prop::sample::select(vec![
        "BOOKING_CREATED",
        "BOOKING_RESCHEDULED",
        "BOOKING_CANCELLED",
        "BOOKING_REJECTED",
        "BOOKING_PAID",
        "MEETING_ENDED",
    ]);
    let attendee = prop::option::of(object(ATTENDEE_KEYS));
    let created_at = prop::option::of(any_value());
    (trigger, object(PAYLOAD_KEYS), attendee, created_at).prop_map(
        |(trigger, mut payload, attendee, created_at)| {
            payload.entry("uid").or_insert(json!("bk_1"));
            if let Some(attendee) = attendee {
                payload.insert("attendees".into(), json!([attendee]));
            }
            let mut body = json!({ "triggerEvent": trigger, "payload": payload });
            if let Some(created_at) = created_at {
                body["createdAt"] = created_at;
            }
            body
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    #[test]
    fn the_retell_schema_admits_nothing_the_worker_refuses(body in retell_body()) {
        if RETELL_WEBHOOK.is_valid(&body) {
            let read = read_retell_event(&body);
            prop_assert!(read.is_ok(), "schema admits {body} but the worker says {:?}", read.err());
        }
    }

    #[test]
    fn the_calcom_schema_admits_nothing_the_worker_refuses(body in calcom_body()) {
        if CALCOM_WEBHOOK.is_valid(&body) {
            let read = read_calcom_webhook(&body);
            prop_assert!(read.is_ok(), "schema admits {body} but the worker says {:?}", read.err());
        }
    }
}

/// The review's findings, one by one: each now gets 400 at the door or is read by the worker.
#[test]
fn the_reviewed_bodies_are_refused_at_the_door_or_read() {
    use super::{inspect_calcom, inspect_retell};
    let retell = |call: Value| json!({"event": "call_analyzed", "call": call}).to_string();
    // JSON Schema counts 1000.0 as an integer, so the worker does too.
    assert!(
        inspect_retell(retell(json!({"call_id": "c", "duration_ms": 1000.0})).as_bytes()).is_ok()
    );
    for call in [
        json!({"call_id": "c", "duration_ms": 18_446_744_073_709_551_615_u64}),
        json!({"call_id": "c", "start_timestamp": 9_000_000_000_000_000_i64}),
        json!({"call_id": "c", "disconnection_reason": 7}),
        json!({"call_id": "c", "call_analysis": {"call_summary": 7}}),
    ] {
        let err = inspect_retell(retell(call.clone()).as_bytes()).unwrap_err();
        assert!(
            matches!(err, super::PayloadError::Schema { .. }),
            "{call}: {err}"
        );
    }
    // A trigger we do not act on is not read, whatever its payload's shape.
    let meeting =
        json!({"triggerEvent": "MEETING_ENDED", "payload": {"title": 5, "attendees": {}}});
    assert!(inspect_calcom(meeting.to_string().as_bytes()).is_ok());
    assert!(read_calcom_webhook(&meeting).unwrap().is_none());
}

/// The bounds the schema states are the worker's bounds.
#[test]
fn the_schema_states_the_workers_timestamp_bounds() {
    let schema: Value = serde_json::from_str(super::RETELL_WEBHOOK_SCHEMA).unwrap();
    let props = &schema["properties"]["call"]["properties"];
    for field in ["start_timestamp", "end_timestamp"] {
        assert_eq!(props[field]["minimum"], json!(timestamp::MIN_MS), "{field}");
        assert_eq!(props[field]["maximum"], json!(timestamp::MAX_MS), "{field}");
    }
    assert_eq!(
        props["duration_ms"]["maximum"],
        json!(timestamp::MAX_SAFE_INTEGER)
    );
}
