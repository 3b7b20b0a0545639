//! The fake's slots: `GET /v2/slots` (free starts within the opening hours, minus bookings
//! and live holds) and `POST|DELETE /v2/slots/reservations` (holds, 5 minutes by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::handlers::{
    bad_request, body_object, optional_parsed, params, parse_instant, success, FakeError, Params,
};
use super::state::{FakeReservation, Ledger, Shared};

/// A longer slot search is refused rather than answered slowly.
const MAX_SLOT_RANGE_DAYS: i64 = 62;
/// Cal.com holds a slot this long unless asked otherwise.
const DEFAULT_HOLD_MINUTES: i64 = 5;
/// Cal.com refuses longer holds.
const MAX_HOLD_MINUTES: i64 = 10;

/// When the fake's host works, in the requested time zone (every day of the week).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    /// First slot starts at this hour.
    pub open_hour: u32,
    /// No slot ends after this hour.
    pub close_hour: u32,
    /// Slot length and step, in minutes.
    pub slot_minutes: u32,
}

impl Default for OpeningHours {
    fn default() -> Self {
        Self {
            open_hour: 9,
            close_hour: 17,
            slot_minutes: 30,
        }
    }
}

impl OpeningHours {
    /// Why these hours make no sense, if they do not.
    pub fn problem(&self) -> Option<String> {
        let ok = self.open_hour < self.close_hour
            && self.close_hour <= 24
            && (5..=240).contains(&self.slot_minutes);
        (!ok).then(|| {
            format!(
                "opening hours {}..{} with {}-minute slots: need open < close <= 24 and slots of 5..=240 minutes",
                self.open_hour, self.close_hour, self.slot_minutes
            )
        })
    }

    /// The slot starts of one local day, as instants (times a clock change skips or repeats
    /// are left out rather than guessed).
    fn starts(&self, date: NaiveDate, tz: Tz) -> Vec<DateTime<chrono_tz::Tz>> {
        let step = self.slot_minutes.max(1) as usize;
        let last = (self.close_hour * 60).saturating_sub(self.slot_minutes);
        (self.open_hour * 60..=last)
            .step_by(step)
            .filter_map(|minute| NaiveTime::from_hms_opt(minute / 60, minute % 60, 0))
            .filter_map(|time| tz.from_local_datetime(&date.and_time(time)).single())
            .collect()
    }
}

/// `GET /v2/slots?eventTypeId&start&end[&timeZone]`: free starts within the opening hours,
/// grouped by local date.
pub(super) async fn slots(
    State(shared): State<Arc<Shared>>,
    query: Params,
) -> Result<Response, FakeError> {
    let q = params(query)?;
    let event_type_id: i64 = optional_parsed(&q, "eventTypeId")?
        .ok_or_else(|| bad_request("eventTypeId is required"))?;
    let tz: Tz = match q.get("timeZone") {
        Some(name) => name
            .parse()
            .map_err(|_| bad_request(format!("unknown timeZone `{name}`")))?,
        None => Tz::UTC,
    };
    let start = range_bound(&q, "start", tz, false)?;
    let end = range_bound(&q, "end", tz, true)?;
    if end <= start {
        return Err(bad_request("end must be after start"));
    }
    if end - start > Duration::days(MAX_SLOT_RANGE_DAYS) {
        return Err(bad_request(format!(
            "the range may span at most {MAX_SLOT_RANGE_DAYS} days"
        )));
    }
    let hours = shared.hours();
    let length = Duration::minutes(i64::from(hours.slot_minutes));
    let ledger = shared.ledger();
    let now = Utc::now();
    let mut days: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let last = end.with_timezone(&tz).date_naive();
    let mut date = start.with_timezone(&tz).date_naive();
    while date <= last {
        for local in hours.starts(date, tz) {
            let at = local.with_timezone(&Utc);
            if at < start || at >= end || busy(&ledger, event_type_id, at, at + length, now) {
                continue;
            }
            let start_text = local.to_rfc3339_opts(SecondsFormat::Millis, false);
            days.entry(date.format("%Y-%m-%d").to_string())
                .or_default()
                .push(json!({ "start": start_text }));
        }
        let Some(next) = date.succ_opt() else { break };
        date = next;
    }
    Ok(success(StatusCode::OK, days))
}

