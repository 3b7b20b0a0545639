//! Whole-call tests: sources, priority, details, past slots, DST and the real fixture.

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Berlin;
use serde_json::{json, Value};

use super::*;

mod calendar;
mod never_panics;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/retell_call_object_get-call_call_a3d98bb4522f6f1e0bfac5964b1.json"
));

fn fixture() -> Value {
    match serde_json::from_str(FIXTURE) {
        Ok(call) => call,
        Err(e) => panic!("fixture is not JSON: {e}"),
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("bad test instant {s}: {e}"),
    }
}

/// Wednesday 2026-06-10, 10:00 in Berlin.
fn anchor() -> DateTime<Utc> {
    utc("2026-06-10T08:00:00Z")
}

fn request(call: &Value) -> AppointmentRequest {
    match extract(call, anchor(), Berlin) {
        Ok(Some(request)) => request,
        other => panic!("expected a request from {call}, got {other:?}"),
    }
}

fn failure(call: &Value) -> ExtractError {
    match extract(call, anchor(), Berlin) {
        Err(e) => e,
        other => panic!("expected an error from {call}, got {other:?}"),
    }
}

fn analysed(data: Value) -> Value {
    json!({"call_id": "c1", "from_number": "anonymous", "call_analysis": {"custom_analysis_data": data}})
}

fn collected(vars: Value) -> Value {
    json!({"call_id": "c1", "collected_dynamic_variables": vars})
}

fn err(field: &str, value: &str, problem: &str) -> ExtractError {
    ExtractError {
        field: field.into(),
        value: value.into(),
        problem: problem.into(),
    }
}

#[test]
fn the_real_fixture_is_not_a_booking() {
    let call = fixture();
    // What makes it so: the analysis is the PHP empty array and the flow collected only nodes.
    assert_eq!(
        call.pointer("/call_analysis/custom_analysis_data"),
        Some(&json!([]))
    );
    assert_eq!(
        call.get("collected_dynamic_variables"),
        Some(&json!({"previous_node": "Anonymer Kunde", "current_node": "Check Availability"}))
    );
    assert_eq!(call.get("from_number"), Some(&json!("anonymous")));
    let anchor = call_start(&call);
    assert_eq!(anchor, Some(utc("2025-10-24T09:21:10.702Z")));
    let anchor = anchor.unwrap_or_else(Utc::now);
    assert_eq!(extract(&call, anchor, Berlin), Ok(None));
    // the same call as it arrives inside a call_analyzed webhook
    let webhook = json!({"event": "call_analyzed", "call": call});
    assert_eq!(extract(&webhook["call"], anchor, Berlin), Ok(None));
}

#[test]
fn the_fixture_with_its_tool_call_arguments_books_today_at_16() {
    // The caller asked for "heute", "Sechzehn Uhr"; the tool call carried German keys.
    let mut call = fixture();
    call["collected_dynamic_variables"]["datum"] = json!("heute");
    call["collected_dynamic_variables"]["uhrzeit"] = json!("16:00");
    call["collected_dynamic_variables"]["dienstleistung"] = json!("Herrenhaarschnitt");
    call["collected_dynamic_variables"]["name"] = json!("Hans Robert");
    let anchor = call_start(&call).unwrap_or_else(Utc::now);
    let found = extract(&call, anchor, Berlin);
    let Ok(Some(found)) = found else {
        panic!("expected a request, got {found:?}")
    };
    assert_eq!(found.start, utc("2025-10-24T14:00:00Z"));
    assert_eq!(found.start_local.to_string(), "2025-10-24 16:00:00");
    assert_eq!(found.service_name.as_deref(), Some("Herrenhaarschnitt"));
    assert_eq!(found.customer_name.as_deref(), Some("Hans Robert"));
    assert_eq!(found.date_field, "collected_dynamic_variables.datum");
    assert_eq!(found.time_field, "collected_dynamic_variables.uhrzeit");
    // The model once invented the year 2023 for this call's date: refused, not booked.
    call["collected_dynamic_variables"]["datum"] = json!("04.10.2023");
    let e = extract(&call, anchor, Berlin).err();
    let e = e.unwrap_or_else(|| panic!("an invented past year must be refused"));
    assert_eq!(e.field, "collected_dynamic_variables.datum");
    assert_eq!(
        e.problem,
        "is in the past (call started 2025-10-24 11:21 CEST, asked for 2023-10-04 16:00)"
    );
}

#[test]
fn analysis_combined_value_with_all_details() {
    let call = analysed(json!({
        "appointment_made": true,
        "appointment_date_time": "2026-06-20 14:00",
        "caller_full_name": " Erika Mustermann ",
        "caller_phone": "0151123456",
        "email": "erika@example.org",
        "service_name": "Damenhaarschnitt",
    }));
    assert_eq!(
        request(&call),
        AppointmentRequest {
            start_local: NaiveDate::from_ymd_opt(2026, 6, 20)
                .and_then(|d| d.and_hms_opt(14, 0, 0))
                .unwrap_or_default(),
            start: utc("2026-06-20T12:00:00Z"),
            service_name: Some("Damenhaarschnitt".into()),
            customer_name: Some("Erika Mustermann".into()),
            date_field: "call_analysis.custom_analysis_data.appointment_date_time".into(),
            time_field: "call_analysis.custom_analysis_data.appointment_date_time".into(),
        }
    );
}

