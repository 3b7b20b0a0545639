//! The fake's `/v2` endpoints, answering in Cal.com's envelopes:
//! `{"status":"success","data":..}` and `{"status":"error","error":{"code","message"}}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::state::{FakeAttendee, FakeBooking, FakeHost, Ledger, Shared};
use crate::calcom::metadata_violation;

const DEFAULT_LENGTH_MINUTES: u32 = 30;
const DEFAULT_TAKE: usize = 100;
const MAX_TAKE: usize = 250;

/// An error answer in Cal.com's shape.
#[derive(Debug)]
pub(crate) struct FakeError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl FakeError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for FakeError {
    fn into_response(self) -> Response {
        let body = json!({
            "status": "error",
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "error": {"code": self.code, "message": self.message},
        });
        (self.status, Json(body)).into_response()
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> FakeError {
    FakeError::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

fn not_found(uid: &str) -> FakeError {
    FakeError::new(
        StatusCode::NOT_FOUND,
        "NotFoundException",
        format!("booking with uid={uid} was not found"),
    )
}

pub(super) fn success(status: StatusCode, data: impl Serialize) -> Response {
    (status, Json(json!({"status": "success", "data": data}))).into_response()
}

pub(super) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(super) fn params(query: Params) -> Result<HashMap<String, String>, FakeError> {
    query
        .map(|Query(q)| q)
        .map_err(|err| bad_request(format!("invalid query: {err}")))
}

pub(super) fn optional_parsed<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, FakeError> {
    q.get(name)
        .map(|v| v.trim().parse::<T>())
        .transpose()
        .map_err(|_| bad_request(format!("{name} must be a non-negative integer")))
}

pub(super) fn parse_instant(text: &str, name: &str) -> Result<DateTime<Utc>, FakeError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            bad_request(format!(
                "{name} must be an ISO 8601 date-time, got `{text}`"
            ))
        })
}

pub(super) fn body_object(body: &Bytes, required: bool) -> Result<Map<String, Value>, FakeError> {
    if body.is_empty() && !required {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(bad_request("the body must be a JSON object")),
        Err(err) => Err(bad_request(format!("invalid JSON body: {err}"))),
    }
}

fn optional_string(body: &Map<String, Value>, name: &str) -> Result<Option<String>, FakeError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_request(format!("{name} must be a string"))),
    }
}

/// `POST /v2/bookings`.
pub(super) async fn create_booking(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, FakeError> {
    let body = body_object(&body, true)?;
    let start = parse_instant(
        body.get("start")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request("start is required (ISO 8601, UTC)"))?,
        "start",
    )?;
    let event_type_id = body
        .get("eventTypeId")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad_request("eventTypeId is required (an integer)"))?;
    let attendee = attendee(body.get("attendee"))?;
    let duration = match body.get("lengthInMinutes") {
        None | Some(Value::Null) => DEFAULT_LENGTH_MINUTES,
        Some(value) => value
            .as_u64()
            .filter(|m| (1..=1440).contains(m))
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| bad_request("lengthInMinutes must be an integer in 1..=1440"))?,
    };
    let metadata = metadata(body.get("metadata"))?;
    let (booking, hang) = {
        let mut ledger = shared.ledger();
        refuse_double_booking(ledger.bookings(), event_type_id, start, None)?;
        refuse_held(&ledger, event_type_id, start, duration)?;
        let (id, uid) = ledger.next_identity();
        let booking = FakeBooking {
            id,
            uid,
            title: format!("Appointment between Fake Host and {}", attendee.name),
            start,
            end: start + Duration::minutes(i64::from(duration)),
            duration,
            event_type_id,
            status: "accepted".into(),
            attendees: vec![attendee],
            hosts: vec![FakeHost::for_event_type(event_type_id)],
            metadata,
            created_at: Utc::now(),
            cancellation_reason: None,
            rescheduling_reason: None,
            rescheduled_from_uid: None,
            rescheduled_to_uid: None,
        };
        ledger.bookings_mut().push(booking.clone());
        (booking, ledger.take_hang())
    };
    tracing::debug!(uid = %booking.uid, event_type_id, start = %booking.start, "fake cal.com booked");
    if let Some(wait) = hang {
        tracing::info!(uid = %booking.uid, hang_ms = wait.as_millis() as u64, "fake cal.com stalls after committing");
        shared.pause(wait).await;
    }
    Ok(success(StatusCode::CREATED, booking))
}

