//! The catalog: services (with the per-branch default service), staff, assignments and
//! customers.
//!
//! Where CQL differs from the SQLite store, which serializes every read-then-write:
//! - `ensure_default_service`: a claim row per branch (`default_service_claims`, LWT) picks
//!   the one caller that creates the service; it writes the service and its assignments in
//!   one logged batch. The others wait for that service to appear and answer `Existing`.
//!   A service created through `create_service` between the caller's read and its claim is
//!   not seen (SQLite would return it): the branch then has the default service too.
//! - `upsert_customer` with a phone: the phone is claimed (`customers_by_phone`, LWT) before
//!   the customer row is written; filling a missing name or email is a compare-and-set on
//!   the values read, so a concurrent fill is never overwritten.
//! - Existence checks (the company, branch, staff member or service must exist) are reads
//!   before the write; rows are never deleted, so the check cannot go stale.

use askpro_actors::catalog::{Assignment, Customer, DefaultService, Service, Staff};
use askpro_actors::domain::Branch;
use askpro_actors::error::StoreError;
use askpro_actors::ids::{BranchId, CompanyId};
use chrono::{DateTime, Utc};
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use uuid::Uuid;

use super::claims::{self, MAX_ATTEMPTS};
use super::rows::{CustomerRow, ServiceRow, ServiceValues, StaffRow};
use super::{CqlError, CqlStore, Out};

/// How long a caller of `ensure_default_service` waits for the winner's service to appear.
const DEFAULT_SERVICE_WAITS: u32 = 100;

type ClaimRow = (Uuid, Option<DateTime<Utc>>);

impl CqlStore {
    async fn branch_must_exist(&self, company: CompanyId, branch: BranchId) -> Out<()> {
        if self.branch_cql(company, branch).await?.is_none() {
            return Err(
                StoreError::NotFound(format!("branch {branch} of company {company}")).into(),
            );
        }
        Ok(())
    }

    pub(super) async fn create_service_cql(&self, s: &Service) -> Out<()> {
        self.company_must_exist(s.company_id).await?;
        if let Some(branch) = s.branch_id {
            self.branch_must_exist(s.company_id, branch).await?;
        }
        let st = &self.st().service_insert;
        let values = ServiceValues::of(s)?;
        if !self
            .db()
            .lwt("create_service", "services", st, values)
            .await?
        {
            return Err(StoreError::Conflict(format!(
                "service {} of company {} already exists",
                s.id, s.company_id
            ))
            .into());
        }
        Ok(())
    }

    pub(super) async fn service_cql(&self, company: CompanyId, id: Uuid) -> Out<Option<Service>> {
        let st = &self.st().service_get;
        let row: Option<ServiceRow> = self
            .db()
            .one("service", "services", st, (company.0, id))
            .await?;
        Ok(row.map(ServiceRow::into_domain).transpose()?)
    }

    /// Oldest first.
    pub(super) async fn services_cql(&self, company: CompanyId) -> Out<Vec<Service>> {
        let st = &self.st().service_all;
        let rows: Vec<ServiceRow> = self
            .db()
            .all("services", "services", st, (company.0,))
            .await?;
        let mut all = rows
            .into_iter()
            .map(ServiceRow::into_domain)
            .collect::<Result<Vec<_>, CqlError>>()?;
        all.sort_by_key(|s| (s.created_at, s.id));
        Ok(all)
    }