#[test]
fn analysis_split_and_german_keys() {
    let found = request(&analysed(
        json!({"appointment_date": "20.06.2026", "appointment_time": "9 Uhr 45"}),
    ));
    assert_eq!(found.start, utc("2026-06-20T07:45:00Z"));
    let found = request(&analysed(
        json!({"datum": "morgen", "uhrzeit": "14 Uhr", "dienstleistung": "Bart"}),
    ));
    assert_eq!(found.start, utc("2026-06-11T12:00:00Z"));
    assert_eq!(found.service_name.as_deref(), Some("Bart"));
    assert_eq!(found.date_field, "call_analysis.custom_analysis_data.datum");
}

#[test]
fn combined_with_offset_is_taken_as_the_instant() {
    let found = request(&analysed(
        json!({"appointment_date_time": "2026-06-20T14:00:00Z"}),
    ));
    assert_eq!(found.start, utc("2026-06-20T14:00:00Z"));
    assert_eq!(found.start_local.to_string(), "2026-06-20 16:00:00");
}

#[test]
fn php_empty_array_falls_through_to_collected_variables() {
    let mut call = collected(json!({"appointment_date": "Dienstag", "appointment_time": "10:00"}));
    call["call_analysis"] = json!({"custom_analysis_data": []});
    let found = request(&call);
    assert_eq!(found.start, utc("2026-06-16T08:00:00Z"));
    assert_eq!(
        found.date_field,
        "collected_dynamic_variables.appointment_date"
    );
}

#[test]
fn analysis_wins_over_collected_and_top_level() {
    let mut call =
        analysed(json!({"appointment_date_time": "2026-06-20 14:00", "caller_full_name": "A"}));
    call["collected_dynamic_variables"] =
        json!({"datum": "morgen", "uhrzeit": "09:00", "name": "B"});
    call["appointment_date"] = json!("2026-07-01");
    call["appointment_time"] = json!("11:00");
    let found = request(&call);
    assert_eq!(found.start, utc("2026-06-20T12:00:00Z"));
    assert_eq!(found.customer_name.as_deref(), Some("A"));
    // without the analysis the flow's values count, then the top level
    call["call_analysis"] = json!({"custom_analysis_data": {}});
    assert_eq!(request(&call).start, utc("2026-06-11T07:00:00Z"));
    call["collected_dynamic_variables"] = json!({});
    let found = request(&call);
    assert_eq!(found.start, utc("2026-07-01T09:00:00Z"));
    assert_eq!(
        (found.date_field.as_str(), found.time_field.as_str()),
        ("appointment_date", "appointment_time")
    );
}

#[test]
fn a_date_never_pairs_with_a_time_from_another_source() {
    let mut call = analysed(json!({"appointment_date": "2026-06-20"}));
    call["collected_dynamic_variables"] = json!({"uhrzeit": "14:00"});
    assert_eq!(
        failure(&call),
        err(
            "call_analysis.custom_analysis_data.appointment_time",
            "",
            "is missing; a booking needs an exact time"
        )
    );
    let call = collected(json!({"uhrzeit": "14:00"}));
    assert_eq!(
        failure(&call),
        err(
            "collected_dynamic_variables.appointment_date",
            "",
            "is missing; a booking needs an exact date"
        )
    );
}

#[test]
fn details_fall_back_to_other_sources() {
    let mut call = analysed(json!({"caller_full_name": "Erika"}));
    call["collected_dynamic_variables"] =
        json!({"datum": "morgen", "uhrzeit": "10:00", "service_name": "Schnitt"});
    let found = request(&call);
    assert_eq!(found.customer_name.as_deref(), Some("Erika"));
    assert_eq!(found.service_name.as_deref(), Some("Schnitt"));
}

#[test]
fn unusable_details_are_dropped_not_invented() {
    let call = analysed(json!({
        "appointment_date_time": "2026-06-20 14:00",
        "caller_phone": "anonymous",
        "caller_full_name": "{{customer_name}}",
        "email": "keine",
        "service_name": "",
    }));
    let found = request(&call);
    assert_eq!(found.customer_name, None);
    assert_eq!(found.service_name, None);
    // the top level's generic keys are Retell's, not the caller's
    let call = json!({"appointment_date": "2026-06-20", "appointment_time": "14:00", "name": "x"});
    assert_eq!(request(&call).customer_name, None);
}

