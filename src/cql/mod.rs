//! The CQL [`StateStore`] (ScyllaDB in production, Apache Cassandra in tests) on the
//! `scylla` driver.
//!
//! Data model (`schemas/cql/`): every tenant table is partitioned by `company_id` first, so
//! no statement can reach another tenant's rows; the only global tables are pointers
//! (`phone_routes`, `event_pointers`) and the `routing_version` counter. Each access path has
//! its own table: there are no secondary indexes or materialized views (ScyllaDB and
//! Cassandra agree on everything used here).
//!
//! Statements are prepared once at open ([`statements`]); uniqueness is enforced with
//! lightweight transactions (`IF NOT EXISTS` / `IF col = ?`) at the configured serial
//! consistency, everything else runs at the configured consistency (LOCAL_QUORUM by default).
//! The modules say, each for its part, where CQL cannot give the embedded store's
//! transactional semantics and what is done instead; `docs/cql-notes.md` sums it up.
//!
//! Orderings follow the embedded store: companies, branches, services, staff and
//! appointments oldest first; secrets newest first; assignments by (staff, service) id.

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
use scylla::client::session::Session;
use uuid::Uuid;

mod apikeys;
mod appointments;
mod calls;
mod catalog;
mod claims;
mod dedup;
mod error;
mod events;
mod migrate;
mod rows;
mod rows_calls;
mod session;
mod settings;
mod statements;
mod tenants;

pub use error::CqlError;
pub use migrate::{check_schema, migrate, Migration, MIGRATIONS};
pub use session::connect;
pub use settings::{
    check_keyspace, check_replication, parse_consistency, parse_serial_consistency, CqlSettings,
};

use session::Db;
use statements::Statements;

/// The CQL-backed state store. Cloning is cheap and shares the session (its connection
/// pools) and the prepared statements.
#[derive(Clone)]
pub struct CqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    statements: Statements,
    keyspace: String,
}

impl std::fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlStore")
            .field("keyspace", &self.inner.keyspace)
            .finish_non_exhaustive()
    }
}

impl CqlStore {
    /// Connects, migrates when `settings.migrate_on_start` (otherwise checks that the
    /// keyspace has every migration of this binary) and prepares every statement.
    pub async fn open(settings: &CqlSettings) -> Result<Self, CqlError> {
        let session = connect(settings).await?;
        if settings.migrate_on_start {
            migrate(&session, settings).await?;
        }
        Self::with_session(session, settings).await
    }

    /// Like [`CqlStore::open`] on an existing session (which is switched to the keyspace).
    pub async fn with_session(session: Session, settings: &CqlSettings) -> Result<Self, CqlError> {
        settings.validate()?;
        session
            .use_keyspace(&settings.keyspace, false)
            .await
            .map_err(|source| CqlError::UseKeyspace {
                keyspace: settings.keyspace.clone(),
                source: Box::new(source),
            })?;
        check_schema(&session).await?;
        let statements = Statements::prepare(&session).await?;
        tracing::info!(keyspace = %settings.keyspace, contact_points = ?settings.contact_points, "opened CQL state store");
        Ok(CqlStore {
            inner: Arc::new(Inner {
                db: Db {
                    serial_read: session::serial_read_consistency(settings.serial_consistency),
                    session,
                },
                statements,
                keyspace: settings.keyspace.clone(),
            }),
        })
    }

    /// The keyspace this store works in.
    pub fn keyspace(&self) -> &str {
        &self.inner.keyspace
    }

    /// The driver session (for tools and tests).
    pub fn session(&self) -> &Session {
        &self.inner.db.session
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    fn st(&self) -> &Statements {
        &self.inner.statements
    }
}

/// An error inside a store operation: a driver-level failure, or a contract outcome
/// (`Conflict`, `NotFound`) decided by the store's logic. Mapped at the trait's edge, where
/// the operation and table are known.
#[derive(Debug)]
enum Fail {
    Cql(CqlError),
    Store(StoreError),
}

type Out<T> = Result<T, Fail>;

impl From<CqlError> for Fail {
    fn from(e: CqlError) -> Self {
        Fail::Cql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    fn into_store(self, operation: &'static str, table: &'static str) -> StoreError {
        match self {
            Fail::Store(e) => e,
            Fail::Cql(e) => e.into_store(operation, table),
        }
    }
}

/// `result` with its failure mapped for `operation` on `table`.
fn edge<T>(result: Out<T>, operation: &'static str, table: &'static str) -> StoreResult<T> {
    result.map_err(|e| e.into_store(operation, table))
}

#[async_trait]
impl StateStore for CqlStore {
    async fn create_company(&self, company: &Company) -> StoreResult<()> {
        edge(
            self.create_company_cql(company).await,
            "create_company",
            "companies",
        )
    }

