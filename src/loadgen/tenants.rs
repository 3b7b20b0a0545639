//! Tenants to load: a company and a Retell signing secret each.

use std::fmt;

use askpro_actors::domain::{Company, Secret};
use askpro_actors::{CompanyId, Provider, StateStore, StoreError};
use chrono::Utc;

/// A tenant the load is sent for: requests go to its path, signed with its secret.
#[derive(Clone)]
pub struct LoadTenant {
    /// The tenant; replaces `{company_id}` in the path template.
    pub company_id: CompanyId,
    /// The Retell secret the requests are signed with.
    pub secret: String,
    /// The tenant's branch number, asked for by `--scenario inbound`; `None` until
    /// [`super::provision_branches`].
    pub phone: Option<String>,
}

impl fmt::Debug for LoadTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadTenant")
            .field("company_id", &self.company_id)
            .field("secret", &"<redacted>")
            .field("phone", &self.phone)
            .finish()
    }
}

/// Creates `n` companies named `{prefix}-{i}` with one fresh Retell secret each (32 random
/// bytes, hex) through the store contract, and returns them ready for [`super::run`].
pub async fn provision_tenants(
    store: &dyn StateStore,
    n: usize,
    prefix: &str,
) -> Result<Vec<LoadTenant>, StoreError> {
    let mut tenants = Vec::with_capacity(n);
    for i in 0..n {
        tenants.push(provision_one(store, &format!("{prefix}-{i}")).await?);
    }
    tracing::info!(tenants = n, prefix, "loadgen tenants provisioned");
    Ok(tenants)
}

