//! Admin commands on the store: companies, branches, secrets; and loadgen.

use anyhow::{bail, Context, Result};
use askpro_actors::domain::{Branch, Company, Secret};
use askpro_actors::{phone, BranchId, CompanyId, Provider, StateStore};
use clap::Subcommand;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::output::emit;
use super::LoadgenCmd;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum CompanyCmd {
    /// Create a company; prints it with its "id".
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Accept Cal.com webhooks signed "no-secret-provided" for this company.
        #[arg(long)]
        allow_unsigned_calcom: bool,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List companies.
    List {
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BranchCmd {
    /// Create a branch with its phone number (stored as E.164); prints it with its "id".
    Create {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Display name.
        #[arg(long)]
        name: String,
        /// National (030 1234567) or international (+49 30 1234567) format.
        #[arg(long)]
        phone: String,
        /// IANA time zone of the branch.
        #[arg(long, default_value = "Europe/Berlin")]
        timezone: String,
        /// The Retell agent that answers this branch's calls.
        #[arg(long, value_name = "AGENT_ID")]
        agent_id: Option<String>,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a company's branches.
    List {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Connect a branch to Cal.com (its API key and event type); the key is never printed.
    SetCalcom(super::catalog::SetCalcomArgs),
    /// Change a branch's phone number, Retell agent, name, time zone or fallback email.
    Update(super::catalog::UpdateBranchArgs),
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Add a signing secret (older ones stay active until removed: rotation).
    Set {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// retell, calcom or retell-api.
        #[arg(long, value_parser = parse_provider)]
        provider: Provider,
        /// retell: the API key with webhook permission (verifies Retell's webhooks). calcom:
        /// the webhook secret. retell-api: the Retell API key `askpro agent provision` uses
        /// (the newest one counts).
        #[arg(long)]
        value: String,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a company's secrets (values redacted).
    List {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret by its id.
    Remove {
        /// The company's id (see `askpro company list`).
        #[arg(long, value_name = "ID")]
        company: CompanyId,
        /// retell, calcom or retell-api.
        #[arg(long, value_parser = parse_provider)]
        provider: Provider,
        #[arg(long = "id", value_name = "SECRET_ID")]
        secret_id: String,
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_provider(s: &str) -> Result<Provider, String> {
    s.parse()
}

pub async fn company(config: &Config, cmd: CompanyCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    match cmd {
        CompanyCmd::Create {
            name,
            allow_unsigned_calcom,
            json,
        } => {
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let company = Company {
                id: CompanyId::new(),
                name,
                allow_unsigned_calcom,
                created_at: chrono::Utc::now(),
            };
            store.create_company(&company).await?;
            emit(json, &company, |c| {
                format!("created company {} ({})", c.id, c.name)
            })
        }
        CompanyCmd::List { json } => {
            let companies = store.companies().await?;
            emit(json, &companies, |list| {
                list.iter()
                    .map(|c| format!("{}  {}", c.id, c.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

pub async fn branch(config: &Config, cmd: BranchCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    match cmd {
        BranchCmd::Create {
            company,
            name,
            phone: raw_phone,
            timezone,
            agent_id,
            json,
        } => {
            require_company(store.as_ref(), company).await?;
            let agent_id = super::catalog::agent_id(agent_id)?;
            let e164 = phone::normalize(&raw_phone, &config.phone.default_region)
                .with_context(|| format!("--phone {raw_phone:?}"))?;
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                bail!("--timezone {timezone:?} is not an IANA time zone (e.g. Europe/Berlin)");
            }
            let branch = Branch {
                id: BranchId::new(),
                company_id: company,
                name,
                phone: e164,
                timezone,
                retell_agent_id: agent_id,
                retell_llm_id: None,
                calcom: None,
                created_at: chrono::Utc::now(),
                fallback_email: None,
            };
            store.create_branch(&branch).await?;
            emit(json, &branch, |b| {
                format!(
                    "created branch {} ({}) with phone {}",
                    b.id, b.name, b.phone
                )
            })
        }
        BranchCmd::List { company, json } => {
            let branches = store.branches(company).await?;
            // The Cal.com API key never leaves the store in clear.
            let shown: Vec<_> = branches.iter().map(super::catalog::shown_branch).collect();
            emit(json, &shown, |_| {
                branches
                    .iter()
                    .map(|b| {
                        let fallback = b.fallback_email.as_deref().unwrap_or("-");
                        format!(
                            "{}  {}  {}  {}  fallback-email {fallback}",
                            b.id, b.phone, b.timezone, b.name
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        BranchCmd::SetCalcom(args) => super::catalog::set_calcom(store.as_ref(), args).await,
        BranchCmd::Update(args) => {
            super::catalog::update_branch(config, store.as_ref(), args).await
        }
    }
}

pub async fn secret(config: &Config, cmd: SecretCmd) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    match cmd {
        SecretCmd::Set {
            company,
            provider,
            value,
            json,
        } => {
            require_company(store.as_ref(), company).await?;
            if value.trim().is_empty() {
                bail!("--value must not be empty");
            }
            let secret = Secret {
                company_id: company,
                provider,
                id: format!("sec_{}", uuid::Uuid::now_v7().simple()),
                value,
                created_at: chrono::Utc::now(),
            };
            store.add_secret(&secret).await?;
            let shown = redacted(&secret);
            emit(json, &shown, |s| {
                format!(
                    "added {} secret {} for company {}",
                    s["provider"], s["id"], s["company_id"]
                )
            })
        }
        SecretCmd::List { company, json } => {
            let mut all = store.secrets(company, Provider::Retell).await?;
            all.extend(store.secrets(company, Provider::Calcom).await?);
            all.extend(store.secrets(company, Provider::RetellApi).await?);
            let shown: Vec<_> = all.iter().map(redacted).collect();
            emit(json, &shown, |_| {
                all.iter()
                    .map(|s| format!("{}  {}  {}", s.id, s.provider, s.created_at))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        SecretCmd::Remove {
            company,
            provider,
            secret_id,
            json,
        } => {
            if !store.remove_secret(company, provider, &secret_id).await? {
                bail!("company {company} has no {provider} secret {secret_id:?}");
            }
            emit(json, &json!({"removed": secret_id}), |_| {
                format!("removed secret {secret_id}")
            })
        }
    }
}

fn redacted(secret: &Secret) -> serde_json::Value {
    json!({
        "id": secret.id,
        "company_id": secret.company_id,
        "provider": secret.provider,
        "created_at": secret.created_at,
        "value": "<redacted>",
    })
}

async fn require_company(store: &dyn StateStore, id: CompanyId) -> Result<()> {
    if store.company(id).await?.is_none() {
        bail!("company {id} does not exist (see `askpro company list`)");
    }
    Ok(())
}

pub async fn loadgen(config: &Config, cmd: LoadgenCmd) -> Result<()> {
    let tenants = if cmd.no_provision {
        (0..cmd.args.tenants)
            .map(|_| crate::loadgen::LoadTenant {
                company_id: CompanyId::new(),
                secret: format!("throwaway-{}", uuid::Uuid::now_v7().simple()),
                phone: None,
            })
            .collect()
    } else {
        let store = crate::app::open_store(config).await?;
        let prefix = format!("loadgen-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
        let mut tenants =
            crate::loadgen::provision_tenants(store.as_ref(), cmd.args.tenants, &prefix).await?;
        if cmd.args.scenario != crate::loadgen::Scenario::CallEnded {
            crate::loadgen::provision_branches(store.as_ref(), &mut tenants).await?;
        }
        if cmd.args.scenario == crate::loadgen::Scenario::Booking {
            let Some(url) = cmd.calcom_url.as_deref() else {
                bail!(
                    "--scenario booking needs --calcom-url (start one with `askpro fake-calcom`)"
                );
            };
            crate::loadgen::connect_branches(store.as_ref(), &tenants, url, cmd.calcom_rate_limit)
                .await?;
        }
        eprintln!(
            "provisioned {} tenants in {} (prefix {prefix})",
            tenants.len(),
            config.data.dir.display()
        );
        tenants
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(shutdown.clone()));
    let report = crate::loadgen::run(&cmd.args, &tenants, shutdown).await?;
    if cmd.args.json {
        super::output::println(serde_json::to_string_pretty(&report)?)
    } else {
        super::output::println(report.render_text())
    }
}