/// Cal.com's unique index: one accepted booking per host and start.
fn refuse_double_booking(
    bookings: &[FakeBooking],
    event_type_id: i64,
    start: DateTime<Utc>,
    except_uid: Option<&str>,
) -> Result<(), FakeError> {
    let clash = bookings.iter().any(|b| {
        b.is_active()
            && b.event_type_id == event_type_id
            && b.start == start
            && Some(b.uid.as_str()) != except_uid
    });
    if clash {
        return Err(FakeError::new(
            StatusCode::CONFLICT,
            "ConflictException",
            format!("the host of event type {event_type_id} already has a booking at {start}"),
        ));
    }
    Ok(())
}

/// A live hold by anyone (a booking request cannot name its hold) covers the new booking.
fn refuse_held(
    ledger: &Ledger<'_>,
    event_type_id: i64,
    start: DateTime<Utc>,
    duration: u32,
) -> Result<(), FakeError> {
    let end = start + Duration::minutes(i64::from(duration));
    match ledger.held(event_type_id, start, end, Utc::now()) {
        Some(hold) => Err(FakeError::new(
            StatusCode::CONFLICT,
            "reserved_slot_not_first_in_line",
            format!(
                "the slot at {start} is reserved (reservation {}) until {}",
                hold.uid, hold.until
            ),
        )),
        None => Ok(()),
    }
}

fn attendee(value: Option<&Value>) -> Result<FakeAttendee, FakeError> {
    let Some(Value::Object(fields)) = value else {
        return Err(bad_request("attendee is required (an object)"));
    };
    let name = optional_string(fields, "name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| bad_request("attendee.name is required"))?;
    let time_zone = optional_string(fields, "timeZone")?
        .ok_or_else(|| bad_request("attendee.timeZone is required"))?;
    if time_zone.parse::<Tz>().is_err() {
        return Err(bad_request(format!(
            "attendee.timeZone `{time_zone}` is not an IANA time zone"
        )));
    }
    let email = optional_string(fields, "email")?;
    let phone_number = optional_string(fields, "phoneNumber")?;
    if email.is_none() && phone_number.is_none() {
        return Err(bad_request("attendee needs an email or a phoneNumber"));
    }
    Ok(FakeAttendee {
        name,
        email,
        phone_number,
        time_zone,
        language: optional_string(fields, "language")?,
    })
}

fn metadata(value: Option<&Value>) -> Result<BTreeMap<String, String>, FakeError> {
    let fields = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(bad_request("metadata must be an object")),
    };
    let mut metadata = BTreeMap::new();
    for (key, value) in fields {
        let Value::String(value) = value else {
            return Err(bad_request(format!(
                "metadata value of `{key}` must be a string"
            )));
        };
        metadata.insert(key.clone(), value.clone());
    }
    let pairs = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    match metadata_violation(pairs) {
        Some(violation) => Err(bad_request(violation)),
        None => Ok(metadata),
    }
}

