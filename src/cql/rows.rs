//! Rows as the driver decodes them (columns matched by name) and their conversion into the
//! domain types. A value the domain cannot hold (a negative count, an unknown status, bad
//! JSON) is `CqlError::Corrupt`; a null in a column the store always writes fails decoding.

use std::collections::BTreeMap;
use std::str::FromStr;

use askpro_actors::catalog::{CalcomConfig, Customer, Service, Staff};
use askpro_actors::domain::{Branch, Company, EventRow, EventStatus, Secret};
use askpro_actors::ids::{BranchId, CompanyId, EventId};
use askpro_actors::record::Provider;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use scylla::{DeserializeRow, SerializeRow};
use uuid::Uuid;

use super::CqlError;

pub(super) type Res<T> = Result<T, CqlError>;

pub(super) fn corrupt(table: &'static str, problem: impl Into<String>) -> CqlError {
    CqlError::Corrupt {
        table,
        problem: problem.into(),
    }
}

pub(super) fn parse<T: FromStr>(table: &'static str, column: &str, text: &str) -> Res<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| corrupt(table, format!("{column} {text:?}: {e}")))
}

pub(super) fn unsigned(table: &'static str, column: &str, value: i32) -> Res<u32> {
    u32::try_from(value).map_err(|_| corrupt(table, format!("{column} is negative: {value}")))
}

/// A `u32` for an `int` column (values above `i32::MAX` are refused, not wrapped).
pub(super) fn int(value: u32) -> Res<i32> {
    i32::try_from(value).map_err(|_| CqlError::Setting(format!("{value} does not fit a CQL int")))
}

/// The UTC day of an instant (the `day` of `events_by_day`).
pub(super) fn utc_day(t: DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}

#[derive(DeserializeRow)]
pub(super) struct CompanyRow {
    company_id: Uuid,
    name: String,
    allow_unsigned_calcom: bool,
    created_at: DateTime<Utc>,
}

impl From<CompanyRow> for Company {
    fn from(r: CompanyRow) -> Self {
        Company {
            id: CompanyId(r.company_id),
            name: r.name,
            allow_unsigned_calcom: r.allow_unsigned_calcom,
            created_at: r.created_at,
        }
    }
}

/// A branch's Retell LLM (`branch_retell_llms`).
#[derive(DeserializeRow)]
pub(super) struct BranchLlmRow {
    pub branch_id: Uuid,
    pub llm_id: Option<String>,
}

#[derive(DeserializeRow)]
pub(super) struct BranchRow {
    company_id: Uuid,
    branch_id: Uuid,
    name: String,
    phone: String,
    timezone: String,
    retell_agent_id: Option<String>,
    calcom: Option<String>,
    created_at: DateTime<Utc>,
    fallback_email: Option<String>,
}

impl BranchRow {
    pub(super) fn into_domain(self) -> Res<Branch> {
        let calcom = match self.calcom {
            None => None,
            Some(json) => Some(
                serde_json::from_str::<CalcomConfig>(&json)
                    .map_err(|e| corrupt("branches", format!("calcom: {e}")))?,
            ),
        };
        Ok(Branch {
            id: BranchId(self.branch_id),
            company_id: CompanyId(self.company_id),
            name: self.name,
            phone: self.phone,
            timezone: self.timezone,
            retell_agent_id: self.retell_agent_id,
            calcom,
            created_at: self.created_at,
            fallback_email: self.fallback_email,
            // Lives in branch_retell_llms (0004); the store fills it in.
            retell_llm_id: None,
        })
    }
}

/// The `calcom` column of a branch.
pub(super) fn calcom_json(b: &Branch) -> Res<Option<String>> {
    b.calcom
        .as_ref()
        .map(|c| serde_json::to_string(c).map_err(|e| corrupt("branches", e.to_string())))
        .transpose()
}

/// A lookup row claimed with `INSERT ... IF NOT EXISTS` (see `claims.rs`).
#[derive(DeserializeRow)]
pub(super) struct PhoneRow {
    pub company_id: Uuid,
    pub branch_id: Uuid,
    pub claimed_at: Option<DateTime<Utc>>,
}

#[derive(DeserializeRow)]
pub(super) struct SecretRow {
    company_id: Uuid,
    provider: String,
    secret_id: String,
    value: String,
    created_at: DateTime<Utc>,
}

impl SecretRow {
    pub(super) fn into_domain(self) -> Res<Secret> {
        Ok(Secret {
            company_id: CompanyId(self.company_id),
            provider: parse::<Provider>("secrets", "provider", &self.provider)?,
            id: self.secret_id,
            value: self.value,
            created_at: self.created_at,
        })
    }
}

