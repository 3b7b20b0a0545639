//! Builds the Cal.com request for a local appointment: where (the branch's connection), what
//! (event type and length from the service) and for whom (the attendee).

use std::collections::BTreeMap;

use super::api::{
    Attendee, CreateBooking, APPOINTMENT_METADATA_KEY, COMPANY_METADATA_KEY,
    IDEMPOTENCY_METADATA_KEY,
};
use crate::catalog::CalcomConfig;
use crate::domain::{Appointment, ContactSource};
use crate::error::StoreError;
use crate::store::StateStore;

/// Cal.com needs a name; a caller who gave none is booked under this one.
const UNNAMED_ATTENDEE: &str = "Anrufer";
/// The metadata key of a note for the business, shown with the booking in Cal.com.
pub const NOTE_METADATA_KEY: &str = "askpro_note";
/// The note on a booking made with the branch's fallback email ("the caller left no contact").
pub const NO_CONTACT_NOTE: &str = "Anrufer hat keine Kontaktdaten hinterlassen";

/// Everything needed to create (or find) the booking.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub target: CalcomConfig,
    pub create: CreateBooking,
    pub idempotency_key: String,
    /// The appointment this booking is for (also in the booking's metadata).
    pub appointment_id: uuid::Uuid,
}

/// `Ok(Err(reason))` when the appointment can never be booked as it is (permanent).
pub async fn prepare(
    store: &dyn StateStore,
    appointment: &Appointment,
) -> Result<Result<Prepared, String>, StoreError> {
    let company_id = appointment.company_id;
    let Some(key) = appointment.idempotency_key.clone() else {
        return Ok(Err(
            "appointment has no idempotency key (not made by askpro)".into(),
        ));
    };
    let Some(start) = appointment.start_at else {
        return Ok(Err("appointment has no start time".into()));
    };
    let Some(branch_id) = appointment.branch_id else {
        return Ok(Err("appointment has no branch".into()));
    };
    let Some(branch) = store.branch(company_id, branch_id).await? else {
        return Ok(Err(format!("branch {branch_id} no longer exists")));
    };
    let Some(target) = branch.calcom.clone() else {
        return Ok(Err(format!(
            "branch {} ({branch_id}) has no cal.com connection; run `askpro branch set-calcom --branch {branch_id} --api-key KEY --event-type ID`",
            branch.name
        )));
    };
    let service = match appointment.service_id {
        Some(id) => store.service(company_id, id).await?,
        None => None,
    };
    if appointment.attendee_email.is_none() && appointment.attendee_phone.is_none() {
        return Ok(Err(format!(
            "cal.com needs an attendee email or phone number; the caller is anonymous and left \
             no phone or email; set a fallback with `askpro branch update --branch {branch_id} \
             --fallback-email EMAIL` and replay the event"
        )));
    }
    // Tenant and appointment travel with the key: a lookup adopts a booking only when all
    // three match (`FindBooking::owns`), whoever else shares the Cal.com account.
    let mut metadata = BTreeMap::from([
        (IDEMPOTENCY_METADATA_KEY.to_owned(), key.clone()),
        (COMPANY_METADATA_KEY.to_owned(), company_id.to_string()),
        (
            APPOINTMENT_METADATA_KEY.to_owned(),
            appointment.id.to_string(),
        ),
    ]);
    if appointment.contact_source == Some(ContactSource::BranchFallback) {
        metadata.insert(NOTE_METADATA_KEY.to_owned(), NO_CONTACT_NOTE.to_owned());
    }
    let create = CreateBooking {
        start,
        event_type_id: service
            .as_ref()
            .and_then(|s| s.calcom_event_type_id)
            .unwrap_or(target.event_type_id),
        length_minutes: service.as_ref().map(|s| s.duration_minutes),
        attendee: Attendee {
            name: appointment
                .attendee_name
                .clone()
                .unwrap_or_else(|| UNNAMED_ATTENDEE.to_owned()),
            time_zone: appointment
                .timezone
                .clone()
                .unwrap_or_else(|| branch.timezone.clone()),
            email: appointment.attendee_email.clone(),
            phone: appointment.attendee_phone.clone(),
            language: Some("de".into()),
        },
        metadata,
    };
    Ok(Ok(Prepared {
        target,
        create,
        idempotency_key: key,
        appointment_id: appointment.id,
    }))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
