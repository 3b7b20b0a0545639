//! Companies, branches with the global phone index, the routing version and secrets.
//!
//! Where CQL differs from the SQLite store: a branch and its phone route are two partitions,
//! so they cannot change in one transaction. The phone is claimed first (LWT on the global
//! `phone_routes` row), then the branch is written (LWT); a refused branch write releases
//! the fresh claim. A reader may briefly see a number routed to a branch that is still being
//! created or moved (`resolve_phone` returns the pointer as stored; the routing layer treats
//! a pointer to a missing branch as an unknown number).

use askpro_actors::domain::{Branch, Company, PhoneRoute, Secret};
use askpro_actors::error::StoreError;
use askpro_actors::ids::{BranchId, CompanyId};
use askpro_actors::record::Provider;
use chrono::Utc;
use scylla::value::Counter;

use super::claims::{self, MAX_ATTEMPTS};
use super::rows::{calcom_json, BranchLlmRow, BranchRow, CompanyRow, PhoneRow, SecretRow};
use super::{CqlError, CqlStore, Out};

/// What claiming a phone number found.
enum PhoneClaim {
    /// Claimed now.
    Fresh,
    /// The route already named this branch.
    AlreadyOurs,
}

impl CqlStore {
    pub(super) async fn company_exists(&self, id: CompanyId) -> Out<bool> {
        let row: Option<CompanyRow> = self
            .db()
            .one("company", "companies", &self.st().company_get, (id.0,))
            .await?;
        Ok(row.is_some())
    }

    pub(super) async fn company_must_exist(&self, id: CompanyId) -> Out<()> {
        if !self.company_exists(id).await? {
            return Err(StoreError::NotFound(format!("company {id}")).into());
        }
        Ok(())
    }

    pub(super) async fn create_company_cql(&self, c: &Company) -> Out<()> {
        let values = (c.id.0, &c.name, c.allow_unsigned_calcom, c.created_at);
        let st = &self.st().company_insert;
        if !self
            .db()
            .lwt("create_company", "companies", st, values)
            .await?
        {
            return Err(StoreError::Conflict(format!("company {} already exists", c.id)).into());
        }
        Ok(())
    }

    pub(super) async fn company_cql(&self, id: CompanyId) -> Out<Option<Company>> {
        let st = &self.st().company_get;
        let row: Option<CompanyRow> = self.db().one("company", "companies", st, (id.0,)).await?;
        Ok(row.map(Company::from))
    }

    /// A scan of the whole (small) companies table: an admin listing, never on a hot path.
    pub(super) async fn companies_cql(&self) -> Out<Vec<Company>> {
        let st = &self.st().company_all;
        let rows: Vec<CompanyRow> = self.db().all("companies", "companies", st, ()).await?;
        let mut all: Vec<Company> = rows.into_iter().map(Company::from).collect();
        all.sort_by_key(|c| (c.created_at, c.id));
        Ok(all)
    }

    pub(super) async fn branch_cql(&self, company: CompanyId, id: BranchId) -> Out<Option<Branch>> {
        let st = &self.st().branch_get;
        let row: Option<BranchRow> = self
            .db()
            .one("branch", "branches", st, (company.0, id.0))
            .await?;
        let Some(mut branch) = row.map(BranchRow::into_domain).transpose()? else {
            return Ok(None);
        };
        let st = &self.st().branch_llm_get;
        let llm: Option<BranchLlmRow> = self
            .db()
            .one("branch", "branch_retell_llms", st, (company.0, id.0))
            .await?;
        branch.retell_llm_id = llm.and_then(|row| row.llm_id);
        Ok(Some(branch))
    }

    /// Written before the branch row, so a reader never sees a branch without the LLM its
    /// update named (an index-first order, as for the other query tables).
    async fn write_branch_llm(&self, b: &Branch) -> Out<()> {
        let st = &self.st().branch_llm_set;
        let values = (b.company_id.0, b.id.0, b.retell_llm_id.as_deref());
        self.db().exec("write_branch_llm", st, values).await?;
        Ok(())
    }

    pub(super) async fn branches_cql(&self, company: CompanyId) -> Out<Vec<Branch>> {
        let st = &self.st().branch_all;
        let rows: Vec<BranchRow> = self
            .db()
            .all("branches", "branches", st, (company.0,))
            .await?;
        let mut all = rows
            .into_iter()
            .map(BranchRow::into_domain)
            .collect::<Result<Vec<_>, CqlError>>()?;
        let st = &self.st().branch_llm_all;
        let llms: Vec<BranchLlmRow> = self
            .db()
            .all("branches", "branch_retell_llms", st, (company.0,))
            .await?;
        for row in llms {
            if let Some(branch) = all.iter_mut().find(|b| b.id.0 == row.branch_id) {
                branch.retell_llm_id = row.llm_id;
            }
        }
        all.sort_by_key(|b| (b.created_at, b.id));
        Ok(all)
    }

