//! The state-store contract, shaped after CQL: every tenant row is reached through its
//! `company_id` (the partition key), the only global rows are pointer tables (phone → branch,
//! event id → company), writes that must not race are conditional (`IF NOT EXISTS`-style) and
//! dedup keys expire (TTL).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::catalog::{Assignment, Customer, DefaultService, Service, Staff};
use crate::domain::{
    ApiKey, Appointment, AppointmentStatus, Branch, Call, Company, DedupClaim, DedupEntry,
    EventRow, EventStatus, PhoneRoute, Secret,
};
use crate::error::StoreError;
use crate::ids::{BranchId, CompanyId, EventId};
use crate::record::Provider;
use uuid::Uuid;

pub type StoreResult<T> = Result<T, StoreError>;

/// Arguments of a dedup claim.
#[derive(Clone, Copy, Debug)]
pub struct ClaimRequest<'a> {
    pub company_id: CompanyId,
    pub key: &'a str,
    pub holder: EventId,
    pub now: DateTime<Utc>,
    /// Until when the claim blocks others if it is never completed (a crash).
    pub lease_until: DateTime<Utc>,
    /// When the key is forgotten (the dedup window; a TTL in CQL).
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    // ---- tenants -------------------------------------------------------------------------
    async fn create_company(&self, company: &Company) -> StoreResult<()>;
    async fn company(&self, id: CompanyId) -> StoreResult<Option<Company>>;
    async fn companies(&self) -> StoreResult<Vec<Company>>;

    /// Creates a branch and claims its phone number in the global phone index.
    /// Fails with [`StoreError::Conflict`] if another branch owns the number, and with
    /// [`StoreError::NotFound`] if the company does not exist.
    async fn create_branch(&self, branch: &Branch) -> StoreResult<()>;
    async fn branch(&self, company_id: CompanyId, id: BranchId) -> StoreResult<Option<Branch>>;
    async fn branches(&self, company_id: CompanyId) -> StoreResult<Vec<Branch>>;
    /// Global pointer lookup: which tenant and branch own an E.164 number.
    async fn resolve_phone(&self, e164: &str) -> StoreResult<Option<PhoneRoute>>;
    /// Replaces an existing branch (same company and id). A changed phone moves the branch's
    /// entry in the global phone index: [`StoreError::Conflict`] if another branch owns the
    /// new number, [`StoreError::NotFound`] if the branch does not exist. Bumps
    /// [`StateStore::routing_version`].
    async fn update_branch(&self, branch: &Branch) -> StoreResult<()>;
    /// A number that changes whenever phone routing may have changed (a branch created or
    /// updated). Routing caches compare it to drop stale entries across processes.
    async fn routing_version(&self) -> StoreResult<u64>;

    async fn add_secret(&self, secret: &Secret) -> StoreResult<()>;
    async fn secrets(&self, company_id: CompanyId, provider: Provider) -> StoreResult<Vec<Secret>>;
    /// Returns whether a secret was removed.
    async fn remove_secret(
        &self,
        company_id: CompanyId,
        provider: Provider,
        id: &str,
    ) -> StoreResult<bool>;

    // ---- catalog: services, staff, customers -----------------------------------------------
    async fn create_service(&self, service: &Service) -> StoreResult<()>;
    async fn service(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Service>>;
    /// A company's services, oldest first.
    async fn services(&self, company_id: CompanyId) -> StoreResult<Vec<Service>>;
    /// Returns the branch's first active service ([`Service::offered_at`]) or, when it has
    /// none, creates `candidate` together with an assignment for every active staff member of
    /// the branch, atomically. Concurrent calls for one branch create exactly one service.
    async fn ensure_default_service(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> StoreResult<DefaultService>;

    async fn create_staff(&self, staff: &Staff) -> StoreResult<()>;
    /// A company's staff, oldest first.
    async fn staff(&self, company_id: CompanyId) -> StoreResult<Vec<Staff>>;
    /// Idempotent; [`StoreError::NotFound`] if the staff member or service is not the
    /// company's.
    async fn assign(&self, assignment: &Assignment) -> StoreResult<()>;
    async fn assignments(&self, company_id: CompanyId) -> StoreResult<Vec<Assignment>>;

    /// With a phone: the company's customer with that phone (filling in a missing name or
    /// email from `candidate`), or `candidate` inserted. Without a phone: `candidate` inserted
    /// unless its id exists (callers derive it from the call, so a rerun finds it).
    async fn upsert_customer(&self, candidate: &Customer) -> StoreResult<Customer>;
    async fn customer(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Customer>>;

    // ---- event ledger --------------------------------------------------------------------
    /// Inserts ledger rows that do not exist yet (by tenant and id); existing rows are kept,
    /// so a redelivered record never resets its status or attempts.
    async fn record_events(&self, rows: &[EventRow]) -> StoreResult<()>;
    async fn set_event_status(
        &self,
        company_id: CompanyId,
        id: EventId,
        status: EventStatus,
        attempts: u32,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn event(&self, company_id: CompanyId, id: EventId) -> StoreResult<Option<EventRow>>;
    /// Resolves an event id through the global pointer table, then reads it in its tenant.
    async fn find_event(&self, id: EventId) -> StoreResult<Option<EventRow>>;
    /// A tenant's events, newest first.
    async fn events(
        &self,
        company_id: CompanyId,
        status: Option<EventStatus>,
        limit: usize,
    ) -> StoreResult<Vec<EventRow>>;

    // ---- dedup ---------------------------------------------------------------------------
    /// Claims a dedup key (conditional insert / lease takeover).
    async fn dedup_claim(&self, req: ClaimRequest<'_>) -> StoreResult<DedupClaim>;

    /// Marks the event `processing` (with `attempts`) and claims its key. One write where
    /// the backend can group them; the default runs the two in order.
    async fn begin_event(&self, req: ClaimRequest<'_>, attempts: u32) -> StoreResult<DedupClaim> {
        self.set_event_status(
            req.company_id,
            req.holder,
            EventStatus::Processing,
            attempts,
            None,
            req.now,
        )
        .await?;
        self.dedup_claim(req).await
    }

    /// Completes the event's key and records its final status. One write where the backend
    /// can group them; the default runs the two in order (key first, so a crash in between
    /// leaves a completed key, which the redelivery recognises as its own).
    #[allow(clippy::too_many_arguments)]
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
        self.dedup_complete(company_id, key, holder).await?;
        self.set_event_status(company_id, holder, status, attempts, error, now)
            .await
    }
    /// Marks a claimed key completed; later claims see [`DedupClaim::Completed`].
    async fn dedup_complete(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()>;
    /// Drops a claim held by `holder` (the event failed; a later delivery may try again).
    async fn dedup_release(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()>;
    /// Reads a key that has not expired at `now`.
    async fn dedup_entry(
        &self,
        company_id: CompanyId,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DedupEntry>>;

    // ---- calls and appointments ----------------------------------------------------------
    /// Writes the call unless the stored one has a higher `version`. Returns whether it applied.
    async fn upsert_call(&self, call: &Call) -> StoreResult<bool>;
    async fn call(&self, company_id: CompanyId, call_id: &str) -> StoreResult<Option<Call>>;

    /// Writes the appointment (keyed by tenant and `id`) unless the stored one has a higher
    /// `version`, and keeps its lookups by Cal.com uid and by idempotency key. Returns whether
    /// it applied.
    async fn upsert_appointment(&self, appointment: &Appointment) -> StoreResult<bool>;
    async fn appointment(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Appointment>>;
    async fn appointment_by_calcom_uid(
        &self,
        company_id: CompanyId,
        uid: &str,
    ) -> StoreResult<Option<Appointment>>;
    async fn appointment_by_key(
        &self,
        company_id: CompanyId,
        idempotency_key: &str,
    ) -> StoreResult<Option<Appointment>>;
    /// A tenant's appointments, oldest (`created_at`) first.
    async fn appointments(&self, company_id: CompanyId) -> StoreResult<Vec<Appointment>>;
    /// A tenant's appointments in one status, oldest (`created_at`) first, at most `limit`.
    async fn appointments_by_status(
        &self,
        company_id: CompanyId,
        status: AppointmentStatus,
        limit: usize,
    ) -> StoreResult<Vec<Appointment>>;

    // ---- durability and health -----------------------------------------------------------
    /// A durability barrier: once it returns, every write made before it survives power loss.
    /// Consumers call it before committing offsets.
    async fn sync(&self) -> StoreResult<()>;
    async fn check(&self) -> StoreResult<()>;

    // ---- tenant API keys -----------------------------------------------------------------
    /// Stores a key (its hash only) in the global key table. [`StoreError::NotFound`] if the
    /// company does not exist, [`StoreError::Conflict`] if the id or the hash is taken.
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// Global pointer lookup: the key with this hash, revoked or not.
    async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;
    /// A company's keys (revoked ones too), oldest first.
    async fn api_keys(&self, company_id: CompanyId) -> StoreResult<Vec<ApiKey>>;
    /// Marks the key revoked at `now` and returns it; `None` when no key has this id. A key
    /// revoked before keeps its first `revoked_at`.
    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<ApiKey>>;
}
