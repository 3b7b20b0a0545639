//! Cal.com's wire shapes: success payloads into our types, error answers into
//! [`BookingError`] (with the wait Cal.com asked for, when it said one).

use std::collections::BTreeMap;
use std::time::Duration;

use askpro_actors::booking::{Booking, BookingError, Slots};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// Longest error text we keep from a body that is not Cal.com's error shape (an HTML page
/// from a proxy, say): enough to recognise it, short enough for a log line.
const MAX_RAW_CHARS: usize = 300;
/// `X-RateLimit-Reset` values above this are unix timestamps rather than seconds to wait.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// Maps a non-2xx answer: 408, 429 and 5xx are transient, other 4xx permanent.
pub(super) fn error_from_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> BookingError {
    let (code, message) = error_text(status, body);
    let status_code = status.as_u16();
    // 408: the server gave up waiting for our request, so it acted on nothing; try later.
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        // A rate-limit reset only means "wait" on a 429; every answer carries one, and a 5xx
        // says nothing about the budget. `Retry-After` counts on both (503 may send it).
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS => retry_after(headers, now),
            _ => headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now)),
        };
        return BookingError::Transient {
            reason: format!("{status_code} {code}: {message}"),
            retry_after,
            status: Some(status_code),
        };
    }
    if status.is_client_error() {
        return BookingError::Permanent {
            status: status_code,
            code,
            message,
        };
    }
    // 1xx or 3xx: not an answer to what we asked; a create may or may not have happened.
    BookingError::Unknown {
        reason: format!("unexpected status {status_code}: {message}"),
    }
}

/// `(error.code, error.message)` from `{"status":"error","error":{...}}`, NestJS's bare
/// `{"statusCode","message","error"}`, or the raw body.
fn error_text(status: StatusCode, body: &[u8]) -> (String, String) {
    let fallback_code = format!("Http{}", status.as_u16());
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let raw = String::from_utf8_lossy(body);
        let raw = raw.trim();
        let message = if raw.is_empty() {
            status.canonical_reason().unwrap_or("no body").to_owned()
        } else {
            truncate(raw, MAX_RAW_CHARS)
        };
        return (fallback_code, message);
    };
    if let Some(error) = value.get("error").filter(|e| e.is_object()) {
        let code = error.get("code").and_then(Value::as_str);
        let message = error.get("message").map(message_text);
        return (
            code.map_or(fallback_code, str::to_owned),
            message.unwrap_or_else(|| truncate(&error.to_string(), MAX_RAW_CHARS)),
        );
    }
    if let Some(message) = value.get("message") {
        let code = value.get("error").and_then(Value::as_str);
        let code = code.map_or(fallback_code, |c| c.replace(' ', ""));
        return (code, message_text(message));
    }
    (fallback_code, truncate(&value.to_string(), MAX_RAW_CHARS))
}

/// Validation errors carry a list of messages; everything else a string.
fn message_text(message: &Value) -> String {
    let text = match message {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    truncate(&text, MAX_RAW_CHARS * 2)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The wait Cal.com asked for: `Retry-After`, else any `X-RateLimit-Reset*` header.
pub(super) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        if let Some(wait) = parse_retry_after(value, now) {
            return Some(wait);
        }
    }
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ratelimit-reset"))
        .find_map(|(_, value)| parse_rate_limit_reset(value.to_str().ok()?, now))
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 9110 §10.2.3); a past date means now.
pub(super) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// `X-RateLimit-Reset`: seconds to wait, or (some APIs) the unix time of the reset.
pub(super) fn parse_rate_limit_reset(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let seconds = match value.parse::<u64>() {
        Ok(seconds) => seconds as f64,
        Err(_) => value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)?,
    };
    if seconds >= EPOCH_THRESHOLD as f64 {
        let wait = seconds - now.timestamp() as f64;
        return Some(Duration::from_secs_f64(wait.max(0.0)));
    }
    Some(Duration::from_secs_f64(seconds))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBooking {
    id: i64,
    uid: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    status: String,
    #[serde(default)]
    event_type_id: Option<i64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    rescheduled_to_uid: Option<String>,
}

