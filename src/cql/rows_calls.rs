//! Rows and bound values of calls and appointments (split from `rows.rs` for size). The
//! value structs bind by position (`enforce_order`): their field order is the statement's
//! bind-marker order, which the wide rows (more than 16 columns) need.

use askpro_actors::domain::{Appointment, AppointmentStatus, Call, ContactSource};
use askpro_actors::ids::{BranchId, CompanyId, EventId};
use chrono::{DateTime, Utc};
use scylla::{DeserializeRow, SerializeRow};
use uuid::Uuid;

use super::rows::{int, parse, unsigned, Res};

#[derive(DeserializeRow)]
pub(super) struct CallRow {
    company_id: Uuid,
    call_id: String,
    branch_id: Option<Uuid>,
    agent_id: Option<String>,
    direction: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    status: String,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    disconnection_reason: Option<String>,
    summary: Option<String>,
    last_event: String,
    version: i64,
    updated_at: DateTime<Utc>,
    pub write_id: Uuid,
}

impl CallRow {
    pub(super) fn status(&self) -> &str {
        &self.status
    }

    pub(super) fn version(&self) -> i64 {
        self.version
    }

    pub(super) fn into_domain(self) -> Call {
        Call {
            company_id: CompanyId(self.company_id),
            call_id: self.call_id,
            branch_id: self.branch_id.map(BranchId),
            agent_id: self.agent_id,
            direction: self.direction,
            from_number: self.from_number,
            to_number: self.to_number,
            status: self.status,
            start_at: self.start_at,
            end_at: self.end_at,
            duration_ms: self.duration_ms,
            disconnection_reason: self.disconnection_reason,
            summary: self.summary,
            last_event: self.last_event,
            version: self.version,
            updated_at: self.updated_at,
        }
    }
}

/// The non-key columns of a call, in the order of `call_update`'s SET clause.
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct CallBody<'a> {
    branch_id: Option<Uuid>,
    agent_id: Option<&'a str>,
    direction: Option<&'a str>,
    from_number: Option<&'a str>,
    to_number: Option<&'a str>,
    status: &'a str,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    disconnection_reason: Option<&'a str>,
    summary: Option<&'a str>,
    last_event: &'a str,
    version: i64,
    updated_at: DateTime<Utc>,
    write_id: Uuid,
}

impl<'a> CallBody<'a> {
    pub(super) fn of(c: &'a Call, write_id: Uuid) -> Self {
        CallBody {
            branch_id: c.branch_id.map(|b| b.0),
            agent_id: c.agent_id.as_deref(),
            direction: c.direction.as_deref(),
            from_number: c.from_number.as_deref(),
            to_number: c.to_number.as_deref(),
            status: &c.status,
            start_at: c.start_at,
            end_at: c.end_at,
            duration_ms: c.duration_ms,
            disconnection_reason: c.disconnection_reason.as_deref(),
            summary: c.summary.as_deref(),
            last_event: &c.last_event,
            version: c.version,
            updated_at: c.updated_at,
            write_id,
        }
    }
}

/// `call_insert`: key, then the body.
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct CallInsert<'a> {
    pub company_id: Uuid,
    pub call_id: &'a str,
    #[scylla(flatten)]
    pub body: CallBody<'a>,
}

/// `call_update`: the body, the key, then the write id the update expects to replace.
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct CallUpdate<'a> {
    #[scylla(flatten)]
    pub body: CallBody<'a>,
    pub company_id: Uuid,
    pub call_id: &'a str,
    pub seen_write_id: Uuid,
}

#[derive(DeserializeRow)]
pub(super) struct AppointmentRow {
    company_id: Uuid,
    appointment_id: Uuid,
    calcom_uid: Option<String>,
    branch_id: Option<Uuid>,
    service_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    status: String,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    title: Option<String>,
    attendee_name: Option<String>,
    attendee_email: Option<String>,
    attendee_phone: Option<String>,
    timezone: Option<String>,
    rescheduled_to_uid: Option<String>,
    idempotency_key: Option<String>,
    sync_attempts: i32,
    last_error: Option<String>,
    source_event: Uuid,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    pub write_id: Uuid,
    contact_source: Option<String>,
}

impl AppointmentRow {
    pub(super) fn into_domain(self) -> Res<Appointment> {
        const T: &str = "appointments";
        Ok(Appointment {
            company_id: CompanyId(self.company_id),
            id: self.appointment_id,
            calcom_uid: self.calcom_uid,
            branch_id: self.branch_id.map(BranchId),
            service_id: self.service_id,
            customer_id: self.customer_id,
            status: parse::<AppointmentStatus>(T, "status", &self.status)?,
            start_at: self.start_at,
            end_at: self.end_at,
            title: self.title,
            attendee_name: self.attendee_name,
            attendee_email: self.attendee_email,
            attendee_phone: self.attendee_phone,
            timezone: self.timezone,
            rescheduled_to_uid: self.rescheduled_to_uid,
            idempotency_key: self.idempotency_key,
            sync_attempts: unsigned(T, "sync_attempts", self.sync_attempts)?,
            last_error: self.last_error,
            source_event: EventId(self.source_event),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            contact_source: self
                .contact_source
                .as_deref()
                .map(|c| parse::<ContactSource>(T, "contact_source", c))
                .transpose()?,
        })
    }
}

/// The non-key columns of an appointment, in the order of `appointment_update`'s SET clause.
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct AppointmentBody<'a> {
    calcom_uid: Option<&'a str>,
    branch_id: Option<Uuid>,
    service_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    status: &'static str,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    title: Option<&'a str>,
    attendee_name: Option<&'a str>,
    attendee_email: Option<&'a str>,
    attendee_phone: Option<&'a str>,
    timezone: Option<&'a str>,
    rescheduled_to_uid: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    sync_attempts: i32,
    last_error: Option<&'a str>,
    source_event: Uuid,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    write_id: Uuid,
    contact_source: Option<&'static str>,
}

impl<'a> AppointmentBody<'a> {
    /// `a` as stored: uid and key are the merged ones (a missing one keeps the stored value).
    pub(super) fn of(
        a: &'a Appointment,
        uid: Option<&'a str>,
        key: Option<&'a str>,
        write_id: Uuid,
    ) -> Res<Self> {
        Ok(AppointmentBody {
            calcom_uid: uid,
            branch_id: a.branch_id.map(|b| b.0),
            service_id: a.service_id,
            customer_id: a.customer_id,
            status: a.status.as_str(),
            start_at: a.start_at,
            end_at: a.end_at,
            title: a.title.as_deref(),
            attendee_name: a.attendee_name.as_deref(),
            attendee_email: a.attendee_email.as_deref(),
            attendee_phone: a.attendee_phone.as_deref(),
            timezone: a.timezone.as_deref(),
            rescheduled_to_uid: a.rescheduled_to_uid.as_deref(),
            idempotency_key: key,
            sync_attempts: int(a.sync_attempts)?,
            last_error: a.last_error.as_deref(),
            source_event: a.source_event.0,
            version: a.version,
            created_at: a.created_at,
            updated_at: a.updated_at,
            write_id,
            contact_source: a.contact_source.map(ContactSource::as_str),
        })
    }
}

#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct AppointmentInsert<'a> {
    pub company_id: Uuid,
    pub appointment_id: Uuid,
    #[scylla(flatten)]
    pub body: AppointmentBody<'a>,
}

#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct AppointmentUpdate<'a> {
    #[scylla(flatten)]
    pub body: AppointmentBody<'a>,
    pub company_id: Uuid,
    pub appointment_id: Uuid,
    pub seen_write_id: Uuid,
}
