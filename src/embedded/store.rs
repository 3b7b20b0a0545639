//! The embedded [`StateStore`]: `state.db` in WAL mode with `synchronous=NORMAL`; `sync()` is
//! the power-loss durability barrier.
//!
//! Writes go to one writer thread that group-commits whatever is queued (see
//! [`super::writer`]). Point reads (one row by key) run right on the calling task on a pooled
//! reader connection: they take microseconds, and in WAL mode a reader never waits for the
//! writer, so a hand-off to the blocking pool would cost more than the read. Multi-row scans
//! (lists, the ledger with payloads) still run on the blocking pool.
//!
//! Orderings the trait leaves open: companies and branches oldest first, secrets newest first,
//! assignments by (staff, service) id. Timestamps keep millisecond precision (as in CQL).

use std::path::Path;
use std::sync::Arc;

use askpro_actors::catalog::{Assignment, Customer, DefaultService, Service, Staff};
use askpro_actors::domain::{
    ApiKey, Appointment, AppointmentStatus, Branch, Call, Company, DedupClaim, DedupEntry,
    EventRow, EventStatus, PhoneRoute, Secret,
};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{BranchId, CompanyId, EventId};
use askpro_actors::record::Provider;
use askpro_actors::store::{ClaimRequest, StateStore, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::disk::DiskReserve;
use super::migrate;
use super::sqlite::{self, Db, Synchronous};
use super::store_rows::{self as rows, ms, Fail, Res};
use super::store_sql as sql;
use super::writer::Writer;

/// File name of the state store inside the data dir.
pub const STATE_FILE: &str = "state.db";
/// The SQLite-backed state store. Cloning is cheap and shares the connections and the writer
/// thread, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Db>,
    writer: Arc<Writer>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/state.db`, brings its schema up to date and starts the writer.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_reserved(dir, None)
    }

    /// [`EmbeddedStore::open`] that defers to the log on a full disk: while `reserve` is
    /// released, writes fail as unavailable (callers back off) instead of taking the space
    /// the log needs. Creates the reserve when it is missing (say, before the first serve).
    pub fn open_reserved(dir: &Path, reserve: Option<DiskReserve>) -> Result<Self, StoreError> {
        if let Some(reserve) = &reserve {
            super::disk::ensure_at_open(reserve);
        }
        let db = Db::open(dir, STATE_FILE, Synchronous::Normal, migrate::STATE).map_err(|e| {
            StoreError::Unavailable {
                operation: "open state store",
                source: Box::new(e),
            }
        })?;
        let db = Arc::new(db);
        let writer =
            Writer::start(Arc::clone(&db), reserve).map_err(|e| StoreError::Unavailable {
                operation: "start state writer",
                source: Box::new(e),
            })?;
        tracing::info!(dir = %dir.display(), "opened embedded state store");
        Ok(EmbeddedStore {
            db,
            writer: Arc::new(writer),
        })
    }

    /// Deletes every dedup key expired at `now`; returns how many. Claims already purge a
    /// few expired keys each, so this is only needed to reclaim space after a quiet period.
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.write("purge_expired", "dedup", move |conn| {
            sql::purge_expired(conn, now)
        })
        .await
    }

    /// Runs `work` in the writer's next group commit and waits until it is committed.
    async fn write<T, F>(
        &self,
        operation: &'static str,
        table: &'static str,
        work: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Res<T> + Send + 'static,
    {
        self.writer.submit(operation, table, false, work).await
    }

    /// Runs a point read on a pooled reader connection, on the calling task.
    fn read<T>(
        &self,
        operation: &'static str,
        table: &'static str,
        work: impl FnOnce(&Connection) -> Res<T>,
    ) -> StoreResult<T> {
        let run = || work(&*self.db.reader()?);
        run().map_err(|e: Fail| e.into_store(operation, table))
    }

    /// Runs a single-row (or no-row) SELECT on a reader.
    fn one<T>(
        &self,
        operation: &'static str,
        table: &'static str,
        query: &str,
        args: impl rusqlite::Params,
        map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        self.read(operation, table, move |conn| {
            Ok(conn
                .prepare_cached(query)?
                .query_row(args, map)
                .optional()?)
        })
    }

    /// Runs a multi-row SELECT on a reader, on the blocking pool (a scan may be long).
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
        let db = Arc::clone(&self.db);
        let work = move || -> Res<Vec<T>> {
            let conn = db.reader()?;
            let mut stmt = conn.prepare_cached(&query)?;
            let rows = stmt.query_map(args, map)?;
            Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
        };
        sqlite::blocking(
            move || work().map_err(|e| e.into_store(operation, table)),
            |e| StoreError::Unavailable {
                operation,
                source: Box::new(e),
            },
        )
        .await
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn create_company(&self, company: &Company) -> StoreResult<()> {
        let c = company.clone();
        self.write("create_company", "companies", move |conn| {
            sql::create_company(conn, &c)
        })
        .await
    }

    async fn company(&self, id: CompanyId) -> StoreResult<Option<Company>> {
        let query = format!(
            "SELECT {} FROM companies WHERE company_id = ?1",
            rows::COMPANY_COLS
        );
        let args = [id.to_string()];
        self.one("company", "companies", &query, args, rows::company)
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
        self.one("branch", "branches", &query, args, rows::branch)
    }

    async fn branches(&self, company_id: CompanyId) -> StoreResult<Vec<Branch>> {
        let query = format!(
            "SELECT {} FROM branches WHERE company_id = ?1 ORDER BY created_at, branch_id",
            rows::BRANCH_COLS
        );
        let args = [company_id.to_string()];
        self.many("branches", "branches", query, args, rows::branch)
            .await
    }

    async fn resolve_phone(&self, e164: &str) -> StoreResult<Option<PhoneRoute>> {
        self.read("resolve_phone", "phone_routes", |conn| {
            sql::resolve_phone(conn, e164)
        })
    }

    async fn update_branch(&self, branch: &Branch) -> StoreResult<()> {
        self.update_branch_impl(branch).await
    }

    async fn routing_version(&self) -> StoreResult<u64> {
        self.routing_version_impl()
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
            sql::remove_secret(conn, company_id, provider, &id)
        })
        .await
    }

    async fn create_service(&self, service: &Service) -> StoreResult<()> {
        self.create_service_impl(service).await
    }

    async fn service(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Service>> {
        self.service_impl(company_id, id)
    }

    async fn services(&self, company_id: CompanyId) -> StoreResult<Vec<Service>> {
        self.services_impl(company_id).await
    }

    async fn ensure_default_service(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> StoreResult<DefaultService> {
        self.ensure_default_service_impl(branch, candidate).await
    }

    async fn create_staff(&self, staff: &Staff) -> StoreResult<()> {
        self.create_staff_impl(staff).await
    }

    async fn staff(&self, company_id: CompanyId) -> StoreResult<Vec<Staff>> {
        self.staff_impl(company_id).await
    }

    async fn assign(&self, assignment: &Assignment) -> StoreResult<()> {
        self.assign_impl(assignment).await
    }

    async fn assignments(&self, company_id: CompanyId) -> StoreResult<Vec<Assignment>> {
        self.assignments_impl(company_id).await
    }

    async fn upsert_customer(&self, candidate: &Customer) -> StoreResult<Customer> {
        self.upsert_customer_impl(candidate).await
    }

    async fn customer(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Customer>> {
        self.customer_impl(company_id, id)
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
            let change = sql::StatusChange {
                company_id,
                id,
                status,
                attempts,
                error: error.as_deref(),
                now,
            };
            sql::set_event_status(conn, &change)
        })
        .await
    }

    async fn event(&self, company_id: CompanyId, id: EventId) -> StoreResult<Option<EventRow>> {
        self.read("event", "events", |conn| sql::event(conn, company_id, id))
    }

    async fn find_event(&self, id: EventId) -> StoreResult<Option<EventRow>> {
        self.read("find_event", "events", |conn| sql::find_event(conn, id))
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

    async fn begin_event(&self, req: ClaimRequest<'_>, attempts: u32) -> StoreResult<DedupClaim> {
        let key = req.key.to_owned();
        let (company_id, holder, now) = (req.company_id, req.holder, req.now);
        let (lease_until, expires_at) = (req.lease_until, req.expires_at);
        // One job: the status change and the claim commit (or roll back) together.
        self.write("begin_event", "events", move |conn| {
            let change = sql::StatusChange {
                company_id,
                id: holder,
                status: EventStatus::Processing,
                attempts,
                error: None,
                now,
            };
            sql::set_event_status(conn, &change)?;
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

    async fn finish_event(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
        status: EventStatus,
        attempts: u32,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (key, error) = (key.to_owned(), error.map(str::to_owned));
        self.write("finish_event", "events", move |conn| {
            sql::dedup_complete(conn, company_id, &key, holder)?;
            let change = sql::StatusChange {
                company_id,
                id: holder,
                status,
                attempts,
                error: error.as_deref(),
                now,
            };
            sql::set_event_status(conn, &change)
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
            sql::dedup_release(conn, company_id, &key, holder)
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
        let args = (company_id.to_string(), key, ms(now));
        self.one("dedup_entry", "dedup", &query, args, rows::dedup)
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
        let args = (company_id.to_string(), call_id);
        self.one("call", "calls", &query, args, rows::call)
    }

    async fn upsert_appointment(&self, appointment: &Appointment) -> StoreResult<bool> {
        self.upsert_appointment_impl(appointment).await
    }

    async fn appointment(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Appointment>> {
        let id = id.to_string();
        self.appointment_by("appointment", "appointment_id", company_id, &id)
    }

    async fn appointment_by_calcom_uid(
        &self,
        company_id: CompanyId,
        uid: &str,
    ) -> StoreResult<Option<Appointment>> {
        self.appointment_by("appointment_by_calcom_uid", "calcom_uid", company_id, uid)
    }

    async fn appointment_by_key(
        &self,
        company_id: CompanyId,
        key: &str,
    ) -> StoreResult<Option<Appointment>> {
        self.appointment_by("appointment_by_key", "idempotency_key", company_id, key)
    }

    async fn appointments(&self, company_id: CompanyId) -> StoreResult<Vec<Appointment>> {
        self.appointments_impl(company_id).await
    }

    async fn appointments_by_status(
        &self,
        company_id: CompanyId,
        status: AppointmentStatus,
        limit: usize,
    ) -> StoreResult<Vec<Appointment>> {
        self.appointments_by_status_impl(company_id, status, limit)
            .await
    }

    /// A barrier job: the writer commits its batch with `synchronous=FULL`, which fsyncs the
    /// WAL and with it every commit before (see [`sql::sync`]).
    async fn sync(&self) -> StoreResult<()> {
        let now = Utc::now();
        self.writer
            .submit("sync", "sync_barrier", true, move |conn| {
                sql::sync(conn, now)
            })
            .await
    }

    async fn check(&self) -> StoreResult<()> {
        self.read("check", "companies", |conn| {
            Ok(conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?)
        })
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.create_api_key_impl(key).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        self.api_key_by_hash_impl(key_hash)
    }

    async fn api_keys(&self, company_id: CompanyId) -> StoreResult<Vec<ApiKey>> {
        self.api_keys_impl(company_id).await
    }

    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<ApiKey>> {
        self.revoke_api_key_impl(id, now).await
    }
}

#[path = "store_catalog.rs"]
mod catalog;

#[path = "store_apikeys.rs"]
mod apikeys;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
