//! Conformance checks of the tenant API key table (run for every backend by
//! `store_conformance!` in `store_contract.rs`).

use askpro_actors::domain::ApiKey;
use askpro_actors::error::StoreError;
use askpro_actors::ids::CompanyId;
use askpro_actors::store::StateStore;

use super::{at, company};

fn key(company_id: CompanyId, created_ms: i64) -> ApiKey {
    let id = askpro::apikey::new_id();
    ApiKey {
        key_hash: askpro::apikey::hash(&askpro::apikey::generate()),
        id,
        company_id,
        name: Some("ci".into()),
        created_at: at(created_ms),
        revoked_at: None,
    }
}

pub async fn api_keys_create_lookup_list_revoke(store: &dyn StateStore) {
    let (a, b) = (company("keys a"), company("keys b"));
    store.create_company(&a).await.unwrap();
    store.create_company(&b).await.unwrap();
    let (k1, k2, kb) = (key(a.id, 2), key(a.id, 1), key(b.id, 0));
    for k in [&k1, &k2, &kb] {
        store.create_api_key(k).await.unwrap();
    }
    // The global lookup finds each key's own tenant; an unknown hash finds nothing.
    assert_eq!(
        store.api_key_by_hash(&k1.key_hash).await.unwrap(),
        Some(k1.clone())
    );
    assert_eq!(
        store.api_key_by_hash(&kb.key_hash).await.unwrap(),
        Some(kb.clone())
    );
    let unknown = askpro::apikey::hash("ak_unknown");
    assert_eq!(store.api_key_by_hash(&unknown).await.unwrap(), None);
    // Listing is per tenant, oldest first.
    assert_eq!(
        store.api_keys(a.id).await.unwrap(),
        vec![k2.clone(), k1.clone()]
    );
    assert_eq!(store.api_keys(b.id).await.unwrap(), vec![kb.clone()]);
    // Revocation keeps the row, marks it, and keeps the first time.
    let revoked = store.revoke_api_key(&k1.id, at(10)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at(10)));
    let again = store.revoke_api_key(&k1.id, at(20)).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(at(10)));
    let looked_up = store.api_key_by_hash(&k1.key_hash).await.unwrap().unwrap();
    assert_eq!(looked_up.revoked_at, Some(at(10)));
    assert_eq!(
        store
            .api_key_by_hash(&k2.key_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    assert_eq!(
        store.revoke_api_key("key_missing", at(30)).await.unwrap(),
        None
    );
}

pub async fn api_key_needs_its_company_and_a_fresh_id(store: &dyn StateStore) {
    let missing = key(CompanyId::new(), 0);
    let err = store.create_api_key(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let a = company("keys c");
    store.create_company(&a).await.unwrap();
    let k = key(a.id, 0);
    store.create_api_key(&k).await.unwrap();
    let mut same_id = key(a.id, 1);
    same_id.id = k.id.clone();
    let err = store.create_api_key(&same_id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.api_key_by_hash(&same_id.key_hash).await.unwrap(),
        None
    );
    assert_eq!(store.api_keys(a.id).await.unwrap(), vec![k]);
}