/// A booking from Cal.com's `data`; metadata values that are not strings keep their JSON text.
pub(super) fn parse_booking(data: &Value) -> Result<Booking, String> {
    let wire =
        WireBooking::deserialize(data).map_err(|err| format!("unreadable booking: {err}"))?;
    let metadata = wire
        .metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(s) => (key, s),
            other => (key, other.to_string()),
        })
        .collect();
    Ok(Booking {
        id: wire.id,
        uid: wire.uid,
        start: wire.start,
        end: wire.end,
        status: wire.status.to_ascii_lowercase(),
        event_type_id: wire.event_type_id,
        metadata,
        rescheduled_to_uid: wire.rescheduled_to_uid,
    })
}

/// `{"YYYY-MM-DD": [{"start": "<ISO with offset>"}, ...]}` into sorted UTC instants.
pub(super) fn parse_slots(data: &Value) -> Result<Slots, BookingError> {
    let unreadable = |what: String| BookingError::Unknown {
        reason: format!("unreadable slots: {what}"),
    };
    let days = match data {
        Value::Object(days) => days,
        Value::Null => return Ok(Vec::new()),
        other => return Err(unreadable(format!("expected an object, got {other}"))),
    };
    let mut slots = Vec::new();
    for (day, entries) in days {
        let entries = entries
            .as_array()
            .ok_or_else(|| unreadable(format!("day {day} is not a list")))?;
        for entry in entries {
            // `{"start": ..}` by default, `{"start", "end"}` with format=range.
            let start = entry
                .get("start")
                .unwrap_or(entry)
                .as_str()
                .ok_or_else(|| unreadable(format!("a slot of {day} has no start")))?;
            let start = DateTime::parse_from_rfc3339(start)
                .map_err(|err| unreadable(format!("slot start `{start}`: {err}")))?;
            slots.push(start.with_timezone(&Utc));
        }
    }
    slots.sort_unstable();
    slots.dedup();
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        "2030-01-07T09:00:00Z".parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(
            parse_retry_after("42", now()),
            Some(Duration::from_secs(42))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        let date = "Mon, 07 Jan 2030 09:01:30 GMT";
        assert_eq!(
            parse_retry_after(date, now()),
            Some(Duration::from_secs(90))
        );
        let past = "Mon, 07 Jan 2030 08:00:00 GMT";
        assert_eq!(parse_retry_after(past, now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
    }

    #[test]
    fn rate_limit_reset_reads_deltas_and_unix_times() {
        assert_eq!(
            parse_rate_limit_reset("17", now()),
            Some(Duration::from_secs(17))
        );
        assert_eq!(
            parse_rate_limit_reset("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        let epoch = (now().timestamp() + 30).to_string();
        assert_eq!(
            parse_rate_limit_reset(&epoch, now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_rate_limit_reset("x", now()), None);
    }

    #[test]
    fn retry_after_prefers_the_header_then_rate_limit_reset() {
        let h = headers(&[("retry-after", "5"), ("x-ratelimit-reset", "50")]);
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(5)));
        let h = headers(&[("x-ratelimit-reset-default", "12")]);
        assert_eq!(retry_after(&h, now()), Some(Duration::from_secs(12)));
        assert_eq!(retry_after(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn cal_com_error_shape_becomes_permanent_with_code_and_message() {
        let body = json!({"status": "error", "timestamp": "2030-01-07T09:00:00Z",
            "path": "/v2/bookings",
            "error": {"code": "BadRequestException", "message": "no_available_users_found_error"}});
        let err = error_from_response(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body.to_string().as_bytes(),
            now(),
        );
        assert_eq!(
            err,
            BookingError::Permanent {
                status: 400,
                code: "BadRequestException".into(),
                message: "no_available_users_found_error".into(),
            }
        );
        assert!(!err.trips_breaker());
    }

    #[test]
    fn nest_validation_errors_join_their_messages() {
        let body = br#"{"statusCode":400,"message":["start must be ISO","name missing"],"error":"Bad Request"}"#;
        let err = error_from_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), body, now());
        assert!(
            matches!(err, BookingError::Permanent { ref code, ref message, .. }
            if code == "BadRequest" && message == "start must be ISO; name missing"),
            "{err:?}"
        );
    }

    #[test]
    fn a_raw_body_is_kept_truncated() {
        let body = "x".repeat(1000);
        let err = error_from_response(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            body.as_bytes(),
            now(),
        );
        let BookingError::Permanent {
            status,
            code,
            message,
        } = err
        else {
            panic!("expected permanent, got {err:?}");
        };
        assert_eq!((status, code.as_str()), (404, "Http404"));
        assert_eq!(message.chars().count(), MAX_RAW_CHARS + 1);
        let err = error_from_response(StatusCode::CONFLICT, &HeaderMap::new(), b"", now());
        assert!(err.to_string().contains("Conflict"), "{err}");
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient_with_their_wait() {
        let h = headers(&[("retry-after", "7")]);
        let err = error_from_response(StatusCode::TOO_MANY_REQUESTS, &h, b"{}", now());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(matches!(
            err,
            BookingError::Transient {
                status: Some(429),
                ..
            }
        ));
        assert!(err.trips_breaker());
        let err = error_from_response(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>", now());
        assert!(matches!(
            err,
            BookingError::Transient {
                status: Some(502),
                retry_after: None,
                ..
            }
        ));
        let err = error_from_response(StatusCode::FOUND, &HeaderMap::new(), b"", now());
        assert!(matches!(err, BookingError::Unknown { .. }));
    }

    #[test]
    fn bookings_parse_with_offsets_and_odd_metadata() {
        let data = json!({"id": 3, "uid": "u3", "title": "t",
            "start": "2030-01-07T10:00:00.000+01:00", "end": "2030-01-07T09:30:00.000Z",
            "status": "ACCEPTED", "eventTypeId": 7,
            "metadata": {"askpro_key": "k", "n": 5}, "rescheduledToUid": "u4"});
        let booking = parse_booking(&data).unwrap();
        assert_eq!(booking.start, now());
        assert_eq!(booking.status, "accepted");
        assert_eq!(booking.idempotency_key(), Some("k"));
        assert_eq!(booking.metadata["n"], "5");
        assert_eq!(booking.rescheduled_to_uid.as_deref(), Some("u4"));
        assert!(parse_booking(&json!({"id": 1})).is_err());
        let bare = json!({"id": 1, "uid": "u", "start": "2030-01-07T09:00:00Z",
            "end": "2030-01-07T09:30:00Z", "status": "accepted", "metadata": null});
        assert!(parse_booking(&bare).unwrap().metadata.is_empty());
    }

    #[test]
    fn slots_parse_into_sorted_utc_instants() {
        let data = json!({
            "2030-01-08": [{"start": "2030-01-08T09:00:00.000+01:00"}],
            "2030-01-07": [{"start": "2030-01-07T10:00:00.000+01:00", "end": "x"},
                           {"start": "2030-01-07T09:30:00.000+01:00"}],
        });
        let slots = parse_slots(&data).unwrap();
        let expected: Vec<DateTime<Utc>> = [
            "2030-01-07T08:30:00Z",
            "2030-01-07T09:00:00Z",
            "2030-01-08T08:00:00Z",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(slots, expected);
        assert!(parse_slots(&json!({})).unwrap().is_empty());
        assert!(parse_slots(&json!({"2030-01-07": [{"start": "noon"}]})).is_err());
    }
}