    async fn company(&self, id: CompanyId) -> StoreResult<Option<Company>> {
        edge(self.company_cql(id).await, "company", "companies")
    }

    async fn companies(&self) -> StoreResult<Vec<Company>> {
        edge(self.companies_cql().await, "companies", "companies")
    }

    async fn create_branch(&self, branch: &Branch) -> StoreResult<()> {
        edge(
            self.create_branch_cql(branch).await,
            "create_branch",
            "branches",
        )
    }

    async fn branch(&self, company_id: CompanyId, id: BranchId) -> StoreResult<Option<Branch>> {
        edge(self.branch_cql(company_id, id).await, "branch", "branches")
    }

    async fn branches(&self, company_id: CompanyId) -> StoreResult<Vec<Branch>> {
        edge(self.branches_cql(company_id).await, "branches", "branches")
    }

    async fn resolve_phone(&self, e164: &str) -> StoreResult<Option<PhoneRoute>> {
        edge(
            self.resolve_phone_cql(e164).await,
            "resolve_phone",
            "phone_routes",
        )
    }

    async fn update_branch(&self, branch: &Branch) -> StoreResult<()> {
        edge(
            self.update_branch_cql(branch).await,
            "update_branch",
            "branches",
        )
    }

    async fn routing_version(&self) -> StoreResult<u64> {
        let result = self.routing_version_cql().await;
        edge(result, "routing_version", "routing_version")
    }

    async fn add_secret(&self, secret: &Secret) -> StoreResult<()> {
        edge(self.add_secret_cql(secret).await, "add_secret", "secrets")
    }

    async fn secrets(&self, company_id: CompanyId, provider: Provider) -> StoreResult<Vec<Secret>> {
        edge(
            self.secrets_cql(company_id, provider).await,
            "secrets",
            "secrets",
        )
    }

    async fn remove_secret(
        &self,
        company_id: CompanyId,
        provider: Provider,
        id: &str,
    ) -> StoreResult<bool> {
        let result = self.remove_secret_cql(company_id, provider, id).await;
        edge(result, "remove_secret", "secrets")
    }

    async fn create_service(&self, service: &Service) -> StoreResult<()> {
        edge(
            self.create_service_cql(service).await,
            "create_service",
            "services",
        )
    }

