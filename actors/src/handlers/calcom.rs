//! Cal.com `BOOKING_*`: close the loop on bookings we made (matched by uid, or by the
//! idempotency key we put in the booking's metadata) and record bookings made directly in
//! Cal.com.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{wire, Handled, HandlerCtx, HandlerError};
use crate::booking::{APPOINTMENT_METADATA_KEY, COMPANY_METADATA_KEY, IDEMPOTENCY_METADATA_KEY};
use crate::domain::{Appointment, AppointmentStatus};
use crate::ids::CompanyId;
use crate::phone;
use crate::record::StoredRecord;

/// The trigger, read first: triggers we do not act on are not read any further (their
/// payloads have other shapes).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    trigger_event: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    trigger_event: String,
    created_at: Option<String>,
    payload: Payload,
}

/// A booking webhook as the worker reads it. The ingress reads every body through
/// [`read_webhook`] too, so a body this cannot read is refused at the door (400).
pub struct BookingWebhook {
    body: Body,
    status: AppointmentStatus,
    uid: String,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
}

/// Reads a Cal.com webhook body (already parsed as JSON) the way the worker will: `Ok(None)`
/// for a trigger we store but do not act on.
pub fn read_webhook(json: &serde_json::Value) -> Result<Option<BookingWebhook>, String> {
    let head: Head = wire::read(json)?;
    let Some(status) = status_for(&head.trigger_event) else {
        return Ok(None);
    };
    let body: Body = wire::read(json)?;
    let Some(uid) = body.payload.uid.clone().filter(|u| !u.is_empty()) else {
        return Err(format!(
            "cal.com {} has no payload.uid; cannot match a booking",
            body.trigger_event
        ));
    };
    let start_at = parse_time("payload.startTime", body.payload.start_time.as_deref())?;
    let end_at = parse_time("payload.endTime", body.payload.end_time.as_deref())?;
    Ok(Some(BookingWebhook {
        body,
        status,
        uid,
        start_at,
        end_at,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    uid: Option<String>,
    title: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    reschedule_uid: Option<String>,
    #[serde(default)]
    attendees: Vec<Attendee>,
    /// Cal.com echoes the booking's metadata; ours carries the idempotency key.
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

impl Payload {
    fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }

    fn idempotency_key(&self) -> Option<&str> {
        self.metadata_str(IDEMPOTENCY_METADATA_KEY)
    }

    /// Whether askpro made this booking for another tenant. Tenants may share one Cal.com
    /// account, and then each of their webhook subscriptions sees every booking of it.
    fn made_for_other_tenant(&self, company_id: CompanyId) -> bool {
        self.metadata_str(COMPANY_METADATA_KEY)
            .is_some_and(|owner| owner != company_id.to_string())
    }

    /// Whether the booking's metadata, if it names an appointment, names `id`.
    fn names_appointment(&self, id: Uuid) -> bool {
        self.metadata_str(APPOINTMENT_METADATA_KEY)
            .is_none_or(|named| named == id.to_string())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attendee {
    name: Option<String>,
    email: Option<String>,
    // Two fields rather than an alias: a body carrying both must not be a duplicate-field error.
    phone: Option<String>,
    phone_number: Option<String>,
}

/// Cal.com's `createdAt` orders a booking's webhooks; without it we fall back to the time we
/// received the webhook.
pub fn calcom_version(created_at: Option<&str>, received_at: DateTime<Utc>) -> i64 {
    created_at
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| received_at.timestamp_millis())
}

pub(super) async fn handle(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
) -> Result<Handled, HandlerError> {
    let unreadable =
        |e: String| HandlerError::Permanent(format!("cal.com body does not parse: {e}"));
    let json: serde_json::Value =
        serde_json::from_slice(&record.value).map_err(|e| unreadable(e.to_string()))?;
    let Some(webhook) = read_webhook(&json).map_err(unreadable)? else {
        return Ok(Handled {
            note: Some("cal.com trigger is stored but not acted on".to_owned()),
        });
    };
    let BookingWebhook {
        body,
        status,
        uid,
        start_at,
        end_at,
    } = webhook;
    let company_id = record.meta.company_id;
    if body.payload.made_for_other_tenant(company_id) {
        // Neither adopted nor recorded as a direct booking: it is another tenant's.
        return Ok(Handled {
            note: Some(format!(
                "cal.com booking {uid} was made by askpro for another tenant sharing this cal.com account; not acted on"
            )),
        });
    }
    // Serialise with the booker (tenant actor and reconciler), so a sync never writes back a
    // copy of the appointment this webhook changed meanwhile.
    let _serial = match ctx.booker {
        Some(booker) => Some(booker.lock_tenant(company_id).await),
        None => None,
    };
    let (existing, key_free) = find_existing(ctx, record, &body, &uid).await?;
    let payload_key = key_free
        .then(|| body.payload.idempotency_key().map(str::to_owned))
        .flatten();
    let start_at = start_at.or(existing.as_ref().and_then(|a| a.start_at));
    let end_at = end_at.or(existing.as_ref().and_then(|a| a.end_at));
    let attendee = body.payload.attendees.into_iter().next();
    let attendee_phone = attendee
        .as_ref()
        .and_then(|a| a.phone.as_deref().or(a.phone_number.as_deref()))
        .and_then(|p| phone::normalize(p, ctx.default_region).ok());
    let now = ctx.clock.now();
    let mut row = Appointment {
        company_id,
        id: existing.as_ref().map(|a| a.id).unwrap_or_else(Uuid::now_v7),
        calcom_uid: Some(uid),
        branch_id: existing.as_ref().and_then(|a| a.branch_id),
        service_id: existing.as_ref().and_then(|a| a.service_id),
        customer_id: existing.as_ref().and_then(|a| a.customer_id),
        timezone: existing.as_ref().and_then(|a| a.timezone.clone()),
        idempotency_key: existing
            .as_ref()
            .and_then(|a| a.idempotency_key.clone())
            .or(payload_key),
        sync_attempts: existing.as_ref().map_or(0, |a| a.sync_attempts),
        last_error: None,
        created_at: existing.as_ref().map_or(now, |a| a.created_at),
        status,
        start_at,
        end_at,
        title: body
            .payload
            .title
            .or(existing.as_ref().and_then(|a| a.title.clone())),
        attendee_name: attendee.as_ref().and_then(|a| a.name.clone()),
        attendee_email: attendee.as_ref().and_then(|a| a.email.clone()),
        attendee_phone,
        rescheduled_to_uid: existing.as_ref().and_then(|a| a.rescheduled_to_uid.clone()),
        source_event: record.meta.event_id,
        version: calcom_version(body.created_at.as_deref(), record.meta.received_at),
        updated_at: now,
        // Cal.com cannot tell a caller's email from a branch's fallback: ours says which.
        contact_source: existing.as_ref().and_then(|a| a.contact_source),
    };
    // Ours, found by our key and not yet linked to a uid: Cal.com's word on whether the
    // booking exists beats our own bookkeeping writes (stamped with our clock, often later
    // than its `createdAt`), so this webhook always applies.
    if let Some(ours) = existing.as_ref().filter(|e| e.calcom_uid.is_none()) {
        row.version = row.version.max(ours.version + 1);
    }
    let applied = ctx.store.upsert_appointment(&row).await?;
    if body.trigger_event == "BOOKING_RESCHEDULED" {
        if let Some(original) = body.payload.reschedule_uid.as_deref() {
            supersede(ctx, record, original, &row).await?;
        }
    }
    Ok(Handled {
        note: (!applied).then(|| "a newer webhook of this booking was already applied".to_owned()),
    })
}

/// The appointment this webhook is about: by uid, else (unless a reschedule) the one we made
/// with the idempotency key in the booking's metadata, if it has no other uid yet. Also says
/// whether the payload's key is free to be stored on a new row (a reschedule's successor may
/// carry its original's metadata; the key stays with the original).
async fn find_existing(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
    body: &Body,
    uid: &str,
) -> Result<(Option<Appointment>, bool), HandlerError> {
    let company_id = record.meta.company_id;
    if let Some(found) = ctx.store.appointment_by_calcom_uid(company_id, uid).await? {
        return Ok((Some(found), false));
    }
    // A reschedule's successor may carry its original's metadata; the key stays with the
    // original. Every other trigger may find our row by key (a cancellation can arrive for a
    // booking whose create answer we never saw).
    let by_key = body.trigger_event != "BOOKING_RESCHEDULED";
    let Some(key) = body.payload.idempotency_key().filter(|_| by_key) else {
        return Ok((None, false));
    };
    match ctx.store.appointment_by_key(company_id, key).await? {
        Some(ours)
            if ours.calcom_uid.as_deref().is_none_or(|u| u == uid)
                && body.payload.names_appointment(ours.id) =>
        {
            Ok((Some(ours), false))
        }
        Some(_) => Ok((None, false)),
        None => Ok((None, true)),
    }
}

/// A reschedule creates a new booking: `payload.uid` is the new one and `rescheduleUid` the
/// original (Cal.com sets the new booking's `fromReschedule` to the original uid). The
/// original is closed and points at its successor; unknown originals become tombstones so a
/// late `BOOKING_CREATED` of the original cannot resurrect it.
async fn supersede(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
    original_uid: &str,
    successor: &Appointment,
) -> Result<(), HandlerError> {
    if successor.calcom_uid.as_deref() == Some(original_uid) {
        return Ok(());
    }
    let company_id = record.meta.company_id;
    let existing = ctx
        .store
        .appointment_by_calcom_uid(company_id, original_uid)
        .await?;
    let closed = Appointment {
        id: existing.as_ref().map(|a| a.id).unwrap_or_else(Uuid::now_v7),
        calcom_uid: Some(original_uid.to_owned()),
        service_id: existing.as_ref().and_then(|a| a.service_id),
        customer_id: existing.as_ref().and_then(|a| a.customer_id),
        idempotency_key: existing.as_ref().and_then(|a| a.idempotency_key.clone()),
        sync_attempts: existing.as_ref().map_or(0, |a| a.sync_attempts),
        created_at: existing
            .as_ref()
            .map_or(successor.created_at, |a| a.created_at),
        status: AppointmentStatus::Cancelled,
        start_at: existing.as_ref().and_then(|a| a.start_at),
        end_at: existing.as_ref().and_then(|a| a.end_at),
        title: existing.as_ref().and_then(|a| a.title.clone()),
        rescheduled_to_uid: successor.calcom_uid.clone(),
        // The original keeps what it knew; the successor's (often sparser) attendee data
        // must not overwrite it.
        branch_id: existing
            .as_ref()
            .and_then(|a| a.branch_id)
            .or(successor.branch_id),
        attendee_name: keep(&existing, |a| &a.attendee_name, &successor.attendee_name),
        attendee_email: keep(&existing, |a| &a.attendee_email, &successor.attendee_email),
        attendee_phone: keep(&existing, |a| &a.attendee_phone, &successor.attendee_phone),
        contact_source: existing
            .as_ref()
            .and_then(|a| a.contact_source)
            .or(successor.contact_source),
        ..successor.clone()
    };
    ctx.store.upsert_appointment(&closed).await?;
    Ok(())
}

/// The existing row's value when it has one, else the fallback.
fn keep(
    existing: &Option<Appointment>,
    field: impl Fn(&Appointment) -> &Option<String>,
    fallback: &Option<String>,
) -> Option<String> {
    existing
        .as_ref()
        .and_then(|a| field(a).clone())
        .or_else(|| fallback.clone())
}

fn status_for(trigger: &str) -> Option<AppointmentStatus> {
    match trigger {
        "BOOKING_CREATED" | "BOOKING_REQUESTED" | "BOOKING_RESCHEDULED" => {
            Some(AppointmentStatus::Scheduled)
        }
        "BOOKING_CANCELLED" | "BOOKING_REJECTED" => Some(AppointmentStatus::Cancelled),
        _ => None,
    }
}

/// An RFC 3339 time within the years 1970 to 9999 (see [`crate::timestamp`]).
fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    value
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("{field} {s:?} is not a time: {e}"))
                .and_then(|t| match crate::timestamp::in_range(t) {
                    true => Ok(t),
                    false => Err(format!("{field} {s:?} is outside the years 1970 to 9999")),
                })
        })
        .transpose()
}
