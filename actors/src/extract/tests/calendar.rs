//! Whole-call tests about time: past slots, the branch zone's "today", year rollover, DST.

use chrono_tz::Europe::Berlin;
use serde_json::json;

use super::*;

#[test]
fn past_slots_blame_the_right_field() {
    // the call started at 10:00 Berlin time
    let e = failure(&collected(json!({"datum": "heute", "uhrzeit": "09:00"})));
    assert_eq!(e.field, "collected_dynamic_variables.uhrzeit");
    assert_eq!(
        e.problem,
        "is in the past (call started 2026-06-10 10:00 CEST, asked for 2026-06-10 09:00)"
    );
    let e = failure(&collected(
        json!({"datum": "2026-06-09", "uhrzeit": "15:00"}),
    ));
    assert_eq!(e.field, "collected_dynamic_variables.datum");
    let e = failure(&analysed(
        json!({"appointment_date_time": "2025-06-20 14:00"}),
    ));
    assert_eq!(
        e.field,
        "call_analysis.custom_analysis_data.appointment_date_time"
    );
    assert!(e.problem.starts_with("is in the past"), "{}", e.problem);
    let e = failure(&analysed(
        json!({"appointment_date_time": "2026-06-10T07:59:59Z"}),
    ));
    assert!(e.problem.starts_with("is in the past"), "{}", e.problem);
    // the call's own start, and later today, are fine
    assert_eq!(
        request(&collected(json!({"datum": "heute", "uhrzeit": "10:00"}))).start,
        anchor()
    );
    assert_eq!(
        request(&collected(json!({"datum": "heute", "uhrzeit": "18:30"}))).start,
        utc("2026-06-10T16:30:00Z")
    );
}

#[test]
fn today_is_the_branch_zone_day() {
    // 23:30 UTC on 10 June is already 11 June in Berlin
    let late = utc("2026-06-10T23:30:00Z");
    let call = collected(json!({"datum": "morgen", "uhrzeit": "10:00"}));
    let found = extract(&call, late, Berlin);
    assert_eq!(
        found.map(|r| r.map(|r| r.start)),
        Ok(Some(utc("2026-06-12T08:00:00Z")))
    );
    // in New York it is still 10 June
    let found = extract(&call, late, chrono_tz::America::New_York);
    assert_eq!(
        found.map(|r| r.map(|r| r.start)),
        Ok(Some(utc("2026-06-11T14:00:00Z")))
    );
}

#[test]
fn year_rollover_through_extract() {
    let late_november = utc("2026-11-25T09:00:00Z");
    let call = collected(json!({"datum": "11. November", "uhrzeit": "10 Uhr"}));
    let found = extract(&call, late_november, Berlin);
    assert_eq!(
        found.map(|r| r.map(|r| r.start)),
        Ok(Some(utc("2027-11-11T09:00:00Z")))
    );
    let december = utc("2026-12-15T09:00:00Z");
    let call = collected(json!({"datum": "20.01.", "uhrzeit": "10:00"}));
    let found = extract(&call, december, Berlin);
    assert_eq!(
        found.map(|r| r.map(|r| r.start)),
        Ok(Some(utc("2027-01-20T09:00:00Z")))
    );
}

#[test]
fn dst_through_extract() {
    let march = utc("2026-03-20T09:00:00Z");
    let at = |date: &str, time: &str| {
        let call = collected(json!({"datum": date, "uhrzeit": time}));
        extract(&call, march, Berlin).map(|r| r.map(|r| r.start))
    };
    assert_eq!(
        at("2026-03-29", "14:00"),
        Ok(Some(utc("2026-03-29T12:00:00Z")))
    );
    assert_eq!(
        at("2026-03-28", "14:00"),
        Ok(Some(utc("2026-03-28T13:00:00Z")))
    );
    assert_eq!(
        at("2026-10-25", "14:00"),
        Ok(Some(utc("2026-10-25T13:00:00Z")))
    );
    assert_eq!(
        at("2026-03-29", "02:30"),
        Err(err(
            "collected_dynamic_variables.uhrzeit",
            "02:30",
            "does not exist in Europe/Berlin (daylight saving change)"
        ))
    );
    let call = analysed(json!({"appointment_date_time": "2026-03-29 02:30"}));
    let e = extract(&call, march, Berlin).err().map(|e| e.field);
    assert_eq!(
        e.as_deref(),
        Some("call_analysis.custom_analysis_data.appointment_date_time")
    );
}
