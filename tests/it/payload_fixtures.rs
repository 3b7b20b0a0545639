//! Payload parsing and schema validation against the real and documented payloads in
//! `tests/fixtures/`.

use askpro::payload::{
    inspect_calcom, inspect_retell, inspect_retell_inbound, validate_log_record, PayloadError,
};
use askpro_actors::dedup::body_key;
use askpro_actors::{CompanyId, Disposition, EventId, Provider, RecordMeta};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

const CALL_OBJECT: &str = "retell_call_object_get-call_call_a3d98bb4522f6f1e0bfac5964b1.json";

/// Wraps the raw call object bytes as a webhook without re-serialising them.
fn wrap_call(event: &str, call: &[u8]) -> Vec<u8> {
    let mut body = format!(r#"{{"event":"{event}","call":"#).into_bytes();
    body.extend_from_slice(call);
    body.push(b'}');
    body
}

#[test]
fn real_retell_call_analyzed_validates() {
    let body = wrap_call("call_analyzed", &fixture(CALL_OBJECT));
    let ev = inspect_retell(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ev.event, "call_analyzed");
    assert_eq!(ev.call_id, "call_a3d98bb4522f6f1e0bfac5964b1");
    assert_eq!(ev.from_number.as_deref(), Some("anonymous"));
    assert!(ev.direction.as_deref() == Some("inbound") || ev.direction.is_none());
    assert_eq!(
        ev.dedup_key(),
        "retell:call_analyzed:call_a3d98bb4522f6f1e0bfac5964b1"
    );
    // call_ended and call_analyzed of one call must not share a key.
    let ended = inspect_retell(&wrap_call("call_ended", &fixture(CALL_OBJECT))).unwrap();
    assert_ne!(ended.dedup_key(), ev.dedup_key());
}

#[test]
fn retell_missing_call_id_names_the_field() {
    let mut call: Value = serde_json::from_slice(&fixture(CALL_OBJECT)).unwrap();
    call.as_object_mut().unwrap().remove("call_id");
    let body = serde_json::to_vec(&json!({"event": "call_ended", "call": call})).unwrap();
    let err = inspect_retell(&body).unwrap_err();
    let PayloadError::Schema { schema, errors } = &err else {
        panic!("expected a schema error, got {err:?}");
    };
    assert_eq!(*schema, "retell_webhook.schema.json");
    assert!(errors.iter().any(|e| e.contains("call_id")), "{errors:?}");
    assert!(err.to_string().contains("call_id"), "{err}");
    assert!(
        errors.iter().all(|e| e.chars().count() <= 301),
        "{errors:?}"
    );
}

#[test]
fn retell_wrong_types_are_reported_with_pointers() {
    let body = br#"{"event":"call_ended","call":{"call_id":null,"start_timestamp":"yesterday"}}"#;
    let msg = inspect_retell(body).unwrap_err().to_string();
    assert!(
        msg.contains("/call/call_id: null is not of type \"string\""),
        "{msg}"
    );
    assert!(msg.contains("/call/start_timestamp: "), "{msg}");
}

#[test]
fn truncated_json_is_not_json() {
    let err = inspect_retell(br#"{"event":"#).unwrap_err();
    match &err {
        PayloadError::NotJson { line, column, .. } => assert_eq!((*line, *column), (1, 9)),
        other => panic!("expected NotJson, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("not valid JSON") && msg.contains("line 1, column 9"),
        "{msg}"
    );
}

#[test]
fn form_encoded_calcom_body_is_explained() {
    let err = inspect_calcom(b"triggerEvent=BOOKING_CREATED&createdAt=2024-01-10T14%3A30%3A00Z")
        .unwrap_err();
    assert!(matches!(err, PayloadError::FormEncoded), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("form-encoded") && msg.contains("custom payload template"),
        "{msg}"
    );
}

#[test]
fn retell_call_inbound_fixture() {
    let body = fixture("retell_call_inbound_test-fixture_RetellWebhookControllerTest.json");
    let inbound = inspect_retell_inbound(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inbound.to_number, "+491234567890");
    assert_eq!(inbound.from_number.as_deref(), Some("+491111111111"));
    assert_eq!(inbound.agent_id.as_deref(), Some("agent_test_123"));

    let err = inspect_retell_inbound(br#"{"event":"call_inbound","call_inbound":{}}"#).unwrap_err();
    assert!(err.to_string().contains("to_number"), "{err}");
    // A call event is not a call_inbound request.
    let err = inspect_retell_inbound(&wrap_call("call_ended", &fixture(CALL_OBJECT))).unwrap_err();
    assert!(err.to_string().contains("call_inbound"), "{err}");
}

#[test]
fn calcom_docs_examples_validate_with_dedup_keys() {
    let cases = [
        (
            "calcom_BOOKING_CREATED_docs-example.json",
            "calcom:BOOKING_CREATED:abc123-def456:2024-01-10T14:30:00.000Z",
        ),
        (
            "calcom_BOOKING_CANCELLED_docs-example.json",
            "calcom:BOOKING_CANCELLED:abc123-def456:2024-01-12T11:00:00.000Z",
        ),
        (
            "calcom_BOOKING_RESCHEDULED_docs-example.json",
            "calcom:BOOKING_RESCHEDULED:abc123-def456:2024-01-11T09:00:00.000Z",
        ),
    ];
    for (name, key) in cases {
        let body = fixture(name);
        let ev = inspect_calcom(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ev.uid.as_deref(), Some("abc123-def456"), "{name}");
        assert_eq!(ev.dedup_key(&body), key, "{name}");
    }
}

#[test]
fn dotted_trigger_without_created_at_falls_back_to_body_hash() {
    let body = fixture("calcom_BOOKING.CREATED_test-fixture_CalcomWebhookControllerTest.json");
    let ev = inspect_calcom(&body).unwrap_or_else(|e| panic!("must be stored, not dropped: {e}"));
    assert_eq!(ev.trigger_event, "BOOKING.CREATED");
    assert_eq!(ev.created_at, None);
    let key = ev.dedup_key(&body);
    assert_eq!(key, body_key(Provider::Calcom, &body));
    assert!(key.starts_with("calcom:sha256:"), "{key}");
}

#[test]
fn calcom_type_errors() {
    let body = br#"{"triggerEvent":"BOOKING_CREATED","createdAt":"x","payload":{"uid":"u","attendees":{},"startTime":5}}"#;
    let msg = inspect_calcom(body).unwrap_err().to_string();
    assert!(
        msg.contains("/payload/attendees: ") && msg.contains("/payload/startTime: "),
        "{msg}"
    );
    let err = inspect_calcom(br#"{"triggerEvent":"BOOKING_CANCELLED","payload":{}}"#).unwrap_err();
    assert!(err.to_string().contains("uid"), "{err}");
}

fn record_json(meta: &RecordMeta, value: &[u8]) -> Value {
    let headers: Map<String, Value> = meta
        .to_headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    json!({
        "key": meta.company_id.to_string(),
        "value": String::from_utf8(value.to_vec()).unwrap(),
        "headers": headers,
    })
}

fn meta(disposition: Disposition) -> RecordMeta {
    RecordMeta {
        event_id: EventId::new(),
        provider: Provider::Calcom,
        company_id: CompanyId::new(),
        event_type: "BOOKING_CREATED".into(),
        dedup_key: "calcom:BOOKING_CREATED:abc123-def456:2024-01-10T14:30:00.000Z".into(),
        received_at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc),
        correlation_id: EventId::new().0,
        secret_id: "sec_1".into(),
        disposition,
        retry: None,
    }
}

#[test]
fn log_record_schema_matches_record_headers() {
    let body = fixture("calcom_BOOKING_CREATED_docs-example.json");
    for d in [
        Disposition::Accept,
        Disposition::Rejected("body is not valid JSON".into()),
        Disposition::Unrouted("no branch for +4930".into()),
    ] {
        let record = record_json(&meta(d), &body);
        validate_log_record(&record).unwrap_or_else(|e| panic!("{e}\n{record:#}"));
    }
    let mut m = meta(Disposition::Accept);
    m.dedup_key = body_key(Provider::Calcom, &body);
    validate_log_record(&record_json(&m, &body)).unwrap();

    let mut broken = record_json(&meta(Disposition::Rejected("x".into())), &body);
    let headers = broken["headers"].as_object_mut().unwrap();
    headers.remove("askpro-reason");
    headers.insert("askpro-provider".into(), json!("stripe"));
    headers.insert("askpro-received-at".into(), json!("yesterday"));
    let PayloadError::Schema { errors, .. } = validate_log_record(&broken).unwrap_err() else {
        panic!("expected schema error");
    };
    let all = errors.join("\n");
    for needle in [
        "askpro-reason",
        "/headers/askpro-provider",
        "/headers/askpro-received-at",
    ] {
        assert!(all.contains(needle), "{needle} missing in:\n{all}");
    }
}
