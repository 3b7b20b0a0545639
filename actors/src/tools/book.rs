//! `book_appointment`: hold the slot, store the appointment under the call's booking key,
//! book it through the booker. The key and the appointment id are the call's, so a retry, a
//! second tool run and the later `call_analyzed` all land on the same row, and the booker's
//! lease, lookup-before-create and tenant lock make that row exactly one Cal.com booking.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};
use uuid::Uuid;

use super::answer;
use super::service::{dst_gap, zone_of, ToolService};
use super::ToolCall;
use crate::booking::{BookingError, BreakerState, SlotReservation, SyncOutcome};
use crate::catalog::CalcomConfig;
use crate::domain::{Appointment, AppointmentStatus, ContactSource};
use crate::extract::contact;
use crate::extract::spoken::{SpokenTime, Unclear};
use crate::handlers::call_booking_key;
use crate::ids::EventId;
use crate::phone;

const FIELD: &str = "booked";

/// The appointment id a call's booking gets: derived from the tenant and the key, so two
/// concurrent runs for one call write one row.
pub fn call_appointment_id(call: &ToolCall) -> Uuid {
    Uuid::new_v5(
        &call.company_id.0,
        call_booking_key(call.company_id, &call.call_id).as_bytes(),
    )
}

impl ToolService {
    pub(super) async fn book_appointment(&self, call: &ToolCall) -> Value {
        let zone = zone_of(&call.branch);
        let slot = match self.read_slot(call) {
            Ok(slot) => slot,
            Err(repeat) => return repeat,
        };
        if !matches!(slot.time, SpokenTime::Exact(_)) {
            let unclear = Unclear {
                field: "time",
                value: call.args.time.clone().unwrap_or_default(),
                problem: "is not an exact time; a booking needs one".into(),
            };
            return answer::repeat(FIELD, &unclear);
        }
        let Some(start) = answer::requested_instant(&slot, zone) else {
            return answer::repeat(FIELD, &dst_gap(call));
        };
        let Some(target) = call.branch.calcom.clone() else {
            return answer::unavailable(FIELD, "the branch has no cal.com connection");
        };
        let key = call_booking_key(call.company_id, &call.call_id);
        let existing = match self.store.appointment_by_key(call.company_id, &key).await {
            Ok(existing) => existing,
            Err(error) => return answer::unavailable(FIELD, &error.to_string()),
        };
        let reopen = match existing {
            Some(a) if a.status == AppointmentStatus::Failed && a.calcom_uid.is_none() => Some(a),
            Some(a) => return self.settle_existing(call, a, start, zone).await,
            None => None,
        };
        let (phone, email, contact_source) = self.contact(call);
        if phone.is_none() && email.is_none() {
            let unclear = Unclear {
                field: "phone",
                value: call.args.phone.clone().unwrap_or_default(),
                problem: "the caller is anonymous, gave no phone or email, and the branch has no \
                          fallback email (askpro branch update --fallback-email)"
                    .into(),
            };
            return answer::repeat(FIELD, &unclear);
        }
        let (event_type, length, service_id) = self.event_type(call, &target).await;
        let hold = match self.hold(call, &target, event_type, start, length).await {
            Ok(hold) => hold,
            Err(taken) => {
                return self
                    .taken(call, &target, event_type, start)
                    .await
                    .unwrap_or(taken)
            }
        };
        let now = self.clock.now();
        let minutes = i64::from(length.unwrap_or(30));
        let appointment = Appointment {
            company_id: call.company_id,
            id: call_appointment_id(call),
            calcom_uid: None,
            branch_id: Some(call.branch.id),
            service_id,
            customer_id: None,
            status: AppointmentStatus::PendingSync,
            start_at: Some(start),
            end_at: Some(start + chrono::Duration::minutes(minutes)),
            title: call.args.service.clone(),
            attendee_name: call.args.name.clone().filter(|n| !n.trim().is_empty()),
            attendee_email: email,
            attendee_phone: phone,
            timezone: Some(call.branch.timezone.clone()),
            rescheduled_to_uid: None,
            idempotency_key: Some(key),
            contact_source,
            sync_attempts: reopen.as_ref().map_or(0, |a| a.sync_attempts),
            last_error: None,
            source_event: reopen
                .as_ref()
                .map_or_else(EventId::new, |a| a.source_event),
            version: reopen.as_ref().map_or(now.timestamp_millis(), |a| {
                (a.version + 1).max(now.timestamp_millis())
            }),
            created_at: reopen.as_ref().map_or(now, |a| a.created_at),
            updated_at: now,
        };
        let stored = self.store.upsert_appointment(&appointment).await;
        // The hold kept other callers off the slot until the row was durable; Cal.com refuses
        // a booking against any hold, ours included, so it goes back before the create.
        if let Some(hold) = hold {
            if let Err(error) = self.api.release_slot(&target, &hold.uid).await {
                tracing::warn!(company_id = %call.company_id, reservation = %hold.uid, error = %error, "slot hold not released; the booking waits for it to run out");
            }
        }
        if let Err(error) = stored {
            return answer::unavailable(FIELD, &error.to_string());
        }
        tracing::info!(company_id = %call.company_id, appointment_id = %appointment.id, call_id = %call.call_id, start = %start, "tool booking stored as pending_sync");
        self.sync(call, &target, event_type, appointment.id, start, zone)
            .await
    }

