//! The blocking SQL of branch updates, the routing version, the catalog (services, staff,
//! assignments, customers) and the appointment model. Like [`super::store_sql`], every write
//! runs inside the writer thread's batch transaction and its own savepoint, so a function
//! that reads and then writes is atomic and serialized with every other write.

use askpro_actors::catalog::{Assignment, Customer, DefaultService, Service, Staff};
use askpro_actors::domain::{Appointment, Branch};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{BranchId, CompanyId};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::store_rows::{self as rows, ms, opt_ms, to_json, Res};

fn exists(conn: &Connection, query: &str, args: impl rusqlite::Params) -> rusqlite::Result<bool> {
    conn.prepare_cached(query)?.exists(args)
}

fn company_must_exist(conn: &Connection, company: CompanyId) -> Res<()> {
    let sql = "SELECT 1 FROM companies WHERE company_id = ?1";
    if !exists(conn, sql, [company.to_string()])? {
        return Err(StoreError::NotFound(format!("company {company}")).into());
    }
    Ok(())
}

fn branch_must_exist(conn: &Connection, company: CompanyId, branch: BranchId) -> Res<()> {
    let sql = "SELECT 1 FROM branches WHERE company_id = ?1 AND branch_id = ?2";
    if !exists(conn, sql, [company.to_string(), branch.to_string()])? {
        return Err(StoreError::NotFound(format!("branch {branch} of company {company}")).into());
    }
    Ok(())
}

/// Bumps the single routing-version row (see `StateStore::routing_version`).
pub(super) fn bump_routing_version(conn: &Connection) -> Res<()> {
    conn.prepare_cached(
        "INSERT INTO routing_version (id, version) VALUES (1, 1)
         ON CONFLICT (id) DO UPDATE SET version = version + 1",
    )?
    .execute([])?;
    Ok(())
}

pub(super) fn routing_version(conn: &Connection) -> Res<u64> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM routing_version WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(version.map_or(0, |v| v.max(0).unsigned_abs()))
}

/// Replaces the branch; a changed phone moves its `phone_routes` entry in the same
/// transaction, so no reader ever sees the number owned twice or by nobody mid-move.
pub(super) fn update_branch(conn: &Connection, b: &Branch) -> Res<()> {
    let (company, id) = (b.company_id.to_string(), b.id.to_string());
    let old_phone: Option<String> = conn
        .prepare_cached("SELECT phone FROM branches WHERE company_id = ?1 AND branch_id = ?2")?
        .query_row([&company, &id], |r| r.get(0))
        .optional()?;
    let Some(old_phone) = old_phone else {
        return Err(
            StoreError::NotFound(format!("branch {} of company {}", b.id, b.company_id)).into(),
        );
    };
    let calcom = b.calcom.as_ref().map(to_json).transpose()?;
    if old_phone != b.phone {
        let owner: Option<(String, String)> = conn
            .prepare_cached("SELECT company_id, branch_id FROM phone_routes WHERE phone = ?1")?
            .query_row([&b.phone], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((owner_company, owner_branch)) = owner {
            if (&owner_company, &owner_branch) != (&company, &id) {
                return Err(StoreError::Conflict(format!(
                    "phone number {} is already owned by branch {owner_branch} of company \
                     {owner_company}",
                    b.phone
                ))
                .into());
            }
        }
        conn.prepare_cached(
            "DELETE FROM phone_routes WHERE phone = ?1 AND company_id = ?2 AND branch_id = ?3",
        )?
        .execute(params![old_phone, company, id])?;
    }
    conn.prepare_cached(
        "UPDATE branches SET name = ?3, phone = ?4, timezone = ?5, created_at = ?6,
         retell_agent_id = ?7, calcom = ?8, fallback_email = ?9, retell_llm_id = ?10
         WHERE company_id = ?1 AND branch_id = ?2",
    )?
    .execute(params![
        company,
        id,
        b.name,
        b.phone,
        b.timezone,
        ms(b.created_at),
        b.retell_agent_id,
        calcom,
        b.fallback_email,
        b.retell_llm_id
    ])?;
    if old_phone != b.phone {
        conn.prepare_cached(
            "INSERT INTO phone_routes (phone, company_id, branch_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (phone) DO NOTHING",
        )?
        .execute(params![b.phone, company, id])?;
    }
    bump_routing_version(conn)
}

fn insert_service(conn: &Connection, s: &Service) -> Res<()> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO services ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT DO NOTHING",
            rows::SERVICE_COLS
        ))?
        .execute(params![
            s.company_id.to_string(),
            s.id.to_string(),
            s.branch_id.map(|b| b.to_string()),
            s.name,
            s.duration_minutes,
            s.price_cents,
            s.currency,
            s.calcom_event_type_id,
            s.active,
            to_json(&s.metadata)?,
            ms(s.created_at),
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "service {} of company {} already exists",
            s.id, s.company_id
        ))
        .into());
    }
    Ok(())
}

