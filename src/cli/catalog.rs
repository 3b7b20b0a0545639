//! Catalog commands: services, staff and their assignments, appointments. A branch's
//! Cal.com connection and settings (`branch set-calcom`, `branch update`) are in
//! `catalog_branch.rs`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use askpro_actors::catalog::{Assignment, Service, Staff};
use askpro_actors::domain::{Appointment, AppointmentStatus, ContactSource};
use askpro_actors::{BranchId, CompanyId, StateStore};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use serde_json::{json, Value};
use uuid::Uuid;

use super::output::emit;
use crate::config::Config;

#[path = "catalog_branch.rs"]
mod branch;
pub(super) use branch::{agent_id, find_branch, set_calcom, shown_branch, update_branch};
pub use branch::{SetCalcomArgs, UpdateBranchArgs};

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service a company (or one of its branches) offers; prints it with its "id".
    Create {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Offer it at this branch only (default: every branch of the company).
        #[arg(long, value_name = "ID")]
        branch: Option<BranchId>,
        /// Length of an appointment.
        #[arg(long, default_value_t = 30)]
        duration_minutes: u32,
        /// Price in minor units (cents).
        #[arg(long, default_value_t = 0)]
        price_cents: i64,
        /// ISO 4217 code.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Cal.com event type id; overrides the branch's.
        #[arg(long, value_name = "ID")]
        event_type: Option<i64>,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a company's services, oldest first.
    List {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum StaffCmd {
    /// Add a staff member; prints it with its "id".
    Create {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Display name.
        #[arg(long)]
        name: String,
        /// The branch the member works at.
        #[arg(long, value_name = "ID")]
        branch: Option<BranchId>,
        #[arg(long)]
        email: Option<String>,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a company's staff, oldest first.
    List {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let a staff member perform a service (idempotent).
    Assign {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// The staff member's id (see `askpro staff list`).
        #[arg(long, value_name = "ID")]
        staff: Uuid,
        /// The service's id (see `askpro service list`).
        #[arg(long, value_name = "ID")]
        service: Uuid,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AppointmentsCmd {
    /// List a company's appointments, oldest first.
    List {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// scheduled, pending_sync, cancelled or failed.
        #[arg(long, value_parser = parse_status)]
        status: Option<AppointmentStatus>,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_status(s: &str) -> Result<AppointmentStatus, String> {
    s.parse()
}

pub async fn service(config: &Config, cmd: ServiceCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    match cmd {
        ServiceCmd::Create {
            company,
            name,
            branch,
            duration_minutes,
            price_cents,
            currency,
            event_type,
            json,
        } => {
            require_company(store.as_ref(), company).await?;
            if let Some(branch) = branch {
                require_branch(store.as_ref(), company, branch).await?;
            }
            let name = non_empty("--name", &name)?;
            if duration_minutes == 0 || duration_minutes > 24 * 60 {
                bail!("--duration-minutes {duration_minutes} must be between 1 and 1440");
            }
            if price_cents < 0 {
                bail!("--price-cents {price_cents} must not be negative");
            }
            let currency = currency.trim().to_ascii_uppercase();
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                bail!("--currency {currency:?} is not an ISO 4217 code (e.g. EUR)");
            }
            if let Some(id) = event_type.filter(|id| *id <= 0) {
                bail!("--event-type {id} must be a positive Cal.com event type id");
            }
            let service = Service {
                company_id: company,
                id: Uuid::now_v7(),
                branch_id: branch,
                name,
                duration_minutes,
                price_cents,
                currency,
                calcom_event_type_id: event_type,
                active: true,
                metadata: BTreeMap::new(),
                created_at: Utc::now(),
            };
            store.create_service(&service).await?;
            emit(json, &service, |s| {
                format!(
                    "created service {} ({}, {} min)",
                    s.id, s.name, s.duration_minutes
                )
            })
        }
        ServiceCmd::List { company, json } => {
            require_company(store.as_ref(), company).await?;
            let services = store.services(company).await?;
            emit(json, &services, |list| {
                lines(list.iter().map(|s| {
                    let at = s
                        .branch_id
                        .map_or("all branches".to_owned(), |b| b.to_string());
                    format!("{}  {}  {} min  {}", s.id, s.name, s.duration_minutes, at)
                }))
            })
        }
    }
}

pub async fn staff(config: &Config, cmd: StaffCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    match cmd {
        StaffCmd::Create {
            company,
            name,
            branch,
            email,
            json,
        } => {
            require_company(store.as_ref(), company).await?;
            if let Some(branch) = branch {
                require_branch(store.as_ref(), company, branch).await?;
            }
            let name = non_empty("--name", &name)?;
            let email = email.map(|e| e.trim().to_owned());
            if let Some(e) = email.as_deref().filter(|e| !is_plausible_email(e)) {
                bail!("--email {e:?} is not an email address");
            }
            let staff = Staff {
                company_id: company,
                id: Uuid::now_v7(),
                branch_id: branch,
                name,
                email,
                active: true,
                created_at: Utc::now(),
            };
            store.create_staff(&staff).await?;
            emit(json, &staff, |s| {
                format!("created staff member {} ({})", s.id, s.name)
            })
        }
        StaffCmd::List { company, json } => {
            require_company(store.as_ref(), company).await?;
            let staff = store.staff(company).await?;
            emit(json, &staff, |list| {
                lines(list.iter().map(|s| {
                    let email = s.email.as_deref().unwrap_or("-");
                    format!("{}  {}  {}", s.id, s.name, email)
                }))
            })
        }
        StaffCmd::Assign {
            company,
            staff,
            service,
            json,
        } => {
            require_company(store.as_ref(), company).await?;
            if !store.staff(company).await?.iter().any(|s| s.id == staff) {
                bail!("--staff {staff}: company {company} has no such staff member (see `askpro staff list`)");
            }
            if store.service(company, service).await?.is_none() {
                bail!("--service {service}: company {company} has no such service (see `askpro service list`)");
            }
            let assignment = Assignment {
                company_id: company,
                staff_id: staff,
                service_id: service,
            };
            store.assign(&assignment).await?;
            emit(json, &assignment, |a| {
                format!(
                    "assigned staff member {} to service {}",
                    a.staff_id, a.service_id
                )
            })
        }
    }
}

pub async fn appointments(config: &Config, cmd: AppointmentsCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    let AppointmentsCmd::List {
        company,
        status,
        json,
    } = cmd;
    require_company(store.as_ref(), company).await?;
    let list = match status {
        Some(status) => {
            store
                .appointments_by_status(company, status, usize::MAX)
                .await?
        }
        None => store.appointments(company).await?,
    };
    let shown: Vec<Value> = list.iter().map(shown_appointment).collect();
    emit(json, &shown, |_| {
        if list.is_empty() {
            return format!("company {company} has no appointments");
        }
        lines(list.iter().map(|a| {
            let start = a.start_at.map_or("-".to_owned(), rfc3339);
            let who = a.attendee_name.as_deref().unwrap_or("-");
            let uid = a.calcom_uid.as_deref().unwrap_or("-");
            let contact = a.contact_source.map_or("-", |c| c.as_str());
            format!(
                "{}  {}  {}  {}  {}  contact {}",
                a.id,
                a.status.as_str(),
                start,
                who,
                uid,
                contact
            )
        }))
    })
}

fn shown_appointment(a: &Appointment) -> Value {
    json!({
        "id": a.id,
        "status": a.status.as_str(),
        "start": a.start_at.map(rfc3339),
        "end": a.end_at.map(rfc3339),
        "calcom_uid": a.calcom_uid,
        "branch_id": a.branch_id,
        "service_id": a.service_id,
        "customer_id": a.customer_id,
        "attendee_name": a.attendee_name,
        "contact_source": a.contact_source.map(|c| c.as_str()),
        "caller_left_no_contact": a.contact_source == Some(ContactSource::BranchFallback),
        "timezone": a.timezone,
        "last_error": a.last_error,
        "sync_attempts": a.sync_attempts,
        "created_at": rfc3339(a.created_at),
    })
}

/// RFC 3339 in UTC with a `Z` suffix, to the second.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) async fn require_company(store: &dyn StateStore, id: CompanyId) -> Result<()> {
    if store.company(id).await?.is_none() {
        bail!("--company {id}: no such company (see `askpro company list`)");
    }
    Ok(())
}

async fn require_branch(store: &dyn StateStore, company: CompanyId, id: BranchId) -> Result<()> {
    if store.branch(company, id).await?.is_none() {
        bail!("--branch {id}: company {company} has no such branch (see `askpro branch list`)");
    }
    Ok(())
}

pub(super) fn non_empty(flag: &str, value: &str) -> Result<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        bail!("{flag} must not be empty");
    }
    Ok(trimmed.to_owned())
}

/// Catches typos, not every invalid address: one `@` with text on both sides.
fn is_plausible_email(e: &str) -> bool {
    matches!(e.split_once('@'), Some((user, host)) if !user.is_empty() && host.contains('.') && !host.contains('@'))
}

fn lines(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_loosely() {
        assert!(is_plausible_email("ada@example.org"));
        assert!(!is_plausible_email("ada"));
        assert!(!is_plausible_email("@example.org"));
        assert!(!is_plausible_email("a@b@c.org"));
    }
}