    /// Holds the slot. `Err(answer)` when it is taken or held by someone else; `Ok(None)` when
    /// Cal.com cannot be asked (breaker open, down): the booking is kept pending then.
    async fn hold(
        &self,
        call: &ToolCall,
        target: &CalcomConfig,
        event_type: i64,
        start: DateTime<Utc>,
        length: Option<u32>,
    ) -> Result<Option<SlotReservation>, Value> {
        let open = self
            .booker
            .as_ref()
            .is_some_and(|b| b.breaker_state(call.company_id) == BreakerState::Open);
        if open {
            return Ok(None);
        }
        match self
            .api
            .reserve_slot(target, event_type, start, length)
            .await
        {
            Ok(hold) => Ok(Some(hold)),
            Err(BookingError::Permanent {
                status, message, ..
            }) => {
                tracing::info!(company_id = %call.company_id, call_id = %call.call_id, start = %start, status, message = %message, "slot not held: taken");
                Err(answer::taken(start, &[], zone_of(&call.branch)))
            }
            Err(error) => {
                tracing::warn!(company_id = %call.company_id, call_id = %call.call_id, error = %error, "slot hold failed; booking kept pending");
                Ok(None)
            }
        }
    }

    /// The call already has a live booking: the same slot is this one again; another slot is
    /// a change the caller must ask for (`reschedule_appointment`).
    async fn settle_existing(
        &self,
        call: &ToolCall,
        existing: Appointment,
        start: DateTime<Utc>,
        zone: Tz,
    ) -> Value {
        let at = existing.start_at.unwrap_or(start);
        match existing.status {
            AppointmentStatus::Scheduled if at == start => answer::booked(existing.id, at, zone),
            AppointmentStatus::PendingSync if at == start => {
                let Some(target) = call.branch.calcom.clone() else {
                    return answer::pending_booking(Some(existing.id), Some(at), zone);
                };
                let (event_type, _, _) = self.event_type(call, &target).await;
                self.sync(call, &target, event_type, existing.id, at, zone)
                    .await
            }
            status => json!({
                "booked": false,
                "appointment_id": existing.id,
                "start": answer::iso(at, zone),
                "status": status.as_str(),
                "alternatives": [],
                "message": format!(
                    "In diesem Gespräch wurde bereits ein Termin am {} vereinbart. Soll ich ihn verschieben?",
                    answer::spoken(at, zone)
                ),
            }),
        }
    }