    pub(super) async fn create_branch_cql(&self, b: &Branch) -> Out<()> {
        const OP: &str = "create_branch";
        self.company_must_exist(b.company_id).await?;
        let calcom = calcom_json(b)?;
        match self.claim_phone(OP, &b.phone, b.company_id, b.id).await? {
            PhoneClaim::AlreadyOurs if self.branch_cql(b.company_id, b.id).await?.is_some() => {
                return Err(StoreError::Conflict(format!(
                    "phone number {} is already owned by branch {} of company {}",
                    b.phone, b.id, b.company_id
                ))
                .into());
            }
            // A claim of ours whose branch never got written (an earlier attempt crashed).
            PhoneClaim::AlreadyOurs | PhoneClaim::Fresh => {}
        }
        let values = (
            b.company_id.0,
            b.id.0,
            &b.name,
            &b.phone,
            &b.timezone,
            b.retell_agent_id.as_deref(),
            calcom.as_deref(),
            b.created_at,
            b.fallback_email.as_deref(),
        );
        if b.retell_llm_id.is_some() {
            self.write_branch_llm(b).await?;
        }
        let st = &self.st().branch_insert;
        if !self.db().lwt(OP, "branches", st, values).await? {
            self.release_phone(OP, &b.phone, b.company_id, b.id).await?;
            return Err(StoreError::Conflict(format!(
                "branch {} of company {} already exists",
                b.id, b.company_id
            ))
            .into());
        }
        self.bump_routing_version().await
    }

