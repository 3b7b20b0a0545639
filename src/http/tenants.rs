//! The ingress's view of tenants: company and signing secrets, cached briefly so the hot
//! path does not read the store per webhook. Only positive answers are cached, so a company
//! created a moment ago is found at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use askpro_actors::domain::{Company, Secret};
use askpro_actors::{CompanyId, Provider, StateStore, StoreError};

/// What the ingress needs to authenticate one tenant's webhooks.
#[derive(Debug)]
pub struct TenantAuth {
    pub company: Company,
    pub retell: Vec<Secret>,
    pub calcom: Vec<Secret>,
}

pub struct TenantCache {
    store: Arc<dyn StateStore>,
    ttl: Duration,
    entries: RwLock<HashMap<CompanyId, (Instant, Arc<TenantAuth>)>>,
}

impl TenantCache {
    pub fn new(store: Arc<dyn StateStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The tenant's auth data, or `None` if the company does not exist.
    pub async fn get(&self, id: CompanyId) -> Result<Option<Arc<TenantAuth>>, StoreError> {
        if let Some(hit) = self.cached(id) {
            return Ok(Some(hit));
        }
        let Some(company) = self.store.company(id).await? else {
            return Ok(None);
        };
        let auth = Arc::new(TenantAuth {
            retell: self.store.secrets(id, Provider::Retell).await?,
            calcom: self.store.secrets(id, Provider::Calcom).await?,
            company,
        });
        let mut entries = self.entries.write().expect("tenant cache poisoned");
        entries.insert(id, (Instant::now(), Arc::clone(&auth)));
        Ok(Some(auth))
    }

    fn cached(&self, id: CompanyId) -> Option<Arc<TenantAuth>> {
        let entries = self.entries.read().expect("tenant cache poisoned");
        let (at, auth) = entries.get(&id)?;
        (at.elapsed() < self.ttl).then(|| Arc::clone(auth))
    }
}
