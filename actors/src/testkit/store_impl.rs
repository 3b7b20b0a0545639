//! `impl StateStore for MemStore`, following the documented contract of each method.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use uuid::Uuid;

use super::store::MemStore;
use crate::catalog::{Assignment, Customer, DefaultService, Service, Staff};
use crate::domain::{
    ApiKey, Appointment, AppointmentStatus, Branch, Call, Company, DedupClaim, DedupEntry,
    EventRow, EventStatus, PhoneRoute, Secret,
};
use crate::error::StoreError;
use crate::ids::{BranchId, CompanyId, EventId};
use crate::record::Provider;
use crate::store::{ClaimRequest, StateStore, StoreResult};

fn not_found(what: String) -> StoreError {
    StoreError::NotFound(what)
}

#[async_trait]
impl StateStore for MemStore {
    async fn create_company(&self, company: &Company) -> StoreResult<()> {
        self.enter("create_company")?;
        let mut data = self.data();
        if data.companies.contains_key(&company.id) {
            return Err(StoreError::Conflict(format!(
                "company {} already exists",
                company.id
            )));
        }
        data.companies.insert(company.id, company.clone());
        Ok(())
    }

    async fn company(&self, id: CompanyId) -> StoreResult<Option<Company>> {
        self.enter("company")?;
        Ok(self.data().companies.get(&id).cloned())
    }

    async fn companies(&self) -> StoreResult<Vec<Company>> {
        self.enter("companies")?;
        let mut all: Vec<_> = self.data().companies.values().cloned().collect();
        all.sort_by_key(|c| (c.created_at, c.id));
        Ok(all)
    }

    async fn create_branch(&self, branch: &Branch) -> StoreResult<()> {
        self.enter("create_branch")?;
        let mut data = self.data();
        if !data.companies.contains_key(&branch.company_id) {
            return Err(not_found(format!("company {}", branch.company_id)));
        }
        if let Some(owner) = data.phones.get(&branch.phone) {
            return Err(StoreError::Conflict(format!(
                "phone number {} is already owned by branch {} of company {}",
                branch.phone, owner.branch_id, owner.company_id
            )));
        }
        let branches = data.branches.entry(branch.company_id).or_default();
        if branches.contains_key(&branch.id) {
            return Err(StoreError::Conflict(format!(
                "branch {} of company {} already exists",
                branch.id, branch.company_id
            )));
        }
        branches.insert(branch.id, branch.clone());
        let route = PhoneRoute {
            company_id: branch.company_id,
            branch_id: branch.id,
        };
        data.phones.insert(branch.phone.clone(), route);
        data.routing_version += 1;
        Ok(())
    }

    async fn branch(&self, company_id: CompanyId, id: BranchId) -> StoreResult<Option<Branch>> {
        self.enter("branch")?;
        let data = self.data();
        Ok(data
            .branches
            .get(&company_id)
            .and_then(|b| b.get(&id))
            .cloned())
    }

