//! `askpro agent provision|show|deprovision`: the branch's Retell agent. Progress goes to
//! stderr, the result (`--json`) to stdout.

use anyhow::{bail, Context, Result};
use askpro_actors::domain::Branch;
use askpro_actors::{
    BranchId, CompanyId, Disposition, LogRecord, Provider, RecordMeta, StateStore,
};
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::emit;
use crate::config::Config;
use crate::retell::provision::{Provisioned, Provisioner, ServiceStep, Step};
use crate::retell::spec::Urls;
use crate::retell::RetellClient;

#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// Create (or bring up to date) the branch's Retell LLM and agent and bind its number.
    ///
    /// Ensures the branch has a service (creates "Standardberatung" when it has none), then
    /// creates or updates the LLM (German prompt, custom tools at
    /// {public-url}/webhooks/retell/{company}/functions/{tool}) and the agent (webhook
    /// {public-url}/webhooks/retell/{company}, the branch's zone, de-DE, post-call analysis),
    /// and binds the branch's number (inbound_agents, inbound_webhook_url
    /// {public-url}/webhooks/retell/inbound). Idempotent: a second run changes nothing.
    Provision(ProvisionArgs),
    /// Show the branch's agent, LLM and number binding as Retell holds them.
    Show(TargetArgs),
    /// Unbind the branch's number, delete its agent and LLM at Retell, forget their ids.
    Deprovision(TargetArgs),
}

#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// The branch (see `askpro branch list`).
    #[arg(long, value_name = "ID")]
    pub branch: BranchId,
    /// Retell's API (overrides retell.api_base_url), e.g. the URL of `askpro fake-retell`.
    #[arg(long, value_name = "URL")]
    pub retell_base_url: Option<String>,
    /// Print one JSON document (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where Retell reaches AskPro, e.g. https://askpro.example.com (overrides
    /// retell.public_url).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The agent's voice when it is created (default retell-Cimo) or to change it; without it
    /// an existing agent keeps its voice.
    #[arg(long, value_name = "V")]
    pub voice_id: Option<String>,
}

pub async fn run(config: &Config, cmd: AgentCmd) -> Result<()> {
    match cmd {
        AgentCmd::Provision(args) => provision(config, args).await,
        AgentCmd::Show(args) => show(config, args).await,
        AgentCmd::Deprovision(args) => deprovision(config, args).await,
    }
}

fn progress(line: String) {
    eprintln!("{line}");
}

async fn provision(config: &Config, args: ProvisionArgs) -> Result<()> {
    let public = args
        .public_url
        .clone()
        .unwrap_or_else(|| config.retell.public_url.clone());
    if public.is_empty() {
        bail!("say where Retell reaches AskPro: --public-url https://... (or retell.public_url)");
    }
    crate::config::check_base_url(&public).map_err(|e| anyhow::anyhow!("--public-url {e}"))?;
    let backends = crate::app::open_backends(config).await?;
    let store = backends.store.as_ref();
    let (branch, company_name, client) = target(config, store, &args.target).await?;
    let provisioner = Provisioner {
        client: &client,
        store,
        urls: Urls::new(&public),
        voice_id: args.voice_id,
        progress: &progress,
    };
    let result = provisioner.provision(&branch, &company_name).await;
    let done = result.with_context(|| format!("provisioning branch {}", branch.id))?;
    if done.service.created {
        record_default_service(backends.log.as_ref(), &branch, &done.service).await?;
    }
    emit(args.target.json, &done, describe)
}

/// The branch, its company's name and a client with the company's newest `retell-api` key.
async fn target(
    config: &Config,
    store: &dyn StateStore,
    args: &TargetArgs,
) -> Result<(Branch, String, RetellClient)> {
    let branch = super::catalog::find_branch(store, args.branch).await?;
    let company = store
        .company(branch.company_id)
        .await?
        .with_context(|| format!("company {} of the branch is gone", branch.company_id))?;
    let keys = store
        .secrets(branch.company_id, Provider::RetellApi)
        .await?;
    let Some(key) = keys.first() else {
        bail!(
            "company {} has no Retell API key; set it with `askpro secret set --company {} \
             --provider retell-api --value KEY`",
            company.id,
            company.id
        );
    };
    let base = args
        .retell_base_url
        .as_deref()
        .unwrap_or(&config.retell.api_base_url);
    let client = RetellClient::new(base, &key.value).context("--retell-base-url")?;
    Ok((branch, company.name, client))
}