/// Booked or held by anyone.
fn busy(
    ledger: &Ledger<'_>,
    event_type_id: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let booked = ledger
        .bookings()
        .iter()
        .filter(|b| b.is_active() && b.event_type_id == event_type_id)
        .any(|b| b.start < end && start < b.end);
    booked || ledger.held(event_type_id, start, end, now).is_some()
}

/// A range end: an instant, or a date meaning its local start (`end`: the day's end).
fn range_bound(
    q: &HashMap<String, String>,
    name: &str,
    tz: Tz,
    is_end: bool,
) -> Result<DateTime<Utc>, FakeError> {
    let text = q
        .get(name)
        .ok_or_else(|| bad_request(format!("{name} is required")))?;
    let Ok(date) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") else {
        return parse_instant(text, name);
    };
    let date = if is_end { date.succ_opt() } else { Some(date) };
    date.and_then(|d| {
        tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
    })
    .map(|at| at.with_timezone(&Utc))
    .ok_or_else(|| bad_request(format!("{name} `{text}` does not exist in {tz}")))
}

/// `POST /v2/slots/reservations` with `{eventTypeId, slotStart, slotDuration?,
/// reservationDuration?}`: holds a free slot; a booked or held one is 409.
pub(super) async fn reserve(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, FakeError> {
    let body = body_object(&body, true)?;
    let event_type_id = body
        .get("eventTypeId")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad_request("eventTypeId is required (an integer)"))?;
    let start = parse_instant(
        body.get("slotStart")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request("slotStart is required (ISO 8601, UTC)"))?,
        "slotStart",
    )?;
    let hours = shared.hours();
    let length = minutes(&body, "slotDuration", i64::from(hours.slot_minutes), 1440)?;
    let hold = minutes(
        &body,
        "reservationDuration",
        DEFAULT_HOLD_MINUTES,
        MAX_HOLD_MINUTES,
    )?;
    let end = start + Duration::minutes(length);
    let now = Utc::now();
    let mut ledger = shared.ledger();
    if busy(&ledger, event_type_id, start, end, now) {
        return Err(conflict(format!(
            "the slot at {start} is already booked or reserved"
        )));
    }
    ledger.reservations_mut().retain(|r| r.until > now);
    let reservation = FakeReservation {
        uid: ledger.next_reservation_uid(),
        event_type_id,
        start,
        end,
        until: now + Duration::minutes(hold),
    };
    ledger.reservations_mut().push(reservation.clone());
    let iso = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let data = json!({
        "eventTypeId": event_type_id,
        "slotStart": iso(reservation.start),
        "slotEnd": iso(reservation.end),
        "slotDuration": length,
        "reservationUid": reservation.uid,
        "reservationDuration": hold,
        "reservationUntil": iso(reservation.until),
    });
    Ok(success(StatusCode::CREATED, data))
}

fn conflict(message: String) -> FakeError {
    FakeError::new(StatusCode::CONFLICT, "ConflictException", message)
}

fn minutes(
    body: &serde_json::Map<String, Value>,
    name: &str,
    default: i64,
    max: i64,
) -> Result<i64, FakeError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_i64()
            .filter(|m| (1..=max).contains(m))
            .ok_or_else(|| bad_request(format!("{name} must be an integer in 1..={max}"))),
    }
}

/// `DELETE /v2/slots/reservations/{uid}`.
pub(super) async fn release(
    State(shared): State<Arc<Shared>>,
    Path(uid): Path<String>,
) -> Result<Response, FakeError> {
    let mut ledger = shared.ledger();
    let before = ledger.reservations_mut().len();
    ledger.reservations_mut().retain(|r| r.uid != uid);
    if ledger.reservations_mut().len() == before {
        return Err(FakeError::new(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            format!("reservation with uid={uid} was not found"),
        ));
    }
    Ok(success(StatusCode::OK, Value::Null))
}