pub(super) fn create_service(conn: &Connection, s: &Service) -> Res<()> {
    company_must_exist(conn, s.company_id)?;
    if let Some(branch) = s.branch_id {
        branch_must_exist(conn, s.company_id, branch)?;
    }
    insert_service(conn, s)
}

/// The branch's first active service, or the candidate created with its assignments. The
/// writer serializes this read-then-write with every other write (also across processes:
/// `BEGIN IMMEDIATE`), which is what makes concurrent calls create exactly one service.
pub(super) fn ensure_default_service(
    conn: &Connection,
    branch: &Branch,
    candidate: &Service,
) -> Res<DefaultService> {
    let company = branch.company_id.to_string();
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {} FROM services WHERE company_id = ?1 AND active = 1
             AND (branch_id IS NULL OR branch_id = ?2)
             ORDER BY created_at, service_id LIMIT 1",
            rows::SERVICE_COLS
        ))?
        .query_row([&company, &branch.id.to_string()], rows::service)
        .optional()?;
    if let Some(service) = existing {
        return Ok(DefaultService::Existing(service));
    }
    insert_service(conn, candidate)?;
    let staff_ids: Vec<Uuid> = {
        let mut stmt = conn.prepare_cached(
            "SELECT staff_id FROM staff WHERE company_id = ?1 AND branch_id = ?2 AND active = 1
             ORDER BY created_at, staff_id",
        )?;
        let ids = stmt.query_map([&company, &branch.id.to_string()], |r| rows::parsed(r, 0))?;
        ids.collect::<rusqlite::Result<_>>()?
    };
    let assignments: Vec<Assignment> = staff_ids
        .into_iter()
        .map(|staff_id| Assignment {
            company_id: branch.company_id,
            staff_id,
            service_id: candidate.id,
        })
        .collect();
    for a in &assignments {
        insert_assignment(conn, a)?;
    }
    tracing::info!(
        company_id = %branch.company_id,
        branch_id = %branch.id,
        service_id = %candidate.id,
        assignments = assignments.len(),
        "created default service"
    );
    Ok(DefaultService::Created {
        service: candidate.clone(),
        assignments,
    })
}

pub(super) fn create_staff(conn: &Connection, s: &Staff) -> Res<()> {
    company_must_exist(conn, s.company_id)?;
    if let Some(branch) = s.branch_id {
        branch_must_exist(conn, s.company_id, branch)?;
    }
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO staff ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            rows::STAFF_COLS
        ))?
        .execute(params![
            s.company_id.to_string(),
            s.id.to_string(),
            s.branch_id.map(|b| b.to_string()),
            s.name,
            s.email,
            s.active,
            ms(s.created_at),
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "staff member {} of company {} already exists",
            s.id, s.company_id
        ))
        .into());
    }
    Ok(())
}

fn insert_assignment(conn: &Connection, a: &Assignment) -> Res<()> {
    conn.prepare_cached(
        "INSERT INTO assignments (company_id, staff_id, service_id) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        a.company_id.to_string(),
        a.staff_id.to_string(),
        a.service_id.to_string()
    ])?;
    Ok(())
}