#[test]
fn no_date_or_time_is_no_request() {
    assert_eq!(
        extract(&json!({"call_id": "c1"}), anchor(), Berlin),
        Ok(None)
    );
    assert_eq!(extract(&analysed(json!([])), anchor(), Berlin), Ok(None));
    assert_eq!(
        extract(
            &analysed(json!({"caller_full_name": "Erika"})),
            anchor(),
            Berlin
        ),
        Ok(None)
    );
    // analysis models write "" into string fields on calls without an appointment
    let blank =
        analysed(json!({"appointment_date_time": "", "appointment_date": " ", "uhrzeit": null}));
    assert_eq!(extract(&blank, anchor(), Berlin), Ok(None));
}

#[test]
fn appointment_made_false_wins_over_partial_data() {
    let mut call = analysed(json!({"appointment_made": false, "appointment_date": "morgen"}));
    call["collected_dynamic_variables"] = json!({"datum": "ab 14 Uhr"});
    assert_eq!(extract(&call, anchor(), Berlin), Ok(None));
    call["call_analysis"]["custom_analysis_data"]["appointment_made"] = json!("False");
    assert_eq!(extract(&call, anchor(), Berlin), Ok(None));
}

#[test]
fn appointment_made_true_without_a_slot_is_an_error() {
    assert_eq!(
        failure(&analysed(
            json!({"appointment_made": true, "appointment_date_time": ""})
        )),
        err(
            "call_analysis.custom_analysis_data.appointment_date_time",
            "",
            "is missing although appointment_made is true"
        )
    );
}

#[test]
fn a_blank_partner_is_reported_by_name() {
    let call = collected(json!({"datum": "", "uhrzeit": "14:00"}));
    assert_eq!(
        failure(&call),
        err("collected_dynamic_variables.datum", "", "is empty")
    );
}

#[test]
fn vague_values_name_their_field() {
    let cases = [
        (
            "appointment_time",
            "vormittags",
            "is vague; a booking needs an exact time",
        ),
        (
            "appointment_time",
            "ab 14 Uhr",
            "is vague; a booking needs an exact time",
        ),
        (
            "appointment_time",
            "so gegen 15",
            "is vague; a booking needs an exact time",
        ),
        (
            "appointment_time",
            "ca. 14 Uhr",
            "is vague; a booking needs an exact time",
        ),
        (
            "appointment_time",
            "zwischen 14 und 15 Uhr",
            "is vague; a booking needs an exact time",
        ),
        (
            "appointment_date",
            "irgendwann",
            "is vague; a booking needs an exact date",
        ),
        (
            "appointment_date",
            "{{current_date}}",
            "is an unfilled template",
        ),
        (
            "appointment_time",
            "halb drei",
            "is vague; a booking needs an exact time",
        ),
        (
            "appointment_time",
            "24:00",
            "24:00 is not a time of day (00:00 belongs to the next day)",
        ),
        (
            "appointment_date",
            "Montag, den 11. November",
            "names \"montag\" but 2026-11-11 is a Wednesday",
        ),
    ];
    for (key, value, problem) in cases {
        let mut data = json!({"appointment_date": "morgen", "appointment_time": "14:00"});
        data[key] = json!(value);
        let field = format!("call_analysis.custom_analysis_data.{key}");
        assert_eq!(
            failure(&analysed(data)),
            err(&field, value, problem),
            "{value}"
        );
    }
}

#[test]
fn weekday_contradiction_is_refused() {
    // 2026-11-11 is a Wednesday, so "Dienstag" next to it is a mishearing
    let call = collected(json!({"datum": "Dienstag, den 11. November", "uhrzeit": "10:00"}));
    assert_eq!(
        failure(&call).problem,
        "names \"dienstag\" but 2026-11-11 is a Wednesday"
    );
}

#[test]
fn vague_combined_and_template_values() {
    let e = failure(&analysed(
        json!({"appointment_date_time": "morgen nachmittag"}),
    ));
    assert_eq!(
        e.problem,
        "is vague; a booking needs an exact date and time"
    );
    let e = failure(&analysed(
        json!({"appointment_date_time": "{{current_date}} 14:00"}),
    ));
    assert_eq!(e.problem, "is an unfilled template");
    let e = failure(&analysed(json!({"appointment_date_time": "2026-06-20"})));
    assert_eq!(
        e.problem,
        "has a date but no time; a booking needs an exact time"
    );
}

#[test]
fn non_text_values_are_refused() {
    let e = failure(&collected(json!({"datum": "morgen", "uhrzeit": 14})));
    assert_eq!(
        e,
        err("collected_dynamic_variables.uhrzeit", "14", "is not text")
    );
}

#[test]
fn error_display_names_field_value_and_problem() {
    let e = err(
        "collected_dynamic_variables.uhrzeit",
        "ab 14 Uhr",
        "is vague; a booking needs an exact time",
    );
    assert_eq!(
        e.to_string(),
        "collected_dynamic_variables.uhrzeit = \"ab 14 Uhr\": is vague; a booking needs an exact time"
    );
}
