//! The blocking SQL behind [`super::EmbeddedStore`]. Write functions open no transaction of
//! their own: the writer thread runs each one inside its batch's `BEGIN IMMEDIATE`
//! transaction and a savepoint of its own (see [`super::writer`]), which makes a
//! multi-statement write atomic and rolls back just that write when it returns an error.
//! Every statement goes through `prepare_cached`, so SQL is parsed once per connection.

use askpro_actors::domain::{Branch, Call, Company, DedupClaim, EventRow, EventStatus, PhoneRoute};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{CompanyId, EventId};
use askpro_actors::record::Provider;
use askpro_actors::store::ClaimRequest;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::store_rows::{self as rows, ms, opt_ms, Res};

/// Expired dedup rows deleted per claim, so the table stays small without a purge job and
/// without making any single claim slow.
pub(super) const PURGE_PER_CLAIM: i64 = 32;

fn company_exists(conn: &Connection, id: CompanyId) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM companies WHERE company_id = ?1")?
        .exists([id.to_string()])
}

pub(super) fn create_company(conn: &Connection, c: &Company) -> Res<()> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO companies ({}) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            rows::COMPANY_COLS
        ))?
        .execute(params![
            c.id.to_string(),
            c.name,
            c.allow_unsigned_calcom,
            ms(c.created_at)
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("company {} already exists", c.id)).into());
    }
    Ok(())
}

pub(super) fn create_branch(conn: &Connection, b: &Branch) -> Res<()> {
    if !company_exists(conn, b.company_id)? {
        return Err(StoreError::NotFound(format!("company {}", b.company_id)).into());
    }
    let owner: Option<(String, String)> = conn
        .prepare_cached("SELECT company_id, branch_id FROM phone_routes WHERE phone = ?1")?
        .query_row([&b.phone], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((company, branch)) = owner {
        return Err(StoreError::Conflict(format!(
            "phone number {} is already owned by branch {branch} of company {company}",
            b.phone
        ))
        .into());
    }
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO branches ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT DO NOTHING",
            rows::BRANCH_COLS
        ))?
        .execute(params![
            b.company_id.to_string(),
            b.id.to_string(),
            b.name,
            b.phone,
            b.timezone,
            ms(b.created_at),
            b.retell_agent_id,
            b.calcom.as_ref().map(rows::to_json).transpose()?,
            b.fallback_email,
            b.retell_llm_id,
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "branch {} of company {} already exists",
            b.id, b.company_id
        ))
        .into());
    }
    conn.prepare_cached(
        "INSERT INTO phone_routes (phone, company_id, branch_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![b.phone, b.company_id.to_string(), b.id.to_string()])?;
    super::store_catalog_sql::bump_routing_version(conn)
}

pub(super) fn resolve_phone(conn: &Connection, e164: &str) -> Res<Option<PhoneRoute>> {
    let route = conn
        .prepare_cached("SELECT company_id, branch_id FROM phone_routes WHERE phone = ?1")?
        .query_row([e164], |r| {
            Ok(PhoneRoute {
                company_id: rows::parsed(r, 0)?,
                branch_id: rows::parsed(r, 1)?,
            })
        })
        .optional()?;
    Ok(route)
}

pub(super) fn add_secret(conn: &Connection, s: &askpro_actors::domain::Secret) -> Res<()> {
    if !company_exists(conn, s.company_id)? {
        return Err(StoreError::NotFound(format!("company {}", s.company_id)).into());
    }
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO secrets ({}) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            rows::SECRET_COLS
        ))?
        .execute(params![
            s.company_id.to_string(),
            s.provider.as_str(),
            s.id,
            s.value,
            ms(s.created_at)
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "{} secret {} of company {} already exists",
            s.provider, s.id, s.company_id
        ))
        .into());
    }
    Ok(())
}

pub(super) fn remove_secret(
    conn: &Connection,
    company_id: CompanyId,
    provider: Provider,
    id: &str,
) -> Res<bool> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM secrets WHERE company_id = ?1 AND provider = ?2 AND secret_id = ?3",
        )?
        .execute(params![company_id.to_string(), provider.as_str(), id])?;
    Ok(deleted > 0)
}

