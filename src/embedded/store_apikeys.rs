//! [`EmbeddedStore`]'s tenant API keys: the global `api_keys` table (key hash → tenant). The
//! `StateStore` impl in `store.rs` delegates here (kept apart for size).

use askpro_actors::domain::ApiKey;
use askpro_actors::error::StoreError;
use askpro_actors::ids::CompanyId;
use askpro_actors::store::StoreResult;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::super::store_rows::{self as rows, ms, opt_ms, Res};
use super::EmbeddedStore;

const COLS: &str = "key_id, company_id, name, key_hash, created_at, revoked_at";

fn api_key(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        company_id: rows::parsed(r, 1)?,
        name: r.get(2)?,
        key_hash: r.get(3)?,
        created_at: rows::ts(r, 4)?,
        revoked_at: rows::opt_ts(r, 5)?,
    })
}

fn insert(conn: &Connection, k: &ApiKey) -> Res<()> {
    let company = conn
        .prepare_cached("SELECT 1 FROM companies WHERE company_id = ?1")?
        .exists([k.company_id.to_string()])?;
    if !company {
        return Err(StoreError::NotFound(format!("company {}", k.company_id)).into());
    }
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO api_keys ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING"
        ))?
        .execute(params![
            k.id,
            k.company_id.to_string(),
            k.name,
            k.key_hash,
            ms(k.created_at),
            opt_ms(k.revoked_at)
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("api key {} already exists", k.id)).into());
    }
    Ok(())
}

fn revoke(conn: &Connection, id: &str, now: DateTime<Utc>) -> Res<Option<ApiKey>> {
    // COALESCE keeps the first revocation time.
    conn.prepare_cached(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE key_id = ?1",
    )?
    .execute(params![id, ms(now)])?;
    let key = conn
        .prepare_cached(&format!("SELECT {COLS} FROM api_keys WHERE key_id = ?1"))?
        .query_row([id], api_key)
        .optional()?;
    Ok(key)
}

impl EmbeddedStore {
    pub(super) async fn create_api_key_impl(&self, key: &ApiKey) -> StoreResult<()> {
        let k = key.clone();
        self.write("create_api_key", "api_keys", move |conn| insert(conn, &k))
            .await
    }

    pub(super) fn api_key_by_hash_impl(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let query = format!("SELECT {COLS} FROM api_keys WHERE key_hash = ?1");
        self.one("api_key_by_hash", "api_keys", &query, [key_hash], api_key)
    }

    pub(super) async fn api_keys_impl(&self, company_id: CompanyId) -> StoreResult<Vec<ApiKey>> {
        let query = format!(
            "SELECT {COLS} FROM api_keys WHERE company_id = ?1 ORDER BY created_at, key_id"
        );
        let args = [company_id.to_string()];
        self.many("api_keys", "api_keys", query, args, api_key)
            .await
    }

    pub(super) async fn revoke_api_key_impl(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<ApiKey>> {
        let id = id.to_owned();
        self.write("revoke_api_key", "api_keys", move |conn| {
            revoke(conn, &id, now)
        })
        .await
    }
}