    async fn sync(
        &self,
        call: &ToolCall,
        target: &CalcomConfig,
        event_type: i64,
        appointment_id: Uuid,
        start: DateTime<Utc>,
        zone: Tz,
    ) -> Value {
        let Some(booker) = &self.booker else {
            // An ingress-only process: the worker's reconciler books it.
            return answer::pending_booking(Some(appointment_id), Some(start), zone);
        };
        let outcome = booker
            .sync(
                self.store.as_ref(),
                self.clock.as_ref(),
                call.company_id,
                appointment_id,
            )
            .await;
        match outcome {
            Ok(SyncOutcome::Booked { appointment, .. }) => {
                self.forget_slots(call.branch.id);
                answer::booked(appointment.id, appointment.start_at.unwrap_or(start), zone)
            }
            Ok(SyncOutcome::NothingToDo(a)) if a.status == AppointmentStatus::Scheduled => {
                answer::booked(a.id, a.start_at.unwrap_or(start), zone)
            }
            Ok(SyncOutcome::Permanent { reason }) => {
                tracing::info!(company_id = %call.company_id, appointment_id = %appointment_id, reason = %reason, "tool booking refused by cal.com");
                self.forget_slots(call.branch.id);
                let fallback = answer::taken(start, &[], zone);
                self.taken(call, target, event_type, start)
                    .await
                    .unwrap_or(fallback)
            }
            Ok(SyncOutcome::NothingToDo(_))
            | Ok(SyncOutcome::Deferred { .. })
            | Ok(SyncOutcome::Transient { .. })
            | Ok(SyncOutcome::Interrupted) => {
                answer::pending_booking(Some(appointment_id), Some(start), zone)
            }
            Err(error) => answer::unavailable(FIELD, &error.to_string()),
        }
    }

    /// "Taken" with fresh alternatives; `None` when the slots cannot be read.
    async fn taken(
        &self,
        call: &ToolCall,
        target: &CalcomConfig,
        event_type: i64,
        start: DateTime<Utc>,
    ) -> Option<Value> {
        let zone = zone_of(&call.branch);
        self.forget_slots(call.branch.id);
        let day = start.with_timezone(&zone).date_naive();
        // The slot may still look free (the winner released its hold and has not booked yet).
        let free = match self.free_slots(&call.branch, target, event_type, day).await {
            Ok(free) => free
                .into_iter()
                .filter(|at| *at != start)
                .collect::<Vec<_>>(),
            Err(error) => {
                tracing::warn!(company_id = %call.company_id, error = %error, "no alternatives: cal.com slots unavailable");
                return None;
            }
        };
        let slot = crate::extract::spoken::SpokenSlot {
            date: day,
            time: SpokenTime::Exact(start.with_timezone(&zone).time()),
        };
        let found = answer::resolve(&slot, start, &free, zone, self.not_before(call));
        Some(answer::taken(start, &found.alternatives, zone))
    }

    /// The number and email to book under: what the caller said, else the calling number.
    /// Whom Cal.com books, as on the post-call path (`handlers::contact`): the caller id when
    /// it is a real number, else what the caller said, else the branch's fallback email.
    fn contact(&self, call: &ToolCall) -> (Option<String>, Option<String>, Option<ContactSource>) {
        let region = &self.settings.default_region;
        let said = call
            .args
            .phone
            .as_deref()
            .filter(|p| p.chars().any(|c| c.is_ascii_digit()))
            .and_then(|p| phone::normalize(p, region).ok());
        let email = call.args.email.as_deref().and_then(contact::email);
        if let Some(own) = &call.from_number {
            return (Some(own.clone()), email, Some(ContactSource::Caller));
        }
        if said.is_some() || email.is_some() {
            return (said, email, Some(ContactSource::CallData));
        }
        match &call.branch.fallback_email {
            Some(fallback) => (
                None,
                Some(fallback.clone()),
                Some(ContactSource::BranchFallback),
            ),
            None => (None, None, None),
        }
    }
}