/// Insert-if-absent for the whole slice in one transaction, pointers included.
pub(super) fn record_events(conn: &Connection, events: &[EventRow]) -> Res<()> {
    {
        let mut insert = conn.prepare_cached(&format!(
            "INSERT INTO events ({}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (company_id, event_id) DO NOTHING",
            rows::EVENT_COLS
        ))?;
        let mut pointer = conn.prepare_cached(
            "INSERT INTO event_pointers (event_id, company_id) VALUES (?1, ?2)
             ON CONFLICT (event_id) DO NOTHING",
        )?;
        for e in events {
            let (company, id) = (e.company_id.to_string(), e.id.to_string());
            insert.execute(params![
                company,
                id,
                e.provider.as_str(),
                e.event_type,
                e.dedup_key,
                e.status.as_str(),
                e.attempts,
                e.error,
                e.correlation_id.to_string(),
                e.secret_id,
                e.partition,
                e.offset,
                ms(e.received_at),
                ms(e.updated_at),
                &e.payload[..],
            ])?;
            pointer.execute(params![id, company])?;
        }
    }
    Ok(())
}

pub(super) struct StatusChange<'a> {
    pub company_id: CompanyId,
    pub id: EventId,
    pub status: EventStatus,
    pub attempts: u32,
    pub error: Option<&'a str>,
    pub now: DateTime<Utc>,
}

pub(super) fn set_event_status(conn: &Connection, c: &StatusChange<'_>) -> Res<()> {
    let updated = conn
        .prepare_cached(
            "UPDATE events SET status = ?3, attempts = ?4, error = ?5, updated_at = ?6
             WHERE company_id = ?1 AND event_id = ?2",
        )?
        .execute(params![
            c.company_id.to_string(),
            c.id.to_string(),
            c.status.as_str(),
            c.attempts,
            c.error,
            ms(c.now)
        ])?;
    if updated == 0 {
        return Err(
            StoreError::NotFound(format!("event {} of company {}", c.id, c.company_id)).into(),
        );
    }
    Ok(())
}

pub(super) fn event(conn: &Connection, company: CompanyId, id: EventId) -> Res<Option<EventRow>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {} FROM events WHERE company_id = ?1 AND event_id = ?2",
            rows::EVENT_COLS
        ))?
        .query_row([company.to_string(), id.to_string()], rows::event)
        .optional()?;
    Ok(row)
}

pub(super) fn find_event(conn: &Connection, id: EventId) -> Res<Option<EventRow>> {
    let company: Option<CompanyId> = conn
        .prepare_cached("SELECT company_id FROM event_pointers WHERE event_id = ?1")?
        .query_row([id.to_string()], |r| rows::parsed(r, 0))
        .optional()?;
    match company {
        Some(company) => event(conn, company, id),
        None => Ok(None),
    }
}

/// The claim protocol, in one transaction (see [`askpro_actors::store::StateStore::dedup_claim`]).
pub(super) fn dedup_claim(conn: &Connection, req: &ClaimRequest<'_>) -> Res<DedupClaim> {
    let (company, now) = (req.company_id.to_string(), ms(req.now));
    conn.prepare_cached(
        "DELETE FROM dedup WHERE (company_id, dedup_key) IN
         (SELECT company_id, dedup_key FROM dedup WHERE expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, PURGE_PER_CLAIM])?;
    let current = conn
        .prepare_cached(&format!(
            "SELECT {} FROM dedup WHERE company_id = ?1 AND dedup_key = ?2 AND expires_at > ?3",
            rows::DEDUP_COLS
        ))?
        .query_row(params![company, req.key, now], rows::dedup)
        .optional()?;
    let expires_at = match current {
        None => req.expires_at,
        Some(entry) if entry.completed => {
            return Ok(DedupClaim::Completed {
                holder: entry.holder,
            })
        }
        // Our own earlier claim (a redelivery), or a lease whose holder died: take it over.
        // Keep the later expiry so a key is never forgotten while it is leased.
        Some(entry) if entry.holder == req.holder || entry.lease_until <= req.now => {
            entry.expires_at.max(req.expires_at)
        }
        Some(entry) => {
            return Ok(DedupClaim::InFlight {
                holder: entry.holder,
                lease_until: entry.lease_until,
            })
        }
    };
    conn.prepare_cached(
        "INSERT INTO dedup (company_id, dedup_key, holder, completed, lease_until, expires_at)
         VALUES (?1, ?2, ?3, 0, ?4, ?5)
         ON CONFLICT (company_id, dedup_key) DO UPDATE SET holder = excluded.holder,
             completed = 0, lease_until = excluded.lease_until, expires_at = excluded.expires_at",
    )?
    .execute(params![
        company,
        req.key,
        req.holder.to_string(),
        ms(req.lease_until),
        ms(expires_at)
    ])?;
    Ok(DedupClaim::Claimed)
}

