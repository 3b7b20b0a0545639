//! `find_appointment`, `reschedule_appointment`, `cancel_appointment`: the caller's own
//! upcoming appointments, the caller being the call's number within the tenant of the URL.
//! An anonymous caller has none; another tenant's appointments are never read (every store
//! read is by the path's company).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::answer;
use super::service::{dst_gap, zone_of, ToolService};
use super::ToolCall;
use crate::domain::{Appointment, AppointmentStatus};
use crate::extract::spoken::{SpokenTime, Unclear};

impl ToolService {
    /// The caller's scheduled or pending appointments from now on, soonest first.
    async fn own(&self, call: &ToolCall) -> Result<Vec<Appointment>, Value> {
        let Some(number) = call.from_number.as_deref() else {
            return Ok(Vec::new());
        };
        let now = self.clock.now();
        let all = self
            .store
            .appointments(call.company_id)
            .await
            .map_err(|e| answer::unavailable(call.tool.result_field(), &e.to_string()))?;
        let mut own: Vec<Appointment> = all
            .into_iter()
            .filter(|a| a.attendee_phone.as_deref() == Some(number))
            .filter(|a| {
                matches!(
                    a.status,
                    AppointmentStatus::Scheduled | AppointmentStatus::PendingSync
                )
            })
            .filter(|a| a.start_at.is_some_and(|s| s >= now))
            .collect();
        own.sort_by_key(|a| a.start_at);
        Ok(own)
    }

    pub(super) async fn find_appointment(&self, call: &ToolCall) -> Value {
        let zone = zone_of(&call.branch);
        let own = match self.own(call).await {
            Ok(own) => own,
            Err(answer) => return answer,
        };
        let listed: Vec<Value> = own.iter().map(|a| describe(a, zone)).collect();
        let message = match own.as_slice() {
            [] => "Unter Ihrer Rufnummer finde ich keinen kommenden Termin.".to_owned(),
            [one] => format!("Sie haben einen Termin am {}.", when(one, zone)),
            many => format!(
                "Sie haben {} Termine, der nächste ist am {}.",
                many.len(),
                when(&many[0], zone)
            ),
        };
        json!({"found": !own.is_empty(), "appointments": listed, "message": message})
    }

    pub(super) async fn cancel_appointment(&self, call: &ToolCall) -> Value {
        let zone = zone_of(&call.branch);
        let mut target = match self.chosen(call).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let _lock = match &self.booker {
            Some(b) => Some(b.lock_tenant(call.company_id).await),
            None => None,
        };
        if let (Some(uid), Some(calcom)) = (target.calcom_uid.clone(), call.branch.calcom.clone()) {
            if let Err(error) = self
                .api
                .cancel_booking(&calcom, &uid, Some("vom Anrufer storniert"))
                .await
            {
                tracing::warn!(company_id = %call.company_id, appointment_id = %target.id, error = %error, "tool cancellation failed at cal.com");
                return answer::unavailable("cancelled", &error.to_string());
            }
        }
        let now = self.clock.now();
        target.status = AppointmentStatus::Cancelled;
        target.version = (target.version + 1).max(now.timestamp_millis());
        target.updated_at = now;
        if let Err(error) = self.store.upsert_appointment(&target).await {
            return answer::unavailable("cancelled", &error.to_string());
        }
        self.forget_slots(call.branch.id);
        json!({
            "cancelled": true,
            "appointment_id": target.id,
            "message": format!("Ihr Termin am {} ist storniert.", when(&target, zone)),
        })
    }

    pub(super) async fn reschedule_appointment(&self, call: &ToolCall) -> Value {
        let zone = zone_of(&call.branch);
        let slot = match self.read_slot(call) {
            Ok(slot) => slot,
            Err(repeat) => return repeat,
        };
        let (SpokenTime::Exact(_), Some(start)) =
            (slot.time, answer::requested_instant(&slot, zone))
        else {
            return answer::repeat("rescheduled", &dst_gap(call));
        };
        let mut target = match self.chosen(call).await {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        let (Some(uid), Some(calcom)) = (target.calcom_uid.clone(), call.branch.calcom.clone())
        else {
            return json!({
                "rescheduled": false,
                "message": "Dieser Termin wird gerade noch gebucht. Bitte versuchen Sie es gleich noch einmal.",
            });
        };
        let _lock = match &self.booker {
            Some(b) => Some(b.lock_tenant(call.company_id).await),
            None => None,
        };
        let moved = match self
            .api
            .reschedule_booking(&calcom, &uid, start, Some("vom Anrufer verschoben"))
            .await
        {
            Ok(moved) => moved,
            Err(error) => {
                tracing::info!(company_id = %call.company_id, appointment_id = %target.id, error = %error, "tool reschedule refused");
                return json!({"rescheduled": false, "message": format!("Der Termin am {} ist leider nicht frei.", answer::spoken(start, zone))});
            }
        };
        // Like Cal.com: the old booking is closed and points at its successor, which its
        // BOOKING_CREATED / BOOKING_RESCHEDULED webhooks then record by uid.
        let now = self.clock.now();
        let mut successor = target.clone();
        target.status = AppointmentStatus::Cancelled;
        target.rescheduled_to_uid = Some(moved.uid.clone());
        target.version = (target.version + 1).max(now.timestamp_millis());
        target.updated_at = now;
        successor.id = uuid::Uuid::now_v7();
        successor.calcom_uid = Some(moved.uid);
        successor.idempotency_key = None;
        successor.start_at = Some(moved.start);
        successor.end_at = Some(moved.end);
        successor.version = target.version;
        successor.created_at = now;
        successor.updated_at = now;
        for row in [&target, &successor] {
            if let Err(error) = self.store.upsert_appointment(row).await {
                return answer::unavailable("rescheduled", &error.to_string());
            }
        }
        self.forget_slots(call.branch.id);
        json!({
            "rescheduled": true,
            "appointment_id": successor.id,
            "start": answer::iso(moved.start, zone),
            "message": format!("Ihr Termin ist verschoben auf {}.", answer::spoken(moved.start, zone)),
        })
    }

    /// The appointment the caller means: by id among their own, else their only one.
    async fn chosen(&self, call: &ToolCall) -> Result<Appointment, Value> {
        let field = call.tool.result_field();
        let own = self.own(call).await?;
        let wanted = call
            .args
            .appointment_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let pick = match wanted {
            Some(id) => own.into_iter().find(|a| a.id.to_string() == id),
            None if own.len() == 1 => own.into_iter().next(),
            None if own.is_empty() => None,
            None => {
                let unclear = Unclear {
                    field: "appointment_id",
                    value: String::new(),
                    problem: "the caller has several appointments".into(),
                };
                let mut answer = answer::repeat(field, &unclear);
                answer["message"] = "Sie haben mehrere Termine. Welchen meinen Sie?".into();
                return Err(answer);
            }
        };
        pick.ok_or_else(|| {
            json!({field: false, "message": "Unter Ihrer Rufnummer finde ich diesen Termin nicht."})
        })
    }
}

fn when(a: &Appointment, zone: Tz) -> String {
    a.start_at
        .map_or_else(String::new, |s: DateTime<Utc>| answer::spoken(s, zone))
}

fn describe(a: &Appointment, zone: Tz) -> Value {
    json!({
        "appointment_id": a.id,
        "start": a.start_at.map(|s| answer::iso(s, zone)),
        "service": a.title,
        "status": a.status.as_str(),
    })
}
