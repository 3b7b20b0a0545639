//! Row mapping for the embedded state store: column lists, row → domain decoding, and the
//! internal error type that lets SQL helpers use `?` for both SQLite and store errors.

use std::fmt::Display;
use std::str::FromStr;

use askpro_actors::catalog::{Customer, Service, Staff};
use askpro_actors::domain::{Appointment, Branch, Call, Company, DedupEntry, EventRow, Secret};
use askpro_actors::error::StoreError;
use chrono::{DateTime, Utc};
use rusqlite::Row;
use serde::de::DeserializeOwned;

use super::sqlite::{classify, decode_error, ErrorClass};

/// An error inside a blocking store operation, turned into a [`StoreError`] at the edge
/// (where the operation and table names are known).
#[derive(Debug)]
pub(super) enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
}

pub(super) type Res<T> = Result<T, Fail>;

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    pub(super) fn into_store(self, operation: &'static str, table: &'static str) -> StoreError {
        let e = match self {
            Fail::Store(e) => return e,
            Fail::Sql(e) => e,
        };
        match classify(&e) {
            ErrorClass::Constraint => StoreError::Conflict(format!("{operation}: {e}")),
            ErrorClass::Decode => StoreError::Corrupt {
                table,
                problem: e.to_string(),
            },
            ErrorClass::Unavailable => StoreError::Unavailable {
                operation,
                source: Box::new(e),
            },
        }
    }
}

/// Timestamps are stored as ms since the epoch (a CQL `timestamp`): sub-ms precision is lost.
pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

pub(super) fn ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let millis: i64 = row.get(idx)?;
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| decode_error(idx, format!("timestamp {millis} is out of range")))
}

pub(super) fn opt_ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(_) => ts(row, idx).map(Some),
    }
}

/// A text column parsed with `FromStr` (ids, providers, statuses).
pub(super) fn parsed<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e| decode_error(idx, format!("{text:?}: {e}")))
}

fn opt_parsed<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    match row.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(_) => parsed(row, idx).map(Some),
    }
}

pub(super) const COMPANY_COLS: &str = "company_id, name, allow_unsigned_calcom, created_at";

pub(super) fn company(r: &Row<'_>) -> rusqlite::Result<Company> {
    Ok(Company {
        id: parsed(r, 0)?,
        name: r.get(1)?,
        allow_unsigned_calcom: r.get(2)?,
        created_at: ts(r, 3)?,
    })
}

pub(super) const BRANCH_COLS: &str =
    "company_id, branch_id, name, phone, timezone, created_at, retell_agent_id, calcom, \
     fallback_email, retell_llm_id";

pub(super) fn branch(r: &Row<'_>) -> rusqlite::Result<Branch> {
    Ok(Branch {
        company_id: parsed(r, 0)?,
        id: parsed(r, 1)?,
        name: r.get(2)?,
        phone: r.get(3)?,
        timezone: r.get(4)?,
        created_at: ts(r, 5)?,
        retell_agent_id: r.get(6)?,
        calcom: opt_json(r, 7)?,
        fallback_email: r.get(8)?,
        retell_llm_id: r.get(9)?,
    })
}

/// A JSON text column (`None` when NULL). The error names the column but never quotes the
/// text: the branch's Cal.com config carries an API key.
fn opt_json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| decode_error(idx, format!("invalid JSON: {e}"))),
    }
}

/// Encodes a value for a JSON text column. Serializing these plain structs cannot fail in
/// practice; if it ever did, the write fails instead of storing a lie.
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

pub(super) const SECRET_COLS: &str = "company_id, provider, secret_id, value, created_at";

pub(super) fn secret(r: &Row<'_>) -> rusqlite::Result<Secret> {
    Ok(Secret {
        company_id: parsed(r, 0)?,
        provider: parsed(r, 1)?,
        id: r.get(2)?,
        value: r.get(3)?,
        created_at: ts(r, 4)?,
    })
}

pub(super) const EVENT_COLS: &str = "company_id, event_id, provider, event_type, dedup_key, \
    status, attempts, error, correlation_id, secret_id, log_partition, log_offset, \
    received_at, updated_at, payload";

pub(super) fn event(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        company_id: parsed(r, 0)?,
        id: parsed(r, 1)?,
        provider: parsed(r, 2)?,
        event_type: r.get(3)?,
        dedup_key: r.get(4)?,
        status: parsed(r, 5)?,
        attempts: r.get(6)?,
        error: r.get(7)?,
        correlation_id: parsed(r, 8)?,
        secret_id: r.get(9)?,
        partition: r.get(10)?,
        offset: r.get(11)?,
        received_at: ts(r, 12)?,
        updated_at: ts(r, 13)?,
        payload: r.get::<_, Vec<u8>>(14)?.into(),
    })
}