    /// Replaces the branch. The branch row is written with a compare-and-set on the phone it
    /// had when read, so two concurrent updates cannot leave a phone route that no branch
    /// row agrees with; the loser re-reads and tries again.
    pub(super) async fn update_branch_cql(&self, b: &Branch) -> Out<()> {
        const OP: &str = "update_branch";
        let calcom = calcom_json(b)?;
        for attempt in 0..MAX_ATTEMPTS {
            let Some(old) = self.branch_cql(b.company_id, b.id).await? else {
                return Err(StoreError::NotFound(format!(
                    "branch {} of company {}",
                    b.id, b.company_id
                ))
                .into());
            };
            let moved = old.phone != b.phone;
            let fresh = moved
                && matches!(
                    self.claim_phone(OP, &b.phone, b.company_id, b.id).await?,
                    PhoneClaim::Fresh
                );
            let values = (
                &b.name,
                &b.phone,
                &b.timezone,
                b.retell_agent_id.as_deref(),
                calcom.as_deref(),
                b.created_at,
                b.fallback_email.as_deref(),
                b.company_id.0,
                b.id.0,
                &old.phone,
            );
            self.write_branch_llm(b).await?;
            let st = &self.st().branch_update;
            if self.db().lwt(OP, "branches", st, values).await? {
                if moved {
                    self.release_phone(OP, &old.phone, b.company_id, b.id)
                        .await?;
                }
                return self.bump_routing_version().await;
            }
            if fresh {
                self.release_phone(OP, &b.phone, b.company_id, b.id).await?;
            }
            claims::pause(attempt).await;
        }
        Err(CqlError::Contention {
            operation: OP,
            what: format!("branch {} kept changing", b.id),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Claims `phone` for the branch: [`StoreError::Conflict`] if a live branch owns it, or
    /// if another claim on it is younger than the grace period.
    async fn claim_phone(
        &self,
        operation: &'static str,
        phone: &str,
        company: CompanyId,
        branch: BranchId,
    ) -> Out<PhoneClaim> {
        const T: &str = "phone_routes";
        for attempt in 0..MAX_ATTEMPTS {
            let now = Utc::now();
            let st = &self.st().phone_claim;
            let values = (phone, company.0, branch.0, now);
            if self.db().lwt(operation, T, st, values).await? {
                return Ok(PhoneClaim::Fresh);
            }
            let st = &self.st().phone_get;
            let Some(owner) = self
                .db()
                .one_serial::<PhoneRow>(operation, T, st, (phone,))
                .await?
            else {
                continue; // released meanwhile: claim again
            };
            if (owner.company_id, owner.branch_id) == (company.0, branch.0) {
                return Ok(PhoneClaim::AlreadyOurs);
            }
            let (owner_company, owner_branch) =
                (CompanyId(owner.company_id), BranchId(owner.branch_id));
            let live = self
                .branch_cql(owner_company, owner_branch)
                .await?
                .is_some_and(|ob| ob.phone == phone);
            if live || !claims::is_stale(owner.claimed_at, now) {
                let state = if live { "" } else { " (being written)" };
                return Err(StoreError::Conflict(format!(
                    "phone number {phone} is already owned by branch {owner_branch} of company \
                     {owner_company}{state}"
                ))
                .into());
            }
            let st = &self.st().phone_takeover;
            let values = (
                company.0,
                branch.0,
                now,
                phone,
                owner.company_id,
                owner.branch_id,
            );
            if self.db().lwt(operation, T, st, values).await? {
                tracing::warn!(phone, stale_company = %owner_company, stale_branch = %owner_branch, "took over a stale phone claim");
                return Ok(PhoneClaim::Fresh);
            }
            claims::pause(attempt).await;
        }
        Err(CqlError::Contention {
            operation,
            what: format!("phone number {phone} kept changing owners"),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Drops the route if (and only if) it still names this branch.
    async fn release_phone(
        &self,
        operation: &'static str,
        phone: &str,
        company: CompanyId,
        branch: BranchId,
    ) -> Out<()> {
        let st = &self.st().phone_release;
        let values = (phone, company.0, branch.0);
        self.db().lwt(operation, "phone_routes", st, values).await?;
        Ok(())
    }

    pub(super) async fn resolve_phone_cql(&self, e164: &str) -> Out<Option<PhoneRoute>> {
        let st = &self.st().phone_get;
        let row: Option<PhoneRow> = self
            .db()
            .one("resolve_phone", "phone_routes", st, (e164,))
            .await?;
        Ok(row.map(|r| PhoneRoute {
            company_id: CompanyId(r.company_id),
            branch_id: BranchId(r.branch_id),
        }))
    }

    /// Bumps the counter after a routing change that is already written. A counter update
    /// is not idempotent, so the driver does not retry it; this tries a few times and then
    /// only warns: failing the call would report a change that did happen as failed (and a
    /// retry would then conflict with itself), while the routing caches also expire on their
    /// own (their TTL).
    async fn bump_routing_version(&self) -> Out<()> {
        let st = &self.st().routing_bump;
        for attempt in 0..3 {
            match self.db().exec("routing_version", st, ()).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 2 => {
                    tracing::warn!(error = %e, "routing version not bumped; routing caches refresh at their ttl");
                }
                Err(_) => claims::pause(attempt).await,
            }
        }
        Ok(())
    }

    pub(super) async fn routing_version_cql(&self) -> Out<u64> {
        let st = &self.st().routing_get;
        let row: Option<(Option<Counter>,)> = self
            .db()
            .one("routing_version", "routing_version", st, ())
            .await?;
        let value = row.and_then(|(c,)| c).map_or(0, |Counter(v)| v);
        Ok(value.max(0).unsigned_abs())
    }

    pub(super) async fn add_secret_cql(&self, s: &Secret) -> Out<()> {
        self.company_must_exist(s.company_id).await?;
        let st = &self.st().secret_insert;
        let values = (
            s.company_id.0,
            s.provider.as_str(),
            &s.id,
            &s.value,
            s.created_at,
        );
        if !self.db().lwt("add_secret", "secrets", st, values).await? {
            return Err(StoreError::Conflict(format!(
                "{} secret {} of company {} already exists",
                s.provider, s.id, s.company_id
            ))
            .into());
        }
        Ok(())
    }

    /// Newest first, like the embedded store.
    pub(super) async fn secrets_cql(&self, company: CompanyId, p: Provider) -> Out<Vec<Secret>> {
        let st = &self.st().secret_list;
        let rows: Vec<SecretRow> = self
            .db()
            .all("secrets", "secrets", st, (company.0, p.as_str()))
            .await?;
        let mut all = rows
            .into_iter()
            .map(SecretRow::into_domain)
            .collect::<Result<Vec<_>, CqlError>>()?;
        all.sort_by(|x, y| (y.created_at, &y.id).cmp(&(x.created_at, &x.id)));
        Ok(all)
    }

    pub(super) async fn remove_secret_cql(
        &self,
        company: CompanyId,
        provider: Provider,
        id: &str,
    ) -> Out<bool> {
        let st = &self.st().secret_delete;
        let values = (company.0, provider.as_str(), id);
        Ok(self
            .db()
            .lwt("remove_secret", "secrets", st, values)
            .await?)
    }
}
