//! Tenant API keys: the global `api_keys` table (key hash → tenant) the API authenticates
//! with, plus `api_key_ids` (revoke by id) and `company_api_keys` (list a tenant's keys).
//!
//! Where CQL differs from the SQLite store: the three tables are separate partitions. The id
//! is claimed first (LWT), the tenant's listing row written next, and the `api_keys` row (the
//! one that makes the key usable) last, so a key that authenticates can always be listed and
//! revoked. A crash in between leaves an id or listing row without a key; readers re-check
//! against `api_keys` and skip it. Revocation is an LWT on `api_keys`, the row every request
//! reads, so it takes effect for the next request.

use askpro_actors::domain::ApiKey;
use askpro_actors::error::StoreError;
use askpro_actors::ids::CompanyId;
use chrono::{DateTime, Utc};
use scylla::DeserializeRow;
use uuid::Uuid;

use super::{CqlStore, Out};

#[derive(DeserializeRow)]
struct ApiKeyRow {
    key_hash: String,
    key_id: String,
    company_id: Uuid,
    name: Option<String>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> Self {
        ApiKey {
            id: r.key_id,
            company_id: CompanyId(r.company_id),
            name: r.name,
            key_hash: r.key_hash,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

impl CqlStore {
    pub(super) async fn create_api_key_cql(&self, k: &ApiKey) -> Out<()> {
        const OP: &str = "create_api_key";
        self.company_must_exist(k.company_id).await?;
        let conflict = || StoreError::Conflict(format!("api key {} already exists", k.id));
        let claim = &self.st().api_key_id_claim;
        if !self
            .db()
            .lwt(OP, "api_key_ids", claim, (&k.id, &k.key_hash))
            .await?
        {
            return Err(conflict().into());
        }
        let listing = &self.st().api_key_company_insert;
        let values = (k.company_id.0, &k.id, &k.key_hash);
        self.db().exec(OP, listing, values).await?;
        let insert = &self.st().api_key_insert;
        let values = (
            &k.key_hash,
            &k.id,
            k.company_id.0,
            &k.name,
            k.created_at,
            k.revoked_at,
        );
        if !self.db().lwt(OP, "api_keys", insert, values).await? {
            return Err(conflict().into());
        }
        Ok(())
    }

    pub(super) async fn api_key_by_hash_cql(&self, key_hash: &str) -> Out<Option<ApiKey>> {
        let st = &self.st().api_key_get;
        let row: Option<ApiKeyRow> = self
            .db()
            .one("api_key_by_hash", "api_keys", st, (key_hash,))
            .await?;
        Ok(row.map(ApiKey::from))
    }

    /// Oldest first, like the embedded store. Listing rows whose key never appeared (a crash
    /// during create) or that point at another tenant's key are skipped.
    pub(super) async fn api_keys_cql(&self, company: CompanyId) -> Out<Vec<ApiKey>> {
        let st = &self.st().api_key_company_list;
        let hashes: Vec<(String,)> = self
            .db()
            .all("api_keys", "company_api_keys", st, (company.0,))
            .await?;
        let mut keys = Vec::with_capacity(hashes.len());
        for (hash,) in hashes {
            if let Some(key) = self.api_key_by_hash_cql(&hash).await? {
                if key.company_id == company {
                    keys.push(key);
                }
            }
        }
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    pub(super) async fn revoke_api_key_cql(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Out<Option<ApiKey>> {
        const OP: &str = "revoke_api_key";
        let st = &self.st().api_key_id_get;
        let pointer: Option<(String,)> = self.db().one(OP, "api_key_ids", st, (id,)).await?;
        let Some((hash,)) = pointer else {
            return Ok(None);
        };
        match self.api_key_by_hash_cql(&hash).await? {
            Some(key) if key.id == id => {}
            _ => return Ok(None),
        }
        // Applies only while revoked_at is null, so the first revocation time stays.
        let revoke = &self.st().api_key_revoke;
        self.db().lwt(OP, "api_keys", revoke, (now, &hash)).await?;
        let get = &self.st().api_key_get;
        let row: Option<ApiKeyRow> = self.db().one_serial(OP, "api_keys", get, (&hash,)).await?;
        Ok(row.map(ApiKey::from))
    }
}
