//! `askpro apikey`: tenant API keys for `/api/v1`. The key is printed once, at creation;
//! the store keeps only its hash, so a lost key is revoked and replaced, never recovered.

use anyhow::{bail, Result};
use askpro_actors::domain::ApiKey;
use askpro_actors::CompanyId;
use clap::Subcommand;
use serde_json::json;

use super::output::emit;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ApiKeyCmd {
    /// Create a key for a company; prints the key once (it is not stored, only its hash).
    Create {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// A label for people (what the key is for).
        #[arg(long)]
        name: Option<String>,
        /// Print one JSON document {"id", "key"} (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a company's keys (never the keys themselves).
    List {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id: it stops authenticating at once and stays listed as revoked.
    Revoke {
        #[arg(long = "id", value_name = "KEY_ID")]
        key_id: String,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, cmd: ApiKeyCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    match cmd {
        ApiKeyCmd::Create {
            company,
            name,
            json,
        } => {
            if store.company(company).await?.is_none() {
                bail!("company {company} does not exist (see `askpro company list`)");
            }
            let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
            let key = crate::apikey::generate();
            let row = ApiKey {
                id: crate::apikey::new_id(),
                company_id: company,
                name,
                key_hash: crate::apikey::hash(&key),
                created_at: chrono::Utc::now(),
                revoked_at: None,
            };
            store.create_api_key(&row).await?;
            let shown = json!({"id": row.id, "key": key});
            emit(json, &shown, |_| {
                format!(
                    "created api key {} for company {company}\n{key}\n\
                     (shown once: store it now; use it as `Authorization: Bearer <key>`)",
                    row.id
                )
            })
        }
        ApiKeyCmd::List { company, json } => {
            let keys = store.api_keys(company).await?;
            let shown: Vec<_> = keys.iter().map(shown_key).collect();
            emit(json, &shown, |_| {
                keys.iter()
                    .map(|k| {
                        let revoked = k
                            .revoked_at
                            .map_or_else(|| "active".to_owned(), |t| format!("revoked {t}"));
                        let name = k.name.as_deref().unwrap_or("-");
                        format!("{}  {}  {}  {revoked}", k.id, k.created_at, name)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ApiKeyCmd::Revoke { key_id, json } => {
            let now = chrono::Utc::now();
            let Some(key) = store.revoke_api_key(&key_id, now).await? else {
                bail!("no api key {key_id:?} (see `askpro apikey list --company ID`)");
            };
            emit(json, &shown_key(&key), |k| {
                format!("revoked api key {} of company {}", k["id"], k["company_id"])
            })
        }
    }
}

/// A key as listed: everything but the hash (not secret, but of no use to anyone).
fn shown_key(k: &ApiKey) -> serde_json::Value {
    json!({
        "id": k.id,
        "company_id": k.company_id,
        "name": k.name,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    })
}
