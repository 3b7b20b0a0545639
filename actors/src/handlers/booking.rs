//! From a call carrying appointment data to a booked appointment: extract the request, pick
//! the service (creating the branch's default one if it has none), find or create the
//! customer, store the appointment as `pending_sync` under the call's idempotency key, then
//! let the booker push it to Cal.com.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use super::contact::{self, CallerContact};
use super::{HandlerCtx, HandlerError};
use crate::booking::SyncOutcome;
use crate::catalog::{self, Customer, DefaultService, Service};
use crate::domain::{Appointment, AppointmentStatus, Branch, Call};
use crate::extract::{self, AppointmentRequest};
use crate::ids::CompanyId;
use crate::record::StoredRecord;

/// Zone used only to notice appointment data on a call that maps to no branch.
const FALLBACK_ZONE: Tz = chrono_tz::Europe::Berlin;

/// The idempotency key of the booking a call asks for: one per call and tenant, whichever of
/// its events (`call_ended`, `call_analyzed`, a retry, a replay) gets there first. Several
/// tenants may share one Cal.com account and any tenant can sign any `call_id`, so the tenant
/// is part of the key we store and hand to Cal.com; the appointment travels beside it in the
/// booking's metadata, and a lookup adopts only a booking naming both (`FindBooking::owns`).
pub fn call_booking_key(company_id: CompanyId, call_id: &str) -> String {
    format!("askpro:{company_id}:retell-call:{call_id}")
}

/// The key releases before the tenant-scoped one stored. Only read, never written: a replay of
/// a call booked by such a release finds its appointment instead of booking it again.
fn legacy_call_booking_key(call_id: &str) -> String {
    format!("retell-call:{call_id}")
}

/// Books what the call asked for. `Ok(Some(note))` when the event is done but the booking
/// waits (breaker open); `Ok(None)` when there was nothing to book or it is booked.
pub(super) async fn book_from_call(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
    call_json: &serde_json::Value,
    call: &Call,
) -> Result<Option<String>, HandlerError> {
    let anchor = call.start_at.unwrap_or(record.meta.received_at);
    let Some(branch) = branch_of(ctx, call).await? else {
        return match extract::extract(call_json, anchor, FALLBACK_ZONE) {
            Ok(Some(_)) => Err(HandlerError::Permanent(format!(
                "call {} carries appointment data, but its number {} is not a branch of this company",
                call.call_id,
                call.to_number.as_deref().unwrap_or("(none)")
            ))),
            Ok(None) => Ok(None),
            Err(e) => Err(HandlerError::Permanent(e.to_string())),
        };
    };
    let zone: Tz = branch.timezone.parse().map_err(|_| {
        HandlerError::Permanent(format!(
            "branch {} has an unknown timezone {:?}",
            branch.id, branch.timezone
        ))
    })?;
    let request = match extract::extract(call_json, anchor, zone) {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(None),
        Err(e) => return Err(HandlerError::Permanent(e.to_string())),
    };
    let key = call_booking_key(record.meta.company_id, &call.call_id);
    let appointment_id = match existing_appointment(ctx, record.meta.company_id, call, &key).await?
    {
        Some(existing) if retryable(&existing) => reopen(ctx, existing, &branch).await?,
        Some(existing) => existing.id,
        None => {
            let caller = contact::caller_contact(call, call_json, ctx.default_region);
            let new = NewAppointment {
                call,
                branch: &branch,
                request: &request,
                caller: &caller,
            };
            create_appointment(ctx, record, new, key).await?
        }
    };
    let Some(booker) = ctx.booker else {
        return Ok(Some(
            "no booking service in this process; appointment kept as pending_sync".into(),
        ));
    };
    let outcome = booker
        .sync(ctx.store, ctx.clock, record.meta.company_id, appointment_id)
        .await?;
    match outcome {
        SyncOutcome::Booked { .. } | SyncOutcome::NothingToDo(_) => Ok(None),
        SyncOutcome::Deferred { reason } => Ok(Some(reason)),
        SyncOutcome::Transient { error } => Err(HandlerError::Transient(error.to_string())),
        SyncOutcome::Permanent { reason } => Err(HandlerError::Permanent(reason)),
        SyncOutcome::Interrupted => Err(HandlerError::Interrupted),
    }
}

/// The call's appointment under its key, or under the key an older release stored.
async fn existing_appointment(
    ctx: &HandlerCtx<'_>,
    company_id: CompanyId,
    call: &Call,
    key: &str,
) -> Result<Option<Appointment>, HandlerError> {
    if let Some(found) = ctx.store.appointment_by_key(company_id, key).await? {
        return Ok(Some(found));
    }
    let legacy = legacy_call_booking_key(&call.call_id);
    Ok(ctx.store.appointment_by_key(company_id, &legacy).await?)
}

/// A `failed` appointment that never reached Cal.com (no uid): its event runs again (a
/// replay after the branch's Cal.com connection was fixed), so it may be pushed again.
fn retryable(appointment: &Appointment) -> bool {
    appointment.status == AppointmentStatus::Failed && appointment.calcom_uid.is_none()
}

