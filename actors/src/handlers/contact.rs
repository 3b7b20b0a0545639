//! Whom Cal.com books: the caller's own number when it is a real one, else a callback number or
//! email the caller left during the call, else the branch's fallback email (the caller left no
//! contact; the appointment says so).

use serde_json::Value;

use crate::catalog::Customer;
use crate::domain::{Appointment, Branch, Call, ContactSource};
use crate::extract::contact;

/// The caller's own contact, before any fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CallerContact {
    /// E.164.
    pub phone: Option<String>,
    pub email: Option<String>,
    /// `None`: the caller left nothing usable.
    pub source: Option<ContactSource>,
}

/// The caller id wins when it is a real number (`Call::from_number` is E.164 or `None`); an
/// email the caller gave is kept beside it.
pub(super) fn caller_contact(call: &Call, call_json: &Value, region: &str) -> CallerContact {
    let data = contact::callback_contact(call_json, region);
    match &call.from_number {
        Some(number) => CallerContact {
            phone: Some(number.clone()),
            email: data.email,
            source: Some(ContactSource::Caller),
        },
        None if !data.is_empty() => CallerContact {
            phone: data.phone,
            email: data.email,
            source: Some(ContactSource::CallData),
        },
        None => CallerContact::default(),
    }
}

/// Fills the appointment's attendee from the customer (a known customer may carry an email
/// from an earlier call), then from the branch's fallback.
pub(super) fn fill_attendee(
    appointment: &mut Appointment,
    customer: &Customer,
    caller: &CallerContact,
    branch: &Branch,
) {
    appointment.attendee_phone = customer.phone.clone();
    appointment.attendee_email = customer.email.clone();
    appointment.contact_source = caller.source;
    if has_contact(appointment) && appointment.contact_source.is_none() {
        appointment.contact_source = Some(ContactSource::CallData);
    }
    use_fallback(appointment, branch);
}

/// Gives an appointment without any attendee contact the branch's fallback email. Returns
/// whether it did. Also run when a failed appointment is reopened: the tenant may have set
/// the fallback since.
pub(super) fn use_fallback(appointment: &mut Appointment, branch: &Branch) -> bool {
    if has_contact(appointment) {
        return false;
    }
    let Some(fallback) = branch.fallback_email.clone() else {
        return false;
    };
    appointment.attendee_email = Some(fallback);
    appointment.contact_source = Some(ContactSource::BranchFallback);
    tracing::info!(
        company_id = %appointment.company_id,
        appointment_id = %appointment.id,
        branch_id = %branch.id,
        "caller left no contact; the branch's fallback email books it"
    );
    true
}

fn has_contact(appointment: &Appointment) -> bool {
    appointment.attendee_email.is_some() || appointment.attendee_phone.is_some()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ids::CompanyId;

    fn call(from_number: Option<&str>) -> Call {
        Call {
            company_id: CompanyId::new(),
            call_id: "c1".into(),
            branch_id: None,
            agent_id: None,
            direction: Some("inbound".into()),
            from_number: from_number.map(str::to_owned),
            to_number: None,
            status: "ended".into(),
            start_at: None,
            end_at: None,
            duration_ms: None,
            disconnection_reason: None,
            summary: None,
            last_event: "call_analyzed".into(),
            version: 3,
            updated_at: chrono::Utc::now(),
        }
    }

    fn with_callback() -> Value {
        json!({"call_analysis": {"custom_analysis_data": {
            "callback_number": "030 1234567", "email": "erika@example.org"
        }}})
    }

    #[test]
    fn a_real_caller_id_wins_over_a_callback_number() {
        let found = caller_contact(&call(Some("+4915123456789")), &with_callback(), "DE");
        assert_eq!(found.phone.as_deref(), Some("+4915123456789"));
        assert_eq!(found.email.as_deref(), Some("erika@example.org"));
        assert_eq!(found.source, Some(ContactSource::Caller));
    }

    #[test]
    fn an_anonymous_caller_is_reached_through_the_call_data() {
        let found = caller_contact(&call(None), &with_callback(), "DE");
        assert_eq!(found.phone.as_deref(), Some("+49301234567"));
        assert_eq!(found.source, Some(ContactSource::CallData));
    }

    #[test]
    fn an_anonymous_caller_who_left_nothing_has_no_contact() {
        let found = caller_contact(&call(None), &json!({"from_number": "anonymous"}), "DE");
        assert_eq!(found, CallerContact::default());
    }
}