pub(super) const DEDUP_COLS: &str = "holder, completed, lease_until, expires_at";

pub(super) fn dedup(r: &Row<'_>) -> rusqlite::Result<DedupEntry> {
    Ok(DedupEntry {
        holder: parsed(r, 0)?,
        completed: r.get(1)?,
        lease_until: ts(r, 2)?,
        expires_at: ts(r, 3)?,
    })
}

pub(super) const CALL_COLS: &str = "company_id, call_id, branch_id, agent_id, direction, \
    from_number, to_number, status, start_at, end_at, duration_ms, disconnection_reason, \
    summary, last_event, version, updated_at";

pub(super) fn call(r: &Row<'_>) -> rusqlite::Result<Call> {
    Ok(Call {
        company_id: parsed(r, 0)?,
        call_id: r.get(1)?,
        branch_id: opt_parsed(r, 2)?,
        agent_id: r.get(3)?,
        direction: r.get(4)?,
        from_number: r.get(5)?,
        to_number: r.get(6)?,
        status: r.get(7)?,
        start_at: opt_ts(r, 8)?,
        end_at: opt_ts(r, 9)?,
        duration_ms: r.get(10)?,
        disconnection_reason: r.get(11)?,
        summary: r.get(12)?,
        last_event: r.get(13)?,
        version: r.get(14)?,
        updated_at: ts(r, 15)?,
    })
}

pub(super) const APPOINTMENT_COLS: &str = "company_id, appointment_id, calcom_uid, branch_id, \
    status, start_at, end_at, title, attendee_name, attendee_email, attendee_phone, \
    rescheduled_to_uid, source_event, version, updated_at, service_id, customer_id, timezone, \
    idempotency_key, sync_attempts, last_error, created_at, contact_source";

pub(super) fn appointment(r: &Row<'_>) -> rusqlite::Result<Appointment> {
    Ok(Appointment {
        company_id: parsed(r, 0)?,
        id: parsed(r, 1)?,
        calcom_uid: r.get(2)?,
        branch_id: opt_parsed(r, 3)?,
        status: parsed(r, 4)?,
        start_at: opt_ts(r, 5)?,
        end_at: opt_ts(r, 6)?,
        title: r.get(7)?,
        attendee_name: r.get(8)?,
        attendee_email: r.get(9)?,
        attendee_phone: r.get(10)?,
        rescheduled_to_uid: r.get(11)?,
        source_event: parsed(r, 12)?,
        version: r.get(13)?,
        updated_at: ts(r, 14)?,
        service_id: opt_parsed(r, 15)?,
        customer_id: opt_parsed(r, 16)?,
        timezone: r.get(17)?,
        idempotency_key: r.get(18)?,
        sync_attempts: r.get(19)?,
        last_error: r.get(20)?,
        created_at: ts(r, 21)?,
        contact_source: opt_parsed(r, 22)?,
    })
}

pub(super) const SERVICE_COLS: &str = "company_id, service_id, branch_id, name, \
    duration_minutes, price_cents, currency, calcom_event_type_id, active, metadata, created_at";

pub(super) fn service(r: &Row<'_>) -> rusqlite::Result<Service> {
    Ok(Service {
        company_id: parsed(r, 0)?,
        id: parsed(r, 1)?,
        branch_id: opt_parsed(r, 2)?,
        name: r.get(3)?,
        duration_minutes: r.get(4)?,
        price_cents: r.get(5)?,
        currency: r.get(6)?,
        calcom_event_type_id: r.get(7)?,
        active: r.get(8)?,
        metadata: opt_json(r, 9)?.unwrap_or_default(),
        created_at: ts(r, 10)?,
    })
}

pub(super) const STAFF_COLS: &str =
    "company_id, staff_id, branch_id, name, email, active, created_at";

pub(super) fn staff(r: &Row<'_>) -> rusqlite::Result<Staff> {
    Ok(Staff {
        company_id: parsed(r, 0)?,
        id: parsed(r, 1)?,
        branch_id: opt_parsed(r, 2)?,
        name: r.get(3)?,
        email: r.get(4)?,
        active: r.get(5)?,
        created_at: ts(r, 6)?,
    })
}

pub(super) const CUSTOMER_COLS: &str = "company_id, customer_id, name, phone, email, created_at";

pub(super) fn customer(r: &Row<'_>) -> rusqlite::Result<Customer> {
    Ok(Customer {
        company_id: parsed(r, 0)?,
        id: parsed(r, 1)?,
        name: r.get(2)?,
        phone: r.get(3)?,
        email: r.get(4)?,
        created_at: ts(r, 5)?,
    })
}