pub(super) fn assign(conn: &Connection, a: &Assignment) -> Res<()> {
    let company = a.company_id.to_string();
    let staff_sql = "SELECT 1 FROM staff WHERE company_id = ?1 AND staff_id = ?2";
    if !exists(conn, staff_sql, [&company, &a.staff_id.to_string()])? {
        return Err(StoreError::NotFound(format!(
            "staff member {} of company {}",
            a.staff_id, a.company_id
        ))
        .into());
    }
    let service_sql = "SELECT 1 FROM services WHERE company_id = ?1 AND service_id = ?2";
    if !exists(conn, service_sql, [&company, &a.service_id.to_string()])? {
        return Err(StoreError::NotFound(format!(
            "service {} of company {}",
            a.service_id, a.company_id
        ))
        .into());
    }
    insert_assignment(conn, a)
}

/// See `StateStore::upsert_customer`: by phone (filling gaps), else by id.
pub(super) fn upsert_customer(conn: &Connection, c: &Customer) -> Res<Customer> {
    let company = c.company_id.to_string();
    let found = match &c.phone {
        Some(phone) => conn
            .prepare_cached(&format!(
                "SELECT {} FROM customers WHERE company_id = ?1 AND phone = ?2",
                rows::CUSTOMER_COLS
            ))?
            .query_row([&company, phone], rows::customer)
            .optional()?,
        None => conn
            .prepare_cached(&format!(
                "SELECT {} FROM customers WHERE company_id = ?1 AND customer_id = ?2",
                rows::CUSTOMER_COLS
            ))?
            .query_row([&company, &c.id.to_string()], rows::customer)
            .optional()?,
    };
    let Some(mut stored) = found else {
        let inserted = conn
            .prepare_cached(&format!(
                "INSERT INTO customers ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO NOTHING",
                rows::CUSTOMER_COLS
            ))?
            .execute(params![
                company,
                c.id.to_string(),
                c.name,
                c.phone,
                c.email,
                ms(c.created_at)
            ])?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "customer {} of company {} exists with another phone",
                c.id, c.company_id
            ))
            .into());
        }
        return Ok(c.clone());
    };
    if c.phone.is_some() && (stored.name.is_none() || stored.email.is_none()) {
        stored.name = stored.name.or_else(|| c.name.clone());
        stored.email = stored.email.or_else(|| c.email.clone());
        conn.prepare_cached(
            "UPDATE customers SET name = ?3, email = ?4 WHERE company_id = ?1 AND customer_id = ?2",
        )?
        .execute(params![
            company,
            stored.id.to_string(),
            stored.name,
            stored.email
        ])?;
    }
    Ok(stored)
}

/// The id of the tenant's appointment whose `column` (`calcom_uid` or `idempotency_key`)
/// holds `value`.
fn owner(
    conn: &Connection,
    column: &str,
    company: &str,
    value: Option<&str>,
) -> Res<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let query =
        format!("SELECT appointment_id FROM appointments WHERE company_id = ?1 AND {column} = ?2");
    Ok(conn
        .prepare_cached(&query)?
        .query_row([company, value], |r| r.get(0))
        .optional()?)
}

