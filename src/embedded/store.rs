//! The embedded [`StateStore`]: `state.db` in WAL mode with `synchronous=NORMAL`; `sync()` is
//! the power-loss durability barrier. One writer connection serializes this process's writes,
//! reads go to pooled reader connections, and all SQLite calls run on the blocking pool.
//!
//! Orderings the trait leaves open: companies and branches oldest first, secrets newest first,
//! appointments by start time. Timestamps keep millisecond precision (as in CQL).

use std::path::Path;
use std::sync::Arc;

use askpro_actors::domain::{
    Appointment, Branch, Call, Company, DedupClaim, DedupEntry, EventRow, EventStatus, PhoneRoute,
    Secret,
};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{BranchId, CompanyId, EventId};
use askpro_actors::record::Provider;
use askpro_actors::store::{ClaimRequest, StateStore, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::migrate;
use super::sqlite::{self, Db, Synchronous};
use super::store_rows::{self as rows, ms, Res};
use super::store_sql as sql;

/// File name of the state store inside the data dir.
pub const STATE_FILE: &str = "state.db";

/// The SQLite-backed state store. Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Db>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/state.db` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Db::open(dir, STATE_FILE, Synchronous::Normal, migrate::STATE).map_err(|e| {
            StoreError::Unavailable {
                operation: "open state store",
                source: Box::new(e),
            }
        })?;
        tracing::info!(dir = %dir.display(), "opened embedded state store");
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// Deletes every dedup key expired at `now`; returns how many. Claims already purge a
    /// few expired keys each, so this is only needed to reclaim space after a quiet period.
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.write("purge_expired", "dedup", move |conn| {
            let deleted = conn.execute("DELETE FROM dedup WHERE expires_at <= ?1", [ms(now)])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn run<T, F>(
        &self,
        operation: &'static str,
        table: &'static str,
        work: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Res<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        sqlite::blocking(
            move || work(&db).map_err(|e| e.into_store(operation, table)),
            |e| StoreError::Unavailable {
                operation,
                source: Box::new(e),
            },
        )
        .await
    }

    /// Runs `work` on a pooled reader connection.
    async fn read<T, F>(
        &self,
        operation: &'static str,
        table: &'static str,
        work: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Res<T> + Send + 'static,
    {
        self.run(operation, table, move |db| work(&*db.reader()?))
            .await
    }

    /// Runs `work` on the writer connection.
    async fn write<T, F>(
        &self,
        operation: &'static str,
        table: &'static str,
        work: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Res<T> + Send + 'static,
    {
        self.run(operation, table, move |db| work(&mut db.writer()))
            .await
    }

    /// Runs a single-row (or no-row) SELECT on a reader.
    async fn one<T, P>(
        &self,
        operation: &'static str,
        table: &'static str,
        query: String,
        args: P,
        map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>>
    where
        T: Send + 'static,
        P: rusqlite::Params + Send + 'static,
    {
        self.read(operation, table, move |conn| {
            Ok(conn
                .prepare_cached(&query)?
                .query_row(args, map)
                .optional()?)
        })
        .await
    }

    /// Runs a multi-row SELECT on a reader.
    async fn many<T, P>(
        &self,
        operation: &'static str,
        table: &'static str,
        query: String,
        args: P,
        map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>>
    where
        T: Send + 'static,
        P: rusqlite::Params + Send + 'static,
    {
        self.read(operation, table, move |conn| {
            let mut stmt = conn.prepare_cached(&query)?;
            let rows = stmt.query_map(args, map)?;
            Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
        })
        .await
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn create_company(&self, company: &Company) -> StoreResult<()> {
        let c = company.clone();
        self.write("create_company", "companies", move |conn| {
            let inserted = conn.execute(
                &format!(
                    "INSERT INTO companies ({}) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    rows::COMPANY_COLS
                ),
                params![
                    c.id.to_string(),
                    c.name,
                    c.allow_unsigned_calcom,
                    ms(c.created_at)
                ],
            )?;
            if inserted == 0 {
                return Err(
                    StoreError::Conflict(format!("company {} already exists", c.id)).into(),
                );
            }
            Ok(())
        })
        .await
    }

    async fn company(&self, id: CompanyId) -> StoreResult<Option<Company>> {
        let query = format!(
            "SELECT {} FROM companies WHERE company_id = ?1",
            rows::COMPANY_COLS
        );
        self.one(
            "company",
            "companies",
            query,
            [id.to_string()],
            rows::company,
        )
        .await
    }

    async fn companies(&self) -> StoreResult<Vec<Company>> {
        let query = format!(
            "SELECT {} FROM companies ORDER BY created_at, company_id",
            rows::COMPANY_COLS
        );
        self.many("companies", "companies", query, [], rows::company)
            .await
    }

    async fn create_branch(&self, branch: &Branch) -> StoreResult<()> {
        let b = branch.clone();
        self.write("create_branch", "branches", move |conn| {
            sql::create_branch(conn, &b)
        })
        .await
    }

    async fn branch(&self, company_id: CompanyId, id: BranchId) -> StoreResult<Option<Branch>> {
        let query = format!(
            "SELECT {} FROM branches WHERE company_id = ?1 AND branch_id = ?2",
            rows::BRANCH_COLS
        );
        let args = [company_id.to_string(), id.to_string()];
        self.one("branch", "branches", query, args, rows::branch)
            .await
    }

    async fn branches(&self, company_id: CompanyId) -> StoreResult<Vec<Branch>> {
        let query = format!(
            "SELECT {} FROM branches WHERE company_id = ?1 ORDER BY created_at, branch_id",
            rows::BRANCH_COLS
        );
        self.many(
            "branches",
            "branches",
            query,
            [company_id.to_string()],
            rows::branch,
        )
        .await
    }

    async fn resolve_phone(&self, e164: &str) -> StoreResult<Option<PhoneRoute>> {
        let e164 = e164.to_owned();
        self.read("resolve_phone", "phone_routes", move |conn| {
            sql::resolve_phone(conn, &e164)
        })
        .await
    }

    async fn add_secret(&self, secret: &Secret) -> StoreResult<()> {
        let s = secret.clone();
        self.write("add_secret", "secrets", move |conn| {
            sql::add_secret(conn, &s)
        })
        .await
    }

    async fn secrets(&self, company_id: CompanyId, provider: Provider) -> StoreResult<Vec<Secret>> {
        let query = format!(
            "SELECT {} FROM secrets WHERE company_id = ?1 AND provider = ?2
             ORDER BY created_at DESC, secret_id DESC",
            rows::SECRET_COLS
        );
        let args = [company_id.to_string(), provider.as_str().to_owned()];
        self.many("secrets", "secrets", query, args, rows::secret)
            .await
    }

    async fn remove_secret(
        &self,
        company_id: CompanyId,
        provider: Provider,
        id: &str,
    ) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write("remove_secret", "secrets", move |conn| {
            let deleted = conn.execute(
                "DELETE FROM secrets WHERE company_id = ?1 AND provider = ?2 AND secret_id = ?3",
                params![company_id.to_string(), provider.as_str(), id],
            )?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn record_events(&self, rows: &[EventRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        self.write("record_events", "events", move |conn| {
            sql::record_events(conn, &rows)
        })
        .await
    }

    async fn set_event_status(
        &self,
        company_id: CompanyId,
        id: EventId,
        status: EventStatus,
        attempts: u32,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let error = error.map(str::to_owned);
        self.write("set_event_status", "events", move |conn| {
            let updated = conn.execute(
                "UPDATE events SET status = ?3, attempts = ?4, error = ?5, updated_at = ?6
                 WHERE company_id = ?1 AND event_id = ?2",
                params![
                    company_id.to_string(),
                    id.to_string(),
                    status.as_str(),
                    attempts,
                    error,
                    ms(now)
                ],
            )?;
            if updated == 0 {
                return Err(
                    StoreError::NotFound(format!("event {id} of company {company_id}")).into(),
                );
            }
            Ok(())
        })
        .await
    }

    async fn event(&self, company_id: CompanyId, id: EventId) -> StoreResult<Option<EventRow>> {
        self.read("event", "events", move |conn| {
            sql::event(conn, company_id, id)
        })
        .await
    }

    async fn find_event(&self, id: EventId) -> StoreResult<Option<EventRow>> {
        self.read("find_event", "events", move |conn| {
            sql::find_event(conn, id)
        })
        .await
    }

    async fn events(
        &self,
        company_id: CompanyId,
        status: Option<EventStatus>,
        limit: usize,
    ) -> StoreResult<Vec<EventRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let company = company_id.to_string();
        // `status = ?2 OR ?2 IS NULL` would defeat the status index; two queries keep both
        // shapes on an index.
        let Some(status) = status else {
            let query = format!(
                "SELECT {} FROM events WHERE company_id = ?1
                 ORDER BY received_at DESC, event_id DESC LIMIT ?2",
                rows::EVENT_COLS
            );
            return self
                .many("events", "events", query, (company, limit), rows::event)
                .await;
        };
        let query = format!(
            "SELECT {} FROM events WHERE company_id = ?1 AND status = ?2
             ORDER BY received_at DESC, event_id DESC LIMIT ?3",
            rows::EVENT_COLS
        );
        let args = (company, status.as_str(), limit);
        self.many("events", "events", query, args, rows::event)
            .await
    }

    async fn dedup_claim(&self, req: ClaimRequest<'_>) -> StoreResult<DedupClaim> {
        let key = req.key.to_owned();
        let (company_id, holder, now) = (req.company_id, req.holder, req.now);
        let (lease_until, expires_at) = (req.lease_until, req.expires_at);
        self.write("dedup_claim", "dedup", move |conn| {
            let req = ClaimRequest {
                company_id,
                key: &key,
                holder,
                now,
                lease_until,
                expires_at,
            };
            sql::dedup_claim(conn, &req)
        })
        .await
    }

    async fn dedup_complete(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()> {
        let key = key.to_owned();
        self.write("dedup_complete", "dedup", move |conn| {
            sql::dedup_complete(conn, company_id, &key, holder)
        })
        .await
    }

    async fn dedup_release(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()> {
        let key = key.to_owned();
        self.write("dedup_release", "dedup", move |conn| {
            conn.execute(
                "DELETE FROM dedup WHERE company_id = ?1 AND dedup_key = ?2 AND holder = ?3
                 AND completed = 0",
                params![company_id.to_string(), key, holder.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn dedup_entry(
        &self,
        company_id: CompanyId,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DedupEntry>> {
        let query = format!(
            "SELECT {} FROM dedup WHERE company_id = ?1 AND dedup_key = ?2 AND expires_at > ?3",
            rows::DEDUP_COLS
        );
        let args = (company_id.to_string(), key.to_owned(), ms(now));
        self.one("dedup_entry", "dedup", query, args, rows::dedup)
            .await
    }

    async fn upsert_call(&self, call: &Call) -> StoreResult<bool> {
        let c = call.clone();
        self.write("upsert_call", "calls", move |conn| {
            sql::upsert_call(conn, &c)
        })
        .await
    }

    async fn call(&self, company_id: CompanyId, call_id: &str) -> StoreResult<Option<Call>> {
        let query = format!(
            "SELECT {} FROM calls WHERE company_id = ?1 AND call_id = ?2",
            rows::CALL_COLS
        );
        let args = [company_id.to_string(), call_id.to_owned()];
        self.one("call", "calls", query, args, rows::call).await
    }

    async fn upsert_appointment(&self, appointment: &Appointment) -> StoreResult<bool> {
        let a = appointment.clone();
        self.write("upsert_appointment", "appointments", move |conn| {
            sql::upsert_appointment(conn, &a)
        })
        .await
    }

    async fn appointment_by_calcom_uid(
        &self,
        company_id: CompanyId,
        uid: &str,
    ) -> StoreResult<Option<Appointment>> {
        let query = format!(
            "SELECT {} FROM appointments WHERE company_id = ?1 AND calcom_uid = ?2",
            rows::APPOINTMENT_COLS
        );
        let args = [company_id.to_string(), uid.to_owned()];
        self.one(
            "appointment_by_calcom_uid",
            "appointments",
            query,
            args,
            rows::appointment,
        )
        .await
    }

    async fn appointments(&self, company_id: CompanyId) -> StoreResult<Vec<Appointment>> {
        let query = format!(
            "SELECT {} FROM appointments WHERE company_id = ?1 ORDER BY start_at, appointment_id",
            rows::APPOINTMENT_COLS
        );
        let args = [company_id.to_string()];
        self.many(
            "appointments",
            "appointments",
            query,
            args,
            rows::appointment,
        )
        .await
    }

    async fn sync(&self) -> StoreResult<()> {
        self.write("sync", "sync_barrier", |conn| sql::sync(conn, Utc::now()))
            .await
    }

    async fn check(&self) -> StoreResult<()> {
        self.read("check", "companies", |conn| {
            Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)
        })
        .await
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