async fn provision_one(store: &dyn StateStore, name: &str) -> Result<LoadTenant, StoreError> {
    let now = Utc::now();
    let company = Company {
        id: CompanyId::new(),
        name: name.to_owned(),
        allow_unsigned_calcom: false,
        created_at: now,
    };
    store.create_company(&company).await?;
    let value = hex::encode(rand::random::<[u8; 32]>());
    let secret = Secret {
        company_id: company.id,
        provider: Provider::Retell,
        id: format!("sec_{}", uuid::Uuid::now_v7().simple()),
        value: value.clone(),
        created_at: now,
    };
    store.add_secret(&secret).await?;
    Ok(LoadTenant {
        company_id: company.id,
        secret: value,
        phone: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use askpro_actors::catalog::{Assignment, Customer, DefaultService, Service, Staff};
    use askpro_actors::domain::{
        Appointment, AppointmentStatus, Branch, Call, DedupClaim, DedupEntry, EventRow,
        EventStatus, PhoneRoute,
    };
    use askpro_actors::store::{ClaimRequest, StoreResult};
    use askpro_actors::EventId;
    use async_trait::async_trait;
    use chrono::DateTime;

    use super::*;

    /// Keeps companies and secrets; every other operation is unused by the load tool.
    #[derive(Default)]
    struct TenantStore {
        companies: Mutex<Vec<Company>>,
        secrets: Mutex<Vec<Secret>>,
    }

    const UNUSED: &str = "not used by loadgen";

    #[async_trait]
    impl StateStore for TenantStore {
        async fn create_company(&self, company: &Company) -> StoreResult<()> {
            self.companies.lock().unwrap().push(company.clone());
            Ok(())
        }
        async fn company(&self, id: CompanyId) -> StoreResult<Option<Company>> {
            let companies = self.companies.lock().unwrap();
            Ok(companies.iter().find(|c| c.id == id).cloned())
        }
        async fn companies(&self) -> StoreResult<Vec<Company>> {
            Ok(self.companies.lock().unwrap().clone())
        }
        async fn create_branch(&self, _: &Branch) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn branch(
            &self,
            _: CompanyId,
            _: askpro_actors::BranchId,
        ) -> StoreResult<Option<Branch>> {
            unimplemented!("{UNUSED}")
        }
        async fn branches(&self, _: CompanyId) -> StoreResult<Vec<Branch>> {
            unimplemented!("{UNUSED}")
        }
        async fn resolve_phone(&self, _: &str) -> StoreResult<Option<PhoneRoute>> {
            unimplemented!("{UNUSED}")
        }
        async fn add_secret(&self, secret: &Secret) -> StoreResult<()> {
            self.secrets.lock().unwrap().push(secret.clone());
            Ok(())
        }
        async fn secrets(
            &self,
            company_id: CompanyId,
            provider: Provider,
        ) -> StoreResult<Vec<Secret>> {
            let secrets = self.secrets.lock().unwrap();
            let matching = secrets
                .iter()
                .filter(|s| s.company_id == company_id && s.provider == provider);
            Ok(matching.cloned().collect())
        }
        async fn remove_secret(&self, _: CompanyId, _: Provider, _: &str) -> StoreResult<bool> {
            unimplemented!("{UNUSED}")
        }
        async fn record_events(&self, _: &[EventRow]) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn set_event_status(
            &self,
            _: CompanyId,
            _: EventId,
            _: EventStatus,
            _: u32,
            _: Option<&str>,
            _: DateTime<Utc>,
        ) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn event(&self, _: CompanyId, _: EventId) -> StoreResult<Option<EventRow>> {
            unimplemented!("{UNUSED}")
        }
        async fn find_event(&self, _: EventId) -> StoreResult<Option<EventRow>> {
            unimplemented!("{UNUSED}")
        }
        async fn events(
            &self,
            _: CompanyId,
            _: Option<EventStatus>,
            _: usize,
        ) -> StoreResult<Vec<EventRow>> {
            unimplemented!("{UNUSED}")
        }
        async fn dedup_claim(&self, _: ClaimRequest<'_>) -> StoreResult<DedupClaim> {
            unimplemented!("{UNUSED}")
        }
        async fn dedup_complete(&self, _: CompanyId, _: &str, _: EventId) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn dedup_release(&self, _: CompanyId, _: &str, _: EventId) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn dedup_entry(
            &self,
            _: CompanyId,
            _: &str,
            _: DateTime<Utc>,
        ) -> StoreResult<Option<DedupEntry>> {
            unimplemented!("{UNUSED}")
        }
        async fn upsert_call(&self, _: &Call) -> StoreResult<bool> {
            unimplemented!("{UNUSED}")
        }
        async fn call(&self, _: CompanyId, _: &str) -> StoreResult<Option<Call>> {
            unimplemented!("{UNUSED}")
        }
        async fn upsert_appointment(&self, _: &Appointment) -> StoreResult<bool> {
            unimplemented!("{UNUSED}")
        }
        async fn appointment_by_calcom_uid(
            &self,
            _: CompanyId,
            _: &str,
        ) -> StoreResult<Option<Appointment>> {
            unimplemented!("{UNUSED}")
        }
        async fn appointments(&self, _: CompanyId) -> StoreResult<Vec<Appointment>> {
            unimplemented!("{UNUSED}")
        }
        async fn appointment(
            &self,
            _: CompanyId,
            _: uuid::Uuid,
        ) -> StoreResult<Option<Appointment>> {
            unimplemented!("{UNUSED}")
        }
        async fn appointment_by_key(
            &self,
            _: CompanyId,
            _: &str,
        ) -> StoreResult<Option<Appointment>> {
            unimplemented!("{UNUSED}")
        }
        async fn appointments_by_status(
            &self,
            _: CompanyId,
            _: AppointmentStatus,
            _: usize,
        ) -> StoreResult<Vec<Appointment>> {
            unimplemented!("{UNUSED}")
        }
        async fn update_branch(&self, _: &Branch) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn routing_version(&self) -> StoreResult<u64> {
            unimplemented!("{UNUSED}")
        }
        async fn create_service(&self, _: &Service) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn service(&self, _: CompanyId, _: uuid::Uuid) -> StoreResult<Option<Service>> {
            unimplemented!("{UNUSED}")
        }
        async fn services(&self, _: CompanyId) -> StoreResult<Vec<Service>> {
            unimplemented!("{UNUSED}")
        }
        async fn ensure_default_service(
            &self,
            _: &Branch,
            _: &Service,
        ) -> StoreResult<DefaultService> {
            unimplemented!("{UNUSED}")
        }
        async fn create_staff(&self, _: &Staff) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn staff(&self, _: CompanyId) -> StoreResult<Vec<Staff>> {
            unimplemented!("{UNUSED}")
        }
        async fn assign(&self, _: &Assignment) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn assignments(&self, _: CompanyId) -> StoreResult<Vec<Assignment>> {
            unimplemented!("{UNUSED}")
        }
        async fn upsert_customer(&self, _: &Customer) -> StoreResult<Customer> {
            unimplemented!("{UNUSED}")
        }
        async fn customer(&self, _: CompanyId, _: uuid::Uuid) -> StoreResult<Option<Customer>> {
            unimplemented!("{UNUSED}")
        }
        async fn sync(&self) -> StoreResult<()> {
            Ok(())
        }
        async fn check(&self) -> StoreResult<()> {
            Ok(())
        }
        async fn create_api_key(&self, _: &askpro_actors::domain::ApiKey) -> StoreResult<()> {
            unimplemented!("{UNUSED}")
        }
        async fn api_key_by_hash(
            &self,
            _: &str,
        ) -> StoreResult<Option<askpro_actors::domain::ApiKey>> {
            unimplemented!("{UNUSED}")
        }
        async fn api_keys(&self, _: CompanyId) -> StoreResult<Vec<askpro_actors::domain::ApiKey>> {
            unimplemented!("{UNUSED}")
        }
        async fn revoke_api_key(
            &self,
            _: &str,
            _: DateTime<chrono::Utc>,
        ) -> StoreResult<Option<askpro_actors::domain::ApiKey>> {
            unimplemented!("{UNUSED}")
        }
    }

    #[tokio::test]
    async fn provisions_named_companies_with_one_retell_secret_each() {
        let store = TenantStore::default();
        let tenants = provision_tenants(&store, 3, "lg").await.unwrap();
        assert_eq!(tenants.len(), 3);
        let names: Vec<String> = store
            .companies()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["lg-0", "lg-1", "lg-2"]);
        for tenant in &tenants {
            let secrets = store
                .secrets(tenant.company_id, Provider::Retell)
                .await
                .unwrap();
            assert_eq!(secrets.len(), 1);
            assert_eq!(secrets[0].value, tenant.secret);
            assert_eq!(tenant.secret.len(), 64);
            assert!(tenant.secret.bytes().all(|b| b.is_ascii_hexdigit()));
            let id = secrets[0].id.strip_prefix("sec_").expect("sec_ prefix");
            assert_eq!(id.len(), 32, "a simple uuid");
        }
        assert_ne!(tenants[0].secret, tenants[1].secret);
        assert!(!format!("{:?}", tenants[0]).contains(&tenants[0].secret));
    }
}