    pub(super) async fn ensure_default_service_cql(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> Out<DefaultService> {
        const OP: &str = "ensure_default_service";
        const T: &str = "default_service_claims";
        let (company, id) = (branch.company_id, branch.id);
        for attempt in 0..DEFAULT_SERVICE_WAITS {
            let services = self.services_cql(company).await?;
            if let Some(first) = services.into_iter().find(|s| s.offered_at(id)) {
                return Ok(DefaultService::Existing(first));
            }
            let now = Utc::now();
            let st = &self.st().default_claim;
            let values = (company.0, id.0, candidate.id, now);
            if self.db().lwt(OP, T, st, values).await? {
                return self.create_default_service(branch, candidate).await;
            }
            let st = &self.st().default_claim_get;
            let claim: Option<ClaimRow> =
                self.db().one_serial(OP, T, st, (company.0, id.0)).await?;
            let Some((winner, claimed_at)) = claim else {
                continue;
            };
            if winner == candidate.id {
                // Our own claim from an earlier attempt that did not finish.
                return self.create_default_service(branch, candidate).await;
            }
            if let Some(service) = self.service_cql(company, winner).await? {
                return Ok(DefaultService::Existing(service));
            }
            if claims::is_stale(claimed_at, now) {
                let st = &self.st().default_claim_takeover;
                let values = (candidate.id, now, company.0, id.0, winner);
                if self.db().lwt(OP, T, st, values).await? {
                    return self.create_default_service(branch, candidate).await;
                }
            }
            claims::pause(attempt.min(4)).await;
        }
        Err(CqlError::Contention {
            operation: OP,
            what: format!("the default service of branch {id} did not appear"),
            attempts: DEFAULT_SERVICE_WAITS,
        }
        .into())
    }

    /// Writes the claimed candidate and an assignment for each active staff member of the
    /// branch in one logged batch (all or nothing, also across the two tables).
    async fn create_default_service(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> Out<DefaultService> {
        let staff = self.staff_cql(branch.company_id).await?;
        let assignments: Vec<Assignment> = staff
            .into_iter()
            .filter(|s| s.active && s.branch_id == Some(branch.id))
            .map(|s| Assignment {
                company_id: branch.company_id,
                staff_id: s.id,
                service_id: candidate.id,
            })
            .collect();
        let mut batch = Batch::new(BatchType::Logged);
        let mut values: Vec<Box<dyn SerializeRow + Send + Sync + '_>> = Vec::new();
        batch.append_statement(self.st().service_write.clone());
        values.push(Box::new(ServiceValues::of(candidate)?));
        for a in &assignments {
            batch.append_statement(self.st().assignment_insert.clone());
            values.push(Box::new((a.company_id.0, a.staff_id, a.service_id)));
        }
        self.db()
            .batch("ensure_default_service", &batch, values)
            .await?;
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

    pub(super) async fn create_staff_cql(&self, s: &Staff) -> Out<()> {
        self.company_must_exist(s.company_id).await?;
        if let Some(branch) = s.branch_id {
            self.branch_must_exist(s.company_id, branch).await?;
        }
        let st = &self.st().staff_insert;
        let values = (
            s.company_id.0,
            s.id,
            s.branch_id.map(|b| b.0),
            &s.name,
            s.email.as_deref(),
            s.active,
            s.created_at,
        );
        if !self.db().lwt("create_staff", "staff", st, values).await? {
            return Err(StoreError::Conflict(format!(
                "staff member {} of company {} already exists",
                s.id, s.company_id
            ))
            .into());
        }
        Ok(())
    }

    /// Oldest first.
    pub(super) async fn staff_cql(&self, company: CompanyId) -> Out<Vec<Staff>> {
        let st = &self.st().staff_all;
        let rows: Vec<StaffRow> = self.db().all("staff", "staff", st, (company.0,)).await?;
        let mut all: Vec<Staff> = rows.into_iter().map(Staff::from).collect();
        all.sort_by_key(|s| (s.created_at, s.id));
        Ok(all)
    }

    pub(super) async fn assign_cql(&self, a: &Assignment) -> Out<()> {
        const OP: &str = "assign";
        let key = (a.company_id.0, a.staff_id);
        let st = &self.st().staff_get;
        let staff: Option<StaffRow> = self.db().one(OP, "staff", st, key).await?;
        if staff.is_none() {
            return Err(StoreError::NotFound(format!(
                "staff member {} of company {}",
                a.staff_id, a.company_id
            ))
            .into());
        }
        if self
            .service_cql(a.company_id, a.service_id)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound(format!(
                "service {} of company {}",
                a.service_id, a.company_id
            ))
            .into());
        }
        let st = &self.st().assignment_insert;
        let values = (a.company_id.0, a.staff_id, a.service_id);
        self.db().exec(OP, st, values).await?;
        Ok(())
    }

    /// By (staff, service) id, like the embedded store.
    pub(super) async fn assignments_cql(&self, company: CompanyId) -> Out<Vec<Assignment>> {
        let st = &self.st().assignment_all;
        let rows: Vec<(Uuid, Uuid, Uuid)> = self
            .db()
            .all("assignments", "assignments", st, (company.0,))
            .await?;
        let mut all: Vec<Assignment> = rows
            .into_iter()
            .map(|(company_id, staff_id, service_id)| Assignment {
                company_id: CompanyId(company_id),
                staff_id,
                service_id,
            })
            .collect();
        all.sort_by_key(|a| (a.staff_id, a.service_id));
        Ok(all)
    }

    pub(super) async fn customer_cql(&self, company: CompanyId, id: Uuid) -> Out<Option<Customer>> {
        let st = &self.st().customer_get;
        let row: Option<CustomerRow> = self
            .db()
            .one("customer", "customers", st, (company.0, id))
            .await?;
        Ok(row.map(Customer::from))
    }

    pub(super) async fn upsert_customer_cql(&self, c: &Customer) -> Out<Customer> {
        const OP: &str = "upsert_customer";
        let Some(phone) = &c.phone else {
            // Anonymous: keyed by id (callers derive it from the call, so a rerun finds it).
            if self.insert_customer(c).await? {
                return Ok(c.clone());
            }
            return self.stored_customer(c).await;
        };
        for attempt in 0..MAX_ATTEMPTS {
            let now = Utc::now();
            let key = (c.company_id.0, phone.as_str());
            let st = &self.st().customer_phone_get;
            let owner: Option<ClaimRow> = self.db().one(OP, "customers_by_phone", st, key).await?;
            let claimed = match owner {
                Some((id, claimed_at)) => {
                    if let Some(stored) = self.customer_cql(c.company_id, id).await? {
                        match self.fill_customer(stored, c).await? {
                            Some(done) => return Ok(done),
                            None => continue, // filled concurrently: read again
                        }
                    }
                    if id == c.id {
                        true // our own claim whose row was never written
                    } else if claims::is_stale(claimed_at, now) {
                        let st = &self.st().customer_phone_takeover;
                        let values = (c.id, now, c.company_id.0, phone.as_str(), id);
                        self.db().lwt(OP, "customers_by_phone", st, values).await?
                    } else {
                        false // its claimant is still writing the row
                    }
                }
                None => {
                    let st = &self.st().customer_phone_claim;
                    let values = (c.company_id.0, phone.as_str(), c.id, now);
                    self.db().lwt(OP, "customers_by_phone", st, values).await?
                }
            };
            if claimed {
                if self.insert_customer(c).await? {
                    return Ok(c.clone());
                }
                let stored = self.stored_customer(c).await?;
                if stored.phone.as_deref() == Some(phone) {
                    return Ok(stored);
                }
                let st = &self.st().customer_phone_release;
                let values = (c.company_id.0, phone.as_str(), c.id);
                self.db().lwt(OP, "customers_by_phone", st, values).await?;
                return Err(StoreError::Conflict(format!(
                    "customer {} of company {} exists with another phone",
                    c.id, c.company_id
                ))
                .into());
            }
            claims::pause(attempt).await;
        }
        Err(CqlError::Contention {
            operation: OP,
            what: format!("the customer with phone {phone} kept changing"),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Inserts the candidate unless its id exists; returns whether it did.
    async fn insert_customer(&self, c: &Customer) -> Out<bool> {
        let st = &self.st().customer_insert;
        let values = (
            c.company_id.0,
            c.id,
            c.name.as_deref(),
            c.phone.as_deref(),
            c.email.as_deref(),
            c.created_at,
        );
        Ok(self
            .db()
            .lwt("upsert_customer", "customers", st, values)
            .await?)
    }

    /// The stored row of the candidate's id (it exists: an insert was just refused).
    async fn stored_customer(&self, c: &Customer) -> Out<Customer> {
        let st = &self.st().customer_get;
        let row: Option<CustomerRow> = self
            .db()
            .one_serial("upsert_customer", "customers", st, (c.company_id.0, c.id))
            .await?;
        row.map(Customer::from).ok_or_else(|| {
            CqlError::Corrupt {
                table: "customers",
                problem: format!("customer {} refused as existing but not found", c.id),
            }
            .into()
        })
    }

    /// Fills a missing name or email of `stored` from `c`: the stored row as it is now, or
    /// `None` when a concurrent write changed it first.
    async fn fill_customer(&self, stored: Customer, c: &Customer) -> Out<Option<Customer>> {
        let name = stored.name.clone().or_else(|| c.name.clone());
        let email = stored.email.clone().or_else(|| c.email.clone());
        if (&name, &email) == (&stored.name, &stored.email) {
            return Ok(Some(stored));
        }
        let st = &self.st().customer_fill;
        let values = (
            name.as_deref(),
            email.as_deref(),
            stored.company_id.0,
            stored.id,
            stored.name.as_deref(),
            stored.email.as_deref(),
        );
        if !self
            .db()
            .lwt("upsert_customer", "customers", st, values)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(Customer {
            name,
            email,
            ..stored
        }))
    }
}