    async fn branches(&self, company_id: CompanyId) -> StoreResult<Vec<Branch>> {
        self.enter("branches")?;
        let data = self.data();
        let mut all: Vec<_> = data
            .branches
            .get(&company_id)
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|b| (b.created_at, b.id));
        Ok(all)
    }

    async fn resolve_phone(&self, e164: &str) -> StoreResult<Option<PhoneRoute>> {
        self.enter("resolve_phone")?;
        Ok(self.data().phones.get(e164).copied())
    }

    async fn update_branch(&self, branch: &Branch) -> StoreResult<()> {
        self.mem_update_branch(branch)
    }

    async fn routing_version(&self) -> StoreResult<u64> {
        self.mem_routing_version()
    }

    async fn add_secret(&self, secret: &Secret) -> StoreResult<()> {
        self.enter("add_secret")?;
        let mut data = self.data();
        if !data.companies.contains_key(&secret.company_id) {
            return Err(not_found(format!("company {}", secret.company_id)));
        }
        let list = data
            .secrets
            .entry((secret.company_id, secret.provider))
            .or_default();
        if list.iter().any(|s| s.id == secret.id) {
            return Err(StoreError::Conflict(format!(
                "{} secret {} of company {} already exists",
                secret.provider, secret.id, secret.company_id
            )));
        }
        list.push(secret.clone());
        Ok(())
    }

    async fn secrets(&self, company_id: CompanyId, provider: Provider) -> StoreResult<Vec<Secret>> {
        self.enter("secrets")?;
        let data = self.data();
        let mut all = data
            .secrets
            .get(&(company_id, provider))
            .cloned()
            .unwrap_or_default();
        all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(all)
    }

    async fn remove_secret(
        &self,
        company_id: CompanyId,
        provider: Provider,
        id: &str,
    ) -> StoreResult<bool> {
        self.enter("remove_secret")?;
        let mut data = self.data();
        let Some(list) = data.secrets.get_mut(&(company_id, provider)) else {
            return Ok(false);
        };
        let before = list.len();
        list.retain(|s| s.id != id);
        Ok(list.len() < before)
    }

    async fn create_service(&self, service: &Service) -> StoreResult<()> {
        self.mem_create_service(service)
    }

    async fn service(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Service>> {
        self.mem_service(company_id, id)
    }

    async fn services(&self, company_id: CompanyId) -> StoreResult<Vec<Service>> {
        self.mem_services(company_id)
    }

    async fn ensure_default_service(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> StoreResult<DefaultService> {
        self.mem_ensure_default_service(branch, candidate)
    }

    async fn create_staff(&self, staff: &Staff) -> StoreResult<()> {
        self.mem_create_staff(staff)
    }

    async fn staff(&self, company_id: CompanyId) -> StoreResult<Vec<Staff>> {
        self.mem_staff(company_id)
    }

    async fn assign(&self, assignment: &Assignment) -> StoreResult<()> {
        self.mem_assign(assignment)
    }

    async fn assignments(&self, company_id: CompanyId) -> StoreResult<Vec<Assignment>> {
        self.mem_assignments(company_id)
    }

    async fn upsert_customer(&self, candidate: &Customer) -> StoreResult<Customer> {
        self.mem_upsert_customer(candidate)
    }

    async fn customer(&self, company_id: CompanyId, id: Uuid) -> StoreResult<Option<Customer>> {
        self.mem_customer(company_id, id)
    }

    async fn record_events(&self, rows: &[EventRow]) -> StoreResult<()> {
        self.enter("record_events")?;
        let mut data = self.data();
        for row in rows {
            let tenant = data.events.entry(row.company_id).or_default();
            tenant.entry(row.id).or_insert_with(|| row.clone());
            data.event_pointers.entry(row.id).or_insert(row.company_id);
        }
        Ok(())
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
        self.enter("set_event_status")?;
        let mut data = self.data();
        let row = data
            .events
            .get_mut(&company_id)
            .and_then(|t| t.get_mut(&id))
            .ok_or_else(|| not_found(format!("event {id} of company {company_id}")))?;
        row.status = status;
        row.attempts = attempts;
        row.error = error.map(str::to_owned);
        row.updated_at = now;
        Ok(())
    }

    async fn event(&self, company_id: CompanyId, id: EventId) -> StoreResult<Option<EventRow>> {
        self.enter("event")?;
        let data = self.data();
        Ok(data
            .events
            .get(&company_id)
            .and_then(|t| t.get(&id))
            .cloned())
    }

    async fn find_event(&self, id: EventId) -> StoreResult<Option<EventRow>> {
        self.enter("find_event")?;
        let data = self.data();
        let Some(company_id) = data.event_pointers.get(&id) else {
            return Ok(None);
        };
        Ok(data
            .events
            .get(company_id)
            .and_then(|t| t.get(&id))
            .cloned())
    }

    async fn events(
        &self,
        company_id: CompanyId,
        status: Option<EventStatus>,
        limit: usize,
    ) -> StoreResult<Vec<EventRow>> {
        self.enter("events")?;
        let data = self.data();
        let mut rows: Vec<_> = data
            .events
            .get(&company_id)
            .map(|t| {
                t.values()
                    .filter(|r| status.is_none_or(|s| r.status == s))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by_key(|r| std::cmp::Reverse((r.received_at, r.id)));
        rows.truncate(limit);
        Ok(rows)
    }

    async fn dedup_claim(&self, req: ClaimRequest<'_>) -> StoreResult<DedupClaim> {
        self.claim_gate(req.company_id).await;
        self.enter("dedup_claim")?;
        let mut data = self.data();
        data.dedup.retain(|_, e| e.expires_at > req.now);
        let slot = (req.company_id, req.key.to_owned());
        let expires_at = match data.dedup.get(&slot) {
            None => req.expires_at,
            Some(e) if e.completed => return Ok(DedupClaim::Completed { holder: e.holder }),
            // Our own earlier claim, or a lease whose holder died: take it over, keeping the
            // later expiry.
            Some(e) if e.holder == req.holder || e.lease_until <= req.now => {
                e.expires_at.max(req.expires_at)
            }
            Some(e) => {
                return Ok(DedupClaim::InFlight {
                    holder: e.holder,
                    lease_until: e.lease_until,
                })
            }
        };
        let entry = DedupEntry {
            holder: req.holder,
            completed: false,
            lease_until: req.lease_until,
            expires_at,
        };
        data.dedup.insert(slot, entry);
        Ok(DedupClaim::Claimed)
    }

    async fn dedup_complete(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()> {
        self.enter("dedup_complete")?;
        if let Some(entry) = self.data().dedup.get_mut(&(company_id, key.to_owned())) {
            entry.completed = true;
            entry.holder = holder;
        }
        Ok(())
    }

    async fn dedup_release(
        &self,
        company_id: CompanyId,
        key: &str,
        holder: EventId,
    ) -> StoreResult<()> {
        self.enter("dedup_release")?;
        let mut data = self.data();
        let slot = (company_id, key.to_owned());
        if matches!(data.dedup.get(&slot), Some(e) if e.holder == holder && !e.completed) {
            data.dedup.remove(&slot);
        }
        Ok(())
    }

    async fn dedup_entry(
        &self,
        company_id: CompanyId,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DedupEntry>> {
        self.enter("dedup_entry")?;
        let data = self.data();
        let entry = data.dedup.get(&(company_id, key.to_owned()));
        Ok(entry.filter(|e| e.expires_at > now).cloned())
    }

    async fn upsert_call(&self, call: &Call) -> StoreResult<bool> {
        self.enter("upsert_call")?;
        let mut data = self.data();
        let slot = (call.company_id, call.call_id.clone());
        if matches!(data.calls.get(&slot), Some(stored) if stored.version > call.version) {
            return Ok(false);
        }
        data.calls.insert(slot, call.clone());
        Ok(true)
    }

    async fn call(&self, company_id: CompanyId, call_id: &str) -> StoreResult<Option<Call>> {
        self.enter("call")?;
        Ok(self
            .data()
            .calls
            .get(&(company_id, call_id.to_owned()))
            .cloned())
    }

    async fn upsert_appointment(&self, appointment: &Appointment) -> StoreResult<bool> {
        self.mem_upsert_appointment(appointment)
    }

    async fn appointment(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Appointment>> {
        self.mem_appointment(company_id, id)
    }

    async fn appointment_by_calcom_uid(
        &self,
        company_id: CompanyId,
        uid: &str,
    ) -> StoreResult<Option<Appointment>> {
        self.enter("appointment_by_calcom_uid")?;
        let data = self.data();
        Ok(data.appointments.get(&company_id).and_then(|t| {
            t.values()
                .find(|a| a.calcom_uid.as_deref() == Some(uid))
                .cloned()
        }))
    }

    async fn appointment_by_key(
        &self,
        company_id: CompanyId,
        idempotency_key: &str,
    ) -> StoreResult<Option<Appointment>> {
        self.mem_appointment_by_key(company_id, idempotency_key)
    }

    async fn appointments(&self, company_id: CompanyId) -> StoreResult<Vec<Appointment>> {
        self.mem_appointments("appointments", company_id, None, usize::MAX)
    }

    async fn appointments_by_status(
        &self,
        company_id: CompanyId,
        status: AppointmentStatus,
        limit: usize,
    ) -> StoreResult<Vec<Appointment>> {
        self.mem_appointments("appointments_by_status", company_id, Some(status), limit)
    }

    async fn sync(&self) -> StoreResult<()> {
        self.enter("sync")
    }

    async fn check(&self) -> StoreResult<()> {
        self.enter("check")
    }

    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.mem_create_api_key(key)
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        self.enter("api_key_by_hash")?;
        Ok(self.data().api_keys.get(key_hash).cloned())
    }

    async fn api_keys(&self, company_id: CompanyId) -> StoreResult<Vec<ApiKey>> {
        self.mem_api_keys(company_id)
    }

    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<ApiKey>> {
        self.mem_revoke_api_key(id, now)
    }
}
