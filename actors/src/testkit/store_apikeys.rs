//! [`MemStore`]'s tenant API keys: one global map key hash → key, like the stores' table.

use chrono::{DateTime, Utc};

use super::store::MemStore;
use crate::domain::ApiKey;
use crate::error::StoreError;
use crate::ids::CompanyId;
use crate::store::StoreResult;

impl MemStore {
    pub(super) fn mem_create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.enter("create_api_key")?;
        let mut data = self.data();
        if !data.companies.contains_key(&key.company_id) {
            return Err(StoreError::NotFound(format!("company {}", key.company_id)));
        }
        let taken = data.api_keys.contains_key(&key.key_hash)
            || data.api_keys.values().any(|k| k.id == key.id);
        if taken {
            return Err(StoreError::Conflict(format!(
                "api key {} already exists",
                key.id
            )));
        }
        data.api_keys.insert(key.key_hash.clone(), key.clone());
        Ok(())
    }

    pub(super) fn mem_api_keys(&self, company_id: CompanyId) -> StoreResult<Vec<ApiKey>> {
        self.enter("api_keys")?;
        let data = self.data();
        let mut keys: Vec<ApiKey> = data
            .api_keys
            .values()
            .filter(|k| k.company_id == company_id)
            .cloned()
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    pub(super) fn mem_revoke_api_key(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ApiKey>> {
        self.enter("revoke_api_key")?;
        let mut data = self.data();
        let Some(key) = data.api_keys.values_mut().find(|k| k.id == id) else {
            return Ok(None);
        };
        key.revoked_at.get_or_insert(now);
        Ok(Some(key.clone()))
    }
}