async fn reopen(
    ctx: &HandlerCtx<'_>,
    mut appointment: Appointment,
    branch: &Branch,
) -> Result<Uuid, HandlerError> {
    let now = ctx.clock.now();
    // It may have failed for want of a contact, and the tenant has set a fallback since.
    contact::use_fallback(&mut appointment, branch);
    appointment.status = AppointmentStatus::PendingSync;
    appointment.version = (appointment.version + 1).max(now.timestamp_millis());
    appointment.updated_at = now;
    ctx.store.upsert_appointment(&appointment).await?;
    tracing::info!(
        company_id = %appointment.company_id,
        appointment_id = %appointment.id,
        "failed appointment reopened as pending_sync by a rerun of its event"
    );
    Ok(appointment.id)
}

async fn branch_of(ctx: &HandlerCtx<'_>, call: &Call) -> Result<Option<Branch>, HandlerError> {
    match call.branch_id {
        Some(id) => Ok(ctx.store.branch(call.company_id, id).await?),
        None => Ok(None),
    }
}

/// What a new appointment is made from.
struct NewAppointment<'a> {
    call: &'a Call,
    branch: &'a Branch,
    request: &'a AppointmentRequest,
    caller: &'a CallerContact,
}

async fn create_appointment(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
    new: NewAppointment<'_>,
    key: String,
) -> Result<Uuid, HandlerError> {
    let NewAppointment {
        call,
        branch,
        request,
        caller,
    } = new;
    let now = ctx.clock.now();
    let service = choose_service(ctx, record, branch, request.service_name.as_deref(), now).await?;
    let customer = customer_for(ctx, record, request, caller, &key, now).await?;
    let mut appointment = Appointment {
        company_id: record.meta.company_id,
        id: Uuid::now_v7(),
        calcom_uid: None,
        branch_id: Some(branch.id),
        service_id: Some(service.id),
        customer_id: Some(customer.id),
        status: AppointmentStatus::PendingSync,
        start_at: Some(request.start),
        end_at: Some(
            request.start + chrono::Duration::minutes(i64::from(service.duration_minutes)),
        ),
        title: Some(service.name.clone()),
        attendee_name: customer.name.clone(),
        attendee_email: None,
        attendee_phone: None,
        timezone: Some(branch.timezone.clone()),
        rescheduled_to_uid: None,
        idempotency_key: Some(key),
        sync_attempts: 0,
        last_error: None,
        source_event: record.meta.event_id,
        version: now.timestamp_millis(),
        created_at: now,
        updated_at: now,
        contact_source: None,
    };
    contact::fill_attendee(&mut appointment, &customer, caller, branch);
    ctx.store.upsert_appointment(&appointment).await?;
    tracing::info!(
        company_id = %appointment.company_id,
        appointment_id = %appointment.id,
        call_id = %call.call_id,
        start = %request.start,
        date_field = %request.date_field,
        time_field = %request.time_field,
        "appointment stored as pending_sync"
    );
    Ok(appointment.id)
}

/// The named service if the branch offers it, else its first one, else the default service.
async fn choose_service(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
    branch: &Branch,
    wanted: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Service, HandlerError> {
    let offered: Vec<Service> = ctx
        .store
        .services(branch.company_id)
        .await?
        .into_iter()
        .filter(|s| s.offered_at(branch.id))
        .collect();
    let named = wanted.and_then(|w| {
        offered
            .iter()
            .find(|s| s.name.trim().eq_ignore_ascii_case(w.trim()))
    });
    if let Some(service) = named.or(offered.first()) {
        return Ok(service.clone());
    }
    let candidate = catalog::default_service(
        branch,
        "a booking needed a service and the branch had none",
        now,
    );
    let ensured = ctx.store.ensure_default_service(branch, &candidate).await?;
    if let DefaultService::Created {
        service,
        assignments,
    } = &ensured
    {
        if let Some(booker) = ctx.booker {
            booker.metrics.default_services_created_total.inc();
        }
        tracing::info!(
            event = "DefaultServiceCreated",
            company_id = %branch.company_id,
            branch_id = %branch.id,
            service_id = %service.id,
            staff_assigned = assignments.len(),
            event_id = %record.meta.event_id,
            "branch had no active service; default service created"
        );
    }
    Ok(ensured.service().clone())
}

/// The customer by phone (the caller's own number, else a callback number from the call).
/// Callers without one get a customer of their own, with an id derived from the booking key
/// so a rerun finds it. The branch's fallback email is never the customer's.
async fn customer_for(
    ctx: &HandlerCtx<'_>,
    record: &StoredRecord,
    request: &AppointmentRequest,
    caller: &CallerContact,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Customer, HandlerError> {
    let company_id = record.meta.company_id;
    let candidate = Customer {
        company_id,
        id: Uuid::new_v5(&company_id.0, key.as_bytes()),
        name: request.customer_name.clone(),
        phone: caller.phone.clone(),
        email: caller.email.clone(),
        created_at: now,
    };
    Ok(ctx.store.upsert_customer(&candidate).await?)
}