/// `GET /v2/bookings`: every booking matching the given filters, by start, paginated.
pub(super) async fn list_bookings(
    State(shared): State<Arc<Shared>>,
    query: Params,
) -> Result<Response, FakeError> {
    let q = params(query)?;
    let event_type_id: Option<i64> = optional_parsed(&q, "eventTypeId")?;
    let after_start = q
        .get("afterStart")
        .map(|t| parse_instant(t, "afterStart"))
        .transpose()?;
    let before_end = q
        .get("beforeEnd")
        .map(|t| parse_instant(t, "beforeEnd"))
        .transpose()?;
    let email = q.get("attendeeEmail").map(|e| e.trim().to_lowercase());
    let take = optional_parsed(&q, "take")?.unwrap_or(DEFAULT_TAKE);
    if !(1..=MAX_TAKE).contains(&take) {
        return Err(bad_request(format!(
            "take must be between 1 and {MAX_TAKE}"
        )));
    }
    let skip: usize = optional_parsed(&q, "skip")?.unwrap_or(0);
    let mut matching: Vec<FakeBooking> = shared
        .ledger()
        .bookings()
        .iter()
        .filter(|b| event_type_id.is_none_or(|id| b.event_type_id == id))
        .filter(|b| after_start.is_none_or(|at| b.start >= at))
        .filter(|b| before_end.is_none_or(|at| b.end <= at))
        .filter(|b| {
            email.as_deref().is_none_or(|email| {
                b.attendees
                    .iter()
                    .any(|a| a.email.as_deref().map(str::to_lowercase).as_deref() == Some(email))
            })
        })
        .cloned()
        .collect();
    matching.sort_by_key(|b| (b.start, b.id));
    let total = matching.len();
    let page: Vec<FakeBooking> = matching.into_iter().skip(skip).take(take).collect();
    let remaining = total.saturating_sub(skip.saturating_add(page.len()));
    let pagination = json!({
        "totalItems": total,
        "remainingItems": remaining,
        "returnedItems": page.len(),
        "itemsPerPage": take,
        "currentPage": skip / take + 1,
        "totalPages": total.div_ceil(take),
        "hasNextPage": remaining > 0,
        "hasPreviousPage": skip > 0,
    });
    let body = json!({"status": "success", "data": page, "pagination": pagination});
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `GET /v2/bookings/{uid}`.
pub(super) async fn get_booking(
    State(shared): State<Arc<Shared>>,
    Path(uid): Path<String>,
) -> Result<Response, FakeError> {
    let ledger = shared.ledger();
    let booking = ledger
        .bookings()
        .iter()
        .find(|b| b.uid == uid)
        .cloned()
        .ok_or_else(|| not_found(&uid))?;
    Ok(success(StatusCode::OK, booking))
}

/// `POST /v2/bookings/{uid}/cancel` with `{cancellationReason?}`.
pub(super) async fn cancel_booking(
    State(shared): State<Arc<Shared>>,
    Path(uid): Path<String>,
    body: Bytes,
) -> Result<Response, FakeError> {
    let body = body_object(&body, false)?;
    let reason = optional_string(&body, "cancellationReason")?;
    let mut ledger = shared.ledger();
    let booking = ledger
        .bookings_mut()
        .iter_mut()
        .find(|b| b.uid == uid)
        .ok_or_else(|| not_found(&uid))?;
    if !booking.is_active() {
        return Err(bad_request(format!(
            "booking with uid={uid} is already {}",
            booking.status
        )));
    }
    booking.status = "cancelled".into();
    booking.cancellation_reason = reason;
    Ok(success(StatusCode::OK, booking.clone()))
}

/// `POST /v2/bookings/{uid}/reschedule` with `{start, reschedulingReason?}`: a new booking
/// (new uid) replaces the old one, which is cancelled and points at its successor.
pub(super) async fn reschedule_booking(
    State(shared): State<Arc<Shared>>,
    Path(uid): Path<String>,
    body: Bytes,
) -> Result<Response, FakeError> {
    let body = body_object(&body, true)?;
    let start = optional_string(&body, "start")?
        .ok_or_else(|| bad_request("start is required (ISO 8601, UTC)"))?;
    let start = parse_instant(&start, "start")?;
    let reason = optional_string(&body, "reschedulingReason")?;
    let mut ledger = shared.ledger();
    let old = ledger
        .bookings()
        .iter()
        .find(|b| b.uid == uid)
        .cloned()
        .ok_or_else(|| not_found(&uid))?;
    if !old.is_active() {
        return Err(bad_request(format!(
            "booking with uid={uid} is {} and cannot be rescheduled",
            old.status
        )));
    }
    refuse_double_booking(ledger.bookings(), old.event_type_id, start, Some(&uid))?;
    refuse_held(&ledger, old.event_type_id, start, old.duration)?;
    let (id, new_uid) = ledger.next_identity();
    let new = FakeBooking {
        id,
        uid: new_uid.clone(),
        start,
        end: start + Duration::minutes(i64::from(old.duration)),
        created_at: Utc::now(),
        rescheduling_reason: reason,
        rescheduled_from_uid: Some(uid.clone()),
        ..old
    };
    for booking in ledger.bookings_mut().iter_mut().filter(|b| b.uid == uid) {
        booking.status = "cancelled".into();
        booking.rescheduled_to_uid = Some(new_uid.clone());
    }
    ledger.bookings_mut().push(new.clone());
    Ok(success(StatusCode::CREATED, new))
}