    async fn service(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Service>> {
        edge(
            self.service_cql(company_id, id).await,
            "service",
            "services",
        )
    }

    async fn services(&self, company_id: CompanyId) -> StoreResult<Vec<Service>> {
        edge(self.services_cql(company_id).await, "services", "services")
    }

    async fn ensure_default_service(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> StoreResult<DefaultService> {
        let result = self.ensure_default_service_cql(branch, candidate).await;
        edge(result, "ensure_default_service", "services")
    }

    async fn create_staff(&self, staff: &Staff) -> StoreResult<()> {
        edge(self.create_staff_cql(staff).await, "create_staff", "staff")
    }

    async fn staff(&self, company_id: CompanyId) -> StoreResult<Vec<Staff>> {
        edge(self.staff_cql(company_id).await, "staff", "staff")
    }

    async fn assign(&self, assignment: &Assignment) -> StoreResult<()> {
        edge(self.assign_cql(assignment).await, "assign", "assignments")
    }

    async fn assignments(&self, company_id: CompanyId) -> StoreResult<Vec<Assignment>> {
        edge(
            self.assignments_cql(company_id).await,
            "assignments",
            "assignments",
        )
    }

    async fn upsert_customer(&self, candidate: &Customer) -> StoreResult<Customer> {
        edge(
            self.upsert_customer_cql(candidate).await,
            "upsert_customer",
            "customers",
        )
    }

    async fn customer(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Customer>> {
        edge(
            self.customer_cql(company_id, id).await,
            "customer",
            "customers",
        )
    }

    async fn record_events(&self, rows: &[EventRow]) -> StoreResult<()> {
        edge(
            self.record_events_cql(rows).await,
            "record_events",
            "events",
        )
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
        let result = self
            .set_event_status_cql(company_id, id, status, attempts, error, now)
            .await;
        edge(result, "set_event_status", "events")
    }

    async fn event(&self, company_id: CompanyId, id: EventId) -> StoreResult<Option<EventRow>> {
        edge(self.event_cql(company_id, id).await, "event", "events")
    }

    async fn find_event(&self, id: EventId) -> StoreResult<Option<EventRow>> {
        edge(self.find_event_cql(id).await, "find_event", "events")
    }

    async fn events(
        &self,
        company_id: CompanyId,
        status: Option<EventStatus>,
        limit: usize,
    ) -> StoreResult<Vec<EventRow>> {
        let result = self.events_cql(company_id, status, limit).await;
        edge(result, "events", "events_by_day")
    }

    async fn dedup_claim(&self, req: ClaimRequest<'_>) -> StoreResult<DedupClaim> {
        edge(self.dedup_claim_cql(&req).await, "dedup_claim", "dedup")
    }

    async fn dedup_complete(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()> {
        let result = self.dedup_complete_cql(company_id, key, holder).await;
        edge(result, "dedup_complete", "dedup")
    }

    async fn dedup_release(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()> {
        let result = self.dedup_release_cql(company_id, key, holder).await;
        edge(result, "dedup_release", "dedup")
    }

    async fn dedup_entry(
        &self,
        company_id: CompanyId,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DedupEntry>> {
        let result = self.dedup_entry_cql(company_id, key, now).await;
        edge(result, "dedup_entry", "dedup")
    }

    async fn upsert_call(&self, call: &Call) -> StoreResult<bool> {
        edge(self.upsert_call_cql(call).await, "upsert_call", "calls")
    }

    async fn call(&self, company_id: CompanyId, call_id: &str) -> StoreResult<Option<Call>> {
        edge(self.call_cql(company_id, call_id).await, "call", "calls")
    }

    async fn upsert_appointment(&self, appointment: &Appointment) -> StoreResult<bool> {
        let result = self.upsert_appointment_cql(appointment).await;
        edge(result, "upsert_appointment", "appointments")
    }

    async fn appointment(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Appointment>> {
        edge(
            self.appointment_cql(company_id, id).await,
            "appointment",
            "appointments",
        )
    }

    async fn appointment_by_calcom_uid(
        &self,
        company_id: CompanyId,
        uid: &str,
    ) -> StoreResult<Option<Appointment>> {
        const OP: &str = "appointment_by_calcom_uid";
        let result = self.appointment_by_lookup(OP, true, company_id, uid).await;
        edge(result, OP, "appointment_uids")
    }

    async fn appointment_by_key(
        &self,
        company_id: CompanyId,
        idempotency_key: &str,
    ) -> StoreResult<Option<Appointment>> {
        const OP: &str = "appointment_by_key";
        let result = self
            .appointment_by_lookup(OP, false, company_id, idempotency_key)
            .await;
        edge(result, OP, "appointment_keys")
    }

    async fn appointments(&self, company_id: CompanyId) -> StoreResult<Vec<Appointment>> {
        let result = self.appointments_cql(company_id).await;
        edge(result, "appointments", "appointments_by_status")
    }

    async fn appointments_by_status(
        &self,
        company_id: CompanyId,
        status: AppointmentStatus,
        limit: usize,
    ) -> StoreResult<Vec<Appointment>> {
        let result = self
            .appointments_by_status_cql(company_id, status, limit)
            .await;
        edge(result, "appointments_by_status", "appointments_by_status")
    }

    /// A no-op: a write acknowledged at the configured consistency is in the commit logs of
    /// that many replicas, and durability comes from replication. With rf=1 (development) a
    /// power loss can lose up to the node's `commitlog_sync_period`; ScyllaDB syncs LWT
    /// writes to its commit log before answering in every mode.
    async fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn check(&self) -> StoreResult<()> {
        let result = self
            .db()
            .exec("check", &self.st().health, ())
            .await
            .map(drop)
            .map_err(Fail::from);
        edge(result, "check", "system.local")
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        edge(
            self.create_api_key_cql(key).await,
            "create_api_key",
            "api_keys",
        )
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let result = self.api_key_by_hash_cql(key_hash).await;
        edge(result, "api_key_by_hash", "api_keys")
    }

    async fn api_keys(&self, company_id: CompanyId) -> StoreResult<Vec<ApiKey>> {
        edge(
            self.api_keys_cql(company_id).await,
            "api_keys",
            "company_api_keys",
        )
    }

    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<ApiKey>> {
        edge(
            self.revoke_api_key_cql(id, now).await,
            "revoke_api_key",
            "api_keys",
        )
    }
}