/// Marks the key completed by `holder`. If another event holds the key now (our lease ran out
/// and it took over), the key is still marked completed, now naming `holder`: the work is
/// done, and the other holder will see `Completed` on its next claim. A key that expired
/// and was purged meanwhile is left absent (there is no window left to protect).
pub(super) fn dedup_complete(
    conn: &Connection,
    company: CompanyId,
    key: &str,
    holder: EventId,
) -> Res<()> {
    let company_text = company.to_string();
    let current: Option<String> = conn
        .prepare_cached("SELECT holder FROM dedup WHERE company_id = ?1 AND dedup_key = ?2")?
        .query_row(params![company_text, key], |r| r.get(0))
        .optional()?;
    let Some(current) = current else {
        tracing::debug!(company_id = %company, key, holder = %holder, "dedup key gone before completion");
        return Ok(());
    };
    if current != holder.to_string() {
        tracing::warn!(company_id = %company, key, holder = %holder, current_holder = current, "dedup key completed by a holder whose lease was taken over");
    }
    conn.prepare_cached(
        "UPDATE dedup SET completed = 1, holder = ?3 WHERE company_id = ?1 AND dedup_key = ?2",
    )?
    .execute(params![company_text, key, holder.to_string()])?;
    Ok(())
}

pub(super) fn dedup_release(
    conn: &Connection,
    company: CompanyId,
    key: &str,
    holder: EventId,
) -> Res<()> {
    conn.prepare_cached(
        "DELETE FROM dedup WHERE company_id = ?1 AND dedup_key = ?2 AND holder = ?3
         AND completed = 0",
    )?
    .execute(params![company.to_string(), key, holder.to_string()])?;
    Ok(())
}

/// Deletes every dedup key expired at `now`; returns how many.
pub(super) fn purge_expired(conn: &Connection, now: DateTime<Utc>) -> Res<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM dedup WHERE expires_at <= ?1")?
        .execute([ms(now)])?;
    Ok(deleted as u64)
}

/// Writes the call unless the stored one is newer; one conditional upsert statement.
pub(super) fn upsert_call(conn: &Connection, c: &Call) -> Res<bool> {
    let changed = conn
        .prepare_cached(&format!(
            "INSERT INTO calls ({}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT (company_id, call_id) DO UPDATE SET \
             branch_id = excluded.branch_id, agent_id = excluded.agent_id, \
             direction = excluded.direction, from_number = excluded.from_number, \
             to_number = excluded.to_number, status = excluded.status, \
             start_at = excluded.start_at, end_at = excluded.end_at, \
             duration_ms = excluded.duration_ms, \
             disconnection_reason = excluded.disconnection_reason, \
             summary = excluded.summary, last_event = excluded.last_event, \
             version = excluded.version, updated_at = excluded.updated_at \
             WHERE calls.version <= excluded.version",
            rows::CALL_COLS
        ))?
        .execute(params![
            c.company_id.to_string(),
            c.call_id,
            c.branch_id.map(|b| b.to_string()),
            c.agent_id,
            c.direction,
            c.from_number,
            c.to_number,
            c.status,
            opt_ms(c.start_at),
            opt_ms(c.end_at),
            c.duration_ms,
            c.disconnection_reason,
            c.summary,
            c.last_event,
            c.version,
            ms(c.updated_at),
        ])?;
    Ok(changed == 1)
}

/// The write of a durability barrier (`sync()`).
///
/// The writer runs with `synchronous=NORMAL`: in WAL mode a commit is then safe against a
/// process crash but the WAL is only fsync'd at checkpoints. The writer thread commits a batch
/// holding a barrier under `synchronous=FULL`, which fsyncs the WAL file; since the WAL is one
/// append-only file, that fsync also covers every frame committed before it (earlier WAL
/// generations were fsync'd by the checkpoint that reset it). A transaction that writes no
/// frame would not fsync, hence this row.
pub(super) fn sync(conn: &Connection, now: DateTime<Utc>) -> Res<()> {
    conn.prepare_cached(
        "INSERT INTO sync_barrier (id, generation, synced_at) VALUES (1, 1, ?1)
         ON CONFLICT (id) DO UPDATE
         SET generation = generation + 1, synced_at = excluded.synced_at",
    )?
    .execute([ms(now)])?;
    Ok(())
}