/// Puts a `default_service_created` record on the log, so the ledger shows it like every
/// other event (the pipeline acknowledges it; nothing acts on it).
async fn record_default_service(
    log: &dyn askpro_actors::EventLog,
    branch: &Branch,
    service: &ServiceStep,
) -> Result<()> {
    let body = json!({
        "event": "default_service_created",
        "company_id": branch.company_id,
        "branch_id": branch.id,
        "service_id": service.id,
        "service_name": service.name,
        "staff_assigned": service.staff_assigned,
        "source": "askpro agent provision",
    });
    let record = LogRecord {
        meta: RecordMeta {
            event_id: askpro_actors::EventId::new(),
            provider: Provider::Retell,
            company_id: branch.company_id,
            event_type: "default_service_created".into(),
            dedup_key: format!("askpro:default_service_created:{}", service.id),
            received_at: chrono::Utc::now(),
            correlation_id: uuid::Uuid::now_v7(),
            secret_id: "askpro-cli".into(),
            disposition: Disposition::Accept,
            retry: None,
        },
        value: serde_json::to_vec(&body)?.into(),
    };
    log.append(vec![record])
        .await
        .context("recording default_service_created on the log")?;
    tracing::info!(
        event = "DefaultServiceCreated",
        company_id = %branch.company_id,
        branch_id = %branch.id,
        service_id = %service.id,
        staff_assigned = service.staff_assigned,
        "branch had no active service; default service created for its agent"
    );
    Ok(())
}

fn describe(done: &Provisioned) -> String {
    let line = |what: &str, step: &Step| format!("{what:<7} {}  {:?}", step.id, step.action);
    [
        format!("branch  {} (company {})", done.branch_id, done.company_id),
        format!(
            "service {}  {}{}",
            done.service.id,
            done.service.name,
            if done.service.created {
                " (created)"
            } else {
                ""
            }
        ),
        line("llm", &done.llm),
        line("agent", &done.agent),
        line("phone", &done.phone),
        format!("webhook {}", done.webhook_url),
        format!("inbound {}", done.inbound_webhook_url),
    ]
    .join("\n")
}

async fn show(config: &Config, args: TargetArgs) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    let (branch, _, client) = target(config, store.as_ref(), &args).await?;
    let provisioner = Provisioner {
        client: &client,
        store: store.as_ref(),
        urls: Urls::new(""),
        voice_id: None,
        progress: &progress,
    };
    let agent = provisioner.find_agent(&branch).await?;
    let llm_id = agent
        .as_ref()
        .and_then(|a| a.pointer("/response_engine/llm_id").and_then(Value::as_str))
        .map(str::to_owned)
        .or_else(|| branch.retell_llm_id.clone());
    let llm = match &llm_id {
        Some(id) => client.get_llm(id).await?,
        None => None,
    };
    let phone = client.get_phone(&branch.phone).await?;
    let shown = json!({
        "company_id": branch.company_id,
        "branch_id": branch.id,
        "stored": {"agent_id": branch.retell_agent_id, "llm_id": branch.retell_llm_id},
        "agent": agent,
        "llm": llm,
        "phone": phone,
    });
    emit(args.json, &shown, |v| describe_shown(v, branch.company_id))
}

fn describe_shown(v: &Value, company: CompanyId) -> String {
    let text = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned()
    };
    let bound: Vec<String> = v
        .pointer("/phone/inbound_agents")
        .and_then(Value::as_array)
        .map(|agents| {
            agents
                .iter()
                .map(|a| {
                    format!(
                        "{} ({})",
                        a["agent_id"].as_str().unwrap_or("?"),
                        a["weight"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    [
        format!("branch  {} (company {company})", text("/branch_id")),
        format!(
            "agent   {}  {}",
            text("/agent/agent_id"),
            text("/agent/agent_name")
        ),
        format!("llm     {}", text("/llm/llm_id")),
        format!(
            "zone    {}  language {}",
            text("/agent/timezone"),
            text("/agent/language")
        ),
        format!("webhook {}", text("/agent/webhook_url")),
        format!(
            "phone   {}  -> {}",
            text("/phone/phone_number"),
            bound.join(", ")
        ),
        format!("inbound {}", text("/phone/inbound_webhook_url")),
    ]
    .join("\n")
}

async fn deprovision(config: &Config, args: TargetArgs) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    let (branch, _, client) = target(config, store.as_ref(), &args).await?;
    let provisioner = Provisioner {
        client: &client,
        store: store.as_ref(),
        urls: Urls::new(""),
        voice_id: None,
        progress: &progress,
    };
    let steps = provisioner
        .deprovision(&branch)
        .await
        .with_context(|| format!("deprovisioning branch {}", branch.id))?;
    let shown: serde_json::Map<String, Value> = steps
        .iter()
        .map(|(what, step)| ((*what).to_owned(), json!(step)))
        .collect();
    emit(args.json, &Value::Object(shown), |_| {
        steps
            .iter()
            .map(|(what, step)| format!("{what:<7} {}  {:?}", step.id, step.action))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