#[derive(DeserializeRow)]
pub(super) struct ServiceRow {
    company_id: Uuid,
    service_id: Uuid,
    branch_id: Option<Uuid>,
    name: String,
    duration_minutes: i32,
    price_cents: i64,
    currency: String,
    calcom_event_type_id: Option<i64>,
    active: bool,
    metadata: Option<BTreeMap<String, String>>,
    created_at: DateTime<Utc>,
}

impl ServiceRow {
    pub(super) fn into_domain(self) -> Res<Service> {
        Ok(Service {
            company_id: CompanyId(self.company_id),
            id: self.service_id,
            branch_id: self.branch_id.map(BranchId),
            name: self.name,
            duration_minutes: unsigned("services", "duration_minutes", self.duration_minutes)?,
            price_cents: self.price_cents,
            currency: self.currency,
            calcom_event_type_id: self.calcom_event_type_id,
            active: self.active,
            // An empty map is stored as no cells and reads back as null.
            metadata: self.metadata.unwrap_or_default(),
            created_at: self.created_at,
        })
    }
}

/// The values of `service_insert` / `service_write`, in column order.
#[derive(SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct ServiceValues<'a> {
    company_id: Uuid,
    service_id: Uuid,
    branch_id: Option<Uuid>,
    name: &'a str,
    duration_minutes: i32,
    price_cents: i64,
    currency: &'a str,
    calcom_event_type_id: Option<i64>,
    active: bool,
    metadata: &'a BTreeMap<String, String>,
    created_at: DateTime<Utc>,
}

impl<'a> ServiceValues<'a> {
    pub(super) fn of(s: &'a Service) -> Res<Self> {
        Ok(ServiceValues {
            company_id: s.company_id.0,
            service_id: s.id,
            branch_id: s.branch_id.map(|b| b.0),
            name: &s.name,
            duration_minutes: int(s.duration_minutes)?,
            price_cents: s.price_cents,
            currency: &s.currency,
            calcom_event_type_id: s.calcom_event_type_id,
            active: s.active,
            metadata: &s.metadata,
            created_at: s.created_at,
        })
    }
}

#[derive(DeserializeRow)]
pub(super) struct StaffRow {
    company_id: Uuid,
    staff_id: Uuid,
    branch_id: Option<Uuid>,
    name: String,
    email: Option<String>,
    active: bool,
    created_at: DateTime<Utc>,
}

impl From<StaffRow> for Staff {
    fn from(r: StaffRow) -> Self {
        Staff {
            company_id: CompanyId(r.company_id),
            id: r.staff_id,
            branch_id: r.branch_id.map(BranchId),
            name: r.name,
            email: r.email,
            active: r.active,
            created_at: r.created_at,
        }
    }
}

#[derive(DeserializeRow)]
pub(super) struct CustomerRow {
    company_id: Uuid,
    customer_id: Uuid,
    name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<CustomerRow> for Customer {
    fn from(r: CustomerRow) -> Self {
        Customer {
            company_id: CompanyId(r.company_id),
            id: r.customer_id,
            name: r.name,
            phone: r.phone,
            email: r.email,
            created_at: r.created_at,
        }
    }
}

#[derive(DeserializeRow)]
pub(super) struct EventRowCql {
    company_id: Uuid,
    event_id: Uuid,
    provider: String,
    event_type: String,
    dedup_key: String,
    status: String,
    attempts: i32,
    error: Option<String>,
    correlation_id: Uuid,
    secret_id: String,
    log_partition: i32,
    log_offset: i64,
    received_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    payload: Option<Vec<u8>>,
}

impl EventRowCql {
    pub(super) fn into_domain(self) -> Res<EventRow> {
        const T: &str = "events";
        Ok(EventRow {
            id: EventId(self.event_id),
            company_id: CompanyId(self.company_id),
            provider: parse::<Provider>(T, "provider", &self.provider)?,
            event_type: self.event_type,
            dedup_key: self.dedup_key,
            status: parse::<EventStatus>(T, "status", &self.status)?,
            attempts: unsigned(T, "attempts", self.attempts)?,
            error: self.error,
            correlation_id: self.correlation_id,
            secret_id: self.secret_id,
            partition: unsigned(T, "log_partition", self.log_partition)?,
            offset: u64::try_from(self.log_offset)
                .map_err(|_| corrupt(T, format!("log_offset is negative: {}", self.log_offset)))?,
            received_at: self.received_at,
            updated_at: self.updated_at,
            payload: Bytes::from(self.payload.unwrap_or_default()),
        })
    }
}
