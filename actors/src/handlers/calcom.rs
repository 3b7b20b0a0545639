//! Cal.com `BOOKING_*`: upsert the appointment by its Cal.com uid.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{Handled, HandlerCtx, HandlerError};
use crate::domain::{Appointment, AppointmentStatus};
use crate::phone;
use crate::record::StoredRecord;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    trigger_event: String,
    created_at: Option<String>,
    payload: Payload,
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
}

#[derive(Deserialize)]
struct Attendee {
    name: Option<String>,
    email: Option<String>,
    #[serde(alias = "phoneNumber")]
    phone: Option<String>,
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
    let body: Body = serde_json::from_slice(&record.value)
        .map_err(|e| HandlerError::Permanent(format!("cal.com body does not parse: {e}")))?;
    let Some(status) = status_for(&body.trigger_event) else {
        return Ok(Handled {
            note: Some(format!(
                "cal.com trigger {:?} is stored but not acted on",
                body.trigger_event
            )),
        });
    };
    let Some(uid) = body.payload.uid.clone() else {
        return Err(HandlerError::Permanent(format!(
            "cal.com {} has no payload.uid; cannot match a booking",
            body.trigger_event
        )));
    };
    let company_id = record.meta.company_id;
    let existing = ctx
        .store
        .appointment_by_calcom_uid(company_id, &uid)
        .await?;
    let start_at = parse_time("payload.startTime", body.payload.start_time.as_deref())?
        .or(existing.as_ref().and_then(|a| a.start_at));
    let end_at = parse_time("payload.endTime", body.payload.end_time.as_deref())?
        .or(existing.as_ref().and_then(|a| a.end_at));
    let attendee = body.payload.attendees.into_iter().next();
    let attendee_phone = attendee
        .as_ref()
        .and_then(|a| a.phone.as_deref())
        .and_then(|p| phone::normalize(p, ctx.default_region).ok());
    let row = Appointment {
        company_id,
        id: existing.as_ref().map(|a| a.id).unwrap_or_else(Uuid::now_v7),
        calcom_uid: Some(uid),
        branch_id: existing.as_ref().and_then(|a| a.branch_id),
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
        updated_at: ctx.clock.now(),
    };
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

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, HandlerError> {
    value
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| HandlerError::Permanent(format!("{field} {s:?} is not a time: {e}")))
        })
        .transpose()
}
