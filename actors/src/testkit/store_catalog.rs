//! [`MemStore`]'s branch updates, catalog (services, staff, assignments, customers) and
//! appointment model, called by the trait implementation in `store_impl.rs`. Each method
//! holds the data lock for its whole body, which makes it atomic like a store transaction.

use uuid::Uuid;

use super::store::{Data, MemStore};
use crate::catalog::{Assignment, Customer, DefaultService, Service, Staff};
use crate::domain::{Appointment, AppointmentStatus, Branch, PhoneRoute};
use crate::error::StoreError;
use crate::ids::CompanyId;
use crate::store::StoreResult;

fn company_must_exist(data: &Data, company_id: CompanyId) -> StoreResult<()> {
    if data.companies.contains_key(&company_id) {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("company {company_id}")))
    }
}

impl MemStore {
    pub(super) fn mem_update_branch(&self, branch: &Branch) -> StoreResult<()> {
        self.enter("update_branch")?;
        let mut data = self.data();
        let stored = data
            .branches
            .get(&branch.company_id)
            .and_then(|b| b.get(&branch.id))
            .cloned()
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "branch {} of company {}",
                    branch.id, branch.company_id
                ))
            })?;
        let route = PhoneRoute {
            company_id: branch.company_id,
            branch_id: branch.id,
        };
        if stored.phone != branch.phone {
            if let Some(owner) = data.phones.get(&branch.phone) {
                if *owner != route {
                    return Err(StoreError::Conflict(format!(
                        "phone number {} is already owned by branch {} of company {}",
                        branch.phone, owner.branch_id, owner.company_id
                    )));
                }
            }
            if data.phones.get(&stored.phone) == Some(&route) {
                data.phones.remove(&stored.phone);
            }
            data.phones.insert(branch.phone.clone(), route);
        }
        data.branches
            .entry(branch.company_id)
            .or_default()
            .insert(branch.id, branch.clone());
        data.routing_version += 1;
        Ok(())
    }

    pub(super) fn mem_routing_version(&self) -> StoreResult<u64> {
        self.enter("routing_version")?;
        Ok(self.data().routing_version)
    }

    pub(super) fn mem_create_service(&self, service: &Service) -> StoreResult<()> {
        self.enter("create_service")?;
        let mut data = self.data();
        company_must_exist(&data, service.company_id)?;
        if let Some(branch_id) = service.branch_id {
            let known = data
                .branches
                .get(&service.company_id)
                .is_some_and(|b| b.contains_key(&branch_id));
            if !known {
                return Err(StoreError::NotFound(format!(
                    "branch {branch_id} of company {}",
                    service.company_id
                )));
            }
        }
        let services = data.services.entry(service.company_id).or_default();
        if services.contains_key(&service.id) {
            return Err(StoreError::Conflict(format!(
                "service {} of company {} already exists",
                service.id, service.company_id
            )));
        }
        services.insert(service.id, service.clone());
        Ok(())
    }

    pub(super) fn mem_service(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Service>> {
        self.enter("service")?;
        let data = self.data();
        Ok(data
            .services
            .get(&company_id)
            .and_then(|s| s.get(&id))
            .cloned())
    }

    pub(super) fn mem_services(&self, company_id: CompanyId) -> StoreResult<Vec<Service>> {
        self.enter("services")?;
        Ok(sorted_services(&self.data(), company_id))
    }

    pub(super) fn mem_ensure_default_service(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> StoreResult<DefaultService> {
        self.enter("ensure_default_service")?;
        let mut data = self.data();
        let existing = sorted_services(&data, branch.company_id)
            .into_iter()
            .find(|s| s.offered_at(branch.id));
        if let Some(service) = existing {
            return Ok(DefaultService::Existing(service));
        }
        let assignments: Vec<Assignment> = data
            .staff
            .get(&branch.company_id)
            .map(|staff| {
                let mut members: Vec<&Staff> = staff
                    .values()
                    .filter(|s| s.active && s.branch_id == Some(branch.id))
                    .collect();
                members.sort_by_key(|s| (s.created_at, s.id));
                members
                    .into_iter()
                    .map(|s| Assignment {
                        company_id: branch.company_id,
                        staff_id: s.id,
                        service_id: candidate.id,
                    })
                    .collect()
            })
            .unwrap_or_default();
        data.services
            .entry(candidate.company_id)
            .or_default()
            .insert(candidate.id, candidate.clone());
        let links = data.assignments.entry(branch.company_id).or_default();
        links.extend(assignments.iter().map(|a| (a.staff_id, a.service_id)));
        Ok(DefaultService::Created {
            service: candidate.clone(),
            assignments,
        })
    }

    pub(super) fn mem_create_staff(&self, staff: &Staff) -> StoreResult<()> {
        self.enter("create_staff")?;
        let mut data = self.data();
        company_must_exist(&data, staff.company_id)?;
        let members = data.staff.entry(staff.company_id).or_default();
        if members.contains_key(&staff.id) {
            return Err(StoreError::Conflict(format!(
                "staff member {} of company {} already exists",
                staff.id, staff.company_id
            )));
        }
        members.insert(staff.id, staff.clone());
        Ok(())
    }

    pub(super) fn mem_staff(&self, company_id: CompanyId) -> StoreResult<Vec<Staff>> {
        self.enter("staff")?;
        let data = self.data();
        let mut all: Vec<Staff> = data
            .staff
            .get(&company_id)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|s| (s.created_at, s.id));
        Ok(all)
    }

    pub(super) fn mem_assign(&self, a: &Assignment) -> StoreResult<()> {
        self.enter("assign")?;
        let mut data = self.data();
        let staff_known = data
            .staff
            .get(&a.company_id)
            .is_some_and(|s| s.contains_key(&a.staff_id));
        if !staff_known {
            return Err(StoreError::NotFound(format!(
                "staff member {} of company {}",
                a.staff_id, a.company_id
            )));
        }
        let service_known = data
            .services
            .get(&a.company_id)
            .is_some_and(|s| s.contains_key(&a.service_id));
        if !service_known {
            return Err(StoreError::NotFound(format!(
                "service {} of company {}",
                a.service_id, a.company_id
            )));
        }
        data.assignments
            .entry(a.company_id)
            .or_default()
            .insert((a.staff_id, a.service_id));
        Ok(())
    }

    pub(super) fn mem_assignments(&self, company_id: CompanyId) -> StoreResult<Vec<Assignment>> {
        self.enter("assignments")?;
        let data = self.data();
        Ok(data
            .assignments
            .get(&company_id)
            .map(|links| {
                links
                    .iter()
                    .map(|&(staff_id, service_id)| Assignment {
                        company_id,
                        staff_id,
                        service_id,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub(super) fn mem_upsert_customer(&self, candidate: &Customer) -> StoreResult<Customer> {
        self.enter("upsert_customer")?;
        let mut data = self.data();
        let customers = data.customers.entry(candidate.company_id).or_default();
        let found = match &candidate.phone {
            Some(phone) => customers
                .values()
                .find(|c| c.phone.as_ref() == Some(phone))
                .map(|c| c.id),
            None => customers
                .contains_key(&candidate.id)
                .then_some(candidate.id),
        };
        let Some(id) = found else {
            if customers.contains_key(&candidate.id) {
                return Err(StoreError::Conflict(format!(
                    "customer {} of company {} exists with another phone",
                    candidate.id, candidate.company_id
                )));
            }
            customers.insert(candidate.id, candidate.clone());
            return Ok(candidate.clone());
        };
        let stored = customers
            .get_mut(&id)
            .ok_or_else(|| StoreError::NotFound(format!("customer {id}")))?;
        if candidate.phone.is_some() {
            if stored.name.is_none() {
                stored.name.clone_from(&candidate.name);
            }
            if stored.email.is_none() {
                stored.email.clone_from(&candidate.email);
            }
        }
        Ok(stored.clone())
    }

    pub(super) fn mem_customer(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Customer>> {
        self.enter("customer")?;
        let data = self.data();
        Ok(data
            .customers
            .get(&company_id)
            .and_then(|c| c.get(&id))
            .cloned())
    }

    /// Keyed by id; a row without a stored id falls back to the row owning its Cal.com uid
    /// (webhooks of bookings made in Cal.com carry fresh ids). A uid or idempotency key owned
    /// by another row, or a different uid/key than the stored one, is a conflict; a missing
    /// uid/key keeps the stored one.
    pub(super) fn mem_upsert_appointment(&self, a: &Appointment) -> StoreResult<bool> {
        self.enter("upsert_appointment")?;
        let mut data = self.data();
        let tenant = data.appointments.entry(a.company_id).or_default();
        let owner_of = |pick: fn(&Appointment) -> Option<&String>, value: Option<&String>| {
            value.and_then(|v| tenant.values().find(|x| pick(x) == Some(v)).map(|x| x.id))
        };
        let uid_owner = owner_of(|x| x.calcom_uid.as_ref(), a.calcom_uid.as_ref());
        let key_owner = owner_of(|x| x.idempotency_key.as_ref(), a.idempotency_key.as_ref());
        let target = if tenant.contains_key(&a.id) {
            Some(a.id)
        } else {
            uid_owner
        };
        let id = target.unwrap_or(a.id);
        let clash = |what: &str, owner: Option<Uuid>| match owner {
            Some(other) if other != id => Err(StoreError::Conflict(format!(
                "{what} of appointment {} is already used by appointment {other} of company {}",
                a.id, a.company_id
            ))),
            _ => Ok(()),
        };
        clash("calcom uid", uid_owner)?;
        clash("idempotency key", key_owner)?;
        let mut row = a.clone();
        if let Some(stored) = tenant.get(&id) {
            for (what, old, new) in [
                ("calcom uid", &stored.calcom_uid, &a.calcom_uid),
                (
                    "idempotency key",
                    &stored.idempotency_key,
                    &a.idempotency_key,
                ),
            ] {
                if let (Some(old), Some(new)) = (old, new) {
                    if old != new {
                        return Err(StoreError::Conflict(format!(
                            "appointment {id} of company {} has {what} {old}, not {new}",
                            a.company_id
                        )));
                    }
                }
            }
            if stored.version > a.version {
                return Ok(false);
            }
            row.id = id;
            row.calcom_uid = row.calcom_uid.or_else(|| stored.calcom_uid.clone());
            row.idempotency_key = row
                .idempotency_key
                .or_else(|| stored.idempotency_key.clone());
        }
        tenant.insert(row.id, row);
        Ok(true)
    }

    pub(super) fn mem_appointment(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Appointment>> {
        self.enter("appointment")?;
        let data = self.data();
        Ok(data
            .appointments
            .get(&company_id)
            .and_then(|t| t.get(&id))
            .cloned())
    }

    pub(super) fn mem_appointment_by_key(
        &self,
        company_id: CompanyId,
        key: &str,
    ) -> StoreResult<Option<Appointment>> {
        self.enter("appointment_by_key")?;
        let data = self.data();
        Ok(data.appointments.get(&company_id).and_then(|t| {
            t.values()
                .find(|a| a.idempotency_key.as_deref() == Some(key))
                .cloned()
        }))
    }

    /// Oldest (`created_at`, then id) first; `status` filters, `limit` truncates.
    pub(super) fn mem_appointments(
        &self,
        op: &'static str,
        company_id: CompanyId,
        status: Option<AppointmentStatus>,
        limit: usize,
    ) -> StoreResult<Vec<Appointment>> {
        self.enter(op)?;
        let data = self.data();
        let mut all: Vec<Appointment> = data
            .appointments
            .get(&company_id)
            .map(|t| {
                t.values()
                    .filter(|a| status.is_none_or(|s| a.status == s))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by_key(|a| (a.created_at, a.id));
        all.truncate(limit);
        Ok(all)
    }
}

/// A tenant's services, oldest first.
fn sorted_services(data: &Data, company_id: CompanyId) -> Vec<Service> {
    let mut all: Vec<Service> = data
        .services
        .get(&company_id)
        .map(|s| s.values().cloned().collect())
        .unwrap_or_default();
    all.sort_by_key(|s| (s.created_at, s.id));
    all
}

#[cfg(test)]
#[path = "store_catalog_tests.rs"]
mod tests;
