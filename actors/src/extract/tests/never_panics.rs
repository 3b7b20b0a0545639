//! The extractor reads signed but otherwise arbitrary bodies: whatever the call object, anchor
//! and zone, it answers `Ok` or `Err` and never panics (a panic costs the tenant actor a
//! restart and the event three attempts).

use chrono::{DateTime, Utc};
use chrono_tz::{Tz, TZ_VARIANTS};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::super::extract;

/// Values an agent or an attacker may put in a slot field: real phrasings, the calendar's
/// edges, chrono's limits and plain noise.
fn slot_text() -> impl Strategy<Value = String> {
    let edges = prop::sample::select(vec![
        "morgen 14 Uhr",
        "heute 16:00",
        "übermorgen um 9 Uhr 45",
        "am Dienstag um 10 Uhr",
        "31.12.9999 23:59",
        "9999-12-31T23:59:59+14:00",
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00Z",
        "1969-12-31 23:59",
        "+262143-12-31T23:59:59Z",
        "31.12.262143 23:59",
        "29.02.2100 10:00",
        "in 100000 Tagen um 10 Uhr",
        "2026-03-29 02:30",
        "Montag",
        "14 Uhr",
        "",
    ]);
    prop_oneof![
        3 => edges.prop_map(str::to_owned),
        2 => "[0-9 .:T+-]{0,24}",
        1 => ".{0,24}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => slot_text().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

/// A source object with the keys the extractor reads, plus some noise.
fn source() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "appointment_date_time",
        "appointment_date",
        "appointment_time",
        "datum",
        "uhrzeit",
        "appointment_made",
        "service_name",
        "caller_full_name",
        "caller_phone",
        "email",
        "other",
    ]);
    prop::collection::vec((keys, leaf()), 0..6).prop_map(|pairs| {
        let map: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Value::Object(map)
    })
}

fn call() -> impl Strategy<Value = Value> {
    (
        prop::option::of(source()),
        prop::option::of(source()),
        prop::option::of(source()),
        leaf(),
    )
        .prop_map(|(analysis, collected, top, start)| {
            let mut call = match top {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            if let Some(analysis) = analysis {
                call.insert(
                    "call_analysis".into(),
                    json!({ "custom_analysis_data": analysis }),
                );
            }
            if let Some(collected) = collected {
                call.insert("collected_dynamic_variables".into(), collected);
            }
            call.insert("start_timestamp".into(), start);
            Value::Object(call)
        })
}

/// Any instant chrono can hold, its two limits included.
fn anchor() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        1 => Just(DateTime::<Utc>::MAX_UTC),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        4 => (DateTime::<Utc>::MIN_UTC.timestamp_millis()..=DateTime::<Utc>::MAX_UTC.timestamp_millis())
            .prop_filter_map("outside chrono", DateTime::from_timestamp_millis),
        4 => (0_i64..4_102_444_800_000).prop_filter_map("outside chrono", DateTime::from_timestamp_millis),
    ]
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(TZ_VARIANTS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_call_anchor_and_zone_give_ok_or_err(call in call(), anchor in anchor(), zone in zone()) {
        let _ = extract(&call, anchor, zone);
    }
}

/// The finding: a signed `call_analyzed` whose `start_timestamp` sits near chrono's limit, in a
/// zone east of UTC, panicked the tenant actor.
#[test]
fn an_anchor_at_chronos_limit_is_an_error_not_a_panic() {
    let call = json!({"call_analysis": {"custom_analysis_data": {
        "appointment_made": true, "appointment_date_time": "morgen 14 Uhr"}}});
    let zone: Tz = "Pacific/Kiritimati".parse().unwrap();
    let error = extract(&call, DateTime::<Utc>::MAX_UTC, zone).unwrap_err();
    assert_eq!(error.field, "start_timestamp");
    assert!(
        error.problem.contains("outside the supported range"),
        "{error}"
    );
}
