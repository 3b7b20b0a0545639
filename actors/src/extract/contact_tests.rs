//! Callback contact: each source, their precedence, junk refused, the real anonymous fixture.

use serde_json::{json, Value};

use super::*;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/retell_call_object_get-call_call_a3d98bb4522f6f1e0bfac5964b1.json"
));

fn contact(call: &Value) -> CallContact {
    callback_contact(call, "DE")
}

fn analysed(data: Value) -> Value {
    json!({"call_id": "c1", "from_number": "anonymous", "call_analysis": {"custom_analysis_data": data}})
}

fn invocation(name: &str, args: Value) -> Value {
    json!({
        "role": "tool_call_invocation",
        "tool_call_id": format!("tool_call_{name}"),
        "name": name,
        "arguments": args.to_string(),
        "time_sec": 17.0,
        "type": "custom"
    })
}

#[test]
fn a_callback_number_in_the_analysis_is_normalised() {
    for key in [
        "caller_phone",
        "callback_number",
        "rueckrufnummer",
        "telefonnummer",
        "phone_number",
    ] {
        let found = contact(&analysed(json!({ key: "0151 23456789" })));
        assert_eq!(found.phone.as_deref(), Some("+4915123456789"), "{key}");
        assert_eq!(found.email, None);
    }
}

#[test]
fn collected_variables_are_read() {
    let call = json!({"collected_dynamic_variables": {"telefon": "+49 30 1234567", "e_mail": "Erika@Example.DE"}});
    let found = contact(&call);
    assert_eq!(found.phone.as_deref(), Some("+49301234567"));
    assert_eq!(found.email.as_deref(), Some("Erika@example.de"));
}

#[test]
fn tool_call_arguments_are_read_newest_first() {
    let call = json!({
        "transcript_with_tool_calls": [
            {"role": "agent", "content": "Wie ist Ihre Nummer?"},
            invocation("collect_appointment_data", json!({"phone": "030 1111111", "email": "alt@example.org"})),
            {"role": "tool_call_result", "tool_call_id": "x", "content": "{}"},
            invocation("book_appointment", json!({"phone": "030 2222222"})),
        ]
    });
    let found = contact(&call);
    assert_eq!(found.phone.as_deref(), Some("+49302222222"));
    // the newest invocation has no email: the older one's is still the caller's
    assert_eq!(found.email.as_deref(), Some("alt@example.org"));
}

#[test]
fn analysis_beats_collected_beats_tool_calls() {
    let call = json!({
        "call_analysis": {"custom_analysis_data": {"caller_phone": "030 3333333"}},
        "collected_dynamic_variables": {"phone": "030 4444444", "email": "collected@example.org"},
        "transcript_with_tool_calls": [
            invocation("book_appointment", json!({"phone": "030 5555555", "email": "tool@example.org"}))
        ]
    });
    let found = contact(&call);
    assert_eq!(found.phone.as_deref(), Some("+49303333333"));
    assert_eq!(found.email.as_deref(), Some("collected@example.org"));
}

#[test]
fn junk_is_refused_and_the_next_source_tried() {
    let call = json!({
        "call_analysis": {"custom_analysis_data": {
            "caller_phone": "anonymous",
            "telefon": "{{user_number}}",
            "email": "keine",
            "e_mail": "hans at example dot de"
        }},
        "collected_dynamic_variables": {"callback_number": "12", "email": "a@b"},
        "transcript_with_tool_calls": [
            invocation("book_appointment", json!({"phone": "0151 23456789", "email": "hans@example.de"}))
        ]
    });
    let found = contact(&call);
    assert_eq!(found.phone.as_deref(), Some("+4915123456789"));
    assert_eq!(found.email.as_deref(), Some("hans@example.de"));
}

#[test]
fn nothing_usable_is_an_empty_contact() {
    let call = json!({
        "from_number": "anonymous",
        "call_analysis": {"custom_analysis_data": {"caller_phone": 15123456789_i64, "caller_full_name": "Hans"}},
        "collected_dynamic_variables": [],
        "transcript_with_tool_calls": [
            {"role": "tool_call_invocation", "arguments": "not json {"},
            {"role": "tool_call_invocation", "arguments": 42},
            {"role": "user", "content": "meine Nummer ist 0151 23456789"}
        ]
    });
    assert!(contact(&call).is_empty());
}

#[test]
fn the_real_anonymous_call_carries_no_contact() {
    let call: Value = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    assert_eq!(call["from_number"], "anonymous");
    assert!(contact(&call).is_empty());
}

#[test]
fn emails_must_look_like_emails() {
    for good in [
        "a@example.de",
        "hans.robert+termin@mail.example.com",
        "x_y@sub-domain.example.org",
    ] {
        assert_eq!(email(good).as_deref(), Some(good), "{good}");
    }
    for bad in [
        "",
        "keine",
        "a@b",
        "@example.de",
        "a@@example.de",
        "a b@example.de",
        "a@example",
        "a@example.d3",
        "a@-x.de",
        ".a@example.de",
        "a..b@example.de",
        "{{email}}@example.de",
        "a@example.de, b@example.de",
        "<a@example.de>",
    ] {
        assert_eq!(email(bad), None, "{bad:?}");
    }
    let long_local = format!("{}@example.de", "a".repeat(65));
    assert_eq!(email(&long_local), None);
}