/// Keyed by id. A row whose id is not stored falls back to the row owning its Cal.com uid
/// (webhooks of bookings made in Cal.com may carry fresh ids), keeping that row's id. A uid
/// or idempotency key owned by another row, or a different one than the stored row has, is a
/// conflict; a missing one keeps the stored value. Older versions do not apply.
pub(super) fn upsert_appointment(conn: &Connection, a: &Appointment) -> Res<bool> {
    let company = a.company_id.to_string();
    let uid_owner = owner(conn, "calcom_uid", &company, a.calcom_uid.as_deref())?;
    let key_owner = owner(
        conn,
        "idempotency_key",
        &company,
        a.idempotency_key.as_deref(),
    )?;
    let stored = match stored_keys(conn, &company, &a.id.to_string())? {
        Some(row) => Some(row),
        None => match &uid_owner {
            Some(id) => stored_keys(conn, &company, id)?,
            None => None,
        },
    };
    let id = stored
        .as_ref()
        .map_or_else(|| a.id.to_string(), |s| s.id.clone());
    for (what, owner) in [("calcom uid", &uid_owner), ("idempotency key", &key_owner)] {
        if let Some(other) = owner.as_ref().filter(|o| **o != id) {
            return Err(StoreError::Conflict(format!(
                "{what} of appointment {} is already used by appointment {other} of company {}",
                a.id, a.company_id
            ))
            .into());
        }
    }
    if let Some(stored) = stored {
        for (what, old, new) in [
            ("calcom uid", &stored.uid, &a.calcom_uid),
            ("idempotency key", &stored.key, &a.idempotency_key),
        ] {
            if let (Some(old), Some(new)) = (old, new) {
                if old != new {
                    return Err(StoreError::Conflict(format!(
                        "appointment {id} of company {} has {what} {old}, not {new}",
                        a.company_id
                    ))
                    .into());
                }
            }
        }
        if stored.version > a.version {
            return Ok(false);
        }
    }
    write_appointment(conn, &id, a)?;
    Ok(true)
}

/// What an appointment write checks against the stored row.
struct StoredKeys {
    id: String,
    uid: Option<String>,
    key: Option<String>,
    version: i64,
}

fn stored_keys(conn: &Connection, company: &str, id: &str) -> Res<Option<StoredKeys>> {
    Ok(conn
        .prepare_cached(
            "SELECT appointment_id, calcom_uid, idempotency_key, version FROM appointments
             WHERE company_id = ?1 AND appointment_id = ?2",
        )?
        .query_row([company, id], |r| {
            Ok(StoredKeys {
                id: r.get(0)?,
                uid: r.get(1)?,
                key: r.get(2)?,
                version: r.get(3)?,
            })
        })
        .optional()?)
}

fn write_appointment(conn: &Connection, id: &str, a: &Appointment) -> Res<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO appointments ({}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
         ?19, ?20, ?21, ?22, ?23) \
         ON CONFLICT (company_id, appointment_id) DO UPDATE SET \
         calcom_uid = COALESCE(excluded.calcom_uid, appointments.calcom_uid), \
         branch_id = excluded.branch_id, status = excluded.status, \
         start_at = excluded.start_at, end_at = excluded.end_at, title = excluded.title, \
         attendee_name = excluded.attendee_name, attendee_email = excluded.attendee_email, \
         attendee_phone = excluded.attendee_phone, \
         rescheduled_to_uid = excluded.rescheduled_to_uid, \
         source_event = excluded.source_event, version = excluded.version, \
         updated_at = excluded.updated_at, service_id = excluded.service_id, \
         customer_id = excluded.customer_id, timezone = excluded.timezone, \
         idempotency_key = COALESCE(excluded.idempotency_key, appointments.idempotency_key), \
         sync_attempts = excluded.sync_attempts, last_error = excluded.last_error, \
         created_at = excluded.created_at, contact_source = excluded.contact_source",
        rows::APPOINTMENT_COLS
    ))?
    .execute(params![
        a.company_id.to_string(),
        id,
        a.calcom_uid,
        a.branch_id.map(|b| b.to_string()),
        a.status.as_str(),
        opt_ms(a.start_at),
        opt_ms(a.end_at),
        a.title,
        a.attendee_name,
        a.attendee_email,
        a.attendee_phone,
        a.rescheduled_to_uid,
        a.source_event.to_string(),
        a.version,
        ms(a.updated_at),
        a.service_id.map(|s| s.to_string()),
        a.customer_id.map(|c| c.to_string()),
        a.timezone,
        a.idempotency_key,
        a.sync_attempts,
        a.last_error,
        ms(a.created_at),
        a.contact_source.map(|c| c.as_str()),
    ])?;
    Ok(())
}
