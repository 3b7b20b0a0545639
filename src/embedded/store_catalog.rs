//! [`EmbeddedStore`]'s branch updates, routing version, catalog and appointment reads and
//! writes; the `StateStore` impl in `store.rs` delegates here (kept apart for size). Writes
//! go through the writer thread, point reads run on a pooled reader, scans on the blocking
//! pool, exactly like the rest of the store.

use askpro_actors::catalog::{Assignment, Customer, DefaultService, Service, Staff};
use askpro_actors::domain::{Appointment, AppointmentStatus, Branch};
use askpro_actors::ids::CompanyId;
use askpro_actors::store::StoreResult;
use uuid::Uuid;

use super::super::store_catalog_sql as sql;
use super::super::store_rows as rows;
use super::EmbeddedStore;

impl EmbeddedStore {
    pub(super) async fn update_branch_impl(&self, branch: &Branch) -> StoreResult<()> {
        let b = branch.clone();
        self.write("update_branch", "branches", move |conn| {
            sql::update_branch(conn, &b)
        })
        .await
    }

    pub(super) fn routing_version_impl(&self) -> StoreResult<u64> {
        self.read("routing_version", "routing_version", sql::routing_version)
    }

    pub(super) async fn create_service_impl(&self, service: &Service) -> StoreResult<()> {
        let s = service.clone();
        self.write("create_service", "services", move |conn| {
            sql::create_service(conn, &s)
        })
        .await
    }

    pub(super) fn service_impl(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Service>> {
        let query = format!(
            "SELECT {} FROM services WHERE company_id = ?1 AND service_id = ?2",
            rows::SERVICE_COLS
        );
        let args = [company_id.to_string(), id.to_string()];
        self.one("service", "services", &query, args, rows::service)
    }

    pub(super) async fn services_impl(&self, company_id: CompanyId) -> StoreResult<Vec<Service>> {
        let query = format!(
            "SELECT {} FROM services WHERE company_id = ?1 ORDER BY created_at, service_id",
            rows::SERVICE_COLS
        );
        let args = [company_id.to_string()];
        self.many("services", "services", query, args, rows::service)
            .await
    }

    pub(super) async fn ensure_default_service_impl(
        &self,
        branch: &Branch,
        candidate: &Service,
    ) -> StoreResult<DefaultService> {
        let (b, s) = (branch.clone(), candidate.clone());
        self.write("ensure_default_service", "services", move |conn| {
            sql::ensure_default_service(conn, &b, &s)
        })
        .await
    }

    pub(super) async fn create_staff_impl(&self, staff: &Staff) -> StoreResult<()> {
        let s = staff.clone();
        self.write("create_staff", "staff", move |conn| {
            sql::create_staff(conn, &s)
        })
        .await
    }

    pub(super) async fn staff_impl(&self, company_id: CompanyId) -> StoreResult<Vec<Staff>> {
        let query = format!(
            "SELECT {} FROM staff WHERE company_id = ?1 ORDER BY created_at, staff_id",
            rows::STAFF_COLS
        );
        let args = [company_id.to_string()];
        self.many("staff", "staff", query, args, rows::staff).await
    }

    pub(super) async fn assign_impl(&self, assignment: &Assignment) -> StoreResult<()> {
        let a = *assignment;
        self.write("assign", "assignments", move |conn| sql::assign(conn, &a))
            .await
    }

    pub(super) async fn assignments_impl(
        &self,
        company_id: CompanyId,
    ) -> StoreResult<Vec<Assignment>> {
        let query = "SELECT company_id, staff_id, service_id FROM assignments
                     WHERE company_id = ?1 ORDER BY staff_id, service_id"
            .to_owned();
        let args = [company_id.to_string()];
        let map = |r: &rusqlite::Row<'_>| {
            Ok(Assignment {
                company_id: rows::parsed(r, 0)?,
                staff_id: rows::parsed(r, 1)?,
                service_id: rows::parsed(r, 2)?,
            })
        };
        self.many("assignments", "assignments", query, args, map)
            .await
    }

    pub(super) async fn upsert_customer_impl(&self, candidate: &Customer) -> StoreResult<Customer> {
        let c = candidate.clone();
        self.write("upsert_customer", "customers", move |conn| {
            sql::upsert_customer(conn, &c)
        })
        .await
    }

    pub(super) fn customer_impl(
        &self,
        company_id: CompanyId,
        id: Uuid,
    ) -> StoreResult<Option<Customer>> {
        let query = format!(
            "SELECT {} FROM customers WHERE company_id = ?1 AND customer_id = ?2",
            rows::CUSTOMER_COLS
        );
        let args = [company_id.to_string(), id.to_string()];
        self.one("customer", "customers", &query, args, rows::customer)
    }

    pub(super) async fn upsert_appointment_impl(&self, a: &Appointment) -> StoreResult<bool> {
        let a = a.clone();
        self.write("upsert_appointment", "appointments", move |conn| {
            sql::upsert_appointment(conn, &a)
        })
        .await
    }

    /// One appointment by a unique column of the tenant (`appointment_id`, `calcom_uid` or
    /// `idempotency_key`; each has its own index).
    pub(super) fn appointment_by(
        &self,
        operation: &'static str,
        column: &'static str,
        company_id: CompanyId,
        value: &str,
    ) -> StoreResult<Option<Appointment>> {
        let query = format!(
            "SELECT {} FROM appointments WHERE company_id = ?1 AND {column} = ?2",
            rows::APPOINTMENT_COLS
        );
        let args = (company_id.to_string(), value);
        self.one(operation, "appointments", &query, args, rows::appointment)
    }

    pub(super) async fn appointments_impl(
        &self,
        company_id: CompanyId,
    ) -> StoreResult<Vec<Appointment>> {
        let query = format!(
            "SELECT {} FROM appointments WHERE company_id = ?1
             ORDER BY created_at, appointment_id",
            rows::APPOINTMENT_COLS
        );
        let args = [company_id.to_string()];
        let map = rows::appointment;
        self.many("appointments", "appointments", query, args, map)
            .await
    }

    pub(super) async fn appointments_by_status_impl(
        &self,
        company_id: CompanyId,
        status: AppointmentStatus,
        limit: usize,
    ) -> StoreResult<Vec<Appointment>> {
        let query = format!(
            "SELECT {} FROM appointments WHERE company_id = ?1 AND status = ?2
             ORDER BY created_at, appointment_id LIMIT ?3",
            rows::APPOINTMENT_COLS
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let args = (company_id.to_string(), status.as_str(), limit);
        let map = rows::appointment;
        self.many("appointments_by_status", "appointments", query, args, map)
            .await
    }
}
